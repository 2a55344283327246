"""The credit strategies against PHP's numbers (spec §3.8, §4.6, §6) and a scalar port of the PHP code.

The scalar port (``php_*`` below) follows the PHP source line by line with plain Python floats and
left-to-right sums (``functools.reduce(operator.add)``), which is what PHP's ``array_sum`` does; the
vectorised strategies must equal it exactly (``==``), not approximately.
"""

import functools
import inspect
import math
import operator
import pathlib
import random
from decimal import ROUND_HALF_UP, Decimal

import polars as pl
import pytest

from attribution_pipeline import strategies
from attribution_pipeline.core.frames import STRATEGY_OUTPUT
from attribution_pipeline.strategies import (
    MODEL_TYPE_STRATEGY,
    STRATEGIES,
    assisted,
    credit_all,
    first_touch,
    last_touch,
    linear,
    per_model,
    position_based,
    time_decay,
)

T = 1717232400  # 2024-06-01 09:00 UTC (spec §2.4)
H = 3600
DAY = 86400

JOURNEY_SCHEMA = {
    "user_id": pl.Int64,
    "conv_id": pl.Int64,
    "conv_time": pl.Int64,
    "position": pl.Int32,
    "n": pl.Int32,
    "click_id": pl.UInt64,
    "click_time": pl.Int64,
    "is_converting": pl.Boolean,
}
MODEL_SCHEMA = {
    "model_id": pl.Int64,
    "user_id": pl.Int64,
    "half_life_hours": pl.Int64,
    "first_touch_weight": pl.Float64,
    "last_touch_weight": pl.Float64,
}


# ------------------------------------------------------------------------------------------
# Building frames
# ------------------------------------------------------------------------------------------


def conversion(conv_id, conv_time, touches, converting=None, user_id=1):
    """A conversion: ``touches`` are (click_id, click_time); the converting click defaults to the last listed."""
    return {
        "conv_id": conv_id,
        "user_id": user_id,
        "conv_time": conv_time,
        "touches": list(touches),
        "converting": touches[-1][0] if converting is None else converting,
    }


def journey_touches(conv):
    """The touches in journey order: sorted by (click_time, click_id), as spec §2.3 / D2 number them."""
    return sorted(conv["touches"], key=lambda t: (t[1], t[0]))


def journeys_frame(conversions, shuffle_seed=None):
    rows = []
    for conv in conversions:
        ordered = journey_touches(conv)
        for position, (click_id, click_time) in enumerate(ordered):
            rows.append(
                {
                    "user_id": conv["user_id"],
                    "conv_id": conv["conv_id"],
                    "conv_time": conv["conv_time"],
                    "position": position,
                    "n": len(ordered),
                    "click_id": click_id,
                    "click_time": click_time,
                    "is_converting": click_id == conv["converting"],
                }
            )
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    return pl.DataFrame(rows, schema=JOURNEY_SCHEMA)


def models_frame(*models):
    rows = [{"user_id": 1, **m} for m in models]
    return pl.DataFrame(rows, schema=MODEL_SCHEMA)


def run(strategy, conversions, *models):
    """{(model_id, conv_id, position): (click_id, credit)} of ``strategy`` over the conversions."""
    out = strategy(journeys_frame(conversions).lazy(), models_frame(*models).lazy()).collect()
    assert out.schema == pl.Schema(STRATEGY_OUTPUT)
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in out.rows()}


def credits_by_position(result, model_id=1, conv_id=1):
    return {pos: c for (m, cv, pos), (_, c) in result.items() if m == model_id and cv == conv_id}


def stored(x):
    """What DECIMAL(10,5) stores for the double ``x`` (spec §3.7)."""
    return Decimal(repr(x)).quantize(Decimal("0.00001"), ROUND_HALF_UP)


def seq_sum(values):
    return functools.reduce(operator.add, values)


# ------------------------------------------------------------------------------------------
# Scalar port of the PHP strategies (202-config/Attribution/Calculation/*.php).
# Each takes the journey in position order [(click_id, click_time)] and returns {position: credit}
# with the touches PHP skips (credit <= 0) left out.
# ------------------------------------------------------------------------------------------


def php_time_decay(conv_time, journey, half_life):
    half_life = 48 if half_life is None else max(1, half_life)
    k = math.log(2) / max(half_life, 1)
    weights = [math.exp(-k * max(0, (conv_time - click_time) / 3600)) for _, click_time in journey]
    total = seq_sum(weights)
    if total <= 0.0:
        credits = [1.0 / len(journey)] * len(journey)
    else:
        credits = [max(0.0, w / total) for w in weights]
        normalised = seq_sum(credits)
        if abs(normalised - 1.0) > 0.0001:
            credits[-1] = max(0.0, credits[-1] + (1.0 - normalised))
    return {p: c for p, c in enumerate(credits) if c > 0.0}


