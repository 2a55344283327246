"""The spec's worked examples as data: loaders that insert them into a Prosper202 database, and
the values the PHP engine stores for them, in the oracle's tuple formats
(``oracle.php_engine``):

    snapshot   = (model_id, user_id, date_hour, attributed_clicks, attributed_conversions,
                  revenue "35.5000", cost "1.5000")
    touchpoint = (model_id, user_id, date_hour, conv_id, position, click_id, credit, weight)

Every loader takes a SQLAlchemy Connection on a database that has Prosper202's tables
(``tables.create_missing``) and inserts with Core and bound parameters. Section numbers (spec §N)
refer to ``docs/php-engine.md``.
"""

from dataclasses import dataclass
from decimal import Decimal

from attribution_pipeline.storage import tables

T = 1717232400  # 2024-06-01 09:00:00 UTC (spec §2.4)
HOUR = 3600
DAY = 86400

#: A valid weighting_config for each model type. The time-decay half-life 48 is the one that
#: reproduces the spec §4.6 credits (24, 36 and 72 do not); it is also the PHP default.
MODEL_CONFIGS = {
    "last_touch": None,
    "position_based": '{"first_touch_weight":0.4,"last_touch_weight":0.4}',
    "time_decay": '{"half_life_hours":48}',
    "assisted": None,
    "algorithmic": '{"config":"baseline"}',
    "first_touch": None,
    "linear": None,
}


# ============================================================================================
# Row helpers
# ============================================================================================


def add_user(conn, user_id, deleted=0):
    conn.execute(tables.users.insert(), {"user_id": user_id, "user_name": f"user{user_id}",
                                         "user_deleted": deleted})


def add_campaign(conn, campaign_id, user_id, network_id):
    conn.execute(tables.aff_campaigns.insert(), {
        "aff_campaign_id": campaign_id, "user_id": user_id, "aff_network_id": network_id,
        "aff_campaign_name": f"campaign {campaign_id}", "aff_campaign_url": "https://example.com/offer",
        "aff_campaign_payout": Decimal("0"), "aff_campaign_time": T - 90 * DAY,
        "aff_campaign_foreign_payout": Decimal("0"),
    })


def add_click(conn, click_id, user_id, campaign_id, click_time, cpc="0.10", ppc_account_id=1):
    conn.execute(tables.clicks.insert(), {
        "click_id": click_id, "user_id": user_id, "aff_campaign_id": campaign_id,
        "ppc_account_id": ppc_account_id, "click_cpc": Decimal(cpc), "click_time": click_time,
    })


def add_conversion(conn, conv_id, click_id, campaign_id, user_id, payout, click_time, conv_time, deleted=0):
    conn.execute(tables.conversion_logs.insert(), {
        "conv_id": conv_id, "click_id": click_id, "transaction_id": None, "campaign_id": campaign_id,
        "click_payout": Decimal(payout), "user_id": user_id, "click_time": click_time,
        "conv_time": conv_time, "time_difference": str(conv_time - click_time), "ip": "",
        "pixel_type": 1, "user_agent": "", "deleted": deleted,
    })


def add_model(conn, model_id, user_id, model_type, config=None, *, slug=None, name=None, active=1):
    slug = slug if slug is not None else f"{model_type.replace('_', '-')}-{model_id}"
    conn.execute(tables.attribution_models.insert(), {
        "model_id": model_id, "user_id": user_id, "model_name": name if name is not None else slug,
        "model_slug": slug, "model_type": model_type, "weighting_config": config,
        "is_active": active, "is_default": 0, "created_at": T - DAY + model_id, "updated_at": T - DAY + model_id,
    })


def add_setting(conn, user_id, scope_type, scope_id, enabled, setting_id=None):
    """A 202_attribution_settings row (spec §5.1); scope_id None for the global scope."""
    row = {"user_id": user_id, "scope_type": scope_type, "scope_id": scope_id, "model_id": 0,
           "multi_touch_enabled": 1 if enabled else 0, "effective_at": T - DAY,
           "created_at": T - DAY, "updated_at": T - DAY}
    if setting_id is not None:
        row["setting_id"] = setting_id
    conn.execute(tables.attribution_settings.insert(), row)


