"""The Parquet exports for analysts, rewritten for the run's hours after the write-back."""

import time
from dataclasses import dataclass

import dagster as dg
import polars as pl

from attribution_pipeline.assets.hourly import FRAMES_IO, Hourly, run_fields, run_hours, scope_users
from attribution_pipeline.assets.resources import RunScope
from attribution_pipeline.assets.source_changes import hours_to_export, mark_exported, unmark_exported
from attribution_pipeline.assets.writeback import WRITEBACK, committed_by_parents, parent_runs, records_state
from attribution_pipeline.assets.writeback_exports import exported_during_writeback
from attribution_pipeline.core import frames
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.core.history_gaps import hours_to_catch_up
from attribution_pipeline.core.hours import HOUR, floor_hour, hour_key, key_hour
from attribution_pipeline.exports.columns import EXPORT_TABLES
from attribution_pipeline.exports.from_run import GROUP, RunWrites
from attribution_pipeline.exports.layout import exported_hours, table_glob
from attribution_pipeline.exports.reconcile import reconcile
from attribution_pipeline.exports.runner import (
    ExportStats,
    chunk_rows,
    export_chunks,
    read_chunk,
    row_chunks,
)
from attribution_pipeline.exports.stored import touch_rows_per_hour
from attribution_pipeline.io_managers.hourly_parquet import remove_run_frames, run_lineage
from attribution_pipeline.logs import log_event
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import gap_reads
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.journey_source import JourneyRule, journeys_of

#: Hours without export files that one run catches up at most (the rest: the next runs).
CATCH_UP_HOURS = 168
#: The write-back's latest ``held_groups`` evaluations searched for this run's (other runs may have
#: evaluated it since; not found: every touchpoint is read from MySQL).
HELD_LOOKUP = 20

RECONCILIATION = dg.AssetCheckSpec(
    "export_reconciliation",
    asset="attribution_exports",
    description="Read back from the Parquet files after writing: every hour of the run has its four "
    "files, its snapshots' rows, revenue and cost, and its touchpoints' revenue and cost shares, "
    "equal the global snapshots MySQL stores for the hour (exact DECIMAL(12,4) units), and its click_spend "
    "the clicks and spend of the hour's 202_clicks rows. Red: analysts would see other totals than the "
    "dashboard; re-materialise the hours named.",
)


def attribution_exports(context: dg.AssetExecutionContext, source_changes: HourlyFrame, journeys: HourlyFrame,
                        credits: HourlyFrame, snapshots: HourlyFrame, db: dg.ResourceParam[Database],
                        settings: dg.ResourceParam[Settings], scope: RunScope) -> dg.MaterializeResult:
    """Hive-partitioned Parquet for analysts (DuckDB): ``snapshots``, ``touchpoints``,
    ``journeys`` and ``click_spend`` (every click of the hour in ``202_clicks``: its spend) under
    ``$ATTRIBUTION_EXPORT_DIR/<table>/date=YYYY-MM-DD/hour=HH/part.parquet``,
    one file per table and hour, replaced atomically, built from every row stored for the hour
    after the write-back's commit (all users and models, so a ``--user`` run or an inactive model
    never truncates an hour) and from the run's ``journeys`` (of the (user, hour) pairs it recomputed,
    ``source_changes``: the others' are kept from the files, D22). The touchpoints this run's write-back
    wrote come from its ``credits`` (checked against the stored snapshot rows, ``snapshots`` being
    what it computed), the others from MySQL. Money is DECIMAL; no personal data
    (docs/exports.md). The last step of a run: when it succeeds, the run's own frames, and those
    of the failed runs it re-executes, are removed (when it fails they stay, so that a
    re-execution from failure finds them)."""
    inputs = RunFrames(source_changes=source_changes, journeys=journeys, credits=credits, snapshots=snapshots)
    result = export_hours(context, inputs, db, settings, scope)
    remove_run_frames(settings.frames_path, run_lineage(context.instance, context.run))
    return result


@dataclass(frozen=True)
class RunFrames:
    """The run's frames the export asset declares as inputs."""

    source_changes: HourlyFrame
    journeys: HourlyFrame
    credits: HourlyFrame
    snapshots: HourlyFrame


