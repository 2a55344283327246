"""The journey backfill: ``202_conversion_touchpoints`` for a window of conversions, as PHP's
``backfill-conversion-journeys.php`` stores them (spec §2.5; D2, D13, D15, D28).

Which conversions: ``start <= conv_time < end``, ``deleted = 0``, of users not deleted (D16),
optionally only some users, whose effective multi-touch setting is on (spec §5.1, D13); the
journeys are the pipeline's one journey builder's (:class:`~attribution_pipeline.storage.
journey_source.JourneySource`), so a journey stored here is exactly the journey the hourly run
credits. Conversions whose click row is missing or belongs to another user get none (D16, D21),
and the journeys of the others are left alone, as PHP leaves them.

How: one scan of the window's conversion ids and times (``202_conversion_logs`` has no index on
``conv_time``), cut into batches in time order of at most ``batch_size`` conversions and
:data:`MAX_BATCH_HOURS` hours (a batch never splits one second's conversions, so the click stream
reads each click once); per batch one read of its conversions by primary key, the journeys built
vectorised, and one transaction under the batch's hour locks (the write-back's, D9) that deletes
the batch's conversions' stored touches and inserts positions 0..n-1 with one ``created_at``
(``hour_rewrite.persist_journeys``, PHP's ``persistJourney`` for many conversions). Rerunning gives
the same rows (only ``touchpoint_id`` and ``created_at`` change).
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl
from sqlalchemy import select

from attribution_pipeline.core.hours import HOUR
from attribution_pipeline.storage import prosper_reads, tables
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.frame_io import read_frame
from attribution_pipeline.storage.hour_rewrite import persist_journeys, read_committed
from attribution_pipeline.storage.journey_source import JourneyRule, JourneySource, counted
from attribution_pipeline.storage.locks import hours_locked

#: The most hours one batch spans (each hour is one named lock held by the batch's transaction).
MAX_BATCH_HOURS = 168
DEFAULT_BATCH_SIZE = 5000
_INDEX = {"conv_id": pl.Int64, "conv_time": pl.Int64, "user_id": pl.Int64, "campaign_id": pl.Int64}


@dataclass
class BackfillReport:
    """What a backfill did (counts of conversions and rows; never personal data)."""

    start: int
    end: int
    conversions: int = 0  # in the window, not soft-deleted, of users not deleted
    counted: int = 0  # their click row was found, and is their user's (D16, D21)
    persisted: int = 0  # multi-touch on: journeys written
    single_touch: int = 0  # multi-touch off: left alone (spec §2.5 skips them)
    rows_written: int = 0
    batches: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds


def window_index(db: Database, start: int, end: int, users: Sequence[int] | None, logger=None) -> pl.DataFrame:
    """conv_id, conv_time, user_id, campaign_id of the window's conversions (``start <= conv_time
    < end``, not soft-deleted, users not deleted), sorted by (conv_time, conv_id)."""
    c, u = tables.conversion_logs, tables.users
    stmt = (select(c.c.conv_id, c.c.conv_time, c.c.user_id, c.c.campaign_id)
            .select_from(c.join(u, u.c.user_id == c.c.user_id))
            .where(c.c.conv_time.between(start, end - 1), c.c.deleted == 0, u.c.user_deleted == 0))
    if users:
        stmt = stmt.where(c.c.user_id.in_(sorted(set(int(x) for x in users))))

    def read():
        with db.engine().connect() as conn:
            return read_frame(conn, stmt, _INDEX)

    return db.retry.run(read, what="scan conversions", logger=logger).sort(["conv_time", "conv_id"])


def plan_batches(index: pl.DataFrame, batch_size: int, max_hours: int = MAX_BATCH_HOURS) -> list[pl.DataFrame]:
    """``index`` (sorted by conv_time) cut into consecutive batches of at most ``batch_size``
    conversions (more only when one second holds more) spanning at most ``max_hours`` hours."""
    if index.height == 0:
        return []
    seconds = index.group_by("conv_time", maintain_order=True).len()
    bounds, count, first_hour = [], 0, None
    for conv_time, n in seconds.iter_rows():
        hour = conv_time - conv_time % HOUR
        if count and (count + n > batch_size or hour - first_hour >= max_hours * HOUR):
            bounds.append(conv_time)
            count, first_hour = 0, None
        count += n
        first_hour = hour if first_hour is None else first_hour
    edges = pl.Series("edge", bounds, dtype=pl.Int64)
    numbered = index.with_columns(_batch_numbers(index.get_column("conv_time"), edges))
    return numbered.partition_by("batch", maintain_order=True, include_key=False)


def _batch_numbers(times: pl.Series, edges: pl.Series) -> pl.Series:
    """For each time, how many batch edges (first times of batches 1..) are at or before it."""
    return edges.search_sorted(times, side="right").alias("batch")


def backfill(db: Database, rule: JourneyRule, start: int, end: int, *, users: Sequence[int] | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, write_batch_rows: int = 5000, lock_timeout: int = 600,
             progress: Callable[[str], None] | None = None, logger=None) -> BackfillReport:
    """Persist the journeys of the window's multi-touch conversions (module docstring)."""
    if rule.source != "clicks":
        rule = JourneyRule(lookback_seconds=rule.lookback_seconds, touch_cap=rule.touch_cap,
                           click_slice_rows=rule.click_slice_rows)  # the backfill builds from clicks
    report = BackfillReport(start=start, end=end)
    started = time.perf_counter()
    index = window_index(db, start, end, users, logger)
    report.add("scan", time.perf_counter() - started)
    report.conversions = index.height
    batches = plan_batches(index, max(1, int(batch_size)))
    source = JourneySource(db, rule, logger)
    lap = time.perf_counter()
    source.prepare(index.select("user_id", "campaign_id").unique())
    report.add("read_settings", time.perf_counter() - lap)
    for number, batch in enumerate(batches, start=1):
        _one_batch(db, source, batch, start, end, users, report, write_batch_rows, lock_timeout, logger)
        report.batches = number
        if progress is not None:
            progress(f"batch {number}/{len(batches)}: {batch.height} conversion(s); "
                     f"processed {report.persisted} conversion journeys ({report.rows_written} rows)")
    report.seconds = time.perf_counter() - started
    return report


