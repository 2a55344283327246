"""Where export files live, and how they are replaced: atomically, one writer at a time.

``<root>/<table>/date=YYYY-MM-DD/hour=HH/part.parquet``: hive-partitioned, one file per table and
UTC hour, under an ``flock`` on ``<root>/.export.lock`` (one writer at a time). A set of hours is
published in two phases: every table's file of every hour is written to a temporary name and
fsynced (:func:`stage_part`), then all are renamed into place while holding
``<root>/.publish.lock`` exclusively, and their directories are fsynced (:func:`publish_parts`).
A reader holding the publish lock shared (``attribution query``, the DuckDB views) therefore sees
either the old or the new files of all tables, never a mix.
"""

import fcntl
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

PART = "part.parquet"
#: Directories fsynced at once after a set of renames (each fsync waits on the disk).
FSYNC_WORKERS = 3
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


#: A file written under its temporary name, not yet renamed into place: (temporary, final).
Staged = tuple[Path, Path]


def stage_part(root: Path, table: str, hour: int, df: pl.DataFrame) -> Staged:
    """Write the hour's file of ``table`` under a temporary name (ignored by the ``*.parquet``
    glob) and fsync it; :func:`publish_parts` renames it into place."""
    final = part_path(root, table, hour)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(final.parent)
    tmp = final.with_name(f".{PART}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            df.write_parquet(fh, compression="zstd", statistics=True)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, final


def discard(staged: Sequence[Staged]) -> None:
    """Remove the temporary files of ``staged`` that were not renamed into place."""
    for tmp, _ in staged:
        tmp.unlink(missing_ok=True)


def publish_parts(root: Path, staged: Sequence[Staged]) -> None:
    """Rename every staged file into place while holding the publish lock exclusively (readers
    holding it shared see all the old files or all the new ones), then fsync the directories the
    renames changed (and their parents, which may hold new directories): durable once this returns."""
    try:
        with publish_lock(root, shared=False):
            for tmp, final in staged:
                os.replace(tmp, final)
    finally:
        discard(staged)
    folders = {final.parent for _, final in staged}
    every = sorted(folders | {f.parent for f in folders} | {f.parent.parent for f in folders})
    if len(every) <= 3:
        for folder in every:
            fsync_dir(folder)
        return
    with ThreadPoolExecutor(max_workers=FSYNC_WORKERS, thread_name_prefix="export-fsync") as pool:
        list(pool.map(fsync_dir, every))  # each waits on the disk: a few at a time


def fsync_dir(folder: Path) -> None:
    """Make the renames and links done in ``folder`` durable (the export files and the frames)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_part(root: Path, table: str, hour: int, df: pl.DataFrame) -> Path:
    """Replace the hour's file of ``table`` atomically: temporary file, fsync, rename under the
    publish lock, fsync of the directory."""
    staged = stage_part(root, table, hour, df)
    publish_parts(root, [staged])
    return staged[1]


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