def add_stored_journey(conn, conv_id, touches, created_at=T):
    """202_conversion_touchpoints rows as PHP's persistJourney writes them: positions 0..n-1."""
    for position, (click_id, click_time) in enumerate(touches):
        conn.execute(tables.conversion_touchpoints.insert(), {
            "conv_id": conv_id, "click_id": click_id, "click_time": click_time,
            "position": position, "created_at": created_at,
        })


def store_expected(conn, expected, run_start=None, run_end=None, created_at=T):
    """Write oracle rows into 202_attribution_snapshots / _touchpoints as an engine would (global
    scope). Used to test ``stored_rows`` and ``diff``."""
    snapshot_ids = {}
    for model_id, user_id, date_hour, clicks, conversions, revenue, cost in expected.snapshots:
        result = conn.execute(tables.attribution_snapshots.insert(), {
            "model_id": model_id, "user_id": user_id, "scope_type": "global", "scope_id": None,
            "date_hour": date_hour,
            "lookback_start": run_start if run_start is not None else date_hour,
            "lookback_end": run_end if run_end is not None else date_hour + HOUR,
            "attributed_clicks": clicks, "attributed_conversions": conversions,
            "attributed_revenue": Decimal(revenue), "attributed_cost": Decimal(cost),
            "created_at": created_at,
        })
        snapshot_ids[(model_id, user_id, date_hour)] = result.inserted_primary_key[0]
    for model_id, user_id, date_hour, conv_id, position, click_id, credit, weight in expected.touchpoints:
        conn.execute(tables.attribution_touchpoints.insert(), {
            "snapshot_id": snapshot_ids[(model_id, user_id, date_hour)], "conv_id": conv_id,
            "click_id": click_id, "position": position, "credit": Decimal(credit),
            "weight": Decimal(weight), "created_at": created_at,
        })


# ============================================================================================
# Spec 2.4 + 4.6: the end-to-end example (4 conversions, each model run alone)
# ============================================================================================

SECTION_4_6_USER = 1
SECTION_4_6_HOURS = [T, T + HOUR, T + 2 * HOUR]  # the run window [T, T+3h] in whole hours (D3)

#: Clicks of account 1 (click_id, campaign, click_time, cpc). The cpc only matters on converting
#: clicks (D5). Click 201 is the only click of campaign 20: any time in [T+3700-30d, T+3700] makes
#: the journey of conversion 3 exactly [201], as the spec says; T+3650 puts it 50 s before that
#: conversion, in the same hour, so the journey is [201] under every journey rule.
SECTION_4_6_CLICKS = (
    (101, 10, T - 3 * DAY, "0.60"),
    (102, 10, T - DAY, "0.65"),
    (103, 10, T - HOUR, "0.70"),
    (104, 10, T - 600, "0.80"),
    (105, 10, T + 1200, "0.90"),
    (201, 20, T + 3650, "0.25"),
)
#: Clicks that must stay out of every journey (spec §2.4): another account's click on campaign 10,
#: and account 1's click on another campaign (30), both at T-3600.
SECTION_4_6_EXCLUDED_CLICKS = (
    (901, 2, 10, T - HOUR, "0.33"),  # (click_id, user_id, campaign, click_time, cpc)
    (902, 1, 30, T - HOUR, "0.44"),
)
#: (conv_id, click_id, campaign, payout, conv_time)
SECTION_4_6_CONVERSIONS = (
    (1, 104, 10, "20", T + 300),
    (2, 103, 10, "15.5", T + 1800),
    (3, 201, 20, "7.25", T + 3700),
    (4, 105, 10, "11", T + 7300),
)
#: The journeys PHP had stored when it produced the 4.6 numbers (conversion 4 had none).
SECTION_4_6_STORED_JOURNEYS = {
    1: (101, 102, 103, 104),
    2: (101, 102, 103, 104, 105),
    3: (201,),
}
#: Campaign -> advertiser (aff_network_id). Two advertisers so that the advertiser scope of the
#: multi-touch switch (spec §5.1) can tell the campaigns apart.
SECTION_4_6_NETWORKS = {10: 1, 20: 2}


