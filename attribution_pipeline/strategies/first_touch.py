"""First touch (decision D7; PHP has no such strategy).

All the credit (1.0) goes to the first touch of the journey (position 0), on its own click id.
One row per (model, conversion).
"""

import polars as pl

from attribution_pipeline.frames import STRATEGY_OUTPUT


def credit(journeys: pl.LazyFrame, models: pl.LazyFrame) -> pl.LazyFrame:
    return (
        journeys.filter(pl.col("position") == 0)
        .select("user_id", "conv_id", "position", "click_id")
        .join(models.select("model_id", "user_id"), on="user_id")
        .with_columns(credit=pl.lit(1.0))
        .select(*STRATEGY_OUTPUT)
        .cast(STRATEGY_OUTPUT)
    )
