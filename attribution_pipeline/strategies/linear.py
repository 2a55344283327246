"""Linear (decision D7; PHP has no such strategy).

Every touch of an n-touch journey gets ``1.0 / n`` (float division) at its own position.
"""

import polars as pl

from attribution_pipeline.frames import STRATEGY_OUTPUT


def credit(journeys: pl.LazyFrame, models: pl.LazyFrame) -> pl.LazyFrame:
    return (
        journeys.select("user_id", "conv_id", "position", "n", "click_id")
        .join(models.select("model_id", "user_id"), on="user_id")
        .with_columns(credit=1.0 / pl.col("n"))
        .select(*STRATEGY_OUTPUT)
        .cast(STRATEGY_OUTPUT)
    )
