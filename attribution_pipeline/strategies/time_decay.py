"""Time decay (PHP ``TimeDecayStrategy``): a touch's weight halves every ``half_life_hours``.

For a model with half-life h (an integer; null means the PHP default 48, and it is at least 1) and
a touch clicked ``age = max(0, (conv_time - click_time) / 3600)`` hours before the conversion
(a touch after the conversion has age 0)::

    w      = exp(-(ln 2 / h) * age)        # 1.0 at the conversion, 0.5 one half-life earlier
    total  = w[0] + w[1] + ... + w[n-1]    # left to right, in position order
    credit = max(0, w / total)             # if total <= 0 (every w underflowed): 1/n for all

A touch whose weight underflowed to exactly 0 (60 days old with h = 1) gets credit 0 and, like
every credit <= 0, is left out.

PHP then applies a drift fix: if the credits, summed left to right, differ from 1 by more than
0.0001, the last one absorbs the difference. It cannot fire, so it is not computed: every w is in
[0, 1], so rounding keeps that sum within (2n + 2) * 2**-53 of 1, under 5e-7 for any n < 2**31
(n is an Int32). Computing it would cost a second ordered pass over every touch. The tests compare
against a scalar port of the PHP code that includes it.

Bit-exact with PHP's doubles: ``total`` is a sequential sum (a ``cum_sum`` over the conversion's
touches ordered by position, read at the last one), never a pairwise ``sum()``. And ``/ 3600``
divides by a column of 3600s, not by a literal: Polars divides by a scalar by multiplying with
its reciprocal, which is not correctly rounded (x * (1/3600) != x / 3600 for about 1 integer in 200).
"""

import math

import polars as pl

from attribution_pipeline.frames import STRATEGY_OUTPUT

DEFAULT_HALF_LIFE_HOURS = 48


def credit(journeys: pl.LazyFrame, models: pl.LazyFrame) -> pl.LazyFrame:
    half_life = pl.col("half_life_hours").fill_null(DEFAULT_HALF_LIFE_HOURS).clip(lower_bound=1)
    decay = models.select(
        "model_id",
        "user_id",
        k=math.log(2) / half_life.cast(pl.Float64),
        # 3600 as a column derived from a column, so that the join gathers it as a column (a
        # literal would stay a scalar, and Polars divides by a scalar via its reciprocal).
        seconds_per_hour=pl.col("model_id") * 0 + 3600,
    )

    age = ((pl.col("conv_time") - pl.col("click_time")) / pl.col("seconds_per_hour")).clip(lower_bound=0.0)
    w, total = pl.col("w"), pl.col("total")
    sequential_total = w.cum_sum().last().over(["model_id", "conv_id"], order_by="position")

    return (
        journeys.select("user_id", "conv_id", "conv_time", "position", "n", "click_id", "click_time")
        .join(decay, on="user_id")
        .with_columns(w=(-pl.col("k") * age).exp())
        .with_columns(total=sequential_total)
        .with_columns(credit=pl.when(total > 0).then((w / total).clip(lower_bound=0.0)).otherwise(1.0 / pl.col("n")))
        .filter(pl.col("credit") > 0)
        .select(*STRATEGY_OUTPUT)
        .cast(STRATEGY_OUTPUT)
    )
