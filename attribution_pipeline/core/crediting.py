"""Credits per (model, conversion, touch) for every valid model at once (spec §3; D1, D5, D7, D14).

Every valid model is computed independently of the others (D1: no PHP state aliasing), each by
its strategy (``strategies/``). A credited touch carries:

* ``revenue = conversion payout x credit`` and ``cost = converting click's cpc x credit`` (D5:
  the touch click's own cpc is never used for the PHP tables). A NULL payout is 0, as PHP's float
  cast makes it (it attributes no revenue; the ``zero_or_null_payouts`` check names it); a NULL cpc
  stays null, so the ``storable_values`` invariant holds the group (``core/invariants.py``);
* ``credit_stored``: the DECIMAL(10,5) MySQL would store for the double (D14).
"""

from dataclasses import dataclass

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core.precision import (
    CREDIT_DTYPE,
    near_tie,
    rounded,
    with_exact_ties,
)
from attribution_pipeline.core.visitor_crediting import markov_credits
from attribution_pipeline.strategies import JOURNEY_INPUT, credit_each


@dataclass
class VisitorInputs:
    """What models on visitor journeys need (D32): the journeys, the Markov shares of the fits the
    hours use, the accounts' networks; ``fallback_conversions`` is set by :func:`compute_credits`."""

    journeys: pl.DataFrame
    shares: pl.DataFrame
    networks: pl.DataFrame
    fallback_conversions: int = 0

    def of(self, conversions: pl.DataFrame) -> "VisitorInputs":
        """These inputs for the journeys of ``conversions`` only (a piece of an oversized hour)."""
        return VisitorInputs(self.journeys.join(conversions.select("conv_id"), on="conv_id", how="semi"),
                             self.shares, self.networks)

_MODEL_PARAMS = ["model_id", "user_id", "strategy", "half_life_hours", "first_touch_weight", "last_touch_weight",
                 "journey", "markov_channel"]
#: Models whose journeys are the converting visitor's (D32); every other valid model uses D2's.
ON_VISITOR = (pl.col("journey") == "visitor").fill_null(False)


def valid_models(models: pl.DataFrame) -> pl.DataFrame:
    """One row per valid model (the models frame repeats each model for every hour)."""
    return models.filter(pl.col("is_valid")).select(_MODEL_PARAMS).unique(subset="model_id", keep="first").sort("model_id")


def compute_credits(journeys: pl.DataFrame, conversions: pl.DataFrame, models: pl.DataFrame,
                    visitor: VisitorInputs | None = None) -> pl.DataFrame:
    """frames.CREDITS for the conversions of ``journeys`` under every valid model of their users.

    Each touch gets its conversion's payout and cpc first (one lookup per touch, which the
    strategies carry along), not each credited row afterwards (about four per touch). The plan is
    run by Polars' in-memory engine, which computes the strategies side by side on whole frames
    (its streaming engine took about twice as long here).

    Models on visitor journeys (D32) credit ``visitor.journeys`` instead: by their strategy, or
    (Markov) by ``visitor.shares`` (``core/visitor_crediting.py``).
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
    valid = valid_models(models)
    parts = credit_each(touches.lazy(), valid.filter(~ON_VISITOR).lazy())
    if visitor is not None and visitor.journeys.height and valid.filter(ON_VISITOR).height:
        visits = visitor.journeys.select(*JOURNEY_INPUT, "touch_ppc_account_id", "touch_landing_page_id").join(
            per_conversion, on="conv_id", maintain_order="left")
        parts += credit_each(visits.select(touches.columns).lazy(), valid.filter(ON_VISITOR).lazy())
        markov, visitor.fallback_conversions = markov_credits(visits, valid, visitor.shares, visitor.networks)
        parts.append(markov.lazy())
    out = pl.concat([part.with_columns(**per_credit) for part in parts]).collect(engine="in-memory")
    out = with_exact_ties(out, "credit", "credit_stored", "near_tie", CREDIT_DTYPE)
    return frames.conform(out, frames.CREDITS, "credits")
