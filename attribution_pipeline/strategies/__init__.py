"""Credit strategies: how each attribution model shares a conversion among its journey's touches.

Every strategy is ``credit(journeys, models) -> LazyFrame``: ``journeys`` has one row per touch
(``frames.JOURNEYS``: positions 0..n-1 in journey order, not necessarily sorted), ``models`` one
row per model of that strategy (model_id, user_id and its parameters). Every model of a user
applies to every journey of that user (``per_model.touches`` lays the touches out so). The result
is ``frames.STRATEGY_OUTPUT``: one row per (model, conversion, touch) with credit > 0, the
unrounded double PHP computes (spec §3), followed by the ``per_model.CARRIED`` columns
(date_hour, payout, cpc) where ``journeys`` has them.
"""

from collections.abc import Callable

import polars as pl

from attribution_pipeline.strategies import (
    assisted,
    first_touch,
    last_touch,
    linear,
    position_based,
    time_decay,
)

#: The journey columns (``frames.JOURNEYS``) the strategies read.
JOURNEY_INPUT = ("user_id", "conv_id", "conv_time", "position", "n", "click_id", "click_time", "is_converting")

Strategy = Callable[[pl.LazyFrame, pl.LazyFrame], pl.LazyFrame]

STRATEGIES: dict[str, Strategy] = {
    "last_touch": last_touch.credit,
    "time_decay": time_decay.credit,
    "position_based": position_based.credit,
    "assisted": assisted.credit,
    "first_touch": first_touch.credit,
    "linear": linear.credit,
}

#: Prosper202 model_type -> strategy. PHP computes ``algorithmic`` as last touch (D7); first_touch
#: and linear exist only in the v3 API and are computed here as D7 defines them.
MODEL_TYPE_STRATEGY: dict[str, str] = {
    "last_touch": "last_touch",
    "time_decay": "time_decay",
    "position_based": "position_based",
    "assisted": "assisted",
    "algorithmic": "last_touch",
    "first_touch": "first_touch",
    "linear": "linear",
}


def credit_each(journeys: pl.LazyFrame, models: pl.LazyFrame) -> list[pl.LazyFrame]:
    """Credits of every model, one frame per strategy: each strategy's models (by the ``strategy``
    column) go to its function; models whose strategy is null or unknown are ignored.

    ``models`` has one row per model (no date_hour) plus ``strategy``.
    """
    return [credit(journeys, models.filter(pl.col("strategy") == name)) for name, credit in STRATEGIES.items()]


def credit_all(journeys: pl.LazyFrame, models: pl.LazyFrame) -> pl.LazyFrame:
    """Credits of every model (:func:`credit_each`), concatenated (``frames.STRATEGY_OUTPUT``)."""
    return pl.concat(credit_each(journeys, models), how="vertical")
