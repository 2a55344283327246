"""An IO manager for hourly frames that handles one hour and any range of hours.

Dagster's filesystem IO manager refuses outputs that cover several partitions, and community
Polars IO managers cannot store them either. This one stores every :class:`HourlyFrame` as one
Parquet file per asset and hour::

    <base>/<asset>/date=2024-06-01/hour=09.parquet

Each file is written to a temporary name and renamed into place (atomic: a crash never leaves a
partial file), then its directory is fsynced (the rename is durable; the file's own data is not
fsynced: frames are intermediate, recomputed by running the hours again, and an fsync per file
would cost seconds per 168-hour run).

**Each run reads and writes its own frames.** A run writes every output into its own folder,
``<base>/_runs/<run_id>/``, and loads an input from the first of: its own folder, the folders of
the runs it re-executes (``parent_run_id`` up to the root run: a re-execution from failure finds
the frames its failed parent wrote), the shared ``<base>``. So two runs over the same hours never
read each other's frames. A complete output (not ``HourlyFrame.scoped``) is also *published*: each
file is hard-linked into the shared folder under a temporary name and renamed over the shared
file (no copy; a copy only where linking fails), so a later run that materialises only some
assets (from the UI) finds it, and a reader that opened the run's own file is unaffected. Frames
computed for only some users or models (``scoped``, e.g. a ``--user`` run) are never published.
A run's folder (and those of the failed runs it re-executes) is removed when its export step
succeeds; a failed run keeps its folder for a re-execution; folders left for a day are pruned.

An input is loaded lazily: the :class:`HourlyFrame` it returns lists the hours whose file is
missing (``missing``), and reading one of them raises :class:`MissingUpstreamHours`, so an asset
that can do without some hours (the exports recompute their journeys) decides what to do.
"""

import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar, copy_context
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow.parquet as pq

from attribution_pipeline.core.chunk_plan import STORED_ROW_WEIGHT, plan_chunks
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.core.hours import hours_in
from attribution_pipeline.errors import MissingUpstreamHours
from attribution_pipeline.exports.layout import fsync_dir

RUNS_DIR = "_runs"
#: A run's private frames untouched for longer than this are left over (a crash, a failed run never
#: re-executed, a partial run without the export step): removed.
STALE_PRIVATE_SECONDS = 86400


def hour_file(root: Path, asset: str, hour: int) -> Path:
    moment = datetime.fromtimestamp(hour, tz=timezone.utc)
    return root / asset / f"date={moment:%Y-%m-%d}" / f"hour={moment:%H}.parquet"


def _tmp_name(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{kind}")


_PENDING_SYNCS: ContextVar[set[Path] | None] = ContextVar("frames_pending_dir_syncs", default=None)


@contextmanager
def batched_dir_syncs() -> Iterator[None]:
    """Within the block, :func:`write_hour` and :func:`publish_hour` leave their directory's fsync
    to its end, where each directory (and its parent, which may hold a new directory) is fsynced
    once: a chunk's 168 renames cost a few fsyncs, not 168 (2-3 ms each on a busy disk)."""
    pending: set[Path] = set()
    token = _PENDING_SYNCS.set(pending)
    try:
        yield
    finally:
        _PENDING_SYNCS.reset(token)
    for folder in sorted(pending | {f.parent for f in pending}):
        fsync_dir(folder)


def _sync_dir(folder: Path) -> None:
    pending = _PENDING_SYNCS.get()
    if pending is None:
        fsync_dir(folder)
    else:
        pending.add(folder)


def write_hour(root: Path, asset: str, hour: int, df: pl.DataFrame) -> Path:
    """Replace the hour's file of ``asset`` under ``root`` atomically, then fsync its directory
    (at the end of the block inside :func:`batched_dir_syncs`); returns its path."""
    path = hour_file(root, asset, hour)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path, "tmp")
    try:
        df.write_parquet(tmp, compression="lz4", statistics=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(path.parent)
    return path


def publish_hour(source: Path, shared: Path, asset: str, hour: int) -> Path:
    """Make ``source`` (a run's file of the hour) the shared file of ``asset``: a hard link under a
    temporary name renamed over the shared file (atomic; no data copied), a copy where the
    filesystem cannot link. Whoever opened the previous shared file keeps reading it."""
    path = hour_file(shared, asset, hour)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path, "link")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(path.parent)
    return path


#: Threads writing a step's hour files (each write releases the GIL while Polars encodes).
FRAME_WRITERS = 2


