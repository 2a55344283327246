"""The data-driven model end to end on MariaDB (D32): visitor journeys across campaigns and traffic
sources, Markov credits from the fit of the day before, the daily fit asset, and no visitor key
anywhere it could leak (Parquet, metadata, logs)."""

import json
from decimal import Decimal

import dagster as dg
import polars as pl
import pytest
from sqlalchemy import select

import scenarios
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.storage import database, tables
from pipeline import HOUR, run, settings

DAY = 86400
X = 19875 * DAY  # 2024-06-01 00:00 UTC: the conversion's day; its fit's window ends here
H = X + 10 * HOUR  # the conversion's hour
MARKOV, LAST = 11, 12
A, B = 100, 200  # ppc accounts (channels), of traffic sources 7 and 8
# (click_id, campaign, account, click_time, visitor key (ip, platform, browser, device))
CLICKS = [
    (1, 10, A, X + 1 * HOUR, (1, 1, 1, 1)),  # visitor V's journey: A (campaign 10) ...
    (2, 20, B, X + 2 * HOUR, (1, 1, 1, 1)),  # ... B (campaign 20) ...
    (3, 10, A, X + 3 * HOUR, (1, 1, 1, 1)),  # ... A, converting (conversion 1, hour H)
    (4, 10, A, X + 4 * HOUR, (9, 1, 1, 1)),  # another visitor on the same campaign and account
    # training paths of the day before X: [A, B] -> conversion, [B] -> null, [A] -> conversion
    (11, 10, A, X - 20 * HOUR, (2, 1, 1, 1)),
    (12, 20, B, X - 19 * HOUR, (2, 1, 1, 1)),
    (13, 20, B, X - 15 * HOUR, (3, 1, 1, 1)),
    (14, 10, A, X - 12 * HOUR, (4, 1, 1, 1)),
]
# (conv_id, click_id, campaign, conv_time)
CONVERSIONS = [(1, 3, 10, H + 300), (2, 12, 20, X - 18 * HOUR), (3, 14, 10, X - 11 * HOUR)]
# By hand (docs/markov.md's method): P(conv) = 2/3; removing A leaves 1/6, removing B 1/3, so the
# removal effects are 3/4 and 1/2 and the shares 0.6 and 0.4. V's journey A, B, A: A's 0.6 split
# over its two touches.
SHARES = {A: 0.6, B: 0.4}
CREDITS = {1: Decimal("0.30000"), 2: Decimal("0.40000"), 3: Decimal("0.30000")}


def load(url: str) -> None:
    with database.make_engine(url).begin() as conn:
        scenarios.add_user(conn, 1)
        scenarios.add_campaign(conn, 10, 1, 5)
        scenarios.add_campaign(conn, 20, 1, 6)
        for account, network in ((A, 7), (B, 8)):
            conn.execute(tables.ppc_accounts.insert(), {
                "ppc_account_id": account, "user_id": 1, "ppc_network_id": network, "ppc_account_name": f"a{account}",
                "ppc_account_deleted": 0, "ppc_account_time": X - 90 * DAY, "ppc_account_default": 0})
        for click, campaign, account, t, key in CLICKS:
            scenarios.add_click(conn, click, 1, campaign, t, cpc="0.50", ppc_account_id=account)
            conn.execute(tables.clicks_advance.insert(), {
                "click_id": click, "ip_id": key[0], "platform_id": key[1], "browser_id": key[2], "device_id": key[3],
                "country_id": 1, "region_id": 1, "city_id": 1})
        for conv, click, campaign, conv_time in CONVERSIONS:
            click_time = next(c[3] for c in CLICKS if c[0] == click)
            scenarios.add_conversion(conn, conv, click, campaign, 1, "10", click_time, conv_time)
        scenarios.add_model(conn, MARKOV, 1, "algorithmic",
                            json.dumps({"journey": "visitor", "method": "markov", "channel": "account"}))
        scenarios.add_model(conn, LAST, 1, "last_touch")
        scenarios.add_setting(conn, 1, "global", None, True)


def touchpoints(engine, model_id: int) -> dict[int, Decimal]:
    snaps, touch = tables.attribution_snapshots, tables.attribution_touchpoints
    stmt = (select(touch.c.click_id, touch.c.credit).join(snaps, snaps.c.snapshot_id == touch.c.snapshot_id)
            .where(snaps.c.model_id == model_id, snaps.c.scope_type == "global", snaps.c.date_hour == H))
    with engine.connect() as conn:
        return {r.click_id: r.credit for r in conn.execute(stmt)}


