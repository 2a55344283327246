"""The synthetic Prosper202 generator: deterministic, realistic journeys, every anomaly on demand,
and the same stored values on MariaDB and SQLite."""

import json
import time
from datetime import datetime, timezone
from decimal import Decimal

import polars as pl
import pytest
from sqlalchemy import create_engine, select

from attribution_pipeline.storage import bulk
from attribution_pipeline.storage import database
from attribution_pipeline.demo import generator
from attribution_pipeline.storage import tables
from attribution_pipeline.demo.generator import GeneratorConfig, generate, load

START = int(datetime(2025, 3, 10, 0, 0, tzinfo=timezone.utc).timestamp())
LOOKBACK = 30 * 86400
SMALL = GeneratorConfig(start=START + 1234, clicks=4_000, conversions=300)


@pytest.fixture(scope="module")
def frames():
    return generate(SMALL)


def _journeys(frames) -> pl.DataFrame:
    """Per conversion: clicks of the same user+campaign in [conv_time - 30d, conv_time] (D2, with
    duplicated click ids collapsed, D15), and the converting click's rank among them, newest first."""
    clicks = frames["202_clicks"].unique("click_id", keep="first", maintain_order=True)
    conv = frames["202_conversion_logs"].select("conv_id", "user_id", "campaign_id", "conv_time", conv_click="click_id")
    pairs = conv.join(
        clicks.select("user_id", campaign_id="aff_campaign_id", t="click_time", cid="click_id"),
        on=["user_id", "campaign_id"],
    ).filter(pl.col("t").is_between(pl.col("conv_time") - LOOKBACK, pl.col("conv_time")))
    pairs = pairs.sort("conv_id", "t", "cid", descending=[False, True, True]).with_columns(
        rank=pl.int_range(1, pl.len() + 1).over("conv_id")
    )
    return pairs.group_by("conv_id").agg(
        n=pl.len(),
        conv_rank=pl.col("rank").filter(pl.col("cid") == pl.col("conv_click")).first(),
        boundary=(pl.col("t") == pl.col("conv_time") - LOOKBACK).any(),
    )


# ------------------------------------------------------------------------------------------
# generation
# ------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_frames_and_another_seed_differs(frames):
    again = generate(SMALL)
    assert list(again) == list(frames)
    for name in frames:
        assert again[name].equals(frames[name]), name
    other = generate(GeneratorConfig(seed=7, start=START + 1234, clicks=4_000, conversions=300))
    assert not other["202_clicks"].equals(frames["202_clicks"])
    assert not other["202_conversion_logs"].equals(frames["202_conversion_logs"])


def test_frames_have_the_tables_columns_and_counts(frames):
    assert set(frames) == {t.name for t in tables.SOURCE_TABLES}
    for table in tables.SOURCE_TABLES:
        df = frames[table.name]
        assert df.columns == [c.name for c in table.columns], table.name
        for col in table.columns:
            if not col.nullable:
                assert df.get_column(col.name).null_count() == 0, (table.name, col.name)
    assert frames["202_clicks"].schema["click_cpc"] == pl.Decimal(7, 5)
    assert frames["202_clicks"].schema["click_payout"] == pl.Decimal(11, 5)
    assert frames["202_conversion_logs"].schema["click_payout"] == pl.Decimal(11, 5)
    assert frames["202_clicks"].height == 4_000
    assert frames["202_conversion_logs"].height == 300
    assert frames["202_users"].height == 4
    assert frames["202_aff_campaigns"].height == 4 * 5
    assert frames["202_conversion_touchpoints"].height == 0
    assert frames["202_conversion_logs"]["conv_id"].n_unique() == 300
    # scale drives the defaults
    scaled = GeneratorConfig(start=START, scale=0.5)
    assert (scaled.n_users, scaled.n_clicks, scaled.n_conversions) == (2, 10_000, 500)
    out = generate(scaled)
    assert out["202_clicks"].height == 10_000 and out["202_conversion_logs"].height == 500
    assert out["202_aff_campaigns"].height == 2 * 5


