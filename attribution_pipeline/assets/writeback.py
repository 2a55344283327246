"""The write-back asset: Prosper202's snapshot and touchpoint tables, rewritten for the run's keys."""

from pathlib import Path

import dagster as dg

from attribution_pipeline.assets.hourly import MYSQL_WRITES_POOL, Hourly, run_fields, run_hours
from attribution_pipeline.assets.resources import RunScope
from attribution_pipeline.assets.visitor_journeys import visitor_users
from attribution_pipeline.assets.writeback_exports import CommittedExports, observed_hours, record_exports
from attribution_pipeline.assets.writeback_run import ChunkFrames, WritebackRun
from attribution_pipeline.assets.writeback_scopes import CHECK as SCOPED_TOTALS
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.core.hours import HOUR, chunk_hours
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import source_state
from attribution_pipeline.storage.database import Database, is_sqlite

WRITEBACK = "attribution_writeback"
OUTCOME_TAG = "attribution/outcome"
#: Tag of a run started by ``attribution resume RUN_ID``: the run it resumes.
RESUME_TAG = "attribution/resume_of"
COMMITTED_FIRST, COMMITTED_LAST = "committed_first_hour", "committed_last_hour"

CHECKS = [
    dg.AssetCheckSpec(
        "writeback_reconciliation",
        asset=WRITEBACK,
        description="Every chunk's rows, read back inside its transaction, equal the rows computed; "
        "a chunk that differs (or fails) is rolled back and keeps its old rows.",
    ),
    dg.AssetCheckSpec(
        "foreign_writes",
        asset=WRITEBACK,
        description="WARN: rows of the run's keys that someone else wrote since our last run (the PHP "
        "cron or PHP's inline rebuilds after gpx/upx conversions and subid uploads, D20). They were "
        "replaced; switch the PHP writers off (docs/operations.md, cut-over runbook).",
    ),
    dg.AssetCheckSpec(
        "held_groups",
        asset=WRITEBACK,
        description="No (user, model, hour) group was held back by a failed invariant (credit sums, "
        "journey positions, converting click, journey length, snapshot totals). Held groups keep "
        "their stored rows; each is listed with its reason.",
    ),
    SCOPED_TOTALS,
]


def attribution_writeback(context: dg.AssetExecutionContext, source_changes: HourlyFrame, conversions: HourlyFrame,
                          journeys: HourlyFrame, visitor_journeys: HourlyFrame, attribution_models: HourlyFrame,
                          credits: HourlyFrame, snapshots: HourlyFrame, db: dg.ResourceParam[Database], settings: dg.ResourceParam[Settings],
                          scope: RunScope) -> dg.MaterializeResult:
    """Writes 202_attribution_snapshots and 202_attribution_touchpoints for the keys the run owns
    (D9), chunk by chunk, each chunk atomic under named locks, read back before commit and
    committed with its audit rows (D18) and the 202_cronjob_logs stamp (D11). Groups failing an
    invariant are held (their stored rows stay) and the run ends with outcome 2 (D19). A chunk
    that cannot be committed fails the run after the others were written (outcome 2, or 1 if
    nothing was committed); a re-execution of the run skips the chunks its parents committed.
    The (user, hour) pairs ``source_changes`` does not recompute keep their rows; those it does
    are recorded with what they were computed from, in their chunk's transaction (D22). A full run's
    committed chunks are exported while the next chunk is written (D35, ``writeback_exports.py``)."""
    run_id, hours, fields = context.run.run_id, run_hours(context), run_fields(context)
    recorded = records_state(db, settings, scope)
    exports = CommittedExports(db=db, settings=settings, credits=credits, snapshots=snapshots, journeys=journeys,
                               window=(hours[0], hours[-1] + HOUR - 1), token=run_id) \
        if exports_as_committed(db, settings, scope, recorded) else None

    def committed(chunk, plan):
        record_commit(context, chunk)
        if exports is not None:
            record_exports(context, WRITEBACK, exports.submit(chunk, plan.held, plan.unchanged), fields)

    run = WritebackRun(db=db, settings=settings, scope=scope, hours=hours, run_id=run_id, logger=context.log,
                       fields=fields, resumed=committed_by_parents(context.instance, context.run),
                       on_commit=committed, record_state=recorded,
                       on_load=exports.start if exports is not None else None)

    def read(chunk):
        models = attribution_models.read(chunk)
        return ChunkFrames(models=models, conversions=conversions.read(chunk),
                           journeys=journeys.read(chunk), credits=credits.read(chunk), snapshots=snapshots.read(chunk),
                           changes=source_changes.read(chunk),  # visitor journeys only where a model uses them (D32)
                           visitor_journeys=visitor_journeys.read(chunk) if visitor_users(models) else None)

    path = Path(scope.report_path) if scope.report_path else settings.reports_path / f"{run_id}.json"
    try:
        for chunk in HourlyFrame.planned(run.hours, conversions, attribution_models, settings).chunks:
            run.run_chunk(chunk, read)
        run.finish()
    finally:  # whatever stopped the run, the report says what was committed
        try:
            run.scopes.close()
        finally:  # the queued export waits for a start that only this gives now
            if exports is not None:
                with run.stage("exports_wait"):
                    record_exports(context, WRITEBACK, exports.close(), fields)
        report = run.write_report(path)
        context.instance.add_run_tags(run_id, {OUTCOME_TAG: str(report["outcome"])})
    if run.failed_chunks or report["outcome"] == 1:
        raise dg.Failure(description=failure_text(report, run), metadata={
            "report": str(path), "outcome": report["outcome"], "db_retries": report["db_retries"],
            "committed_hours": dg.MetadataValue.json(report["committed_hours"]),
            "uncommitted_hours": dg.MetadataValue.json(report["uncommitted_hours"][:50])})
    return run.materialize_result(report, path)