def export_hours(context: dg.AssetExecutionContext, inputs: RunFrames, db: Database, settings: Settings,
                 scope: RunScope) -> dg.MaterializeResult:
    """The exports of the run's hours, then their reconciliation with MySQL (only the hours exported)."""
    # The hours this run exports: any subset of the run's hours may be chosen here (the others keep
    # their files); everything below works on this list only.
    run_range = run_hours(context)
    root = settings.export_path
    if scope.dry_run:
        return dg.MaterializeResult(
            metadata={"dry_run": True, "files": 0, "hours": len(run_range), "export_dir": dg.MetadataValue.path(str(root))},
            check_results=[dg.AssetCheckResult(check_name="export_reconciliation", passed=True,
                                               description="dry run: nothing exported")],
        )
    started = time.perf_counter()
    # only the hours with a (user, hour) written since their last export (D22); the others keep their files
    run = run_writes(context, inputs.credits, inputs.snapshots, db, settings, scope)
    # the export materialised without the write-back (UI, a re-export): every hour of the run
    hours, pending = hours_to_export(db, run_range, records_state=records_state(db, settings, scope),
                                     logger=context.log) if run is not None \
        else (run_range, None)
    engine = db.engine()
    users = None if scope.is_full else scope_users(db, scope)
    rule = JourneyRule.from_settings(settings)
    journeys, skipped = journeys_input(inputs)

    def recompute(hours_, users_):
        return journeys_of(db, rule, list(hours_), None if users_ is None else list(users_), logger=context.log)

    def read(chunk):
        return db.retry.run(
            lambda: read_chunk(engine, chunk, root=root, journeys=journeys, users=users, recompute=recompute, run=run,
                               skipped=skipped),
            what=f"export reads {hour_key(chunk[0])}..{hour_key(chunk[-1])}", logger=context.log,
        )

    # hours the write-back exported as its chunks committed (D35): counted here, and reconciled below
    early = exported_during_writeback(context.instance, [context.run.run_id, *parent_runs(context.instance, context.run)],
                                      WRITEBACK)
    total = early.stats
    for chunk, stats in export_chunks(export_chunk_hours(context, db, settings, hours), root=root, read=read):
        total.add(stats)
        log_event(context.log, "export_chunk", stage="exports", first_hour=hour_key(chunk[0]),
                  last_hour=hour_key(chunk[-1]), files=stats.files, **{f"rows_{t}": n for t, n in stats.rows.items()},
                  **stats.sources, **run_fields(context))
    marked = mark_exported(db, pending, hours, logger=context.log)
    exported = sorted(set(hours) | early.hours)
    caught_up, remaining = catch_up(context, db, settings, sorted(set(exported) | early.parents), recompute, total)
    # an hour the write-back exported and read back is not read again, unless exported again here
    checked = sorted(set(hours) | (early.hours - early.reconciled) | early.parents | set(caught_up))
    done = early.reconciled - set(checked)
    check = reconciliation(context, db, root, checked, started, done, [w for w in early.wrong if w[0] in done])
    if not check.passed:  # the next run exports the hours that disagree again
        unmark_exported(db, [key_hour(k) for k in check.metadata["failing_hours"].value], logger=context.log)
    return dg.MaterializeResult(check_results=[check], metadata={
        "hours": total.hours,
        "hours_exported": len(exported),
        "hours_exported_by_writeback": len(early.hours),
        "hours_unchanged": len(set(run_range) - set(exported)),
        "pairs_marked_exported": marked,
        "export_chunks": total.chunks,
        "files": total.files,
        **{f"rows_{t}": n for t, n in total.rows.items()},
        **total.journeys,
        **total.sources,
        "touchpoints_from_run_frames": run is not None,
        "journey_users_recomputed": len(users) if users is not None else 0,
        "hours_caught_up": len(caught_up),
        "hours_left_to_catch_up": remaining,
        "unreconciled_snapshots": total.unreconciled_snapshots,
        "seconds": round(time.perf_counter() - started, 3),
        "export_dir": dg.MetadataValue.path(str(root)),
        "duckdb": dg.MetadataValue.md(
            f"`attribution query \"SELECT * FROM snapshots LIMIT 10\"` or, in any DuckDB:\n\n"
            f"`SELECT * FROM read_parquet('{table_glob(root, 'snapshots')}', hive_partitioning = true)`"
        ),
    })


