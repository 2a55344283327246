"""Run the real Dagster job from tests, against a given database, with explicit settings."""

import uuid

from attribution_pipeline.cli.jobrun import run_job
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.settings import Settings

HOUR = 3600


def settings(db_url: str | None = None, **overrides) -> Settings:
    """The environment's settings (each test has its own ATTRIBUTION_HOME) with ``overrides``."""
    base = Settings.from_env()
    return base.replace(**({"db_url": db_url} if db_url else {}), **overrides)


def run(url, first_hour, last_hour=None, *, users=(), models=(), dry_run=False, full=False, instance=None,
        expect_success=True, **setting_overrides):
    """One run over [first_hour, last_hour]; returns (dagster result, report dict)."""
    last_hour = first_hour if last_hour is None else last_hour
    config = settings(url, **setting_overrides)
    report_path = str(config.reports_path / f"test-{uuid.uuid4().hex}.json")
    result, report = run_job(build_definitions(config), config, first_hour, last_hour, users=users, models=models,
                             dry_run=dry_run, full=full, report_path=report_path, source="test", instance=instance)
    if expect_success:
        assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    return result, report