def load_section_4_6(conn, models=("last_touch", "position_based", "time_decay", "assisted"),
                     extra_models=(), stored_journeys=True):
    """Insert the spec §2.4 / §4.6 data for user 1 and return ``{key: model_id}``.

    ``models`` are model types, given ids 1, 2, ... in that order and keyed by their type (the
    default order matches spec §4.4: LT 1, PB 2, TD 3, AS 4). ``extra_models`` are
    ``(key, model_type, weighting_config)`` rows (e.g. invalid ones), given the next ids.
    With ``stored_journeys`` the journeys PHP had stored are written to 202_conversion_touchpoints.
    """
    user_id = SECTION_4_6_USER
    add_user(conn, user_id)
    for campaign_id, network_id in SECTION_4_6_NETWORKS.items():
        add_campaign(conn, campaign_id, user_id, network_id)
    click_times = {}
    for click_id, campaign_id, click_time, cpc in SECTION_4_6_CLICKS:
        add_click(conn, click_id, user_id, campaign_id, click_time, cpc)
        click_times[click_id] = click_time
    for click_id, other_user, campaign_id, click_time, cpc in SECTION_4_6_EXCLUDED_CLICKS:
        add_click(conn, click_id, other_user, campaign_id, click_time, cpc)
    for conv_id, click_id, campaign_id, payout, conv_time in SECTION_4_6_CONVERSIONS:
        add_conversion(conn, conv_id, click_id, campaign_id, user_id, payout, click_times[click_id], conv_time)
    if stored_journeys:
        for conv_id, click_ids in SECTION_4_6_STORED_JOURNEYS.items():
            add_stored_journey(conn, conv_id, [(c, click_times[c]) for c in click_ids])
    ids = {}
    rows = [(model_type, model_type, MODEL_CONFIGS[model_type]) for model_type in models] + list(extra_models)
    for model_id, (key, model_type, config) in enumerate(rows, start=1):
        add_model(conn, model_id, user_id, model_type, config, slug=key.replace("_", "-"))
        ids[key] = model_id
    return ids


#: Per-bucket totals, identical for every model (spec §4.6): date_hour -> (conversions, revenue, cost).
SECTION_4_6_BUCKETS = {
    T: (2, "35.5000", "1.5000"),
    T + HOUR: (1, "7.2500", "0.2500"),
    T + 2 * HOUR: (1, "11.0000", "0.9000"),
}
#: attributed_clicks per bucket (spec §4.6: bucket T differs per model, the others are 1).
SECTION_4_6_CLICKS_PER_BUCKET = {
    "last_touch": {T: 2, T + HOUR: 1, T + 2 * HOUR: 1},
    "position_based": {T: 9, T + HOUR: 1, T + 2 * HOUR: 1},
    "time_decay": {T: 9, T + HOUR: 1, T + 2 * HOUR: 1},
    "assisted": {T: 7, T + HOUR: 1, T + 2 * HOUR: 1},
}
#: Stored touchpoints (position, click_id, credit) of conversions 1 and 2 (spec §4.6).
SECTION_4_6_CREDITS = {
    "last_touch": {
        1: ((0, 104, "1.00000"),),
        2: ((0, 103, "1.00000"),),
    },
    "position_based": {
        1: ((0, 101, "0.40000"), (1, 102, "0.10000"), (2, 103, "0.10000"), (3, 104, "0.40000")),
        2: ((0, 101, "0.40000"), (1, 102, "0.06667"), (2, 103, "0.06667"), (3, 104, "0.06667"),
            (4, 105, "0.40000")),
    },
    "time_decay": {
        1: ((0, 101, "0.11615"), (1, 102, "0.23230"), (2, 103, "0.32381"), (3, 104, "0.32773")),
        2: ((0, 101, "0.08732"), (1, 102, "0.17465"), (2, 103, "0.24345"), (3, 104, "0.24640"),
            (4, 105, "0.24818")),
    },
    "assisted": {
        1: ((0, 101, "0.33333"), (1, 102, "0.33333"), (2, 103, "0.33333")),
        2: ((0, 101, "0.25000"), (1, 102, "0.25000"), (2, 103, "0.25000"), (3, 104, "0.25000")),
    },
}

