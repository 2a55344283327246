"""The inputs of every hour: the active models of each user, and the conversions (with their checks)."""

import dagster as dg
import polars as pl

from attribution_pipeline.assets.check_kit import (
    CONV_IDS,
    MODEL_IDS,
    WARN,
    frame_check,
    run_frame_check,
    schema_check,
)
from attribution_pipeline.assets.hourly import Hourly, run_fields, run_hours, scope_users
from attribution_pipeline.assets.resources import RunScope
from attribution_pipeline.core import contracts, frames
from attribution_pipeline.core.frames import FrameStats, HourlyFrame
from attribution_pipeline.core.hours import HOUR, hour_key
from attribution_pipeline.core.model_rules import models_frame, parse_model_row
from attribution_pipeline.logs import log_event
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import prosper_reads, read_replica
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.prosper_reads import foreign_click, orphan

#: Two conversions of one click at most this many seconds apart are a possible duplicated postback
#: (a pixel or postback fired twice, a retry): retries come within seconds, while a second genuine
#: conversion of the same click (an upsell, a rebill) comes minutes or days later.
DUPLICATE_POSTBACK_SECONDS = 60

VALID_MODELS = dg.AssetCheckSpec(
    "valid_models",
    asset="attribution_models",
    description="WARN: every active model row of the run's users passes Prosper202's validation "
    "(D6: invalid ones are skipped, their stored rows untouched, and named here with the reason).",
)


