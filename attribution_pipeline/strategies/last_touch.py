"""Last touch (PHP ``LastTouchStrategy``; also used for ``algorithmic`` models, decision D7).

The journey is ignored: each conversion gives credit 1.0 to its own click (the journey row with
``is_converting``), recorded at position 0 whatever that click's place in the journey, exactly as
PHP writes it. One row per (model, conversion), even when a stored journey (PHP rebuild
semantics, D13) holds the converting click more than once.
"""

import polars as pl

from attribution_pipeline.strategies.per_model import credited, touches


def credit(journeys: pl.LazyFrame, models: pl.LazyFrame) -> pl.LazyFrame:
    converting = journeys.filter(pl.col("is_converting")).unique(subset="conv_id", keep="any")
    return credited(touches(converting, models).with_columns(position=pl.lit(0, pl.Int32), credit=pl.lit(1.0)), journeys)