def php_position_based(n, first, last):
    first = 0.4 if first is None else float(first)
    last = 0.4 if last is None else float(last)
    middle = max(0.0, 1.0 - (first + last))
    if first < 0.0 or last < 0.0:
        first, last = 0.4, 0.4
        middle = 1.0 - (first + last)
    if n == 1:
        credits = {0: 1.0}
    elif n == 2:
        f, l = max(0.0, first), max(0.0, last)
        total = f + l
        credits = {0: 0.5, 1: 0.5} if total <= 0.0 else {0: f / total, 1: l / total}
    else:
        credits = {}  # a dict keeps PHP's insertion order: 0, n-1, then 1..n-2
        credits[0] = max(0.0, first)
        credits[n - 1] = max(0.0, last)
        share = max(0.0, middle) / (n - 2)
        for i in range(1, n - 1):
            credits[i] = share
        s = seq_sum(credits.values())
        if s <= 0.0:
            credits = {i: 1.0 / n for i in range(n)}
        else:
            scale = 1.0 / s
            for i in range(n):
                credits[i] = max(0.0, credits[i] * scale)
            total = seq_sum(credits.values())
            if abs(total - 1.0) > 0.0001:
                credits[n - 1] = max(0.0, credits[n - 1] + (1.0 - total))
    return {p: c for p, c in credits.items() if c > 0.0}


def php_assisted(n):
    assists = n - 1 if n > 1 else 1
    share = 1.0 / assists
    return {p: share for p in range(n) if not (n > 1 and p == n - 1)}


def scalar_credits(strategy, conv, model):
    """{position: (click_id, credit)} the scalar port gives for one conversion and one model."""
    journey = journey_touches(conv)
    n = len(journey)
    if strategy == "last_touch":
        return {0: (conv["converting"], 1.0)}
    if strategy == "first_touch":
        credits = {0: 1.0}
    elif strategy == "linear":
        credits = {p: 1.0 / n for p in range(n)}
    elif strategy == "assisted":
        credits = php_assisted(n)
    elif strategy == "time_decay":
        credits = php_time_decay(conv["conv_time"], journey, model["half_life_hours"])
    elif strategy == "position_based":
        credits = php_position_based(n, model["first_touch_weight"], model["last_touch_weight"])
    return {p: (journey[p][0], c) for p, c in credits.items()}


# ------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------


def test_registry():
    assert set(STRATEGIES) == {"last_touch", "time_decay", "position_based", "assisted", "first_touch", "linear"}
    assert STRATEGIES["time_decay"] is time_decay.credit
    assert MODEL_TYPE_STRATEGY == {
        "last_touch": "last_touch",
        "time_decay": "time_decay",
        "position_based": "position_based",
        "assisted": "assisted",
        "algorithmic": "last_touch",
        "first_touch": "first_touch",
        "linear": "linear",
    }
    for fn in STRATEGIES.values():
        assert list(inspect.signature(fn).parameters) == ["journeys", "models"]