#: With journeys built from 202_clicks (D13, the project default) conversion 4 (T+7300, click
#: 105) is no longer single-touch: PHP stored no journey for it, but the journey rule (D2; what
#: PHP's backfill would store) gives it campaign 10's clicks 101..105, the same touches as
#: conversion 2. Not PHP-verified numbers: derived by hand from spec §3.2-§3.4. The time-decay
#: credits equal conversion 2's, because every age is 5500 s (1.53 h) larger and exponential decay
#: keeps the ratios (ages 74.03h/26.03h/3.03h/2.19h/1.69h, h=48).
SECTION_4_6_CLICKS_SOURCE_CONV_4 = {
    "last_touch": ((0, 105, "1.00000"),),
    "position_based": ((0, 101, "0.40000"), (1, 102, "0.06667"), (2, 103, "0.06667"), (3, 104, "0.06667"),
                       (4, 105, "0.40000")),
    "time_decay": ((0, 101, "0.08732"), (1, 102, "0.17465"), (2, 103, "0.24345"), (3, 104, "0.24640"),
                   (4, 105, "0.24818")),
    "assisted": ((0, 101, "0.25000"), (1, 102, "0.25000"), (2, 103, "0.25000"), (3, 104, "0.25000")),
}


def section_4_6_expected(ids, journey_source="stored"):
    """(snapshots, touchpoints) the spec §4.6 run stores, each model run alone, for the models in
    ``ids`` (as returned by :func:`load_section_4_6`, default model types only).

    ``journey_source="stored"`` is the PHP run exactly (conversion 4 single-touch);
    ``"clicks"`` is the project default (D13), which differs only in conversion 4.
    """
    user_id = SECTION_4_6_USER
    snapshots, touchpoints = [], []
    for model_type, model_id in ids.items():
        credits = dict(SECTION_4_6_CREDITS[model_type])
        credits[3] = ((0, 201, "1.00000"),)
        credits[4] = ((0, 105, "1.00000"),)
        clicks = dict(SECTION_4_6_CLICKS_PER_BUCKET[model_type])
        if journey_source == "clicks":
            credits[4] = SECTION_4_6_CLICKS_SOURCE_CONV_4[model_type]
            clicks[T + 2 * HOUR] = len(credits[4])
        for date_hour, (conversions, revenue, cost) in SECTION_4_6_BUCKETS.items():
            snapshots.append((model_id, user_id, date_hour, clicks[date_hour], conversions, revenue, cost))
        conv_hours = {conv_id: conv_time - conv_time % HOUR for conv_id, _, _, _, conv_time in SECTION_4_6_CONVERSIONS}
        for conv_id, rows in credits.items():
            for position, click_id, credit in rows:
                touchpoints.append((model_id, user_id, conv_hours[conv_id], conv_id, position, click_id,
                                    credit, credit))
    return sorted(snapshots), sorted(touchpoints)


# ============================================================================================
# Single-conversion reference cases: spec §3.8 and PHPUnit items (spec §6) expressed as data
# ============================================================================================


@dataclass(frozen=True)
class Case:
    """One conversion of account ``user_id`` on campaign 10 and one active model.

    ``clicks`` are the account's clicks on the campaign (converting click included, whatever its
    time); journeys come from them (D2). The converting click carries ``cpc``, the others a
    different cpc that must never be used (D5). ``foreign_clicks`` (click_id, user_id, campaign,
    time) must stay out of the journey.
    """

    name: str
    model_type: str
    config: str | None
    clicks: tuple
    converting_click: int
    conv_time: int
    payout: str
    cpc: str
    touchpoints: tuple  # expected (position, click_id, credit) as stored
    snapshot: tuple  # expected (attributed_clicks, attributed_conversions, revenue, cost) as stored
    foreign_clicks: tuple = ()
    conv_id: int = 1
    user_id: int = 1
    model_id: int = 1


CASE_CAMPAIGN = 10
CASE_NETWORK = 1
OTHER_CPC = "0.01234"


def load_case(conn, case):
    """Insert ``case``; return the hour to process."""
    add_user(conn, case.user_id)
    add_campaign(conn, CASE_CAMPAIGN, case.user_id, CASE_NETWORK)
    click_time = None
    for click_id, time in case.clicks:
        converting = click_id == case.converting_click
        add_click(conn, click_id, case.user_id, CASE_CAMPAIGN, time, case.cpc if converting else OTHER_CPC)
        if converting:
            click_time = time
    for click_id, user_id, campaign_id, time in case.foreign_clicks:
        add_click(conn, click_id, user_id, campaign_id, time, OTHER_CPC)
    add_conversion(conn, case.conv_id, case.converting_click, CASE_CAMPAIGN, case.user_id, case.payout,
                   click_time, case.conv_time)
    add_model(conn, case.model_id, case.user_id, case.model_type, case.config)
    return case.conv_time - case.conv_time % HOUR


