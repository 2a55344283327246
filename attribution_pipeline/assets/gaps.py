"""The whole-history gap scan (``attribution_writeback.history_gaps``): what no run's own checks see.

A run checks its own hours. Hours nobody ran again stay unnoticed: hours with conversions but no
snapshots (a run that died, a backfill never made), hours in MySQL without Parquet files (a run
killed between its write-back and its exports), and runs left STARTED by a dead process (marked
FAILED here, as every new run does). Evaluated daily by the ``attribution_gap_scan`` schedule, on
demand with ``attribution gaps`` or from the UI, never as part of a run of the hourly job.
"""

import time
from dataclasses import dataclass

import dagster as dg
import polars as pl

from attribution_pipeline.assets.freshness import WRITEBACK_KEY, due_hour
from attribution_pipeline.assets.resources import mark_dead_runs
from attribution_pipeline.core.history_gaps import hours_without_exports, hours_without_snapshots
from attribution_pipeline.core.hours import HOUR, hour_key
from attribution_pipeline.exports.columns import EXPORT_TABLES
from attribution_pipeline.exports.layout import exported_hours
from attribution_pipeline.logs import log_event, stdlib_logger
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import gap_reads, retention_windows
from attribution_pipeline.storage.database import Database

GAPS_CHECK = "history_gaps"
GAP_JOB = "attribution_gap_scan"


@dataclass
class GapScan:
    first_hour: int
    last_hour: int  # the last hour that had to be written by now (freshness' due hour)
    without_snapshots: pl.DataFrame  # user_id, date_hour, conversions
    without_exports: pl.DataFrame  # date_hour, missing
    dead_runs: list[str]

    @property
    def passed(self) -> bool:
        return self.without_snapshots.is_empty() and self.without_exports.is_empty() and not self.dead_runs

    def lines(self) -> list[str]:
        """What was found, one line per finding (at most 50 per kind)."""
        out = [f"user {r['user_id']} {hour_key(r['date_hour'])}: {r['conversions']} conversion(s), no snapshots"
               for r in self.without_snapshots.head(50).iter_rows(named=True)]
        out += [f"{hour_key(r['date_hour'])}: snapshots in MySQL, no Parquet file of {r['missing']}"
                for r in self.without_exports.head(50).iter_rows(named=True)]
        out += [f"run {run_id}: was STARTED, its process is gone; marked FAILED" for run_id in self.dead_runs]
        return out


def scan(instance: dg.DagsterInstance, db: Database, settings: Settings, now: int | None = None,
         logger=None) -> GapScan:
    """Scan the whole history, from the first partition to the latest due hour."""
    now = int(time.time()) if now is None else now
    first, last = settings.first_hour, due_hour(now)

    def read():
        with db.engine().connect() as conn:
            users = gap_reads.users_with_models(conn)
            return (gap_reads.conversion_user_hours(conn, first, last + HOUR, users),
                    gap_reads.snapshot_user_hours(conn, first, last + HOUR),
                    retention_windows.user_windows(conn, settings.retention_days, now))

    conversions, snapshots, windows = db.retry.run(read, what="gap scan", logger=logger)
    conversions = retention_windows.without_expired(conversions, windows)  # purged by retention (D27)
    exported = {table: exported_hours(settings.export_path, table) for table in EXPORT_TABLES}
    snapshot_hours = snapshots.get_column("date_hour").unique().to_list()
    dead = db.retry.run(lambda: mark_dead_runs(instance, db, settings.home / "run_locks", None, logger),
                        what="dead-run sweep", logger=logger)
    return GapScan(first, last, hours_without_snapshots(conversions, snapshots),
                   hours_without_exports(snapshot_hours, exported), dead)


@dg.asset_check(
    asset=WRITEBACK_KEY,
    name=GAPS_CHECK,
    description="The whole history, from the first partition to the latest hour due: no hour with credited "
    "conversions lacks its snapshots, no hour with snapshots lacks its Parquet files, no run is left STARTED "
    "by a dead process (such runs are marked FAILED). Daily (attribution_gap_scan schedule) and on demand "
    "(`attribution gaps`). Red: run the hours named again (`attribution rebuild --start --end`).",
    metadata={"severity": "ERROR"},
)
def writeback_history_gaps(context: dg.AssetCheckExecutionContext, db: dg.ResourceParam[Database],
                           settings: dg.ResourceParam[Settings]):
    found = scan(context.instance, db, settings, logger=context.log)
    return check_result(found, context.log)


def check_result(found: GapScan, logger=None) -> dg.AssetCheckResult:
    """The check's result: ERROR for missing rows or files, WARN when only dead runs were found."""
    data_gaps = found.without_snapshots.height + found.without_exports.height
    hours = sorted({*found.without_snapshots.get_column("date_hour").to_list(),
                    *found.without_exports.get_column("date_hour").to_list()})
    log_event(logger or stdlib_logger, "check_evaluated", level="info" if found.passed else "warning",
              stage="checks", check=GAPS_CHECK, passed=found.passed, user_hours_without_snapshots=found.without_snapshots.height,
              hours_without_exports=found.without_exports.height, dead_runs=len(found.dead_runs))
    return dg.AssetCheckResult(
        check_name=GAPS_CHECK,
        passed=found.passed,
        severity=dg.AssetCheckSeverity.ERROR if data_gaps else dg.AssetCheckSeverity.WARN,
        description=("no gaps from {} to {}".format(hour_key(found.first_hour), hour_key(found.last_hour))
                     if found.passed else "; ".join(found.lines()[:3]) + (" ..." if len(found.lines()) > 3 else "")),
        metadata={
            "first_hour": hour_key(found.first_hour),
            "last_hour": hour_key(found.last_hour),
            "user_hours_without_snapshots": found.without_snapshots.height,
            "hours_without_exports": found.without_exports.height,
            "dead_runs_marked_failed": dg.MetadataValue.json(found.dead_runs),
            "failing_hours": dg.MetadataValue.json([hour_key(h) for h in hours[:100]]),
            "findings": dg.MetadataValue.json(found.lines()[:100]),
        },
    )


gap_scan_job = dg.define_asset_job(
    GAP_JOB, selection=dg.AssetSelection.checks(dg.AssetCheckKey(WRITEBACK_KEY, GAPS_CHECK)),
    description="The whole-history gap scan (attribution_writeback.history_gaps), on its own.",
)

gap_scan_schedule = dg.ScheduleDefinition(
    name="attribution_gap_scan_daily", job=gap_scan_job, cron_schedule="10 4 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 04:10 UTC: the whole-history gap scan.",
)
