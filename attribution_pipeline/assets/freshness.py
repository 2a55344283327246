"""Freshness (WARN): is the latest complete hour written? Evaluated by the ``attribution_freshness``
sensor (``automation/sensors.py``) every 10 minutes, never inside a run of the hourly job: a
historical backfill or rebuild is not late (``automation/jobs.py`` leaves the check out)."""

import time

import dagster as dg

from attribution_pipeline.assets.check_kit import WARN
from attribution_pipeline.core.hours import HOUR, floor_hour, hour_key
from attribution_pipeline.dagster_compat import AssetCheckEvaluationTargetMaterializationData
from attribution_pipeline.logs import log_event
from attribution_pipeline.settings import Settings

WRITEBACK_KEY = dg.AssetKey("attribution_writeback")
FRESHNESS_GRACE_SECONDS = 2 * HOUR  # an hour must be written within 2 hours of its end


def _now() -> int:
    return int(time.time())


FRESHNESS_CHECK = "latest_hour_fresh"


def due_hour(now: int) -> int:
    """The latest hour that must be written by ``now``: it ended at least 2 hours ago."""
    return floor_hour(now - FRESHNESS_GRACE_SECONDS) - HOUR


def evaluate_freshness(instance: dg.DagsterInstance, first: int, now: int | None = None) -> dg.AssetCheckEvaluation:
    """Is the latest hour that ended 2 hours ago materialised (``attribution_writeback``)?

    ``first`` is the first partition's hour. Returned as an unpartitioned evaluation of
    ``attribution_writeback.latest_hour_fresh``, with the due hour, the latest write and how late it
    is. The check and the freshness sensor share it.
    """
    now = _now() if now is None else now
    asset_key = WRITEBACK_KEY
    due = due_hour(now)
    due_key = hour_key(due)
    written = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, {due_key}
    ) if due >= first else {}
    latest = instance.fetch_materializations(asset_key, limit=1).records
    latest_record = latest[0] if latest else None
    passed = due < first or due_key in written
    overdue_minutes = 0 if passed else max(0, (now - (due + HOUR + FRESHNESS_GRACE_SECONDS)) // 60)
    metadata = {
        "due_hour": due_key,
        "overdue_minutes": int(overdue_minutes),
        "grace_minutes": FRESHNESS_GRACE_SECONDS // 60,
        "evaluated_at": dg.MetadataValue.timestamp(float(now)),
        "last_written_hour": (latest_record.partition_key or "") if latest_record else "",
        "failing_hours": dg.MetadataValue.json([] if passed else [due_key]),
    }
    if latest_record is not None:
        metadata["last_written_at"] = dg.MetadataValue.timestamp(latest_record.timestamp)
    if passed:
        description = (f"{due_key} (the latest hour that ended {FRESHNESS_GRACE_SECONDS // 3600} hours ago) is written"
                       if due >= first else "no hour is due yet (partitions start later)")
    else:
        description = (f"{due_key} is not written {FRESHNESS_GRACE_SECONDS // 3600} hours after it ended "
                       f"(overdue by {overdue_minutes} min); last write: "
                       f"{metadata['last_written_hour'] or 'never'}. Is the hourly_attribution schedule "
                       "running, are its runs failing?")
    target = (AssetCheckEvaluationTargetMaterializationData(storage_id=latest_record.storage_id,
                                                            run_id=latest_record.run_id,
                                                            timestamp=latest_record.timestamp)
              if latest_record is not None else None)
    return dg.AssetCheckEvaluation(asset_key=asset_key, check_name=FRESHNESS_CHECK, passed=passed, severity=WARN,
                                   description=description, metadata=metadata, target_materialization_data=target)


@dg.asset_check(
    asset=WRITEBACK_KEY,
    name=FRESHNESS_CHECK,
    description="The latest complete UTC hour is written (attribution_writeback materialised) within 2 hours "
    "of its end. Evaluated every 10 minutes by the attribution_freshness sensor (not inside runs: a "
    "historical backfill is not late). Red: due_hour names the missing hour; check that the hourly_attribution schedule is on and "
    "that its runs succeed (Runs, filter attribution_job).",
    metadata={"severity": WARN.value, "grace_minutes": FRESHNESS_GRACE_SECONDS // 60},
)
def writeback_latest_hour_fresh(context: dg.AssetCheckExecutionContext, settings: dg.ResourceParam[Settings]):
    evaluation = evaluate_freshness(context.instance, settings.first_hour)
    log_event(context.log, "check_evaluated", stage="checks", run_id=context.run.run_id, asset="attribution_writeback", check=FRESHNESS_CHECK,
              severity=WARN.value, passed=evaluation.passed, due_hour=evaluation.metadata["due_hour"].value)
    return dg.AssetCheckResult(passed=evaluation.passed, severity=WARN, description=evaluation.description,
                               metadata=dict(evaluation.metadata))