def test_strategy_code_is_vectorised():
    forbidden = ["map_elements", "map_rows", "iter_rows", "to_dicts", "rows()", "apply", "__future__"]
    for path in pathlib.Path(strategies.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert not [word for word in forbidden if word in text], path


@pytest.mark.parametrize("engine", ["in-memory", "streaming"])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_empty_inputs_give_empty_output_with_the_contract(name, engine):
    empty_journeys = pl.DataFrame(schema=JOURNEY_SCHEMA).lazy()
    out = STRATEGIES[name](empty_journeys, models_frame({"model_id": 1}).lazy()).collect(engine=engine)
    assert out.height == 0 and out.schema == pl.Schema(STRATEGY_OUTPUT)
    journeys = journeys_frame([conversion(1, T, [(1, T - 60)])]).lazy()
    out = STRATEGIES[name](journeys, pl.DataFrame(schema=MODEL_SCHEMA).lazy()).collect(engine=engine)
    assert out.height == 0 and out.schema == pl.Schema(STRATEGY_OUTPUT)


# ------------------------------------------------------------------------------------------
# Spec 3.8 reference numbers (PHP output, exact doubles)
# ------------------------------------------------------------------------------------------

THREE = conversion(1, T, [(9101, T - 3 * H), (9102, T - 2 * H), (9103, T - H)])
FOUR = conversion(1, T, [(11, T - 4 * H), (12, T - 3 * H), (13, T - 2 * H), (14, T - H)])
FIVE = conversion(1, T, [(21, T - 5 * H), (22, T - 4 * H), (23, T - 3 * H), (24, T - 2 * H), (25, T - H)])
TWO = conversion(1, T, [(31, T - 2 * H), (32, T - H)])


def test_position_based_0_4_0_4_three_touches():
    got = run(position_based.credit, [THREE], {"model_id": 1, "first_touch_weight": 0.4, "last_touch_weight": 0.4})
    assert got == {(1, 1, 0): (9101, 0.4), (1, 1, 1): (9102, 0.19999999999999996), (1, 1, 2): (9103, 0.4)}


def test_position_based_0_3_0_4_five_touches():
    got = run(position_based.credit, [FIVE], {"model_id": 1, "first_touch_weight": 0.3, "last_touch_weight": 0.4})
    assert credits_by_position(got) == {
        0: 0.30000000000000004,
        1: 0.10000000000000005,
        2: 0.10000000000000005,
        3: 0.10000000000000005,
        4: 0.40000000000000013,
    }


def test_position_based_0_2_0_6_two_touches():
    got = run(position_based.credit, [TWO], {"model_id": 1, "first_touch_weight": 0.2, "last_touch_weight": 0.6})
    assert got == {(1, 1, 0): (31, 0.25), (1, 1, 1): (32, 0.7499999999999999)}


def test_position_based_zero_weights_credit_only_the_middles():
    got = run(position_based.credit, [FOUR], {"model_id": 1, "first_touch_weight": 0.0, "last_touch_weight": 0.0})
    assert got == {(1, 1, 1): (12, 0.5), (1, 1, 2): (13, 0.5)}


def test_position_based_half_half_credits_only_the_ends():
    got = run(position_based.credit, [FOUR], {"model_id": 1, "first_touch_weight": 0.5, "last_touch_weight": 0.5})
    assert got == {(1, 1, 0): (11, 0.5), (1, 1, 3): (14, 0.5)}


def test_position_based_tie_on_click_time_orders_by_click_id():
    t = T - 3600
    conv = conversion(1, T, [(125, t), (121, t), (120, t + 540)], converting=120)
    got = run(position_based.credit, [conv], {"model_id": 1, "first_touch_weight": 0.4, "last_touch_weight": 0.4})
    assert got == {(1, 1, 0): (121, 0.4), (1, 1, 1): (125, 0.19999999999999996), (1, 1, 2): (120, 0.4)}


def test_position_based_null_or_negative_weights_mean_0_4():
    expected = {0: 0.4, 1: 0.19999999999999996, 2: 0.4}
    for first, last in [(None, None), (-0.1, 0.3), (0.3, -1.0)]:
        model = {"model_id": 1, "first_touch_weight": first, "last_touch_weight": last}
        got = run(position_based.credit, [THREE], model)
        assert credits_by_position(got) == expected, (first, last)


def test_position_based_drift_fix_with_invalid_huge_weights():
    # Unreachable with validated weights: 1e308 + 1e308 overflows, every scaled credit is 0, the
    # sum 0 is off by 1, so the last touch gets max(0, 0 + 1) = 1.0 (as the PHP code does).
    got = run(position_based.credit, [FOUR], {"model_id": 1, "first_touch_weight": 1e308, "last_touch_weight": 1e308})
    assert got == {(1, 1, 3): (14, 1.0)}
    assert php_position_based(4, 1e308, 1e308) == {3: 1.0}


def test_time_decay_h48_ages_96h_48h_half_hour():
    conv = conversion(1, T, [(1, T - 96 * H), (2, T - 48 * H), (3, T - 1800)])
    got = run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 48})
    assert got == {
        (1, 1, 0): (1, 0.14344685529809312),
        (1, 1, 1): (2, 0.28689371059618624),
        (1, 1, 2): (3, 0.5696594341057205),
    }
    assert stored(0.14344685529809312) == Decimal("0.14345")


def test_time_decay_h1_ages_2h_1h_0h():
    conv = conversion(1, T, [(1, T - 2 * H), (2, T - H), (3, T)])
    got = run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 1})
    assert credits_by_position(got) == {0: 0.14285714285714285, 1: 0.2857142857142857, 2: 0.5714285714285714}


def test_time_decay_h12_ages_13h_1h():
    conv = conversion(1, T, [(1, T - 13 * H), (2, T - H)])
    got = credits_by_position(run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 12}))
    expected = php_time_decay(T, journey_touches(conv), 12)
    assert got == expected
    assert abs(got[0] - 1 / 3) <= 1e-15 and abs(got[1] - 2 / 3) <= 1e-15


def test_time_decay_single_touch_whose_weight_underflows_gets_everything():
    conv = conversion(1, T, [(1, T - 60 * DAY)])
    assert run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 1}) == {(1, 1, 0): (1, 1.0)}


