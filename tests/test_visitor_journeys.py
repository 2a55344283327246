"""Visitor-level journeys and training paths (issue 22): 202_clicks_advance read on MariaDB with the
visitor key reduced to an opaque integer, a visitor's journey across campaigns and traffic sources
with D2's cap and converting-click rules, training paths cut at conversions, the visitor key
setting, the generator's repeat visitors (the other tables unchanged), and erasure of advance rows."""

import ast
import hashlib
import logging
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import func, select

from attribution_pipeline.core import frames
from attribution_pipeline.core import journey_rules as J
from attribution_pipeline.core.visitor_paths import (
    CHANNELS,
    TRAINING_PATHS,
    VISITOR_CLICKS,
    training_paths,
    visitor_journeys,
)
from attribution_pipeline.demo.generator import GeneratorConfig, generate, load
from attribution_pipeline.settings import DEFAULT_VISITOR_KEY, VISITOR_KEY_COLUMNS, Settings, SettingsError
from attribution_pipeline.storage import database, prosper_reads, tables, visitor_rows
from attribution_pipeline.storage.click_reads import clicks as campaign_clicks
from attribution_pipeline.storage.visitor_clicks import read_visitor_clicks, visitor_clicks_in

T = 1717232400  # 2024-06-01 09:00 UTC
HOUR, DAY = 3600, 86400
LOOKBACK = 30 * DAY
#: Distinctive key values, so that a leak into a log or a frame is recognisable.
IP_A, IP_D, PLATFORM, BROWSER, DEVICE, DEVICE_B = 987_654_321, 876_543_219, 424_242, 535_353, 646_464, 757_575
KEY_VALUES = {IP_A, IP_D, PLATFORM, BROWSER, DEVICE, DEVICE_B}
#: ppc account -> traffic source (ppc_network_id)
ACCOUNTS = {11: (1, 101), 12: (1, 102), 13: (2, 103)}

# (click_id, user, campaign, account, landing page, click_time, advance key or None)
A = (IP_A, PLATFORM, BROWSER, DEVICE)  # visitor A
B = (IP_A, PLATFORM, BROWSER, DEVICE_B)  # visitor B: A's address, another device
D = (IP_D, PLATFORM, BROWSER, DEVICE)
CLICKS = [
    (1000, 1, 1, 11, 21, T - 40 * DAY, A),  # outside the 30-day lookback
    (1001, 1, 1, 11, 21, T - 5 * DAY, A),
    (1002, 1, 2, 12, 0, T - 3 * DAY, A),  # converts (conversion 2)
    (1003, 1, 1, 12, 21, T - 1 * DAY, A),
    (1004, 1, 2, 11, 22, T - 2 * HOUR, A),  # converts (conversion 1)
    (1005, 1, 1, 11, 21, T + 20 * 60, A),  # after conversion 1: no journey, the last training path
    (2001, 1, 2, 12, 22, T - 4 * DAY, B),
    (2002, 1, 2, 11, 22, T - 1 * HOUR, B),
    (3001, 1, 2, 11, 22, T - 1 * HOUR, None),  # no 202_clicks_advance row (converts: conversion 3)
    (4001, 1, 1, 12, 21, T - 2 * DAY, D),  # converts (conversion 4), older than D's newest two
    (4002, 1, 1, 12, 21, T - 1 * DAY, D),
    (4003, 1, 2, 11, 22, T - 12 * HOUR, D),
    (4004, 1, 1, 11, 21, T - 1 * HOUR, D),
    (5001, 2, 3, 13, 31, T - 1 * HOUR, A),  # user 2: the same key is another visitor
]
# (conv_id, click_id, campaign, user, conv_time, 202_conversion_logs.click_time)
CONVERSIONS = [
    (1, 1004, 2, 1, T + 10 * 60, T - 2 * HOUR),
    (2, 1002, 2, 1, T - 3 * DAY + HOUR, T - 3 * DAY),
    (3, 3001, 2, 1, T + 30 * 60, T - 1 * HOUR),
    (4, 4001, 1, 1, T + 5 * 60, T - 2 * DAY - 7),  # the log's click time differs from the click's
]
WINDOW = (T - 10 * DAY, T + HOUR)


