"""Scoped snapshots, pure (D31): hand-built journeys with known answers per model and scope type.

Two conversions of user 1 in hour T, of campaigns 10 and 20 (both advertiser 3):

* conversion 1 (payout 10, converting cpc 1): touches at 48 h, 24 h and 0 h before it, of
  accounts 1, 2, 3 (networks 5, 6, 5) and landing pages 7, none (0), 8;
* conversion 2 (payout 20, cpc 2), campaign 20: one touch, account 2 (network 6), landing page 8.

The expected rows are computed here with exact fractions from the models' credits (last touch
0,0,1; first touch 1,0,0; linear 1/3 each; position based 0.4,0.2,0.4; time decay with a 24 h
half-life 1/7,2/7,4/7), independently of the code under test, plus a few spelled out.
"""

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction as F

import polars as pl
import pytest

from attribution_pipeline.core import frames, scope_credit
from attribution_pipeline.core.crediting import compute_credits

T = 1717232400
H = 3600
CONV1, CONV2 = T + 1800, T + 2400
#: (conv_id, position, click_id, click_time, campaign, account, landing page)
TOUCHES = [(1, 0, 11, CONV1 - 48 * H, 10, 1, 7), (1, 1, 12, CONV1 - 24 * H, 10, 2, 0),
           (1, 2, 13, CONV1, 10, 3, 8), (2, 0, 21, CONV2, 20, 2, 8)]
PAYOUT, CPC = {1: F(10), 2: F(20)}, {1: F(1), 2: F(2)}
ADVERTISER, NETWORK = {10: 3, 20: 3}, {1: 5, 2: 6, 3: 5}
CREDITS = {  # model -> conversion 1's credits by position (conversion 2 always gets 1)
    "last_touch": (0, 0, 1), "first_touch": (1, 0, 0), "linear": (F(1, 3),) * 3,
    "position_based": (F(2, 5), F(1, 5), F(2, 5)), "time_decay": (F(1, 7), F(2, 7), F(4, 7)),
}
MODEL_IDS = {name: i for i, name in enumerate(CREDITS, start=1)}
TYPES = ("campaign", "advertiser", "account", "traffic_source", "landing_page")


def journeys() -> pl.DataFrame:
    rows = [{"date_hour": T, "user_id": 1, "conv_id": c, "conv_time": CONV1 if c == 1 else CONV2, "position": p,
             "n": 3 if c == 1 else 1, "click_id": k, "click_time": t, "is_converting": p == (2 if c == 1 else 0),
             "multi_touch": True, "touch_campaign_id": camp, "touch_ppc_account_id": acc,
             "touch_landing_page_id": lp, "touch_cpc": 0.1} for c, p, k, t, camp, acc, lp in TOUCHES]
    return pl.DataFrame(rows, schema=frames.JOURNEYS)


def conversions() -> pl.DataFrame:
    rows = [{"date_hour": T, "conv_id": c, "user_id": 1, "campaign_id": 10 * c, "click_id": k, "conv_time": ct,
             "click_time": ct, "payout": float(PAYOUT[c]), "cpc": float(CPC[c]), "ppc_account_id": 1,
             "landing_page_id": 8, "click_campaign_id": 10 * c, "click_rows": 1} for c, k, ct in ((1, 13, CONV1), (2, 21, CONV2))]
    return pl.DataFrame(rows, schema=frames.CONVERSIONS)


def models() -> pl.DataFrame:
    rows = [{"date_hour": T, "model_id": i, "user_id": 1, "model_name": n, "model_slug": n, "model_type": n,
             "strategy": n, "half_life_hours": 24 if n == "time_decay" else None,
             "first_touch_weight": 0.4 if n == "position_based" else None,
             "last_touch_weight": 0.4 if n == "position_based" else None, "is_valid": True, "error": None,
             "created_at": 0} for n, i in MODEL_IDS.items()]
    return pl.DataFrame(rows, schema=frames.MODELS)


def lookups():
    return (pl.DataFrame({"campaign_id": [10, 20], "advertiser_id": [3, 3]}, schema=scope_credit.CAMPAIGNS),
            pl.DataFrame({"account_id": [1, 2, 3], "network_id": [5, 6, 5]}, schema=scope_credit.ACCOUNTS))


def computed(types=TYPES) -> tuple[pl.DataFrame, pl.DataFrame]:
    credits = compute_credits(journeys(), conversions(), models())
    values = scope_credit.scope_values(journeys(), *lookups(), types)
    return scope_credit.scoped_rows(credits, values), credits


def value_of(scope_type: str, touch) -> int | None:
    _, _, _, _, camp, acc, lp = touch
    value = {"campaign": camp, "advertiser": ADVERTISER[camp], "account": acc, "traffic_source": NETWORK[acc],
             "landing_page": lp}[scope_type]
    return value or None


def money(x: F) -> str:
    return str((Decimal(x.numerator) / Decimal(x.denominator)).quantize(Decimal("0.0001"), ROUND_HALF_UP))