def test_time_decay_underflowed_touch_is_skipped():
    conv = conversion(1, T, [(1, T - 60 * DAY), (2, T - 60)], converting=1)
    assert run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 1}) == {(1, 1, 1): (2, 1.0)}


def test_time_decay_every_weight_underflowing_gives_equal_shares():
    conv = conversion(1, T, [(1, T - 90 * DAY), (2, T - 80 * DAY), (3, T - 70 * DAY)])
    got = run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 1})
    assert got == {(1, 1, p): (p + 1, 1.0 / 3) for p in range(3)}


def test_time_decay_half_life_below_one_counts_as_one():
    conv = conversion(1, T, [(1, T - 2 * H), (2, T - H), (3, T)])
    assert run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 0}) == run(
        time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 1}
    )


def test_time_decay_drift_fix_cannot_fire():
    # time_decay.py leaves PHP's drift fix out because the credits' left-to-right sum stays within
    # (2n + 2) * 2**-53 of 1; check that bound on awkward weights (subnormal, tiny, equal, long).
    rng = random.Random(11)
    for n in [2, 3, 26, 1000, 100_000]:
        for _ in range(20 if n < 1000 else 2):
            choices = [1.0, 0.5, 1e-300, 5e-324, 3e-310, rng.random(), rng.random() ** 40]
            weights = [rng.choice(choices) for _ in range(n)]
            total = seq_sum(weights)
            normalised = seq_sum([max(0.0, w / total) for w in weights])
            assert abs(normalised - 1.0) <= (2 * n + 2) * 2.0**-53 < 0.0001


def test_time_decay_null_half_life_means_48():
    conv = conversion(1, T, [(1, T - 96 * H), (2, T - 48 * H), (3, T - 1800)])
    got = run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": None})
    assert credits_by_position(got) == {0: 0.14344685529809312, 1: 0.28689371059618624, 2: 0.5696594341057205}


def test_time_decay_touch_after_the_conversion_has_age_zero():
    conv = conversion(1, T, [(1, T - H), (2, T), (3, T + 600)], converting=2)
    got = credits_by_position(run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 1}))
    assert got[1] == got[2] == 0.4 and got[0] == 0.2


def test_assisted_four_touches():
    got = run(assisted.credit, [FOUR], {"model_id": 1})
    third = 0.3333333333333333
    assert got == {(1, 1, 0): (11, third), (1, 1, 1): (12, third), (1, 1, 2): (13, third)}


def test_assisted_later_campaign_click_takes_the_last_place():
    conv = conversion(1, T, [(91, T - 900), (92, T - 60)], converting=91)
    assert run(assisted.credit, [conv], {"model_id": 1}) == {(1, 1, 0): (91, 1.0)}


def test_last_touch_ignores_the_journey():
    touches = [(101, T - 3 * DAY), (102, T - DAY), (103, T - H), (104, T - 600), (105, T + 1200)]
    conv = conversion(1, T, touches, converting=103)
    assert run(last_touch.credit, [conv], {"model_id": 7}) == {(7, 1, 0): (103, 1.0)}


def test_first_touch_and_linear():
    conv = conversion(1, T, [(103, T - H), (101, T - 3 * DAY), (102, T - DAY)])
    assert run(first_touch.credit, [conv], {"model_id": 1}) == {(1, 1, 0): (101, 1.0)}
    third = 1.0 / 3
    got = run(linear.credit, [conv], {"model_id": 1})
    assert got == {(1, 1, 0): (101, third), (1, 1, 1): (102, third), (1, 1, 2): (103, third)}


# ------------------------------------------------------------------------------------------
# Spec 4.6: the end-to-end example's credits (bucket T)
# ------------------------------------------------------------------------------------------

CLICKS_2_4 = [(101, T - 3 * DAY), (102, T - DAY), (103, T - H), (104, T - 600), (105, T + 1200)]
CONV1 = conversion(1, T + 300, CLICKS_2_4[:4], converting=104)
CONV2 = conversion(2, T + 1800, CLICKS_2_4, converting=103)


def stored_credits(result, conv_id):
    return [stored(c) for c in credits_by_position(result, conv_id=conv_id).values()]


def ordered(result):
    return dict(sorted(result.items()))


def test_end_to_end_example_position_based():
    model = {"model_id": 1, "first_touch_weight": 0.4, "last_touch_weight": 0.4}
    got = ordered(run(position_based.credit, [CONV1, CONV2], model))
    assert stored_credits(got, 1) == [Decimal(x) for x in ("0.40000", "0.10000", "0.10000", "0.40000")]
    assert stored_credits(got, 2) == [Decimal(x) for x in ("0.40000", "0.06667", "0.06667", "0.06667", "0.40000")]
    assert [got[(1, 2, p)][0] for p in range(5)] == [101, 102, 103, 104, 105]


