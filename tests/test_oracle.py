"""The oracle (tests/oracle/php_engine.py) reproduces every PHP reference number of the spec.

Pure-function tests check the float arithmetic bit for bit against spec §3.8; database tests load
the spec's worked data (tests/scenarios.py) into a fresh MariaDB database and compare the
oracle's rows with the spec's stored values, then check each project decision (D3, D4, D6, D13,
D15, D16) on data built for it.
"""

import math

import pytest
from sqlalchemy import text

import scenarios as sc
from attribution_pipeline.storage import database
from oracle import php_engine as oracle
from oracle.php_engine import Conversion, Expected, Stored, expected_rows, stored_rows

T = sc.T
HOUR = sc.HOUR
HOURS = sc.SECTION_4_6_HOURS


@pytest.fixture
def mysql_conn(mysql_url):
    engine = database.make_engine(mysql_url)
    with engine.begin() as conn:
        yield conn
    engine.dispose()


@pytest.fixture
def sqlite_conn(sqlite_url):
    engine = database.make_engine(sqlite_url)
    with engine.begin() as conn:
        yield conn
    engine.dispose()


def journeys_by_conversion(expected, model_id):
    """{conv_id: [click_id by position]} from the oracle's touchpoints of one model."""
    journeys = {}
    for row in sorted(expected.touchpoints):
        if row[0] == model_id:
            journeys.setdefault(row[3], []).append(row[5])
    return journeys


# ============================================================================================
# Pure functions: spec §3.7 and §3.8 float arithmetic, bit for bit
# ============================================================================================


def _conv(payout, cpc, conv_time=T, click_id=1):
    return Conversion(conv_id=1, click_id=click_id, campaign_id=10, user_id=1, conv_time=conv_time,
                      click_time=conv_time, payout=payout, cpc=cpc)


def _credits(model_type, config, journey, conversion):
    return [credit for _, _, credit in oracle.credited_touches(model_type, config, conversion, journey)]


def test_position_based_reference_floats():
    assert oracle.position_based_credits(0.4, 0.4, 3) == [0.4, 0.19999999999999996, 0.4]
    credits = oracle.position_based_credits(0.3, 0.4, 5)
    assert credits == [0.30000000000000004] + [0.10000000000000005] * 3 + [0.40000000000000013]
    touches = [(i, 100 + i, c) for i, c in enumerate(credits)]
    assert oracle.conversion_sums(10.0, 1.23, touches) == (10.000000000000004, 1.2300000000000004)
    credits = oracle.position_based_credits(0.2, 0.6, 2)
    assert credits == [0.25, 0.7499999999999999]
    assert oracle.conversion_sums(9.0, 3.0, [(0, 1, 0.25), (1, 2, 0.7499999999999999)])[1] == 2.9999999999999996
    assert oracle.position_based_credits(0.0, 0.0, 4) == [0.0, 0.5, 0.5, 0.0]
    assert oracle.position_based_credits(0.5, 0.5, 4) == [0.5, 0.0, 0.0, 0.5]
    assert oracle.position_based_credits(0.4, 0.4, 1) == [1.0]
    assert oracle.position_based_credits(0.4, 0.4, 2) == [0.5, 0.5]


def test_position_based_skips_zero_credits_and_ties_sort_by_click_id():
    config = {"first_touch_weight": 0.0, "last_touch_weight": 0.0}
    journey = [(1, T - 300), (2, T - 200), (3, T - 100), (4, T)]
    touches = oracle.credited_touches("position_based", config, _conv(1.0, 1.0, click_id=4), journey)
    assert touches == [(1, 2, 0.5), (2, 3, 0.5)]


