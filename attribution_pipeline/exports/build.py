"""The export frames of a few hours, built from a chunk's stored rows, its journeys and its clicks' spend."""

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
from sqlalchemy.engine import Engine

from attribution_pipeline.core import frames
from attribution_pipeline.core.packed_keys import packed_order
from attribution_pipeline.core.precision import stored_decimal
from attribution_pipeline.exports.columns import (
    CLICK_SPEND_EXPORT,
    CPC_DTYPE,
    JOURNEYS_EXPORT,
    SNAPSHOTS_EXPORT,
    SORT_KEYS,
    SPEND_DTYPE,
    SPEND_SCALE,
    TIMESTAMP,
    TOUCHPOINTS_EXPORT,
)
from attribution_pipeline.exports.shares import allocate, units
from attribution_pipeline.exports.stored import GLOBAL, Names, StoredRows, read_stored_rows


def _with_names(df: pl.DataFrame, names: Names) -> pl.DataFrame:
    for key, table in (("campaign", names.campaigns), ("ppc_account", names.ppc_accounts),
                       ("landing_page", names.landing_pages)):
        df = df.join(table.rename({"id": f"{key}_id", "name": f"{key}_name"}), on=f"{key}_id", how="left",
                     maintain_order="left")
    return df


def _epoch_to_timestamp(col: str) -> pl.Expr:
    return pl.from_epoch(pl.col(col), time_unit="s").cast(TIMESTAMP)


def snapshots_export(snaps: pl.DataFrame) -> pl.DataFrame:
    return frames.conform(
        snaps.with_columns(hour_start=_epoch_to_timestamp("date_hour"), model_active=pl.col("is_active") == 1),
        SNAPSHOTS_EXPORT,
        "snapshots export",
    ).sort(SORT_KEYS["snapshots"])


def touch_frame(touches: pl.DataFrame, snaps: pl.DataFrame, clicks: pl.DataFrame) -> pl.DataFrame:
    """Touchpoints joined with their snapshot (hour, user, model, stored totals) and their clicks,
    before names and shares (the columns :func:`touchpoints_export` needs)."""
    touch_clicks = clicks.select(
        "click_id", touch_click_time="click_time", campaign_id="aff_campaign_id", ppc_account_id="ppc_account_id",
        landing_page_id="landing_page_id", touch_cpc="click_cpc",
    )
    converting = clicks.select(conv_click_id="click_id", converting_cpc="click_cpc")
    return (
        touches.drop("date_hour", strict=False)
        .join(snaps.drop("attributed_clicks", "attributed_conversions"), on="snapshot_id", how="inner")
        .join(touch_clicks, on="click_id", how="left")
        .join(converting, on="conv_click_id", how="left")
        .with_columns(
            is_converting=(pl.col("click_id") == pl.col("conv_click_id")).fill_null(False),
        )
        .with_columns(
            click_time=pl.coalesce(
                pl.col("touch_click_time"),
                pl.when(pl.col("is_converting")).then(pl.col("conv_click_time")),
            )
        )
    )


JOURNEY_INDEX = {"conv_id": pl.Int64, "click_id": frames.CLICK_ID, "position": pl.Int32, "journey_length": pl.Int32}


def journey_index(journeys: pl.DataFrame) -> pl.DataFrame:
    """(conv_id, click_id, position, journey_length) of export-schema journeys."""
    return frames.conform(journeys, JOURNEY_INDEX, "journey index")


def _journey_positions(touch: pl.DataFrame, index: pl.DataFrame | None) -> pl.DataFrame:
    """``journey_position``/``journey_length`` of each touch: its click's place in the conversion's
    journey. The stored ``position`` is not always that: PHP records last-touch (and algorithmic)
    credit at position 0 (spec §3.1, Q11). A touch whose click appears twice in a stored journey
    (D13 stored mode) takes the occurrence at its stored position, else the first."""
    if index is None or index.height == 0:
        return touch.with_columns(journey_position=pl.lit(None, pl.Int32), journey_length=pl.lit(None, pl.Int32))
    exact = index.select("conv_id", "click_id", "position", exact_position="position", exact_length="journey_length")
    first = (index.sort("position").unique(subset=["conv_id", "click_id"], keep="first")
             .select("conv_id", "click_id", first_position="position", first_length="journey_length"))
    return (
        touch.join(exact, on=["conv_id", "click_id", "position"], how="left", maintain_order="left")
        .join(first, on=["conv_id", "click_id"], how="left", maintain_order="left")
        .with_columns(journey_position=pl.coalesce("exact_position", "first_position"),
                      journey_length=pl.coalesce("exact_length", "first_length"))
        .drop("exact_position", "exact_length", "first_position", "first_length")
    )


