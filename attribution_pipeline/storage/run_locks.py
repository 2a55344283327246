"""A lock each run holds while it is alive, so that a run that died can be told from one that runs.

A run killed with SIGKILL (or whose host died) never reports its end: Dagster shows it STARTED for
ever. Each run therefore holds a lock of its own for as long as its process lives: a MySQL named
lock (``GET_LOCK``) on a connection of its own, which the server frees the moment that connection
drops, whatever host the run was on; on SQLite (one host by nature) an ``flock`` on a file under
the attribution home, which the kernel frees when the process exits. Another run that finds a run
STARTED whose lock is free knows that run is gone.
"""

import fcntl
import hashlib
import os
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from attribution_pipeline.storage.database import is_sqlite


def run_lock_name(run_id: str) -> str:
    """The server-wide lock name of a run (<= 64 characters)."""
    return f"attribution:run:{hashlib.sha1(run_id.encode()).hexdigest()[:32]}"


class RunLock:
    """The lock of one run, held from :meth:`acquire` until :meth:`release` (or the process dies)."""

    def __init__(self, engine: Engine, run_id: str, lock_dir: Path):
        self.engine, self.run_id, self.lock_dir = engine, run_id, Path(lock_dir)
        self._conn = None
        self._file = None

    def acquire(self) -> bool:
        """Take the run's lock; False if someone holds it already (nothing taken then)."""
        if is_sqlite(self.engine):
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            fh = open(self.lock_dir / f"{self.run_id}.lock", "a+")  # noqa: SIM115 - held until release
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                return False
            self._file = fh
            return True
        conn = self.engine.connect()
        got = conn.execute(select(func.get_lock(run_lock_name(self.run_id), 0))).scalar()
        conn.commit()
        if got != 1:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(select(func.release_lock(run_lock_name(self.run_id))))
                self._conn.commit()
            except Exception:  # noqa: BLE001 - the connection may be gone: the server freed the lock then
                pass
            finally:
                self._conn.close()
                self._conn = None
        if self._file is not None:
            path = Path(self._file.name)
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
            path.unlink(missing_ok=True)


def run_is_alive(engine: Engine, run_id: str, lock_dir: Path) -> bool:
    """Does a live process hold ``run_id``'s lock?"""
    if is_sqlite(engine):
        path = Path(lock_dir) / f"{run_id}.lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
    with engine.connect() as conn:
        return conn.execute(select(func.is_used_lock(run_lock_name(run_id)))).scalar() is not None
