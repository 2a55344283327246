"""Alerts: a failed run, a failed check (warnings included) and a stale latest hour.

Three sensors, on by default (they only log unless a webhook is configured):

* ``attribution_run_failure_alert`` (``run_failure_sensor``): a run of the attribution assets
  failed (for the write-back, outcome 1: nothing was committed, D19). Alert ``kind=run_failure``
  with the failure's first line and the checks that failed in that run.
* ``attribution_check_failure_alert`` (``run_status_sensor`` on SUCCESS): a run of the
  attribution assets succeeded, but some of its checks failed, of ANY severity (a WARN check never
  fails a run, so without this nobody would hear of it). Alert ``kind=check_failure``. The
  sensor's cursor is Dagster's own run-status cursor: each finished run is looked at once, and all
  its failed checks are sent in one alert. (A cursor over check-evaluation events is not possible
  on the default SQLite instance, whose event log is sharded per run.)
* ``attribution_freshness`` (every 10 minutes): evaluates
  ``attribution_writeback.latest_hour_fresh`` (the latest hour that ended 2 hours ago is written),
  records the result in the instance when it changes (so the check turns red or green in the UI
  even when no run happens) and alerts ``kind=check_failure`` when it turns red, then once per
  newly overdue hour.

Both run sensors watch every code location (``monitor_all_code_locations``) so that runs started
by ``attribution rebuild`` and ``attribution demo`` (in-process, without a code location) are
seen too; they then keep only runs that materialise or check the attribution assets.

Every alert is one JSON log line (``event=alert``, :func:`attribution_pipeline.logs.log_event`).
When ``ATTRIBUTION_ALERT_WEBHOOK_URL`` is set (http or https), the alert is also POSTed there as
a small JSON body, with a timeout of ``ATTRIBUTION_ALERT_TIMEOUT`` seconds (default 5)::

    {"kind": "check_failure", "run_id": "...", "job": "attribution_job",
     "hours": "2024-06-01-09:00..2024-06-01-11:00",
     "failed_checks": [{"asset": "conversions", "check": "orphan_conversions", "severity": "WARN",
                        "description": "...", "hours": ["2024-06-01-10:00"], "failing_hour_count": 1}]}

A webhook error never raises (the sensor must keep running); it is logged as
``alert_webhook_failed`` with the error type and HTTP status, never the URL (it may hold a token).
Payloads hold run ids, hour keys, asset and check names and counts: never database URLs,
credentials or personal data (and pass the same redaction as the logs).
"""

import json
import os
import time
import urllib.request
from collections.abc import Sequence

import dagster as dg

from attribution_pipeline.checks import FRESHNESS_CHECK, WRITEBACK_KEY, evaluate_freshness
from attribution_pipeline.logs import _clean, log_event
from attribution_pipeline.partitions import RANGE_END_TAG, RANGE_START_TAG

WEBHOOK_ENV = "ATTRIBUTION_ALERT_WEBHOOK_URL"
TIMEOUT_ENV = "ATTRIBUTION_ALERT_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 5.0
MAX_FAILED_CHECKS = 50  # per alert
MAX_HOURS_PER_CHECK = 100  # hour keys per failed check in an alert
PARTITION_TAG = "dagster/partition"
JOB_NAME = "attribution_job"


# ------------------------------------------------------------------------------------------
# payloads
# ------------------------------------------------------------------------------------------


def run_hours(run: dg.DagsterRun) -> str:
    """``first..last`` hour keys of a run (range tags, else its single partition), else ''."""
    tags = run.tags or {}
    if tags.get(RANGE_START_TAG) and tags.get(RANGE_END_TAG):
        return f"{tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}"
    if tags.get(PARTITION_TAG):
        return f"{tags[PARTITION_TAG]}..{tags[PARTITION_TAG]}"
    return ""


def _attribution_keys() -> set[dg.AssetKey]:
    from attribution_pipeline.jobs import PIPELINE_ASSETS

    return {key for asset in PIPELINE_ASSETS for key in asset.keys}


