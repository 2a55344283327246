"""The write-back asset: Prosper202's snapshot and touchpoint tables, rewritten for the run's keys."""

import json
import shutil
import time
from pathlib import Path

import dagster as dg
import polars as pl
from sqlalchemy.exc import SQLAlchemyError

from attribution_pipeline import invariants
from attribution_pipeline.assets.common import hourly_asset, run_fields, run_hours
from attribution_pipeline.db import attribution_home, with_retries
from attribution_pipeline.errors import AttributionError
from attribution_pipeline.frames import HourlyFrame, chunk_hours
from attribution_pipeline.io_managers.hourly_parquet import RUNS_DIR
from attribution_pipeline.logs import log_event
from attribution_pipeline.partitions import HOUR, hour_key
from attribution_pipeline.resources import DatabaseResource, PipelineSettings, RunScope
from attribution_pipeline.writeback import (
    FOREIGN,
    GROUP,
    ChunkWrite,
    audit_rows,
    compare_with_stored,
    finish_run,
    write_chunk,
)

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
        "replaced; switch the PHP writers off (README, cut-over runbook).",
    ),
    dg.AssetCheckSpec(
        "held_groups",
        asset=WRITEBACK,
        description="No (user, model, hour) group was held back by a failed invariant (credit sums, "
        "journey positions, converting click, journey length, snapshot totals). Held groups keep "
        "their stored rows; each is listed with its reason.",
    ),
]


def reports_dir() -> Path:
    return attribution_home() / "reports"


def report_path(run_id: str) -> Path:
    return reports_dir() / f"{run_id}.json"


def _run_summary(committed: list[pl.DataFrame]) -> pl.DataFrame:
    """Per (user, model): batches, hours, clicks, conversions, revenue, cost of committed snapshots."""
    if not committed:
        return pl.DataFrame(schema={"user_id": pl.Int64, "model_id": pl.Int64})
    snaps = pl.concat(committed)
    return (
        snaps.sort(["user_id", "model_id", "date_hour"])
        .group_by(["user_id", "model_id"], maintain_order=True)
        .agg(
            batches=pl.col("chunk").n_unique(),
            hours_processed=pl.len(),
            clicks=pl.col("attributed_clicks").sum(),
            conversions=pl.col("attributed_conversions").sum(),
            revenue=pl.col("revenue").cum_sum().last(),
            cost=pl.col("cost").cum_sum().last(),
        )
    )


