"""Credits per (model, conversion, touch) for every valid model at once (spec §3; D1, D5, D7, D14).

Every valid model is computed independently of the others (D1: no PHP state aliasing), each by
its strategy (``strategies/``). A credited touch carries:

* ``revenue = conversion payout x credit`` and ``cost = converting click's cpc x credit`` (D5:
  the touch click's own cpc is never used for the PHP tables). A NULL payout is 0, as PHP's float
  cast makes it (it attributes no revenue; the ``zero_or_null_payouts`` check names it); a NULL cpc
  stays null, so the ``storable_values`` invariant holds the group (``core/invariants.py``);
* ``credit_stored``: the DECIMAL(10,5) MySQL would store for the double (D14).
"""

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core.precision import (
    CREDIT_DTYPE,
    near_tie,
    rounded,
    with_exact_ties,
)
from attribution_pipeline.strategies import JOURNEY_INPUT, credit_each

_MODEL_PARAMS = ["model_id", "user_id", "strategy", "half_life_hours", "first_touch_weight", "last_touch_weight"]


def valid_models(models: pl.DataFrame) -> pl.DataFrame:
    """One row per valid model (the models frame repeats each model for every hour)."""
    return models.filter(pl.col("is_valid")).select(_MODEL_PARAMS).unique(subset="model_id", keep="first").sort("model_id")


def compute_credits(journeys: pl.DataFrame, conversions: pl.DataFrame, models: pl.DataFrame) -> pl.DataFrame:
    """frames.CREDITS for the conversions of ``journeys`` under every valid model of their users.

    Each touch gets its conversion's payout and cpc first (one lookup per touch, which the
    strategies carry along), not each credited row afterwards (about four per touch). The plan is
    run by Polars' in-memory engine, which computes the strategies side by side on whole frames
    (its streaming engine took about twice as long here).
    """
    per_conversion = conversions.select("conv_id", "date_hour", "payout", "cpc")
    touches = journeys.select(JOURNEY_INPUT).join(per_conversion, on="conv_id", maintain_order="left")
    credit = pl.col("credit")
    per_credit = {
        "revenue": pl.col("payout").fill_null(0.0) * credit,
        "cost": pl.col("cpc") * credit,
        "credit_stored": rounded(credit, CREDIT_DTYPE),
        "near_tie": near_tie(credit, CREDIT_DTYPE),
    }
    # each strategy's rows get their columns in its own branch: the branches run side by side
    parts = credit_each(touches.lazy(), valid_models(models).lazy())
    out = pl.concat([part.with_columns(**per_credit) for part in parts]).collect(engine="in-memory")
    out = with_exact_ties(out, "credit", "credit_stored", "near_tie", CREDIT_DTYPE)
    return frames.conform(out, frames.CREDITS, "credits")
