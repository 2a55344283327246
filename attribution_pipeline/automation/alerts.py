"""Alerts: what is sent when a run fails, a check fails or the latest hour is late (``sensors.py``).

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
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg

from attribution_pipeline.assets.hourly import RANGE_END_TAG, RANGE_START_TAG
from attribution_pipeline.assets.resources import is_pipeline_run
from attribution_pipeline.assets.source_health import DATABASE_KEY, HEALTH_JOB
from attribution_pipeline.automation.jobs import PIPELINE_KEYS
from attribution_pipeline.logs import clean, log_event

MAX_FAILED_CHECKS = 50  # per alert
MAX_HOURS_PER_CHECK = 100  # hour keys per failed check in an alert
PARTITION_TAG = "dagster/partition"


def run_hours_label(run: dg.DagsterRun) -> str:
    """``first..last`` hour keys of a run (range tags, else its single partition), else ''."""
    tags = run.tags or {}
    if tags.get(RANGE_START_TAG) and tags.get(RANGE_END_TAG):
        return f"{tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}"
    if tags.get(PARTITION_TAG):
        return f"{tags[PARTITION_TAG]}..{tags[PARTITION_TAG]}"
    return ""


def is_attribution_run(run: dg.DagsterRun) -> bool:
    """The run materialises or checks an attribution asset (any job: attribution_job, UI runs), or
    checks the database (``prosper202_database.source_health``, D28)."""
    if is_pipeline_run(run) or run.job_name == HEALTH_JOB:
        return True
    watched = PIPELINE_KEYS | {DATABASE_KEY}
    return bool(run.asset_check_selection and watched & {c.asset_key for c in run.asset_check_selection})


def metadata_value(metadata, name):
    value = metadata.get(name)
    return getattr(value, "value", value)


def run_failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[dict]:
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
        listed = metadata_value(evaluation.metadata, "failing_hours")
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
    return clean(payload)


@dataclass(frozen=True)
class Alerter:
    """Where alerts go: always one JSON log line; also a POST to ``webhook_url`` when it is set
    (``ATTRIBUTION_ALERT_WEBHOOK_URL``, a secret: it may carry a token, so it is never logged and
    never part of any Dagster config), with a timeout of ``timeout_seconds``."""

    webhook_url: str | None = field(default=None, repr=False)
    timeout_seconds: float = 5.0

    @classmethod
    def from_settings(cls, settings) -> "Alerter":
        return cls(webhook_url=settings.alert_webhook_url, timeout_seconds=settings.alert_timeout_seconds)

    def send(self, logger, payload: dict) -> bool:
        """Log the alert as one JSON line; POST it to the webhook when one is configured.

        Returns True when the webhook answered 2xx. Never raises.
        """
        failed = payload.get("failed_checks") or []
        log_event(logger, "alert", level="error" if payload.get("kind") == "run_failure" else "warning",
                  stage="alerts", kind=payload.get("kind"), run_id=payload.get("run_id"),
                  partition_range=payload.get("hours"), failed_check_count=len(failed),
                  failed_checks=[f"{c['asset']}.{c['check']}:{c['severity']}" for c in failed][:20])
        url = self.webhook_url
        if not url:
            return False
        started = time.perf_counter()
        fields = {"stage": "alerts", "kind": payload.get("kind"), "run_id": payload.get("run_id")}
        if not url.lower().startswith(("http://", "https://")):
            log_event(logger, "alert_webhook_failed", level="warning", error="UnsupportedScheme",
                      detail="ATTRIBUTION_ALERT_WEBHOOK_URL must be an http(s) URL", **fields)
            return False
        request = urllib.request.Request(
            url, data=json.dumps(payload, default=str).encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "attribution-pipeline-alerts"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310 - http(s) only, above
                status = response.status
        except Exception as exc:  # noqa: BLE001 - an alert must never break the sensor
            log_event(logger, "alert_webhook_failed", level="warning", error=type(exc).__name__,
                      status=getattr(exc, "code", None), latency_ms=round((time.perf_counter() - started) * 1000, 1),
                      **fields)
            return False
        log_event(logger, "alert_sent", status=status, latency_ms=round((time.perf_counter() - started) * 1000, 1),
                  **fields)
        return 200 <= status < 300