def _in_export_order(touch: pl.DataFrame, groups: list[str], order: list[str]) -> pl.DataFrame:
    """``touch`` sorted by ``groups`` (a snapshot's hour, user, model and id: one value per
    snapshot) then ``order`` (conversion, position, click). The snapshots are ranked on their own
    (a few rows), then the touches sorted on one packed key (rank, conversion, position) and the
    click id: the same order as the seven columns, at a third of the time (``core/packed_keys.py``)."""
    conv, position, click = order
    ranked = touch.select(groups).unique().sort(groups).with_row_index("_snapshot_rank")
    if ranked.get_column("snapshot_id").is_duplicated().any():  # a snapshot id on two groups
        return touch.sort([*groups, *order])
    keyed = touch.join(ranked.select("snapshot_id", "_snapshot_rank"), on="snapshot_id", how="left",
                       maintain_order="left")
    by = packed_order(keyed, "_snapshot_rank", (conv, 32), (position, 16))  # the columns if ids do not fit
    return keyed.sort([*by, click] if isinstance(by, list) else [by, pl.col(click)]).drop("_snapshot_rank")


def touchpoints_export(touch: pl.DataFrame, names: Names, journeys: pl.DataFrame | None = None) -> pl.DataFrame:
    """The touchpoints export: :func:`touch_frame` rows with names, reconciled shares and, given
    the hours' journeys (:func:`journey_index`), each touch's place in its journey.

    One sort: by the export's order (``SORT_KEYS``; a snapshot's hour, user and model are the same
    on all its rows, so the groups stay whole), which both allocations find and every later join
    keeps (``maintain_order="left"``)."""
    order = ["conv_id", "position", "click_id"]
    within = [k for k in SORT_KEYS["touchpoints"] if k not in ("snapshot_id", *order)]
    shared = allocate(
        _in_export_order(touch, [*within, "snapshot_id"], order),
        within=within,
        total="attributed_revenue",
        weight=units(pl.col("conversion_payout"), 5) * units(pl.col("credit"), 5),
        group="snapshot_id",
        order=order,
        name="revenue_share",
    )
    shared = allocate(
        shared,
        total="attributed_cost",
        weight=units(pl.col("converting_cpc"), 5) * units(pl.col("credit"), 5),
        group="snapshot_id",
        order=order,
        name="cost_share",
        within=within,
    )
    return frames.conform(
        _with_names(_journey_positions(shared, journeys), names).with_columns(
            hour_start=_epoch_to_timestamp("date_hour"),
            model_active=pl.col("is_active") == 1,
            conv_time=_epoch_to_timestamp("conv_time"),
            click_time=_epoch_to_timestamp("click_time"),
        ),
        TOUCHPOINTS_EXPORT,
        "touchpoints export",
    )


def journeys_export(journeys: pl.DataFrame, names: Names) -> pl.DataFrame:
    """frames.JOURNEYS rows as the journeys export (touch cpc back to its exact DECIMAL(7,5))."""
    renamed = journeys.select(
        "date_hour", "user_id", "conv_id", "position", "click_id", "is_converting", "multi_touch",
        journey_length="n",
        conv_time=_epoch_to_timestamp("conv_time"),
        click_time=_epoch_to_timestamp("click_time"),
        hour_start=_epoch_to_timestamp("date_hour"),
        campaign_id="touch_campaign_id",
        ppc_account_id="touch_ppc_account_id",
        landing_page_id="touch_landing_page_id",
        touch_cpc=stored_decimal(pl.col("touch_cpc"), CPC_DTYPE),
    )
    return frames.conform(_with_names(renamed, names), JOURNEYS_EXPORT, "journeys export").sort(SORT_KEYS["journeys"])


