"""The hourly job: every step of the pipeline, one run over any range of UTC hours."""

import dagster as dg

#: The assets of the hourly pipeline, in the order data flows through them.
PIPELINE_ASSETS = ("attribution_models", "conversions", "journeys", "credits", "snapshots",
                   "attribution_writeback", "attribution_exports")
PIPELINE_KEYS = frozenset(dg.AssetKey(name) for name in PIPELINE_ASSETS)
JOB_NAME = "attribution_job"

attribution_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.assets(*PIPELINE_KEYS),
    description="Extract conversions and clicks, build journeys, credit every active model, write "
    "Prosper202's snapshot and touchpoint tables back, export Parquet. One run covers any range of UTC hours.",
)
