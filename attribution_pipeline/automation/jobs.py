"""The hourly job: every step of the pipeline, one run over any range of UTC hours."""

import dagster as dg

#: The assets of the hourly pipeline, in the order data flows through them.
PIPELINE_ASSETS = ("source_changes", "attribution_models", "conversions", "journeys", "visitor_journeys", "credits",
                   "snapshots", "attribution_writeback", "attribution_exports")
PIPELINE_KEYS = frozenset(dg.AssetKey(name) for name in PIPELINE_ASSETS)
JOB_NAME = "attribution_job"
#: Checks about the whole instance, not about a run's hours: evaluated by their own sensor or
#: schedule, never as a side effect of a run (a historical backfill is not "late").
INSTANCE_CHECKS = (dg.AssetCheckKey(dg.AssetKey("attribution_writeback"), "latest_hour_fresh"),
                   dg.AssetCheckKey(dg.AssetKey("attribution_writeback"), "history_gaps"))

attribution_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.assets(*PIPELINE_KEYS) - dg.AssetSelection.checks(*INSTANCE_CHECKS),
    description="Extract conversions and clicks, build journeys, credit every active model, write "
    "Prosper202's snapshot and touchpoint tables back, export Parquet. One run covers any range of UTC hours.",
)
