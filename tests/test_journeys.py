"""Journey construction (spec §2.2-§2.4; D2, D13, D15): the vectorised builder on crafted cases."""

import polars as pl

from attribution_pipeline.storage import prosper_reads
from attribution_pipeline.core import frames
from attribution_pipeline.core import journey_rules as J

T = 1717232400  # 2024-06-01 09:00 UTC
DAY = 86400
LOOKBACK = 30 * DAY


def clicks_frame(rows):
    """rows: (click_id, user_id, campaign_id, click_time[, cpc])."""
    return pl.DataFrame(
        {
            "click_id": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "aff_campaign_id": [r[2] for r in rows],
            "click_time": [r[3] for r in rows],
            "ppc_account_id": [7] * len(rows),
            "landing_page_id": [3] * len(rows),
            "click_cpc": [float(r[4]) if len(r) > 4 else 0.5 for r in rows],
        },
        schema=frames.CLICKS,
    )


def conversions_frame(rows, clicks=None):
    """rows: (conv_id, click_id, user_id, campaign_id, conv_time[, log_click_time])."""
    times = {}
    if clicks is not None:
        times = dict(zip(clicks["click_id"].to_list(), clicks["click_time"].to_list()))
    raw = pl.DataFrame(
        {
            "conv_id": [r[0] for r in rows],
            "click_id": [r[1] for r in rows],
            "campaign_id": [r[3] for r in rows],
            "user_id": [r[2] for r in rows],
            "conv_time": [r[4] for r in rows],
            "click_time": [r[5] if len(r) > 5 else times.get(r[1], r[4]) for r in rows],
            "payout": [10.0] * len(rows),
            "found_click_id": [r[1] for r in rows],
            "found_click_time": [r[5] if len(r) > 5 else times.get(r[1], r[4]) for r in rows],
            "cpc": [0.5] * len(rows),
            "ppc_account_id": [7] * len(rows),
            "landing_page_id": [3] * len(rows),
            "click_campaign_id": [r[3] for r in rows],
        },
        schema=prosper_reads._CONVERSION_READ_SCHEMA,
    )
    return prosper_reads.collapse_conversion_rows(raw)


NO_SETTINGS = pl.DataFrame(schema=prosper_reads.SETTINGS)
NO_NETWORKS = pl.DataFrame(schema=prosper_reads.CAMPAIGN_NETWORKS)


def build(convs, clicks, settings=NO_SETTINGS, networks=NO_NETWORKS, cap=25, lookback=LOOKBACK):
    flagged = J.multi_touch_flags(convs, settings, networks)
    return J.build_journeys(flagged, J.dedupe_clicks(clicks), lookback_seconds=lookback, touch_cap=cap)


def touches(journeys, conv_id):
    return journeys.filter(pl.col("conv_id") == conv_id).sort("position")["click_id"].to_list()


def test_spec_2_4_worked_example():
    clicks = clicks_frame([
        (101, 1, 10, T - 3 * DAY), (102, 1, 10, T - DAY), (103, 1, 10, T - 3600), (104, 1, 10, T - 600),
        (105, 1, 10, T + 1200),
        (900, 2, 10, T - 3600),  # another account, same campaign: excluded
        (901, 1, 11, T - 3600),  # same account, another campaign: excluded
    ])
    convs = conversions_frame([(1, 104, 1, 10, T + 300), (2, 103, 1, 10, T + 1800)], clicks)
    j = build(convs, clicks)
    assert touches(j, 1) == [101, 102, 103, 104]
    assert touches(j, 2) == [101, 102, 103, 104, 105]  # a click after the converting click is a touch
    conv2 = j.filter(pl.col("conv_id") == 2)
    assert conv2.filter(pl.col("is_converting"))["position"].to_list() == [2]
    assert conv2["n"].unique().to_list() == [5]
    assert j.schema == pl.Schema(frames.JOURNEYS)


