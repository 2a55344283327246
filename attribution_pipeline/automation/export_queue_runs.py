"""The export queue in Dagster (issue 18): one run per export request, launched by a sensor.

* ``attribution_export_job`` processes ONE export, named by its run config
  (``ops: {process_queued_export: {config: {export_id: N}}}``), with
  :func:`~attribution_pipeline.export_queue.worker.process_export`: it claims the row atomically,
  writes the file, marks it completed and POSTs its webhook. The step's output metadata (and the
  run's ``attribution/export_outcome`` tag) say the outcome, rows, file, webhook attempts and status;
  never the webhook's URL, secret or headers. An export that FAILED (recorded on its row with its
  reason) fails the run with :class:`ExportFailed`, so ops see a red run; an export already claimed
  by another worker (a second run, the CLI, the PHP cron) ends the run successfully, logging
  ``already claimed``: nothing is processed twice. Failed export runs are not retried by the
  daemon (``dagster/retry_on_asset_or_op_failure: false``): a retry could only find the row taken.
* The ``attribution_export_queue`` sensor (every 30 s, on by default) stamps ``202_cronjob_logs``
  id 3 on every tick (Prosper202's System Checks: the export worker ran), records the queue's
  health (``export_queue_health.py``) and asks for one run per pending export, ``run_key``
  ``"<export_id>:<queued_at>"``: Dagster launches each key once, and an export reset to pending with
  a new ``queued_at`` runs again. A database error skips the tick with the reason (URL masked);
  the next tick tries again.
"""

import time

import dagster as dg
from sqlalchemy.engine import make_url

from attribution_pipeline.automation.run_priority import priority_tags
from attribution_pipeline.automation.alerts import Alerter
from attribution_pipeline.automation.export_queue_health import observe_health
from attribution_pipeline.errors import AttributionError
from attribution_pipeline.export_queue.worker import (
    COMPLETED,
    FAILED,
    ExportResult,
    pending_exports,
    process_export,
    queue_health,
    stamp_poll,
)
from attribution_pipeline.logs import clean, log_event
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage.database import Database

EXPORT_JOB_NAME = "attribution_export_job"
EXPORT_OP_NAME = "process_queued_export"
KIND_TAG, EXPORT_ID_TAG, OUTCOME_TAG = "attribution/kind", "attribution/export_id", "attribution/export_outcome"
#: Pending exports asked for per tick (oldest first); the others on the next ticks.
MAX_RUNS_PER_TICK = 100
POLL_SECONDS = 30


class ExportFailed(dg.Failure, AttributionError):
    """The export failed; its reason is recorded on its row (``last_error`` / ``error_message``)."""


class ExportRunConfig(dg.Config):
    """The export request a run processes (``202_attribution_exports.export_id``)."""

    export_id: int


def export_run_config(export_id: int) -> dict:
    return {"ops": {EXPORT_OP_NAME: {"config": {"export_id": int(export_id)}}}}


def export_tags(export_id: int) -> dict[str, str]:
    """The tags of an export's run (run priority and concurrency limits can key on them)."""
    return {KIND_TAG: "export", EXPORT_ID_TAG: str(int(export_id)), **priority_tags("export")}


def result_metadata(result: ExportResult) -> dict:
    """What the run shows of an export: ids, outcome, counts, the file; no URL, secret or header."""
    metadata = {"export_id": result.export_id, "outcome": result.outcome, "rows_exported": result.rows_exported,
                "webhook_attempts": result.webhook_attempts, "seconds": round(result.seconds, 3)}
    if result.reason:
        metadata["reason"] = str(clean(result.reason))[:500]
    if result.webhook_status_code is not None:
        metadata["webhook_status_code"] = int(result.webhook_status_code)
    if result.file_path:
        metadata["file_name"] = result.file_path.replace("\\", "/").rsplit("/", 1)[-1]
        metadata["file_path"] = dg.MetadataValue.path(result.file_path)
    return metadata


