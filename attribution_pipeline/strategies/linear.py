"""Linear (decision D7; PHP has no such strategy).

Every touch of an n-touch journey gets ``1.0 / n`` (float division) at its own position.
"""

import polars as pl

from attribution_pipeline.strategies.per_model import credited, touches


def credit(journeys: pl.LazyFrame, models: pl.LazyFrame) -> pl.LazyFrame:
    return credited(touches(journeys, models).with_columns(credit=1.0 / pl.col("n")), journeys)
