"""Credits and snapshots assets: every valid model's credits, then the hourly aggregates."""

import dagster as dg

from attribution_pipeline import frames
from attribution_pipeline.assets.common import hourly_frame_asset, run_hours
from attribution_pipeline.credits import compute_credits
from attribution_pipeline.frames import HourlyFrame
from attribution_pipeline.resources import PipelineSettings, RunScope
from attribution_pipeline.snapshots import build_snapshots


@hourly_frame_asset(
    kinds={"polars"},
)
def credits(
    context: dg.AssetExecutionContext,
    journeys: HourlyFrame,
    conversions: HourlyFrame,
    attribution_models: HourlyFrame,
    settings: PipelineSettings,
    scope: RunScope,
) -> HourlyFrame:
    """Credit per (model, conversion, credited touch) for every valid model type: last_touch,
    time_decay, position_based, assisted, algorithmic (as last touch), first_touch, linear
    (spec 3; D1, D5, D7, D10, D14). Each model is computed on its own (D1)."""
    frame: HourlyFrame

    def produce(chunk: tuple[int, ...]):
        out = compute_credits(journeys.read(chunk), conversions.read(chunk), attribution_models.read(chunk))
        frame.stats.count("credited_touches", out.height)
        return out

    frame = HourlyFrame(run_hours(context), produce, frames.CREDITS, chunk_size=settings.chunk_hours,
                        scoped=not scope.is_full, name="credits")
    return frame


@hourly_frame_asset(
    kinds={"polars"},
)
def snapshots(
    context: dg.AssetExecutionContext, credits: HourlyFrame, settings: PipelineSettings, scope: RunScope
) -> HourlyFrame:
    """One row per (model, user, hour) with conversions, global scope: attributed clicks,
    conversions, revenue and cost, summed in PHP's order and rounded as MySQL stores them
    (spec 3.0, 3.7, 4.1; D4, D5, D8, D14)."""
    frame = HourlyFrame(run_hours(context), lambda chunk: build_snapshots(credits.read(chunk)),
                        frames.SNAPSHOTS, chunk_size=settings.chunk_hours, scoped=not scope.is_full,
                        name="snapshots")
    return frame
