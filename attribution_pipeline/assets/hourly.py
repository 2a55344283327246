"""What every hourly asset shares: partitions built from the settings, the backfill policy (one
run for any range, or ranges of N hours: ``ATTRIBUTION_BACKFILL_HOURS_PER_RUN``, D29), and the
helpers a step uses to know its hours, its users and its log fields.

The hourly assets and their checks are declared by module-level functions and decorated when the
definitions are built (:class:`Hourly`), because the partitions' first hour is a setting
(``ATTRIBUTION_PARTITIONS_START``) read with every other setting at that moment, not at import.
"""

import warnings
from dataclasses import dataclass

import dagster as dg

from attribution_pipeline.assets.resources import RunScope
from attribution_pipeline.core.hours import hour_key, hours_in
from attribution_pipeline.settings import KEY_FORMAT
from attribution_pipeline.storage import prosper_reads
from attribution_pipeline.storage.database import Database

GROUP_NAME = "attribution"
FRAMES_IO = "frames_io_manager"

#: One run over any range of hours (UI backfills, ``--partition-range``, the CLI).
SINGLE_RUN = dg.BackfillPolicy.single_run()
#: The Dagster concurrency pool (run granularity, D29) of the runs that write to Prosper202's MySQL.
MYSQL_WRITES_POOL = "attribution_mysql_writes"


def backfill_policy(hours_per_run: int) -> dg.BackfillPolicy:
    """One run for any range (0), else ranges of ``hours_per_run`` hours, each its own run (D29)."""
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=hours_per_run) if hours_per_run > 0 else SINGLE_RUN


#: Tags that make one Dagster run cover a range of partitions (what UI backfills with a
#: single-run backfill policy set, and what `dagster asset materialize --partition-range` sets).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

#: Check steps run before the write-back step, which removes a scoped run's private frames.
BEFORE_WRITEBACK = {"dagster/priority": "1"}


def range_tags(first_hour: int, last_hour: int) -> dict[str, str]:
    return {RANGE_START_TAG: hour_key(first_hour), RANGE_END_TAG: hour_key(last_hour)}


def hourly_partitions(partitions_start: str) -> dg.HourlyPartitionsDefinition:
    """UTC hours from ``partitions_start`` (an hour key), keyed like ``2024-06-01-09:00``."""
    return dg.HourlyPartitionsDefinition(start_date=partitions_start, timezone="UTC", fmt=KEY_FORMAT)


@dataclass(frozen=True)
class Hourly:
    """Decorators for the steps of the hourly pipeline and their checks, on one partitioning."""

    partitions: dg.HourlyPartitionsDefinition
    policy: dg.BackfillPolicy = SINGLE_RUN  # backfill_policy(settings.backfill_hours_per_run)

    def asset(self, **kwargs):
        """``@dg.asset`` on the hourly partitions, with the backfill policy (by default single-run: a
        backfill of any range is one run) in the ``attribution`` group."""
        return dg.asset(partitions_def=self.partitions, backfill_policy=self.policy, group_name=GROUP_NAME, **kwargs)

    def frame_asset(self, **kwargs):
        """:meth:`asset` whose output is an ``HourlyFrame`` stored by the hourly Parquet IO manager."""
        return self.asset(io_manager_key=FRAMES_IO, **kwargs)

    def check(self, asset: str, name: str, severity: dg.AssetCheckSeverity, description: str, **kwargs):
        """``@dg.asset_check`` on the hourly partitions, so a check reads exactly its run's hours.

        Partitioned asset checks are a preview feature of Dagster 1.13 (they are what makes a
        check read only the run's hours and show per-hour status); its PreviewWarning is silenced
        here, for these definitions only, because the choice is deliberate (docs/operations.md).
        """

        def decorate(fn):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", dg.PreviewWarning)
                return dg.asset_check(
                    asset=asset, name=name, partitions_def=self.partitions, description=description,
                    metadata={"severity": severity.value}, op_tags=BEFORE_WRITEBACK, **kwargs,
                )(fn)

        return decorate


def run_hours(context: dg.AssetExecutionContext) -> list[int]:
    window = context.partition_time_window
    return hours_in(window.start, window.end)


def run_fields(context: dg.AssetExecutionContext) -> dict:
    """Fields every structured log line of a run carries."""
    hours = run_hours(context)
    return {
        "run_id": context.run.run_id,
        "partition_range": f"{hour_key(hours[0])}..{hour_key(hours[-1])}",
        "hours": len(hours),
    }


def scope_users(db: Database, scope: RunScope) -> list[int] | None:
    """Users a run is restricted to: ``--user`` ids, else the owners of ``--model`` ids, else all."""
    if scope.users:
        return sorted(set(scope.users))
    if scope.models:
        def read():
            with db.engine().connect() as conn:
                return prosper_reads.model_owners(conn, scope.models)

        return db.retry.run(read, what="read model owners")
    return None
