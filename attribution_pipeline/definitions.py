"""Everything Dagster loads, in one screen."""

import os

import dagster as dg

from attribution_pipeline.io_managers.hourly_parquet import HourlyParquetIOManager
from attribution_pipeline.jobs import PIPELINE_ASSETS, attribution_job, hourly_attribution
from attribution_pipeline.resources import DatabaseResource, PipelineSettings, RunScope


def build_definitions(settings: PipelineSettings | None = None, database: DatabaseResource | None = None) -> dg.Definitions:
    settings = settings or PipelineSettings.from_env()
    if database is None:
        # The URL goes through EnvVar so the UI shows the variable's name, never the credentials.
        database = DatabaseResource(url=dg.EnvVar("ATTRIBUTION_DB_URL")) if os.environ.get("ATTRIBUTION_DB_URL") else DatabaseResource()
    return dg.Definitions(
        assets=PIPELINE_ASSETS,
        jobs=[attribution_job],
        schedules=[hourly_attribution],
        resources={
            "db": database,
            "settings": settings,
            "scope": RunScope(),
            "frames_io_manager": HourlyParquetIOManager(base_dir=str(settings.frames_path())),
        },
    )


defs = build_definitions()