def reconciliation(context: dg.AssetExecutionContext, db: Database, root, checked: list[int], started: float,
                   reconciled: set[int] = frozenset(), known: list[tuple[int, str]] = ()) -> dg.AssetCheckResult:
    """The ``export_reconciliation`` result: the files of the hours ``checked`` (those exported)
    read back and compared with the snapshot totals MySQL stores for them, with the hours the
    write-back exported and read back as each chunk committed (``reconciled``, ``known`` the ones
    of them that disagreed, D35)."""
    wrong = db.retry.run(lambda: reconcile(db.engine(), root, checked), what="reconcile exports", logger=context.log)
    wrong = pl.concat([wrong, pl.DataFrame(list(known), schema=wrong.schema, orient="row")]).sort("date_hour")
    checked = sorted(set(checked) | reconciled)
    failing = [hour_key(h) for h in wrong.get_column("date_hour").to_list()]
    log_event(context.log, "export_reconciled", stage="exports", failing_hours=len(failing),
              latency_ms=round((time.perf_counter() - started) * 1000), **run_fields(context))
    return dg.AssetCheckResult(
        check_name="export_reconciliation",
        passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{len(failing)} hour(s) of the export disagree with MySQL ({', '.join(failing[:5])}"
                     f"{', ...' if len(failing) > 5 else ''})" if failing
                     else f"{len(checked)} hour(s): files and MySQL agree"),
        metadata={
            "hours_checked": len(checked),
            "failing_hour_count": len(failing),
            "failing_hours": dg.MetadataValue.json(failing[:100]),
            "sample": dg.MetadataValue.json([{"hour": hour_key(h), "reason": r} for h, r in wrong.head(20).iter_rows()]),
        },
    )


def journeys_input(inputs: RunFrames) -> tuple[HourlyFrame, pl.DataFrame | None]:
    """The run's ``journeys`` and the (user, hour) pairs it did not recompute (D22: no journeys of
    theirs in the frame; ``source_changes``), None when it recomputed all. An hour whose
    ``source_changes`` frame is gone counts as one whose journeys are gone (recomputed)."""
    changes, journeys = inputs.source_changes, inputs.journeys
    if not changes.missing:
        skipped = changes.collect().filter(~pl.col("recompute")).select("user_id", "date_hour")
        return journeys, (skipped if skipped.height else None)
    known = [h for h in changes.hours if h not in set(changes.missing)]
    skipped = changes.read(known).filter(~pl.col("recompute")).select("user_id", "date_hour") if known else None
    unknown = HourlyFrame(journeys.hours, lambda chunk, _stats: journeys.read(chunk), journeys.schema,
                          name=journeys.name, missing=sorted(set(journeys.missing) | set(changes.missing)))
    return unknown, (skipped if skipped is not None and skipped.height else None)


def run_writes(context: dg.AssetExecutionContext, credits: HourlyFrame, snapshots: HourlyFrame, db: Database,
               settings: Settings, scope: RunScope) -> RunWrites | None:
    """What this run's write-back wrote (``exports/from_run.py``), or None when it wrote nothing
    in this run (the export materialised alone, a re-execution of the export step only) or held
    more groups than its ``held_groups`` check lists: every touchpoint is then read from MySQL.
    Hours a parent run committed (a resumed run) are not the run's own."""
    held = held_groups(context)
    if held is None:
        return None
    hours = run_hours(context)
    token = context.run.run_id if records_state(db, settings, scope) else None
    return RunWrites(credits=credits, snapshots=snapshots,
                     hours=frozenset(hours) - committed_by_parents(context.instance, context.run),
                     window=(hours[0], hours[-1] + HOUR - 1), held=held, token=token)


