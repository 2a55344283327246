"""A chunk of hours exported end to end: read under the export lock, build, write, report."""

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from sqlalchemy.engine import Engine

from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.core.chunk_plan import FIXED_MIB, MIB
from attribution_pipeline.exports.build import (
    BUILD_ROWS,
    HourExports,
    build_exports,
    build_parts,
    group_hours,
    journeys_export,
)
from attribution_pipeline.exports.columns import EXPORT_TABLES, SORT_KEYS
from attribution_pipeline.exports.from_run import RunWrites
from attribution_pipeline.exports.journey_plan import JourneyPlan, Recompute, plan_journeys
from attribution_pipeline.exports.layout import Staged, discard, export_lock, publish_parts, stage_part
from attribution_pipeline.exports.spend import read_spend
from attribution_pipeline.exports.stored import StoredRows, read_stored_rows


#: Peak bytes per touchpoint row of an export chunk, beyond :data:`EXPORT_BUILD_MIB`: the rows a
#: chunk's read holds (touchpoints with their conversion, journeys, clicks: about 115 B a touchpoint)
#: and, while it is built and written, the next chunk's read (the run's credits it comes from, the
#: joined rows: about 250 B), measured on the benchmark's data; at 10M clicks chunks peaked at about
#: 800 B a row above the build part (docs/exports.md, "Memory").
BYTES_PER_TOUCH_ROW = 800
#: Peak of building and writing one part of a chunk (at most ``build.BUILD_ROWS`` touchpoints joined
#: wide: names, shares, positions), whatever the chunk's size (measured, same place).
EXPORT_BUILD_MIB = 450

def chunk_rows(budget_mb: float) -> int:
    """Touchpoint rows per export chunk within a run's memory budget (``ATTRIBUTION_MEMORY_BUDGET_MB``):
    what is left after the run's fixed part (``core/chunk_plan.FIXED_MIB``) and a build part
    (:data:`EXPORT_BUILD_MIB`), at :data:`BYTES_PER_TOUCH_ROW` a row; at least ``build.BUILD_ROWS``."""
    left = (float(budget_mb) - FIXED_MIB - EXPORT_BUILD_MIB) * MIB
    return max(BUILD_ROWS, int(left) // BYTES_PER_TOUCH_ROW)


def row_chunks(hours: Sequence[int], rows: dict[int, int], *, max_rows: int, max_hours: int) -> list[tuple[int, ...]]:
    """``hours`` in export chunks of at most ``max_rows`` touchpoint rows (``rows`` per hour; an
    hour with more is a chunk alone) and at most ``max_hours`` hours (``ATTRIBUTION_CHUNK_HOURS``:
    it bounds the journeys of hours without touchpoints, and several chunks let the next one be
    read while this one is written)."""
    return group_hours(hours, rows, max_hours=max_hours, max_rows=max_rows)


@dataclass
class ExportStats:
    hours: int = 0
    chunks: int = 0
    files: int = 0
    rows: dict[str, int] = field(default_factory=lambda: {t: 0 for t in EXPORT_TABLES})
    unreconciled_snapshots: int = 0  # stored snapshots with revenue or cost but no touchpoints
    journeys: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)  # where the touchpoint rows came from

    def add(self, other: "ExportStats") -> None:
        self.hours += other.hours
        self.chunks += other.chunks
        self.files += other.files
        for t in EXPORT_TABLES:
            self.rows[t] += other.rows[t]
        self.unreconciled_snapshots += other.unreconciled_snapshots
        for k, v in other.journeys.items():
            self.journeys[k] = self.journeys.get(k, 0) + v
        for k, v in other.sources.items():
            self.sources[k] = self.sources.get(k, 0) + v


@dataclass
class StagedPart:
    """The files of a part of a chunk being written under temporary names (:func:`start_exports`),
    with the part's stats; :func:`finish_exports` waits for them and publishes them."""

    futures: list[Future]
    stats: ExportStats


def start_exports(pool: ThreadPoolExecutor, root: Path, hours: Sequence[int], exports: HourExports) -> StagedPart:
    """Start writing one file per table and hour of ``exports`` (an empty file for an hour without
    rows) under a temporary name, on ``pool``: the caller builds the next part meanwhile."""
    stats = ExportStats(hours=len(hours))
    parts = []
    for table in EXPORT_TABLES:
        df: pl.DataFrame = getattr(exports, table)
        by_hour = df.partition_by("date_hour", as_dict=True, maintain_order=True)
        parts += [(table, hour, by_hour.get((hour,), df.clear())) for hour in hours]
        stats.rows[table] += df.height
    futures = [pool.submit(stage_part, root, table, hour, df) for table, hour, df in parts]
    stats.files += len(futures)
    covered = exports.touchpoints.select("snapshot_id").unique()
    stats.unreconciled_snapshots = exports.snapshots.filter(
        (pl.col("attributed_revenue") != 0) | (pl.col("attributed_cost") != 0)
    ).join(covered, on="snapshot_id", how="anti").height
    return StagedPart(futures, stats)


def _staged(part: StagedPart) -> list[Staged]:
    """Every file of ``part`` once written; if one failed, the others' temporary files are removed
    and its error raised."""
    staged: list[Staged] = []
    failed: BaseException | None = None
    for future in part.futures:
        try:
            staged.append(future.result())
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once every file is done
            failed = failed or exc
    if failed is not None:
        discard(staged)
        raise failed
    return staged


