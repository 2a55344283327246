"""Dagster definitions: they load without deprecation warnings, the schedule asks for one run over
the trailing 24 complete hours, and the compute modules contain no row-wise Python."""

import ast
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from attribution_pipeline.assets.hourly import RANGE_END_TAG, RANGE_START_TAG
from pipeline import settings

PACKAGE = Path(__file__).resolve().parents[1] / "attribution_pipeline"


def test_definitions_load_and_resolve_every_job_with_deprecations_as_errors():
    code = (
        "from attribution_pipeline.definitions import defs as load\n"
        "defs = load()\n"
        "jobs = [defs.resolve_job_def(j.name) for j in defs.jobs]\n"
        "defs.resolve_all_job_defs()\n"
        "print(sorted(j.name for j in jobs))\n"
    )
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "attribution_job" in done.stdout


def test_every_pipeline_asset_shares_one_hourly_partitioning_and_single_run_backfills():
    from attribution_pipeline.definitions import defs

    graph = defs().resolve_asset_graph()
    daily = dg.AssetKey("attribution_markov_fit")  # the one daily asset (D32), in a job of its own
    assert type(graph.get(daily).partitions_def).__name__ == "DailyPartitionsDefinition"
    partitioned = [k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def is not None and k != daily]
    pdefs = {type(graph.get(k).partitions_def).__name__ for k in partitioned}
    assert pdefs == {"HourlyPartitionsDefinition"}
    assert len({graph.get(k).partitions_def for k in partitioned}) == 1
    for key in partitioned:
        policy = graph.get(key).backfill_policy
        assert policy is not None and policy.max_partitions_per_run is None, key


def test_schedule_requests_one_run_over_the_trailing_24_complete_hours():
    from attribution_pipeline.automation.schedules import hourly_attribution

    assert hourly_attribution.cron_schedule == "15 * * * *"
    assert hourly_attribution.default_status == dg.DefaultScheduleStatus.RUNNING
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2024, 6, 1, 9, 15, tzinfo=timezone.utc),
                                    resources={"settings": settings()})
    request = hourly_attribution.evaluate_tick(ctx).run_requests[0]
    assert request.tags[RANGE_START_TAG] == "2024-05-31-09:00"
    assert request.tags[RANGE_END_TAG] == "2024-06-01-08:00"


COMPUTE_MODULES = sorted((PACKAGE / "strategies").glob("*.py")) + [
    PACKAGE / "core" / name
    for name in ("journey_rules.py", "crediting.py", "aggregation.py", "invariants.py", "precision.py",
                 "visitor_crediting.py")
]
ROW_WISE = {"map_elements", "map_rows", "iter_rows", "to_dicts", "rows", "row", "apply", "to_numpy",
            "to_pandas", "iter_slices", "to_list", "item"}


def test_compute_modules_use_no_row_wise_python():
    offenders = []
    for path in COMPUTE_MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ROW_WISE:
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
            if isinstance(node, (ast.For, ast.While, ast.AsyncFor)):
                offenders.append(f"{path.name}:{node.lineno} loop statement")
    assert len(COMPUTE_MODULES) >= 11
    assert offenders == []