def exports_as_committed(db: Database, settings: Settings, scope: RunScope, recorded: bool) -> bool:
    """Whether the run exports each chunk as it commits (D35): a full run that records what it wrote,
    on MySQL/MariaDB (SQLite, the demo's, lets one connection write at a time)."""
    return settings.export_during_writeback and recorded and scope.is_full and not is_sqlite(db.engine())


def records_state(db: Database, settings: Settings, scope: RunScope) -> bool:
    """Whether the run records what its (user, hour) pairs were computed from (D22): not for a
    run of some models (the user's other models were not recomputed), nor for journeys read from
    202_conversion_touchpoints (not fingerprinted), nor without the state table (``init-db``)."""
    if scope.models or scope.dry_run or settings.journey_source != "clicks":
        return False

    def exists():
        with db.engine().connect() as conn:
            return source_state.has_state_table(conn)

    return db.retry.run(exists, what="find attribution_source_state")


def failure_text(report: dict, run: WritebackRun) -> str:
    """Why the write-back failed, and what it committed all the same (never "nothing" when it did)."""
    failed = run.failed_chunks
    reason = failed[0]["reason"] if failed else "every group was held"
    if report["outcome"] == 1:
        return f"nothing was committed: {reason}"
    committed = ", ".join(f"{a}..{b}" for a, b in report["committed_hours"][:5])
    missing = ", ".join(f"{c['first_hour']}..{c['last_hour']}" for c in failed[:5])
    return (f"partly committed: hours {committed} are written; hours {missing} are not ({reason}). "
            "Re-execute the run (or run the same hours again): the committed chunks are not written twice.")


def record_commit(context: dg.AssetExecutionContext, chunk: tuple[int, ...]) -> None:
    """Note a committed chunk in the run's event log, where a re-execution of the run finds it."""
    context.log_event(dg.AssetObservation(asset_key=WRITEBACK, description="chunk committed",
                                          metadata={COMMITTED_FIRST: chunk[0], COMMITTED_LAST: chunk[-1]}))


def parent_runs(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The run's ancestors: Dagster re-executions and retries (``parent_run_id``) and CLI resumes
    (the ``attribution/resume_of`` tag), nearest first."""
    chain, seen = [], {run.run_id}
    parent = run.parent_run_id or run.tags.get(RESUME_TAG)
    while parent and parent not in seen:
        chain.append(parent)
        seen.add(parent)
        record = instance.get_run_by_id(parent)
        parent = (record.parent_run_id or record.tags.get(RESUME_TAG)) if record is not None else None
    return chain


def committed_by_parents(instance: dg.DagsterInstance, run: dg.DagsterRun) -> frozenset[int]:
    """Hours whose chunk a parent of ``run`` committed (empty for a first run)."""
    hours: set[int] = set()
    for parent in parent_runs(instance, run):
        for committed, _ in observed_hours(instance, parent, WRITEBACK, COMMITTED_FIRST, COMMITTED_LAST):
            hours |= committed
    return frozenset(hours)


def build(hourly: Hourly) -> list:
    """The write-back asset (its checks are yielded by the asset itself), on ``hourly``'s partitions; in
    the MySQL-writes pool, so a deployment with run-granularity pools caps the runs writing at once (D29)."""
    return [hourly.asset(kinds={"mysql"}, check_specs=CHECKS, pool=MYSQL_WRITES_POOL)(attribution_writeback)]
