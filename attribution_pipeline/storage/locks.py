"""Named locks that serialise writers of the same hours (D9).

On MySQL/MariaDB a writer holds one ``GET_LOCK`` per hour of its chunk, taken in ascending order
(two writers never deadlock) and named after the database, so runs started by Dagster, by the CLI
or by two hosts over overlapping hours take turns. On SQLite the write transaction itself
(``BEGIN IMMEDIATE``) serialises writers.
"""

import hashlib
from collections.abc import Sequence
from contextlib import contextmanager

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from attribution_pipeline.errors import LockTimeout
from attribution_pipeline.storage.database import is_sqlite


def lock_name(conn: Connection, hour: int) -> str:
    """A server-wide MySQL lock name for one hour of this database (<= 64 characters)."""
    database = conn.engine.url.database or ""
    tag = hashlib.sha1(database.encode()).hexdigest()[:12]
    return f"attribution:{tag}:{hour}"


@contextmanager
def hours_locked(conn: Connection, hours: Sequence[int], timeout_seconds: int):
    """Hold one named lock per hour (ascending, so two writers never deadlock) on MySQL.

    On SQLite the write transaction itself (``BEGIN IMMEDIATE``) serialises writers.
    """
    if is_sqlite(conn):
        yield
        return
    taken: list[str] = []
    try:
        for hour in sorted(hours):
            name = lock_name(conn, hour)
            got = conn.execute(select(func.get_lock(name, timeout_seconds))).scalar()
            if got != 1:
                raise LockTimeout(
                    f"hour {hour} is being written by another run (lock {name!r} not granted in "
                    f"{timeout_seconds}s); retry later or raise ATTRIBUTION_LOCK_TIMEOUT"
                )
            taken.append(name)
        conn.commit()  # GET_LOCK autobegan a transaction; the locks belong to the session
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        for name in taken:
            conn.execute(select(func.release_lock(name)))
        if conn.in_transaction():
            conn.commit()