def is_attribution_run(run: dg.DagsterRun) -> bool:
    """The run materialises or checks an attribution asset (any job: attribution_job, UI runs)."""
    if run.job_name == JOB_NAME:
        return True
    keys = _attribution_keys()
    if run.asset_selection and keys & set(run.asset_selection):
        return True
    return bool(run.asset_check_selection and keys & {c.asset_key for c in run.asset_check_selection})


def _metadata_value(metadata, name):
    value = metadata.get(name)
    return getattr(value, "value", value)


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[dict]:
    """The checks that failed in a run, one entry per (asset, check), with the failing hours.

    Hours come from per-hour evaluations (their partition) and from the run-level evaluation's
    ``failing_hours`` metadata; the description is the run-level one when there is one.
    """
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    found: dict[tuple[str, str], dict] = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        key = (evaluation.asset_key.to_user_string(), evaluation.check_name)
        entry = found.setdefault(key, {"asset": key[0], "check": key[1], "severity": evaluation.severity.value,
                                       "description": "", "hours": set()})
        if evaluation.partition:
            entry["hours"].add(evaluation.partition)
        listed = _metadata_value(evaluation.metadata, "failing_hours")
        if isinstance(listed, list):
            entry["hours"].update(str(h) for h in listed)
        if evaluation.description and (evaluation.partition is None or not entry["description"]):
            entry["description"] = evaluation.description[:300]
    out = []
    for entry in sorted(found.values(), key=lambda e: (e["severity"] != "ERROR", e["asset"], e["check"])):
        hours = sorted(entry["hours"])
        out.append({**entry, "hours": hours[:MAX_HOURS_PER_CHECK], "failing_hour_count": len(hours)})
    return out[:MAX_FAILED_CHECKS]


def build_payload(kind: str, *, run_id: str | None, hours: str, failed: Sequence[dict], job: str | None = None,
                  reason: str | None = None) -> dict:
    payload = {"kind": kind, "run_id": run_id, "job": job, "hours": hours, "failed_checks": list(failed)}
    if reason:
        payload["reason"] = reason.splitlines()[0][:300]
    return _clean(payload)


# ------------------------------------------------------------------------------------------
# delivery
# ------------------------------------------------------------------------------------------


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        value = DEFAULT_TIMEOUT_SECONDS
    return value if value > 0 else DEFAULT_TIMEOUT_SECONDS


def send_alert(logger, payload: dict) -> bool:
    """Log the alert as one JSON line; POST it to the webhook when one is configured.

    Returns True when the webhook answered 2xx. Never raises.
    """
    failed = payload.get("failed_checks") or []
    log_event(logger, "alert", level="error" if payload.get("kind") == "run_failure" else "warning",
              stage="alerts", kind=payload.get("kind"), run_id=payload.get("run_id"),
              partition_range=payload.get("hours"), failed_check_count=len(failed),
              failed_checks=[f"{c['asset']}.{c['check']}:{c['severity']}" for c in failed][:20])
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    if not url:
        return False
    started = time.perf_counter()
    fields = {"stage": "alerts", "kind": payload.get("kind"), "run_id": payload.get("run_id")}
    if not url.lower().startswith(("http://", "https://")):
        log_event(logger, "alert_webhook_failed", level="warning", error="UnsupportedScheme",
                  detail=f"{WEBHOOK_ENV} must be an http(s) URL", **fields)
        return False
    request = urllib.request.Request(
        url, data=json.dumps(payload, default=str).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "attribution-pipeline-alerts"},
    )
    try:
        with urllib.request.urlopen(request, timeout=_timeout()) as response:  # noqa: S310 - http(s) only, above
            status = response.status
    except Exception as exc:  # noqa: BLE001 - an alert must never break the sensor
        log_event(logger, "alert_webhook_failed", level="warning", error=type(exc).__name__,
                  status=getattr(exc, "code", None), latency_ms=round((time.perf_counter() - started) * 1000, 1),
                  **fields)
        return False
    log_event(logger, "alert_sent", status=status, latency_ms=round((time.perf_counter() - started) * 1000, 1),
              **fields)
    return 200 <= status < 300