def load_world(engine) -> None:
    with engine.begin() as conn:
        for user in (1, 2):
            conn.execute(tables.users.insert(), {"user_id": user, "user_name": f"user{user}"})
        for account, (user, network) in ACCOUNTS.items():
            conn.execute(tables.ppc_accounts.insert(), {"ppc_account_id": account, "user_id": user,
                                                        "ppc_network_id": network, "ppc_account_name": f"a{account}",
                                                        "ppc_account_time": T - 90 * DAY})
        for click_id, user, campaign, account, landing, t, key in CLICKS:
            conn.execute(tables.clicks.insert(), {"click_id": click_id, "user_id": user, "aff_campaign_id": campaign,
                                                  "ppc_account_id": account, "landing_page_id": landing,
                                                  "click_cpc": Decimal("0.25"), "click_time": t})
            if key is not None:
                conn.execute(tables.clicks_advance.insert(), {
                    "click_id": click_id, "ip_id": key[0], "platform_id": key[1], "browser_id": key[2],
                    "device_id": key[3], "country_id": 7, "region_id": 8, "city_id": 9})
        for conv_id, click_id, campaign, user, conv_time, click_time in CONVERSIONS:
            conn.execute(tables.conversion_logs.insert(), {
                "conv_id": conv_id, "click_id": click_id, "campaign_id": campaign, "click_payout": Decimal("10"),
                "user_id": user, "click_time": click_time, "conv_time": conv_time, "time_difference": "",
                "pixel_type": 1, "user_agent": ""})


@pytest.fixture
def world(mysql_url):
    engine = database.make_engine(mysql_url)
    load_world(engine)
    yield engine
    engine.dispose()