def expected(model: str, scope_type: str) -> dict:
    """value -> (clicks, conversions, revenue, cost) by exact fractions and the largest remainder."""
    per: dict = {}
    for touch in TOUCHES:
        c, p = touch[0], touch[1]
        w = F(CREDITS[model][p]) if c == 1 else F(1)
        if w <= 0:
            continue
        clicks, quota, revenue, cost = per.get(value_of(scope_type, touch), (0, F(0), F(0), F(0)))
        per[value_of(scope_type, touch)] = (clicks + 1, quota + w, revenue + PAYOUT[c] * w, cost + CPC[c] * w)
    whole = {v: int(q) for v, (_, q, _, _) in per.items()}
    seats = 2 - sum(whole.values())
    order = sorted(per, key=lambda v: (-(per[v][1] - whole[v]), v is None, v or 0))
    conv = {v: whole[v] + (1 if i < seats else 0) for i, v in enumerate(order)}
    return {v: (k, conv[v], money(r), money(c)) for v, (k, _, r, c) in per.items()}


@pytest.mark.parametrize("model", list(CREDITS))
@pytest.mark.parametrize("scope_type", TYPES)
def test_each_model_and_scope_type_matches_the_hand_computed_rows(model, scope_type):
    rows, _ = computed()
    got = {r["scope_id"]: (r["attributed_clicks"], r["attributed_conversions"], str(r["attributed_revenue"]),
                           str(r["attributed_cost"]))
           for r in rows.filter(model_id=MODEL_IDS[model], scope_type=scope_type).iter_rows(named=True)}
    assert got == expected(model, scope_type)


def test_spelled_out_answers():
    rows, _ = computed()

    def row(model, scope_type, scope_id):
        found = rows.filter(pl.col("model_id") == MODEL_IDS[model], pl.col("scope_type") == scope_type,
                            pl.col("scope_id").eq_missing(scope_id))
        r = found.row(0, named=True)
        return r["attributed_clicks"], r["attributed_conversions"], str(r["attributed_revenue"]), str(r["attributed_cost"])

    # last touch: the converting clicks take everything (account 3 for conversion 1, account 2 for 2)
    assert row("last_touch", "account", 3) == (1, 1, "10.0000", "1.0000")
    assert row("last_touch", "account", 2) == (1, 1, "20.0000", "2.0000")
    # linear: account 2 assists conversion 1 (1/3) and converts 2; quotas 2/3 (acc 1) and 4/3 (acc 2)
    # -> floors 0 and 1, the seat left goes to the larger remainder 2/3: account 1
    assert row("linear", "account", 1) == (1, 1, "3.3333", "0.3333")
    assert row("linear", "account", 2) == (2, 1, "23.3333", "2.3333")
    assert row("linear", "account", 3) == (1, 0, "3.3333", "0.3333")
    # traffic source: accounts 1 and 3 are network 5
    assert row("linear", "traffic_source", 5) == (2, 1, "6.6667", "0.6667")
    # time decay: landing page none (1/7 + 2/7 of conv 1 had pages 7 and 0) is the remainder
    assert row("time_decay", "landing_page", 8) == (2, 2, "25.7143", "2.5714")
    assert row("time_decay", "landing_page", None) == (1, 0, "2.8571", "0.2857")
    # first touch: conversion 1 goes to account 1 and landing page 7
    assert row("first_touch", "landing_page", 7) == (1, 1, "10.0000", "1.0000")
    # campaign: each conversion's own; advertiser: one row, the whole global row
    assert row("position_based", "campaign", 10) == (3, 1, "10.0000", "1.0000")
    assert row("position_based", "campaign", 20) == (1, 1, "20.0000", "2.0000")
    assert row("position_based", "advertiser", 3) == (4, 2, "30.0000", "3.0000")


def test_rows_and_remainder_add_up_to_the_global_rows():
    from attribution_pipeline.core.aggregation import build_snapshots

    rows, credits = computed()
    assert scope_credit.unbalanced(rows, build_snapshots(credits)).height == 0
    broken = rows.with_columns(attributed_clicks=pl.col("attributed_clicks") + 1)
    assert scope_credit.unbalanced(broken, build_snapshots(credits)).height == rows.select(
        "model_id", "scope_type").unique().height
    written = scope_credit.written(rows)
    assert written.filter(pl.col("scope_id").is_null()).height == 0
    touch = scope_credit.touchpoints(credits, scope_credit.scope_values(journeys(), *lookups(), TYPES))
    # every credited touch once per type, but for the landing-page-less one
    assert touch.height == credits.height * 5 - credits.filter(pl.col("click_id") == 12).height


def test_unknown_ids_and_no_types():
    rows, _ = computed(types=())
    assert rows.height == 0
    no_lookups = scope_credit.scope_values(journeys(), pl.DataFrame(schema=scope_credit.CAMPAIGNS),
                                           pl.DataFrame(schema=scope_credit.ACCOUNTS), ("advertiser", "traffic_source"))
    assert no_lookups.get_column("scope_id").null_count() == no_lookups.height


def test_largest_remainder_ties_go_to_the_smaller_scope_id():
    # linear over two touches of accounts 2 and 1 in one conversion: quotas 1/2 each -> account 1
    credits = pl.DataFrame({"date_hour": [T, T], "model_id": [1, 1], "user_id": [1, 1], "conv_id": [5, 5],
                            "position": [0, 1], "click_id": [1, 2], "credit": [0.5, 0.5], "revenue": [1.0, 1.0],
                            "cost": [0.5, 0.5], "credit_stored": [0.5, 0.5]}, schema=frames.CREDITS)
    values = pl.DataFrame({"click_id": [1, 2], "scope_type": ["account"] * 2, "scope_id": [2, 1]},
                          schema=scope_credit.SCOPE_VALUES)
    rows = scope_credit.scoped_rows(credits, values)
    assert dict(rows.select("scope_id", "attributed_conversions").iter_rows()) == {1: 1, 2: 0}