def test_time_decay_reference_floats():
    conv = _conv(100.0, 12.5, click_id=3)
    journey = [(1, T - 96 * HOUR), (2, T - 48 * HOUR), (3, T - 1800)]
    credits = oracle.time_decay_credits(48, T, journey)
    assert credits == [0.14344685529809312, 0.28689371059618624, 0.5696594341057205]
    touches = oracle.credited_touches("time_decay", {"half_life_hours": 48}, conv, journey)
    assert oracle.conversion_sums(100.0, 12.5, touches) == (99.99999999999999, 12.499999999999998)
    assert oracle.stored_decimal(99.99999999999999, oracle.MONEY) == "100.0000"
    assert [oracle.stored_decimal(c, oracle.CREDIT) for c in credits] == ["0.14345", "0.28689", "0.56966"]

    credits = oracle.time_decay_credits(1, T, [(1, T - 7200), (2, T - 3600), (3, T)])
    assert credits == [0.14285714285714285, 0.2857142857142857, 0.5714285714285714]
    assert math.isclose(oracle.conversion_sums(35.0, 7.0, list(zip(range(3), range(3), credits)))[0], 35, abs_tol=1e-9)


def test_time_decay_half_life_parsing_and_underflow():
    journey = [(1, T - 13 * HOUR), (2, T - HOUR)]
    by_string = _credits("time_decay", {"half_life_hours": "12.9"}, journey, _conv(1.0, 1.0, click_id=2))
    by_int = _credits("time_decay", {"half_life_hours": 12}, journey, _conv(1.0, 1.0, click_id=2))
    assert by_string == by_int
    assert [oracle.stored_decimal(c, oracle.CREDIT) for c in by_int] == ["0.33333", "0.66667"]
    assert oracle.half_life_hours({"half_life_hours": "1e3"}) == 1000
    assert oracle.half_life_hours({"half_life_hours": " 12"}) == 12
    assert oracle.half_life_hours({"half_life_hours": "abc"}) == 48
    assert oracle.half_life_hours({}) == 48
    assert oracle.half_life_hours({"half_life_hours": 0.5}) == 1  # compute-time floor (validation rejects it)
    # All weights underflow: 1/n. An old primary next to a recent touch gets exactly 0 and is skipped.
    old = T - 60 * 86400
    assert oracle.time_decay_credits(1, T, [(1, old)]) == [1.0]
    touches = oracle.credited_touches("time_decay", {"half_life_hours": 1}, _conv(1.0, 1.0, click_id=1),
                                      [(1, old), (2, T - 60)])
    assert touches == [(1, 2, 1.0)]


def test_assisted_last_touch_and_d7_floats():
    journey = [(1, T - 3), (2, T - 2), (3, T - 1), (4, T)]
    conv = _conv(1.0, 1.0, click_id=4)
    assert oracle.credited_touches("assisted", {}, conv, journey) == [(0, 1, 1 / 3), (1, 2, 1 / 3), (2, 3, 1 / 3)]
    assert oracle.credited_touches("assisted", {}, conv, [(4, T)]) == [(0, 4, 1.0)]
    conv_on_2 = _conv(1.0, 1.0, click_id=2)
    assert oracle.credited_touches("last_touch", {}, conv_on_2, journey) == [(0, 2, 1.0)]
    assert oracle.credited_touches("algorithmic", {"config": "x"}, conv_on_2, journey) == [(0, 2, 1.0)]
    assert oracle.credited_touches("first_touch", {}, conv, journey) == [(0, 1, 1.0)]
    assert oracle.credited_touches("linear", {}, conv, journey) == [(i, i + 1, 0.25) for i in range(4)]


def test_stored_rounding_matches_mariadb_examples():
    # Spec 3.7 [verified on MariaDB 10.11].
    assert oracle.stored_decimal(0.123455, oracle.CREDIT) == "0.12346"
    assert oracle.stored_decimal(12.34565, oracle.MONEY) == "12.3457"
    assert oracle.stored_decimal(99.99999999999999, oracle.MONEY) == "100.0000"
    assert oracle.stored_decimal(0.0000049999, oracle.CREDIT) == "0.00000"
    assert oracle.stored_decimal(-0.000005, oracle.CREDIT) == "-0.00001"
    assert oracle.stored_decimal(1 / 3, oracle.CREDIT) == "0.33333"
    assert oracle.stored_decimal(0.2 / 3, oracle.CREDIT) == "0.06667"
    assert oracle.stored_decimal(-0.0, oracle.MONEY) == "0.0000"


