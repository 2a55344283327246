"""The journeys asset: every conversion's ordered touches (D2, D13, D15), and its checks."""

import dagster as dg
import polars as pl

from attribution_pipeline.assets.check_kit import (
    ERROR,
    TOUCH_IDS,
    WARN,
    frame_check,
    run_frame_check,
    schema_check,
    schema_findings,
)
from attribution_pipeline.assets.chunking import run_chunks
from attribution_pipeline.assets.hourly import Hourly, run_hours
from attribution_pipeline.assets.resources import RunScope
from attribution_pipeline.core import contracts, frames
from attribution_pipeline.core.frames import FrameStats, HourlyFrame
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import click_reads, read_replica
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.journey_source import JourneyRule, JourneySource, counted


def journeys(context: dg.AssetExecutionContext, conversions: HourlyFrame, attribution_models: HourlyFrame,
             db: dg.ResourceParam[Database], settings: dg.ResourceParam[Settings], scope: RunScope) -> HourlyFrame:
    """The touches of each conversion, positions 0..n-1 (D2), built from 202_clicks at run time.

    The run is cut into the chunks of its plan (``assets/chunking.py``: sized by their estimated
    rows within ``ATTRIBUTION_MEMORY_BUDGET_MB``, made from the stored conversions and models). The
    clicks each chunk needs (its conversions' accounts and campaigns, within the lookback) are read
    here, through a :class:`~attribution_pipeline.storage.journey_source.JourneySource` that reads
    each click once per run and keeps only the clicks later chunks can use, rather than through a
    partition mapping over hundreds of upstream hours. An hour over the budget is built in pieces.
    Multi-touch settings (spec §5.1) reduce a journey to the converting click where disabled (D13).
    With ``ATTRIBUTION_JOURNEY_SOURCE=stored`` the journeys of 202_conversion_touchpoints are used
    instead (PHP rebuild semantics).
    """
    hours = run_hours(context)
    choice = read_replica.choose_reader(db, logger=context.log)  # D30: the replica once it has caught up
    context.add_output_metadata(choice.metadata())
    source = JourneySource(choice.db, JourneyRule.from_settings(settings), logger=context.log)
    planned = run_chunks(hours, conversions, attribution_models, settings)

    def produce(chunk: tuple[int, ...], stats: FrameStats) -> pl.DataFrame:
        conv = counted(conversions.read(chunk))
        if conv.height and not source.prepared:
            source.prepare(planned.pairs(), stats)  # every (user, campaign) pair of the range
        return source.journeys(conv, stats, split=planned.splitter(chunk, stats))

    frame = HourlyFrame.build(hours, produce, frames.JOURNEYS, chunks=planned.chunks, scoped=not scope.is_full,
                              name="journeys")
    planned.report(frame.stats)
    return frame


def click_slice_schema(chunk, df: pl.DataFrame, tally) -> pl.DataFrame:
    """Touches whose click-slice row breaks 202_clicks' contract (``contracts.ClickSlice``)."""
    return schema_findings(contracts.ClickSlice, contracts.click_slice_of_journeys(df), chunk, TOUCH_IDS, source=df)


def clicks_after_conversion(chunk, df: pl.DataFrame, tally) -> pl.DataFrame:
    """Touches later than their conversion (in practice the converting click)."""
    late = df.filter(pl.col("click_time") > pl.col("conv_time"))
    tally.count("converting_clicks_after_conversion", int(late.get_column("is_converting").sum()))
    return late.select(
        "date_hour", "conv_id", "position", "click_id",
        seconds_after=pl.col("click_time") - pl.col("conv_time"),
        reason=pl.when(pl.col("is_converting")).then(pl.lit("converting click after its conversion"))
        .otherwise(pl.lit("touch after its conversion")),
    )


def duplicated_click_ids_check(hourly: Hourly):
    """WARN ``journeys.duplicated_click_ids``: touches on a click id stored twice (a MySQL read per chunk)."""

    def duplicated_click_ids(context: dg.AssetCheckExecutionContext, journeys: HourlyFrame,
                             db: dg.ResourceParam[Database]):
        def finder(chunk, df, tally):
            dups = click_reads.duplicated_click_rows(db, df.get_column("click_id").unique().to_list(),
                                                     logger=context.log)
            tally.count("duplicated_click_ids", dups.height)
            return df.join(dups, on="click_id").select(
                "date_hour", "conv_id", "position", "click_id", "copies",
                reason=pl.format("click id stored {} times in 202_clicks", "copies"),
            )

        yield from run_frame_check(context, journeys, asset_key=dg.AssetKey("journeys"),
                                   check_name="duplicated_click_ids", severity=WARN,
                                   ids={**TOUCH_IDS, "copies": pl.Int64},
                                   noun="touch(es) on a duplicated click id", finder=finder)

    return hourly.check(
        "journeys", "duplicated_click_ids", WARN,
        "Journey touches whose click id is stored more than once in 202_clicks (the table has no "
        "unique key). The click counts once (D15; PHP counts the conversion twice). Red: the sample "
        "names click_id, how many copies and a conversion using it; remove the duplicate rows.",
    )(duplicated_click_ids)


def build(hourly: Hourly) -> list:
    """The journeys asset and its checks, on ``hourly``'s partitions."""
    return [
        hourly.frame_asset(kinds={"polars", "sql"})(journeys),
        schema_check(hourly, "journeys", contracts.Journeys, TOUCH_IDS, "touch rows breaking contracts.Journeys"),
        frame_check(hourly, "journeys", "click_slice_schema", ERROR,
                    "The clicks the journeys were built from (every touch's click-slice row, deduplicated: "
                    "contracts.ClickSlice = frames.CLICKS) match 202_clicks' contract. Red: the stored frame "
                    "breaks its contract; the sample names the rows (ids) and the rule.",
                    ids=TOUCH_IDS, noun="touch clicks breaking contracts.ClickSlice", finder=click_slice_schema),
        duplicated_click_ids_check(hourly),
        frame_check(hourly, "journeys", "clicks_after_conversion", WARN,
                    "Journey touches whose click_time is later than their conversion's conv_time: in practice the "
                    "converting click, added with 202_conversion_logs.click_time (D2), dated after the conversion. "
                    "Red: the sample names conv_id, click_id and the seconds; check the clocks or the click ids "
                    "posted with these conversions.",
                    ids={**TOUCH_IDS, "seconds_after": pl.Int64}, noun="touch(es) later than their conversion",
                    finder=clicks_after_conversion),
    ]