def conversions_of(engine) -> pl.DataFrame:
    hours = range(WINDOW[0] // HOUR * HOUR, WINDOW[1] + 1, HOUR)
    with engine.connect() as conn:
        return prosper_reads.conversions(conn, list(hours), [1, 2])


def read(engine, recipe=DEFAULT_VISITOR_KEY, logger=None) -> pl.DataFrame:
    db = database.Database(str(engine.url.render_as_string(hide_password=False)))
    return read_visitor_clicks(db, [1, 2], WINDOW[0] - LOOKBACK, WINDOW[1], recipe, slice_seconds=3 * DAY,
                               logger=logger)


def touches(journeys: pl.DataFrame, conv_id: int) -> list[int]:
    return journeys.filter(pl.col("conv_id") == conv_id).sort("position").get_column("click_id").to_list()


def assert_no_key(df: pl.DataFrame) -> None:
    """No visitor key column, and no key value in any integer column but as the opaque visitor."""
    assert not set(df.columns) & set(VISITOR_KEY_COLUMNS)
    for name, dtype in df.schema.items():
        if dtype.is_integer():
            assert not set(df.get_column(name).to_list()) & KEY_VALUES, name


# ------------------------------------------------------------------------------------------
# the read
# ------------------------------------------------------------------------------------------


def test_the_read_gives_opaque_visitors_and_traffic_sources(world, caplog):
    caplog.set_level(logging.DEBUG)
    clicks = read(world, logger=logging.getLogger("attribution_test"))
    assert clicks.schema == pl.Schema(VISITOR_CLICKS)
    assert_no_key(clicks)
    assert sorted(clicks.get_column("click_id").to_list()) == sorted(c[0] for c in CLICKS if c[5] <= WINDOW[1])
    visitor = dict(zip(clicks.get_column("click_id").to_list(), clicks.get_column("visitor").to_list()))
    assert len({visitor[c] for c in (1000, 1001, 1002, 1003, 1004, 1005)}) == 1  # visitor A
    assert visitor[2001] == visitor[2002] != visitor[1001]  # B: another device
    assert visitor[5001] != visitor[1001]  # the same key on another user's click
    assert visitor[3001] not in {v for c, v in visitor.items() if c != 3001}  # no advance row: its own visitor
    networks = dict(zip(clicks.get_column("click_id").to_list(), clicks.get_column("ppc_network_id").to_list()))
    assert (networks[1001], networks[1002], networks[5001]) == (101, 102, 103)
    # the key is never logged (nor its values)
    text = caplog.text
    assert not any(str(v) in text for v in KEY_VALUES)
    # the connection-level read of a window and of converting clicks outside it
    with world.connect() as conn:
        narrow = visitor_clicks_in(conn, [1], T - HOUR, T, "ip_id, platform_id,browser_id,device_id", [1001, 1004])
    assert sorted(narrow.get_column("click_id").to_list()) == [1001, 1004, 2002, 3001, 4004]


def test_an_unknown_or_empty_recipe_is_a_named_error(world):
    for recipe in (("ip_id", "click_id"), (), "user_agent", " , "):
        with pytest.raises(SettingsError, match="visitor key"):
            read(world, recipe)


# ------------------------------------------------------------------------------------------
# visitor journeys
# ------------------------------------------------------------------------------------------


def test_a_visitor_journey_crosses_campaigns_and_traffic_sources(world):
    clicks, conv = read(world), conversions_of(world)
    journeys = visitor_journeys(conv, clicks, LOOKBACK, 25)
    assert journeys.schema == pl.Schema(frames.JOURNEYS)
    assert_no_key(journeys)
    one = journeys.filter(pl.col("conv_id") == 1).sort("position")
    assert one.get_column("click_id").to_list() == [1001, 1002, 1003, 1004]  # not 1000 (lookback), 1005 (later)
    assert set(one.get_column("touch_campaign_id")) == {1, 2}
    assert set(one.get_column("touch_ppc_account_id")) == {11, 12}  # traffic sources 101 and 102
    assert one.get_column("is_converting").to_list() == [False, False, False, True]
    assert one.get_column("n").to_list() == [4] * 4 and one.get_column("position").to_list() == [0, 1, 2, 3]
    # B's clicks (same address, another device), user 2's click with A's key: not A's
    assert not set(one.get_column("click_id")) & {2001, 2002, 5001}
    assert touches(journeys, 2) == [1001, 1002]
    assert touches(journeys, 3) == [3001]  # no advance row: one touch
    # the account+campaign journey (D2) of conversion 1 has campaign 2's clicks only, B's included
    with world.connect() as conn:
        by_campaign = J.dedupe_clicks(campaign_clicks(conn, [1], [2], T - LOOKBACK, T + HOUR))
    d2 = J.build_journeys(conv.with_columns(multi_touch=pl.lit(True)), by_campaign, lookback_seconds=LOOKBACK,
                          touch_cap=25)
    assert touches(d2, 1) == [2001, 1002, 4003, 1004, 2002, 3001]
    assert set(d2.filter(pl.col("conv_id") == 1).get_column("touch_campaign_id")) == {2}


def test_cap_and_converting_click_rules_mirror_d2(world):
    clicks, conv = read(world), conversions_of(world)
    capped = visitor_journeys(conv, clicks, LOOKBACK, 2)
    assert touches(capped, 1) == [1003, 1004]  # the newest two, the converting click among them
    # conversion 4's click is older than D's newest two: added with the log's click time (cap + 1)
    four = capped.filter(pl.col("conv_id") == 4).sort("position")
    assert four.get_column("click_id").to_list() == [4001, 4003, 4004]
    assert four.get_column("click_time").to_list() == [T - 2 * DAY - 7, T - 12 * HOUR, T - HOUR]
    assert four.get_column("is_converting").to_list() == [True, False, False]
    # ties at the cap keep the highest click ids; the lookback bounds are inclusive
    tied = clicks.with_columns(click_time=pl.when(pl.col("click_id").is_in([1003, 1004]))
                               .then(T - 2 * HOUR).otherwise(pl.col("click_time")))
    assert touches(visitor_journeys(conv, tied, LOOKBACK, 1), 1) == [1004]
    edge = conv.filter(pl.col("conv_id") == 1).with_columns(conv_time=pl.lit(T - 5 * DAY + 3 * DAY))
    assert touches(visitor_journeys(edge, clicks, 3 * DAY, 25), 1) == [1001, 1002, 1004]
    # multi-touch off (D13): the converting click alone; a conversion whose click was not found: none
    single = visitor_journeys(conv.with_columns(multi_touch=pl.col("conv_id") != 1), clicks, LOOKBACK, 25)
    assert touches(single, 1) == [1004]
    assert visitor_journeys(conv.with_columns(click_rows=pl.lit(0, pl.UInt32)), clicks, LOOKBACK, 25).height == 0


def test_the_recipe_decides_who_is_one_visitor(world, monkeypatch):
    monkeypatch.setenv("ATTRIBUTION_VISITOR_KEY", " IP_ID ")
    recipe = Settings.from_env().visitor_key
    assert recipe == ("ip_id",)
    journeys = visitor_journeys(conversions_of(world), read(world, recipe), LOOKBACK, 25)
    assert touches(journeys, 1) == [1001, 2001, 1002, 1003, 1004, 2002]  # A and B behind one address
    assert touches(journeys, 4) == [4001, 4002, 4003, 4004]
    platform = visitor_journeys(conversions_of(world), read(world, ("platform_id", "browser_id")), LOOKBACK, 25)
    assert set(touches(platform, 4)) >= {1001, 2001, 4001}  # every user-1 visitor shares them
    assert 5001 not in touches(platform, 1)  # never across users


# ------------------------------------------------------------------------------------------
# training paths
# ------------------------------------------------------------------------------------------


def paths_of(paths: pl.DataFrame) -> list[tuple[list[int], bool]]:
    return [(g.get_column("channel").to_list(), g.get_column("converted")[0])
            for _, g in paths.sort("path_id", "step").group_by("path_id", maintain_order=True)]


def test_training_paths_are_cut_at_conversions(world):
    clicks, conv = read(world), conversions_of(world)
    paths = training_paths(clicks.filter(pl.col("user_id") == 1), conv, "account", *WINDOW)
    assert paths.schema == pl.Schema(TRAINING_PATHS)
    assert_no_key(paths)
    assert paths.get_column("path_id").unique().sort().to_list() == list(range(paths.get_column("path_id").n_unique()))
    # ordered by first click (time, then id): A's [1001, 1002]*, B's [2001, 2002], D's [4001]*,
    # A's [1003, 1004]*, D's [4002, 4003, 4004] (4002 and 1003 at the same time), 3001*, A's [1005]
    assert paths_of(paths) == [
        ([11, 12], True), ([12, 11], False), ([12], True), ([12, 11], True), ([12, 11, 11], False), ([11], True),
        ([11], False),
    ]
    sources = training_paths(clicks.filter(pl.col("user_id") == 1), conv, "traffic_source", *WINDOW)
    assert paths_of(sources)[0] == ([101, 102], True)
    landing = training_paths(clicks.filter(pl.col("user_id") == 1), conv, "landing_page", *WINDOW)
    assert paths_of(landing)[0] == ([21, 0], True)  # a direct link (no landing page) is channel 0
    # the window bounds clicks and conversions: those after its end (1, 3, 4) cut nothing, convert nothing
    early = training_paths(clicks, conv, "account", WINDOW[0], T)
    assert paths_of(early) == [([11, 12], True), ([12, 11], False), ([12, 12, 11, 11], False), ([12, 11], False),
                               ([11], False), ([13], False)]
    assert sorted(early.get_column("user_id").unique().to_list()) == [1, 2]
    # a click id stored twice is one click (D15): the same paths and journeys
    doubled = pl.concat([clicks, clicks.filter(pl.col("click_id").is_in([1002, 1003]))])
    assert training_paths(doubled, conv, "account", WINDOW[0], T).equals(early)
    assert visitor_journeys(conv, doubled, LOOKBACK, 25).equals(visitor_journeys(conv, clicks, LOOKBACK, 25))
    with pytest.raises(ValueError, match="unknown path channel 'campaign'"):
        training_paths(clicks, conv, "campaign", *WINDOW)
    assert set(CHANNELS) == {"account", "traffic_source", "landing_page"}


# ------------------------------------------------------------------------------------------
# settings, layout
# ------------------------------------------------------------------------------------------


def test_the_visitor_key_setting():
    assert Settings.from_env({}).visitor_key == DEFAULT_VISITOR_KEY == ("ip_id", "platform_id", "browser_id",
                                                                         "device_id")
    assert Settings.from_env({"ATTRIBUTION_VISITOR_KEY": "ip_id, device_id,ip_id"}).visitor_key == ("ip_id", "device_id")
    for bad, message in (("ip_id,click_id", "unknown 202_clicks_advance column"), (" , ", "names no column")):
        with pytest.raises(SettingsError, match=f"ATTRIBUTION_VISITOR_KEY.*{message}"):
            Settings.from_env({"ATTRIBUTION_VISITOR_KEY": bad})
    assert set(VISITOR_KEY_COLUMNS) == {c.name for c in tables.clicks_advance.columns} - {"click_id"}
    assert tables.clicks_advance in tables.SOURCE_TABLES


def test_the_core_module_is_vectorised():
    path = Path(__file__).resolve().parents[1] / "attribution_pipeline" / "core" / "visitor_paths.py"
    tree = ast.parse(path.read_text())
    loops = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While, ast.comprehension))]
    row_wise = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                and n.attr in {"map_elements", "iter_rows", "to_list", "rows", "row", "to_dicts", "item"}]
    assert (loops, row_wise) == ([], [])