def test_php_scalar_semantics():
    values = ("12.9", "1e3", " 12", "12 ", -3.7, True, "-0.5", "12abc", "abc", float("inf"), "1e30")
    assert [oracle.php_int(v) for v in values] == [12, 1000, 12, 12, -3, 1, 0, 12, 0, 0, 2**63 - 1]
    numeric = ["12", " 12", "12 ", "1e3", ".5", "1.", "-0.5", "+3", 4, 4.5]
    not_numeric = ["", " ", ".", "e3", "0x1A", "1_000", "12abc", None, True, [], "NaN"]
    assert all(oracle.php_is_numeric(v) for v in numeric)
    assert not any(oracle.php_is_numeric(v) for v in not_numeric)


def _model(model_type, config, name="Model", slug="model"):
    return {"model_type": model_type, "weighting_config": config, "model_name": name, "model_slug": slug}


@pytest.mark.parametrize("model_type, config, fragment", [
    # spec §6 item 7 (ModelDefinitionValidationTest) and spec §3.6
    ("time_decay", '{"half_life_hours":0}', "half_life_hours"),
    ("time_decay", '{"half_life_hours":0.5}', "half_life_hours"),
    ("time_decay", '{"half_life_hours":"abc"}', "half_life_hours"),
    ("time_decay", "{}", "Weighting configuration required"),
    ("time_decay", None, "Weighting configuration required"),
    ("position_based", '{"first_touch_weight":0.8,"last_touch_weight":0.5}', "sum of first and last touch weights"),
    ("position_based", '{"first_touch_weight":1.2,"last_touch_weight":0}', "between 0 and 1"),
    ("position_based", '{"first_touch_weight":0.4}', "numeric first_touch_weight"),
    ("assisted", '{"extra":1}', "does not accept weighting"),
    ("last_touch", '{"extra":1}', "does not accept weighting"),
    ("algorithmic", None, "Weighting configuration required"),
    ("time_decay", "{half_life", "JSON"),
    ("time_decay", "5", "Invalid weighting configuration payload."),
    ("data_driven", None, "Unknown attribution model type"),
])
def test_invalid_models_are_rejected_with_their_reason(model_type, config, fragment):
    config_out, message = oracle.validate_model(_model(model_type, config))
    assert config_out is None and fragment in message


@pytest.mark.parametrize("model_type, config", [
    ("position_based", '{"first_touch_weight":0.4,"last_touch_weight":0.4}'),  # slug pb-valid in item 7
    ("position_based", '{"first_touch_weight":"0.5","last_touch_weight":"0.5"}'),
    ("time_decay", '{"half_life_hours":"12.9"}'),
    ("time_decay", '{"half_life_hours":"1e3"}'),
    ("last_touch", None), ("last_touch", ""), ("assisted", "{}"), ("assisted", "[]"),
    ("algorithmic", '{"config":"x"}'), ("first_touch", None), ("linear", "{}"),
])
def test_valid_models_pass(model_type, config):
    assert oracle.validate_model(_model(model_type, config))[1] is None


def test_empty_name_or_slug_is_invalid():
    assert oracle.validate_model(_model("last_touch", None, name=" "))[1] == "Model name cannot be empty."
    assert oracle.validate_model(_model("last_touch", None, slug=""))[1] == "Model slug cannot be empty."


# ============================================================================================
# Spec 4.6: the end-to-end example, each model run alone
# ============================================================================================