def case_expected(case):
    """(snapshots, touchpoints) in the oracle's formats."""
    hour = case.conv_time - case.conv_time % HOUR
    clicks, conversions, revenue, cost = case.snapshot
    snapshots = [(case.model_id, case.user_id, hour, clicks, conversions, revenue, cost)]
    touchpoints = sorted((case.model_id, case.user_id, hour, case.conv_id, position, click_id, credit, credit)
                         for position, click_id, credit in case.touchpoints)
    return snapshots, touchpoints


PB_04_04 = '{"first_touch_weight":0.4,"last_touch_weight":0.4}'
C = T + 600  # conversion time of the spec §3.8 cases


def _pb(first, last):
    return f'{{"first_touch_weight":{first},"last_touch_weight":{last}}}'


def _td(half_life):
    return f'{{"half_life_hours":{half_life}}}'


def _series(first_id, count, newest_time, step):
    """``count`` clicks, ids ascending with time, the last at ``newest_time``."""
    return tuple((first_id + i, newest_time - (count - 1 - i) * step) for i in range(count))


_JOURNEY_26_WINDOW = ((1600, C - 40 * DAY),) + _series(1601, 30, C - 60, 60)
_JOURNEY_26_CAP = _series(1701, 27, C - 60, 60)

#: Spec 3.8 reference numbers [verified PHP output], as data. D7 cases are marked.
REFERENCE_CASES = (
    Case("pb_0.3_0.4_n5", "position_based", _pb(0.3, 0.4), _series(1201, 5, C - 60, HOUR), 1205, C, "10", "1.23",
         ((0, 1201, "0.30000"), (1, 1202, "0.10000"), (2, 1203, "0.10000"), (3, 1204, "0.10000"), (4, 1205, "0.40000")),
         (5, 1, "10.0000", "1.2300")),
    Case("pb_0.2_0.6_n2", "position_based", _pb(0.2, 0.6), _series(1301, 2, C - 60, HOUR), 1302, C, "9", "3",
         ((0, 1301, "0.25000"), (1, 1302, "0.75000")),
         (2, 1, "9.0000", "3.0000")),
    Case("pb_0_0_n4_ends_skipped", "position_based", _pb(0, 0), _series(1401, 4, C - 60, HOUR), 1404, C, "10", "1",
         ((1, 1402, "0.50000"), (2, 1403, "0.50000")),
         (2, 1, "10.0000", "1.0000")),
    Case("pb_0.5_0.5_n4_middles_skipped", "position_based", _pb(0.5, 0.5), _series(1501, 4, C - 60, HOUR), 1504, C,
         "10", "1",
         ((0, 1501, "0.50000"), (3, 1504, "0.50000")),
         (2, 1, "10.0000", "1.0000")),
    Case("pb_tie_click_id_breaks_time_ties", "position_based", PB_04_04,
         ((125, T - HOUR), (121, T - HOUR), (120, T - HOUR + 540)), 120, C, "30", "6",
         ((0, 121, "0.40000"), (1, 125, "0.20000"), (2, 120, "0.40000")),
         (3, 1, "30.0000", "6.0000")),
    Case("td_48_ages_96h_48h_0.5h", "time_decay", _td(48),
         ((1801, C - 96 * HOUR), (1802, C - 48 * HOUR), (1803, C - 1800)), 1803, C, "100", "12.5",
         ((0, 1801, "0.14345"), (1, 1802, "0.28689"), (2, 1803, "0.56966")),
         (3, 1, "100.0000", "12.5000")),
    Case("td_string_12.9_truncated", "time_decay", _td('"12.9"'), ((1901, C - 13 * HOUR), (1902, C - HOUR)), 1902, C,
         "3", "0.3",
         ((0, 1901, "0.33333"), (1, 1902, "0.66667")),
         (2, 1, "3.0000", "0.3000")),
    Case("td_12", "time_decay", _td(12), ((1901, C - 13 * HOUR), (1902, C - HOUR)), 1902, C, "3", "0.3",
         ((0, 1901, "0.33333"), (1, 1902, "0.66667")),
         (2, 1, "3.0000", "0.3000")),
    Case("td_1_single_primary_60_days_old_underflows", "time_decay", _td(1), ((2101, C - 60 * DAY),), 2101, C,
         "10", "1",
         ((0, 2101, "1.00000"),),
         (1, 1, "10.0000", "1.0000")),
    Case("td_1_old_primary_gets_zero", "time_decay", _td(1), ((2201, C - 60 * DAY), (2202, C - 60)), 2201, C,
         "10", "1",
         ((1, 2202, "1.00000"),),
         (1, 1, "10.0000", "1.0000")),
    Case("assisted_n4_last_skipped", "assisted", None, _series(2301, 4, C - 60, HOUR), 2304, C, "9", "0.9",
         ((0, 2301, "0.33333"), (1, 2302, "0.33333"), (2, 2303, "0.33333")),
         (3, 1, "9.0000", "0.9000")),
    Case("assisted_later_campaign_click", "assisted", None, ((91, C - 900), (92, C - 60)), 91, C, "5", "0.5",
         ((0, 91, "1.00000"),),
         (1, 1, "5.0000", "0.5000")),
    Case("last_touch_ignores_journey", "last_touch", None, _series(2401, 3, C - 60, HOUR), 2402, C, "5", "0.5",
         ((0, 2402, "1.00000"),),
         (1, 1, "5.0000", "0.5000")),
    # 30 clicks in the window, the converting click 40 days old: the newest 25 + the primary = 26.
    Case("journey_26_touches_primary_outside_window", "position_based", PB_04_04, _JOURNEY_26_WINDOW, 1600, C,
         "26", "2.6",
         ((0, 1600, "0.40000"),) + tuple((i, 1605 + i, "0.00833") for i in range(1, 25)) + ((25, 1630, "0.40000"),),
         (26, 1, "26.0000", "2.6000")),
    # 27 clicks in the window, the converting click the 2nd oldest: the oldest (1701) falls out.
    Case("journey_26_touches_primary_beyond_cap", "position_based", PB_04_04, _JOURNEY_26_CAP, 1702, C,
         "26", "2.6",
         ((0, 1702, "0.40000"),) + tuple((i, 1702 + i, "0.00833") for i in range(1, 25)) + ((25, 1727, "0.40000"),),
         (26, 1, "26.0000", "2.6000")),
    # Inclusive 30-day boundary, a click at conv_time included, clicks after the converting click
    # included, a click after the conversion, other account and other campaign excluded.
    Case("window_bounds_and_foreign_clicks", "position_based", PB_04_04,
         ((2500, C - 30 * DAY - 1), (2501, C - 30 * DAY), (2502, C - HOUR), (2503, C), (2504, C + 1)), 2502, C,
         "30", "6",
         ((0, 2501, "0.40000"), (1, 2502, "0.20000"), (2, 2503, "0.40000")),
         (3, 1, "30.0000", "6.0000"),
         foreign_clicks=((2590, 2, CASE_CAMPAIGN, C - 600), (2591, 1, 11, C - 600))),
    # D7 (not PHP): first_touch, linear; algorithmic is last touch.
    Case("d7_first_touch", "first_touch", None, _series(2601, 3, C - 60, HOUR), 2603, C, "5", "0.5",
         ((0, 2601, "1.00000"),),
         (1, 1, "5.0000", "0.5000")),
    Case("d7_linear", "linear", None, _series(2701, 3, C - 60, HOUR), 2703, C, "5", "0.5",
         ((0, 2701, "0.33333"), (1, 2702, "0.33333"), (2, 2703, "0.33333")),
         (3, 1, "5.0000", "0.5000")),
    Case("d7_algorithmic_is_last_touch", "algorithmic", '{"config":"baseline"}', _series(2801, 3, C - 60, HOUR), 2802,
         C, "5", "0.5",
         ((0, 2802, "1.00000"),),
         (1, 1, "5.0000", "0.5000")),
)

