"""What ops see of the export queue: Prosper202's System Checks stamp, the audit rows, the queue's health.

* :func:`stamp_poll`: ``202_cronjob_logs`` id 3 = now on every poll of the queue, empty or not, as
  the PHP worker stamps it on every run (System Checks warns when it ages).
* :func:`audit_export`: one ``202_attribution_audit`` row per processed export, action
  ``export_processed``; its metadata holds ids, the outcome, counts and the file's name, never the
  webhook's URL, secret or headers.
* :func:`queue_health`: pending count, the oldest pending export's age, and the last hour's
  webhooks and failed webhooks (the sensor's alerts).
"""

from typing import NamedTuple

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from attribution_pipeline.core.php import php_json
from attribution_pipeline.export_queue.claim import COMPLETED, FAILED, PENDING, PROCESSING, queue_table
from attribution_pipeline.export_queue.queue_schema import ExportSchema
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.audit import stamp_cron_log

AUDIT_ACTION = "export_processed"


class QueueHealth(NamedTuple):
    pending_count: int
    oldest_pending_age_seconds: int  # 0 when nothing is pending
    webhooks_last_hour: int
    webhooks_failed_last_hour: int
    stuck_processing: int = 0  # claimed more than STUCK_SECONDS ago and still processing (a killed worker)


#: An export still ``processing`` this long after its claim was left by a worker that died.
STUCK_SECONDS = 30 * 60


def stamp_poll_conn(conn: Connection, *, now: int) -> None:
    """``202_cronjob_logs`` id 3 = ``now`` (inserted if missing)."""
    stamp_cron_log(conn, now=now, log_id=tables.CRONJOB_LOG_ID_EXPORT)


def audit_export(conn: Connection, *, user_id, model_id, metadata: dict, now: int) -> None:
    """One audit row for a processed export (``metadata`` must hold no secret: the caller builds it)."""
    try:
        user = max(0, int(user_id))
    except (TypeError, ValueError):
        user = 0
    try:
        model = int(model_id) if model_id is not None else None
    except (TypeError, ValueError):
        model = None
    conn.execute(tables.attribution_audit.insert().values(
        user_id=user, model_id=model, action=AUDIT_ACTION, metadata=php_json(metadata), created_at=now))


def queue_health_conn(conn: Connection, schema: ExportSchema, now: int) -> QueueHealth:
    t = queue_table(schema)
    queued = t.c[schema.queued]
    pending, oldest = conn.execute(select(func.count(), func.min(queued)).where(t.c.status == PENDING)).one()
    age = max(0, now - int(oldest)) if oldest is not None else 0
    claimed = t.c[schema.claimed] if schema.claimed else queued
    stuck = conn.execute(select(func.count()).where(
        t.c.status == PROCESSING, func.coalesce(claimed, queued) < now - STUCK_SECONDS)).scalar_one()
    if schema.webhook_at is None:
        return QueueHealth(int(pending), age, 0, 0, int(stuck))
    attempted = t.c[schema.webhook_at]
    sent = and_(attempted >= now - 3600, func.coalesce(t.c.webhook_url, "") != "",
                t.c.status.in_((COMPLETED, FAILED)))
    if schema.webhook_status is not None:
        code = t.c[schema.webhook_status]
        failed = or_(code.is_(None), code < 200, code > 299)
    else:
        failed = t.c[schema.error].is_not(None) if schema.error else t.c.status == FAILED
    webhooks = conn.execute(select(func.count()).where(sent)).scalar_one()
    failures = conn.execute(select(func.count()).where(and_(sent, failed))).scalar_one()
    return QueueHealth(int(pending), age, int(webhooks), int(failures), int(stuck))
