"""Hourly snapshots per (model, user, hour), global scope (spec §3.0, §4.1; D4, D5, D8, D14).

For each (model, user, hour H) with at least one conversion in H:

* ``attributed_clicks`` = number of credited touches (credit > 0);
* ``attributed_conversions`` = number of conversions;
* ``revenue`` = sum over conversions (conv_id order) of [sum over credited touches (journey
  order) of payout x credit]; ``cost`` likewise with the converting click's cpc.

Both sums are left-to-right double sums, exactly as PHP accumulates them (spec §3.7): a
``cum_sum`` over the ordered rows of each group (in ``group_by(maintain_order=True)``), whose last
value is the total (a ``sum()`` reduction would be pairwise and could change the last bit). The
stored DECIMAL(12,4) values are then derived as MySQL would round the double (D14). Hours without
conversions produce no row (D4).
"""

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core.packed_keys import packed_key, packed_order
from attribution_pipeline.core.precision import MONEY_DTYPE, quantize


def _ordered_total(column: str) -> pl.Expr:
    """The left-to-right double sum of ``column`` over a group's rows in their order (inside a
    ``group_by(..., maintain_order=True).agg``): the last value of its running sum."""
    return pl.col(column).cum_sum().last().alias(column)


def per_conversion(credits: pl.DataFrame) -> pl.LazyFrame:
    """One row per (model, conversion): its credited touches and its revenue and cost, each summed
    in journey order (spec §3.7). Sorted on one packed key of (model, conversion, position) and
    grouped on one of (model, conversion) (``core/packed_keys.py``) where the ids fit, else on
    the columns: the same rows in the same order either way."""
    totals = [pl.col("user_id").first(), pl.col("date_hour").first(), pl.len().alias("clicks"),
              _ordered_total("revenue"), _ordered_total("cost")]
    order = packed_order(credits, "model_id", ("conv_id", 32), ("position", 16))
    if isinstance(order, list):
        return credits.lazy().sort(order).group_by(["model_id", "conv_id"], maintain_order=True).agg(*totals)
    return (
        credits.lazy()
        .sort(order)
        .group_by(packed_key("model_id", ("conv_id", 32)).alias("_conversion"), maintain_order=True)
        .agg(pl.col("model_id").first(), pl.col("conv_id").first(), *totals)
        .drop("_conversion")
    )


def build_snapshots(credits: pl.DataFrame) -> pl.DataFrame:
    """frames.SNAPSHOTS from frames.CREDITS."""
    return snapshots_of(per_conversion(credits))


def build_snapshots_in_pieces(pieces: list[pl.DataFrame]) -> pl.DataFrame:
    """:func:`build_snapshots` of the credits of an hour given in pieces, each holding whole
    conversions (an hour over the memory budget): the per-conversion sums of each piece, then the
    ordered per-hour sums over all of them, so the result is the same as in one piece."""
    return snapshots_of(pl.concat([per_conversion(piece).collect() for piece in pieces]).lazy())


def snapshots_of(per_conv: pl.LazyFrame) -> pl.DataFrame:
    """frames.SNAPSHOTS from :func:`per_conversion` rows: sums per (model, user, hour) in
    ``conv_id`` order, rounded as MySQL stores them (D14)."""
    bucket = ["model_id", "user_id", "date_hour"]
    per_hour = (
        per_conv.sort([*bucket, "conv_id"])
        .group_by(bucket, maintain_order=True)
        .agg(
            pl.col("clicks").sum().alias("attributed_clicks"),
            pl.len().alias("attributed_conversions"),
            _ordered_total("revenue"),
            _ordered_total("cost"),
        )
    ).collect()
    per_hour = per_hour.with_columns(
        quantize(per_hour.get_column("revenue"), MONEY_DTYPE).alias("attributed_revenue"),
        quantize(per_hour.get_column("cost"), MONEY_DTYPE).alias("attributed_cost"),
    )
    return frames.conform(per_hour, frames.SNAPSHOTS, "snapshots")