def test_section_4_6_with_php_stored_journeys_reproduces_the_spec(mysql_conn):
    ids = sc.load_section_4_6(mysql_conn)
    assert ids == {"last_touch": 1, "position_based": 2, "time_decay": 3, "assisted": 4}
    got = expected_rows(mysql_conn, HOURS, journey_source="stored")
    snapshots, touchpoints = sc.section_4_6_expected(ids, "stored")
    assert got.snapshots == snapshots
    assert got.touchpoints == touchpoints
    assert got.skipped_models == {}
    # Spot checks written out from the spec's text, independent of the constants' layout.
    bucket_t = {row[0]: row for row in got.snapshots if row[2] == T}
    assert {model: row[3] for model, row in bucket_t.items()} == {1: 2, 2: 9, 3: 9, 4: 7}
    assert all(row[4:] == (2, "35.5000", "1.5000") for row in bucket_t.values())
    td_conv_1 = [row[6] for row in got.touchpoints if row[0] == 3 and row[3] == 1]
    assert td_conv_1 == ["0.11615", "0.23230", "0.32381", "0.32773"]
    # Each model alone gives the same rows as all of them together (D1).
    for model_id in ids.values():
        alone = expected_rows(mysql_conn, HOURS, models=[model_id], journey_source="stored")
        assert alone.snapshots == [row for row in snapshots if row[0] == model_id]
        assert alone.touchpoints == [row for row in touchpoints if row[0] == model_id]


def test_section_4_6_with_journeys_from_clicks(mysql_conn):
    """D13 (the project default): conversions 1-3 give the spec's numbers; conversion 4 gets the
    journey PHP's backfill would have stored for it (clicks 101..105)."""
    ids = sc.load_section_4_6(mysql_conn)
    got = expected_rows(mysql_conn, HOURS)
    snapshots, touchpoints = sc.section_4_6_expected(ids, "clicks")
    assert got.snapshots == snapshots
    assert got.touchpoints == touchpoints
    php = expected_rows(mysql_conn, HOURS, journey_source="stored")
    assert [r for r in got.snapshots if r[2] < T + 2 * HOUR] == [r for r in php.snapshots if r[2] < T + 2 * HOUR]
    assert {r[0]: r[3] for r in got.snapshots if r[2] == T + 2 * HOUR} == {1: 1, 2: 5, 3: 5, 4: 4}


def test_section_4_6_without_stored_journeys_falls_back_to_single_touch(mysql_conn):
    ids = sc.load_section_4_6(mysql_conn, stored_journeys=False)
    got = expected_rows(mysql_conn, HOURS, journey_source="stored")
    assert all(row[3] == row[4] for row in got.snapshots)  # one credited touch per conversion
    assert journeys_by_conversion(got, ids["position_based"]) == {1: [104], 2: [103], 3: [201], 4: [105]}
    assert sorted(row[4:] for row in got.snapshots if row[0] == 2) == sorted(sc.SECTION_4_6_BUCKETS.values())


def test_section_4_6_on_sqlite_gives_identical_tuples(mysql_conn, sqlite_conn):
    sc.load_section_4_6(mysql_conn)
    ids = sc.load_section_4_6(sqlite_conn)
    for source in ("stored", "clicks"):
        on_mariadb = expected_rows(mysql_conn, HOURS, journey_source=source)
        on_sqlite = expected_rows(sqlite_conn, HOURS, journey_source=source)
        assert on_sqlite == on_mariadb
        assert (on_sqlite.snapshots, on_sqlite.touchpoints) == sc.section_4_6_expected(ids, source)


# ============================================================================================
# Spec 3.8 and section 6 reference cases as data
# ============================================================================================


@pytest.mark.parametrize("case", sc.REFERENCE_CASES + sc.PHPUNIT_CASES, ids=lambda case: case.name)
def test_reference_case(mysql_conn, case):
    hour = sc.load_case(mysql_conn, case)
    got = expected_rows(mysql_conn, [hour])
    snapshots, touchpoints = sc.case_expected(case)
    assert got.snapshots == snapshots
    assert got.touchpoints == touchpoints
    assert got.skipped_models == {}


def test_phpunit_1_last_touch_aggregates_per_hour(mysql_conn):
    loaded = sc.load_phpunit_last_touch(mysql_conn)
    got = expected_rows(mysql_conn, loaded.hours)
    assert got.snapshots == loaded.snapshots
    assert got.touchpoints == loaded.touchpoints
    assert [row[5:] for row in got.snapshots] == [("19.7500", "6.6000"), ("9.0000", "3.0000")]