def stored_shares(engine) -> dict[int, float]:
    fits, effects = tables.markov_fits, tables.markov_effects
    with engine.connect() as conn:
        rows = conn.execute(select(fits.c.window_end, effects.c.channel_id, effects.c.share)
                            .join(effects, effects.c.fit_id == fits.c.fit_id).where(fits.c.model_id == MARKOV)).all()
    assert {r.window_end for r in rows} == {X}
    return {r.channel_id: r.share for r in rows}


@pytest.fixture
def world(mysql_url):
    load(mysql_url)
    engine = database.make_engine(mysql_url)
    yield mysql_url, engine
    engine.dispose()


def test_markov_credits_follow_the_fit_of_the_day_before_over_the_visitor_journey(world, caplog):
    url, engine = world
    result, report = run(url, H, scope_types=("account", "traffic_source"))
    assert report["outcome"] == 0
    # the run found no fit for X and made it first: the shares of the hand-solved chain
    assert stored_shares(engine) == pytest.approx(SHARES, abs=1e-12)
    assert touchpoints(engine, MARKOV) == CREDITS  # crosses campaigns 10 and 20, accounts A and B
    assert sum(CREDITS.values()) == 1
    assert touchpoints(engine, LAST) == {3: Decimal("1.00000")}  # PHP's journeys for the other model
    snaps = tables.attribution_snapshots
    with engine.connect() as conn:
        scoped = {(r.scope_type, r.scope_id): r.attributed_revenue for r in conn.execute(
            select(snaps).where(snaps.c.model_id == MARKOV, snaps.c.scope_type != "global"))}
    assert scoped == {("account", A): Decimal("6.0000"), ("account", B): Decimal("4.0000"),
                      ("traffic_source", 7): Decimal("6.0000"), ("traffic_source", 8): Decimal("4.0000")}
    # `attribution compare` shows the data-driven model beside the rule-based one per channel
    from attribution_pipeline.analytics.comparison import compare

    [user] = compare(engine, H, H + HOUR, by="account").users
    labels = dict(user.models)
    by_account = {row["scope_id"]: (row[labels[MARKOV]], row[labels[LAST]]) for row in user.table.to_dicts()}
    assert by_account == {A: (Decimal("6.0000"), Decimal("10.0000")), B: (Decimal("4.0000"), Decimal("0.0000"))}
    # the visitor key reaches neither the Parquet exports nor the logs
    config = settings(url)
    for path in config.export_path.rglob("*.parquet"):
        columns = pl.read_parquet_schema(path)
        assert not {c for c in columns if "visitor" in c or c.startswith("ip") or c.endswith("_id") and
                    c.split("_")[0] in ("platform", "browser", "device")}, path
    assert "ip_id" not in caplog.text and "visitor key" not in caplog.text


def test_a_rerun_uses_the_same_fit_and_the_daily_asset_refits_the_day(world):
    url, engine = world
    run(url, H)
    first = touchpoints(engine, MARKOV)
    run(url, H, full=True)
    assert touchpoints(engine, MARKOV) == first == CREDITS
    defs = build_definitions(settings(url))
    job = defs.resolve_job_def("attribution_markov_fit_job")
    result = job.execute_in_process(partition_key="2024-05-31", instance=dg.DagsterInstance.ephemeral())
    assert result.success
    [materialization] = result.asset_materializations_for_node("attribution_markov_fit")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["window_end"] == X and meta["models_fitted"] == 1
    assert meta[f"model_{MARKOV}_removal_effect_{A}"] == pytest.approx(0.75)
    assert meta[f"model_{MARKOV}_removal_effect_{B}"] == pytest.approx(0.5)
    assert meta[f"model_{MARKOV}_paths"] == 3 and meta[f"model_{MARKOV}_converting_paths"] == 2
    assert stored_shares(engine) == pytest.approx(SHARES, abs=1e-12)  # replaced, not duplicated
    assert "ip_id" not in json.dumps({k: str(v) for k, v in meta.items()})


