"""Hour selection (D3, D17), time parsing, the schedule window, and stored precision (D14)."""

from decimal import Decimal

import polars as pl
import pytest

from attribution_pipeline.errors import BeforePartitionsStartError, EmptySelectionError, InvalidWindowError
from attribution_pipeline.automation.schedules import trailing_window
from attribution_pipeline.core.hours import hour_key, key_hour, parse_time, select_hours
from attribution_pipeline.core.precision import stored_credit, stored_money

T = 1717232400  # 2024-06-01 09:00 UTC
START = key_hour("2023-01-01-00:00")


def test_parse_time_forms():
    assert parse_time("1717232400") == T
    assert parse_time("2024-06-01T09:00:00") == T  # no offset: UTC
    assert parse_time("2024-06-01T09:00:00Z") == T
    assert parse_time("2024-06-01T11:00:00+02:00") == T
    assert parse_time("2024-06-01 09:00") == T
    assert parse_time("2024-06-01-09:00") == T
    with pytest.raises(InvalidWindowError, match="epoch seconds or ISO-8601"):
        parse_time("yesterday")


def test_hour_keys_round_trip():
    assert hour_key(T) == "2024-06-01-09:00"
    assert key_hour("2024-06-01-09:00") == T


def test_selection_takes_whole_overlapping_complete_hours():
    sel = select_hours(T + 1000, T + 3 * 3600 + 1, now=T + 10 * 3600, first_partition_hour=START)
    assert sel.hours == (T, T + 3600, T + 7200, T + 10800)  # partial first/last hours become whole hours
    assert sel.incomplete == ()


def test_end_is_exclusive():
    sel = select_hours(T, T + 7200, now=T + 10 * 3600, first_partition_hour=START)
    assert sel.hours == (T, T + 3600)


def test_incomplete_hours_are_left_out_with_notice():
    sel = select_hours(T, T + 5 * 3600, now=T + 2 * 3600 + 5, first_partition_hour=START)
    assert sel.hours == (T, T + 3600)
    assert sel.incomplete == (T + 7200, T + 10800, T + 14400)


def test_named_errors_before_anything_runs():
    with pytest.raises(InvalidWindowError, match="earlier than end"):
        select_hours(T, T, now=T + 99999, first_partition_hour=START)
    with pytest.raises(EmptySelectionError):
        select_hours(T, T + 3600, now=T + 100, first_partition_hour=START)
    with pytest.raises(BeforePartitionsStartError, match="ATTRIBUTION_PARTITIONS_START"):
        select_hours(START - 7200, START + 3600, now=T, first_partition_hour=START)


def test_schedule_window_is_the_trailing_24_complete_hours():
    first, last = trailing_window(T + 15 * 60)  # 09:15
    assert last == T - 3600  # 08:00-08:59 is the last complete hour
    assert first == T - 24 * 3600
    assert (last - first) // 3600 + 1 == 24


@pytest.mark.parametrize(
    "value, credit, money",
    [
        (0.123455, "0.12346", "0.1235"),
        (12.34565, None, "12.3457"),
        (99.99999999999999, None, "100.0000"),
        (0.0000049999, "0.00000", "0.0000"),
        (-0.000005, "-0.00001", "-0.0000"),
        (1 / 3, "0.33333", "0.3333"),
        (0.14344685529809312, "0.14345", "0.1434"),
        (0.19999999999999996, "0.20000", "0.2000"),
        (1e-300, "0.00000", "0.0000"),
        (1.0, "1.00000", "1.0000"),
    ],
)
def test_stored_precision_matches_mysql_rounding_of_php_doubles(value, credit, money):
    df = pl.DataFrame({"x": [value]})
    if credit is not None:
        assert str(df.select(stored_credit(pl.col("x")))["x"][0]) == credit
    got = df.select(stored_money(pl.col("x")))["x"][0]
    assert got == Decimal(money)


def test_fast_quantize_equals_the_exact_decimal_path():
    import random

    from attribution_pipeline.core.precision import CREDIT_DTYPE, MONEY_DTYPE, quantize, stored_decimal

    rng = random.Random(5)
    ties = [round(rng.randrange(0, 100000) / 100000 + 5e-6, 6) for _ in range(5000)]
    credits = pl.Series("x", [rng.random() for _ in range(300_000)] + ties + [0.123455, 1e-300, 0.0, 1.0, 0.000005])
    money = pl.Series("x", [rng.uniform(-1e4, 1e7) for _ in range(300_000)] + [12.34565, 99.99999999999999, -0.00005])
    for values, dtype in ((credits, CREDIT_DTYPE), (money, MONEY_DTYPE)):
        exact = values.to_frame().select(stored_decimal(pl.col("x"), dtype)).to_series()
        assert quantize(values, dtype).equals(exact)


def test_credits_stage_stores_a_near_tie_credit_as_mysql_does():
    """Position based 0.000035 / 0.5 over three touches credits the first exactly 0.000035, a
    double whose x 10**5 rounds to just below the tie: MySQL stores 0.00004 (its shortest form
    rounded half away), where rounding the double numerically gives 0.00003. The credits stage
    flags it and takes the exact path; revenue and cost use the unrounded credit."""
    from attribution_pipeline.core import frames
    from attribution_pipeline.core.crediting import compute_credits

    journeys = pl.DataFrame({
        "date_hour": [3600] * 3, "user_id": [1] * 3, "conv_id": [7] * 3, "conv_time": [3700] * 3,
        "position": [0, 1, 2], "n": [3] * 3, "click_id": [11, 12, 13], "click_time": [100, 200, 300],
        "is_converting": [False, False, True], "multi_touch": [True] * 3,
    }).with_columns(**{c: pl.lit(None) for c in frames.JOURNEYS if c.startswith("touch_")})
    conversions = pl.DataFrame({"date_hour": [3600], "conv_id": [7], "user_id": [1], "payout": [10.0], "cpc": [0.5]})
    conversions = conversions.with_columns(**{c: pl.lit(None) for c in frames.CONVERSIONS if c not in conversions.columns})
    models = pl.DataFrame({
        "date_hour": [3600], "model_id": [4], "user_id": [1], "strategy": ["position_based"],
        "first_touch_weight": [0.000035], "last_touch_weight": [0.5], "is_valid": [True],
    }).with_columns(**{c: pl.lit(None) for c in frames.MODELS if c not in ("date_hour", "model_id", "user_id", "strategy",
                                                                          "first_touch_weight", "last_touch_weight", "is_valid")})
    out = compute_credits(frames.conform(journeys, frames.JOURNEYS), frames.conform(conversions, frames.CONVERSIONS),
                          frames.conform(models, frames.MODELS)).sort("position")
    first = out.row(0, named=True)
    assert first["credit"] == 0.000035 and round(0.000035 * 10**5) == 3  # the numeric path would store 0.00003
    assert first["credit_stored"] == Decimal("0.00004")
    assert (first["revenue"], first["cost"]) == (10.0 * 0.000035, 0.5 * 0.000035)
    exact = out.select(stored_credit(pl.col("credit"))).to_series()
    assert out.get_column("credit_stored").equals(exact) and exact[2] == Decimal("0.50000")
    assert out.select("date_hour", "model_id", "user_id", "conv_id").unique().rows() == [(3600, 4, 1, 7)]
