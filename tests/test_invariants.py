"""The write-back's invariants on hand-made frames: each group held for the reason it breaks."""

from decimal import Decimal

import polars as pl
import pytest

from attribution_pipeline.core import invariants
from attribution_pipeline.core.precision import CREDIT_DTYPE, MONEY_DTYPE

H = 1_735_689_600


def _frames(credit_rows, snapshot_rows):
    conversions = pl.DataFrame({"user_id": [1, 1], "date_hour": [H, H], "conv_id": [10, 11], "payout": [10.0, 5.0],
                                "click_rows": [2, 1]})
    journeys = pl.DataFrame({"user_id": [1, 1, 1], "date_hour": [H, H, H], "conv_id": [10, 10, 11],
                             "n": [2, 2, 1], "position": [0, 1, 0], "is_converting": [False, True, True]},
                            schema_overrides={"position": pl.Int32})
    credits = pl.DataFrame(
        [dict(model_id=m, user_id=1, date_hour=H, conv_id=c, position=p, credit=x, revenue=x * (10.0 if c == 10 else 5.0),
              cost=0.0, credit_stored=Decimal(f"{x:.5f}")) for m, c, p, x in credit_rows],
        schema_overrides={"position": pl.Int32, "credit_stored": CREDIT_DTYPE})
    snapshots = pl.DataFrame(
        [dict(model_id=m, user_id=1, date_hour=H, attributed_clicks=k, attributed_conversions=n, revenue=15.0, cost=0.0,
              attributed_revenue=Decimal("15.0000"), attributed_cost=Decimal("0.0000")) for m, k, n in snapshot_rows],
        schema_overrides={"attributed_revenue": MONEY_DTYPE, "attributed_cost": MONEY_DTYPE})
    models = pl.DataFrame({"model_id": [1, 2, 3], "user_id": [1, 1, 1]})
    return dict(conversions=conversions, journeys=journeys, credits=credits, snapshots=snapshots, models=models,
                touch_cap=25)


def test_each_group_is_held_for_the_invariant_it_breaks_and_only_it():
    credit_rows = [
        (1, 10, 0, 0.5), (1, 10, 1, 0.5), (1, 11, 0, 1.0),  # model 1: sound
        (2, 10, 0, 0.5), (2, 10, 1, 0.4), (2, 11, 0, 1.0),  # model 2: conversion 10's credits sum to 0.9
        (3, 10, 1, 1.0), (3, 11, 0, 1.0),  # model 3: sound credits, but its snapshot counts 4 clicks over 3 conversions
    ]
    held = invariants.held_groups(**_frames(credit_rows, [(1, 3, 2), (2, 3, 2), (3, 4, 3)]))
    reasons = {(r["model_id"], r["reason"].split(":")[0]): r["reason"] for r in held.iter_rows(named=True)}
    assert set(reasons) == {(2, "credit_sum"), (3, "snapshot_touchpoints"), (3, "snapshot_revenue")}
    assert reasons[(2, "credit_sum")] == "credit_sum: conversion 10 credits sum to 0.9"
    assert reasons[(3, "snapshot_touchpoints")] == (
        "snapshot_touchpoints: snapshot clicks/conversions 4/3 but touchpoints give 2/2")
    assert held.select(invariants.GROUP).unique().height == 2


def test_a_group_whose_touchpoints_have_no_snapshot_or_the_reverse_is_held():
    credit_rows = [(1, 10, 0, 0.5), (1, 10, 1, 0.5), (1, 11, 0, 1.0), (2, 11, 0, 1.0)]
    held = invariants.held_groups(**_frames(credit_rows, [(1, 3, 2), (3, 1, 1)]))
    found = {(r["model_id"], r["reason"]) for r in held.iter_rows(named=True) if r["reason"].startswith("snapshot_touch")}
    assert found == {
        (2, "snapshot_touchpoints: snapshot clicks/conversions null/null but touchpoints give 1/1"),
        (3, "snapshot_touchpoints: snapshot clicks/conversions 1/1 but touchpoints give null/null"),
    }


def test_without_groups_drops_their_rows_and_returns_the_frame_itself_when_there_are_none():
    frame = pl.DataFrame({"model_id": [1, 2], "user_id": [1, 1], "date_hour": [H, H], "x": [1, 2]})
    none = pl.DataFrame(schema={k: pl.Int64 for k in invariants.GROUP})
    assert invariants.without_groups(frame, none) is frame
    kept = invariants.without_groups(frame, pl.DataFrame({"model_id": [2], "user_id": [1], "date_hour": [H]}))
    assert kept.get_column("x").to_list() == [1]


def test_a_snapshot_in_an_hour_without_conversions_is_held_with_a_reason_naming_it():
    args = _frames([(1, 10, 0, 0.5), (1, 10, 1, 0.5), (1, 11, 0, 1.0)], [(1, 3, 2)])
    args["conversions"] = args["conversions"].with_columns(click_rows=pl.lit(0))
    held = invariants.held_groups(**args)
    assert held.get_column("reason").to_list() == [
        "snapshot_revenue: snapshot revenue 15.0 over 2 conversions, the hour's conversions give 0.0 over 0"]


@pytest.mark.parametrize("positions, n, broken", [
    ([0, 1, 2], 3, False),
    ([2, 0, 1], 3, False),  # any row order
    ([0], 1, False),
    ([0, 1, 1], 3, True),  # a position twice
    ([0, 2, 3], 3, True),  # a gap
    ([1, 2, 3], 3, True),  # not from 0
    ([0, 1, 2], 4, True),  # n says 4 touches
    ([0, 1, None], 3, True),  # a null position
    ([None], 1, True),
])
def test_journey_positions_are_exactly_zero_to_n_minus_one(positions, n, broken):
    """``journey_positions`` holds a journey unless its positions are 0..n-1, each once, with n its
    touches; the journey beside it (positions 0..1) is never held."""
    journeys = pl.DataFrame({
        "user_id": [1] * (len(positions) + 2), "date_hour": [H] * (len(positions) + 2),
        "conv_id": [7] * len(positions) + [8, 8], "position": [*positions, 1, 0],
        "n": [n] * len(positions) + [2, 2], "is_converting": [i == 0 for i in range(len(positions))] + [True, False],
    }, schema_overrides={"position": pl.Int32, "n": pl.Int32})
    found = invariants.journey_failures(journeys, touch_cap=25)
    positions_held = found.filter(pl.col("reason").str.starts_with("journey_positions")).get_column("conv_id").to_list()
    assert positions_held == ([7] if broken else [])