# ------------------------------------------------------------------------------------------
# the generator
# ------------------------------------------------------------------------------------------

START = 1741564800  # 2025-03-10 00:00 UTC (tests/test_generator.py's)
#: sha256 (first 20 hex digits) of each table's CSV as generated before 202_clicks_advance existed.
PINNED = {
    GeneratorConfig(start=START + 1234, clicks=4_000, conversions=300): {
        "202_users": "877d500c493125bf7b1f", "202_aff_networks": "86890d9cb5abbc108ac2",
        "202_aff_campaigns": "dce482da239a62e640f1", "202_ppc_accounts": "e9f4624fabc330066107",
        "202_landing_pages": "81efad3939932e547500", "202_clicks": "baea9f7f0d73251bf4ca",
        "202_conversion_logs": "b5d40c949173de13fc68", "202_conversion_touchpoints": "b3fdf1ec6388273f4e15",
        "202_attribution_models": "1f3537c4a3163c80ac73", "202_attribution_settings": "e3587bafaabe049e517d",
    },
    GeneratorConfig(seed=21, start=START, hours=48, scale=0.3, users=8): {
        "202_users": "2f2701f7aa5d72338b7d", "202_aff_networks": "12907ad10b29e85806c1",
        "202_aff_campaigns": "51b489d4758590223ccf", "202_ppc_accounts": "db0a48e311e1ec4155c0",
        "202_landing_pages": "2ff09da79166cd414f29", "202_clicks": "7e107dfdbe20f4179cb5",
        "202_conversion_logs": "be9c5e8442224bb10efe", "202_conversion_touchpoints": "b3fdf1ec6388273f4e15",
        "202_attribution_models": "28aa08bff6dda9222b70", "202_attribution_settings": "b677ef9a16b9fc393c69",
    },
}


