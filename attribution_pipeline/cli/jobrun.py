"""The hourly job run in-process as one run over a range of hours (``rebuild``, ``demo``, tests)."""

import json
import uuid
from contextlib import nullcontext
from pathlib import Path

import dagster as dg

from attribution_pipeline.assets.hourly import range_tags
from attribution_pipeline.automation.jobs import JOB_NAME
from attribution_pipeline.dagster_compat import plan_ranges_compactly
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import prosper_reads
from attribution_pipeline.storage.instance_commits import relax_instance_commits


def instance_for(settings: Settings, dry_run: bool) -> dg.DagsterInstance:
    """The Dagster instance a run is recorded in: ``DAGSTER_HOME``'s, else a throwaway one (and
    always a throwaway one for a dry run)."""
    if dry_run or settings.dagster_home is None:
        return dg.DagsterInstance.ephemeral()
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    relax_instance_commits(settings.dagster_home, settings.instance_sqlite_sync)  # D34 (SQLite instances only)
    return dg.DagsterInstance.from_config(str(settings.dagster_home))


def run_job(defs: dg.Definitions, settings: Settings, first_hour: int, last_hour: int, *, users=(), models=(),
            dry_run: bool = False, full: bool = False, report_path: str | None = None, source: str = "cli",
            instance: dg.DagsterInstance | None = None, verbose: bool = False, tags: dict | None = None):
    """Execute ``attribution_job`` of ``defs`` in-process as one run over ``[first_hour, last_hour]``.

    Returns (dagster result, report dict or None).
    """
    report_path = report_path or str(settings.reports_path / f"{source}-{uuid.uuid4().hex}.json")
    run_config = {
        # Dagster's console logger prints every event at DEBUG; the CLI prints its own summary.
        # Events (including our JSON log lines) are stored in the instance whatever this level.
        "loggers": {"console": {"config": {"log_level": "INFO" if verbose else "WARNING"}}},
        "resources": {
            "scope": {"config": {"users": list(users), "models": list(models), "dry_run": dry_run,
                                 "full": full, "report_path": report_path}}
        },
    }
    job = defs.resolve_job_def(JOB_NAME)
    with (nullcontext(instance) if instance is not None else instance_for(settings, dry_run)) as instance:
        plan_ranges_compactly(instance)  # a throwaway instance: one planned event per asset, not per hour
        result = job.execute_in_process(
            run_config=run_config,
            instance=instance,
            tags={**range_tags(first_hour, last_hour), "attribution/source": source, **(tags or {})},
            raise_on_error=False,
        )
    report = json.loads(Path(report_path).read_text()) if Path(report_path).exists() else None
    return result, report


def failed_check_lines(result) -> list[str]:
    """Failed asset checks of a run, one line each (severity, asset, check, description)."""
    lines = []
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        data = event.event_specific_data
        if data.passed or getattr(data, "partition", None):
            continue
        severity = getattr(data.severity, "value", data.severity)
        text = (data.description or "").splitlines()[0][:200] if data.description else ""
        lines.append(f"{severity} {data.asset_key.to_user_string()}.{data.check_name}: {text}")
    return sorted(set(lines))


def model_names(engine, report: dict) -> dict[int, str]:
    """``(slug)`` of every model a report names."""
    ids = {int(k) for k in report.get("rows_by_model", {})} | {h["model_id"] for h in report.get("held", [])}
    ids |= {r["model_id"] for r in report.get("comparison", [])}
    if not ids:
        return {}
    with engine.connect() as conn:
        return {int(r["model_id"]): f"({r['model_slug']})" for r in prosper_reads.model_rows_by_id(conn, sorted(ids))}
