"""Credits and snapshots: every valid model's credit per touch, then the hourly aggregates."""

import dagster as dg
import polars as pl

from attribution_pipeline.assets.check_kit import CREDIT_IDS, SNAPSHOT_IDS, schema_check
from attribution_pipeline.assets.chunking import run_chunks
from attribution_pipeline.assets.hourly import Hourly, run_hours
from attribution_pipeline.assets.resources import RunScope
from attribution_pipeline.core import contracts, frames
from attribution_pipeline.core.aggregation import build_snapshots, build_snapshots_in_pieces
from attribution_pipeline.core.chunk_plan import row_pieces
from attribution_pipeline.core.crediting import ON_VISITOR, VisitorInputs, compute_credits
from attribution_pipeline.core.frames import FrameStats, HourlyFrame
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import markov_training
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.journey_source import counted


def credits(context: dg.AssetExecutionContext, journeys: HourlyFrame, visitor_journeys: HourlyFrame,
            conversions: HourlyFrame, attribution_models: HourlyFrame, db: dg.ResourceParam[Database],
            settings: dg.ResourceParam[Settings], scope: RunScope) -> HourlyFrame:
    """Credit per (model, conversion, credited touch) for every valid model type: last_touch,
    time_decay, position_based, assisted, algorithmic (as last touch), first_touch, linear
    (spec §3; D1, D5, D7, D10, D14). Each model is computed on its own (D1). Chunks follow the
    run's plan (``assets/chunking.py``); an hour over the budget is credited in pieces of whole
    conversions (by user, then by conversion range). Models on visitor journeys credit
    ``visitor_journeys``; Markov models (D32) by the fit their hours use, made first where missing."""
    planned = run_chunks(run_hours(context), conversions, attribution_models, settings)

    def produce(chunk: tuple[int, ...], stats: FrameStats) -> pl.DataFrame:
        touches, conv, models = journeys.read(chunk), conversions.read(chunk), attribution_models.read(chunk)
        visitor = visitor_inputs(db, settings, chunk, visitor_journeys, models, stats, context.log)
        split = planned.splitter(chunk, stats)
        if split is None:
            out, inputs = compute_credits(touches, conv, models, visitor), [visitor]
        else:
            pieces = [(piece, visitor and visitor.of(piece)) for piece in split(counted(conv))]
            out = pl.concat([compute_credits(touches.join(piece.select("conv_id"), on="conv_id", how="semi"), piece,
                                             models, part) for piece, part in pieces])
            inputs = [part for _, part in pieces]
        stats.count("credited_touches", out.height)
        stats.count("markov_equal_split_conversions", sum(part.fallback_conversions for part in inputs if part))
        return out

    frame = HourlyFrame.build(run_hours(context), produce, frames.CREDITS, chunks=planned.chunks,
                              scoped=not scope.is_full, name="credits")
    planned.report(frame.stats)
    return frame


def visitor_inputs(db: Database, settings: Settings, chunk: tuple[int, ...], visitor_journeys: HourlyFrame,
                   models: pl.DataFrame, stats: FrameStats, log) -> VisitorInputs | None:
    """What the chunk's models on visitor journeys need (None when it has none): the journeys, and
    for Markov models the shares of their fits (fitted and stored first where missing)."""
    if not models.filter(pl.col("is_valid") & ON_VISITOR).height:
        return None
    touches = visitor_journeys.read(chunk)
    shares, made = markov_training.ensure_fits(db, models, chunk, settings.visitor_key, logger=log)
    stats.count("markov_fits_made", len(made))
    accounts = touches.get_column("touch_ppc_account_id").drop_nulls().unique().to_list()
    return VisitorInputs(touches, shares, markov_training.account_networks(db, accounts))


def snapshots(context: dg.AssetExecutionContext, credits: HourlyFrame, conversions: HourlyFrame,
              attribution_models: HourlyFrame, settings: dg.ResourceParam[Settings], scope: RunScope) -> HourlyFrame:
    """One row per (model, user, hour) with conversions, global scope: attributed clicks,
    conversions, revenue and cost, summed in PHP's order and rounded as MySQL stores them
    (spec §3.0, §3.7, §4.1; D4, D5, D8, D14). Chunks follow the run's plan; an hour over the
    budget is summed per conversion in pieces, then per hour over all of them."""
    planned = run_chunks(run_hours(context), conversions, attribution_models, settings)

    def produce(chunk: tuple[int, ...], stats: FrameStats) -> pl.DataFrame:
        rows = credits.read(chunk)
        if not planned.plan.oversized(chunk):
            return build_snapshots(rows)
        parts = row_pieces(rows, planned.plan.rows_budget)
        stats.count("pieces", len(parts))
        return build_snapshots_in_pieces(parts)

    frame = HourlyFrame.build(run_hours(context), produce, frames.SNAPSHOTS, chunks=planned.chunks,
                              scoped=not scope.is_full, name="snapshots")
    planned.report(frame.stats)
    return frame


def build(hourly: Hourly) -> list:
    """The credits and snapshots assets and their checks, on ``hourly``'s partitions."""
    return [
        hourly.frame_asset(kinds={"polars"})(credits),
        hourly.frame_asset(kinds={"polars"})(snapshots),
        schema_check(hourly, "credits", contracts.Credits, CREDIT_IDS, "credit rows breaking contracts.Credits"),
        schema_check(hourly, "snapshots", contracts.Snapshots, SNAPSHOT_IDS,
                     "snapshot rows breaking contracts.Snapshots"),
    ]