def digests(out: dict[str, pl.DataFrame]) -> dict[str, str]:
    return {k: hashlib.sha256(v.write_csv().encode()).hexdigest()[:20] for k, v in out.items()
            if k != tables.clicks_advance.name}


@pytest.mark.parametrize("config", list(PINNED), ids=["small", "seed21"])
def test_the_generator_adds_repeat_visitors_and_leaves_every_other_row_as_it_was(config):
    out = generate(config)
    assert digests(out) == PINNED[config]
    adv, clicks = out[tables.clicks_advance.name], out[tables.clicks.name]
    assert adv.columns == [c.name for c in tables.clicks_advance.columns]
    assert adv.get_column("click_id").to_list() == clicks.get_column("click_id").unique().sort().to_list()
    accounts = out[tables.ppc_accounts.name].select("ppc_account_id", "ppc_network_id")
    visitors = (clicks.unique("click_id").join(adv, on="click_id").join(accounts, on="ppc_account_id")
                .group_by("user_id", *DEFAULT_VISITOR_KEY)
                .agg(n=pl.len(), campaigns=pl.col("aff_campaign_id").n_unique(),
                     accounts=pl.col("ppc_account_id").n_unique(), sources=pl.col("ppc_network_id").n_unique(),
                     days=(pl.col("click_time").max() - pl.col("click_time").min()) / DAY))
    assert visitors.get_column("n").mean() > 2 and visitors.get_column("n").max() >= 8
    repeat = visitors.filter(pl.col("n") > 1)
    for column in ("campaigns", "accounts", "sources"):
        assert (repeat.get_column(column) > 1).mean() > 0.2, column
    assert repeat.get_column("days").max() < 7 and repeat.get_column("days").mean() > 1
    # some visitors share an address and differ by device: a coarser recipe merges them
    assert adv.select(pl.struct(DEFAULT_VISITOR_KEY).n_unique()).item() > adv.get_column("ip_id").n_unique()