def test_phpunit_6_runner_persists_one_snapshot(mysql_conn):
    loaded = sc.load_phpunit_runner(mysql_conn)
    got = expected_rows(mysql_conn, loaded.hours)
    assert got.snapshots == loaded.snapshots == [(50, 9, 1707552000, 2, 2, "13.0000", "3.5000")]
    assert got.touchpoints == loaded.touchpoints
    assert [row[5] for row in got.touchpoints] == [4001, 4002]


# ============================================================================================
# Decisions
# ============================================================================================


def test_d3_whole_hours_are_inclusive_of_the_last_second(mysql_conn):
    ids = sc.load_section_4_6(mysql_conn, models=("last_touch",))
    sc.add_conversion(mysql_conn, 5, 105, 10, 1, "1", T + 1200, T + 3599)
    sc.add_conversion(mysql_conn, 6, 105, 10, 1, "2", T + 1200, T + 3600)
    got = expected_rows(mysql_conn, [T])
    assert got.snapshots == [(ids["last_touch"], 1, T, 3, 3, "36.5000", "2.4000")]
    assert {row[3] for row in got.touchpoints} == {1, 2, 5}
    got = expected_rows(mysql_conn, [T + HOUR])
    assert got.snapshots == [(ids["last_touch"], 1, T + HOUR, 2, 2, "9.2500", "1.1500")]
    with pytest.raises(ValueError):
        expected_rows(mysql_conn, [T + 1])


def test_d4_an_hour_whose_only_conversion_is_soft_deleted_has_no_rows(mysql_conn):
    sc.load_section_4_6(mysql_conn)
    sc.add_conversion(mysql_conn, 5, 105, 10, 1, "99", T + 1200, T + 3 * HOUR + 10, deleted=1)
    sc.add_conversion(mysql_conn, 6, 104, 10, 1, "99", T - 600, T + 10, deleted=1)  # in bucket T
    got = expected_rows(mysql_conn, HOURS + [T + 3 * HOUR, T + 4 * HOUR], journey_source="stored")
    assert {row[2] for row in got.snapshots} == set(HOURS)
    assert got == expected_rows(mysql_conn, HOURS, journey_source="stored")
    assert all(row[3] not in (5, 6) for row in got.touchpoints)


def test_d6_invalid_models_are_skipped_and_reported(mysql_conn):
    ids = sc.load_section_4_6(mysql_conn, extra_models=(
        ("pb_bad_sum", "position_based", '{"first_touch_weight":0.8,"last_touch_weight":0.5}'),
        ("td_zero", "time_decay", '{"half_life_hours":0}'),
        ("as_params", "assisted", '{"extra":1}'),
        ("unknown", "data_driven", None),
        ("bad_json", "time_decay", "{half_life"),
        ("linear_ok", "linear", None),
    ))
    sc.add_model(mysql_conn, 20, 1, "time_decay", '{"half_life_hours":0}', slug="inactive", active=0)
    got = expected_rows(mysql_conn, HOURS, journey_source="stored")
    assert set(got.skipped_models) == {ids[k] for k in ("pb_bad_sum", "td_zero", "as_params", "unknown", "bad_json")}
    assert "sum of first and last touch weights" in got.skipped_models[ids["pb_bad_sum"]]
    assert "half_life_hours" in got.skipped_models[ids["td_zero"]]
    assert "does not accept weighting" in got.skipped_models[ids["as_params"]]
    assert "data_driven" in got.skipped_models[ids["unknown"]]
    assert "JSON" in got.skipped_models[ids["bad_json"]]
    assert {row[0] for row in got.snapshots} == {1, 2, 3, 4, ids["linear_ok"]}
    assert {row[0] for row in got.touchpoints} == {1, 2, 3, 4, ids["linear_ok"]}
    default_ids = {k: ids[k] for k in ("last_touch", "position_based", "time_decay", "assisted")}
    snapshots, touchpoints = sc.section_4_6_expected(default_ids, "stored")
    assert [row for row in got.snapshots if row[0] <= 4] == snapshots
    assert [row for row in got.touchpoints if row[0] <= 4] == touchpoints
    # The linear model (D7) credits 1/n: conversion 2's five touches get 0.2 each.
    linear_conv_2 = [row[6] for row in got.touchpoints if row[0] == ids["linear_ok"] and row[3] == 2]
    assert linear_conv_2 == ["0.20000"] * 5
    only_bad = expected_rows(mysql_conn, HOURS, models=[ids["td_zero"]])
    assert only_bad.snapshots == [] and list(only_bad.skipped_models) == [ids["td_zero"]]


