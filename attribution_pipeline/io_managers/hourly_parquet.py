"""An IO manager for hourly frames that handles one hour and any range of hours.

Dagster's filesystem IO manager refuses outputs that cover several partitions, and community
Polars IO managers cannot store them either. This one stores every :class:`HourlyFrame` as one
Parquet file per asset and hour::

    <base>/<asset>/date=2024-06-01/hour=09.parquet

so a range run, an hour-by-hour run and any later mix read and write the same files. Each file is
written to a temporary name and renamed into place (atomic: a crash never leaves a partial file).

Frames computed for only some users or models (``HourlyFrame.scoped``, e.g. a ``--user`` run) go
to ``<base>/_runs/<run_id>/`` instead, so they never replace the complete frames; inputs are read
from the run's private folder when it holds the asset, else from the shared one.

An input is loaded lazily: the :class:`HourlyFrame` it returns lists the hours whose file is
missing (``missing``), and reading one of them raises :class:`MissingUpstreamHours`, so an asset
that can do without some hours (the exports recompute their journeys) decides what to do.
"""

import os
import shutil
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl

from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.core.hours import hours_in
from attribution_pipeline.errors import MissingUpstreamHours

RUNS_DIR = "_runs"
#: A run's private frames older than this are left over by a run that crashed: removed.
STALE_PRIVATE_SECONDS = 86400


def hour_file(root: Path, asset: str, hour: int) -> Path:
    moment = datetime.fromtimestamp(hour, tz=timezone.utc)
    return root / asset / f"date={moment:%Y-%m-%d}" / f"hour={moment:%H}.parquet"


def write_hour(root: Path, asset: str, hour: int, df: pl.DataFrame) -> None:
    path = hour_file(root, asset, hour)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.write_parquet(tmp, compression="lz4", statistics=False)
    os.replace(tmp, path)


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


def stored_frame(root: Path, asset: str, hours: Sequence[int]) -> HourlyFrame:
    """The stored frame of ``asset`` over ``hours``, read lazily; ``missing`` lists the hours
    without a file (reading one raises :class:`MissingUpstreamHours`)."""
    missing = [h for h in hours if not hour_file(root, asset, h).exists()]
    absent = set(missing)
    probe = next((hour_file(root, asset, h) for h in hours if h not in absent), None)
    schema = dict(pl.read_parquet_schema(probe)) if probe is not None else {}
    return HourlyFrame(hours, lambda chunk, _stats: read_hours(root, asset, chunk), schema, name=asset,
                       missing=missing)


def private_root(base: Path, run_id: str) -> Path:
    """Where a scoped run keeps its frames."""
    return Path(base) / RUNS_DIR / run_id


def remove_private_frames(base: Path, run_id: str) -> None:
    """Drop a scoped run's frames once its last reader is done (the export step, or the write-back
    when nothing was committed and the exports will not run)."""
    shutil.rmtree(private_root(base, run_id), ignore_errors=True)


def prune_private_frames(base: Path, now: float | None = None) -> None:
    """Remove the private frames of runs that ended without removing them (a crash) a day ago."""
    cutoff = (time.time() if now is None else now) - STALE_PRIVATE_SECONDS
    for folder in (Path(base) / RUNS_DIR).glob("*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:
            pass


def asset_name(key: dg.AssetKey) -> str:
    return "__".join(key.path)


class HourlyParquetIOManager(dg.ConfigurableIOManager):
    """Stores :class:`HourlyFrame` outputs one Parquet file per hour; loads any hour range."""

    base_dir: str

    def _shared(self) -> Path:
        return Path(self.base_dir)

    def _private(self, run_id: str) -> Path:
        return private_root(Path(self.base_dir), run_id)

    def handle_output(self, context: dg.OutputContext, obj: HourlyFrame) -> None:
        if not isinstance(obj, HourlyFrame):
            raise TypeError(f"{context.asset_key.to_user_string()} returned {type(obj).__name__}, expected HourlyFrame")
        window = context.asset_partitions_time_window
        hours = hours_in(window.start, window.end)
        if tuple(hours) != obj.hours:
            raise ValueError(f"{obj.name}: frame covers {len(obj.hours)} hours, partition range {len(hours)}")
        asset = asset_name(context.asset_key)
        if obj.scoped:
            prune_private_frames(self._shared())
        root = self._private(context.run_id) if obj.scoped else self._shared()
        started = time.perf_counter()
        for chunk, df in obj.chunks():
            by_hour = df.partition_by("date_hour", as_dict=True, maintain_order=True)
            stray = sorted(set(k[0] for k in by_hour) - set(chunk))
            if stray:
                raise ValueError(f"{obj.name}: the chunk {chunk[0]}..{chunk[-1]} produced rows of other hours {stray[:5]}")
            for hour in chunk:
                write_hour(root, asset, hour, by_hour.get((hour,), df.clear()))
        seconds = time.perf_counter() - started
        stats = obj.stats
        metadata = {
            "rows": stats.rows,
            "hours": len(hours),
            "chunks": stats.chunks,
            "seconds": round(seconds, 3),
            "scoped_to_run": obj.scoped,
            **{f"seconds_{k}": round(v, 3) for k, v in stats.stage_seconds.items()},
            **{k: v for k, v in stats.counters.items()},
        }
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> HourlyFrame:
        window = context.asset_partitions_time_window
        hours = hours_in(window.start, window.end)
        asset = asset_name(context.asset_key)
        private = self._private(context.step_context.run_id)
        root = private if (private / asset).exists() else self._shared()
        return stored_frame(root, asset, hours)
