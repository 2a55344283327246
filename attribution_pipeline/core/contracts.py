"""Pandera (Polars) contracts of every frame that crosses an asset boundary.

Each model mirrors a column contract of :mod:`attribution_pipeline.core.frames` (names, order and
dtypes: ``strict`` and ``ordered``, so an extra, missing or re-typed column fails) and adds the value
rules the pipeline relies on. The ``frame_schema`` checks (``assets/check_kit.py``) validate the
*stored* frames with them, chunk by chunk; a failure is an ERROR-severity check naming the failing
hours and a sample of ids. All checks are vectorised Polars expressions.

========================  ===============================================================
model                     validates
========================  ===============================================================
:class:`Conversions`      ``conversions`` (frames.CONVERSIONS)
:class:`ClickSlice`       the click slice (frames.CLICKS), as it reaches ``journeys``
:class:`Journeys`         ``journeys`` (frames.JOURNEYS)
:class:`Models`           ``attribution_models`` (frames.MODELS)
:class:`Credits`          ``credits`` (frames.CREDITS)
:class:`Snapshots`        ``snapshots`` (frames.SNAPSHOTS)
========================  ===============================================================

Rules common to all: ids are positive; ``date_hour`` is a whole UTC hour (``% 3600 == 0``, D3,
D17); ``conv_time`` lies in ``[date_hour, date_hour + 3599]``; counts are non-negative.

What is deliberately *not* a schema rule, because a warning check reports it instead (it is odd
data, not a broken frame): a zero, negative or NULL payout, a missing click row (``click_rows = 0``,
D16), a click later than its conversion, a click id stored twice in ``202_clicks`` (D15).

The click slice is not stored as a frame: ``journeys`` reads it from ``202_clicks`` internally and
keeps, for every touch, the slice row it used (deduplicated, D15). :func:`click_slice_of_journeys`
maps those touch columns back to the slice's columns, so :class:`ClickSlice` validates exactly the
clicks the journeys were built from without re-reading 30 days of clicks. Touch attributes are
nullable because the converting click is added from ``202_conversion_logs`` when it is not in the
slice, and stored journeys (``ATTRIBUTION_JOURNEY_SOURCE=stored``) may name clicks the table no
longer holds.
"""

import copy
import functools
from typing import Annotated

import pandera.polars as pa
import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core.hours import HOUR
from attribution_pipeline.core.packed_keys import duplicated_rows
from attribution_pipeline.core.precision import CREDIT_DTYPE, MONEY_DTYPE

#: Credits are doubles; a credit of exactly 1 may come out a few ulps above it.
CREDIT_EPSILON = 1e-9


def _whole_hour(data) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key) % HOUR == 0)


def _conv_time_in_hour(data) -> pl.LazyFrame:
    return data.lazyframe.select(
        pl.col("conv_time").is_between(pl.col("date_hour"), pl.col("date_hour") + HOUR - 1)
    )


class _Contract(pa.DataFrameModel):
    class Config:
        strict = True  # no column beyond the contract
        ordered = True  # in the contract's order
        coerce = False  # dtypes must already be right: the stored frame is what is checked


class Conversions(_Contract):
    """One row per conversion of the hours (frames.CONVERSIONS)."""

    date_hour: pl.Int64 = pa.Field(ge=0)
    conv_id: pl.Int64 = pa.Field(gt=0, unique=True)
    user_id: pl.Int64 = pa.Field(gt=0)
    campaign_id: pl.Int64 = pa.Field(ge=0)
    click_id: pl.UInt64 = pa.Field(gt=0)
    conv_time: pl.Int64 = pa.Field(ge=0)
    click_time: pl.Int64 = pa.Field()
    payout: pl.Float64 = pa.Field(nullable=True)  # zero / NULL: warning check zero_or_null_payouts
    cpc: pl.Float64 = pa.Field(nullable=True, ge=0)  # NULL only for orphans (click_rows = 0)
    ppc_account_id: pl.Int64 = pa.Field(nullable=True, ge=0)
    landing_page_id: pl.Int64 = pa.Field(nullable=True, ge=0)
    click_campaign_id: pl.Int64 = pa.Field(nullable=True, ge=0)
    click_rows: pl.UInt32 = pa.Field(ge=0)

    @pa.check("date_hour", name="whole_utc_hour")
    def _date_hour(cls, data) -> pl.LazyFrame:
        return _whole_hour(data)

    @pa.dataframe_check(name="conv_time_in_its_hour")
    def _conv_time(cls, data) -> pl.LazyFrame:
        return _conv_time_in_hour(data)

    @pa.dataframe_check(name="found_click_has_cpc")
    def _found_click(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("click_rows") == 0) | pl.col("cpc").is_not_null())

    @pa.dataframe_check(name="payout_is_finite")
    def _payout(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("payout").is_null() | pl.col("payout").is_finite())


