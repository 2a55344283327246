"""Extract assets: the active models of each user and the conversions of the hours."""

import dagster as dg

from attribution_pipeline import extract, frames
from attribution_pipeline.db import with_retries
from attribution_pipeline.assets.common import hourly_frame_asset, run_fields, run_hours, scope_users
from attribution_pipeline.frames import HourlyFrame
from attribution_pipeline.logs import log_event
from attribution_pipeline.models import models_frame, parse_model_row
from attribution_pipeline.partitions import hour_key
from attribution_pipeline.resources import DatabaseResource, PipelineSettings, RunScope


@hourly_frame_asset(
    kinds={"polars", "sql"},
    check_specs=[
        dg.AssetCheckSpec(
            "valid_models",
            asset="attribution_models",
            description="WARN: every active model row of the run's users passes Prosper202's validation "
            "(D6: invalid ones are skipped, their stored rows untouched, and named here with the reason).",
        )
    ],
)
def attribution_models(
    context: dg.AssetExecutionContext, db: DatabaseResource, settings: PipelineSettings, scope: RunScope
):
    """The active models of each selected, non-deleted user, validated (spec 3.6; D6, D7, D10).

    One row per (hour, model), so any hour of any later step knows the models it was computed with.
    Invalid rows are kept with ``is_valid = false`` and their message; they are never computed and
    their stored rows are never touched (D9). ``algorithmic`` models are computed as last touch.
    """
    hours = run_hours(context)
    wanted_users = scope_users(db, scope)

    def read():
        with db.engine().connect() as conn:
            found = [] if wanted_users == [] else extract.active_users(conn, wanted_users)
            return found, extract.model_rows(conn, found)

    users, rows = with_retries(read, what="read models", logger=context.log)
    if scope.models:
        chosen = set(scope.models)
        rows = [r for r in rows if int(r["model_id"]) in chosen]
    specs = [parse_model_row(r) for r in rows]
    table = models_frame(specs, hours)
    invalid = [s for s in specs if not s.is_valid]
    algorithmic = [s.model_id for s in specs if s.is_valid and s.model_type == "algorithmic"]
    log_event(context.log, "models_loaded", stage="attribution_models", models=len(specs),
              invalid=len(invalid), users=len(users), **run_fields(context))
    yield dg.Output(
        HourlyFrame.from_frame(table, hours, frames.MODELS, chunk_size=settings.chunk_hours,
                               scoped=not scope.is_full, name="attribution_models"),
        metadata={
            "models": len(specs),
            "valid_models": len(specs) - len(invalid),
            "invalid_models": len(invalid),
            "users": len(users),
            "algorithmic_as_last_touch": dg.MetadataValue.json(algorithmic),
            "note": "algorithmic models are computed as last touch, exactly like Prosper202 (D7)"
            if algorithmic else "",
        },
    )
    yield dg.AssetCheckResult(
        check_name="valid_models",
        passed=not invalid,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "invalid_models": len(invalid),
            "failing_hours": dg.MetadataValue.json([hour_key(h) for h in hours][:100] if invalid else []),
            "skipped": dg.MetadataValue.json(
                [{"model_id": s.model_id, "user_id": s.user_id, "slug": s.model_slug, "type": s.model_type,
                  "reason": s.error} for s in invalid[:100]]
            ),
        },
        description="; ".join(f"model {s.model_id} ({s.model_slug}): {s.error}" for s in invalid[:20]) or "all valid",
    )


@hourly_frame_asset(
    kinds={"polars", "sql"},
)
def conversions(
    context: dg.AssetExecutionContext, db: DatabaseResource, settings: PipelineSettings, scope: RunScope
) -> HourlyFrame:
    """The conversions of each hour: ``H <= conv_time <= H + 3599``, not soft-deleted, of users not
    deleted, with their converting click's cpc (spec 2.1; D3, D15, D16).

    Conversions whose click row is missing are kept with ``click_rows = 0`` (skipped downstream,
    reported by a check); a click id stored several times counts once. A run of several chunks
    scans 202_conversion_logs once for the whole range and reads each chunk by primary key; a
    one-chunk run reads its hours with one query (extract.ConversionIndex).
    """
    hours = run_hours(context)
    users = scope_users(db, scope)
    index = extract.ConversionIndex(db.engine(), hours, users, logger=context.log)
    frame: HourlyFrame

    def produce(chunk: tuple[int, ...]):
        if users == []:
            return frames.empty(frames.CONVERSIONS)
        df = index.conversions(chunk)
        frame.stats.count("conversions", int((df["click_rows"] > 0).sum()))
        frame.stats.count("orphan_conversions", int((df["click_rows"] == 0).sum()))
        frame.stats.count("duplicated_converting_clicks", int((df["click_rows"] > 1).sum()))
        return df

    frame = HourlyFrame(hours, produce, frames.CONVERSIONS, chunk_size=settings.chunk_hours,
                        scoped=not scope.is_full, name="conversions")
    return frame
