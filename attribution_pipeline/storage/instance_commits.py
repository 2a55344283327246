"""How often a SQLite Dagster instance's files are synced to disk (D34).

Dagster's SQLite storage opens a connection per operation (SQLAlchemy's ``NullPool``) and commits
each event on its own, in WAL mode with SQLite's default ``synchronous=FULL``: every event of a
run (a 72-hour demo run records about 1,550, most of them one planned and one stored materialization
per asset and hour) costs several ``fdatasync`` calls on the run's and the index's files, and the
last connection's close checkpoints the WAL with more. The demo counted 15,272 ``fdatasync`` calls;
on a disk whose sync takes a few milliseconds that is most of the run's wall time.

:func:`relax_instance_commits` sets ``PRAGMA synchronous`` (``OFF`` by default, ``NORMAL`` or
``FULL`` by ``ATTRIBUTION_INSTANCE_SQLITE_SYNC``) on every SQLite connection this process opens to
a file under the instance's directory, and on no other: the pipeline's own SQLite database and a
PostgreSQL instance are untouched. What it trades: with ``OFF``, a power loss or an operating-system
crash (not a killed process: the data is in the operating system's cache) may lose the instance's
latest events or damage its files; the attribution rows themselves never live there. The
production layout keeps its instance in PostgreSQL (D29).
"""

import os
import sqlite3
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine

#: The PRAGMA statement of each level (fixed text: a level is never formatted into SQL).
_PRAGMAS = {"off": "PRAGMA synchronous=OFF", "normal": "PRAGMA synchronous=NORMAL"}
#: Instance directory -> PRAGMA statement, for the connections this process opens.
_ROOTS: dict[str, str] = {}


def relax_instance_commits(root: Path | None, level: str) -> None:
    """Sync the SQLite files under ``root`` (a ``DAGSTER_HOME``) at ``level`` from now on in this
    process; ``full`` (SQLite's default) or no ``root`` changes nothing."""
    if root is None:
        return
    key = str(Path(root).resolve())
    if level not in _PRAGMAS:
        _ROOTS.pop(key, None)
        return
    _ROOTS[key] = _PRAGMAS[level]
    if not event.contains(Engine, "connect", _on_connect):
        event.listen(Engine, "connect", _on_connect)


def _on_connect(dbapi_connection, _record) -> None:
    if not _ROOTS or not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    try:
        path = next((row[2] for row in cursor.execute("PRAGMA database_list") if row[1] == "main"), "")
        pragma = next((p for root, p in _ROOTS.items() if path.startswith(root + os.sep)), None)
        if pragma is not None:
            cursor.execute(pragma)
    finally:
        cursor.close()