def click_spend_export(spend: pl.DataFrame, names: Names) -> pl.DataFrame:
    """``exports/spend.SPEND_READ`` rows as the click_spend export (exact DECIMAL spend, names)."""
    renamed = spend.select(
        "date_hour", "user_id", "ppc_account_id", "landing_page_id", "clicks",
        hour_start=_epoch_to_timestamp("date_hour"),
        campaign_id="aff_campaign_id",
        spend=(pl.col("spend_units").cast(pl.Decimal(38, SPEND_SCALE)) / 10**SPEND_SCALE).cast(SPEND_DTYPE),
    )
    return frames.conform(_with_names(renamed, names), CLICK_SPEND_EXPORT, "click_spend export").sort(
        SORT_KEYS["click_spend"])


@dataclass
class HourExports:
    """The export frames of a chunk of hours (``exports.columns.EXPORT_TABLES``)."""

    snapshots: pl.DataFrame
    touchpoints: pl.DataFrame
    journeys: pl.DataFrame
    click_spend: pl.DataFrame


#: The export frames of a chunk are built and written a few hours at a time: the MySQL reads stay
#: one set per chunk, while the wide joined frames (names, shares: the step's peak memory) only
#: ever hold at most a day and at most about BUILD_ROWS touchpoints (an hour with more is built
#: alone; 10M clicks, 24-hour chunks: 1.35 instead of 3.2 GiB, bench/HISTORY.md).
BUILD_HOURS = 24
BUILD_ROWS = 500_000


def build_parts(hours: Sequence[int], touches: pl.DataFrame, *, max_hours: int | None = None,
                max_rows: int | None = None) -> list[tuple[int, ...]]:
    """Consecutive groups of ``hours`` to build together: at most ``max_hours`` hours and, unless
    one hour alone has more, at most ``max_rows`` of the ``touches`` rows (by ``date_hour``)."""
    counts = dict(touches.group_by("date_hour").len().iter_rows()) if touches.height else {}
    return group_hours(hours, counts, max_hours=BUILD_HOURS if max_hours is None else max_hours,
                       max_rows=BUILD_ROWS if max_rows is None else max_rows)


def group_hours(hours: Sequence[int], rows: dict[int, int], *, max_hours: int, max_rows: int) -> list[tuple[int, ...]]:
    """``hours`` in ascending order, in consecutive groups of at most ``max_hours`` hours and, unless
    one hour alone has more, at most ``max_rows`` rows (``rows``: per hour; absent: none)."""
    max_hours, max_rows = max(1, int(max_hours)), max(1, int(max_rows))
    parts: list[tuple[int, ...]] = []
    part: list[int] = []
    total = 0
    for hour in sorted(hours):
        n = rows.get(hour, 0)
        if part and (len(part) >= max_hours or total + n > max_rows):
            parts.append(tuple(part))
            part, total = [], 0
        part.append(hour)
        total += n
    if part:
        parts.append(tuple(part))
    return parts


def build_exports(stored: StoredRows, journeys: pl.DataFrame, hours: Sequence[int], spend: pl.DataFrame) -> HourExports:
    """The export frames of ``hours`` (any of the chunk's hours, not necessarily contiguous) from a
    chunk's stored rows, its export-schema ``journeys`` and its clicks' ``spend`` (``exports/spend.py``)."""
    within = pl.col("date_hour").is_in(list(hours))
    snaps = stored.snapshots.filter(within)
    touch = touch_frame(stored.touches.filter(within), snaps, stored.clicks)
    days_journeys = journeys.filter(within)
    return HourExports(snapshots_export(snaps), touchpoints_export(touch, stored.names, journey_index(days_journeys)),
                       days_journeys, click_spend_export(spend.filter(within), stored.names))


def read_stored(engine: Engine, hours: Sequence[int], extra_touches: Sequence[pl.DataFrame] = ()) -> tuple[
        pl.DataFrame, pl.DataFrame, Names]:
    """The global snapshots of ``hours``, their touchpoints joined (:func:`touch_frame`) and the names."""
    rows = read_stored_rows(engine, hours, extra_touches)
    snaps = rows.snapshots.filter(GLOBAL)
    return snaps, touch_frame(rows.touches, snaps, rows.clicks), rows.names
