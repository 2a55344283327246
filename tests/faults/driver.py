"""Run ``attribution`` in this process with a fault installed first.

    python tests/faults/driver.py <fault> <n> -- <attribution arguments>

Faults (``n`` counts from 1):

* ``before_commit N``: SIGKILL this process right before the N-th chunk transaction's COMMIT;
* ``after_commit N``: SIGKILL right after the N-th chunk transaction committed;
* ``during_exports N``: SIGKILL once the Parquet export has written its N-th file;
* ``fail_write N``: the N-th chunk transaction fails once with a non-transient error (an
  ``IntegrityError``, MySQL 1062) at its first write statement; later chunks (and a retry) run as usual;
* ``no_connectorx 0``: connectorx cannot be imported, so every read goes through PyMySQL;
* ``none 0``: nothing (the plain command).

A *chunk transaction* is a transaction that wrote ``202_attribution_snapshots`` or
``202_attribution_touchpoints`` (INSERT, DELETE, UPDATE or LOAD DATA): the write-back's
``write_chunk``. Other transactions (the hour locks' GET_LOCK, the run's own lock, reads) are not
counted. Before dying the driver prints ``FAULT <fault> <n>: ...`` on stderr, so the test can tell a
kill it asked for from a crash.
"""

import os
import re
import signal
import sys

FAULTS = ("before_commit", "after_commit", "during_exports", "fail_write", "no_connectorx", "none")
_CHUNK_WRITE = re.compile(
    r"^\s*(?:INSERT|DELETE|UPDATE|REPLACE|LOAD\s+DATA)\b.*?`?202_attribution_(?:snapshots|touchpoints)`?",
    re.I | re.S,
)
_FLAG = "_fault_chunk_write"


def die(fault: str, n: int, what: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"FAULT {fault} {n}: SIGKILL {what}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install_commit_faults(fault: str, n: int) -> None:
    """Count chunk transactions (flag set by their first write), kill or fail at the N-th."""
    import pymysql
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.exc import IntegrityError

    state = {"writes": 0, "commits": 0, "failed": False}

    def dbapi(conn):
        return conn.connection.dbapi_connection

    @event.listens_for(Engine, "before_cursor_execute")
    def _mark(conn, cursor, statement, parameters, context, executemany):
        if not _CHUNK_WRITE.match(statement):
            return
        raw = dbapi(conn)
        if getattr(raw, _FLAG, False):
            return
        setattr(raw, _FLAG, True)
        state["writes"] += 1
        if fault == "fail_write" and state["writes"] == n and not state["failed"]:
            state["failed"] = True
            sys.stderr.write(f"FAULT fail_write {n}: IntegrityError in chunk transaction {n}\n")
            sys.stderr.flush()
            raise IntegrityError(statement, parameters, pymysql.err.IntegrityError(
                1062, f"Duplicate entry 'fault-{n}' for key 'PRIMARY' (injected by tests/faults/driver.py)"))

    @event.listens_for(Engine, "commit")
    def _before_commit(conn):
        raw = dbapi(conn)
        if getattr(raw, _FLAG, False) and fault == "before_commit" and state["commits"] + 1 == n:
            die(fault, n, f"before the COMMIT of chunk transaction {n}")

    real_commit = pymysql.connections.Connection.commit
    real_rollback = pymysql.connections.Connection.rollback

    def commit(self):
        chunk = getattr(self, _FLAG, False)
        real_commit(self)
        setattr(self, _FLAG, False)
        if chunk:
            state["commits"] += 1
            if fault == "after_commit" and state["commits"] == n:
                die(fault, n, f"after the COMMIT of chunk transaction {n}")

    def rollback(self):
        setattr(self, _FLAG, False)
        return real_rollback(self)

    pymysql.connections.Connection.commit = commit
    pymysql.connections.Connection.rollback = rollback


def install_export_fault(n: int) -> None:
    """Wrap every binding of the export layout's file writers (``write_part``, ``stage_part``) in
    the loaded modules: the N-th file written is the last thing this process does."""
    from attribution_pipeline.exports import layout

    state = {"files": 0}
    originals = {getattr(layout, name) for name in ("write_part", "stage_part") if hasattr(layout, name)}

    def wrap(real):
        def writer(*args, **kwargs):
            result = real(*args, **kwargs)
            state["files"] += 1
            if state["files"] == n:
                die("during_exports", n, f"after export file {n} ({real.__name__})")
            return result

        writer.__name__ = real.__name__
        return writer

    wrapped = {real: wrap(real) for real in originals}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("attribution_pipeline"):
            continue
        for attr, value in list(vars(module).items()):
            try:
                replacement = wrapped.get(value) if callable(value) else None
            except TypeError:  # unhashable
                replacement = None
            if replacement is not None:
                setattr(module, attr, replacement)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[2] != "--" or argv[0] not in FAULTS:
        sys.stderr.write(__doc__)
        return 64
    fault, n, cli_args = argv[0], int(argv[1]), argv[3:]
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # this folder's modules are the tests' helpers, not the pipeline's
    if fault == "no_connectorx":
        sys.modules["connectorx"] = None  # `import connectorx` raises ImportError: the DBAPI path
    from attribution_pipeline import cli

    if fault in ("before_commit", "after_commit", "fail_write"):
        install_commit_faults(fault, n)
    elif fault == "during_exports":
        install_export_fault(n)
    return cli.main(cli_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
