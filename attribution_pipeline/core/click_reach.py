"""How far back a (user, hour)'s journeys can reach, found from the clicks before computing (D38).

A conversion of account ``u`` on campaign ``k`` at ``t`` in hour ``H`` has for journey the newest
``cap`` clicks of ``(u, k)`` in ``[t - lookback, t]`` plus its converting click (D2). Every click of
``(u, k)`` at or after ``H`` is newer than anything before ``H``, so when ``(u, k)`` has at least
``cap`` clicks in the hours before ``H``, the ``cap``-th newest of them, in hour ``R_k``, bounds the
journey: no click before ``R_k`` can be among its touches, whatever ``t`` in ``H`` is. The
converting click is in the conversion's own fingerprint (D15, D21). So the clicks the hour's rows
can depend on are the user's clicks with click hour in ``[start, H]``, where

    start = max(floor_hour(H - lookback), min over the hour's conversion campaigns k of R_k)

and ``start = floor_hour(H - lookback)`` (the whole lookback, as before D38) when any of those
campaigns has fewer than ``cap`` clicks in the ``REACH_HOURS`` hours before ``H``, or when the user
has a model on visitor journeys (D32: a visitor's clicks cross campaigns). An hour without
conversions has no rows: ``start = H`` (and, like a whole-lookback window, no copies below).

``R_k`` is a function of the data of ``[H - REACH_HOURS, H)``, never of the run's range, so two
runs over different ranges give an hour the same window and the same fingerprint. A change in the
window (a click added, deleted, edited or moved in or out of it) changes its count or sums, so a
change that moves ``R_k`` is seen too.

One thing outside the window still reaches into it: a click id stored twice for one user counts
once, with its smallest ``click_time`` (D15). A copy older than ``start`` of a click inside the
window would move that click back in time. So a reach-limited window also sums, per click, the
click's older copies of the same user wherever they lie (``copies``).
"""

import polars as pl

from attribution_pipeline.core.hours import HOUR

#: Hours before an hour searched for its campaigns' ``cap``-th newest click.
REACH_HOURS = 24

#: Counts and CRC32 sums per (user, campaign, click hour).
CAMPAIGN_PARTS = {"user_id": pl.Int64, "campaign_id": pl.Int64, "date_hour": pl.Int64,
                  "rows": pl.Int64, "sum_a": pl.Int64, "sum_b": pl.Int64}

#: The campaigns of each (user, conversion hour)'s conversions.
CONVERSION_CAMPAIGNS = {"user_id": pl.Int64, "date_hour": pl.Int64, "campaign_id": pl.Int64}

#: Per (user, hour): the first click hour of its window, and whether it is the reach's (an hour
#: with conversions, not the whole lookback): only then are the clicks' older copies summed.
STARTS = {"user_id": pl.Int64, "date_hour": pl.Int64, "start": pl.Int64, "reach_limited": pl.Boolean}


def lookback_start(hour: pl.Expr, lookback_seconds: int) -> pl.Expr:
    """``floor_hour(hour - lookback)``: the first click hour a conversion of ``hour`` can reach."""
    back = hour - lookback_seconds
    return back - back % HOUR


def campaign_reach(counts: pl.DataFrame, wanted: pl.DataFrame, cap: int) -> pl.DataFrame:
    """``user_id, date_hour, campaign_id, reach``: for each wanted (user, hour, campaign), the click
    hour of the campaign's ``cap``-th newest click before the hour, found among the clicks of the
    ``REACH_HOURS`` hours before it (null: fewer there).

    With ``cum`` the campaign's running click count over its click hours, ``before`` = ``cum`` of
    the last click hour before ``H`` and ``older`` = ``cum`` before ``H - REACH_HOURS``: found when
    ``before - older >= cap``; the click of rank ``before - cap + 1`` lies in the first click hour
    whose ``cum`` reaches that rank (an as-of join forward on ``cum``)."""
    keys = ["user_id", "campaign_id"]
    running = (counts.group_by(*keys, "date_hour").agg(pl.col("rows").sum()).sort(*keys, "date_hour")
               .select(*keys, click_hour="date_hour", cum=pl.col("rows").cum_sum().over(keys)))

    def cum_before(at: pl.Expr, name: str) -> pl.DataFrame:
        asked = wanted.with_columns(at=at).sort("at")
        return asked.join_asof(running.sort("click_hour"), left_on="at", right_on="click_hour", by=keys,
                               strategy="backward", check_sortedness=False).select(
            "user_id", "date_hour", "campaign_id", pl.col("cum").fill_null(0).alias(name))

    before = cum_before(pl.col("date_hour") - 1, "before")
    older = cum_before(pl.col("date_hour") - REACH_HOURS * HOUR - 1, "older")
    ranks = (before.join(older, on=["user_id", "date_hour", "campaign_id"])
             .with_columns(rank=pl.col("before") - cap + 1, found=pl.col("before") - pl.col("older") >= cap))
    found = ranks.filter(pl.col("found")).sort("rank").join_asof(
        running.sort("cum"), left_on="rank", right_on="cum", by=keys, strategy="forward", check_sortedness=False)
    return ranks.join(found.select("user_id", "date_hour", "campaign_id", reach="click_hour"),
                      on=["user_id", "date_hour", "campaign_id"], how="left").select(
        "user_id", "date_hour", "campaign_id", "reach")