@hourly_asset(
    kinds={"mysql"},
    check_specs=CHECKS,
)
def attribution_writeback(
    context: dg.AssetExecutionContext,
    conversions: HourlyFrame,
    journeys: HourlyFrame,
    attribution_models: HourlyFrame,
    credits: HourlyFrame,
    snapshots: HourlyFrame,
    db: DatabaseResource,
    settings: PipelineSettings,
    scope: RunScope,
) -> dg.MaterializeResult:
    """Writes 202_attribution_snapshots and 202_attribution_touchpoints for the keys the run owns
    (D9), chunk by chunk, each chunk atomic under a named lock and read back before commit; then
    one audit row per (user, model) (D18) and 202_cronjob_logs id 2 (D11). Groups failing an
    invariant are held (their stored rows stay) and the run ends with outcome 2 (D19)."""
    hours = run_hours(context)
    fields = run_fields(context)
    engine = db.engine()
    now = int(time.time())
    lookback_start, lookback_end = hours[0], hours[-1] + HOUR - 1

    held_parts: list[pl.DataFrame] = []
    foreign_parts: list[pl.DataFrame] = []
    rolled_back: list[dict] = []
    committed: list[pl.DataFrame] = []
    dry_rows: list[pl.DataFrame] = []
    skipped: dict[int, dict] = {}
    totals = {"conversions": 0, "snapshots_written": 0, "touchpoints_written": 0, "snapshots_deleted": 0,
              "touchpoints_deleted": 0, "journey_touches_written": 0, "chunks_committed": 0}
    by_model: dict[int, dict[str, int]] = {}
    stage_seconds: dict[str, float] = {}
    started = time.perf_counter()

    def timed(stage: str, since: float) -> float:
        now_ = time.perf_counter()
        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + now_ - since
        return now_

    for chunk in chunk_hours(hours, settings.chunk_hours):
        mark = time.perf_counter()
        models = attribution_models.read(chunk)
        for row in models.filter(~pl.col("is_valid")).unique(subset="model_id").iter_rows(named=True):
            skipped[row["model_id"]] = {"model_id": row["model_id"], "user_id": row["user_id"],
                                        "slug": row["model_slug"], "reason": row["error"]}
        owned = models.filter(pl.col("is_valid")).select("model_id", "user_id").unique()
        conv = conversions.read(chunk)
        jour = journeys.read(chunk)
        cred = credits.read(chunk)
        snap = snapshots.read(chunk)
        totals["conversions"] += int((conv["click_rows"] > 0).sum())
        mark = timed("read_frames", mark)
        held = invariants.held_groups(conversions=conv, journeys=jour, credits=cred, snapshots=snap,
                                      models=models, touch_cap=settings.touch_cap)
        mark = timed("invariants", mark)
        keys = held.select(GROUP).unique()
        plan = ChunkWrite(
            hours=chunk,
            owned=owned,
            snapshots=snap.join(keys, on=GROUP, how="anti"),
            credits=cred.join(keys, on=GROUP, how="anti"),
            held=held,
            lookback_start=lookback_start,
            lookback_end=lookback_end,
            journeys=_journeys_to_persist(jour, held) if settings.persist_journeys and settings.journey_source == "clicks" else None,
        )
        if scope.dry_run:
            def compare():
                with engine.connect() as conn:
                    return compare_with_stored(conn, plan)

            dry_rows.append(with_retries(compare, what="dry-run comparison", logger=context.log))
            held_parts.append(held)
            continue
        try:
            outcome = with_retries(
                lambda: write_chunk(engine, plan, now=now, batch_rows=settings.write_batch_rows,
                                    lock_timeout=settings.lock_timeout_seconds),
                what=f"write {hour_key(chunk[0])}..{hour_key(chunk[-1])}", logger=context.log,
            )
        except (AttributionError, SQLAlchemyError) as exc:
            reason = f"chunk rolled back: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            rolled_back.append({"first_hour": hour_key(chunk[0]), "last_hour": hour_key(chunk[-1]), "reason": reason})
            log_event(context.log, "chunk_rolled_back", level="error", stage="writeback",
                      first_hour=hour_key(chunk[0]), last_hour=hour_key(chunk[-1]), error=type(exc).__name__, **fields)
            all_groups = snap.select(GROUP).join(owned, on=["model_id", "user_id"], how="semi")
            held_parts.append(all_groups.with_columns(reason=pl.lit(reason)).cast(invariants.HELD))
            continue
        held_parts.append(held)
        if outcome.foreign is not None:
            foreign_parts.append(outcome.foreign)
        committed.append(plan.snapshots.with_columns(chunk=pl.lit(chunk[0])))
        totals["chunks_committed"] += 1
        for key in ("snapshots_written", "touchpoints_written", "snapshots_deleted", "touchpoints_deleted",
                    "journey_touches_written"):
            totals[key] += getattr(outcome, key)
        for model_id, counts in outcome.by_model.items():
            acc = by_model.setdefault(model_id, {"snapshots": 0, "touchpoints": 0})
            acc["snapshots"] += counts["snapshots"]
            acc["touchpoints"] += counts["touchpoints"]
        for stage, seconds in outcome.stage_seconds.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
        log_event(context.log, "chunk_committed", stage="writeback", first_hour=hour_key(chunk[0]),
                  last_hour=hour_key(chunk[-1]), snapshots=outcome.snapshots_written,
                  touchpoints=outcome.touchpoints_written, latency_ms=round(outcome.seconds * 1000, 1),
                  stage_ms={k: round(v * 1000, 1) for k, v in outcome.stage_seconds.items()}, **fields)

    held_all = pl.concat(held_parts) if held_parts else pl.DataFrame(schema=invariants.HELD)
    held_list = [
        {**r, "hour": hour_key(r["date_hour"])} for r in held_all.head(500).iter_rows(named=True)
    ]
    foreign = pl.concat(foreign_parts) if foreign_parts else pl.DataFrame(schema=FOREIGN)
    foreign_list = [{**r, "hour": hour_key(r["date_hour"])} for r in foreign.head(100).iter_rows(named=True)]
    summary = _run_summary(committed)
    if committed and not scope.dry_run:
        audits = audit_rows(summary, lookback_start=lookback_start, lookback_end=lookback_end, now=now)
        with_retries(lambda: finish_run(engine, audits, now=now, touch_cron_log=True), what="audit", logger=context.log)
        for row in summary.iter_rows(named=True):
            log_event(context.log, "attribution_job", stage="writeback", model_id=row["model_id"],
                      user_id=row["user_id"], batches=row["batches"], hours_processed=row["hours_processed"],
                      clicks=row["clicks"], conversions=row["conversions"], revenue=round(row["revenue"], 4),
                      cost=round(row["cost"], 4), window=f"{lookback_start}-{lookback_end}", **fields)

    outcome_code = 0 if (held_all.height == 0 and not skipped) else 2
    if not scope.dry_run and not committed and (rolled_back or held_all.height):
        outcome_code = 1
    report = {
        "run_id": context.run.run_id,
        "first_hour": hour_key(hours[0]),
        "last_hour": hour_key(hours[-1]),
        "hours": len(hours),
        "dry_run": scope.dry_run,
        "outcome": outcome_code,
        **totals,
        "rows_by_model": {str(k): v for k, v in sorted(by_model.items())},
        "skipped_models": list(skipped.values()),
        "held_groups": held_all.height,
        "held": held_list,
        "rolled_back_chunks": rolled_back,
        "foreign_rows": foreign.height,
        "seconds": round(time.perf_counter() - started, 3),
        "stage_seconds": {k: round(v, 3) for k, v in sorted(stage_seconds.items())},
    }
    if scope.dry_run:
        comparison = pl.concat(dry_rows) if dry_rows else pl.DataFrame(schema={**{g: pl.Int64 for g in GROUP}, "status": pl.String})
        report["comparison"] = [{**r, "hour": hour_key(r["date_hour"])} for r in comparison.iter_rows(named=True)]
        report["comparison_counts"] = dict(comparison.group_by("status").len().iter_rows())
    path = Path(scope.report_path) if scope.report_path else report_path(context.run.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))

    if not scope.is_full:
        shutil.rmtree(settings.frames_path() / RUNS_DIR / context.run.run_id, ignore_errors=True)
    context.instance.add_run_tags(context.run.run_id, {OUTCOME_TAG: str(outcome_code)})
    log_event(context.log, "writeback_done", stage="writeback", outcome=outcome_code,
              held_groups=held_all.height, rolled_back_chunks=len(rolled_back), skipped_models=len(skipped),
              **{k: v for k, v in totals.items()}, **fields)
    if outcome_code == 1:
        raise dg.Failure(
            description=f"nothing was committed: {rolled_back[0]['reason'] if rolled_back else 'every group was held'}",
            metadata={"report": str(path)},
        )
    return dg.MaterializeResult(
        metadata={
            **totals,
            "hours": len(hours),
            "outcome": outcome_code,
            "dry_run": scope.dry_run,
            "held_groups": held_all.height,
            "rolled_back_chunks": len(rolled_back),
            "skipped_models": len(skipped),
            "foreign_rows": foreign.height,
            "rows_by_model": dg.MetadataValue.json(report["rows_by_model"]),
            "report": str(path),
            "seconds": report["seconds"],
            **{f"seconds_{k}": round(v, 3) for k, v in sorted(stage_seconds.items())},
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="writeback_reconciliation",
                passed=not rolled_back,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"chunks_committed": totals["chunks_committed"], "chunks_rolled_back": len(rolled_back),
                          "rolled_back": dg.MetadataValue.json(rolled_back[:50])},
            ),
            dg.AssetCheckResult(
                check_name="foreign_writes",
                passed=foreign.height == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"foreign_rows": foreign.height, "sample": dg.MetadataValue.json(foreign_list[:20]),
                          "failing_hours": dg.MetadataValue.json(sorted({f["hour"] for f in foreign_list})[:100])},
                description=f"{foreign.height} stored row(s) of this run's keys were written by someone else"
                if foreign.height else "no foreign writes",
            ),
            dg.AssetCheckResult(
                check_name="held_groups",
                passed=held_all.height == 0,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"held_groups": held_all.height, "held": dg.MetadataValue.json(held_list[:100]),
                          "failing_hours": dg.MetadataValue.json(sorted({h["hour"] for h in held_list})[:100])},
            ),
        ],
    )


def _journeys_to_persist(journeys: pl.DataFrame, held: pl.DataFrame) -> pl.DataFrame:
    """Multi-touch journeys of the chunk, minus those of (user, hour) groups held back."""
    return journeys.filter(pl.col("multi_touch")).join(
        held.select("user_id", "date_hour").unique(), on=["user_id", "date_hour"], how="anti"
    )