#: PHPUnit reference cases (spec §6) with one conversion each. Conversion ids, click ids, payouts
#: and costs are the test's; times the test does not fix are chosen here.
PHPUNIT_CASES = (
    # 2. TimeDecayStrategyTest::testDistributesCreditByHalfLifeCurve
    Case("phpunit_2_time_decay_curve", "time_decay", _td(1), ((2001, T - 2 * HOUR), (2002, T - HOUR), (2003, T)),
         2003, T, "35", "7",
         ((0, 2001, "0.14286"), (1, 2002, "0.28571"), (2, 2003, "0.57143")),
         (3, 1, "35.0000", "7.0000"), conv_id=201),
    # 3. TimeDecayStrategyTest::testSingleTouchJourneyReceivesFullCredit
    Case("phpunit_3_time_decay_single_touch", "time_decay", _td(1), ((2002, T - 600),), 2002, T, "10", "2.5",
         ((0, 2002, "1.00000"),),
         (1, 1, "10.0000", "2.5000"), conv_id=202),
    # 4. PositionBasedStrategyTest (0.4 / 0.4)
    Case("phpunit_4_position_based_single_touch", "position_based", PB_04_04, ((9100, T - 600),), 9100, T, "15", "3",
         ((0, 9100, "1.00000"),),
         (1, 1, "15.0000", "3.0000")),
    Case("phpunit_4_position_based_three_touches", "position_based", PB_04_04,
         ((9101, T - 2 * HOUR), (9102, T - HOUR), (9103, T - 60)), 9103, T, "30", "6",
         ((0, 9101, "0.40000"), (1, 9102, "0.20000"), (2, 9103, "0.40000")),
         (3, 1, "30.0000", "6.0000")),
    Case("phpunit_4_position_based_two_touches", "position_based", PB_04_04, ((9201, T - HOUR), (9202, T - 60)), 9202,
         T, "10", "2",
         ((0, 9201, "0.50000"), (1, 9202, "0.50000")),
         (2, 1, "10.0000", "2.0000")),
    # 5. AssistedStrategyTest
    Case("phpunit_5_assisted_single_touch", "assisted", None, ((9300, T - 600),), 9300, T, "0", "0.5",
         ((0, 9300, "1.00000"),),
         (1, 1, "0.0000", "0.5000")),
    Case("phpunit_5_assisted_three_touches", "assisted", None, ((9301, T - 2 * HOUR), (9302, T - HOUR), (9303, T - 60)),
         9303, T, "12", "2.4",
         ((0, 9301, "0.50000"), (1, 9302, "0.50000")),
         (2, 1, "12.0000", "2.4000")),
)