@dg.op(
    name=EXPORT_OP_NAME,
    description="Claims one export request atomically, writes its CSV/XLSX file, marks it completed and POSTs "
    "its webhook; fails (ExportFailed) when the export failed, with its reason recorded on the row.",
)
def process_queued_export(context: dg.OpExecutionContext, config: ExportRunConfig, db: dg.ResourceParam[Database],
                          settings: dg.ResourceParam[Settings]):
    result = process_export(db, settings, config.export_id, log=context.log)
    metadata = result_metadata(result)
    context.instance.add_run_tags(context.run_id, {OUTCOME_TAG: result.outcome})
    if result.outcome == FAILED:
        raise ExportFailed(description=f"export {result.export_id} failed: {metadata.get('reason', '')}",
                           metadata=metadata, allow_retries=False)
    if result.outcome != COMPLETED:  # skipped: another worker has it, or it is gone
        log_event(context.log, "export_skipped", export_id=result.export_id, reason=result.reason,
                  detail="nothing was processed")
    return dg.Output(None, metadata=metadata)


@dg.job(
    name=EXPORT_JOB_NAME,
    tags={KIND_TAG: "export", "dagster/retry_on_asset_or_op_failure": "false"},
    description="One export request of Prosper202's queue (202_attribution_exports), named by the run config's "
    "export_id: file, completed status, webhook. Launched by the attribution_export_queue sensor.",
)
def attribution_export_job():
    process_queued_export()


def _masked_error(exc: BaseException, url: str) -> str:
    """``Type: first line`` of a database error, with the URL's password masked wherever it appears."""
    orig = getattr(exc, "orig", None) or exc
    detail = (str(orig).splitlines() or [""])[0][:300]
    try:
        password = make_url(url).password
    except Exception:  # noqa: BLE001 - an unparsable URL has no password to mask here
        password = None
    if password:
        detail = detail.replace(str(password), "***")
    return f"{type(orig).__name__}: {detail}" if detail else type(orig).__name__


def _poll(db: Database, now: int):
    """Stamp the poll (System Checks), then read the pending exports and the queue's health."""
    stamp_poll(db, now)
    return pending_exports(db, limit=MAX_RUNS_PER_TICK), queue_health(db, now)


def _now() -> int:
    return int(time.time())


@dg.sensor(
    name="attribution_export_queue",
    job_name=EXPORT_JOB_NAME,  # by name: a job object would be rebound to the resources (a BetaWarning)
    minimum_interval_seconds=POLL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: stamps 202_cronjob_logs id 3 (System Checks), launches one attribution_export_job "
    "run per pending export (run key export_id:queued_at), records the queue's two health checks when they "
    "change and alerts when one turns red or green.",
)
def attribution_export_queue(context: dg.SensorEvaluationContext, db: dg.ResourceParam[Database],
                             alerts: dg.ResourceParam[Alerter]):
    now = _now()
    try:
        pending, health = _poll(db, now)
    except Exception as exc:  # noqa: BLE001 - a database error must not stop the sensor: next tick
        error = _masked_error(exc, db.url)
        log_event(context.log, "export_queue_poll_failed", level="warning", error=type(exc).__name__)
        return dg.SkipReason(f"the export queue could not be polled ({error}; database {db.display_url()}); "
                             f"trying again in {POLL_SECONDS} s")
    cursor = observe_health(context, alerts, health, now)
    requests = [dg.RunRequest(run_key=f"{item.export_id}:{item.queued_at}", run_config=export_run_config(item.export_id),
                              tags=export_tags(item.export_id)) for item in pending]
    if requests:
        log_event(context.log, "export_runs_requested", count=len(requests),
                  export_ids=[item.export_id for item in pending][:20])
    return dg.SensorResult(run_requests=requests, cursor=cursor,
                           skip_reason=None if requests else "no pending export (202_cronjob_logs id 3 stamped)")