# ------------------------------------------------------------------------------------------
# sensors
# ------------------------------------------------------------------------------------------


@dg.run_failure_sensor(
    name="attribution_run_failure_alert",
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (JSON log line; webhook POST when ATTRIBUTION_ALERT_WEBHOOK_URL is set) when a run "
    "of the attribution assets fails, with the reason and the checks that failed in it.",
)
def attribution_run_failure_alert(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    if not is_attribution_run(run):
        return
    step_failures = context.get_step_failure_events()
    reason = ""
    if step_failures and step_failures[0].step_failure_data and step_failures[0].step_failure_data.error:
        error = step_failures[0].step_failure_data.error
        reason = f"{step_failures[0].step_key}: {error.message.strip()}"
    elif context.failure_event is not None:
        reason = context.failure_event.message or ""
    payload = build_payload("run_failure", run_id=run.run_id, hours=run_hours(run), job=run.job_name,
                            failed=failed_checks(context.instance, run.run_id), reason=reason or "run failed")
    send_alert(context.log, payload)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="attribution_check_failure_alert",
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (JSON log line; webhook POST when ATTRIBUTION_ALERT_WEBHOOK_URL is set) when a "
    "successful run of the attribution assets has failed checks of any severity (warnings included: they "
    "never fail a run), listing each check with its failing hours.",
)
def attribution_check_failure_alert(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    if not is_attribution_run(run):
        return
    failed = failed_checks(context.instance, run.run_id)
    if not failed:
        return
    send_alert(context.log, build_payload("check_failure", run_id=run.run_id, hours=run_hours(run),
                                          job=run.job_name, failed=failed))


def _latest_recorded_freshness(instance: dg.DagsterInstance):
    """The latest completed, run-level evaluation of the freshness check (None if never)."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(WRITEBACK_KEY, FRESHNESS_CHECK), limit=1,
        status={AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED},
        partition_filter=PartitionKeyFilter(key=None),
    )
    if not history or history[0].event is None:
        return None
    return history[0].event.dagster_event.event_specific_data


@dg.sensor(
    name="attribution_freshness",
    minimum_interval_seconds=600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 10 minutes: is the latest hour that ended 2 hours ago written? Records "
    "attribution_writeback.latest_hour_fresh in the instance when its result changes (no run needed) and "
    "alerts when it turns red, then once per newly overdue hour.",
)
def attribution_freshness(context: dg.SensorEvaluationContext):
    evaluation = evaluate_freshness(context.instance)
    due = evaluation.metadata["due_hour"].value
    previous = _latest_recorded_freshness(context.instance)
    if previous is not None and previous.passed == evaluation.passed and (
        evaluation.passed or _metadata_value(previous.metadata, "due_hour") == due
    ):
        return dg.SkipReason(f"freshness unchanged: {'fresh' if evaluation.passed else 'overdue'} (due hour {due})")
    context.instance.report_runless_asset_event(evaluation)
    log_event(context.log, "check_evaluated", level="info" if evaluation.passed else "warning", stage="checks",
              asset=WRITEBACK_KEY.to_user_string(), check=FRESHNESS_CHECK, severity=evaluation.severity.value,
              passed=evaluation.passed, due_hour=due)
    if not evaluation.passed:
        failed = [{"asset": WRITEBACK_KEY.to_user_string(), "check": FRESHNESS_CHECK,
                   "severity": evaluation.severity.value, "description": evaluation.description,
                   "hours": [due], "failing_hour_count": 1}]
        send_alert(context.log, build_payload("check_failure", run_id=None, hours=f"{due}..{due}", failed=failed))
    return dg.SkipReason(f"freshness recorded: {'fresh' if evaluation.passed else 'overdue'} (due hour {due})")


SENSORS = [attribution_run_failure_alert, attribution_check_failure_alert, attribution_freshness]