def test_generated_visitor_journeys_cross_campaigns_on_mariadb(mysql_url):
    engine = database.make_engine(mysql_url)
    config = GeneratorConfig(seed=5, start=START, hours=6, clicks=6_000, conversions=300, anomalies=False)
    load(engine, generate(config))
    db = database.Database(mysql_url)
    users = list(range(1, config.n_users + 1))
    with engine.connect() as conn:
        conv = prosper_reads.conversions(conn, list(range(config.start_hour, config.end, HOUR)), users)
        assert conn.execute(select(func.count()).select_from(tables.clicks_advance)).scalar() == 6_000
    clicks = read_visitor_clicks(db, users, config.start_hour - LOOKBACK, config.end, DEFAULT_VISITOR_KEY,
                                 click_ids=conv.get_column("click_id").to_list())
    journeys = visitor_journeys(conv, clicks, LOOKBACK, 25)
    per = journeys.group_by("conv_id").agg(n=pl.len(), campaigns=pl.col("touch_campaign_id").n_unique(),
                                           accounts=pl.col("touch_ppc_account_id").n_unique())
    assert per.height == conv.filter(pl.col("click_rows") > 0).height
    assert (per.get_column("n") > 1).mean() > 0.5
    assert (per.get_column("campaigns") > 1).sum() > 10 and (per.get_column("accounts") > 1).sum() > 10
    paths = training_paths(clicks, conv, "traffic_source", config.start_hour - 7 * DAY, config.end)
    assert paths.filter(pl.col("converted")).get_column("path_id").n_unique() > 100
    engine.dispose()


# ------------------------------------------------------------------------------------------
# erasure
# ------------------------------------------------------------------------------------------


def test_erasure_with_include_source_deletes_the_advance_rows(world):
    def advance_rows(ids):
        with world.connect() as conn:
            return conn.execute(select(func.count()).select_from(tables.clicks_advance)
                                .where(tables.clicks_advance.c.click_id.in_(ids))).scalar()

    with world.connect() as conn:
        scope = visitor_rows.visitor_scope(conn, [1001, 1004], [])
    kept = visitor_rows.erase_visitor_rows(world, scope, include_source=False, lock_timeout=5)
    assert kept["source_clicks_advance"] == 0 and advance_rows([1001, 1004]) == 2
    erased = visitor_rows.erase_visitor_rows(world, scope, include_source=True, lock_timeout=5)
    assert erased["source_clicks"] == 2 and erased["source_clicks_advance"] == 2 and erased["source_conversions"] == 1
    assert advance_rows([1001, 1004]) == 0 and advance_rows([1002, 1003]) == 2
