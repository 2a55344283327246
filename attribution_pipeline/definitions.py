"""Everything Dagster loads, in one screen.

``defs`` is what ``dagster dev``, ``dg`` and the daemon load (``workspace.yaml``, ``[tool.dagster]``):
it reads the settings from the environment when called, not at import. ``build_definitions`` is
the factory the ``attribution`` CLI and the tests call with their own settings.
"""

import dagster as dg

from attribution_pipeline.assets import (credits, inputs, journeys, markov_fit, parquet_exports, source_changes,
                                         visitor_journeys, writeback)
from attribution_pipeline.assets.freshness import writeback_latest_hour_fresh
from attribution_pipeline.assets.gaps import gap_scan_job, gap_scan_schedule, writeback_history_gaps
from attribution_pipeline.assets.hourly import Hourly, backfill_policy, hourly_partitions
from attribution_pipeline.assets.model_comparison import model_comparison
from attribution_pipeline.assets.resources import RunScope
from attribution_pipeline.assets.source_health import (database_source_health, prosper202_database,
                                                        source_health_job, source_health_schedule)
from attribution_pipeline.automation.alerts import Alerter
from attribution_pipeline.automation.export_queue_health import export_queue_asset, export_queue_health_checks
from attribution_pipeline.automation.export_queue_runs import attribution_export_job, attribution_export_queue
from attribution_pipeline.automation.jobs import attribution_job
from attribution_pipeline.automation.model_change_sensor import attribution_model_changes, attribution_model_cleanup_job
from attribution_pipeline.automation.retention import retention_job, retention_schedule
from attribution_pipeline.automation.schedules import hourly_attribution
from attribution_pipeline.automation.sensors import SENSORS
from attribution_pipeline.io_managers.hourly_parquet import HourlyParquetIOManager
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.instance_commits import relax_instance_commits


def build_definitions(settings: Settings) -> dg.Definitions:
    """The pipeline's definitions for ``settings`` (partitions, resources, jobs, schedules, sensors, the export queue)."""
    hourly = Hourly(hourly_partitions(settings.partitions_start), backfill_policy(settings.backfill_hours_per_run))
    pipeline = [*source_changes.build(hourly), *inputs.build(hourly), *journeys.build(hourly),
                *visitor_journeys.build(hourly), *credits.build(hourly), *writeback.build(hourly),
                *parquet_exports.build(hourly)]  # each asset family with its checks beside it
    checks = [d for d in pipeline if isinstance(d, dg.AssetChecksDefinition)]
    fit_asset, fit_job, fit_schedule = markov_fit.build(settings)  # daily: the Markov models' chains (D32)
    db = Database.from_settings(settings)
    relax_instance_commits(settings.dagster_home, settings.instance_sqlite_sync)  # D34: a run worker's events
    return dg.Definitions(
        # model_comparison: on demand, not in attribution_job; the export queue: external (Prosper202 writes it)
        assets=[d for d in pipeline if d not in checks] + [model_comparison, export_queue_asset,
                                                           prosper202_database,  # D28: source_health's target
                                                           fit_asset],
        asset_checks=[*checks, writeback_latest_hour_fresh, writeback_history_gaps,  # by sensor and schedule
                      export_queue_health_checks,  # recorded by the attribution_export_queue sensor
                      database_source_health],  # daily schedule, `attribution doctor` (D28)
        jobs=[attribution_job, gap_scan_job, attribution_export_job, attribution_model_cleanup_job, source_health_job,
              retention_job, fit_job],
        schedules=[hourly_attribution, gap_scan_schedule, source_health_schedule, retention_schedule, fit_schedule],
        sensors=[*SENSORS, attribution_export_queue, attribution_model_changes],  # export queue: a run per export; D26
        # The steps form a chain and stream chunk by chunk: one process per run, no process start per
        # step (about 5-8 s each in a subprocess); backfills and scheduled runs use it too.
        executor=dg.in_process_executor,
        resources={
            # plain objects without config: the URLs (and their secrets) never reach run config or snapshots
            "db": db,
            "settings": settings,
            "alerts": Alerter.from_settings(settings),
            "scope": RunScope(db=db, settings=settings),  # holds the run's liveness lock while it runs
            "frames_io_manager": HourlyParquetIOManager(base_dir=str(settings.frames_path),
                                                        memory_budget_mb=float(settings.memory_budget_mb),
                                                        chunk_hours=settings.chunk_hours),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