def held_groups(context: dg.AssetExecutionContext) -> pl.DataFrame | None:
    """``GROUP`` of the groups this run's write-back held, from its ``held_groups`` check (evaluated
    with its materialisation), or None when the write-back did not materialise in this run or its
    check lists only some of them."""
    key = dg.AssetCheckKey(dg.AssetKey(WRITEBACK), "held_groups")
    records = context.instance.event_log_storage.get_asset_check_execution_history(key, limit=HELD_LOOKUP)
    for record in records:
        event = record.event.dagster_event if record.run_id == context.run.run_id and record.event else None
        data = event.event_specific_data if event is not None else None
        if getattr(data, "check_name", None) != "held_groups" or getattr(data, "metadata", None) is None:
            continue  # another run's, or only planned
        listed, count = data.metadata.get("held"), data.metadata.get("held_groups")
        if listed is None or count is None or len(listed.value) < count.value:
            return None  # not all listed: every touchpoint from MySQL
        listed = listed.value
        return pl.DataFrame([{k: int(g[k]) for k in GROUP} for g in listed], schema={k: pl.Int64 for k in GROUP})
    return None


def export_chunk_hours(context: dg.AssetExecutionContext, db: Database, settings: Settings,
                       hours: list[int]) -> list[tuple[int, ...]]:
    """``hours`` in chunks of at most :func:`chunk_rows` touchpoint rows within the run's memory
    budget (``ATTRIBUTION_MEMORY_BUDGET_MB``; an hour with more is a chunk alone) and at most
    ``ATTRIBUTION_CHUNK_HOURS`` hours, counted from the snapshots MySQL stores
    (``SUM(attributed_clicks)`` per hour: no touchpoint is read)."""
    if not hours:
        return []
    rows = db.retry.run(lambda: touch_rows_per_hour(db.engine(), hours), what="count export rows",
                        logger=context.log)
    return row_chunks(hours, rows, max_rows=chunk_rows(settings.memory_budget_mb), max_hours=settings.chunk_hours)


def catch_up(context: dg.AssetExecutionContext, db: Database, settings: Settings, hours: list[int], recompute,
             total: ExportStats) -> tuple[list[int], int]:
    """Export the hours that have snapshots in MySQL but not every export file, outside the run's
    own hours: those committed by a run that failed or was killed before its exports (D19). At most
    a week of them per run (``CATCH_UP_HOURS``), the newest first, exported chunk by chunk; the rest
    are left to the next runs (and named by the gap scan meanwhile). Every user's rows, journeys
    recomputed."""
    root, engine = settings.export_path, db.engine()

    def find():
        with engine.connect() as conn:
            stored = gap_reads.snapshot_hours(conn, settings.first_hour, floor_hour(int(time.time())) + HOUR)
        return hours_to_catch_up(stored, {t: exported_hours(root, t) for t in EXPORT_TABLES}, hours, CATCH_UP_HOURS)

    todo, remaining = db.retry.run(find, what="find hours without exports", logger=context.log)
    if not todo:
        return [], remaining
    absent = HourlyFrame(todo, lambda chunk, _stats: frames.empty(frames.JOURNEYS), frames.JOURNEYS, name="journeys",
                         missing=todo)

    def read(chunk):
        return db.retry.run(lambda: read_chunk(engine, chunk, root=root, journeys=absent, users=None, recompute=recompute),
                            what=f"export reads {hour_key(chunk[0])}..{hour_key(chunk[-1])}", logger=context.log)

    for chunk, stats in export_chunks(export_chunk_hours(context, db, settings, todo), root=root, read=read):
        total.add(stats)
        log_event(context.log, "export_caught_up", stage="exports", first_hour=hour_key(chunk[0]),
                  last_hour=hour_key(chunk[-1]), files=stats.files, remaining=remaining, **run_fields(context))
    return todo, remaining


def build(hourly: Hourly) -> list:
    """The export asset: after the write-back, with the run's source changes, journeys, credits and
    snapshots as its declared inputs."""
    return [hourly.asset(
        deps=["attribution_writeback"],
        ins={name: dg.AssetIn(input_manager_key=FRAMES_IO)
             for name in ("source_changes", "journeys", "credits", "snapshots")},
        kinds={"parquet", "duckdb"},
        check_specs=[RECONCILIATION],
    )(attribution_exports)]
