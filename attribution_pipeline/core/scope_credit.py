"""Scoped snapshots: the global rows' credit split by the scope of each touch's own click (D31).

For a scope type ``T`` and a credited touch ``k`` (one row of frames.CREDITS: model ``m``,
conversion ``c``, position ``p``, credit ``w_k``), ``s_T(k)`` is the scope value of the touch's own
click: ``campaign`` = its ``aff_campaign_id``, ``advertiser`` = that campaign's ``aff_network_id``,
``account`` = its ``ppc_account_id``, ``traffic_source`` = that account's ``ppc_network_id``,
``landing_page`` = its ``landing_page_id``. A value of 0, null or not found (a campaign or account
that is gone) is *none*: the touch belongs to the remainder, which is never written. For every
(model, user, hour H, type T, value v):

* ``revenue_v = sum over k with s_T(k) = v, in (conv_id, position) order, of payout_c x w_k``
  (the touch's share of its conversion's revenue, D5); ``cost_v`` likewise with the converting
  click's cpc; both stored as DECIMAL(12,4) as MySQL rounds them (D14);
* ``attributed_clicks_v = #{k : s_T(k) = v, w_k > 0}``;
* ``attributed_conversions_v``: conversions apportioned by the largest remainder. Each conversion
  ``c`` gives value ``v`` the quota ``q_cv = sum_{k in c, s_T(k) = v} w_k / sum_{k in c} w_k``;
  ``Q_v = sum_c q_cv`` (rounded to 1e-9), ``N = #conversions`` (so ``sum_v Q_v = N``, the none
  bucket included). Each value gets ``floor(Q_v)``, and the ``N - sum_v floor(Q_v)`` seats left go
  to the largest ``Q_v - floor(Q_v)``, ties to the smaller scope id, the none bucket last.

So, per (model, user, hour, type), the rows plus the remainder add up to the global row: clicks
and conversions exactly, revenue and cost within 0.0001 per summed row (each is rounded once).
Everything here is pure Polars.
"""

import polars as pl

from attribution_pipeline.core.invariants import GROUP
from attribution_pipeline.core.precision import MONEY_DTYPE, quantize

SCOPE_KEY = [*GROUP, "scope_type", "scope_id"]

#: Scope values of each journey click, one row per (click, scope type); scope_id null = none. Keyed
#: by click, not position: last touch credits the converting click at position 0 (spec §3.1).
SCOPE_VALUES = {"click_id": pl.UInt64, "scope_type": pl.String, "scope_id": pl.Int64}

#: One row per (model, user, hour, scope type, scope value); scope_id null = the remainder.
SCOPED = {
    "date_hour": pl.Int64, "model_id": pl.Int64, "user_id": pl.Int64, "scope_type": pl.String,
    "scope_id": pl.Int64, "attributed_clicks": pl.Int64, "attributed_conversions": pl.Int64,
    "revenue": pl.Float64, "cost": pl.Float64, "attributed_revenue": MONEY_DTYPE, "attributed_cost": MONEY_DTYPE,
}

#: The touchpoints of scoped rows: one per credited touch of a scope value.
SCOPED_CREDITS = {
    "date_hour": pl.Int64, "model_id": pl.Int64, "user_id": pl.Int64, "scope_type": pl.String,
    "scope_id": pl.Int64, "conv_id": pl.Int64, "position": pl.Int32, "click_id": pl.UInt64,
    "credit_stored": pl.Decimal(10, 5),
}

#: The (model, user, hour, scope type) whose rows do not add up to the global row.
UNBALANCED = {"date_hour": pl.Int64, "model_id": pl.Int64, "user_id": pl.Int64, "scope_type": pl.String,
              "reason": pl.String}

#: The lookups: campaign -> advertiser, ppc account -> ppc network.
CAMPAIGNS = {"campaign_id": pl.Int64, "advertiser_id": pl.Int64}
ACCOUNTS = {"account_id": pl.Int64, "network_id": pl.Int64}