class ClickSlice(_Contract):
    """The clicks journeys were built from (frames.CLICKS; see :func:`click_slice_of_journeys`)."""

    click_id: pl.UInt64 = pa.Field(gt=0)
    user_id: pl.Int64 = pa.Field(gt=0)
    aff_campaign_id: pl.Int64 = pa.Field(nullable=True, ge=0)
    click_time: pl.Int64 = pa.Field(ge=0)
    ppc_account_id: pl.Int64 = pa.Field(nullable=True, ge=0)
    landing_page_id: pl.Int64 = pa.Field(nullable=True, ge=0)
    click_cpc: pl.Float64 = pa.Field(nullable=True, ge=0)


class Journeys(_Contract):
    """One row per touch of each conversion's journey, positions 0..n-1 (frames.JOURNEYS)."""

    date_hour: pl.Int64 = pa.Field(ge=0)
    user_id: pl.Int64 = pa.Field(gt=0)
    conv_id: pl.Int64 = pa.Field(gt=0)
    conv_time: pl.Int64 = pa.Field(ge=0)
    position: pl.Int32 = pa.Field(ge=0)
    n: pl.Int32 = pa.Field(ge=1)
    click_id: pl.UInt64 = pa.Field(gt=0)
    click_time: pl.Int64 = pa.Field()
    is_converting: pl.Boolean = pa.Field()
    multi_touch: pl.Boolean = pa.Field()
    touch_campaign_id: pl.Int64 = pa.Field(nullable=True, ge=0)
    touch_ppc_account_id: pl.Int64 = pa.Field(nullable=True, ge=0)
    touch_landing_page_id: pl.Int64 = pa.Field(nullable=True, ge=0)
    touch_cpc: pl.Float64 = pa.Field(nullable=True, ge=0)

    class Config:
        unique = ["conv_id", "position"]

    @pa.check("date_hour", name="whole_utc_hour")
    def _date_hour(cls, data) -> pl.LazyFrame:
        return _whole_hour(data)

    @pa.dataframe_check(name="conv_time_in_its_hour")
    def _conv_time(cls, data) -> pl.LazyFrame:
        return _conv_time_in_hour(data)

    @pa.dataframe_check(name="position_below_n")
    def _position(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("position") < pl.col("n"))


class Models(_Contract):
    """One row per (hour, active model of a selected user), valid or not (frames.MODELS)."""

    date_hour: pl.Int64 = pa.Field(ge=0)
    model_id: pl.Int64 = pa.Field(gt=0)
    user_id: pl.Int64 = pa.Field(gt=0)
    model_name: pl.String = pa.Field()
    model_slug: pl.String = pa.Field()
    model_type: pl.String = pa.Field()
    strategy: pl.String = pa.Field(nullable=True)
    half_life_hours: pl.Int64 = pa.Field(nullable=True, ge=1)
    first_touch_weight: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    last_touch_weight: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    is_valid: pl.Boolean = pa.Field()
    error: pl.String = pa.Field(nullable=True)
    created_at: pl.Int64 = pa.Field(nullable=True, ge=0)
    journey: pl.String = pa.Field(nullable=True, isin=["account_campaign", "visitor"])
    markov_channel: pl.String = pa.Field(nullable=True, isin=["account", "traffic_source", "landing_page"])
    markov_order: pl.Int64 = pa.Field(nullable=True, isin=[1, 2])
    training_days: pl.Int64 = pa.Field(nullable=True, ge=1, le=365)
    self_loops: pl.Boolean = pa.Field(nullable=True)

    class Config:
        unique = ["date_hour", "model_id"]

    @pa.check("date_hour", name="whole_utc_hour")
    def _date_hour(cls, data) -> pl.LazyFrame:
        return _whole_hour(data)

    @pa.dataframe_check(name="valid_iff_strategy_and_no_error")
    def _validity(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("is_valid") == pl.col("strategy").is_not_null())
            & (pl.col("is_valid") == pl.col("error").is_null())
        )


class Credits(_Contract):
    """One row per (model, conversion, credited touch) (frames.CREDITS)."""

    date_hour: pl.Int64 = pa.Field(ge=0)
    model_id: pl.Int64 = pa.Field(gt=0)
    user_id: pl.Int64 = pa.Field(gt=0)
    conv_id: pl.Int64 = pa.Field(gt=0)
    position: pl.Int32 = pa.Field(ge=0)
    click_id: pl.UInt64 = pa.Field(gt=0)
    credit: pl.Float64 = pa.Field(gt=0, le=1 + CREDIT_EPSILON)  # only credited touches are rows
    revenue: pl.Float64 = pa.Field()
    cost: pl.Float64 = pa.Field()
    # what DECIMAL(10,5) stores (D14); a tiny positive credit may store as 0.00000
    credit_stored: Annotated[pl.Decimal, CREDIT_DTYPE.precision, CREDIT_DTYPE.scale] = pa.Field(ge=0, le=1)

    class Config:
        unique = ["model_id", "conv_id", "position"]

    @pa.check("date_hour", name="whole_utc_hour")
    def _date_hour(cls, data) -> pl.LazyFrame:
        return _whole_hour(data)

    @pa.dataframe_check(name="revenue_and_cost_are_finite")
    def _finite(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("revenue").is_finite() & pl.col("cost").is_finite())