def finish_exports(root: Path, part: StagedPart) -> ExportStats:
    """Publish the files of ``part`` together once all are written and fsynced: all are renamed
    into place under the exclusive publish lock, so a reader holding it shared never sees one
    table of an hour from this export and another from the previous one."""
    staged = _staged(part)
    try:
        publish_parts(root, staged)
    finally:
        discard(staged)
    return part.stats


def abandon_exports(part: StagedPart) -> None:
    """Wait for the files of ``part`` and remove them unpublished (a later part failed)."""
    try:
        discard(_staged(part))
    except BaseException:  # noqa: BLE001 - the error that abandons the part is the one raised
        pass


#: Files staged at once (encoded, written, fsynced): the fsyncs wait on the disk, the encoding runs
#: in Polars without the GIL; 3 writers staged 2,160 small files in 2.1-2.4 s instead of 3.3-3.5 s.
STAGE_WORKERS = 3


def _fresh_ids(plan: JourneyPlan) -> pl.DataFrame:
    return plan.fresh.select(campaign_id="touch_campaign_id", ppc_account_id="touch_ppc_account_id",
                             landing_page_id="touch_landing_page_id")


@dataclass
class ChunkRead:
    """What the export of one chunk of hours needs, read under the export lock: where its journeys
    come from, what MySQL stores for its hours and its clicks' spend (``exports/spend.py``)."""

    hours: tuple[int, ...]
    plan: JourneyPlan
    stored: StoredRows
    spend: pl.DataFrame


def read_chunk(engine: Engine, hours: Sequence[int], *, root: Path, journeys: HourlyFrame,
               users: Sequence[int] | None, recompute: Recompute, run: RunWrites | None = None,
               skipped: pl.DataFrame | None = None) -> ChunkRead:
    """Plan the journeys of ``hours`` (``journeys``: the export asset's input; ``skipped``: the
    (user, hour) pairs it lacks, :func:`plan_journeys`) and read what is stored for them (hold the
    export lock); with ``run``, the touchpoints it wrote come from its frames
    (``exports/from_run.py``), not from MySQL."""
    plan = plan_journeys(hours, root=root, journeys=journeys, users=users, recompute=recompute, skipped=skipped)
    with engine.connect() as conn:
        spend = read_spend(conn, hours)
    spend_ids = spend.select(campaign_id="aff_campaign_id", ppc_account_id="ppc_account_id",
                             landing_page_id="landing_page_id")
    return ChunkRead(tuple(hours), plan, read_stored_rows(engine, hours, [_fresh_ids(plan), spend_ids], run=run), spend)


def write_chunk_files(root: Path, chunk: ChunkRead) -> ExportStats:
    """Build and write every file of a chunk read by :func:`read_chunk` (hold the export lock)."""
    stats = ExportStats()
    plan, stored = chunk.plan, chunk.stored
    journeys = pl.concat([journeys_export(plan.fresh, stored.names), plan.kept]).sort(SORT_KEYS["journeys"])
    pending: StagedPart | None = None
    with ThreadPoolExecutor(max_workers=STAGE_WORKERS, thread_name_prefix="export-stage") as pool:
        try:
            for part in build_parts(chunk.hours, stored.touches):  # a part's files are written while the next builds
                previous, pending = pending, start_exports(pool, root, part,
                                                           build_exports(stored, journeys, part, chunk.spend))
                if previous is not None:
                    stats.add(finish_exports(root, previous))
            if pending is not None:
                last, pending = pending, None
                stats.add(finish_exports(root, last))
        finally:
            if pending is not None:
                abandon_exports(pending)
    stats.journeys = {"journey_hours_from_frames": plan.hours_from_frames,
                      "journey_hours_from_exports": plan.hours_from_exports,
                      "journey_hours_recomputed": plan.hours_recomputed}
    stats.sources = dict(stored.sources)
    stats.chunks = 1
    return stats


def export_chunk(engine: Engine, hours: Sequence[int], *, root: Path, journeys: HourlyFrame,
                 users: Sequence[int] | None, recompute: Recompute, run: RunWrites | None = None,
                 skipped: pl.DataFrame | None = None) -> ExportStats:
    """Export whole ``hours``: under the export lock, read what is stored, plan the journeys,
    write every file. ``users`` None for a full run, else the users a scoped run rewrote;
    ``skipped``: the (user, hour) pairs whose journeys ``journeys`` lacks (:func:`read_chunk`)."""
    with export_lock(root):
        return write_chunk_files(root, read_chunk(engine, hours, root=root, journeys=journeys, users=users,
                                                  recompute=recompute, run=run, skipped=skipped))


def export_chunks(chunks: Sequence[Sequence[int]], *, root: Path,
                  read: Callable[[Sequence[int]], ChunkRead]) -> Iterator[tuple[tuple[int, ...], ExportStats]]:
    """Export every chunk of hours in order, under one hold of the export lock, yielding each
    chunk's hours and stats once its files are written. ``read`` is :func:`read_chunk` for a chunk
    (with the caller's retries). The next chunk is read in a background thread while this one's
    files are built and written: the reads wait on MySQL, the build on the CPU (default size,
    four 168-hour chunks: 15.7 s instead of 20.8 s, bench/HISTORY.md). At most two chunks'
    stored rows are in memory."""
    chunks = [tuple(c) for c in chunks]
    if not chunks:
        return
    with export_lock(root), ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-read") as pool:
        pending = pool.submit(read, chunks[0])
        for i, hours in enumerate(chunks):
            current = pending.result()
            if i + 1 < len(chunks):
                pending = pool.submit(read, chunks[i + 1])
            stats = write_chunk_files(root, current)
            del current  # only the next chunk's rows stay in memory while the caller logs
            yield hours, stats
