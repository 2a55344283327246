"""The export queue's health in the Dagster UI and on the alert webhook (issue 18, point 5).

The queue (``202_attribution_exports``) is not computed by Dagster: it is declared as an external
asset, ``attribution_export_queue`` (group ``export_queue``), with two checks:

* ``export_queue_pending_age`` (ERROR): no export has been pending for more than 5 minutes (the
  sensor polls every 30 s, so an older one means runs are not being launched or not finishing),
  and none has been ``processing`` for more than 30 minutes since its claim (a worker that was
  killed after claiming: reset the row to ``pending`` with a new ``queued_at``);
* ``export_queue_webhook_failures`` (WARN): at most 10% of the last hour's export webhooks failed
  (evaluated only when at least one was attempted; none attempted passes).

The ``attribution_export_queue`` sensor (``export_queue_runs.py``) evaluates both on every tick,
from :func:`~attribution_pipeline.export_queue.worker.queue_health`, and records them without a run
(``report_runless_asset_event``) when a result changes, and otherwise every 15 minutes (so the
UI shows when the queue was last looked at, without writing 5,760 evaluations a day into the
instance's event log). It alerts once when a check turns red and once when it turns green again:
the last results are kept in the sensor's cursor. *Execute* on the checks in the UI evaluates them
in a run as well (:func:`export_queue_health_checks`).
"""

import json
import time
from dataclasses import dataclass

import dagster as dg

from attribution_pipeline.assets.check_kit import ERROR, WARN
from attribution_pipeline.automation.alerts import Alerter, build_payload
from attribution_pipeline.export_queue.queue_ops import STUCK_SECONDS, QueueHealth
from attribution_pipeline.export_queue.worker import queue_health
from attribution_pipeline.logs import clean, log_event
from attribution_pipeline.storage.database import Database

QUEUE_KEY = dg.AssetKey("attribution_export_queue")
PENDING_AGE_CHECK = "export_queue_pending_age"
WEBHOOK_FAILURES_CHECK = "export_queue_webhook_failures"
MAX_PENDING_AGE_SECONDS = 5 * 60
MAX_WEBHOOK_FAILURE_SHARE = 0.10
#: A check whose result did not change is recorded again after this long (the UI's "last evaluated").
REFRESH_SECONDS = 15 * 60
SEVERITIES = {PENDING_AGE_CHECK: ERROR, WEBHOOK_FAILURES_CHECK: WARN}

export_queue_asset = dg.AssetSpec(
    QUEUE_KEY,
    group_name="export_queue",
    kinds={"mysql"},
    description="Prosper202's export requests (202_attribution_exports), written by its dashboard and API and "
    "processed one run each by the attribution_export_job, launched by the attribution_export_queue sensor. "
    "Not materialised by Dagster: its two checks are recorded by that sensor.",
)

PENDING_AGE_DESCRIPTION = (
    "No export request has been pending for more than 5 minutes, and none has been processing for more than 30 "
    "minutes since its claim. Red: the attribution_export_queue sensor is off or the daemon is down, its runs are "
    "queued behind others, or a run failed before claiming its export (Runs, filter attribution/kind=export; "
    "re-execute it, or run `attribution exports run --once`); or a worker died after claiming (set the row's "
    "status back to 'pending' with a new queued_at).")
WEBHOOK_DESCRIPTION = (
    "At most 10% of the export webhooks attempted in the last hour failed (none attempted: passes). Red: the "
    "receivers answer errors or time out; `attribution exports list` and the runs' metadata name the exports.")


def evaluate_queue_health(health: QueueHealth) -> list[dg.AssetCheckEvaluation]:
    """Both checks' evaluations for one reading of the queue's health."""
    age, pending = int(health.oldest_pending_age_seconds), int(health.pending_count)
    stuck = int(health.stuck_processing)
    age_ok = (pending == 0 or age <= MAX_PENDING_AGE_SECONDS) and stuck == 0
    age_text = (f"{pending} export(s) pending, the oldest for {age // 60} min {age % 60} s"
                + ("" if pending == 0 or age <= MAX_PENDING_AGE_SECONDS
                   else f" (more than {MAX_PENDING_AGE_SECONDS // 60} min)") if pending
                else "no export pending")
    if stuck:
        age_text += f"; {stuck} export(s) processing for more than {STUCK_SECONDS // 60} min since their claim"
    sent, failed = int(health.webhooks_last_hour), int(health.webhooks_failed_last_hour)
    share = failed / sent if sent else 0.0
    hooks_ok = sent == 0 or share <= MAX_WEBHOOK_FAILURE_SHARE
    hooks_text = (f"{failed} of {sent} webhook(s) of the last hour failed ({share:.0%})"
                  + ("" if hooks_ok else f", more than {MAX_WEBHOOK_FAILURE_SHARE:.0%}") if sent
                  else "no webhook attempted in the last hour")
    common = {"pending_count": pending, "oldest_pending_age_seconds": age, "stuck_processing": stuck}
    hooks = {"webhooks_last_hour": sent, "webhooks_failed_last_hour": failed,
             "failed_share": round(share, 4)}
    return [
        dg.AssetCheckEvaluation(asset_key=QUEUE_KEY, check_name=PENDING_AGE_CHECK, passed=age_ok,
                                severity=SEVERITIES[PENDING_AGE_CHECK], description=age_text,
                                metadata={**common, "max_pending_age_seconds": MAX_PENDING_AGE_SECONDS}),
        dg.AssetCheckEvaluation(asset_key=QUEUE_KEY, check_name=WEBHOOK_FAILURES_CHECK, passed=hooks_ok,
                                severity=SEVERITIES[WEBHOOK_FAILURES_CHECK], description=hooks_text,
                                metadata={**hooks, "max_failed_share": MAX_WEBHOOK_FAILURE_SHARE}),
    ]


