"""What every strategy starts from and ends with: one row per (model, touch), and the output contract.

Every model of a user applies to every journey of that user. :func:`touches` lays that out: each
touch of ``journeys`` once per model of its user, with the model's id and the parameters the
strategy asks for. A strategy then only adds ``credit`` (and drops the touches it does not
credit); :func:`credited` shapes the result.

Usually a user has at most one model of a strategy. Then the layout is the user's touches as they
are, in their order, with the model's values picked from a small table indexed by user id: one
filter and one gather per column, no join (a join copies every column through a hash probe, which
made it the largest cost of crediting). Otherwise (several models of one strategy for a user,
user ids that do not fit such a table) it is a join, each touch followed by its user's models.
"""

from collections.abc import Sequence

import polars as pl

from attribution_pipeline.core.frames import STRATEGY_OUTPUT

#: Columns of ``journeys`` that go through every strategy unchanged when ``journeys`` has them: the
#: credits stage adds each conversion's payout and cpc to its touches before crediting, so that the
#: credited rows (about four per touch) need no lookup afterwards.
CARRIED = ("date_hour", "payout", "cpc")

#: Largest user id served by the lookup table (one slot per id up to it).
MAX_TABLE_USER_ID = 1 << 20


def touches(journeys: pl.LazyFrame, models: pl.LazyFrame, params: Sequence[str] = ()) -> pl.LazyFrame:
    """Each touch of ``journeys`` once per model of its user, plus ``model_id`` and the model's ``params``."""
    models = models.select("model_id", "user_id", *params).collect(engine="in-memory")  # small: no streaming start-up
    users = models.get_column("user_id")
    if (
        models.height == 0
        or users.null_count()
        or users.is_duplicated().any()
        or users.min() < 0
        or users.max() > MAX_TABLE_USER_ID
    ):
        return journeys.join(models.lazy(), on="user_id", maintain_order="left")
    slots = int(users.max()) + 1

    def by_user(name: str) -> pl.Expr:
        values = models.get_column(name)
        table = pl.repeat(None, slots, dtype=values.dtype, eager=True).scatter(users, values)
        return pl.lit(table).gather(pl.col("user_id")).alias(name)

    return journeys.filter(pl.col("user_id").is_in(users.implode())).with_columns(
        by_user(name) for name in ["model_id", *params]
    )


def credited(frame: pl.LazyFrame, journeys: pl.LazyFrame) -> pl.LazyFrame:
    """``frame`` as a strategy returns it: ``frames.STRATEGY_OUTPUT``, then the ``CARRIED`` columns of ``journeys``."""
    carried = [name for name in CARRIED if name in journeys.collect_schema()]
    return frame.select(*STRATEGY_OUTPUT, *carried).cast(STRATEGY_OUTPUT)