# ============================================================================================
# PHPUnit items 1 and 6 (several conversions)
# ============================================================================================


@dataclass(frozen=True)
class Loaded:
    hours: list
    snapshots: list
    touchpoints: list


PHPUNIT_1_TS = 1704111300  # 2024-01-01 12:15:00 UTC


def load_phpunit_last_touch(conn):
    """Spec 6 item 1 (LastTouchStrategyTest::testAggregatesConversionsPerHour): model 10."""
    ts = PHPUNIT_1_TS
    hour = ts - ts % HOUR
    user_id, campaign_id, model_id = 1, 10, 10
    add_user(conn, user_id)
    add_campaign(conn, campaign_id, user_id, 1)
    # (conv_id, click_id, conv_time, payout, cost); each click 60 s before its conversion.
    conversions = ((101, 1001, ts, "12.50", "4.10"), (102, 1002, ts + 120, "7.25", "2.50"),
                   (103, 1003, ts + 3600, "9.00", "3.00"))
    for conv_id, click_id, conv_time, payout, cost in conversions:
        add_click(conn, click_id, user_id, campaign_id, conv_time - 60, cost)
        add_conversion(conn, conv_id, click_id, campaign_id, user_id, payout, conv_time - 60, conv_time)
    add_model(conn, model_id, user_id, "last_touch")
    return Loaded(
        hours=[hour, hour + HOUR],
        snapshots=[(model_id, user_id, hour, 2, 2, "19.7500", "6.6000"),
                   (model_id, user_id, hour + HOUR, 1, 1, "9.0000", "3.0000")],
        touchpoints=[(model_id, user_id, hour, 101, 0, 1001, "1.00000", "1.00000"),
                     (model_id, user_id, hour, 102, 0, 1002, "1.00000", "1.00000"),
                     (model_id, user_id, hour + HOUR, 103, 0, 1003, "1.00000", "1.00000")],
    )


