"""The export queue's rows: listing, the atomic claim and every state change, for either schema (D23).

Each function takes a connection inside the caller's transaction and the :class:`ExportSchema`
the table was found to have; every statement is SQLAlchemy Core over the schema's columns, with
bound values only.

The claim is one conditional ``UPDATE ... SET status='processing' WHERE export_id=:id AND
status='pending'``: InnoDB serialises two such updates of a row, and the second finds the status
changed and updates nothing, so a second worker, a retried run or a PHP cron left running gets
``False`` and leaves the export alone.
"""

from dataclasses import dataclass

from sqlalchemy import and_, column, func, select, table
from sqlalchemy.engine import Connection

from attribution_pipeline.export_queue.queue_schema import TABLE, ExportSchema

PENDING, PROCESSING, COMPLETED, FAILED = "pending", "processing", "completed", "failed"
#: Longest error text stored in ``last_error`` / ``error_message`` (TEXT holds 64 KiB).
MAX_ERROR_CHARS = 2000
#: Columns never shown by ``exports list`` nor put in logs or metadata (secrets).
SECRET_COLUMNS = ("webhook_secret", "download_token", "webhook_headers")


@dataclass(frozen=True)
class PendingExport:
    """A pending export: its id and when it was queued (``queued_at``, else ``created_at``)."""

    export_id: int
    queued_at: int


def queue_table(schema: ExportSchema):
    return table(TABLE, *[column(name) for name in sorted(schema.columns)])


def pending_exports(conn: Connection, schema: ExportSchema, limit: int | None = None) -> list[PendingExport]:
    """The pending exports, oldest first (``queued_at``, then ``export_id``)."""
    t = queue_table(schema)
    queued = t.c[schema.queued]
    query = select(t.c.export_id, queued).where(t.c.status == PENDING).order_by(queued, t.c.export_id)
    if limit:
        query = query.limit(limit)
    return [PendingExport(int(r[0]), int(r[1] or 0)) for r in conn.execute(query)]


def load_export(conn: Connection, schema: ExportSchema, export_id: int) -> dict | None:
    """The export's row (every column, the secret included: never log it), or None."""
    t = queue_table(schema)
    row = conn.execute(select(t).where(t.c.export_id == export_id)).mappings().first()
    return dict(row) if row is not None else None


def _update(conn: Connection, schema: ExportSchema, export_id: int, values: dict, *, status: str | None = None) -> int:
    t = queue_table(schema)
    where = t.c.export_id == export_id
    if status is not None:
        where = and_(where, t.c.status == status)
    return conn.execute(t.update().where(where).values(**schema.present(values))).rowcount


def claim(conn: Connection, schema: ExportSchema, export_id: int, *, now: int) -> bool:
    """Atomically move the export from pending to processing; False if another worker has it."""
    values = {"status": PROCESSING, schema.claimed: now, "updated_at": now}
    return _update(conn, schema, export_id, values, status=PENDING) == 1


def mark_completed(conn: Connection, schema: ExportSchema, export_id: int, *, file_path: str, rows: int,
                   now: int, token: str | None) -> bool:
    """processing -> completed: the file, its row count, the download token (where the schema has one)."""
    values = {"status": COMPLETED, "file_path": file_path, schema.rows: rows, "completed_at": now,
              "updated_at": now, schema.error: None, schema.token: token}
    return _update(conn, schema, export_id, values, status=PROCESSING) == 1


def _error_text(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "..."


def mark_failed(conn: Connection, schema: ExportSchema, export_id: int, message: str, *, now: int) -> None:
    """-> failed with ``message`` (the file and ``completed_at``, if any, stay, as PHP leaves them)."""
    values = {"status": FAILED, schema.failed: now, schema.error: _error_text(message), "updated_at": now}
    _update(conn, schema, export_id, values)


def record_error(conn: Connection, schema: ExportSchema, export_id: int, message: str, *, now: int) -> None:
    """The error text alone, the status unchanged (the alternative schema's failed webhook, D23)."""
    _update(conn, schema, export_id, {schema.error: _error_text(message), "updated_at": now})


def record_webhook(conn: Connection, schema: ExportSchema, export_id: int, *, attempted_at: int,
                   status_code: int | None, body: str | None) -> None:
    """The last webhook attempt: when, the HTTP status (None: no answer) and the truncated body."""
    values = {schema.webhook_at: attempted_at, schema.webhook_status: status_code, schema.webhook_body: body}
    _update(conn, schema, export_id, values)


def recent_exports(conn: Connection, schema: ExportSchema, limit: int) -> list[dict]:
    """The newest exports (by ``export_id``), without the secret, the token or the webhook headers."""
    t = queue_table(schema)
    shown = [c for c in t.c if c.name not in SECRET_COLUMNS]
    query = select(*shown).order_by(t.c.export_id.desc()).limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def status_counts(conn: Connection, schema: ExportSchema) -> dict[str, int]:
    t = queue_table(schema)
    query = select(t.c.status, func.count()).group_by(t.c.status)
    return {str(s): int(n) for s, n in conn.execute(query)}