def test_end_to_end_example_time_decay_h48():
    got = ordered(run(time_decay.credit, [CONV1, CONV2], {"model_id": 1, "half_life_hours": 48}))
    assert stored_credits(got, 1) == [Decimal(x) for x in ("0.11615", "0.23230", "0.32381", "0.32773")]
    assert stored_credits(got, 2) == [Decimal(x) for x in ("0.08732", "0.17465", "0.24345", "0.24640", "0.24818")]


def test_end_to_end_example_assisted():
    got = ordered(run(assisted.credit, [CONV1, CONV2], {"model_id": 1}))
    assert credits_by_position(got, conv_id=1) == {0: 1 / 3, 1: 1 / 3, 2: 1 / 3}
    assert credits_by_position(got, conv_id=2) == {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}
    assert got[(1, 2, 2)][0] == 103  # the converting click, not last, gets assist credit


def test_end_to_end_example_last_touch():
    got = run(last_touch.credit, [CONV1, CONV2], {"model_id": 1})
    assert got == {(1, 1, 0): (104, 1.0), (1, 2, 0): (103, 1.0)}


# ------------------------------------------------------------------------------------------
# Spec 6: the PHPUnit cases, at credit level
# ------------------------------------------------------------------------------------------

SIX_TS = 1704111300  # 2024-01-01 12:15:00 UTC


def test_phpunit_last_touch_credit_is_exactly_one():
    convs = [
        conversion(101, SIX_TS, [(1001, SIX_TS)]),
        conversion(102, SIX_TS + 120, [(1002, SIX_TS + 120)]),
        conversion(103, SIX_TS + 3600, [(1003, SIX_TS + 3600)]),
    ]
    got = run(last_touch.credit, convs, {"model_id": 10})
    assert got == {(10, 101, 0): (1001, 1.0), (10, 102, 0): (1002, 1.0), (10, 103, 0): (1003, 1.0)}


def test_phpunit_time_decay_half_life_curve():
    t = 1717232400
    conv = conversion(201, t, [(2001, t - 2 * H), (2002, t - H), (2003, t)])
    got = credits_by_position(run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 1}), conv_id=201)
    values = [got[p] for p in range(3)]
    assert all(abs(a - b) <= 1e-7 for a, b in zip(values, [1 / 7, 2 / 7, 4 / 7]))
    assert values[0] < values[1] < values[2]
    assert abs(seq_sum(values) - 1.0) <= 1e-9


def test_phpunit_time_decay_single_touch():
    conv = conversion(202, T, [(2002, T - 600)])
    assert run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 1}) == {(1, 202, 0): (2002, 1.0)}


def test_phpunit_position_based():
    model = {"model_id": 1, "first_touch_weight": 0.4, "last_touch_weight": 0.4}
    assert run(position_based.credit, [conversion(1, T, [(9001, T - 60)])], model) == {(1, 1, 0): (9001, 1.0)}
    three_touches = conversion(1, T, [(9101, T - 300), (9102, T - 200), (9103, T - 100)])
    three = credits_by_position(run(position_based.credit, [three_touches], model))
    assert all(abs(three[p] - c) <= 1e-4 for p, c in [(0, 0.4), (1, 0.2), (2, 0.4)])
    two = credits_by_position(run(position_based.credit, [conversion(1, T, [(9201, T - 200), (9202, T - 100)])], model))
    assert two == {0: 0.5, 1: 0.5}


def test_phpunit_assisted():
    assert run(assisted.credit, [conversion(1, T, [(9201, T - 60)])], {"model_id": 1}) == {(1, 1, 0): (9201, 1.0)}
    got = run(assisted.credit, [conversion(1, T, [(9301, T - 300), (9302, T - 200), (9303, T - 100)])], {"model_id": 1})
    assert got == {(1, 1, 0): (9301, 0.5), (1, 1, 1): (9302, 0.5)}


# ------------------------------------------------------------------------------------------
# Models: several per user, per-user scope, dispatch
# ------------------------------------------------------------------------------------------