def test_d15_duplicated_click_rows_are_one_click(mysql_conn):
    sc.add_user(mysql_conn, 1)
    sc.add_campaign(mysql_conn, 10, 1, 1)
    sc.add_click(mysql_conn, 601, 1, 10, T - 4000, "0.10")
    sc.add_click(mysql_conn, 602, 1, 10, T - 3000, "0.10")
    sc.add_click(mysql_conn, 602, 1, 10, T - 3000, "0.10")  # exact duplicate
    sc.add_click(mysql_conn, 603, 1, 10, T - 2000, "0.10")
    # The converting click three times: the earliest row wins, then the smallest cpc.
    sc.add_click(mysql_conn, 700, 1, 10, T - 600, "0.90", ppc_account_id=2)
    sc.add_click(mysql_conn, 700, 1, 10, T - 600, "0.50", ppc_account_id=3)
    sc.add_click(mysql_conn, 700, 1, 10, T - 300, "0.10", ppc_account_id=1)
    sc.add_conversion(mysql_conn, 1, 700, 10, 1, "10", T - 600, T + 300)
    sc.add_model(mysql_conn, 1, 1, "last_touch")
    sc.add_model(mysql_conn, 2, 1, "position_based", sc.PB_04_04)
    got = expected_rows(mysql_conn, [T])
    # PHP's inner join would count the conversion 3 times; here it counts once, with cpc 0.50.
    assert got.snapshots == [(1, 1, T, 1, 1, "10.0000", "0.5000"), (2, 1, T, 4, 1, "10.0000", "0.5000")]
    assert journeys_by_conversion(got, 2) == {1: [601, 602, 603, 700]}
    # A duplicate does not use up a journey slot: the newest 3 distinct clicks are 602, 603, 700.
    capped = expected_rows(mysql_conn, [T], models=[2], touch_cap=3)
    assert capped.touchpoints == [(2, 1, T, 1, 0, 602, "0.40000", "0.40000"),
                                  (2, 1, T, 1, 1, 603, "0.20000", "0.20000"),
                                  (2, 1, T, 1, 2, 700, "0.40000", "0.40000")]


def test_d16_orphan_conversions_and_deleted_users_are_skipped(mysql_conn):
    ids = sc.load_section_4_6(mysql_conn)
    sc.add_conversion(mysql_conn, 7, 999, 10, 1, "50", T, T + 100)  # click 999 has no row
    sc.add_conversion(mysql_conn, 8, 998, 10, 1, "50", T, T + 4 * HOUR + 100)  # alone in its hour
    sc.add_user(mysql_conn, 3, deleted=1)
    sc.add_click(mysql_conn, 3001, 3, 10, T - 60, "1")
    sc.add_conversion(mysql_conn, 9, 3001, 10, 3, "5", T - 60, T + 60)
    sc.add_model(mysql_conn, 30, 3, "last_touch")
    got = expected_rows(mysql_conn, HOURS + [T + 4 * HOUR], journey_source="stored")
    snapshots, touchpoints = sc.section_4_6_expected(ids, "stored")
    assert got.snapshots == snapshots
    assert got.touchpoints == touchpoints
    assert expected_rows(mysql_conn, HOURS, users=[3]) == Expected()