def test_conversions_fall_in_the_window_and_match_their_clicks(frames):
    conv, clicks = frames["202_conversion_logs"], frames["202_clicks"]
    start, end = SMALL.start_hour, SMALL.end
    assert start == START  # floored to the hour
    assert conv["conv_time"].is_between(start, end - 1).all()
    assert (conv["conv_time"] % 3600 == 0).any() and (conv["conv_time"] % 3600 == 3599).any()
    assert (conv["conv_time"] == conv["click_time"]).any()
    assert (conv["conv_time"] - conv["click_time"]).max() <= 7 * 86400
    assert (conv["conv_time"] >= conv["click_time"]).all()
    one = clicks.unique("click_id", keep="first")
    joined = conv.join(one.select("click_id", c_user="user_id", c_campaign="aff_campaign_id", c_time="click_time"),
                       on="click_id", how="left")
    found = joined.filter(pl.col("c_user").is_not_null())
    assert (found["c_user"] == found["user_id"]).all()
    assert (found["c_campaign"] == found["campaign_id"]).all()
    assert (found["c_time"] == found["click_time"]).all()
    # click ids: unique per click, increasing with click_time, beyond 32 bits
    ordered = one.sort("click_id")
    assert ordered["click_time"].is_sorted()
    assert ordered["click_id"].min() > 2**32
    # CPCs 0.05-2.5 with up to 5 decimals; revenue 1-150 with varied decimals, a few 0
    cpc = clicks["click_cpc"].cast(pl.Float64)
    assert cpc.max() <= 2.5 and cpc.filter(cpc > 0).min() >= 0.05 and (cpc > 0).mean() > 0.95
    assert clicks["click_cpc"].cast(pl.String).str.contains(r"\.\d{4}[1-9]$").any()  # 5 decimals
    payouts = conv["click_payout"].cast(pl.String)
    assert (conv["click_payout"].cast(pl.Float64) == 0).any()
    assert conv["click_payout"].cast(pl.Float64).max() <= 150
    assert len({p.rstrip("0").split(".")[1] == "" for p in payouts}) == 2  # whole and fractional
    assert set(conv["pixel_type"].unique()) == {0, 1, 2, 3}
    tx = conv["transaction_id"].drop_nulls()
    assert 0 < tx.len() < conv.height and tx.n_unique() == tx.len()
    # converting clicks are leads, as Prosper202's conversion update leaves them
    leads = clicks.filter(pl.col("click_id").is_in(conv["click_id"].implode()))
    assert (leads["click_lead"] == 1).all() and (leads["click_filtered"] == 0).all()


def test_personal_data_is_recognisably_fake(frames):
    conv = frames["202_conversion_logs"]
    assert conv["ip"].str.contains(r"^(203\.0\.113\.\d{1,3}|2001:db8::[0-9a-f]+)$").all()
    assert conv["ip"].str.starts_with("2001:db8::").any()
    assert conv["user_agent"].str.contains(r"^Mozilla/5\.0 \(SyntheticAgent \d+\)$").all()


def test_journeys_have_every_length(frames):
    journeys = _journeys(frames)
    assert journeys.height == frames["202_conversion_logs"].height  # every conversion has a click
    assert journeys.filter(pl.col("n") <= 3).height > 0
    assert journeys.filter(pl.col("n").is_between(4, 24)).height > 0
    assert journeys.filter(pl.col("n") >= 25).height > 0
    # the converting click outside the newest 25: a 26-touch journey (D2, Q3)
    assert journeys.filter(pl.col("conv_rank") > 25).height > 0
    # a click exactly on the inclusive 30-day boundary of a short journey (D2)
    assert journeys.filter(pl.col("boundary") & (pl.col("n") < 25)).height > 0
    # conversions share campaigns, so journeys overlap
    per_campaign = frames["202_conversion_logs"].group_by("campaign_id").len()
    assert per_campaign["len"].max() > 1


def _orphans(frames) -> pl.DataFrame:
    ids = frames["202_clicks"]["click_id"].unique().implode()
    return frames["202_conversion_logs"].filter(~pl.col("click_id").is_in(ids))


