"""Rebuilds on model and settings changes (D26): the ``attribution_model_changes`` sensor and the
``attribution_model_cleanup_job`` it launches for deleted models.

Every 30 s the sensor reads the deciding columns of every ``202_attribution_models`` and
``202_attribution_settings`` row and compares them with the state in its cursor (hashes per row,
``core/change_diff.py``; never ``updated_at``). Its first tick only records that state. Each change
it sees is audited at once (``model_change_detected``, ``settings_change_detected``) and kept as
pending; once nothing more has changed for ``ATTRIBUTION_MODEL_CHANGE_QUIET_SECONDS``, it launches

* one run of ``attribution_job`` over the trailing ``ATTRIBUTION_MODEL_CHANGE_LOOKBACK_DAYS`` of
  complete hours for the models created or edited (now active) and every active model of the users
  whose settings changed (none when the setting is 0: the hourly schedule picks the change up);
* one run of ``attribution_model_cleanup_job`` for the models deleted: their rows are removed
  (``storage/model_cleanup.py``) and the Parquet exports of the hours they had rows in rewritten.

Both carry ``attribution/kind`` tags and a run key made of the pending changes and when they were
seen, so a tick evaluated again never launches the same change twice.
"""

import json
import time

import dagster as dg

from attribution_pipeline.automation.run_priority import priority_tags
from attribution_pipeline.assets.hourly import range_tags
from attribution_pipeline.automation.jobs import JOB_NAME, attribution_job
from attribution_pipeline.automation.schedules import trailing_window
from attribution_pipeline.core import frames
from attribution_pipeline.core.change_diff import Pending, diff, observe, rebuild_scope, short_hash
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.exports.layout import exported_hours
from attribution_pipeline.exports.reconcile import reconcile
from attribution_pipeline.exports.runner import export_chunk
from attribution_pipeline.logs import log_event
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import change_watch
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.frame_io import chunked
from attribution_pipeline.storage.journey_source import JourneyRule, journeys_of
from attribution_pipeline.storage.model_cleanup import remove_model_rows

SENSOR_NAME = "attribution_model_changes"
CLEANUP_JOB = "attribution_model_cleanup_job"
KIND_TAG = "attribution/kind"
REBUILD_KIND, CLEANUP_KIND = "model_change", "model_cleanup"
CURSOR_VERSION = 1


def clock() -> float:
    """Now (tests replace it to step through the quiet period)."""
    return time.time()


# ------------------------------------------------------------------------------------------
# the cleanup job
# ------------------------------------------------------------------------------------------


class CleanupConfig(dg.Config):
    models: list[int]  # ids deleted from 202_attribution_models


def rewrite_exports(db: Database, settings: Settings, hours: list[int], logger=None) -> tuple[int, int]:
    """Rewrite, from MySQL, the Parquet files of those of ``hours`` that have files (journeys kept from
    the files: a model's deletion does not change them); returns (hours rewritten, hours disagreeing)."""
    root = settings.export_path
    have = sorted(set(exported_hours(root)) & set(hours))
    if not have:
        return 0, 0
    engine, rule = db.engine(), JourneyRule.from_settings(settings)
    journeys = HourlyFrame.from_frame(frames.empty(frames.JOURNEYS), have, frames.JOURNEYS, name="journeys")

    def recompute(hours_, users_):
        return journeys_of(db, rule, list(hours_), None if users_ is None else list(users_), logger=logger)

    for chunk in chunked(have, settings.chunk_hours):
        db.retry.run(lambda c=chunk: export_chunk(engine, c, root=root, journeys=journeys, users=[], recompute=recompute),
                     what="rewrite exports", logger=logger)
    wrong = db.retry.run(lambda: reconcile(engine, root, have), what="reconcile exports", logger=logger)
    return len(have), wrong.height


@dg.op(out=dg.Out(dg.Nothing), description="Remove every stored row of models deleted from "
       "202_attribution_models, in bounded batches under the write-back's hour locks, then rewrite the "
       "Parquet exports of the hours they had rows in (D26).")
def remove_deleted_models(context: dg.OpExecutionContext, config: CleanupConfig, db: dg.ResourceParam[Database],
                          settings: dg.ResourceParam[Settings]):
    hours: set[int] = set()
    totals = {"snapshots_deleted": 0, "touchpoints_deleted": 0, "batches": 0, "models_skipped": 0}
    for model_id in sorted(set(config.models)):
        done = remove_model_rows(db, model_id, lock_timeout=settings.lock_timeout_seconds, logger=context.log)
        log_event(context.log, "deleted_model_rows_removed", stage="model_cleanup", model_id=model_id,
                  snapshots=done.snapshots_deleted, touchpoints=done.touchpoints_deleted, batches=done.batches,
                  hours=len(done.hours), skipped=done.skipped or None, seconds=round(done.seconds, 3))
        hours |= done.hours
        totals["snapshots_deleted"] += done.snapshots_deleted
        totals["touchpoints_deleted"] += done.touchpoints_deleted
        totals["batches"] += done.batches
        totals["models_skipped"] += bool(done.skipped)
    rewritten, wrong = rewrite_exports(db, settings, sorted(hours), logger=context.log)
    yield dg.Output(None, metadata={**totals, "hours": len(hours), "export_hours_rewritten": rewritten,
                                    "export_hours_disagreeing": wrong})


