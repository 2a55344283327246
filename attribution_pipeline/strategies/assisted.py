"""Assisted (PHP ``AssistedStrategy``): the credit goes to the touches that *assisted* the last one.

* n == 1: the only touch gets 1.0.
* n >= 2: the last touch of the journey (position n-1) gets nothing, whichever click it is (it may
  be a later click than the converting one, which then does get assist credit); each of the other
  n-1 touches gets ``1.0 / (n - 1)``.
"""

import polars as pl

from attribution_pipeline.strategies.per_model import credited, touches


def credit(journeys: pl.LazyFrame, models: pl.LazyFrame) -> pl.LazyFrame:
    n = pl.col("n")
    assists = journeys.filter((n == 1) | (pl.col("position") < n - 1))
    return credited(touches(assists, models).with_columns(credit=1.0 / (n - 1).clip(lower_bound=1)), journeys)
