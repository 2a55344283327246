"""The per-run resource: what one run covers beyond its hours, and the lock that says it is alive.

The other resources are plain objects built from the settings in ``definitions.py``: ``db``
(:class:`~attribution_pipeline.storage.database.Database`), ``settings``
(:class:`~attribution_pipeline.settings.Settings`), ``alerts``
(:class:`~attribution_pipeline.automation.alerts.Alerter`) and the frames IO manager. They have no
config schema, so nothing secret reaches Dagster's run config or snapshots.
"""

import time
from contextlib import contextmanager

import dagster as dg

from attribution_pipeline.automation.jobs import JOB_NAME, PIPELINE_KEYS
from attribution_pipeline.logs import log_event, stdlib_logger
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.run_locks import RunLock, run_is_alive

#: A run younger than this that has not said it holds its lock is never declared dead (it may not
#: have taken its lock yet). A run tagged ``LOCK_TAG`` is dead as soon as its lock is free.
START_GRACE_SECONDS = 120
LOCK_TAG = "attribution/liveness_lock"
#: Retries made by the database object when each run started (the report counts the run's own).
_RETRIES_AT_START: dict[str, int] = {}


class RunScope(dg.ConfigurableResource):
    """What one run covers beyond its hours (CLI ``--user``/``--model``/``--dry-run``).

    Empty lists mean every non-deleted user and every active model. A dry run computes everything,
    compares it with the stored rows and writes nothing (D20).

    Every step of the pipeline uses this resource, so Dagster opens it once when a run starts and
    closes it when the run ends (:meth:`yield_for_execution`): meanwhile the run holds its
    liveness lock (``storage/run_locks.py``), after first marking FAILED every run of the
    instance that is still STARTED although its lock is free (its process died: SIGKILL, a lost
    host). The run-failure sensor then alerts about it.
    """

    users: list[int] = []
    models: list[int] = []
    dry_run: bool = False
    full: bool = False  # recompute and rewrite every (user, hour), changed or not (``--full``, D22)
    report_path: str = ""  # where the run writes its report (JSON); default under the reports folder
    db: dg.ResourceDependency[Database]
    settings: dg.ResourceDependency[Settings]

    @property
    def is_full(self) -> bool:
        return not self.users and not self.models and not self.dry_run

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext):
        run_id = context.run.run_id if context.run is not None else None
        lock = None
        if run_id and context.instance is not None:
            lock_dir = self.settings.home / "run_locks"
            try:
                self.db.retry.run(lambda: mark_dead_runs(context.instance, self.db, lock_dir, run_id, context.log),
                                  what="dead-run sweep", logger=context.log)
                _RETRIES_AT_START[run_id] = self.db.retry.counter.total
                lock = RunLock(self.db.engine(), run_id, lock_dir)
                if self.db.retry.run(lock.acquire, what="run lock", logger=context.log):
                    context.instance.add_run_tags(run_id, {LOCK_TAG: "held"})
            except Exception as exc:  # noqa: BLE001 - liveness is bookkeeping: it never stops a run
                log_event(context.log, "run_lock_unavailable", level="warning", error=type(exc).__name__,
                          run_id=run_id)
                lock = None
        try:
            yield self
        finally:
            if lock is not None:
                lock.release()
            _RETRIES_AT_START.pop(run_id, None)


def _still_dead(instance: dg.DagsterInstance, db: Database, run_id: str, lock_dir) -> bool:
    """A second look a moment later: a run that just released its lock at its end is SUCCESS by now."""
    time.sleep(1.0)
    run = instance.get_run_by_id(run_id)
    return (run is not None and run.status == dg.DagsterRunStatus.STARTED
            and not run_is_alive(db.engine(), run_id, lock_dir))


def run_retries(db: Database, run_id: str) -> int:
    """Database operations retried since the run ``run_id`` started (in this process)."""
    return db.retry.counter.total - _RETRIES_AT_START.get(run_id, db.retry.counter.total)


def is_pipeline_run(run: dg.DagsterRun) -> bool:
    """Does ``run`` execute a step of the hourly pipeline (any job, UI runs included)? Those runs
    hold a liveness lock (every step uses this resource); a run of checks alone does not."""
    return run.job_name == JOB_NAME or bool(run.asset_selection and PIPELINE_KEYS & set(run.asset_selection))


def mark_dead_runs(instance: dg.DagsterInstance, db: Database, lock_dir, current_run_id: str | None,
                   logger=None, now: float | None = None) -> list[str]:
    """Mark FAILED every STARTED pipeline run (other than ``current_run_id``) older than the grace
    period whose liveness lock is free; return their run ids."""
    now = time.time() if now is None else now
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    marked = []
    for record in records:
        run = record.dagster_run
        started = record.start_time or (record.create_timestamp.timestamp() if record.create_timestamp else now)
        young = now - started < START_GRACE_SECONDS and LOCK_TAG not in run.tags
        if run.run_id == current_run_id or not is_pipeline_run(run) or young:
            continue
        if run_is_alive(db.engine(), run.run_id, lock_dir) or not _still_dead(instance, db, run.run_id, lock_dir):
            continue
        instance.report_run_failed(run, message="the run's process is gone (its liveness lock is free: killed, "
                                   "or its host died); rows it committed stay, the others were never written. "
                                   "Run the same hours again (docs/operations.md).")
        log_event(logger or stdlib_logger, "dead_run_marked_failed", level="warning", dead_run_id=run.run_id,
                  marked_by=current_run_id or "gap scan")
        marked.append(run.run_id)
    return marked