def test_26_touches_when_the_converting_click_is_older_than_the_newest_25():
    clicks = clicks_frame([(i, 1, 10, T - 1000 + i) for i in range(1, 31)])
    convs = conversions_frame([(1, 2, 1, 10, T)], clicks)
    j = build(convs, clicks)
    assert j.height == 26
    assert touches(j, 1) == [2] + list(range(6, 31))
    assert j.filter(pl.col("is_converting"))["position"].to_list() == [0]


def test_cap_is_a_setting():
    clicks = clicks_frame([(i, 1, 10, T - 100 + i) for i in range(1, 11)])
    convs = conversions_frame([(1, 10, 1, 10, T)], clicks)
    assert touches(build(convs, clicks, cap=3), 1) == [8, 9, 10]


def test_ties_sort_by_click_id():
    clicks = clicks_frame([(125, 1, 10, T), (121, 1, 10, T), (120, 1, 10, T + 540)])
    convs = conversions_frame([(1, 120, 1, 10, T + 600)], clicks)
    assert touches(build(convs, clicks), 1) == [121, 125, 120]


def test_ties_at_the_cap_keep_the_highest_click_ids():
    # newest 2 by (click_time DESC, click_id DESC): 30@T and 20@T, not 10@T
    clicks = clicks_frame([(10, 1, 10, T), (20, 1, 10, T), (30, 1, 10, T)])
    convs = conversions_frame([(1, 30, 1, 10, T + 5)], clicks)
    assert touches(build(convs, clicks, cap=2), 1) == [20, 30]


def test_lookback_boundary_is_inclusive():
    clicks = clicks_frame([(1, 1, 10, T - LOOKBACK), (2, 1, 10, T - LOOKBACK - 1), (3, 1, 10, T - 5)])
    convs = conversions_frame([(1, 3, 1, 10, T)], clicks)
    assert touches(build(convs, clicks), 1) == [1, 3]


def test_click_at_conversion_time_is_included_and_later_ones_are_not():
    clicks = clicks_frame([(1, 1, 10, T - 50), (2, 1, 10, T), (3, 1, 10, T + 1)])
    convs = conversions_frame([(1, 1, 1, 10, T)], clicks)
    assert touches(build(convs, clicks), 1) == [1, 2]


def test_lookback_days_is_a_setting():
    clicks = clicks_frame([(1, 1, 10, T - 2 * DAY), (2, 1, 10, T - 10)])
    convs = conversions_frame([(1, 2, 1, 10, T)], clicks)
    assert touches(build(convs, clicks, lookback=DAY), 1) == [2]


def test_converting_click_outside_window_is_added_with_the_conversion_log_click_time():
    clicks = clicks_frame([(5, 1, 10, T - 100)])
    # converting click 99 is not in the slice at all (another campaign's click)
    convs = conversions_frame([(1, 99, 1, 10, T, T - 40 * DAY)])
    j = build(convs, clicks)
    assert touches(j, 1) == [99, 5]
    assert j.filter(pl.col("click_id") == 99)["click_time"].to_list() == [T - 40 * DAY]


def test_duplicated_click_rows_count_once_and_do_not_use_a_slot():
    rows = [(i, 1, 10, T - 100 + i) for i in range(1, 5)]
    clicks = clicks_frame(rows + [(4, 1, 10, T - 96)])  # click 4 stored twice (D15)
    convs = conversions_frame([(1, 4, 1, 10, T)], clicks)
    assert J.duplicated_click_ids(clicks).rows() == [(4, 2)]
    assert touches(build(convs, clicks, cap=3), 1) == [2, 3, 4]


def _setting(setting_id, user, scope_type, scope_id, enabled):
    return (setting_id, user, scope_type, scope_id, enabled)


def settings_frame(rows):
    return pl.DataFrame(rows, schema=prosper_reads.SETTINGS, orient="row")