def test_several_models_of_one_type_give_separate_credit_sets():
    conv = conversion(1, T, [(1, T - 96 * H), (2, T - 48 * H), (3, T - 1800)])
    got = run(time_decay.credit, [conv], {"model_id": 1, "half_life_hours": 48}, {"model_id": 2, "half_life_hours": 1})
    assert credits_by_position(got, model_id=1) == php_time_decay(T, journey_touches(conv), 48)
    assert credits_by_position(got, model_id=2) == php_time_decay(T, journey_touches(conv), 1)
    assert credits_by_position(got, model_id=1) != credits_by_position(got, model_id=2)

    got = run(
        position_based.credit,
        [FOUR],
        {"model_id": 3, "first_touch_weight": 0.4, "last_touch_weight": 0.4},
        {"model_id": 4, "first_touch_weight": 0.0, "last_touch_weight": 0.0},
    )
    assert credits_by_position(got, model_id=3) == php_position_based(4, 0.4, 0.4)
    assert credits_by_position(got, model_id=4) == {1: 0.5, 2: 0.5}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_models_apply_only_to_their_own_user(name):
    convs = [
        conversion(1, T, [(11, T - H), (12, T - 60)], user_id=1),
        conversion(2, T, [(21, T - 2 * H), (22, T - H), (23, T - 60)], user_id=2),
    ]
    models = pl.DataFrame(
        [{"model_id": 1, "user_id": 1}, {"model_id": 2, "user_id": 2}, {"model_id": 3, "user_id": 3}],
        schema=MODEL_SCHEMA,
    )
    out = STRATEGIES[name](journeys_frame(convs).lazy(), models.lazy()).collect()
    assert sorted(set(out.select("model_id", "conv_id").rows())) == [(1, 1), (2, 2)]


def test_credit_all_dispatches_by_strategy_column():
    convs = [CONV1, CONV2]
    rows = [
        {"model_id": 1, "strategy": "last_touch"},
        {"model_id": 2, "strategy": "time_decay", "half_life_hours": 48},
        {"model_id": 3, "strategy": "position_based", "first_touch_weight": 0.3, "last_touch_weight": 0.4},
        {"model_id": 4, "strategy": "assisted"},
        {"model_id": 5, "strategy": MODEL_TYPE_STRATEGY["algorithmic"]},
        {"model_id": 6, "strategy": "first_touch"},
        {"model_id": 7, "strategy": "linear"},
        {"model_id": 8, "strategy": None},  # an invalid model: no strategy
    ]
    models = pl.DataFrame([{"user_id": 1, **r} for r in rows], schema={**MODEL_SCHEMA, "strategy": pl.String})
    journeys = journeys_frame(convs, shuffle_seed=5)
    out = credit_all(journeys.lazy(), models.lazy()).collect()
    assert out.schema == pl.Schema(STRATEGY_OUTPUT)
    got = {(r[0], r[1], r[2]): (r[3], r[4]) for r in out.rows()}
    expected = {}
    for r in rows:
        if r["strategy"] is None:
            continue
        model = {"half_life_hours": None, "first_touch_weight": None, "last_touch_weight": None, **r}
        for conv in convs:
            for p, v in scalar_credits(r["strategy"], conv, model).items():
                expected[(r["model_id"], conv["conv_id"], p)] = v
    assert got == expected
    assert {k[0] for k in got} == {1, 2, 3, 4, 5, 6, 7}

    empty = credit_all(pl.DataFrame(schema=JOURNEY_SCHEMA).lazy(), models.lazy()).collect()
    assert empty.height == 0 and empty.schema == pl.Schema(STRATEGY_OUTPUT)
    no_models = credit_all(journeys.lazy(), models.clear().lazy()).collect()
    assert no_models.height == 0 and no_models.schema == pl.Schema(STRATEGY_OUTPUT)


# ------------------------------------------------------------------------------------------
# Randomised: vectorised == scalar PHP port, exactly, on ~2,000 journeys
# ------------------------------------------------------------------------------------------


def random_age(rng):
    kind = rng.random()
    if kind < 0.08:
        return 0
    if kind < 0.14:
        return -rng.randint(1, 7200)  # clicked after the conversion: age 0
    if kind < 0.22:
        return rng.randint(1022 * H, 1080 * H)  # h = 1: subnormal or underflowed weights
    if kind < 0.30:
        return rng.randint(40 * DAY, 90 * DAY)  # very old
    return int(10 ** rng.uniform(0, math.log10(30 * DAY)))


def random_models(rng, user_id, first_id):
    models = []
    for strategy in STRATEGIES:
        for _ in range(rng.randint(1, 3)):
            model = {
                "model_id": first_id + len(models),
                "user_id": user_id,
                "strategy": strategy,
                "half_life_hours": None,
                "first_touch_weight": None,
                "last_touch_weight": None,
            }
            if strategy == "time_decay":
                model["half_life_hours"] = rng.choice([None, 1, 1, 2, 3, 7, 12, 24, 48, 100, 720, 8760])
            if strategy == "position_based":
                kind = rng.random()
                if kind < 0.1:
                    first, last = None, rng.choice([None, 0.3])
                elif kind < 0.2:
                    first, last = rng.choice([(0.0, 0.0), (0.5, 0.5), (1.0, 0.0), (0.0, 1.0), (-0.2, 0.5), (0.9, 0.9)])
                else:
                    first = round(rng.random(), rng.randint(1, 4))
                    last = round(rng.uniform(0, 1 - first), rng.randint(1, 4))
                model["first_touch_weight"], model["last_touch_weight"] = first, last
            models.append(model)
    return models


