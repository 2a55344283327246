"""The read replica and its replication-lag guard (D30).

With ``ATTRIBUTION_DB_READ_URL`` set, the steps that make the large reads (the source fingerprint
scans, models, conversions, click slices) ask :func:`choose_reader` for the handle to read with.
Writes, locks, read-backs and the pipeline's own tables stay on the primary (``Database`` itself).

The guard: a step reads the replica only once the replica has applied everything the primary had
committed when the step started, so a run never computes from data older than what an earlier
step of the same run saw on either server:

* MariaDB: the primary's ``@@gtid_binlog_pos``, then ``MASTER_GTID_WAIT(pos, max_wait)`` on the
  replica (0: reached, -1: timed out);
* MySQL: the primary's ``@@gtid_executed`` (``gtid_mode=ON``), then
  ``WAIT_FOR_EXECUTED_GTID_SET(set, max_wait)`` on the replica (0: reached, 1: timed out).

If the wait times out (lag, a stopped replica), the replica cannot be reached or lacks the
function, or the primary offers no GTID position (no binary log, ``gtid_mode`` off, SQLite), the
step reads the primary and says so (a warning log line and the step's metadata). Nothing here
ever reads stale data to save time.
"""

import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from attribution_pipeline.logs import log_event, stdlib_logger
from attribution_pipeline.storage.database import Database, safe_url

REPLICA, PRIMARY = "replica", "primary"


@dataclass(frozen=True)
class Position:
    """What the primary had committed: its GTID set, its flavour and its server id."""

    flavour: str  # "mariadb" or "mysql"
    gtids: str
    server_id: int


@dataclass(frozen=True)
class ReadChoice:
    """The handle a step reads with, and why (its metadata says which server and how long it waited)."""

    db: Database
    read_from: str  # REPLICA or PRIMARY
    reason: str
    waited_seconds: float = 0.0
    position: str = ""

    def metadata(self) -> dict:
        out = {"read_from": self.read_from, "read_reason": self.reason,
               "replica_wait_seconds": round(self.waited_seconds, 3)}
        if self.position:
            out["primary_gtid_position"] = self.position
        return out


def primary_position(conn: Connection) -> Position | None:
    """The primary's GTID position, or None when it has none to wait for (not MySQL/MariaDB, no
    binary log, ``gtid_mode`` not ON)."""
    if conn.dialect.name not in ("mysql", "mariadb"):
        return None
    version, server_id = conn.execute(text("SELECT @@version, @@server_id")).one()
    if "mariadb" in str(version).lower():
        log_bin, pos = conn.execute(text("SELECT @@GLOBAL.log_bin, @@GLOBAL.gtid_binlog_pos")).one()
        return Position("mariadb", str(pos or ""), int(server_id)) if int(log_bin or 0) else None
    mode, executed = conn.execute(text("SELECT @@GLOBAL.gtid_mode, @@GLOBAL.gtid_executed")).one()
    if str(mode).upper() != "ON":
        return None
    return Position("mysql", str(executed or "").replace("\n", ""), int(server_id))


def wait_for(conn: Connection, target: Position, timeout: float) -> bool:
    """Whether the server of ``conn`` has applied ``target`` within ``timeout`` seconds. The
    primary itself (same server id) and an empty position have nothing to wait for."""
    if int(conn.execute(text("SELECT @@server_id")).scalar_one()) == target.server_id or not target.gtids:
        return True
    if target.flavour == "mariadb":
        got = conn.execute(text("SELECT MASTER_GTID_WAIT(:pos, :timeout)"),
                           {"pos": target.gtids, "timeout": float(timeout)}).scalar()
        return got is not None and int(got) == 0
    got = conn.execute(text("SELECT WAIT_FOR_EXECUTED_GTID_SET(:pos, :timeout)"),
                       {"pos": target.gtids, "timeout": float(timeout)}).scalar()
    return got is not None and int(got) == 0


def _primary(db: Database, reason: str, logger, **fields) -> ReadChoice:
    choice = ReadChoice(db, PRIMARY, reason, **fields)
    if db.read_url:
        log_event(logger or stdlib_logger, "replica_not_used", level="warning", read_from=PRIMARY, reason=reason,
                  replica=safe_url(db.read_url), waited_seconds=round(choice.waited_seconds, 3))
    return choice


def choose_reader(db: Database, logger=None, max_wait: float | None = None) -> ReadChoice:
    """The handle to make a step's large reads with: the replica once it has everything the primary
    has committed now (waiting ``max_wait`` seconds at most, default the database's
    ``ATTRIBUTION_REPLICA_MAX_WAIT_SECONDS``), else the primary (D30)."""
    replica = db.replica()
    if replica is None:
        return ReadChoice(db, PRIMARY, "no read replica configured (ATTRIBUTION_DB_READ_URL unset)")
    max_wait = db.replica_max_wait if max_wait is None else max_wait

    def read_position():
        with db.engine().connect() as conn:
            return primary_position(conn)

    target = db.retry.run(read_position, what="read the primary's GTID position", logger=logger)
    if target is None:
        return _primary(db, "the primary has no GTID position to wait for (no binary log, or gtid_mode is not ON)",
                        logger)
    started = time.monotonic()
    try:
        with replica.engine().connect() as conn:
            reached = wait_for(conn, target, max_wait)
    except Exception as exc:  # noqa: BLE001 - an unusable replica is never fatal: the primary is read
        return _primary(db, f"the replica cannot be used ({type(exc).__name__})", logger,
                        waited_seconds=time.monotonic() - started, position=target.gtids)
    waited = time.monotonic() - started
    if not reached:
        return _primary(db, f"the replica did not reach the primary's position within {max_wait:g} s (lagging or "
                        "not replicating)", logger, waited_seconds=waited, position=target.gtids)
    log_event(logger or stdlib_logger, "replica_used", read_from=REPLICA, waited_seconds=round(waited, 3),
              replica=safe_url(replica.url))
    return ReadChoice(replica, REPLICA, "the replica had the primary's position", waited, target.gtids)
