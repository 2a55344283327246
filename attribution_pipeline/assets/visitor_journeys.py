"""Visitor journeys (D32): the converting visitor's clicks across campaigns and accounts, for the
models that ask for them (``"journey": "visitor"``), and the daily Markov fit asset with its job
and schedule."""

import dagster as dg
import polars as pl

from attribution_pipeline.assets.chunking import run_chunks
from attribution_pipeline.assets.hourly import Hourly, run_hours
from attribution_pipeline.assets.resources import RunScope
from attribution_pipeline.core import frames
from attribution_pipeline.core.crediting import ON_VISITOR
from attribution_pipeline.core.frames import FrameStats, HourlyFrame
from attribution_pipeline.core.visitor_paths import visitor_journeys as build_visitor_journeys
from attribution_pipeline.settings import Settings
from attribution_pipeline.core.journey_rules import multi_touch_flags
from attribution_pipeline.storage import prosper_reads, read_replica
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.journey_source import counted
from attribution_pipeline.storage.visitor_clicks import read_visitor_clicks


def _settings_of(db: Database, conv: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The multi-touch settings (D13) of the conversions' users and their campaigns' advertisers."""
    with db.engine().connect() as conn:
        return (prosper_reads.multi_touch_settings(conn, conv.get_column("user_id").unique().to_list()),
                prosper_reads.campaign_networks(conn, conv.get_column("campaign_id").unique().to_list()))


def visitor_users(models: pl.DataFrame) -> list[int]:
    """The users with a valid model on visitor journeys."""
    return sorted(models.filter(pl.col("is_valid") & ON_VISITOR).get_column("user_id").unique().to_list())


def visitor_journeys(context: dg.AssetExecutionContext, conversions: HourlyFrame, attribution_models: HourlyFrame,
                     db: dg.ResourceParam[Database], settings: dg.ResourceParam[Settings],
                     scope: RunScope) -> HourlyFrame:
    """The journeys of the conversions of users with a model on visitor journeys (D32): the
    converting visitor's clicks (``ATTRIBUTION_VISITOR_KEY``'s recipe within one user) across
    campaigns and accounts, within the lookback, with D2's cap and converting-click rules; the
    converting click alone where multi-touch is switched off for the conversion (D13).
    Empty (and free) for every other user. The visitor key never leaves the step: the frame has
    the journeys contract (frames.JOURNEYS), no visitor column."""
    hours = run_hours(context)
    choice = read_replica.choose_reader(db, logger=context.log)  # D30: the replica once it has caught up
    planned = run_chunks(hours, conversions, attribution_models, settings)

    def produce(chunk: tuple[int, ...], stats: FrameStats) -> pl.DataFrame:
        users = visitor_users(attribution_models.read(chunk))
        conv = counted(conversions.read(chunk)).filter(pl.col("user_id").is_in(users))
        if conv.height == 0:
            return frames.empty(frames.JOURNEYS)
        lo = max(0, int(conv.get_column("conv_time").min()) - settings.lookback_seconds)
        hi = int(conv.get_column("conv_time").max())
        conv = multi_touch_flags(conv, *choice.db.retry.run(lambda: _settings_of(choice.db, conv),
                                                             what="read multi-touch settings", logger=context.log))
        clicks = read_visitor_clicks(choice.db, users, lo, hi, settings.visitor_key,
                                     click_ids=conv.get_column("click_id").to_list(), logger=context.log)
        stats.count("visitor_clicks_read", clicks.height)
        out = build_visitor_journeys(conv, clicks, settings.lookback_seconds, settings.touch_cap)
        stats.count("visitor_touches", out.height)
        return out

    frame = HourlyFrame.build(hours, produce, frames.JOURNEYS, chunks=planned.chunks, scoped=not scope.is_full,
                              name="visitor_journeys")
    planned.report(frame.stats)
    return frame


def build(hourly: Hourly) -> list:
    """The visitor journeys asset, on ``hourly``'s partitions."""
    return [hourly.frame_asset(kinds={"polars", "sql"})(visitor_journeys)]