def _store_hour(root: Path, shared: Path | None, asset: str, hour: int, df: pl.DataFrame) -> None:
    """:func:`write_hour` into the run's folder, then :func:`publish_hour` unless ``shared`` is None."""
    path = write_hour(root, asset, hour, df)
    if shared is not None:
        publish_hour(path, shared, asset, hour)


def _wait(futures: Sequence[Future]) -> None:
    """Wait for every one of ``futures``, then raise the first one's error, if any."""
    errors = [f.exception() for f in futures]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first


def read_hours(root: Path, asset: str, hours: tuple[int, ...]) -> pl.DataFrame:
    paths = [hour_file(root, asset, h) for h in hours]
    missing = [h for h, p in zip(hours, paths) if not p.exists()]
    if missing:
        first = datetime.fromtimestamp(missing[0], tz=timezone.utc)
        raise MissingUpstreamHours(
            f"{asset}: {len(missing)} hour(s) were never materialised, first {first:%Y-%m-%d %H:00} UTC "
            f"(looked in {root / asset}); materialise the upstream assets for these hours first"
        )
    return read_hour_files(root, asset, hours)


def read_hour_files(root: Path, asset: str, hours: Sequence[int]) -> pl.DataFrame:
    """The stored files of ``hours`` (all must exist) as one frame."""
    # One buffer per column, not one per hour file: every later join, gather and arithmetic on a
    # frame of 168 chunks per column pays for locating each row's chunk (gathers ~10x slower).
    return pl.read_parquet([hour_file(root, asset, h) for h in hours]).rechunk()


def _file_rows(path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, ValueError):  # missing or unreadable: reading the hour will say so
        return 0


def stored_rows(root: Path, asset: str, hours: Sequence[int]) -> dict[int, int]:
    """The rows of each stored hour file of ``asset`` (from the Parquet footers: nothing is read)."""
    return {h: _file_rows(hour_file(root, asset, h)) for h in hours}


def stored_frame(root: Path, asset: str, hours: Sequence[int], max_hours: int = 24,
                 budget_mb: float | None = None) -> HourlyFrame:
    """The stored frame of ``asset`` over ``hours``, read lazily; ``missing`` lists the hours
    without a file (reading one raises :class:`MissingUpstreamHours`). Iterated (the data checks),
    it yields chunks of at most ``max_hours`` hours whose stored rows fit ``budget_mb``
    (``core/chunk_plan.py``, a stored row counted as ``STORED_ROW_WEIGHT`` estimated rows), from
    the files' row counts when first iterated."""
    missing = [h for h in hours if not hour_file(root, asset, h).exists()]
    absent = set(missing)
    probe = next((hour_file(root, asset, h) for h in hours if h not in absent), None)
    schema = dict(pl.read_parquet_schema(probe)) if probe is not None else {}

    def chunks() -> tuple[tuple[int, ...], ...]:
        rows = {h: n * STORED_ROW_WEIGHT for h, n in stored_rows(root, asset, hours).items()}
        return plan_chunks(hours, rows, budget_mb=budget_mb, max_hours=max_hours).chunks

    return HourlyFrame(hours, lambda chunk, _stats: read_hours(root, asset, chunk), schema, name=asset,
                       missing=missing, chunk_size=max_hours, chunks=chunks if budget_mb is not None else None)


def private_root(base: Path, run_id: str) -> Path:
    """Where a run keeps its own frames."""
    return Path(base) / RUNS_DIR / run_id


def input_root(base: Path, asset: str, lineage: Sequence[str]) -> Path:
    """Where a run whose ``lineage`` is [its id, its parent's, ..., the root run's] reads ``asset``:
    the first of those runs' folders that holds the asset, else the shared folder."""
    for run_id in lineage:
        folder = private_root(base, run_id)
        if (folder / asset).is_dir():
            return folder
    return Path(base)


def remove_private_frames(base: Path, run_id: str) -> None:
    """Drop a run's own frames once it succeeded (its export step, the last reader). A failed run
    keeps them, so that a re-execution from failure finds them; they are pruned after a day."""
    shutil.rmtree(private_root(base, run_id), ignore_errors=True)


def remove_run_frames(base: Path, lineage: Sequence[str]) -> None:
    """Drop the frames of a run that succeeded and of the failed runs it re-executed (its
    ``lineage``, :func:`run_lineage`): nothing reads them any more."""
    for run_id in lineage:
        remove_private_frames(base, run_id)


