"""Three sensors, on by default: a failed run, a failed check, a late latest hour (``alerts.py``)."""

import dagster as dg

from attribution_pipeline.assets.freshness import FRESHNESS_CHECK, WRITEBACK_KEY, evaluate_freshness
from attribution_pipeline.automation.alerts import (
    Alerter,
    build_payload,
    is_attribution_run,
    metadata_value,
    run_failed_checks,
    run_hours_label,
)
from attribution_pipeline.dagster_compat import AssetCheckExecutionRecordStatus, PartitionKeyFilter
from attribution_pipeline.logs import log_event
from attribution_pipeline.settings import Settings


@dg.run_failure_sensor(
    name="attribution_run_failure_alert",
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (JSON log line; webhook POST when ATTRIBUTION_ALERT_WEBHOOK_URL is set) when a run "
    "of the attribution assets fails, with the reason and the checks that failed in it.",
)
def attribution_run_failure_alert(context: dg.RunFailureSensorContext, alerts: dg.ResourceParam[Alerter]):
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
    payload = build_payload("run_failure", run_id=run.run_id, hours=run_hours_label(run), job=run.job_name,
                            failed=run_failed_checks(context.instance, run.run_id), reason=reason or "run failed")
    alerts.send(context.log, payload)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="attribution_check_failure_alert",
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (JSON log line; webhook POST when ATTRIBUTION_ALERT_WEBHOOK_URL is set) when a "
    "successful run of the attribution assets has failed checks of any severity (warnings included: they "
    "never fail a run), listing each check with its failing hours.",
)
def attribution_check_failure_alert(context: dg.RunStatusSensorContext, alerts: dg.ResourceParam[Alerter]):
    run = context.dagster_run
    if not is_attribution_run(run):
        return
    failed = run_failed_checks(context.instance, run.run_id)
    if not failed:
        return
    alerts.send(context.log, build_payload("check_failure", run_id=run.run_id, hours=run_hours_label(run),
                                          job=run.job_name, failed=failed))


def _latest_recorded_freshness(instance: dg.DagsterInstance):
    """The latest completed, run-level evaluation of the freshness check (None if never)."""
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
def attribution_freshness(context: dg.SensorEvaluationContext, alerts: dg.ResourceParam[Alerter],
                          settings: dg.ResourceParam[Settings]):
    evaluation = evaluate_freshness(context.instance, settings.first_hour)
    due = evaluation.metadata["due_hour"].value
    previous = _latest_recorded_freshness(context.instance)
    if previous is not None and previous.passed == evaluation.passed and (
        evaluation.passed or metadata_value(previous.metadata, "due_hour") == due
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
        alerts.send(context.log, build_payload("check_failure", run_id=None, hours=f"{due}..{due}", failed=failed))
    return dg.SkipReason(f"freshness recorded: {'fresh' if evaluation.passed else 'overdue'} (due hour {due})")


SENSORS = [attribution_run_failure_alert, attribution_check_failure_alert, attribution_freshness]
