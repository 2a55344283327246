"""Which of Prosper202's two ``202_attribution_exports`` schemas a database holds (Q17, D23).

The canonical schema (fresh installs, the 1.9.56 upgrade; ``storage/tables.py``) and the
alternative one of the 1.9.58 -> 1.9.59 upgrade step differ in column names and in which
timestamps exist. :func:`detect_schema` reads the table's columns once and returns an
:class:`ExportSchema`: the column each logical field lives in, or ``None`` where the schema has no
such column. Everything else in the package reads and writes through that mapping, so one code
path serves both schemas.

==========================  =========================  =========================
logical field               canonical                  alternative
==========================  =========================  =========================
format                      ``requested_format``       ``format``
error                       ``last_error``             ``error_message``
queued (order, run key)     ``queued_at``              ``created_at``
claimed                     ``started_at``             ``last_attempted_at``
failed                      ``failed_at``              (none)
rows                        ``rows_exported``          (none)
download token              (none)                     ``download_token``
webhook secret              ``webhook_secret``         (none)
webhook attempt time        ``webhook_attempted_at``   ``last_attempted_at``
==========================  =========================  =========================
"""

from dataclasses import dataclass

from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from attribution_pipeline.errors import AttributionError
from attribution_pipeline.storage import tables

TABLE = tables.attribution_exports.name
CANONICAL, ALTERNATIVE = "canonical", "alternative"
#: Columns every usable export queue has, whichever the schema.
REQUIRED = ("export_id", "user_id", "model_id", "scope_type", "scope_id", "start_hour", "end_hour", "status")


class ExportQueueUnavailable(AttributionError):
    """``202_attribution_exports`` is missing, or has neither schema's columns (named in the message)."""


def _first(columns: frozenset[str], *names: str) -> str | None:
    return next((n for n in names if n in columns), None)


@dataclass(frozen=True)
class ExportSchema:
    """The columns of one database's export queue, by logical field (``None``: the schema has none)."""

    kind: str
    columns: frozenset[str]
    format: str
    error: str | None
    queued: str
    claimed: str | None
    failed: str | None
    rows: str | None
    token: str | None
    secret: str | None
    headers: str | None
    webhook_at: str | None
    webhook_status: str | None
    webhook_body: str | None

    @classmethod
    def from_columns(cls, names) -> "ExportSchema":
        columns = frozenset(str(n) for n in names)
        missing = [c for c in REQUIRED if c not in columns]
        fmt = _first(columns, "requested_format", "format")
        queued = _first(columns, "queued_at", "created_at")
        if missing or fmt is None or queued is None:
            absent = missing + (["requested_format|format"] if fmt is None else []) + (
                ["queued_at|created_at"] if queued is None else [])
            raise ExportQueueUnavailable(f"{TABLE} lacks the column(s) {absent}: it matches neither Prosper202 schema")
        return cls(
            kind=CANONICAL if fmt == "requested_format" else ALTERNATIVE,
            columns=columns,
            format=fmt,
            error=_first(columns, "last_error", "error_message"),
            queued=queued,
            claimed=_first(columns, "started_at", "last_attempted_at"),
            failed=_first(columns, "failed_at"),
            rows=_first(columns, "rows_exported"),
            token=_first(columns, "download_token"),
            secret=_first(columns, "webhook_secret"),
            headers=_first(columns, "webhook_headers"),
            webhook_at=_first(columns, "webhook_attempted_at", "last_attempted_at"),
            webhook_status=_first(columns, "webhook_status_code"),
            webhook_body=_first(columns, "webhook_response_body"),
        )

    def has(self, column: str) -> bool:
        return column in self.columns

    def present(self, values: dict) -> dict:
        """``values`` keyed by column, without the ``None`` keys (fields this schema has no column for)
        and without columns the table lacks."""
        return {k: v for k, v in values.items() if k is not None and k in self.columns}


def detect_schema(conn: Connection) -> ExportSchema:
    """The export queue's schema, read from the table's columns (``ExportQueueUnavailable`` if absent)."""
    inspector = inspect(conn)
    if not inspector.has_table(TABLE):
        raise ExportQueueUnavailable(f"{TABLE} does not exist (attribution init-db creates it)")
    return ExportSchema.from_columns(c["name"] for c in inspector.get_columns(TABLE))