def _last_touched(folder: Path) -> float:
    """The newest mtime of a run's folder, its asset folders and their date folders (a file
    written into a date folder updates that folder's mtime)."""
    newest = folder.stat().st_mtime
    for sub in (*folder.glob("*"), *folder.glob("*/*")):
        try:
            newest = max(newest, sub.stat().st_mtime)
        except FileNotFoundError:
            pass
    return newest


def prune_private_frames(base: Path, now: float | None = None) -> None:
    """Remove the private frames of runs that left them (a crash, a failed run never re-executed, a
    run without the export step) and wrote nothing for a day."""
    cutoff = (time.time() if now is None else now) - STALE_PRIVATE_SECONDS
    for folder in (Path(base) / RUNS_DIR).glob("*"):
        try:
            if folder.is_dir() and _last_touched(folder) < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:
            pass


def asset_name(key: dg.AssetKey) -> str:
    return "__".join(key.path)


def run_lineage(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """``run``'s id, then its parent's, up to the root run's (a re-execution's chain)."""
    lineage = [run.run_id]
    parent_id = run.parent_run_id
    while parent_id and parent_id not in lineage:
        lineage.append(parent_id)
        parent = instance.get_run_by_id(parent_id)
        parent_id = parent.parent_run_id if parent is not None else None
    return lineage


class HourlyParquetIOManager(dg.ConfigurableIOManager):
    """Stores :class:`HourlyFrame` outputs one Parquet file per hour in the run's own folder
    (published to the shared one unless scoped); loads any hour range, the run's own first."""

    base_dir: str
    #: Loaded frames are iterated in chunks whose stored rows fit this budget (``ATTRIBUTION_MEMORY_BUDGET_MB``)
    memory_budget_mb: float = 1536.0
    #: ... and of at most this many hours (``ATTRIBUTION_CHUNK_HOURS``).
    chunk_hours: int = 168

    def _shared(self) -> Path:
        return Path(self.base_dir)

    def handle_output(self, context: dg.OutputContext, obj: HourlyFrame) -> None:
        if not isinstance(obj, HourlyFrame):
            raise TypeError(f"{context.asset_key.to_user_string()} returned {type(obj).__name__}, expected HourlyFrame")
        window = context.asset_partitions_time_window
        hours = hours_in(window.start, window.end)
        if tuple(hours) != obj.hours:
            raise ValueError(f"{obj.name}: frame covers {len(obj.hours)} hours, partition range {len(hours)}")
        asset = asset_name(context.asset_key)
        shared = self._shared()
        prune_private_frames(shared)
        root = private_root(shared, context.run_id)
        publish = not obj.scoped
        started = time.perf_counter()
        # A chunk's hour files are written by FRAME_WRITERS threads while the next chunk is computed
        # (Polars writes without the GIL); the previous chunk's are waited for first, so at most the
        # chunk being computed and the one being written are held, as before.
        with batched_dir_syncs(), ThreadPoolExecutor(FRAME_WRITERS, thread_name_prefix="frames-write") as pool:
            writing: list[Future] = []
            for chunk, df in obj.chunks():
                by_hour = df.partition_by("date_hour", as_dict=True, maintain_order=True)
                stray = sorted(set(k[0] for k in by_hour) - set(chunk))
                if stray:
                    raise ValueError(f"{obj.name}: the chunk {chunk[0]}..{chunk[-1]} produced rows of other hours {stray[:5]}")
                written, writing = writing, [
                    pool.submit(copy_context().run, _store_hour, root, shared if publish else None, asset, hour,
                                by_hour.get((hour,), df.clear())) for hour in chunk]
                _wait(written)
            _wait(writing)
        seconds = time.perf_counter() - started
        stats = obj.stats
        metadata = {
            "rows": stats.rows,
            "hours": len(hours),
            "chunks": stats.chunks,
            "seconds": round(seconds, 3),
            "scoped_to_run": obj.scoped,
            "published": publish,
            **{f"seconds_{k}": round(v, 3) for k, v in stats.stage_seconds.items()},
            **{k: v for k, v in stats.counters.items()},
        }
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> HourlyFrame:
        window = context.asset_partitions_time_window
        hours = hours_in(window.start, window.end)
        asset = asset_name(context.asset_key)
        step = context.step_context
        root = input_root(self._shared(), asset, run_lineage(step.instance, step.dagster_run))
        return stored_frame(root, asset, hours, max_hours=self.chunk_hours, budget_mb=self.memory_budget_mb)
