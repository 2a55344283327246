"""Credits per (model, conversion, touch) for every valid model at once (spec 3; D1, D5, D7, D14).

Every valid model is computed independently of the others (D1: no PHP state aliasing), each by
its strategy (``strategies/``). A credited touch carries:

* ``revenue = conversion payout x credit`` and ``cost = converting click's cpc x credit`` (D5:
  the touch click's own cpc is never used for the PHP tables);
* ``credit_stored``: the DECIMAL(10,5) MySQL would store for the double (D14).
"""

import polars as pl

from attribution_pipeline import frames
from attribution_pipeline.precision import CREDIT_DTYPE, quantize
from attribution_pipeline.strategies import credit_all

_MODEL_PARAMS = ["model_id", "user_id", "strategy", "half_life_hours", "first_touch_weight", "last_touch_weight"]


def valid_models(models: pl.DataFrame) -> pl.DataFrame:
    """One row per valid model (the models frame repeats each model for every hour)."""
    return models.filter(pl.col("is_valid")).select(_MODEL_PARAMS).unique(subset="model_id", keep="first").sort("model_id")


def compute_credits(journeys: pl.DataFrame, conversions: pl.DataFrame, models: pl.DataFrame) -> pl.DataFrame:
    """frames.CREDITS for the conversions of ``journeys`` under every valid model of their users."""
    credited = credit_all(journeys.lazy(), valid_models(models).lazy())
    per_conversion = conversions.lazy().select("conv_id", "date_hour", "user_id", "payout", "cpc")
    out = credited.join(per_conversion, on="conv_id").with_columns(
        revenue=pl.col("payout") * pl.col("credit"),
        cost=pl.col("cpc") * pl.col("credit"),
    ).collect()
    out = out.with_columns(quantize(out.get_column("credit"), CREDIT_DTYPE).alias("credit_stored"))
    return frames.conform(out, frames.CREDITS, "credits")
