"""``attribution doctor`` and the ``source_health`` check: the runbook's schema checks and
Prosper202's System Checks page in one pass (D28). No Dagster here: the CLI and the asset check
both call :func:`diagnose`.

What it checks, each finding named with its fix:

* tables, columns and indexes (``schema_expectations``: the runbook's list, the scaling note's
  recommended indexes);
* at most one ``is_default`` model per user (spec §5.2; several are possible, Q20);
* ``max_allowed_packet`` of at least 32 MiB (the scaling note);
* the InnoDB buffer pool against the working set of a day of snapshots and touchpoints, estimated
  from ``information_schema.TABLES`` (bytes per row) and the share of snapshot rows in the newest
  day of ``date_hour``;
* the server's version (named locks: the write-back holds one per hour, several per session);
* ``202_cronjob_logs`` id 2 stamped recently (what System Checks shows, spec §5.11, D11);
* partitioning of the attribution tables and ``202_clicks`` (reported, never required).

Every statement is a SELECT with bound parameters (or none); nothing is written.
"""

import re
import time

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.engine import Connection

from attribution_pipeline.core.health_findings import ERROR, INFO, OK, WARN, Finding
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.database import Database, is_sqlite
from attribution_pipeline.storage.schema_expectations import schema_findings

MIB = 1024 * 1024
MIN_PACKET = 32 * MIB
#: The attribution cron stamp is stale after this long (the schedule runs hourly, at :15).
CRON_MAX_AGE_SECONDS = 2 * 3600
#: Oldest servers that let one session hold several named locks (the write-back's hour locks, D9).
MIN_VERSIONS = {"mariadb": (10, 0, 2), "mysql": (5, 7, 5)}
PARTITION_TABLES = ("202_attribution_snapshots", "202_attribution_touchpoints", "202_conversion_touchpoints",
                    "202_clicks")


def diagnose(db: Database, *, now: int | None = None, cron_max_age: int = CRON_MAX_AGE_SECONDS,
             logger=None) -> list[Finding]:
    """Every finding about ``db``'s database (the module docstring's list)."""
    now = int(time.time()) if now is None else now
    engine = db.engine()
    findings = db.retry.run(lambda: schema_findings(engine), what="inspect the schema", logger=logger)
    names = {f.name for f in findings}

    def read():
        with engine.connect() as conn:
            out = []
            if "table_missing:202_attribution_models" not in names:
                out += default_models(conn)
            if "table_missing:202_cronjob_logs" not in names:
                out.append(cron_stamp(conn, now, cron_max_age))
            if is_sqlite(conn):
                out.append(Finding("server", INFO, "SQLite: the server checks are for MySQL and MariaDB only"))
            else:
                out += [server_version(conn), packet_size(conn), buffer_pool(conn), *partitioning(conn)]
            return out

    return findings + db.retry.run(read, what="read the server's state", logger=logger)


def default_models(conn: Connection) -> list[Finding]:
    m = tables.attribution_models
    stmt = (select(m.c.user_id, func.count().label("n"), func.max(m.c.model_id).label("newest"))
            .where(m.c.is_default == 1).group_by(m.c.user_id).having(func.count() > 1).order_by(m.c.user_id))
    rows = conn.execute(stmt).all()
    if not rows:
        return [Finding("default_models", OK, "at most one default model per user")]
    return [Finding(f"several_default_models:user {int(u)}", WARN,
                    f"user {int(u)} has {int(n)} models with is_default = 1 (Prosper202's UI expects one; Q20)",
                    f"UPDATE `202_attribution_models` SET is_default = 0 WHERE user_id = {int(u)} AND is_default = 1 "
                    f"AND model_id <> {int(newest)};  (keeps the newest, model {int(newest)})")
            for u, n, newest in rows[:50]]


def cron_stamp(conn: Connection, now: int, max_age: int) -> Finding:
    c = tables.cronjob_logs
    stamp = conn.execute(select(c.c.last_execution_time).where(c.c.id == tables.CRONJOB_LOG_ID_ATTRIBUTION)).scalar()
    fix = ("is the hourly_attribution schedule on and the Dagster daemon running (dagster dev / dg dev)? "
           "then: attribution rebuild --start <the last hour written> --end <now>")
    if not stamp:
        return Finding("attribution_cron", WARN, "202_cronjob_logs id 2 was never stamped: no attribution run "
                       "has committed (System Checks shows the cron as not running)", fix)
    age = now - int(stamp)
    if age > max_age:
        return Finding("attribution_cron", WARN, f"the last attribution run committed {age / 3600:.1f} h ago "
                       f"(more than {max_age / 3600:.0f} h)", fix)
    return Finding("attribution_cron", OK, f"the last attribution run committed {max(age, 0) / 60:.0f} min ago")


