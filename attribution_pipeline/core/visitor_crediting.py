"""Markov credit of visitor journeys (D32; the maths: docs/markov.md).

Each touch of a Markov model's visitor journey gets the channel its model names: ``account`` (the
touch click's ``ppc_account_id``), ``traffic_source`` (that account's ``ppc_network_id``) or
``landing_page`` (the click's ``landing_page_id``), a missing value being channel 0, as in the
training paths. A conversion of hour ``H`` is split by the shares of the fit whose window ends at
the start of ``H``'s UTC day (``window_end``), as ``core/markov_credit.py`` splits: in proportion
to the channels' shares, equally among one channel's touches. Touches left with no credit (a
channel of share 0 beside channels with a positive share) are dropped, as every strategy drops
the touches it does not credit.
"""

import polars as pl

from attribution_pipeline.core.markov_credit import split_credit
from attribution_pipeline.strategies.per_model import CARRIED, credited

DAY = 86_400
#: ``ppc_account_id`` -> ``ppc_network_id`` of the accounts the touches name.
NETWORKS = {"account_id": pl.Int64, "network_id": pl.Int64}


def _channel(touches: pl.DataFrame, networks: pl.DataFrame, name: str) -> pl.DataFrame:
    """``touches`` with ``channel`` as the Markov channel type ``name`` names it (a missing id: 0)."""
    account = pl.col("touch_ppc_account_id")
    if name == "traffic_source":
        expr = account.replace_strict(networks.get_column("account_id"), networks.get_column("network_id"),
                                      default=None, return_dtype=pl.Int64)
    else:
        expr = account if name == "account" else pl.col("touch_landing_page_id")
    kept = [c for c in ("user_id", "conv_id", "position", "click_id", "window_end", *CARRIED) if c in touches.columns]
    return touches.select(*kept, channel=expr.fill_null(0).clip(lower_bound=0).cast(pl.Int64))


def _for_models(frame: pl.DataFrame, models: pl.DataFrame) -> pl.DataFrame:
    """The touches of ``frame`` whose user has a model in ``models`` (at most one per user), each
    with that model's ``model_id``: a mapping, not a join, so the touches keep their journey order."""
    users, ids = models.get_column("user_id"), models.get_column("model_id")
    return frame.filter(pl.col("user_id").is_in(users.implode())).select(
        model_id=pl.col("user_id").replace_strict(users, ids, return_dtype=pl.Int64), *frame.columns)


def markov_credits(touches: pl.DataFrame, models: pl.DataFrame, shares: pl.DataFrame,
                   networks: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The credited touches (frames.STRATEGY_OUTPUT, then the carried columns of ``touches``) of
    every Markov model of ``models`` (one row per model: ``model_id``, ``user_id``,
    ``markov_channel``) over ``touches`` (visitor journeys with their conversion's carried
    columns), under ``shares`` (``model_id``, ``window_end``, ``channel``, ``model_channel``,
    ``share``); and how many conversions were split equally for want of a positive share."""
    markov = models.filter(pl.col("strategy") == "markov").select("model_id", "user_id", "markov_channel")
    if markov.height == 0 or touches.height == 0:
        return credited(touches.lazy().head(0).join(markov.lazy(), on="user_id").with_columns(
            credit=pl.lit(0.0)), touches.lazy()).collect(), 0
    # the n-th model of each user and channel type at once, each conversion's touches adjacent in
    # journey order (split_credit's fastest layout); only the channel types some model names
    dated = touches.with_columns(window_end=pl.col("date_hour") - pl.col("date_hour") % DAY)
    ranked = markov.with_columns(rank=pl.int_range(pl.len()).over("user_id", "markov_channel"))
    channels = {name: _channel(dated, networks.cast(NETWORKS), name)
                for name in markov.get_column("markov_channel").unique(maintain_order=True)}
    laid = pl.concat([_for_models(channels[name], group)
                      for (name, _), group in ranked.partition_by(["markov_channel", "rank"], as_dict=True,
                                                                  maintain_order=True).items()])
    split = split_credit(laid, shares, key=["model_id", "window_end"])
    out = credited(split.credits.lazy().filter(pl.col("credit") > 0), touches.lazy()).collect()
    return out, split.fallback_conversions