def test_users_and_models_filters(mysql_conn):
    ids = sc.load_section_4_6(mysql_conn)
    assert expected_rows(mysql_conn, HOURS, users=[2]) == Expected()
    got = expected_rows(mysql_conn, HOURS, users=[1], models=[ids["assisted"]])
    assert {row[0] for row in got.snapshots} == {ids["assisted"]}


MULTI = {1: [101, 102, 103, 104], 2: [101, 102, 103, 104, 105], 3: [202, 201], 4: [101, 102, 103, 104, 105]}
SINGLE = {1: [104], 2: [103], 3: [201], 4: [105]}


@pytest.mark.parametrize("settings, journeys", [
    ((), MULTI),
    ((("global", None, False),), SINGLE),
    ((("global", None, True),), MULTI),
    ((("advertiser", 1, False),), {**SINGLE, 3: MULTI[3]}),
    ((("global", None, False), ("advertiser", 2, True)), {**SINGLE, 3: MULTI[3]}),
    ((("global", None, False), ("advertiser", 1, False), ("campaign", 10, True)), {**MULTI, 3: SINGLE[3]}),
    ((("advertiser", 2, True), ("campaign", 20, False)), {**MULTI, 3: SINGLE[3]}),
    # spec §6 item 12 precedence: global off, advertiser on, campaign off -> off
    ((("global", None, False), ("advertiser", 1, True), ("campaign", 10, False)), SINGLE),
    # several global rows (the NULL hole in the unique key): the highest setting_id wins
    ((("global", None, True), ("global", None, False)), SINGLE),
    ((("global", None, False), ("global", None, True)), MULTI),
    # another user's settings do not apply
    ((("global", None, False, 2),), MULTI),
], ids=["none", "global-off", "global-on", "advertiser-off", "advertiser-on-over-global",
        "campaign-on-over-advertiser", "campaign-off-over-advertiser", "item-12", "two-globals-last-off",
        "two-globals-last-on", "other-user"])
def test_d13_multi_touch_switch(mysql_conn, settings, journeys):
    ids = sc.load_section_4_6(mysql_conn, models=("position_based",))
    sc.add_click(mysql_conn, 202, 1, 20, T + 3000, "0.10")  # a second campaign-20 click before conversion 3
    for setting in settings:
        scope_type, scope_id, enabled = setting[:3]
        user_id = setting[3] if len(setting) > 3 else 1
        sc.add_setting(mysql_conn, user_id, scope_type, scope_id, enabled)
    got = expected_rows(mysql_conn, HOURS)
    assert journeys_by_conversion(got, ids["position_based"]) == journeys
    # The PHP rebuild (stored journeys) never reads the switch.
    stored = expected_rows(mysql_conn, HOURS, journey_source="stored")
    assert journeys_by_conversion(stored, ids["position_based"]) == {1: MULTI[1], 2: MULTI[2], 3: [201], 4: [105]}


def test_stored_journeys_are_not_deduplicated_and_get_the_converting_click(mysql_conn):
    ids = sc.load_section_4_6(mysql_conn, models=("position_based",), stored_journeys=False)
    sc.add_stored_journey(mysql_conn, 1, [(101, T - 3 * 86400), (101, T - 3 * 86400), (104, T - 600)])
    sc.add_stored_journey(mysql_conn, 2, [(105, T + 1200), (101, T - 3 * 86400)])  # 103 missing
    got = expected_rows(mysql_conn, HOURS, journey_source="stored")
    model = ids["position_based"]
    conv_1 = [row[4:7] for row in got.touchpoints if row[3] == 1]
    assert conv_1 == [(0, 101, "0.40000"), (1, 101, "0.20000"), (2, 104, "0.40000")]
    assert journeys_by_conversion(got, model)[2] == [101, 103, 105]


# ============================================================================================
# stored_rows and diff
# ============================================================================================


