"""Position based (PHP ``PositionBasedStrategy``): fixed shares for the first and last touches,
the rest split evenly among the touches in between.

Weights: ``first`` / ``last`` = the model's first_touch_weight / last_touch_weight (null -> 0.4);
``middle = max(0, 1 - (first + last))``; if first < 0 or last < 0, first = last = 0.4 and
middle = 1 - 0.8.

* n == 1: ``[1.0]``.
* n == 2: f = max(0, first), l = max(0, last): ``[f/(f+l), l/(f+l)]``, or ``[0.5, 0.5]`` if f+l <= 0.
* n >= 3: raw = ``[max(0, first), max(0, middle)/(n-2) x (n-2), max(0, last)]``;
  s = raw summed in PHP's key order (first, last, then the middles; left to right);
  s <= 0 -> 1/n for all; else credit = ``max(0, raw * (1.0 / s))`` (times the reciprocal, not a
  division). Drift fix: if the credits summed in that same order differ from 1 by more than 0.0001,
  the last credit becomes ``max(0, last + (1 - sum))`` (reachable only with invalid weights).

Credits <= 0 are left out (first = last = 0 credits only the middles; first + last = 1 only the
ends).

The credits depend only on (model, n), so they are computed once per (model, journey length)
in a small table of the three shares (first, middle, last); each touch then looks its share up by
(model, n, which of the three) with one ``replace_strict``, instead of a join that would copy
every column of the touches.
"""

import polars as pl

from attribution_pipeline.strategies.per_model import credited, touches

DEFAULT_WEIGHT = 0.4
DRIFT_TOLERANCE = 0.0001


def _php_order_sum(first: pl.Expr, last: pl.Expr, middle: pl.Expr) -> pl.Expr:
    """``first + last + middle + ... + middle`` (n-2 middles), summed left to right like PHP's array_sum."""
    terms = pl.concat_list(first, last, middle.repeat_by((pl.col("n") - 2).clip(lower_bound=0)))
    return terms.list.eval(pl.element().cum_sum()).list.last()


def _shares(lengths: pl.LazyFrame, models: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (model, journey length n in ``lengths``): the credit of the first, a middle and the last touch."""
    first0 = pl.col("first_touch_weight").fill_null(DEFAULT_WEIGHT)
    last0 = pl.col("last_touch_weight").fill_null(DEFAULT_WEIGHT)
    reset = (first0 < 0) | (last0 < 0)
    weights = models.select(
        "model",
        first=pl.when(reset).then(DEFAULT_WEIGHT).otherwise(first0),
        last=pl.when(reset).then(DEFAULT_WEIGHT).otherwise(last0),
        middle=pl.when(reset)
        .then(1.0 - (DEFAULT_WEIGHT + DEFAULT_WEIGHT))
        .otherwise((1.0 - (first0 + last0)).clip(lower_bound=0.0)),
    )

    n = pl.col("n")
    f, l = pl.col("first").clip(lower_bound=0.0), pl.col("last").clip(lower_bound=0.0)
    pair = f + l
    s, scale, total = pl.col("s"), pl.col("scale"), pl.col("total")
    equal = 1.0 / n
    c_first, c_middle, c_last = pl.col("c_first"), pl.col("c_middle"), pl.col("c_last")
    drift = (total - 1.0).abs() > DRIFT_TOLERANCE

    return (
        weights.join(lengths, how="cross")
        .with_columns(raw_middle=pl.col("middle").clip(lower_bound=0.0) / (n - 2))
        .with_columns(s=_php_order_sum(f, l, pl.col("raw_middle")))
        .with_columns(scale=1.0 / s)
        .with_columns(
            c_first=(f * scale).clip(lower_bound=0.0),
            c_middle=(pl.col("raw_middle") * scale).clip(lower_bound=0.0),
            c_last=(l * scale).clip(lower_bound=0.0),
        )
        .with_columns(total=_php_order_sum(c_first, c_last, c_middle))
        .select(
            "model",
            "n",
            c_first=pl.when(n == 1)
            .then(1.0)
            .when(n == 2)
            .then(pl.when(pair <= 0).then(0.5).otherwise(f / pair))
            .when(s <= 0)
            .then(equal)
            .otherwise(c_first),
            c_middle=pl.when(s <= 0).then(equal).otherwise(c_middle),
            c_last=pl.when(n == 2)
            .then(pl.when(pair <= 0).then(0.5).otherwise(l / pair))
            .when(s <= 0)
            .then(equal)
            .when(drift)
            .then((c_last + (1.0 - total)).clip(lower_bound=0.0))
            .otherwise(c_last),
        )
    )


def credit(journeys: pl.LazyFrame, models: pl.LazyFrame) -> pl.LazyFrame:
    models = models.with_row_index("model", offset=0).with_columns(pl.col("model").cast(pl.Int64))
    lengths = journeys.select(pl.col("n").unique()).collect(engine="in-memory")
    shares = _shares(lengths.lazy(), models).collect(engine="in-memory")
    # key of (model, n, share): 3 x (model x (longest + 1) + n) + 0 (first), 1 (middle) or 2 (last)
    span = int(lengths.get_column("n").max() or 0) + 1
    key = (pl.col("model") * span + pl.col("n")) * 3
    keys = shares.select(key).to_series()
    position, n = pl.col("position"), pl.col("n")
    share = pl.when(position == 0).then(0).when(position == n - 1).then(2).otherwise(1)
    looked_up = (key + share).replace_strict(
        pl.concat([keys, keys + 1, keys + 2]),
        pl.concat([shares.get_column("c_first"), shares.get_column("c_middle"), shares.get_column("c_last")]),
        return_dtype=pl.Float64,
    )
    # (with no shares at all, Polars 2.1 returns the keys' Int64 despite return_dtype)
    credit = looked_up if shares.height else pl.lit(0.0)
    return credited(touches(journeys, models, ["model"]).with_columns(credit=credit).filter(pl.col("credit") > 0), journeys)
