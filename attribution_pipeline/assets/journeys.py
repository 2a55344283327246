"""The journeys asset: every conversion's ordered touches (D2, D13, D15)."""

import time

import dagster as dg
import polars as pl

from attribution_pipeline import extract, frames
from attribution_pipeline.db import with_retries
from attribution_pipeline import journeys as journey_rules
from attribution_pipeline.assets.common import hourly_frame_asset, run_hours
from attribution_pipeline.frames import HourlyFrame, chunk_hours
from attribution_pipeline.resources import DatabaseResource, PipelineSettings, RunScope


def _multi_touch_context(engine, conversions: HourlyFrame, hours, chunk_size: int, logger=None):
    """Settings and campaign networks of the range's users, and the (user, campaign) pairs whose
    conversions are multi-touch: one pass over the stored conversions, two small queries."""
    pairs = []
    for chunk in chunk_hours(hours, chunk_size):
        conv = conversions.read(chunk).filter(pl.col("click_rows") > 0)
        pairs.append(conv.select("user_id", "campaign_id").unique())
    pairs_df = pl.concat(pairs).unique() if pairs else pl.DataFrame(schema={"user_id": pl.Int64, "campaign_id": pl.Int64})
    def read():
        with engine.connect() as conn:
            return (extract.multi_touch_settings(conn, pairs_df["user_id"].unique().to_list()),
                    extract.campaign_networks(conn, pairs_df["campaign_id"].unique().to_list()))

    settings, networks = with_retries(read, what="read multi-touch settings", logger=logger)
    flagged = journey_rules.multi_touch_flags(pairs_df, settings, networks)
    multi = flagged.filter(pl.col("multi_touch"))
    return settings, networks, multi["user_id"].unique().to_list(), multi["campaign_id"].unique().to_list()


@hourly_frame_asset(
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

    The click slice each chunk needs (its conversions' accounts and campaigns, from the lookback
    before its first conversion to its last one) is read here rather than through a partition
    mapping over hundreds of upstream hours, through a :class:`~attribution_pipeline.extract.ClickWindow`
    that reads each click once per run. Multi-touch settings (spec 5.1) reduce a journey to the
    converting click where disabled (D13). With ``journey_source="stored"`` the journeys of
    202_conversion_touchpoints are used instead (PHP rebuild semantics).
    """
    engine = db.engine()
    hours = run_hours(context)
    frame: HourlyFrame
    state: dict = {}

    def window_state():
        if not state:
            started = time.perf_counter()
            mt_settings, networks, users, campaigns = _multi_touch_context(
                engine, conversions, hours, settings.chunk_hours, logger=context.log
            )
            state.update(settings=mt_settings, networks=networks,
                         window=extract.ClickWindow(engine, users, campaigns, logger=context.log))
            frame.stats.add_stage("read_settings", time.perf_counter() - started)
        return state

    def produce(chunk: tuple[int, ...]) -> pl.DataFrame:
        conv = conversions.read(chunk).filter(pl.col("click_rows") > 0)
        if conv.height == 0:
            return frames.empty(frames.JOURNEYS)
        started = time.perf_counter()
        if settings.journey_source == "stored":
            def read_stored():
                with engine.connect() as conn:
                    found = extract.stored_touchpoints(conn, conv.get_column("conv_id").to_list())
                    return found, extract.clicks_by_id(conn, found.get_column("click_id").unique().to_list())

            stored, clicks = with_retries(read_stored, what="read stored journeys", logger=context.log)
        else:
            ctx = window_state()
            flagged = journey_rules.multi_touch_flags(conv, ctx["settings"], ctx["networks"])
            multi = flagged.filter(pl.col("multi_touch"))
            clicks = (
                ctx["window"].between(int(multi["conv_time"].min()) - settings.lookback_seconds, int(multi["conv_time"].max()))
                if multi.height else frames.empty(extract.CLICKS)
            )
        frame.stats.add_stage("read_clicks", time.perf_counter() - started)
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
        if state:
            frame.stats.counters["clicks_read"] = state["window"].rows_read
            frame.stats.counters["click_queries"] = state["window"].queries
        return out

    frame = HourlyFrame(hours, produce, frames.JOURNEYS, chunk_size=settings.chunk_hours,
                        scoped=not scope.is_full, name="journeys")
    return frame
