"""Everything Dagster loads, in one screen."""

import os

import dagster as dg

from attribution_pipeline.assets.exports import model_comparison
from attribution_pipeline.checks import ASSET_CHECKS
from attribution_pipeline.io_managers.hourly_parquet import HourlyParquetIOManager
from attribution_pipeline.jobs import PIPELINE_ASSETS, attribution_job, hourly_attribution
from attribution_pipeline.resources import DatabaseResource, PipelineSettings, RunScope
from attribution_pipeline.sensors import SENSORS


def build_definitions(settings: PipelineSettings | None = None, database: DatabaseResource | None = None) -> dg.Definitions:
    settings = settings or PipelineSettings.from_env()
    if database is None:
        # The URL goes through EnvVar so the UI shows the variable's name, never the credentials.
        database = DatabaseResource(url=dg.EnvVar("ATTRIBUTION_DB_URL")) if os.environ.get("ATTRIBUTION_DB_URL") else DatabaseResource()
    return dg.Definitions(
        assets=[*PIPELINE_ASSETS, model_comparison],  # model_comparison: on demand, not in attribution_job
        asset_checks=ASSET_CHECKS,  # checks.py: schemas and warnings (README "Checks and alerts")
        jobs=[attribution_job],
        schedules=[hourly_attribution],
        sensors=SENSORS,  # sensors.py: run failure, check failure, freshness alerts
        # The steps form a chain and stream chunk by chunk: one process per run, no process start per
        # step (about 5-8 s each in a subprocess); backfills and scheduled runs use it too.
        executor=dg.in_process_executor,
        resources={
            "db": database,
            "settings": settings,
            "scope": RunScope(),
            "frames_io_manager": HourlyParquetIOManager(base_dir=str(settings.frames_path())),
        },
    )


defs = build_definitions()