def random_case(seed, conversions=2000, users=4):
    rng = random.Random(seed)
    convs, models = [], []
    for user_id in range(1, users + 1):
        models += random_models(rng, user_id, first_id=100 * user_id)
    click_ids = iter(rng.sample(range(1, 10**7), 30 * conversions))
    for conv_id in range(1, conversions + 1):
        conv_time = T + rng.randint(0, 3 * DAY)
        n = rng.randint(1, 26)
        touches = []
        for _ in range(n):
            if touches and rng.random() < 0.1:
                click_time = touches[-1][1]  # a tie on click_time, broken by click_id
            else:
                click_time = conv_time - random_age(rng)
            touches.append((next(click_ids), click_time))
        converting, user_id = rng.choice(touches)[0], rng.randint(1, users)
        convs.append(conversion(conv_id, conv_time, touches, converting=converting, user_id=user_id))
    # A user with conversions but no models, and models of a user without conversions.
    convs.append(conversion(conversions + 1, T, [(10**8, T - 60)], user_id=users + 1))
    models += random_models(rng, users + 2, first_id=100 * (users + 2))
    return convs, models


@pytest.fixture(scope="module")
def random_data():
    convs, models = random_case(seed=20240601)
    journeys = journeys_frame(convs, shuffle_seed=7)
    model_frame = pl.DataFrame(models, schema={**MODEL_SCHEMA, "strategy": pl.String})
    return convs, models, journeys, model_frame


@pytest.mark.parametrize("order", ["shuffled", "journey order"])
@pytest.mark.parametrize("engine", ["in-memory", "streaming"])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_vectorised_equals_scalar_php_port_exactly(random_data, name, engine, order):
    convs, models, journeys, model_frame = random_data
    mine = model_frame.filter(pl.col("strategy") == name).drop("strategy")
    if order == "journey order":
        # as the journeys stage writes them, one model of each strategy per user: time decay's fast path
        journeys = journeys.sort("conv_id", "position")
        mine = mine.unique("user_id", keep="first", maintain_order=True)
        kept = set(mine.get_column("model_id"))
        models = [m for m in models if m["model_id"] in kept]
    out = STRATEGIES[name](journeys.lazy(), mine.lazy()).collect(engine=engine)
    assert out.schema == pl.Schema(STRATEGY_OUTPUT)
    got = {(r[0], r[1], r[2]): (r[3], r[4]) for r in out.rows()}
    assert len(got) == out.height  # no duplicated (model, conversion, position)

    expected = {}
    for model in models:
        if model["strategy"] != name:
            continue
        for conv in convs:
            if conv["user_id"] != model["user_id"]:
                continue
            for p, v in scalar_credits(name, conv, model).items():
                expected[(model["model_id"], conv["conv_id"], p)] = v
    assert len(expected) >= 2000
    mismatches = [(k, got.get(k), v) for k, v in expected.items() if got.get(k) != v]
    assert not mismatches[:10] and got.keys() == expected.keys()

    sums = {}
    for (model_id, conv_id, _), (_, c) in sorted(got.items()):
        sums[(model_id, conv_id)] = sums.get((model_id, conv_id), 0.0) + c
    assert all(abs(s - 1.0) <= 1e-9 for s in sums.values())


def test_time_decay_sequential_totals_are_the_same_bits_on_every_path(random_data):
    """The per-position list addition (frames in journey order) == the windowed ordered cum_sum."""
    _, _, journeys, model_frame = random_data
    decay = model_frame.filter(pl.col("strategy") == "time_decay")
    weights = (
        journeys.sort("conv_id", "position")
        .join(decay.select("model_id", "user_id"), on="user_id", maintain_order="right_left")
        .with_columns(w=pl.col("click_time").cast(pl.Float64).mod(997.0) / 991.0 + pl.col("model_id") * 1e-3)
    )
    windowed = weights.with_columns(
        total=pl.col("w").cum_sum().last().over(["model_id", "conv_id"], order_by="position")
    ).get_column("total")
    fast = time_decay.totals_by_position(weights)
    assert fast is not None and fast.equals(windowed)
    assert time_decay.with_sequential_total(weights).get_column("total").equals(windowed)
    # out of order, or a journey so long that most list cells would be padding: the windowed path
    shuffled = weights.sample(fraction=1.0, shuffle=True, seed=3)
    assert time_decay.totals_by_position(shuffled) is None
    assert time_decay.with_sequential_total(shuffled).sort("model_id", "conv_id", "position").get_column("total").equals(
        weights.with_columns(total=windowed).sort("model_id", "conv_id", "position").get_column("total")
    )
    long = pl.DataFrame({
        "model_id": [1] * 210, "conv_id": [1] * 200 + list(range(2, 12)), "position": list(range(200)) + [0] * 10,
        "n": [200] * 200 + [1] * 10, "w": [0.1 * (i % 7) for i in range(210)],
    }).with_columns(pl.col("position", "n").cast(pl.Int32))
    assert time_decay._runs_in_position_order(long) and time_decay.totals_by_position(long) is None
    assert not time_decay._runs_in_position_order(long.slice(1))  # starts in the middle of a run
    assert not time_decay._runs_in_position_order(long.slice(0, 199))  # ends before position n - 1
    expected = [seq_sum([0.1 * (i % 7) for i in range(200)])] * 200 + [0.1 * (i % 7) for i in range(200, 210)]
    assert time_decay.with_sequential_total(long).get_column("total").to_list() == expected
    assert time_decay.totals_by_position(long.head(201)).to_list() == expected[:201]  # 2 runs: the fast path