def test_anomalies_present_when_enabled(frames):
    clicks, conv = frames["202_clicks"], frames["202_conversion_logs"]
    dup = clicks.filter(pl.col("click_id").is_duplicated())
    assert dup.height > 0
    assert dup.unique().height == dup["click_id"].n_unique()  # duplicated exactly (D15)
    assert conv["click_id"].is_in(dup["click_id"].implode()).any()  # some converting clicks
    orphans = _orphans(frames)
    assert 1 <= orphans.height <= 0.01 * conv.height + 1  # about 0.5% (D16)
    assert 0 < conv["deleted"].sum() <= 0.03 * conv.height  # about 2%
    users = frames["202_users"]
    assert users["user_deleted"].sum() == 1
    gone = users.filter(pl.col("user_deleted") == 1)["user_id"][0]
    for table in ("202_clicks", "202_conversion_logs", "202_attribution_models", "202_aff_campaigns"):
        assert (frames[table]["user_id"] == gone).any(), table


def test_anomalies_absent_when_disabled():
    out = generate(GeneratorConfig(start=START, clicks=4_000, conversions=300, anomalies=False))
    clicks, conv = out["202_clicks"], out["202_conversion_logs"]
    assert clicks.height == 4_000 and clicks["click_id"].n_unique() == 4_000
    assert _orphans(out).height == 0
    assert conv["deleted"].sum() == 0
    assert out["202_users"]["user_deleted"].sum() == 0


def test_models_of_every_type_and_the_invalid_ones(frames):
    models = frames["202_attribution_models"]
    users = frames["202_users"]["user_id"].to_list()
    for user in users:
        mine = models.filter(pl.col("user_id") == user)
        active = mine.filter(pl.col("is_active") == 1)
        assert set(generator.MODEL_TYPES) <= set(active["model_type"])
        assert mine["model_slug"].n_unique() == mine.height
        assert mine.filter(pl.col("is_active") == 0).height == 1
        default = mine.filter(pl.col("is_default") == 1)
        assert default["model_type"].to_list() == ["last_touch"]
        assert default["weighting_config"].to_list() == [None]
        assert mine["created_at"].is_sorted() and (mine["updated_at"] >= mine["created_at"]).all()
    configs = set(models["weighting_config"].drop_nulls())
    assert '{"half_life_hours":48}' in configs and '{"first_touch_weight":0.4,"last_touch_weight":0.4}' in configs
    assert '{"config":"synthetic"}' in configs and "{}" in configs
    # invalid rows (D6) on some users only
    assert "{bad json" in configs and '{"half_life_hours":0}' in configs
    assert '{"first_touch_weight":0.8,"last_touch_weight":0.5}' in configs
    broken = models.filter(pl.col("model_type") == "data_driven")
    assert 0 < broken["user_id"].n_unique() < len(users)
    # more accounts show every half-life and weight variant
    many = generate(GeneratorConfig(start=START, users=16, clicks=2_000, conversions=50))["202_attribution_models"]
    configs = set(many["weighting_config"].drop_nulls())
    for hl in ('"12.9"', "1", "24", "48"):
        assert f'{{"half_life_hours":{hl}}}' in configs
    for first, last in (("0.3", "0.4"), ("0.2", "0.6"), ("0", "0"), ("0.5", "0.5")):
        assert f'{{"first_touch_weight":{first},"last_touch_weight":{last}}}' in configs
    for config in configs - {"{bad json"}:
        assert isinstance(json.loads(config), dict)


def test_main6_and_no_models():
    cfg = GeneratorConfig(start=START, clicks=2_000, conversions=50, models="main6")
    models = generate(cfg)["202_attribution_models"]
    assert models.height == 6 * cfg.n_users
    assert (models["is_active"] == 1).all()
    for _, mine in models.group_by("user_id"):
        assert sorted(mine["model_type"]) == sorted(
            ["last_touch", "time_decay", "position_based", "assisted", "first_touch", "linear"])
    assert set(models.filter(pl.col("model_type") == "time_decay")["weighting_config"]) == {'{"half_life_hours":48}'}
    out = generate(GeneratorConfig(start=START, clicks=2_000, conversions=50, models="none"))
    assert out["202_attribution_models"].height == 0
    assert (out["202_attribution_settings"]["model_id"] == 0).all()


