"""The journeys asset: every conversion's ordered touches (D2, D13, D15)."""

import time

import dagster as dg
import polars as pl

from attribution_pipeline import extract, frames
from attribution_pipeline import journeys as journey_rules
from attribution_pipeline.assets.common import FRAMES_IO, GROUP_NAME, hourly_partitions, single_run
from attribution_pipeline.assets.common import run_hours
from attribution_pipeline.frames import HourlyFrame
from attribution_pipeline.resources import DatabaseResource, PipelineSettings, RunScope


@dg.asset(
    partitions_def=hourly_partitions,
    backfill_policy=single_run,
    group_name=GROUP_NAME,
    io_manager_key=FRAMES_IO,
    kinds={"polars", "sql"},
)
def journeys(
    context: dg.AssetExecutionContext,
    conversions: HourlyFrame,
    db: DatabaseResource,
    settings: PipelineSettings,
    scope: RunScope,
) -> HourlyFrame:
    """The touches of each conversion, positions 0..n-1 (D2), built from 202_clicks at run time.

    The click slice a chunk needs (its conversions' accounts and campaigns, up to the lookback
    before its first conversion) is read here, in one set-based query per chunk, rather than
    through a partition mapping over hundreds of upstream hours. Multi-touch settings (spec 5.1)
    reduce a journey to the converting click where disabled (D13). With
    ``journey_source="stored"`` the journeys of 202_conversion_touchpoints are used instead (PHP
    rebuild semantics).
    """
    engine = db.engine()
    frame: HourlyFrame

    def produce(chunk: tuple[int, ...]) -> pl.DataFrame:
        conv = conversions.read(chunk).filter(pl.col("click_rows") > 0)
        if conv.height == 0:
            return frames.empty(frames.JOURNEYS)
        users = conv.get_column("user_id").unique().to_list()
        campaigns = conv.get_column("campaign_id").unique().to_list()
        started = time.perf_counter()
        with engine.connect() as conn:
            if settings.journey_source == "stored":
                stored = extract.stored_touchpoints(conn, conv.get_column("conv_id").to_list())
                clicks = extract.clicks_by_id(conn, stored.get_column("click_id").unique().to_list())
            else:
                flagged = journey_rules.multi_touch_flags(
                    conv, extract.multi_touch_settings(conn, users), extract.campaign_networks(conn, campaigns)
                )
                multi = flagged.filter(pl.col("multi_touch"))
                clicks = extract.clicks(
                    conn,
                    multi.get_column("user_id").unique().to_list(),
                    multi.get_column("campaign_id").unique().to_list(),
                    lo=int(multi["conv_time"].min() or 0) - settings.lookback_seconds,
                    hi=int(multi["conv_time"].max() or 0),
                )
        frame.stats.add_stage("read_clicks", time.perf_counter() - started)
        frame.stats.count("clicks_read", clicks.height)
        frame.stats.count("duplicated_click_ids", journey_rules.duplicated_click_ids(clicks).height)
        started = time.perf_counter()
        unique_clicks = journey_rules.dedupe_clicks(clicks)
        if settings.journey_source == "stored":
            out = journey_rules.stored_journeys(conv, stored, unique_clicks)
        else:
            out = journey_rules.build_journeys(
                flagged, unique_clicks, lookback_seconds=settings.lookback_seconds, touch_cap=settings.touch_cap
            )
        frame.stats.add_stage("build", time.perf_counter() - started)
        frame.stats.count("touches", out.height)
        return out

    frame = HourlyFrame(run_hours(context), produce, frames.JOURNEYS, chunk_size=settings.chunk_hours,
                        scoped=not scope.is_full, name="journeys")
    return frame