def server_version(conn: Connection) -> Finding:
    version = str(conn.execute(select(func.version())).scalar())
    kind = "mariadb" if "mariadb" in version.lower() else "mysql"
    numbers = tuple(int(x) for x in re.findall(r"\d+", version)[:3])
    minimum = MIN_VERSIONS[kind]
    if numbers < minimum:
        return Finding("server_version", ERROR, f"{kind} {version} is older than {'.'.join(map(str, minimum))}: one "
                       "session cannot hold the write-back's several hour locks", f"upgrade the {kind} server")
    return Finding("server_version", INFO, f"{kind} {version}")


def packet_size(conn: Connection) -> Finding:
    packet = int(conn.execute(text("SELECT @@GLOBAL.max_allowed_packet")).scalar())
    if packet < MIN_PACKET:
        return Finding("max_allowed_packet", WARN, f"max_allowed_packet is {packet / MIB:.0f} MiB, under 32 MiB "
                       "(the scaling note: large batches fail with 'packet too large')",
                       "SET GLOBAL max_allowed_packet = 33554432;  (and max_allowed_packet = 32M under [mysqld])")
    return Finding("max_allowed_packet", OK, f"max_allowed_packet is {packet / MIB:.0f} MiB")


_SIZES = text("SELECT table_name, COALESCE(table_rows, 0), COALESCE(data_length, 0) + COALESCE(index_length, 0) "
              "FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name IN :names"
              ).bindparams(bindparam("names", ["202_attribution_snapshots", "202_attribution_touchpoints"], expanding=True))


def day_share(conn: Connection) -> float:
    """The share of snapshot rows in the newest day of ``date_hour`` (0 when there is none)."""
    s = tables.attribution_snapshots
    newest, total = conn.execute(select(func.max(s.c.date_hour), func.count())).one()
    if not total:
        return 0.0
    recent = conn.execute(select(func.count()).where(s.c.date_hour > int(newest) - 86400)).scalar()
    return int(recent) / int(total)


def buffer_pool(conn: Connection) -> Finding:
    """The buffer pool against a day's snapshots and touchpoints (bytes per row from the table
    stats, times the newest day's share of the snapshot rows: touchpoints follow snapshots)."""
    pool = int(conn.execute(text("SELECT @@GLOBAL.innodb_buffer_pool_size")).scalar())
    sizes = {name: int(size) for name, _rows, size in conn.execute(_SIZES)}
    share = day_share(conn) if "202_attribution_snapshots" in sizes else 0.0
    working = int(sum(sizes.values()) * share)
    if working > pool:
        wanted = -(-int(working * 1.25) // (128 * MIB)) * 128 * MIB
        return Finding("buffer_pool", WARN, f"innodb_buffer_pool_size is {pool / MIB:.0f} MiB; a day of snapshots "
                       f"and touchpoints is about {working / MIB:.0f} MiB (the scaling note: cache it whole)",
                       f"SET GLOBAL innodb_buffer_pool_size = {wanted};  (and innodb_buffer_pool_size under [mysqld])")
    return Finding("buffer_pool", OK, f"innodb_buffer_pool_size {pool / MIB:.0f} MiB holds a day of snapshots and "
                   f"touchpoints (about {working / MIB:.1f} MiB)")


_PARTITIONS = text(
    "SELECT table_name, MAX(partition_method), MAX(partition_expression), COUNT(*) FROM information_schema.partitions "
    "WHERE table_schema = DATABASE() AND table_name IN :names AND partition_name IS NOT NULL GROUP BY table_name"
).bindparams(bindparam("names", list(PARTITION_TABLES), expanding=True))


def partitioning(conn: Connection) -> list[Finding]:
    found = {name: (method, expression, int(n)) for name, method, expression, n in conn.execute(_PARTITIONS)}
    out = []
    for table in PARTITION_TABLES:
        if table in found:
            method, expression, n = found[table]
            out.append(Finding(f"partitioning:{table}", INFO, f"partitioned by {method} ({expression}), {n} partitions"))
        else:
            out.append(Finding(f"partitioning:{table}", INFO, "not partitioned"))
    return out
