"""First touch (decision D7; PHP has no such strategy).

All the credit (1.0) goes to the first touch of the journey (position 0), on its own click id.
One row per (model, conversion).
"""

import polars as pl

from attribution_pipeline.strategies.per_model import credited, touches


def credit(journeys: pl.LazyFrame, models: pl.LazyFrame) -> pl.LazyFrame:
    return credited(touches(journeys.filter(pl.col("position") == 0), models).with_columns(credit=pl.lit(1.0)), journeys)