def attribution_models(context: dg.AssetExecutionContext, db: dg.ResourceParam[Database],
                       settings: dg.ResourceParam[Settings], scope: RunScope):
    """The active models of each selected, non-deleted user, validated (spec §3.6; D6, D7, D10).

    One row per (hour, model), so any hour of any later step knows the models it was computed with.
    Invalid rows are kept with ``is_valid = false`` and their message; they are never computed and
    their stored rows are never touched (D9). ``algorithmic`` models are computed as last touch.
    """
    hours = run_hours(context)
    wanted_users = scope_users(db, scope)
    choice = read_replica.choose_reader(db, logger=context.log)

    def read():
        with choice.db.engine().connect() as conn:
            found = [] if wanted_users == [] else prosper_reads.active_users(conn, wanted_users)
            return found, prosper_reads.model_rows(conn, found)

    users, rows = db.retry.run(read, what="read models", logger=context.log)
    if scope.models:
        chosen = set(scope.models)
        rows = [r for r in rows if int(r["model_id"]) in chosen]
    specs = [parse_model_row(r) for r in rows]
    invalid = [s for s in specs if not s.is_valid]
    algorithmic = [s.model_id for s in specs if s.is_valid and s.model_type == "algorithmic"]
    log_event(context.log, "models_loaded", stage="attribution_models", models=len(specs),
              invalid=len(invalid), users=len(users), **run_fields(context))
    yield dg.Output(
        HourlyFrame.from_frame(models_frame(specs, hours), hours, frames.MODELS, chunk_size=settings.chunk_hours,
                               scoped=not scope.is_full, name="attribution_models"),
        metadata={
            "models": len(specs),
            "valid_models": len(specs) - len(invalid),
            "invalid_models": len(invalid),
            "users": len(users),
            "algorithmic_as_last_touch": dg.MetadataValue.json(algorithmic),
            "note": "algorithmic models are computed as last touch, exactly like Prosper202 (D7)"
            if algorithmic else "",
            **choice.metadata(),
        },
    )
    yield dg.AssetCheckResult(
        check_name="valid_models",
        passed=not invalid,
        severity=WARN,
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


def conversions(context: dg.AssetExecutionContext, source_changes: HourlyFrame, db: dg.ResourceParam[Database],
                settings: dg.ResourceParam[Settings], scope: RunScope) -> HourlyFrame:
    """The conversions of each hour: ``H <= conv_time <= H + 3599``, not soft-deleted, of users not
    deleted, with their converting click's cpc (spec §2.1; D3, D15, D16).

    Conversions whose click row is missing, or whose click belongs to another user (D21), are kept
    with ``click_rows = 0`` (skipped downstream, reported by a check each); a click id stored
    several times counts once. A run of several chunks
    scans 202_conversion_logs once for the whole range and reads each chunk by primary key; a
    one-chunk run reads its hours with one query (``prosper_reads.ConversionIndex``).

    Only the (user, hour) pairs ``source_changes`` recomputes are read (D22): the others keep
    their stored rows, untouched.
    """
    users = scope_users(db, scope)
    wanted = source_changes.collect().filter(pl.col("recompute")).select("date_hour", "user_id")
    hours = sorted(set(wanted.get_column("date_hour").to_list()))
    recomputed = set(hours)
    choice = read_replica.choose_reader(db, logger=context.log)  # D30: the replica once it has caught up
    context.add_output_metadata(choice.metadata())
    index = prosper_reads.ConversionIndex(choice.db, hours, users, logger=context.log) if hours else None

    def produce(chunk: tuple[int, ...], stats: FrameStats) -> pl.DataFrame:
        todo = [h for h in chunk if h in recomputed]
        if users == [] or not todo:
            return frames.empty(frames.CONVERSIONS)
        df = index.conversions(tuple(todo)).join(wanted, on=["date_hour", "user_id"], how="semi")
        stats.count("conversions", int((df["click_rows"] > 0).sum()))
        stats.count("orphan_conversions", int(df.select(orphan().sum()).item()))
        stats.count("foreign_user_clicks", int(df.select(foreign_click().sum()).item()))
        stats.count("duplicated_converting_clicks", int((df["click_rows"] > 1).sum()))
        return df

    return HourlyFrame.build(run_hours(context), produce, frames.CONVERSIONS, chunk_size=settings.chunk_hours,
                             scoped=not scope.is_full, name="conversions")


def orphan_conversions(chunk, df: pl.DataFrame, tally) -> pl.DataFrame:
    """Conversions whose click row is missing (``click_rows = 0``, no click found)."""
    return df.filter(orphan()).select(
        "date_hour", "conv_id", "click_id", reason=pl.lit("click row missing from 202_clicks")
    )


def foreign_user_clicks(chunk, df: pl.DataFrame, tally) -> pl.DataFrame:
    """Conversions whose click id is only found among another user's clicks (D21: skipped)."""
    return df.filter(foreign_click()).select(
        "date_hour", "conv_id", "click_id", reason=pl.lit("the click belongs to another user in 202_clicks")
    )


def duplicated_postbacks_finder():
    """A finder of conversions posted at most DUPLICATE_POSTBACK_SECONDS after the previous
    conversion of the same click. It keeps the end of each chunk, so that a pair across two chunks
    of the run is found too (chunks come in order); pairs reaching before the run are not."""
    columns = {"date_hour": pl.Int64, "conv_id": pl.Int64, "click_id": CONV_IDS["click_id"], "conv_time": pl.Int64}
    carried = pl.DataFrame(schema=columns)

    def finder(chunk, df: pl.DataFrame, tally) -> pl.DataFrame:
        nonlocal carried
        rows = df.select(list(columns))
        previous = pl.col("conv_time").shift(1).over("click_id")
        found = (
            pl.concat([carried.with_columns(new=pl.lit(False)), rows.with_columns(new=pl.lit(True))])
            .sort(["click_id", "conv_time", "conv_id"])
            .with_columns(first_conv_id=pl.col("conv_id").shift(1).over("click_id"),
                          seconds_after=pl.col("conv_time") - previous)
            .filter(pl.col("new") & (pl.col("seconds_after") <= DUPLICATE_POSTBACK_SECONDS))
        )
        carried = rows.filter(pl.col("conv_time") > max(chunk) + HOUR - 1 - DUPLICATE_POSTBACK_SECONDS)
        tally.count("possible_duplicates", found.height)
        return found.select(
            "date_hour", "conv_id", "click_id", "first_conv_id", "seconds_after",
            reason=pl.format("{} s after conversion {} of the same click", "seconds_after", "first_conv_id"),
        )

    return finder


def duplicated_postbacks_check(hourly: Hourly):
    """WARN ``conversions.duplicated_postbacks`` (a finder with state per evaluation, see above)."""

    def duplicated_postbacks(context: dg.AssetCheckExecutionContext, conversions: HourlyFrame):
        yield from run_frame_check(context, conversions, asset_key=dg.AssetKey("conversions"),
                                   check_name="duplicated_postbacks", severity=WARN,
                                   ids={**CONV_IDS, "first_conv_id": pl.Int64, "seconds_after": pl.Int64},
                                   noun="possible duplicated postback(s)", finder=duplicated_postbacks_finder())

    return hourly.check(
        "conversions", "duplicated_postbacks", WARN,
        f"Conversions posted at most {DUPLICATE_POSTBACK_SECONDS} s after another conversion of the same click "
        "(202_conversion_logs rows, not deleted): possibly one postback or pixel fired twice. Both count, as in "
        "PHP. Red: the sample names conv_id, the earlier first_conv_id and the seconds between them; if they are "
        "one sale, soft-delete the duplicate (deleted = 1) and re-run the hour.",
    )(duplicated_postbacks)


def zero_or_null_payouts(chunk, df: pl.DataFrame, tally) -> pl.DataFrame:
    """Counted conversions whose payout is 0, negative or NULL (counted by kind in ``tally``)."""
    counted = df.filter(pl.col("click_rows") > 0)
    payout = counted.get_column("payout")
    tally.count("null_payouts", int(payout.is_null().sum()))
    tally.count("zero_payouts", int((payout == 0).sum()))
    tally.count("negative_payouts", int((payout < 0).sum()))
    return counted.filter(pl.col("payout").is_null() | (pl.col("payout") <= 0)).select(
        "date_hour", "conv_id", "click_id",
        reason=pl.when(pl.col("payout").is_null()).then(pl.lit("payout is NULL"))
        .when(pl.col("payout") == 0).then(pl.lit("payout is 0")).otherwise(pl.lit("payout is negative")),
    )


def build(hourly: Hourly) -> list:
    """The two input assets and their checks, on ``hourly``'s partitions."""
    return [
        hourly.frame_asset(kinds={"polars", "sql"}, check_specs=[VALID_MODELS])(attribution_models),
        hourly.frame_asset(kinds={"polars", "sql"})(conversions),
        schema_check(hourly, "attribution_models", contracts.Models, MODEL_IDS,
                     "model rows breaking contracts.Models"),
        schema_check(hourly, "conversions", contracts.Conversions, CONV_IDS,
                     "conversion rows breaking contracts.Conversions"),
        frame_check(hourly, "conversions", "orphan_conversions", WARN,
                    "Conversions whose click row is missing from 202_clicks (click_rows = 0). They are skipped, "
                    "as in PHP (D16). Red: the sample names conv_id and click_id; find why the click row is gone "
                    "(purge, partition drop, a conversion posted for an unknown click).",
                    ids=CONV_IDS, noun="orphan conversion(s)", finder=orphan_conversions),
        frame_check(hourly, "conversions", "zero_or_null_payouts", WARN,
                    "Counted conversions (click row found) whose payout (202_conversion_logs.click_payout) is 0, "
                    "negative or NULL: they attribute no revenue. Red: check the postback/pixel amount or the "
                    "campaign payout of the conversions in the sample.",
                    ids=CONV_IDS, noun="conversion(s) with a zero, negative or NULL payout",
                    finder=zero_or_null_payouts),
        frame_check(hourly, "conversions", "foreign_user_clicks", WARN,
                    "Conversions whose click id belongs to a click of another user (202_clicks.user_id differs from "
                    "202_conversion_logs.user_id). They are skipped: no journey, no credit (D21; PHP joins on the "
                    "click id alone and credits the other user's traffic source). Red: the sample names conv_id and "
                    "click_id; find which integration posted the conversion with a wrong user or click id.",
                    ids=CONV_IDS, noun="conversion(s) on another user's click", finder=foreign_user_clicks),
        duplicated_postbacks_check(hourly),
    ]
