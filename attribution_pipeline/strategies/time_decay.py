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

Bit-exact with PHP's doubles: ``total`` is a sequential sum, ``((0 + w[0]) + w[1]) + ...`` in
position order, never a pairwise ``sum()``. And ``/ 3600`` divides by a column of 3600s, not by a
literal: Polars divides by a scalar by multiplying with its reciprocal, which is not correctly
rounded (x * (1/3600) != x / 3600 for about 1 integer in 200).

How the sequential totals are computed: journeys frames come in *journey order* (each
conversion's touches adjacent, by position; the journeys stage writes them so), so with one
time-decay model per user (the usual case) each (model, conversion) is one run of rows. Then
the weights are scattered into a table with one row per position and one column per run, and
the rows are added top to bottom: position 0 of every run, plus position 1 of every run, ...
(one vectorised addition per position, a few dozen with the default cap) instead of a windowed
``cum_sum`` per run, which costs about ten times as much. A frame in any other order, or whose
longest journey would make that table mostly padding, or a user with several time-decay models
(whose rows interleave), takes the general path: ``cum_sum().last().over(model, conversion)`` ordered by position. Both give the
same bits (tested).
"""

import functools
import math
import operator

import polars as pl

from attribution_pipeline.strategies.per_model import credited, touches

DEFAULT_HALF_LIFE_HOURS = 48

#: Columns per position cost one addition over all runs: beyond this many list cells per touch
#: (a few journeys far longer than the rest) the windowed path is cheaper.
MAX_PADDING = 4


def credit(journeys: pl.LazyFrame, models: pl.LazyFrame) -> pl.LazyFrame:
    half_life = pl.col("half_life_hours").fill_null(DEFAULT_HALF_LIFE_HOURS).clip(lower_bound=1)
    decay = models.with_columns(
        k=math.log(2) / half_life.cast(pl.Float64),
        # 3600 as a column derived from a column, so that it reaches the touches as a column (a
        # literal would stay a scalar, and Polars divides by a scalar via its reciprocal).
        seconds_per_hour=pl.col("model_id") * 0 + 3600,
    )

    age = ((pl.col("conv_time") - pl.col("click_time")) / pl.col("seconds_per_hour")).clip(lower_bound=0.0)
    w, total = pl.col("w"), pl.col("total")

    weighted = touches(journeys, decay, ["k", "seconds_per_hour"]).with_columns(w=(-pl.col("k") * age).exp())
    schema = weighted.collect_schema()
    schema["total"] = pl.Float64
    return credited(
        weighted.map_batches(with_sequential_total, schema=schema)
        .with_columns(credit=pl.when(total > 0).then((w / total).clip(lower_bound=0.0)).otherwise(1.0 / pl.col("n")))
        .filter(pl.col("credit") > 0),
        journeys,
    )


def with_sequential_total(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` plus ``total``: each (model, conversion)'s ``w`` summed left to right by position."""
    totals = totals_by_position(frame)
    if totals is None:
        return frame.with_columns(total=pl.col("w").cum_sum().last().over(["model_id", "conv_id"], order_by="position"))
    return frame.with_columns(total=totals)


def totals_by_position(frame: pl.DataFrame) -> pl.Series | None:
    """The fast path of :func:`with_sequential_total`, or None where it cannot be used.

    Run r's weights are scattered into a zero-filled table, row ``position``, column r; the
    table's rows are then added top to bottom (``((row0 + row1) + row2) ...``), each addition one
    vectorised pass over all runs, and each run's total goes back to its touches.
    """
    if not frame.height or not _runs_in_position_order(frame):
        return None
    run = frame.select(((pl.col("position") == 0).cum_sum() - 1).cast(pl.UInt32)).to_series()
    runs = int(run.max()) + 1
    longest = int(frame.get_column("n").max())
    if runs * longest > MAX_PADDING * frame.height:
        return None
    cell = frame.select(pl.col("position").cast(pl.Int64) * runs + run).to_series()
    table = pl.zeros(runs * longest, pl.Float64, eager=True).scatter(cell, frame.get_column("w"))
    rows = [table.slice(p * runs, runs) for p in range(longest)]
    # PHP's array_sum order per run; the padding 0.0s of shorter runs are exact no-ops (w >= 0)
    return functools.reduce(operator.add, rows).gather(run).rename("total")


def _runs_in_position_order(frame: pl.DataFrame) -> bool:
    """Is every (model, conversion) one run of adjacent rows with positions 0, 1, ..., n-1?"""
    position, n = pl.col("position"), pl.col("n")
    same_run = (pl.col("model_id") == pl.col("model_id").shift(1)) & (pl.col("conv_id") == pl.col("conv_id").shift(1))
    continues = (same_run & (position == position.shift(1) + 1)).fill_null(False)
    ends = position.shift(-1, fill_value=0) == 0
    return frame.select(((position == 0) | continues) & (~ends | (position == n - 1))).to_series().all()