def test_stored_rows_and_diff_on_mariadb(mysql_conn):
    sc.load_section_4_6(mysql_conn)
    expected = expected_rows(mysql_conn, HOURS)
    assert stored_rows(mysql_conn) == Stored()
    assert "snapshots missing" in oracle.diff(expected, Stored())
    sc.store_expected(mysql_conn, expected)
    stored = stored_rows(mysql_conn)
    assert oracle.diff(expected, stored) == ""
    assert stored.snapshots == expected.snapshots and stored.touchpoints == expected.touchpoints
    only_t = stored_rows(mysql_conn, hours=[T])
    assert only_t.snapshots == [row for row in expected.snapshots if row[2] == T]
    assert only_t.touchpoints == [row for row in expected.touchpoints if row[2] == T]
    assert stored_rows(mysql_conn, hours=[]) == Stored()
    # Perturb: change one credit, add a duplicate snapshot row, store a non-global row.
    mysql_conn.execute(text("UPDATE `202_attribution_touchpoints` SET credit = 0.5 "
                            "WHERE conv_id = 1 AND position = 0 AND snapshot_id = "
                            "(SELECT MIN(snapshot_id) FROM `202_attribution_snapshots` WHERE model_id = 2)"))
    sc.store_expected(mysql_conn, Expected(snapshots=[expected.snapshots[0]]))
    mysql_conn.execute(text("UPDATE `202_attribution_snapshots` SET scope_type = 'campaign', scope_id = 10 "
                            "WHERE model_id = 4 AND date_hour = :hour"), {"hour": T + 2 * HOUR})
    assert oracle.diff(expected, stored_rows(mysql_conn)).splitlines() == [
        "snapshots missing (expected, not stored): 1 row(s) " + oracle.SNAPSHOT_FIELDS,
        "  (4, 1, 1717239600, 4, 1, '11.0000', '0.9000')",  # now a campaign row: not read
        "snapshots extra (stored, not expected): 1 row(s) " + oracle.SNAPSHOT_FIELDS,
        "  (1, 1, 1717232400, 2, 2, '35.5000', '1.5000')",
        "touchpoints missing (expected, not stored): 5 row(s) " + oracle.TOUCHPOINT_FIELDS,
        "  (2, 1, 1717232400, 1, 0, 101, '0.40000', '0.40000')",
        "  (4, 1, 1717239600, 4, 0, 101, '0.25000', '0.25000')",
        "  (4, 1, 1717239600, 4, 1, 102, '0.25000', '0.25000')",
        "  (4, 1, 1717239600, 4, 2, 103, '0.25000', '0.25000')",
        "  (4, 1, 1717239600, 4, 3, 104, '0.25000', '0.25000')",
        "touchpoints extra (stored, not expected): 1 row(s) " + oracle.TOUCHPOINT_FIELDS,
        "  (2, 1, 1717232400, 1, 0, 101, '0.50000', '0.40000')",
    ]
    # Duplicates count (multiset): the same row stored twice is one extra row, shown with x2 when doubled.
    doubled = Stored(snapshots=expected.snapshots + [expected.snapshots[0]] * 2, touchpoints=expected.touchpoints)
    assert oracle.diff(expected, doubled).splitlines()[1] == "  (1, 1, 1717232400, 2, 2, '35.5000', '1.5000') x2"


def test_stored_rows_on_sqlite_formats_numeric_with_the_scale(sqlite_conn):
    sc.load_section_4_6(sqlite_conn)
    expected = expected_rows(sqlite_conn, HOURS)
    sc.store_expected(sqlite_conn, expected)
    raw = sqlite_conn.execute(text("SELECT attributed_revenue, attributed_cost FROM `202_attribution_snapshots` "
                                   "WHERE model_id = 1 AND date_hour = :hour"), {"hour": T + 2 * HOUR}).one()
    assert isinstance(raw[0], (int, float))  # SQLite hands NUMERIC back as a number
    stored = stored_rows(sqlite_conn)
    assert oracle.diff(expected, stored) == ""
    assert (1, 1, T + 2 * HOUR, 1, 1, "11.0000", "0.9000") in stored.snapshots
