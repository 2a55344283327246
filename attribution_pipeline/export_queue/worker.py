"""The export worker: one export request from pending to completed or failed (D23, D24).

:func:`process_export` loads the row, claims it atomically (a worker that loses the claim returns
``skipped``), validates it (a bad row fails with its named reason, the others are untouched),
streams its snapshot rows into the file, marks it completed (file, row count, download token where
the schema has one), then POSTs the webhook when the row asks for one. Every export processed gets
one audit row. :func:`process_pending` stamps ``202_cronjob_logs`` id 3 and works through every
pending export, oldest first; the Dagster sensor and ``attribution exports run --once`` call these
functions, and never anything else of the package.

``db`` is the pipeline's :class:`~attribution_pipeline.storage.database.Database` (its retry
policy covers the page reads) or a SQLAlchemy engine; ``log`` a Dagster or stdlib logger.
"""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from attribution_pipeline.export_queue import claim as queue
from attribution_pipeline.export_queue.claim import PendingExport
from attribution_pipeline.export_queue.export_files import XlsxRowLimit, write_export_file
from attribution_pipeline.export_queue.export_rules import ExportSpec, InvalidExport, validate_export
from attribution_pipeline.export_queue.queue_ops import QueueHealth, audit_export, queue_health_conn, stamp_poll_conn
from attribution_pipeline.export_queue.queue_schema import ALTERNATIVE, ExportSchema, detect_schema
from attribution_pipeline.export_queue.snapshot_pages import snapshot_pages
from attribution_pipeline.export_queue.webhook_step import WebhookOutcome, send_webhook
from attribution_pipeline.logs import log_event
from attribution_pipeline.storage import tables

COMPLETED, FAILED, SKIPPED = "completed", "failed", "skipped"


@dataclass(frozen=True)
class ExportResult:
    """What became of one export: ``outcome`` completed, failed or skipped (another worker has it,
    or it is gone); ``reason`` the failure's text (it starts with the reason's code) or why skipped."""

    export_id: int
    outcome: str
    reason: str | None = None
    file_path: str | None = None
    rows_exported: int = 0
    webhook_attempts: int = 0
    webhook_status_code: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == COMPLETED


def _engine(db):
    engine = db.engine  # Database.engine() or an Engine's own .engine
    return engine() if callable(engine) else engine


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else int(now)


def _validate(conn, schema: ExportSchema, row: dict) -> ExportSpec:
    models, users = tables.attribution_models, tables.users
    owner = conn.execute(select(models.c.user_id).where(models.c.model_id == row.get("model_id"))).scalar()
    deleted = conn.execute(select(users.c.user_deleted).where(users.c.user_id == row.get("user_id"))).scalar()
    return validate_export(row, requested_format=row.get(schema.format), model_owner=owner, user_deleted=deleted)


def _metadata(schema: ExportSchema, row: dict, outcome: str, reason: str | None, path: Path | None,
              rows: int, hook: WebhookOutcome | None) -> dict:
    """The audit row's metadata: ids, outcome, counts, the file's name; no URL, secret or header."""
    meta = {"export_id": int(row["export_id"]), "schema": schema.kind, "status": outcome, "reason": reason,
            "format": row.get(schema.format), "scope_type": row.get("scope_type"), "scope_id": row.get("scope_id"),
            "start_hour": row.get("start_hour"), "end_hour": row.get("end_hour"), "rows_exported": rows,
            "file_name": path.name if path else None}
    if hook is not None:
        meta["webhook"] = {"ok": hook.ok, "attempts": hook.attempts, "status_code": hook.status_code}
    return meta


def _fail(engine, schema: ExportSchema, row: dict, reason: str, started: float, log) -> ExportResult:
    now = _now(None)
    with engine.begin() as conn:
        queue.mark_failed(conn, schema, int(row["export_id"]), reason, now=now)
        audit_export(conn, user_id=row.get("user_id"), model_id=row.get("model_id"), now=now,
                     metadata=_metadata(schema, row, FAILED, reason, None, 0, None))
    log_event(log, "export_failed", level="warning", export_id=int(row["export_id"]), reason=reason)
    return ExportResult(int(row["export_id"]), FAILED, reason, seconds=time.perf_counter() - started)


def _write(engine, db, settings, spec: ExportSpec, when: int) -> tuple[Path, int]:
    pages = snapshot_pages(engine, spec, retry=getattr(db, "retry", None))
    return write_export_file(settings.export_files_path, spec.export_id, spec.file_kind, pages, when=when)


def _complete(engine, schema: ExportSchema, row: dict, path: Path, rows: int, now: int) -> bool:
    token = secrets.token_hex(32) if schema.token else None
    with engine.begin() as conn:
        return queue.mark_completed(conn, schema, int(row["export_id"]), file_path=str(path), rows=rows,
                                    now=now, token=token)