def test_settings_rows(frames):
    settings = frames["202_attribution_settings"]
    models = frames["202_attribution_models"]
    live = frames["202_users"].filter(pl.col("user_deleted") == 0)["user_id"].to_list()
    glob = settings.filter(pl.col("scope_type") == "global")
    assert glob.height == max(1, round(len(live) / 3))
    assert (glob["multi_touch_enabled"] == 0).all() and glob["scope_id"].null_count() == glob.height
    adv = settings.filter(pl.col("scope_type") == "advertiser")
    assert adv.height == 1 and adv["multi_touch_enabled"][0] == 1
    assert adv["user_id"][0] in glob["user_id"].to_list()
    networks = frames["202_aff_networks"].filter(pl.col("user_id") == adv["user_id"][0])
    assert adv["scope_id"][0] in networks["aff_network_id"].to_list()
    camp = settings.filter(pl.col("scope_type") == "campaign")
    assert camp.height == 1 and camp["multi_touch_enabled"][0] == 0
    assert camp["user_id"][0] != adv["user_id"][0]
    campaigns = frames["202_aff_campaigns"].filter(pl.col("user_id") == camp["user_id"][0])
    assert camp["scope_id"][0] in campaigns["aff_campaign_id"].to_list()
    defaults = dict(models.filter(pl.col("is_default") == 1).select("user_id", "model_id").iter_rows())
    for user, model_id in settings.select("user_id", "model_id").iter_rows():
        assert model_id == defaults[user]
    assert generate(GeneratorConfig(start=START, clicks=2_000, conversions=50, settings=False))[
        "202_attribution_settings"].height == 0


def test_bad_configs_are_named_errors():
    with pytest.raises(ValueError, match="models"):
        GeneratorConfig(start=START, models="some")
    with pytest.raises(ValueError, match="100 clicks"):
        GeneratorConfig(start=START, clicks=50, conversions=5)
    with pytest.raises(ValueError, match="too early"):
        GeneratorConfig(start=86400)


@pytest.mark.slow
def test_two_million_clicks_generate_quickly():
    started = time.perf_counter()
    out = generate(GeneratorConfig(start=START, scale=100, clicks=2_000_000, conversions=100_000))
    assert time.perf_counter() - started < 20
    assert out["202_clicks"].height == 2_000_000 and out["202_conversion_logs"].height == 100_000


# ------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------

_DECIMALS = {
    "202_clicks": ("click_id", ["click_cpc", "click_payout"]),
    "202_conversion_logs": ("conv_id", ["click_payout"]),
    "202_aff_campaigns": ("aff_campaign_id", ["aff_campaign_payout", "aff_campaign_foreign_payout"]),
}


def _stored(engine) -> dict[str, list[tuple]]:
    out = {}
    with engine.connect() as conn:
        for name, (key, cols) in _DECIMALS.items():
            table = tables.metadata.tables[name]
            rows = conn.execute(select(table.c[key], *[table.c[c] for c in cols])).fetchall()
            out[name] = sorted((int(r[0]), *(str(v) for v in r[1:])) for r in rows)
    return out


def _expected(frames) -> dict[str, list[tuple]]:
    out = {}
    for name, (key, cols) in _DECIMALS.items():
        df = frames[name].select(key, *[pl.col(c).cast(pl.String) for c in cols])
        out[name] = sorted((int(r[0]), *r[1:]) for r in df.iter_rows())
    return out


def _count_inserts(monkeypatch) -> list[str]:
    calls = []
    real = bulk.bulk_insert

    def spy(conn, table, df, *args, **kw):
        calls.append(table.name)
        return real(conn, table, df, *args, **kw)

    monkeypatch.setattr(bulk, "bulk_insert", spy)
    return calls


