"""Credits and snapshots: every valid model's credit per touch, then the hourly aggregates."""

import dagster as dg
import polars as pl

from attribution_pipeline.assets.check_kit import CREDIT_IDS, SNAPSHOT_IDS, schema_check
from attribution_pipeline.assets.hourly import Hourly, run_hours
from attribution_pipeline.assets.resources import RunScope
from attribution_pipeline.core import contracts, frames
from attribution_pipeline.core.aggregation import build_snapshots
from attribution_pipeline.core.crediting import compute_credits
from attribution_pipeline.core.frames import FrameStats, HourlyFrame
from attribution_pipeline.settings import Settings


def credits(context: dg.AssetExecutionContext, journeys: HourlyFrame, conversions: HourlyFrame,
            attribution_models: HourlyFrame, settings: dg.ResourceParam[Settings], scope: RunScope) -> HourlyFrame:
    """Credit per (model, conversion, credited touch) for every valid model type: last_touch,
    time_decay, position_based, assisted, algorithmic (as last touch), first_touch, linear
    (spec §3; D1, D5, D7, D10, D14). Each model is computed on its own (D1)."""

    def produce(chunk: tuple[int, ...], stats: FrameStats) -> pl.DataFrame:
        out = compute_credits(journeys.read(chunk), conversions.read(chunk), attribution_models.read(chunk))
        stats.count("credited_touches", out.height)
        return out

    return HourlyFrame.build(run_hours(context), produce, frames.CREDITS, chunk_size=settings.chunk_hours,
                             scoped=not scope.is_full, name="credits")


def snapshots(context: dg.AssetExecutionContext, credits: HourlyFrame, settings: dg.ResourceParam[Settings],
              scope: RunScope) -> HourlyFrame:
    """One row per (model, user, hour) with conversions, global scope: attributed clicks,
    conversions, revenue and cost, summed in PHP's order and rounded as MySQL stores them
    (spec §3.0, §3.7, §4.1; D4, D5, D8, D14)."""
    return HourlyFrame.build(run_hours(context), lambda chunk, _stats: build_snapshots(credits.read(chunk)),
                             frames.SNAPSHOTS, chunk_size=settings.chunk_hours, scoped=not scope.is_full,
                             name="snapshots")


def build(hourly: Hourly) -> list:
    """The credits and snapshots assets and their checks, on ``hourly``'s partitions."""
    return [
        hourly.frame_asset(kinds={"polars"})(credits),
        hourly.frame_asset(kinds={"polars"})(snapshots),
        schema_check(hourly, "credits", contracts.Credits, CREDIT_IDS, "credit rows breaking contracts.Credits"),
        schema_check(hourly, "snapshots", contracts.Snapshots, SNAPSHOT_IDS,
                     "snapshot rows breaking contracts.Snapshots"),
    ]