@dg.multi_asset_check(
    name="export_queue_health",
    specs=[dg.AssetCheckSpec(PENDING_AGE_CHECK, asset=QUEUE_KEY, description=PENDING_AGE_DESCRIPTION,
                             metadata={"severity": ERROR.value}),
           dg.AssetCheckSpec(WEBHOOK_FAILURES_CHECK, asset=QUEUE_KEY, description=WEBHOOK_DESCRIPTION,
                             metadata={"severity": WARN.value})],
    description="The export queue's health now (the attribution_export_queue sensor records it every tick it "
    "changes, without a run).",
)
def export_queue_health_checks(context: dg.AssetCheckExecutionContext, db: dg.ResourceParam[Database]):
    for evaluation in evaluate_queue_health(queue_health(db, int(time.time()))):
        log_event(context.log, "check_evaluated", stage="checks", asset=QUEUE_KEY.to_user_string(),
                  check=evaluation.check_name, passed=evaluation.passed)
        yield dg.AssetCheckResult(asset_key=QUEUE_KEY, check_name=evaluation.check_name, passed=evaluation.passed,
                                  severity=evaluation.severity, description=evaluation.description,
                                  metadata=dict(evaluation.metadata))


@dataclass(frozen=True)
class HealthCursor:
    """What the sensor remembers between ticks: each check's last result and when it was recorded."""

    passed: dict[str, bool]
    recorded_at: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "HealthCursor":
        try:
            data = json.loads(text) if text else {}
            return cls({str(k): bool(v) for k, v in dict(data.get("passed") or {}).items()},
                       int(data.get("recorded_at") or 0))
        except (TypeError, ValueError, AttributeError):
            return cls({})  # an unreadable cursor (an older sensor's): start over

    def dump(self) -> str:
        return json.dumps({"passed": self.passed, "recorded_at": self.recorded_at}, sort_keys=True)


def _failed_entry(evaluation: dg.AssetCheckEvaluation) -> dict:
    return {"asset": QUEUE_KEY.to_user_string(), "check": evaluation.check_name,
            "severity": evaluation.severity.value, "description": evaluation.description,
            "hours": [], "failing_hour_count": 0}


def _alert(log, alerts: Alerter, turned_red: list, turned_green: list) -> None:
    """One alert for the checks that turned red, one for those that turned green again."""
    if turned_red:
        alerts.send(log, build_payload("check_failure", run_id=None, hours="",
                                       failed=[_failed_entry(e) for e in turned_red]))
    if turned_green:
        payload = build_payload("check_recovered", run_id=None, hours="", failed=[])
        payload["recovered_checks"] = clean([{"asset": QUEUE_KEY.to_user_string(), "check": e.check_name,
                                              "description": e.description} for e in turned_green])
        alerts.send(log, payload)


def observe_health(context: dg.SensorEvaluationContext, alerts: Alerter, health: QueueHealth, now: int) -> str:
    """Record the checks when they changed (or every ``REFRESH_SECONDS``), alert on each change of
    result; return the new cursor."""
    before = HealthCursor.parse(context.cursor)
    evaluations = evaluate_queue_health(health)
    changed = [e for e in evaluations if before.passed.get(e.check_name) != e.passed]
    stale = now - before.recorded_at >= REFRESH_SECONDS
    if not changed and not stale:
        return before.dump()
    for evaluation in evaluations:
        context.instance.report_runless_asset_event(evaluation)
        log_event(context.log, "check_evaluated", level="info" if evaluation.passed else "warning", stage="checks",
                  asset=QUEUE_KEY.to_user_string(), check=evaluation.check_name,
                  severity=evaluation.severity.value, passed=evaluation.passed)
    turned_red = [e for e in changed if not e.passed]
    turned_green = [e for e in changed if e.passed and before.passed.get(e.check_name) is False]
    _alert(context.log, alerts, turned_red, turned_green)
    return HealthCursor({e.check_name: e.passed for e in evaluations}, now).dump()