def test_random_case_covers_the_edge_cases(random_data):
    convs, models, journeys, _ = random_data
    assert journeys.get_column("n").max() == 26 and journeys.get_column("n").min() == 1
    h1 = {"half_life_hours": 1}
    subnormal = underflow = 0
    for conv in convs:
        for _, click_time in conv["touches"]:
            w = math.exp(-math.log(2) * max(0, (conv["conv_time"] - click_time) / 3600) / h1["half_life_hours"])
            subnormal += 0.0 < w < 2.2250738585072014e-308
            underflow += w == 0.0
    assert subnormal > 10 and underflow > 10
    assert any(m["strategy"] == "time_decay" and m["half_life_hours"] == 1 for m in models)


def test_last_touch_gives_one_touchpoint_even_when_a_stored_journey_repeats_the_converting_click():
    j = pl.DataFrame({
        "user_id": [1, 1, 1], "conv_id": [3, 3, 3], "conv_time": [100, 100, 100], "position": [0, 1, 2],
        "n": [3, 3, 3], "click_id": [201, 201, 201], "click_time": [50, 50, 50], "is_converting": [True, True, True],
    }).with_columns(pl.col("position", "n").cast(pl.Int32), pl.col("click_id").cast(pl.UInt64))
    models = pl.DataFrame({"model_id": [7], "user_id": [1]})
    out = last_touch.credit(j.lazy(), models.lazy()).collect()
    assert out.rows() == [(7, 3, 0, 201, 1.0, 1)]  # model 7 of user 1


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_table_and_join_layouts_give_the_same_credits(random_data, name):
    """One model per user: the touches are laid out by a user-id table; user ids that do not fit it
    (negative, or above MAX_TABLE_USER_ID) take the join; both credit the same rows the same."""
    _, _, journeys, model_frame = random_data
    journeys = journeys.sort("conv_id", "position")
    mine = model_frame.filter(pl.col("strategy") == name).unique("user_id", keep="first", maintain_order=True)
    assert per_model.touches(journeys.lazy(), mine.lazy()).explain().count("JOIN") == 0
    by_table = STRATEGIES[name](journeys.lazy(), mine.lazy()).collect()
    for far in (-1, per_model.MAX_TABLE_USER_ID + 1):
        moved = pl.col("user_id") * 1 + pl.when(pl.col("user_id") == 1).then(far - 1).otherwise(0)
        j, m = journeys.with_columns(user_id=moved), mine.with_columns(user_id=moved)
        assert "JOIN" in per_model.touches(j.lazy(), m.lazy()).explain()
        by_join = STRATEGIES[name](j.lazy(), m.lazy()).collect().with_columns(user_id=pl.col("user_id").replace(far, 1))
        assert by_join.height == by_table.height > 0
        assert by_join.sort(pl.all()).equals(by_table.sort(pl.all()))


def test_strategies_carry_the_credits_stage_columns_through():
    journeys = journeys_frame([CONV1, CONV2]).with_columns(
        date_hour=pl.col("conv_time") // H * H, payout=pl.col("conv_id") * 1.5, cpc=pl.col("conv_id") * 0.25
    )
    models = models_frame({"model_id": 1, "half_life_hours": 48, "first_touch_weight": 0.3, "last_touch_weight": 0.4})
    for name, credit in STRATEGIES.items():
        out = credit(journeys.lazy(), models.lazy()).collect()
        assert out.columns == [*STRATEGY_OUTPUT, *per_model.CARRIED], name
        assert out.height > 0
        assert out.select(
            (pl.col("payout") == pl.col("conv_id") * 1.5).all(),
            (pl.col("cpc") == pl.col("conv_id") * 0.25).all(),
            (pl.col("date_hour") == T // H * H).all(),
        ).row(0) == (True, True, True), name