def _after_webhook(engine, schema: ExportSchema, row: dict, path: Path, rows: int, hook: WebhookOutcome | None):
    """Record the webhook's last attempt; a failure fails the export (canonical: PHP's live worker)
    or is written as the error of a completed export (alternative: PHP's pipeline B, D23). Then audit."""
    export_id, now = int(row["export_id"]), _now(None)
    failed = hook is not None and not hook.ok
    with engine.begin() as conn:
        if hook is not None and hook.attempted_at is not None:
            queue.record_webhook(conn, schema, export_id, attempted_at=hook.attempted_at,
                                 status_code=hook.status_code, body=hook.response_body)
        if failed and schema.kind == ALTERNATIVE:
            queue.record_error(conn, schema, export_id, hook.error, now=now)
        elif failed:
            queue.mark_failed(conn, schema, export_id, hook.error, now=now)
        audit_export(conn, user_id=row.get("user_id"), model_id=row.get("model_id"), now=now,
                     metadata=_metadata(schema, row, FAILED if failed else COMPLETED,
                                        hook.error if failed else None, path, rows, hook))


def process_export(db, settings, export_id: int, *, log, deliver: Callable | None = None,
                   schema: ExportSchema | None = None, now: int | None = None) -> ExportResult:
    """Process one export (claim, validate, file, completed, webhook, audit); never raises for a
    bad row (it fails with its reason). ``deliver`` replaces ``webhook.deliver_webhook`` (tests)."""
    started, engine = time.perf_counter(), _engine(db)
    with engine.connect() as conn:
        schema = schema or detect_schema(conn)
        row = queue.load_export(conn, schema, export_id)
    if row is None:
        return ExportResult(export_id, SKIPPED, "not found")
    claimed_at = _now(now)
    with engine.begin() as conn:
        if not queue.claim(conn, schema, export_id, now=claimed_at):
            return ExportResult(export_id, SKIPPED, "already claimed")
    log_event(log, "export_claimed", export_id=export_id, schema=schema.kind)
    try:
        with engine.connect() as conn:
            spec = _validate(conn, schema, row)
        path, rows = _write(engine, db, settings, spec, claimed_at)
    except (InvalidExport, XlsxRowLimit) as exc:
        text = str(exc) if isinstance(exc, InvalidExport) else f"{exc.reason}: {exc}"
        return _fail(engine, schema, row, text, started, log)
    except Exception as exc:  # noqa: BLE001 - a database or disk error: this export fails, named
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300] if str(exc) else ""
        return _fail(engine, schema, row, f"export_error: {type(exc).__name__}: {detail}", started, log)
    completed_at = _now(None)
    if not _complete(engine, schema, row, path, rows, completed_at):
        return ExportResult(export_id, SKIPPED, "no longer processing (changed by another writer)",
                            file_path=str(path), rows_exported=rows)
    hook = send_webhook(row, schema, spec, path, rows, completed_at, settings=settings, log=log, deliver=deliver)
    _after_webhook(engine, schema, row, path, rows, hook)
    failed = hook is not None and not hook.ok
    log_event(log, "export_processed", export_id=export_id, outcome=FAILED if failed else COMPLETED,
              rows_exported=rows, file_name=path.name, webhook_attempts=hook.attempts if hook else 0)
    return ExportResult(export_id, FAILED if failed else COMPLETED, hook.error if failed else None,
                        file_path=str(path), rows_exported=rows, webhook_attempts=hook.attempts if hook else 0,
                        webhook_status_code=hook.status_code if hook else None,
                        seconds=time.perf_counter() - started)


def stamp_poll(db, now: int | None = None) -> None:
    """Stamp ``202_cronjob_logs`` id 3 (Prosper202's System Checks: the export worker's last run)."""
    with _engine(db).begin() as conn:
        stamp_poll_conn(conn, now=_now(now))


def pending_exports(db, limit: int | None = None) -> list[PendingExport]:
    """The pending exports, oldest first, with the time each was queued (the run key's second half)."""
    with _engine(db).connect() as conn:
        return queue.pending_exports(conn, detect_schema(conn), limit)


def queue_health(db, now: int) -> QueueHealth:
    """(pending count, oldest pending export's age in seconds, webhooks in the last hour, failed ones)."""
    with _engine(db).connect() as conn:
        return queue_health_conn(conn, detect_schema(conn), int(now))


def process_pending(db, settings, *, log, limit: int | None = None, deliver: Callable | None = None,
                    before_claim: Callable[[list[PendingExport]], None] | None = None) -> list[ExportResult]:
    """Stamp the poll, then process every pending export, oldest first; one export's error never
    stops the others. ``before_claim`` is called with the pending list before the first claim (a
    test's barrier, forcing two workers to race for the same rows)."""
    stamp_poll(db)
    with _engine(db).connect() as conn:
        schema = detect_schema(conn)
        pending = queue.pending_exports(conn, schema, limit)
    if before_claim is not None:
        before_claim(pending)
    results = []
    for item in pending:
        try:
            results.append(process_export(db, settings, item.export_id, log=log, deliver=deliver, schema=schema))
        except Exception as exc:  # noqa: BLE001 - the database failed mid-export: logged, next export
            log_event(log, "export_error", level="error", export_id=item.export_id, error=type(exc).__name__)
            results.append(ExportResult(item.export_id, FAILED, f"export_error: {type(exc).__name__}"))
    return results