def test_multi_touch_disabled_at_each_level():
    clicks = clicks_frame([(1, 1, 10, T - 50), (2, 1, 10, T - 10), (3, 1, 20, T - 50), (4, 1, 20, T - 10),
                           (5, 1, 30, T - 50), (6, 1, 30, T - 10)])
    convs = conversions_frame([(1, 2, 1, 10, T), (2, 4, 1, 20, T), (3, 6, 1, 30, T)], clicks)
    networks = pl.DataFrame({"campaign_id": [10, 20, 30], "aff_network_id": [100, 100, 300]}, schema=prosper_reads.CAMPAIGN_NETWORKS)

    # default (no rows): on everywhere
    j = build(convs, clicks, networks=networks)
    assert [len(touches(j, c)) for c in (1, 2, 3)] == [2, 2, 2]

    # global off
    j = build(convs, clicks, settings_frame([_setting(1, 1, "global", None, 0)]), networks)
    assert [touches(j, c) for c in (1, 2, 3)] == [[2], [4], [6]]
    assert j["multi_touch"].to_list() == [False, False, False]

    # global off, advertiser 100 on: campaigns 10 and 20 back on
    j = build(convs, clicks, settings_frame([_setting(1, 1, "global", None, 0), _setting(2, 1, "advertiser", 100, 1)]), networks)
    assert [len(touches(j, c)) for c in (1, 2, 3)] == [2, 2, 1]

    # ... and campaign 20 off: the most specific row wins
    j = build(convs, clicks, settings_frame([_setting(1, 1, "global", None, 0), _setting(2, 1, "advertiser", 100, 1),
                                             _setting(3, 1, "campaign", 20, 0)]), networks)
    assert [len(touches(j, c)) for c in (1, 2, 3)] == [2, 1, 1]

    # another user's rows do not apply; scope types compare case-insensitively (MySQL _ci)
    j = build(convs, clicks, settings_frame([_setting(1, 2, "global", None, 0), _setting(2, 1, "CAMPAIGN", 30, 0)]), networks)
    assert [len(touches(j, c)) for c in (1, 2, 3)] == [2, 2, 1]

    # two global rows (NULL never collides in the unique keys): the newest setting_id wins
    j = build(convs, clicks, settings_frame([_setting(7, 1, "global", None, 1), _setting(4, 1, "global", None, 0)]), networks)
    assert [len(touches(j, c)) for c in (1, 2, 3)] == [2, 2, 2]


def test_orphan_conversions_have_no_journey():
    clicks = clicks_frame([(1, 1, 10, T - 50)])
    raw = conversions_frame([(1, 1, 1, 10, T), (2, 777, 1, 10, T)], clicks)
    raw = raw.with_columns(click_rows=pl.when(pl.col("conv_id") == 2).then(0).otherwise(1).cast(pl.UInt32))
    j = build(raw, clicks)
    assert sorted(j["conv_id"].unique().to_list()) == [1]


def test_stored_journeys_mirror_php_rebuild():
    clicks = clicks_frame([(2000, 1, 10, 1699999900), (2002, 1, 10, 1700000400)])
    convs = conversions_frame([(42, 2002, 1, 10, 1700000500), (77, 3100, 1, 10, 1701000000, 1700999900)], clicks)
    stored = pl.DataFrame({"conv_id": [42, 42], "click_id": [2000, 2002], "click_time": [1699999900, 1700000400],
                           "position": [0, 1]}, schema=prosper_reads.STORED_TOUCHES)
    j = J.stored_journeys(convs, stored, J.dedupe_clicks(clicks))
    assert touches(j, 42) == [2000, 2002]
    assert touches(j, 77) == [3100]  # spec §6 item 8: no stored journey -> the converting click
    assert j.filter(pl.col("conv_id") == 77)["click_time"].to_list() == [1700999900]


def test_empty_inputs():
    empty_convs = conversions_frame([])
    j = build(empty_convs, clicks_frame([]))
    assert j.height == 0 and j.schema == pl.Schema(frames.JOURNEYS)