def _known(value: pl.Expr) -> pl.Expr:
    """``value``, or null when it is 0 or null (none)."""
    return pl.when(value.fill_null(0) != 0).then(value).otherwise(None).cast(pl.Int64)


def scope_values(journeys: pl.DataFrame, campaigns: pl.DataFrame, accounts: pl.DataFrame,
                 types: tuple[str, ...]) -> pl.DataFrame:
    """:data:`SCOPE_VALUES` of every click of ``journeys`` (frames.JOURNEYS) for ``types``:
    ``s_T(k)`` of the module docstring (0, null or an id not in the lookups = none); a click's
    attributes are its own wherever it appears."""
    touches = (
        journeys.unique(subset="click_id", keep="first").select("click_id", campaign=_known(pl.col("touch_campaign_id")),
                        account=_known(pl.col("touch_ppc_account_id")),
                        landing_page=_known(pl.col("touch_landing_page_id")))
        .join(campaigns.cast(CAMPAIGNS), left_on="campaign", right_on="campaign_id", how="left")
        .join(accounts.cast(ACCOUNTS), left_on="account", right_on="account_id", how="left")
        .with_columns(advertiser=_known(pl.col("advertiser_id")), traffic_source=_known(pl.col("network_id")))
    )
    parts = [touches.select("click_id", scope_type=pl.lit(t), scope_id=pl.col(t)) for t in types]
    return pl.concat([pl.DataFrame(schema=SCOPE_VALUES), *[p.cast(SCOPE_VALUES) for p in parts]])


def scoped_credits(credits: pl.DataFrame, values: pl.DataFrame) -> pl.DataFrame:
    """Each credit row (frames.CREDITS) once per scope type, with its touch's scope value."""
    return credits.join(values, on="click_id", how="inner")


def _apportioned(per_conv: pl.DataFrame) -> pl.DataFrame:
    """``attributed_conversions`` by the largest remainder (module docstring) from the quotas
    ``q`` of (group, scope type, conversion, value) rows."""
    bucket = [*GROUP, "scope_type"]
    quotas = (
        per_conv.group_by(SCOPE_KEY).agg(quota=pl.col("q").sum().round(9))
        .with_columns(whole=pl.col("quota").floor())
        .with_columns(frac=pl.col("quota") - pl.col("whole"),
                      last=pl.col("scope_id").is_null(), order_id=pl.col("scope_id").fill_null(0))
        .sort([*bucket, "frac", "last", "order_id"], descending=[False] * len(bucket) + [True, False, False])
    )
    seats = per_conv.group_by(bucket).agg(n=pl.col("conv_id").n_unique())
    return (
        quotas.join(seats, on=bucket)
        .with_columns(left=pl.col("n") - pl.col("whole").sum().over(bucket).cast(pl.Int64),
                      rank=pl.int_range(pl.len()).over(bucket))
        .select(*SCOPE_KEY, attributed_conversions=(pl.col("whole").cast(pl.Int64)
                                                    + (pl.col("rank") < pl.col("left")).cast(pl.Int64)))
    )


def scoped_rows(credits: pl.DataFrame, values: pl.DataFrame) -> pl.DataFrame:
    """:data:`SCOPED` from frames.CREDITS and :func:`scope_values`, the remainder included
    (``scope_id`` null): the sums and the apportionment of the module docstring, ordered by
    :data:`SCOPE_KEY` (the remainder last). Each scope type is computed on its own, from the credit
    columns the sums use only: every type's rows depend on its own values alone, and a chunk's
    credits once per type at once cost five times the memory of the credits (issue 17's dense
    tenant peaked there)."""
    narrow = credits.select(*GROUP, "conv_id", "position", "click_id", "credit", "revenue", "cost").sort(
        [*GROUP, "conv_id", "position"])
    types = values.get_column("scope_type").unique().sort().to_list()
    parts = [_rows_of_type(narrow, values.filter(pl.col("scope_type") == t)) for t in types]
    return pl.concat([pl.DataFrame(schema=SCOPED), *parts]).sort(SCOPE_KEY, nulls_last=True)