def click_starts(grid: pl.DataFrame, counts: pl.DataFrame, conversion_campaigns: pl.DataFrame, *, cap: int,
                 lookback_seconds: int, full_users: list[int]) -> pl.DataFrame:
    """:data:`STARTS` for every (user, hour) of ``grid``: the window's first click hour (module
    docstring) from ``counts`` (:data:`CAMPAIGN_PARTS` of at least ``REACH_HOURS`` hours before the
    first hour of ``grid`` through its last) and the hours' conversion campaigns; ``full_users``
    (users with a model on visitor journeys) get the whole lookback."""
    wanted = (conversion_campaigns.cast(CONVERSION_CAMPAIGNS).unique()
              .join(grid.select("user_id", "date_hour"), on=["user_id", "date_hour"], how="semi"))
    per_hour = (campaign_reach(counts.cast(CAMPAIGN_PARTS), wanted, cap)
                .group_by("user_id", "date_hour")
                .agg(reach=pl.col("reach").min(), complete=pl.col("reach").is_not_null().all()))
    full = lookback_start(pl.col("date_hour"), lookback_seconds)
    whole = ~pl.col("complete") | pl.col("user_id").is_in(list(full_users))
    return (
        grid.select("user_id", "date_hour")
        .join(per_hour, on=["user_id", "date_hour"], how="left")
        .select("user_id", "date_hour",
                start=pl.when(pl.col("complete").is_null()).then(pl.col("date_hour"))  # no conversion
                .when(whole).then(full)
                .otherwise(pl.max_horizontal(full, pl.col("reach"))),
                reach_limited=pl.col("complete").is_not_null() & ~whole)
        .cast(STARTS)
    )


def window_sums(parts: pl.DataFrame, starts: pl.DataFrame, prefix: str) -> pl.DataFrame:
    """Per (user, hour) of ``starts``: ``parts`` (``user_id, date_hour, rows, sum_a, sum_b`` per
    click hour) summed over click hours ``start .. date_hour``, as the difference of two running
    totals, named ``{prefix}_rows``, ``{prefix}_a``, ``{prefix}_b``."""
    running = (
        parts.group_by("user_id", "date_hour").agg(pl.col("rows", "sum_a", "sum_b").sum())
        .sort("user_id", "date_hour")
        .with_columns(pl.col("rows", "sum_a", "sum_b").cum_sum().over("user_id"))
        .rename({"date_hour": "click_hour"})
        .sort("click_hour")
    )

    def totals(at: pl.Expr) -> pl.DataFrame:
        # sorted by "at" overall, so by user within: what an as-of join by group needs
        return starts.select("user_id", "date_hour", at=at).sort("at").join_asof(
            running, left_on="at", right_on="click_hour", by="user_id", strategy="backward",
            check_sortedness=False).select("user_id", "date_hour",
                                           *[pl.col(c).fill_null(0) for c in ("rows", "sum_a", "sum_b")])

    hi, lo = totals(pl.col("date_hour")), totals(pl.col("start") - 1)
    return hi.join(lo, on=["user_id", "date_hour"], suffix="_lo").select(
        "user_id", "date_hour",
        **{f"{prefix}_rows": pl.col("rows") - pl.col("rows_lo"),
           f"{prefix}_a": pl.col("sum_a") - pl.col("sum_a_lo"),
           f"{prefix}_b": pl.col("sum_b") - pl.col("sum_b_lo")},
    )
