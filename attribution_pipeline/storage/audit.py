"""A chunk's bookkeeping, inside its own transaction: the audit rows (D18) and Prosper202's System
Checks stamp (D11). They commit exactly once with the chunk's rows, or not at all."""

import polars as pl
from sqlalchemy import and_, delete
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from attribution_pipeline.storage import tables
from attribution_pipeline.storage.bulk import bulk_insert
from attribution_pipeline.storage.database import is_sqlite


def record_chunk(conn: Connection, audits: pl.DataFrame, *, now: int) -> int:
    """Inside the chunk's transaction: replace this run's audit rows of the chunk (a transaction
    retried after its commit acknowledgement was lost finds them and does not add them twice),
    then stamp ``202_cronjob_logs`` id 2 so Prosper202's System Checks page stays green (D11)."""
    audit = tables.attribution_audit
    for row in audits.iter_rows(named=True):  # one row per (user, model) of the chunk: a few statements
        conn.execute(delete(audit).where(and_(
            audit.c.user_id == row["user_id"], audit.c.model_id == row["model_id"],
            audit.c.action == row["action"], audit.c.created_at == row["created_at"],
            audit.c.metadata == row["metadata"])))
    written = bulk_insert(conn, audit, audits)
    stamp_cron_log(conn, now=now)
    return written


def stamp_cron_log(conn: Connection, *, now: int, log_id: int = tables.CRONJOB_LOG_ID_ATTRIBUTION) -> None:
    """``202_cronjob_logs`` row ``log_id`` = ``now`` (inserted if missing): id 2 for the rebuild (D11),
    id 3 for the export queue's poll, as Prosper202's System Checks page expects.

    One atomic upsert, never an UPDATE then an INSERT: two workers polling at once on a database
    without the row would each take a gap lock with the UPDATE and then deadlock on their INSERTs."""
    logs = tables.cronjob_logs
    if is_sqlite(conn):
        stmt = sqlite_insert(logs).values(id=log_id, last_execution_time=now)
        conn.execute(stmt.on_conflict_do_update(index_elements=[logs.c.id],
                                                set_={"last_execution_time": stmt.excluded.last_execution_time}))
        return
    stmt = mysql_insert(logs).values(id=log_id, last_execution_time=now)
    conn.execute(stmt.on_duplicate_key_update(last_execution_time=stmt.inserted.last_execution_time))