def test_load_gives_the_same_rows_and_decimals_on_mariadb_and_sqlite(frames, mysql_url, sqlite_url, monkeypatch):
    maria, lite = database.make_engine(mysql_url), database.make_engine(sqlite_url)
    inserts = _count_inserts(monkeypatch)
    try:
        counts = load(maria, frames)
        assert inserts == []  # MariaDB: LOAD DATA LOCAL INFILE for every table
        assert counts == load(lite, frames)
        assert "202_clicks" in inserts  # SQLite: batched INSERTs
        assert counts == {name: df.height for name, df in frames.items()}
        expected = _expected(frames)
        assert _stored(maria) == expected
        assert _stored(lite) == expected
        for engine in (maria, lite):
            with engine.connect() as conn:
                for name, n in counts.items():
                    table = tables.metadata.tables[name]
                    assert len(conn.execute(select(table)).fetchall()) == n, name
                ip, ua = conn.execute(select(tables.conversion_logs.c.ip, tables.conversion_logs.c.user_agent)
                                      .order_by(tables.conversion_logs.c.conv_id).limit(1)).one()
                first = frames["202_conversion_logs"].row(0, named=True)
                assert (ip, ua) == (first["ip"], first["user_agent"])
                bad = conn.execute(select(tables.attribution_models.c.weighting_config)
                                   .where(tables.attribution_models.c.weighting_config == "{bad json")).fetchall()
                assert len(bad) > 0
    finally:
        maria.dispose()
        lite.dispose()


def test_seed_creates_tables_and_loads(tmp_path):
    engine = database.make_engine(f"sqlite:///{tmp_path / 'seeded.sqlite'}")
    cfg = GeneratorConfig(start=START, clicks=1_000, conversions=40, users=2, campaigns_per_user=3)
    counts = generator.seed(engine, cfg)
    assert counts["202_clicks"] == 1_000 and counts["202_conversion_logs"] == 40
    engine.dispose()


_TRICKY = ['back\\slash', 'quote " and ""', "comma, here", "new\nline\r\n", "\\N", "NULL", "", "tab\there",
           "ünïcødé ✓"]


def test_bulk_load_round_trips_awkward_strings_and_nulls(mysql_url):
    engine = database.make_engine(mysql_url)
    df = pl.DataFrame({
        "audit_id": list(range(1, len(_TRICKY) + 2)),
        "user_id": [1] * (len(_TRICKY) + 1),
        "model_id": [None] + [7] * len(_TRICKY),
        "action": ["a"] * (len(_TRICKY) + 1),
        "metadata": [None] + _TRICKY,
        "created_at": [1] * (len(_TRICKY) + 1),
    })
    with engine.begin() as conn:
        assert bulk.bulk_load(conn, tables.attribution_audit, df, chunk_rows=4) == df.height
    with engine.connect() as conn:
        rows = conn.execute(select(tables.attribution_audit.c.model_id, tables.attribution_audit.c.metadata)
                            .order_by(tables.attribution_audit.c.audit_id)).fetchall()
    assert [r[1] for r in rows] == [None] + _TRICKY
    assert rows[0][0] is None
    engine.dispose()


def test_bulk_load_falls_back_to_inserts_when_load_data_is_refused(mysql_url, monkeypatch):
    # a client without the LOCAL INFILE capability: the server refuses LOAD DATA LOCAL
    engine = create_engine(mysql_url, connect_args={"local_infile": False})
    inserts = _count_inserts(monkeypatch)
    df = pl.DataFrame({
        "click_id": pl.Series([2**40, 2**40 + 1], dtype=pl.UInt64), "user_id": [1, 1], "aff_campaign_id": [2, 2],
        "landing_page_id": [3, 3], "ppc_account_id": [4, 4],
        "click_cpc": pl.Series([Decimal("0.12345"), Decimal("2.5")], dtype=pl.Decimal(7, 5)),
        "click_payout": pl.Series([Decimal("0"), Decimal("99.99999")], dtype=pl.Decimal(11, 5)),
        "click_lead": [0, 1], "click_filtered": [0, 0], "click_bot": [0, 0], "click_alp": [0, 0],
        "click_time": [START, START + 1], "rotator_id": [0, 0], "rule_id": [0, 0],
    })
    with engine.begin() as conn:
        assert bulk.bulk_load(conn, tables.clicks, df) == 2
    assert inserts == ["202_clicks"]
    with engine.connect() as conn:
        rows = conn.execute(select(tables.clicks.c.click_id, tables.clicks.c.click_cpc)
                            .order_by(tables.clicks.c.click_id)).fetchall()
    assert [(r[0], str(r[1])) for r in rows] == [(2**40, "0.12345"), (2**40 + 1, "2.50000")]
    engine.dispose()