@dg.job(name=CLEANUP_JOB, tags={KIND_TAG: CLEANUP_KIND},
        description="Remove the stored rows of models deleted from 202_attribution_models (launched by the "
        "attribution_model_changes sensor, D26).")
def attribution_model_cleanup_job():
    remove_deleted_models()


# ------------------------------------------------------------------------------------------
# the sensor
# ------------------------------------------------------------------------------------------


def read_state(db: Database, logger=None) -> dict:
    def read():
        with db.engine().connect() as conn:
            return observe(change_watch.model_rows(conn), change_watch.setting_rows(conn))

    return db.retry.run(read, what="read models and settings", logger=logger)


def run_requests(pending: Pending, state: dict, settings: Settings, now: float) -> list[dg.RunRequest]:
    """The runs for ``pending`` changes (the rebuild and the cleanup; either may be absent)."""
    key = short_hash(pending.to_json())
    requests = []
    scope = rebuild_scope(pending, state)
    first, last = trailing_window(int(now), max(1, settings.model_change_lookback_days) * 24)
    if scope is not None and settings.model_change_lookback_days > 0 and last >= settings.first_hour:
        requests.append(dg.RunRequest(
            job_name=JOB_NAME, run_key=f"model-change-{key}",
            run_config={"resources": {"scope": {"config": {"users": scope.users, "models": scope.models}}}},
            tags={**range_tags(max(first, settings.first_hour), last), KIND_TAG: REBUILD_KIND,
                  "attribution/source": SENSOR_NAME, **priority_tags(REBUILD_KIND)},
        ))
    if pending.deleted:
        requests.append(dg.RunRequest(
            job_name=CLEANUP_JOB, run_key=f"model-cleanup-{key}",
            run_config={"ops": {"remove_deleted_models": {"config": {"models": sorted(pending.deleted)}}}},
            tags={KIND_TAG: CLEANUP_KIND, "attribution/source": SENSOR_NAME, **priority_tags(CLEANUP_KIND)},
        ))
    return requests


def _cursor(state: dict, pending: Pending | None) -> str:
    return json.dumps({"v": CURSOR_VERSION, "state": state, "pending": pending.to_json() if pending else None},
                      separators=(",", ":"))


@dg.sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=[attribution_job, attribution_model_cleanup_job],
    description="Every 30 s: a model created, edited (weighting_config, model_type, is_active) or deleted, or a "
    "multi-touch settings row changed? Audits each change, then, once nothing has changed for "
    "ATTRIBUTION_MODEL_CHANGE_QUIET_SECONDS, launches one attribution_job run over the last "
    "ATTRIBUTION_MODEL_CHANGE_LOOKBACK_DAYS for the affected users and models, and a cleanup run for "
    "deleted models (D26).",
)
def attribution_model_changes(context: dg.SensorEvaluationContext, db: dg.ResourceParam[Database],
                              settings: dg.ResourceParam[Settings]):
    now = clock()
    state = read_state(db, logger=context.log)
    saved = json.loads(context.cursor) if context.cursor else None
    if not saved or saved.get("v") != CURSOR_VERSION:
        return dg.SensorResult(cursor=_cursor(state, None), skip_reason=dg.SkipReason(
            f"first look: {len(state['m'])} model row(s) and {len(state['s'])} settings row(s) recorded"))
    pending = Pending.from_json(saved.get("pending"))
    changes = diff(saved["state"], state)
    if changes:
        def write():
            with db.engine().begin() as conn:
                return change_watch.record_changes(conn, changes, now=int(now))

        db.retry.run(write, what="audit model changes", logger=context.log)
        pending = pending or Pending()
        pending.add(changes, now)
        for change in changes:
            log_event(context.log, change.action, stage="model_changes", user_id=change.user_id,
                      model_id=change.model_id, change=change.metadata.get("change"))
    if pending is None:
        return dg.SensorResult(cursor=_cursor(state, None), skip_reason=dg.SkipReason("no model or settings change"))
    quiet_for = now - pending.last_seen
    if quiet_for < settings.model_change_quiet_seconds:
        return dg.SensorResult(cursor=_cursor(state, pending), skip_reason=dg.SkipReason(
            f"changes pending: waiting until nothing has changed for {settings.model_change_quiet_seconds} s "
            f"({int(quiet_for)} s so far)"))
    requests = run_requests(pending, state, settings, now)
    log_event(context.log, "model_changes_acted_on", stage="model_changes", runs=len(requests),
              users=sorted(pending.users), models=sorted(pending.models), deleted=sorted(pending.deleted))
    return dg.SensorResult(run_requests=requests, cursor=_cursor(state, None),
                           skip_reason=None if requests else dg.SkipReason(
                               "changes acted on: nothing to rewrite (lookback 0, or only models switched off)"))