def _one_batch(db: Database, source: JourneySource, batch: pl.DataFrame, start: int, end: int,
               users: Sequence[int] | None, report: BackfillReport, batch_rows: int, lock_timeout: int,
               logger) -> None:
    lap = time.perf_counter()
    ids = batch.get_column("conv_id").to_list()

    def read():
        with db.engine().connect() as conn:
            return prosper_reads.conversions_by_id(conn, ids, start, end - 1, users)

    convs = counted(db.retry.run(read, what="read conversions", logger=logger))
    report.add("read_conversions", time.perf_counter() - lap)
    lap = time.perf_counter()
    journeys = source.journeys(convs)
    multi = journeys.filter(pl.col("multi_touch"))
    report.add("build", time.perf_counter() - lap)
    report.counted += convs.height
    persisted = multi.get_column("conv_id").n_unique()
    report.persisted += persisted
    report.single_touch += convs.height - persisted
    if multi.height == 0:
        return
    lap = time.perf_counter()
    hours = sorted(set(multi.get_column("date_hour").to_list()))
    report.rows_written += db.retry.run(lambda: _write(db, multi, hours, batch_rows, lock_timeout),
                                        what="write journeys", logger=logger)
    report.add("write", time.perf_counter() - lap)


def _write(db: Database, journeys: pl.DataFrame, hours: list[int], batch_rows: int, lock_timeout: int) -> int:
    """One transaction under the hours' locks: the conversions' stored touches replaced."""
    with db.engine().connect() as conn:
        with hours_locked(conn, hours, lock_timeout):
            read_committed(conn)
            with conn.begin():
                return persist_journeys(conn, journeys, now=int(time.time()), batch_rows=batch_rows)