PHPUNIT_6_TS = 1707553800  # 2024-02-10 08:30:00 UTC


def load_phpunit_runner(conn):
    """Spec 6 item 6 (AttributionJobRunnerTest::testPersistsSnapshotsAndTouchpoints): user 9,
    last-touch model 50, window [ts-3600, ts+3600] as whole hours."""
    ts = PHPUNIT_6_TS
    hour = ts - ts % HOUR
    user_id, campaign_id, model_id = 9, 10, 50
    add_user(conn, user_id)
    add_campaign(conn, campaign_id, user_id, 1)
    for conv_id, click_id, conv_time, payout, cost in ((301, 4001, ts, "8", "2"), (302, 4002, ts + 60, "5", "1.5")):
        add_click(conn, click_id, user_id, campaign_id, conv_time - 30, cost)
        add_conversion(conn, conv_id, click_id, campaign_id, user_id, payout, conv_time - 30, conv_time)
    add_model(conn, model_id, user_id, "last_touch")
    return Loaded(
        hours=[hour - HOUR, hour, hour + HOUR],
        snapshots=[(model_id, user_id, hour, 2, 2, "13.0000", "3.5000")],
        touchpoints=[(model_id, user_id, hour, 301, 0, 4001, "1.00000", "1.00000"),
                     (model_id, user_id, hour, 302, 0, 4002, "1.00000", "1.00000")],
    )


# ============================================================================================
# Accounts with a few conversions per hour (tests/test_bad_input.py: a bad row beside good ones)
# ============================================================================================

#: The models every account gets: (type, weighting_config). Multi-touch on purpose (the journeys
#: matter), and two of them so that "another model of the same user" is a group too.
ACCOUNT_MODELS = (("last_touch", None), ("position_based", '{"first_touch_weight":0.4,"last_touch_weight":0.4}'))
ACCOUNT_HOURS = (T, T + HOUR, T + 2 * HOUR)


@dataclass(frozen=True)
class Account:
    """A user with its own campaigns, clicks, conversions and models; every id derives from the
    user id, so accounts never share a row. ``campaign`` holds the good traffic; ``side_campaign``
    (no clicks of its own) is where a test adds rows that must stay out of the good journeys."""

    user_id: int

    @property
    def campaign(self) -> int:
        return self.user_id * 10

    @property
    def side_campaign(self) -> int:
        return self.user_id * 10 + 1

    @property
    def models(self) -> tuple[int, ...]:
        return tuple(self.user_id * 10 + i for i in range(1, len(ACCOUNT_MODELS) + 1))

    def id(self, k: int) -> int:
        """The k-th click or conversion id of the account (k < 1000)."""
        return self.user_id * 1000 + k

    def converting_click(self, hour_index: int) -> int:
        """The click of the account's conversion in ``ACCOUNT_HOURS[hour_index]`` (same id as it)."""
        return self.id(10 + hour_index)

    def groups(self, hours=ACCOUNT_HOURS) -> set[tuple[int, int, int]]:
        return {(m, self.user_id, h) for m in self.models for h in hours}


def load_account(conn, account: Account) -> None:
    """Two early touches, then one conversion per hour of ACCOUNT_HOURS (15 min after its click,
    payouts 10.5, 20.5, 30.5), each on the account's campaign, and the ACCOUNT_MODELS."""
    user = account.user_id
    add_user(conn, user)
    add_campaign(conn, account.campaign, user, user)
    add_campaign(conn, account.side_campaign, user, user)
    add_click(conn, account.id(1), user, account.campaign, T - 2 * DAY, "0.05", ppc_account_id=user)
    add_click(conn, account.id(2), user, account.campaign, T - HOUR, "0.07", ppc_account_id=user)
    for index, hour in enumerate(ACCOUNT_HOURS):
        click = account.converting_click(index)
        add_click(conn, click, user, account.campaign, hour + 600, f"0.{index + 1}", ppc_account_id=user)
        add_conversion(conn, click, click, account.campaign, user, f"{10 * index + 10}.5", hour + 600, hour + 900)
    for model_id, (model_type, config) in zip(account.models, ACCOUNT_MODELS):
        add_model(conn, model_id, user, model_type, config)