class Snapshots(_Contract):
    """One row per (model, user, hour) with conversions (frames.SNAPSHOTS)."""

    date_hour: pl.Int64 = pa.Field(ge=0)
    model_id: pl.Int64 = pa.Field(gt=0)
    user_id: pl.Int64 = pa.Field(gt=0)
    attributed_clicks: pl.Int64 = pa.Field(ge=0)
    attributed_conversions: pl.Int64 = pa.Field(ge=1)  # D4: no conversions, no row
    revenue: pl.Float64 = pa.Field()
    cost: pl.Float64 = pa.Field()
    # null where the value does not fit DECIMAL(12,4): the write-back holds that group (storable_values)
    attributed_revenue: Annotated[pl.Decimal, MONEY_DTYPE.precision, MONEY_DTYPE.scale] = pa.Field(nullable=True)
    attributed_cost: Annotated[pl.Decimal, MONEY_DTYPE.precision, MONEY_DTYPE.scale] = pa.Field(nullable=True)

    class Config:
        unique = ["model_id", "user_id", "date_hour"]

    @pa.check("date_hour", name="whole_utc_hour")
    def _date_hour(cls, data) -> pl.LazyFrame:
        return _whole_hour(data)

    @pa.dataframe_check(name="revenue_and_cost_are_finite")
    def _finite(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("revenue").is_finite() & pl.col("cost").is_finite())


#: Each model and the ``core/frames.py`` contract it mirrors; a test keeps them equal.
CONTRACTS: dict[type[pa.DataFrameModel], dict] = {
    Conversions: frames.CONVERSIONS,
    ClickSlice: frames.CLICKS,
    Journeys: frames.JOURNEYS,
    Models: frames.MODELS,
    Credits: frames.CREDITS,
    Snapshots: frames.SNAPSHOTS,
}


def click_slice_of_journeys(journeys: pl.DataFrame) -> pl.DataFrame:
    """The click-slice rows behind a journeys frame (frames.CLICKS columns), one per touch.

    A journey only holds clicks of the conversion's account (D2), so the touch's ``user_id`` is the
    conversion's. Columns missing from ``journeys`` stay missing, so the schema reports them.
    """
    renames = {
        "click_id": "click_id",
        "user_id": "user_id",
        "touch_campaign_id": "aff_campaign_id",
        "click_time": "click_time",
        "touch_ppc_account_id": "ppc_account_id",
        "touch_landing_page_id": "landing_page_id",
        "touch_cpc": "click_cpc",
    }
    return journeys.select([pl.col(src).alias(dst) for src, dst in renames.items() if src in journeys.columns])


def failure_cases(model: type[pa.DataFrameModel], df: pl.DataFrame) -> pl.DataFrame:
    """Pandera's failure cases of ``df`` under ``model`` (empty when it is valid), as ``reason``
    and ``index`` (the failing row of ``df``; null when the failure is about the frame itself: a
    missing, extra or misplaced column, a wrong dtype).

    A row failure's *value* is dropped on purpose: callers report ids taken from ``df`` by
    ``index``, never raw values. A frame failure keeps pandera's case (a column name or a dtype),
    e.g. ``column_in_dataframe: n``, ``user_id: dtype('Int64') (found Int32)``. The model's
    ``unique`` columns are tested here (``packed_keys.duplicated_rows``: the same rows, reason
    ``multiple_fields_uniqueness``, in a fifth of pandera's time on the credits), every other
    rule by pandera.
    """
    empty = pl.DataFrame(schema={"reason": pl.String, "index": pl.Int64})
    keys = list(model.to_schema().unique or [])
    duplicated = empty
    if keys and all(k in df.columns for k in keys):
        duplicated = duplicated_rows(df, keys).cast(pl.Int64).to_frame("index").select(
            reason=pl.lit("multiple_fields_uniqueness"), index=pl.col("index"))
    try:
        _without_unique(model).validate(df, lazy=True)
        cases = empty
    except pa.errors.SchemaErrors as exc:
        raw = exc.failure_cases.select(
            pl.col("failure_case").cast(pl.String), pl.col("column").cast(pl.String),
            pl.col("check").cast(pl.String), pl.col("index").cast(pl.Int64),
        )
        frame_level = pl.col("index").is_null()
        cases = raw.select(
            reason=pl.when(frame_level & (pl.col("column") == model.__name__))
            .then(pl.format("{}: {}", "check", pl.col("failure_case").fill_null("")))
            .when(frame_level)
            .then(pl.format("{}: {} (found {})", "column", "check", pl.col("failure_case").fill_null("")))
            .when(pl.col("column") == model.__name__)
            .then(pl.col("check"))
            .otherwise(pl.format("{}: {}", "column", "check")),
            index=pl.col("index"),
        )
    except pa.errors.SchemaError as exc:  # raised instead of SchemaErrors for some frame-level errors
        cases = pl.DataFrame({"reason": [str(exc).splitlines()[0][:200]], "index": [None]}, schema=empty.schema)
    return pl.concat([duplicated, cases])


@functools.cache
def _without_unique(model: type[pa.DataFrameModel]):
    """``model``'s schema without its ``unique`` rule (a copy: pandera caches the model's own)."""
    schema = copy.deepcopy(model.to_schema())
    schema.unique = None
    return schema
