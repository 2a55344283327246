"""Where export files live, and how they are replaced: atomically, one writer at a time.

``<root>/<table>/date=YYYY-MM-DD/hour=HH/part.parquet``: hive-partitioned, one file per table and
UTC hour, written to a temporary name, fsynced and renamed into place, under an ``flock`` on
``<root>/.export.lock``.
"""

import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

PART = "part.parquet"
LOCK_FILE = ".export.lock"
_STALE_TMP_SECONDS = 3600


def hour_dir(root: Path, table: str, hour: int) -> Path:
    moment = datetime.fromtimestamp(hour, tz=timezone.utc)
    return Path(root) / table / f"date={moment:%Y-%m-%d}" / f"hour={moment:%H}"


def part_path(root: Path, table: str, hour: int) -> Path:
    return hour_dir(root, table, hour) / PART


def table_glob(root: Path, table: str) -> str:
    """The glob DuckDB reads a table with (hive partitions ``date``/``hour`` from the path)."""
    return str(Path(root) / table / "**" / "*.parquet")


def write_part(root: Path, table: str, hour: int, df: pl.DataFrame) -> Path:
    """Replace the hour's file of ``table`` atomically: temporary file, fsync, rename."""
    final = part_path(root, table, hour)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(final.parent)
    tmp = final.with_name(f".{PART}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            df.write_parquet(fh, compression="zstd", statistics=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _remove_stale_tmp(folder: Path) -> None:
    """Temporary files left by a crashed writer (older than an hour; a live writer's are newer)."""
    cutoff = time.time() - _STALE_TMP_SECONDS
    for leftover in folder.glob(f".{PART}.*.tmp"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def export_lock(root: Path) -> Iterator[None]:
    """One exporter at a time per export folder (read from MySQL + write files), so the last
    writer of an hour always wrote the latest committed state."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / LOCK_FILE, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


PUBLISH_LOCK_FILE = ".publish.lock"


@contextmanager
def publish_lock(root: Path, *, shared: bool) -> Iterator[None]:
    """Readers (``shared``) never see an hour half-replaced: a writer renames the files of a set of
    hours into place holding this lock exclusively (a moment), readers hold it shared while they
    query. Distinct from :func:`export_lock`, which writers hold for a whole export."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / PUBLISH_LOCK_FILE, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_part(root: Path, table: str, hour: int) -> pl.DataFrame | None:
    path = part_path(root, table, hour)
    return pl.read_parquet(path) if path.exists() else None


def exported_hours(root: Path, table: str = "snapshots") -> list[int]:
    """The hours that have a file of ``table`` (epoch seconds, ascending)."""
    found = []
    for path in (Path(root) / table).glob(f"date=*/hour=*/{PART}"):
        day = path.parent.parent.name.split("=", 1)[1]
        hh = path.parent.name.split("=", 1)[1]
        found.append(int(datetime.strptime(f"{day} {hh}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc).timestamp()))
    return sorted(found)
