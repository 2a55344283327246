"""What every attribution asset shares: the hourly partitions, the backfill policy, run helpers."""

import dagster as dg
from sqlalchemy import select

from attribution_pipeline import schema
from attribution_pipeline.partitions import build_partitions_def, hour_key, hours_of_time_window
from attribution_pipeline.resources import DatabaseResource, RunScope

hourly_partitions = build_partitions_def()

#: One run over any range of hours (UI backfills, --partition-range, the CLI).
single_run = dg.BackfillPolicy.single_run()

GROUP_NAME = "attribution"
FRAMES_IO = "frames_io_manager"


def hourly_asset(**kwargs):
    """``@dg.asset`` for a step of the hourly pipeline: hourly partitions, a single-run backfill
    policy (a backfill of any range is one run), the ``attribution`` group."""
    return dg.asset(partitions_def=hourly_partitions, backfill_policy=single_run, group_name=GROUP_NAME, **kwargs)


def hourly_frame_asset(**kwargs):
    """:func:`hourly_asset` whose output is an ``HourlyFrame`` stored by our Parquet IO manager."""
    return hourly_asset(io_manager_key=FRAMES_IO, **kwargs)


def run_hours(context: dg.AssetExecutionContext) -> list[int]:
    return hours_of_time_window(context.partition_time_window)


def run_fields(context: dg.AssetExecutionContext) -> dict:
    """Fields every structured log line of a run carries."""
    hours = run_hours(context)
    return {
        "run_id": context.run.run_id,
        "partition_range": f"{hour_key(hours[0])}..{hour_key(hours[-1])}",
        "hours": len(hours),
    }


def scope_users(db: DatabaseResource, scope: RunScope) -> list[int] | None:
    """Users a run is restricted to: ``--user`` ids, else the owners of ``--model`` ids, else all."""
    if scope.users:
        return sorted(set(scope.users))
    if scope.models:
        m = schema.attribution_models
        with db.engine().connect() as conn:
            owners = conn.execute(select(m.c.user_id).where(m.c.model_id.in_(list(scope.models)))).scalars()
            return sorted({int(u) for u in owners})
    return None