def test_an_edited_model_gets_a_new_fit_and_a_bad_config_is_named(world):
    url, engine = world
    run(url, H)
    with engine.begin() as conn:
        conn.execute(tables.attribution_models.update().where(tables.attribution_models.c.model_id == MARKOV)
                     .values(weighting_config=json.dumps({"journey": "visitor", "method": "markov",
                                                          "channel": "traffic_source"})))
    run(url, H)
    with engine.connect() as conn:
        assert conn.execute(select(tables.markov_fits.c.config_hash)).scalars().unique().all().__len__() == 2
    assert touchpoints(engine, MARKOV) == CREDITS  # traffic sources 7 and 8 are A and B one to one
    with engine.begin() as conn:
        conn.execute(tables.attribution_models.update().where(tables.attribution_models.c.model_id == MARKOV)
                     .values(weighting_config=json.dumps({"journey": "visitor", "method": "markov", "order": 5})))
    _, report = run(url, H, expect_success=False)
    assert any("order" in str(s.get("reason")) for s in report["skipped_models"])
    assert touchpoints(engine, LAST) == {3: Decimal("1.00000")}  # the other model went on
    # erasing the user removes its fits too
    from attribution_pipeline.exports.data_lifecycle import erase_user
    from attribution_pipeline.storage.database import Database

    config = settings(url)
    assert erase_user(Database.from_settings(config), config, 1)["markov_fits"] == 2
    with engine.connect() as conn:
        assert conn.execute(select(tables.markov_fits)).all() == []
        assert conn.execute(select(tables.markov_effects)).all() == []


def test_multi_touch_switched_off_leaves_the_converting_click_alone(world):
    url, engine = world
    with engine.begin() as conn:
        scenarios.add_setting(conn, 1, "campaign", 10, False)  # D13: the conversion's campaign
    run(url, H)
    assert touchpoints(engine, MARKOV) == {3: Decimal("1.00000")}


def test_generated_data_each_conversions_markov_credits_sum_to_one(mysql_url):
    """On the generator's data (repeat visitors across campaigns and accounts), a Markov model per
    account (order 1 by traffic source, order 2 by account): every conversion's stored credits are
    non-negative and sum to 1 within the DECIMAL(10,5) rounding (at most 0.00001 a touch)."""
    from attribution_pipeline.demo.generator import GeneratorConfig, generate
    from attribution_pipeline.demo.generator import load as load_generated

    start = 1741564800  # 2025-03-10 00:00 UTC: day 2's fits train on day 1's paths
    engine = database.make_engine(mysql_url)
    load_generated(engine, generate(GeneratorConfig(seed=7, start=start, hours=30, clicks=12_000, conversions=900,
                                                    invalid_models=False, anomalies=False)))
    with engine.begin() as conn:
        users = sorted(conn.execute(select(tables.users.c.user_id)).scalars())
        for user in users:
            scenarios.add_model(conn, 9000 + user, user, "algorithmic", json.dumps(
                {"journey": "visitor", "method": "markov", "channel": "traffic_source"}))
            scenarios.add_model(conn, 9500 + user, user, "algorithmic", json.dumps(
                {"journey": "visitor", "method": "markov", "channel": "account", "order": 2}))
    _, report = run(mysql_url, start + 24 * HOUR, start + 29 * HOUR)
    assert report["held_groups"] == 0 and report["skipped_models"] == []
    snaps, touch = tables.attribution_snapshots, tables.attribution_touchpoints
    with engine.connect() as conn:
        rows = conn.execute(
            select(snaps.c.model_id, touch.c.conv_id, touch.c.credit)
            .join(snaps, snaps.c.snapshot_id == touch.c.snapshot_id)
            .where(snaps.c.model_id >= 9000, snaps.c.scope_type == "global")).all()
    sums = (pl.DataFrame([(m, c, float(k)) for m, c, k in rows], schema=["model_id", "conv_id", "credit"], orient="row")
            .group_by("model_id", "conv_id").agg(total=pl.col("credit").sum(), touches=pl.len(),
                                                 lowest=pl.col("credit").min()))
    assert sums.get_column("model_id").n_unique() == 2 * len(users)
    assert sums.height > 250 and (sums.get_column("touches") > 1).sum() > 100
    assert sums.filter(pl.col("lowest") < 0).height == 0
    off = sums.filter((pl.col("total") - 1).abs() > pl.col("touches") * 0.00001 + 1e-9)
    assert off.height == 0, off.head(5)
    engine.dispose()