def _rows_of_type(credits: pl.DataFrame, values: pl.DataFrame) -> pl.DataFrame:
    """:data:`SCOPED` rows of the one scope type of ``values``, from ``credits`` sorted by
    (model, user, hour, conv_id, position): the join keeps that order, so each scope value's rows
    are summed in (conv_id, position) order (D14) without sorting the credits once per type."""
    rows = credits.join(values, on="click_id", how="inner", maintain_order="left")
    if rows.height == 0:
        return pl.DataFrame(schema=SCOPED)
    per_conv = rows.select(
        *SCOPE_KEY, "conv_id", q=pl.col("credit") / pl.col("credit").sum().over([*GROUP, "scope_type", "conv_id"]))
    sums = rows.group_by(SCOPE_KEY).agg(  # rows keep their order within a group: (conv_id, position)
        attributed_clicks=(pl.col("credit") > 0).sum().cast(pl.Int64),
        revenue=pl.col("revenue").cum_sum().last(), cost=pl.col("cost").cum_sum().last())
    out = sums.join(_apportioned(per_conv), on=SCOPE_KEY, how="left", nulls_equal=True)
    out = out.with_columns(quantize(out.get_column("revenue"), MONEY_DTYPE).alias("attributed_revenue"),
                           quantize(out.get_column("cost"), MONEY_DTYPE).alias("attributed_cost"))
    return out.select(list(SCOPED)).cast(SCOPED)


def written(scoped: pl.DataFrame) -> pl.DataFrame:
    """The rows that are written: every scope value but the remainder."""
    return scoped.filter(pl.col("scope_id").is_not_null())


def touchpoints(credits: pl.DataFrame, values: pl.DataFrame) -> pl.DataFrame:
    """:data:`SCOPED_CREDITS`: each credited touch under each scope type whose value it has."""
    rows = scoped_credits(credits, values).filter(pl.col("scope_id").is_not_null())
    return rows.select(list(SCOPED_CREDITS)).cast(SCOPED_CREDITS)


def unbalanced(scoped: pl.DataFrame, snapshots: pl.DataFrame) -> pl.DataFrame:
    """:data:`UNBALANCED`: (model, user, hour, type) whose rows of ``scoped`` (remainder included)
    do not add up to the global row of ``snapshots``: ``sum clicks = clicks``, ``sum conversions =
    conversions``, ``|sum revenue - revenue| <= 0.0001 x rows`` (cost likewise)."""
    bucket = [*GROUP, "scope_type"]
    money = ("attributed_revenue", "attributed_cost")
    totals = scoped.group_by(bucket).agg(
        pl.col("attributed_clicks", "attributed_conversions").sum(), *[pl.col(m).cast(pl.Float64).sum() for m in money],
        rows=pl.len())
    glob = snapshots.select(*GROUP, *[pl.col(c).alias(f"{c}_global") for c in
                                      ("attributed_clicks", "attributed_conversions", *money)])
    joined = totals.join(glob, on=GROUP, how="left")
    off = [(pl.col(m) - pl.col(f"{m}_global").cast(pl.Float64)).abs() > pl.col("rows") * 1e-4 + 1e-9 for m in money]
    reason = (
        pl.when(pl.col("attributed_clicks_global").is_null()).then(pl.lit("no global row"))
        .when(pl.col("attributed_clicks") != pl.col("attributed_clicks_global")).then(pl.lit("clicks differ"))
        .when(pl.col("attributed_conversions") != pl.col("attributed_conversions_global"))
        .then(pl.lit("conversions differ"))
        .when(off[0] | off[1].fill_null(True)).then(pl.lit("revenue or cost differ by more than 0.0001 a row"))
        .otherwise(None)
    )
    return joined.with_columns(reason=reason).filter(pl.col("reason").is_not_null()).select(list(UNBALANCED)).cast(
        UNBALANCED)
