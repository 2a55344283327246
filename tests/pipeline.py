"""Run the real Dagster job from tests, against a given database, with explicit settings."""

import uuid
from pathlib import Path

from attribution_pipeline.cli import run_job
from attribution_pipeline.db import attribution_home
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.resources import DatabaseResource, PipelineSettings

HOUR = 3600


def settings(**overrides) -> PipelineSettings:
    values = {"frames_dir": str(attribution_home() / "frames")}
    values.update(overrides)
    return PipelineSettings(**values)


def run(url, first_hour, last_hour=None, *, users=(), models=(), dry_run=False, instance=None, expect_success=True,
        **setting_overrides):
    """One run over [first_hour, last_hour]; returns (dagster result, report dict)."""
    last_hour = first_hour if last_hour is None else last_hour
    defs = build_definitions(settings(**setting_overrides), DatabaseResource(url=url))
    report_path = str(Path(attribution_home()) / "reports" / f"test-{uuid.uuid4().hex}.json")
    result, report = run_job(first_hour, last_hour, users=users, models=models, dry_run=dry_run,
                             report_path=report_path, source="test", defs=defs, instance=instance)
    if expect_success:
        assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    return result, report
