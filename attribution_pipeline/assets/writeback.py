"""The write-back asset: Prosper202's snapshot and touchpoint tables, rewritten for the run's keys."""

from pathlib import Path

import dagster as dg

from attribution_pipeline.assets.hourly import Hourly, run_fields, run_hours
from attribution_pipeline.assets.resources import RunScope
from attribution_pipeline.assets.writeback_run import ChunkFrames, WritebackRun
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.core.hours import chunk_hours
from attribution_pipeline.io_managers.hourly_parquet import remove_private_frames
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage.database import Database

WRITEBACK = "attribution_writeback"
OUTCOME_TAG = "attribution/outcome"

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
]


def attribution_writeback(context: dg.AssetExecutionContext, conversions: HourlyFrame, journeys: HourlyFrame,
                          attribution_models: HourlyFrame, credits: HourlyFrame, snapshots: HourlyFrame,
                          db: dg.ResourceParam[Database], settings: dg.ResourceParam[Settings],
                          scope: RunScope) -> dg.MaterializeResult:
    """Writes 202_attribution_snapshots and 202_attribution_touchpoints for the keys the run owns
    (D9), chunk by chunk, each chunk atomic under named locks and read back before commit; then
    one audit row per (user, model) (D18) and 202_cronjob_logs id 2 (D11). Groups failing an
    invariant are held (their stored rows stay) and the run ends with outcome 2 (D19)."""
    run_id = context.run.run_id
    run = WritebackRun(db=db, settings=settings, scope=scope, hours=run_hours(context), run_id=run_id,
                       logger=context.log, fields=run_fields(context))
    for chunk in chunk_hours(run.hours, settings.chunk_hours):
        with run.stage("read_frames"):
            frames = ChunkFrames(models=attribution_models.read(chunk), conversions=conversions.read(chunk),
                                 journeys=journeys.read(chunk), credits=credits.read(chunk),
                                 snapshots=snapshots.read(chunk))
        run.process(chunk, frames)
    run.finish()
    path = Path(scope.report_path) if scope.report_path else settings.reports_path / f"{run_id}.json"
    report = run.write_report(path)
    context.instance.add_run_tags(run_id, {OUTCOME_TAG: str(report["outcome"])})
    if report["outcome"] == 1:
        if not scope.is_full:  # the exports will not run: nobody reads the run's private frames any more
            remove_private_frames(settings.frames_path, run_id)
        reason = run.rolled_back[0]["reason"] if run.rolled_back else "every group was held"
        raise dg.Failure(description=f"nothing was committed: {reason}", metadata={"report": str(path)})
    return run.materialize_result(report, path)


def build(hourly: Hourly) -> list:
    """The write-back asset (its checks are yielded by the asset itself), on ``hourly``'s partitions."""
    return [hourly.asset(kinds={"mysql"}, check_specs=CHECKS)(attribution_writeback)]
