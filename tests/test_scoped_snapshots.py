"""Scoped snapshots on MariaDB (D31): stored exactly, adding up, owned, incremental, and read by the
PHP dashboard's queries (spec §5.6)."""

from decimal import Decimal

import polars as pl
from sqlalchemy import func, select, text, update

import scenarios
from attribution_pipeline.demo.generator import GeneratorConfig, generate, load
from attribution_pipeline.core import scope_credit
from attribution_pipeline.storage import database, tables
from oracle import php_engine
from pipeline import HOUR, run
from test_scope_credit import ADVERTISER, CREDITS, MODEL_IDS, NETWORK, TOUCHES, TYPES, T, expected, value_of

snaps, touch = tables.attribution_snapshots, tables.attribution_touchpoints
CONFIG = {"position_based": '{"first_touch_weight":0.4,"last_touch_weight":0.4}', "time_decay": '{"half_life_hours":24}'}


def load_hand_journeys(url) -> None:
    """The journeys of tests/test_scope_credit.py as Prosper202 rows (multi-touch on)."""
    with database.make_engine(url).begin() as conn:
        scenarios.add_user(conn, 1)
        for campaign, advertiser in ADVERTISER.items():
            scenarios.add_campaign(conn, campaign, 1, advertiser)
        for account, network in NETWORK.items():
            conn.execute(tables.ppc_accounts.insert(), {
                "ppc_account_id": account, "user_id": 1, "ppc_network_id": network, "ppc_account_name": f"a{account}",
                "ppc_account_deleted": 0, "ppc_account_time": T - 90 * 86400, "ppc_account_default": 0})
        for conv, _, click, click_time, campaign, account, lp in TOUCHES:
            scenarios.add_click(conn, click, 1, campaign, click_time, cpc="1.00" if conv == 1 else "2.00",
                                ppc_account_id=account)
            conn.execute(update(tables.clicks).where(tables.clicks.c.click_id == click).values(landing_page_id=lp))
        scenarios.add_conversion(conn, 1, 13, 10, 1, "10", TOUCHES[2][3], TOUCHES[2][3])
        scenarios.add_conversion(conn, 2, 21, 20, 1, "20", TOUCHES[3][3], TOUCHES[3][3])
        for model, model_id in MODEL_IDS.items():
            scenarios.add_model(conn, model_id, 1, model, CONFIG.get(model))
        scenarios.add_setting(conn, 1, "global", None, True)


def scoped(engine, **where) -> list[dict]:
    with engine.connect() as conn:
        stmt = select(snaps).where(snaps.c.scope_type != "global", *[snaps.c[k] == v for k, v in where.items()])
        return [dict(r._mapping) for r in conn.execute(stmt.order_by(snaps.c.snapshot_id))]


def test_hand_built_journeys_are_stored_exactly_and_read_by_the_dashboard(mysql_url):
    load_hand_journeys(mysql_url)
    result, report = run(mysql_url, T, scope_types=TYPES, scoped_touchpoints=True)
    assert report["outcome"] == 0 and report["scoped_snapshots_written"] > 0
    assert all(c.passed for c in result.get_asset_check_evaluations() if c.check_name == "scoped_totals")
    engine = database.make_engine(mysql_url)
    rows = scoped(engine)
    for model in CREDITS:
        for scope_type in TYPES:
            got = {r["scope_id"]: (r["attributed_clicks"], r["attributed_conversions"], str(r["attributed_revenue"]),
                                   str(r["attributed_cost"]))
                   for r in rows if r["model_id"] == MODEL_IDS[model] and r["scope_type"] == scope_type}
            want = {k: v for k, v in expected(model, scope_type).items() if k is not None}
            assert got == want, (model, scope_type)
    with engine.connect() as conn:
        # findForRange(model, scope, scope_id, start, end, limit, offset): the display page's rows
        page = conn.execute(text(
            "SELECT snapshot_id, date_hour, attributed_clicks, attributed_conversions, attributed_revenue, attributed_cost "
            "FROM `202_attribution_snapshots` WHERE model_id = :m AND scope_type = :s AND scope_id <=> :i "
            "AND date_hour BETWEEN :a AND :b ORDER BY date_hour ASC LIMIT :l OFFSET :o"),
            {"m": MODEL_IDS["linear"], "s": "account", "i": 2, "a": T - 24 * HOUR, "b": T + HOUR, "l": 168, "o": 0}).all()
        assert [(r[2], r[3], r[4], r[5]) for r in page] == [(2, 1, Decimal("23.3333"), Decimal("2.3333"))]
        glob = conn.execute(text("SELECT attributed_revenue FROM `202_attribution_snapshots` WHERE model_id = :m "
                                 "AND scope_type = 'global' AND scope_id <=> NULL"), {"m": MODEL_IDS["linear"]}).all()
        assert glob == [(Decimal("30.0000"),)]
        # the v2 /metrics totals: clicks replaced by the scope's clicks of 202_clicks in the range
        clicks = conn.execute(text("SELECT COUNT(*) FROM `202_clicks` WHERE user_id = :u AND click_time BETWEEN :a AND :b "
                                   "AND ppc_account_id = :i"), {"u": 1, "a": T - 72 * HOUR, "b": T + HOUR, "i": 2}).scalar()
        assert clicks == 2
        # the touchpoint mix reads the scoped row's own touchpoints
        mix = conn.execute(text("SELECT position, credit FROM `202_attribution_touchpoints` WHERE snapshot_id = :s "
                                "ORDER BY position, touchpoint_id"), {"s": page[0][0]}).all()
        assert sorted(mix) == [(0, Decimal("1.00000")), (1, Decimal("0.33333"))]
        # every model, scope type and scope id, read as the dashboard reads them
        for model, model_id in MODEL_IDS.items():
            for scope_type in TYPES:
                for scope_id, (clicks, conversions, revenue, cost) in expected(model, scope_type).items():
                    if scope_id is None:
                        continue
                    totals = dashboard_totals(conn, model_id, scope_type, scope_id, T - 72 * HOUR, T + HOUR)
                    want_clicks = (sum(1 for t in TOUCHES if value_of(scope_type, t) == scope_id)
                                   if scope_type in CLICK_COLUMN else clicks)
                    roi = (float(revenue) - float(cost)) / float(cost) * 100
                    assert totals == {"revenue": float(revenue), "conversions": conversions, "clicks": want_clicks,
                                      "cost": float(cost), "roi": roi}, (model, scope_type, scope_id)


#: The v2 /metrics route's click count filters 202_clicks by the scope id for these scopes only.
CLICK_COLUMN = {"campaign": "aff_campaign_id", "account": "ppc_account_id", "landing_page": "landing_page_id"}
FIND_FOR_RANGE = text(
    "SELECT snapshot_id, date_hour, attributed_clicks, attributed_conversions, attributed_revenue, attributed_cost "
    "FROM `202_attribution_snapshots` WHERE model_id = :m AND scope_type = :s AND scope_id <=> :i "
    "AND date_hour BETWEEN :a AND :b ORDER BY date_hour ASC LIMIT :l OFFSET :o")


def dashboard_totals(conn, model_id, scope_type, scope_id, start, end, page_size=1) -> dict:
    """The PHP dashboard's totals (spec §5.6): ``findForRange`` paged with the same page size until
    a short page, floats summed, roi; the v2 route's clicks replaced by the scope's clicks of
    ``202_clicks`` in the range (campaign, account and landing_page scopes)."""
    rows, offset = [], 0
    while offset <= 1_000_000:
        page = conn.execute(FIND_FOR_RANGE, {"m": model_id, "s": scope_type, "i": scope_id, "a": start, "b": end,
                                             "l": page_size, "o": offset}).all()
        rows += page
        if len(page) < page_size:
            break
        offset += page_size
    revenue, cost = sum(float(r[4]) for r in rows), sum(float(r[5]) for r in rows)
    clicks = sum(int(r[2]) for r in rows)
    if scope_type in CLICK_COLUMN:
        column = tables.clicks.c[CLICK_COLUMN[scope_type]]
        clicks = conn.execute(select(func.count()).select_from(tables.clicks).where(
            tables.clicks.c.user_id == 1, tables.clicks.c.click_time.between(start, end), column == scope_id)).scalar()
    return {"revenue": revenue, "conversions": sum(int(r[3]) for r in rows), "clicks": clicks, "cost": cost,
            "roi": (revenue - cost) / cost * 100 if cost > 0 else None}


def seed(url):
    engine = database.make_engine(url)
    load(engine, generate(GeneratorConfig(seed=5, start=START, hours=4, scale=0.15, invalid_models=False)))
    return engine


START = 1735689600
HOURS = [START + i * HOUR for i in range(4)]


def sums_by_type(engine) -> pl.DataFrame:
    """Per (model, user, hour, type): the scoped rows' sums beside the global row, and the clicks
    of the global touchpoints whose click has no value of the type (the remainder's clicks)."""
    with engine.connect() as conn:
        frame = pl.read_database(text(
            "SELECT s.model_id, s.user_id, s.date_hour, s.scope_type, SUM(s.attributed_clicks) AS clicks, "
            "SUM(s.attributed_conversions) AS conversions, SUM(s.attributed_revenue) AS revenue, "
            "SUM(s.attributed_cost) AS cost, COUNT(*) AS n, g.attributed_clicks AS g_clicks, "
            "g.attributed_conversions AS g_conversions, g.attributed_revenue AS g_revenue, g.attributed_cost AS g_cost "
            "FROM `202_attribution_snapshots` s JOIN `202_attribution_snapshots` g ON g.model_id = s.model_id "
            "AND g.user_id = s.user_id AND g.date_hour = s.date_hour AND g.scope_type = 'global' "
            "WHERE s.scope_type <> 'global' GROUP BY s.model_id, s.user_id, s.date_hour, s.scope_type, g.snapshot_id"), conn,
            schema_overrides={"model_id": pl.Int64, "user_id": pl.Int64, "date_hour": pl.Int64})
        none_lp = pl.read_database(text(
            "SELECT g.model_id, g.user_id, g.date_hour, COUNT(*) AS none_clicks FROM `202_attribution_snapshots` g "
            "JOIN `202_attribution_touchpoints` t ON t.snapshot_id = g.snapshot_id "
            "JOIN `202_clicks` c ON c.click_id = t.click_id WHERE g.scope_type = 'global' AND c.landing_page_id = 0 "
            "GROUP BY g.model_id, g.user_id, g.date_hour"), conn, schema_overrides={"model_id": pl.Int64, "user_id": pl.Int64, "date_hour": pl.Int64,
                                                          "none_clicks": pl.Int64})
    return frame.join(none_lp, on=["model_id", "user_id", "date_hour"], how="left").with_columns(
        pl.col("none_clicks").fill_null(0))


def test_generated_data_adds_up_switches_off_and_leaves_global_rows_alone(mysql_url):
    engine = seed(mysql_url)
    run(mysql_url, HOURS[0], HOURS[-1], scope_types=())
    with engine.connect() as conn:
        global_only = php_engine.stored_rows(conn, HOURS)
    assert scoped(engine) == []

    result, report = run(mysql_url, HOURS[0], HOURS[-1], scope_types=TYPES, scoped_touchpoints=True)  # switched on: every pair recomputed
    assert report["user_hours_skipped"] == 0 and report["outcome"] == 0
    assert all(c.passed for c in result.get_asset_check_evaluations() if c.check_name == "scoped_totals")
    with engine.connect() as conn:
        assert php_engine.stored_rows(conn, HOURS) == global_only  # global rows and touchpoints untouched
    sums = sums_by_type(engine)
    assert set(sums.get_column("scope_type")) == set(TYPES)
    whole = sums.filter(pl.col("scope_type").is_in(["campaign", "advertiser"]))
    assert (whole["clicks"] == whole["g_clicks"]).all() and (whole["conversions"] == whole["g_conversions"]).all()
    for money in ("revenue", "cost"):
        off = (sums[money].cast(pl.Float64) - sums[f"g_{money}"].cast(pl.Float64)).abs()
        assert (off.filter(sums["scope_type"].is_in(["campaign", "advertiser"]))
                <= whole["n"].cast(pl.Float64) * 1e-4 + 1e-9).all()
    lp = sums.filter(scope_type="landing_page")
    assert (lp["clicks"] + lp["none_clicks"] == lp["g_clicks"]).all()
    assert (sums["conversions"] <= sums["g_conversions"]).all()

    # an unchanged rerun skips everything; a deleted scoped row is restored by the next run
    _, again = run(mysql_url, HOURS[0], HOURS[-1], scope_types=TYPES, scoped_touchpoints=True)
    assert again["user_hours_recomputed"] == 0
    victim = scoped(engine, scope_type="account")[0]
    with engine.begin() as conn:
        conn.execute(touch.delete().where(touch.c.snapshot_id == victim["snapshot_id"]))
        conn.execute(snaps.delete().where(snaps.c.snapshot_id == victim["snapshot_id"]))
    _, repaired = run(mysql_url, HOURS[0], HOURS[-1], scope_types=TYPES, scoped_touchpoints=True)
    assert repaired["user_hours_recomputed"] == 1
    assert scoped(engine, snapshot_id=victim["snapshot_id"]) == [] and {
        (r["attributed_clicks"], r["attributed_revenue"]) for r in scoped(
            engine, model_id=victim["model_id"], date_hour=victim["date_hour"], scope_type="account",
            scope_id=victim["scope_id"])} == {(victim["attributed_clicks"], victim["attributed_revenue"])}

    # switched off: the next run removes the rows of the types no longer written, and their touchpoints
    before = {r["snapshot_id"] for r in scoped(engine, scope_type="campaign")}
    run(mysql_url, HOURS[0], HOURS[-1], scope_types=("campaign",), scoped_touchpoints=False)
    left = scoped(engine)
    assert {r["scope_type"] for r in left} == {"campaign"} and {r["snapshot_id"] for r in left} == before
    with engine.connect() as conn:
        orphans = conn.execute(text("SELECT COUNT(*) FROM `202_attribution_touchpoints` t LEFT JOIN "
                                    "`202_attribution_snapshots` s ON s.snapshot_id = t.snapshot_id "
                                    "WHERE s.snapshot_id IS NULL")).scalar()
        scoped_touch = conn.execute(text("SELECT COUNT(*) FROM `202_attribution_touchpoints` t JOIN "
                                         "`202_attribution_snapshots` s ON s.snapshot_id = t.snapshot_id "
                                         "WHERE s.scope_type <> 'global'")).scalar()
        assert orphans == 0 and scoped_touch == 0
        assert php_engine.stored_rows(conn, HOURS) == global_only
    run(mysql_url, HOURS[0], HOURS[-1], scope_types=())
    assert scoped(engine) == []


def stored_values(engine) -> dict:
    """Every snapshot row, global and scoped, by (model, hour, type, id): (snapshot id, clicks,
    conversions, revenue, cost) and its touchpoints (click, position, credit)."""
    with engine.connect() as conn:
        rows = conn.execute(select(snaps)).all()
        points = conn.execute(select(touch.c.snapshot_id, touch.c.click_id, touch.c.position, touch.c.credit)).all()
    by_snapshot: dict = {}
    for p in points:
        by_snapshot.setdefault(p.snapshot_id, []).append((p.click_id, p.position, str(p.credit)))
    return {(r.model_id, r.date_hour, r.scope_type, r.scope_id): (
        r.snapshot_id, r.attributed_clicks, r.attributed_conversions, str(r.attributed_revenue), str(r.attributed_cost),
        sorted(by_snapshot.get(r.snapshot_id, []))) for r in rows}


def tamper(engine, hours) -> None:
    """Every row of ``hours`` (global and scoped) gets revenue 999: a held group keeps it, a
    recomputed one loses it (and the edit makes every pair of those hours recompute)."""
    with engine.begin() as conn:
        conn.execute(update(snaps).where(snaps.c.date_hour.in_(hours)).values(attributed_revenue=Decimal("999")))


def load_held_scenario(url):
    engine = database.make_engine(url)
    with engine.begin() as conn:
        scenarios.load_section_4_6(conn)
    hours = [scenarios.T + i * HOUR for i in range(3)]
    run(url, hours[0], hours[-1], journey_source="stored", scope_types=TYPES)
    return engine, hours, stored_values(engine)


def split_by_held(values: dict, held: set) -> tuple[dict, dict]:
    inside = {k: v for k, v in values.items() if (k[0], k[1]) in held}
    return inside, {k: v for k, v in values.items() if (k[0], k[1]) not in held}


def test_a_group_held_by_a_failing_check_keeps_its_stored_scoped_rows(mysql_url):
    """D19 with D31: a group held by a blocking check keeps every stored row, scoped ones
    included (with their touchpoints); the groups not held get theirs rewritten."""
    engine, hours, first = load_held_scenario(mysql_url)
    assert {k[2] for k in first} >= {"global", "campaign", "advertiser"}
    tamper(engine, hours)
    tampered = stored_values(engine)
    with engine.begin() as conn:  # conversion 3's click stored twice: its hour's groups are held
        scenarios.add_stored_journey(conn, 3, [(201, scenarios.T + 3650), (201, scenarios.T + 3650)])
    _, report = run(mysql_url, hours[0], hours[-1], journey_source="stored", scope_types=TYPES)
    held = {(h["model_id"], h["date_hour"]) for h in report["held"]}
    assert report["outcome"] == 2 and {h for _, h in held} == {hours[1]}
    after = stored_values(engine)
    kept, rewritten = split_by_held(after, held)
    assert kept == split_by_held(tampered, held)[0] and any(k[2] != "global" for k in kept)
    assert {v[3] for v in kept.values()} == {"999.0000"}
    assert rewritten == split_by_held(first, held)[1]  # the others: recomputed, as the first run wrote them


def test_a_failing_scoped_totals_check_holds_the_group_with_its_global_row(mysql_url, monkeypatch):
    """An unbalanced (model, hour, scope type), forced in-process, fails ``scoped_totals`` (ERROR)
    and holds its group (D19): its global and scoped rows stay as stored; the rest is written."""
    engine, hours, first = load_held_scenario(mysql_url)
    tamper(engine, hours)
    tampered = stored_values(engine)
    real = scope_credit.unbalanced
    victim = {"date_hour": hours[0], "model_id": 2, "user_id": scenarios.SECTION_4_6_USER,
              "scope_type": "advertiser", "reason": "forced by the test"}

    def forced(scoped_frame, snapshots):
        found = real(scoped_frame, snapshots)
        if snapshots.filter(date_hour=hours[0], model_id=2).height:
            found = pl.concat([found, pl.DataFrame([victim], schema=scope_credit.UNBALANCED)])
        return found

    monkeypatch.setattr(scope_credit, "unbalanced", forced)
    result, report = run(mysql_url, hours[0], hours[-1], journey_source="stored", scope_types=TYPES)
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "scoped_totals"]
    assert not check.passed and check.severity.value == "ERROR"
    assert check.metadata["unbalanced"].value == 1
    assert [(h["model_id"], h["date_hour"]) for h in report["held"]] == [(2, hours[0])]
    assert "scoped rows do not add up" in report["held"][0]["reason"] and report["outcome"] == 2
    held = {(2, hours[0])}
    kept, rewritten = split_by_held(stored_values(engine), held)
    assert kept == split_by_held(tampered, held)[0] and {k[2] for k in kept} >= {"global", "campaign"}
    assert rewritten == split_by_held(first, held)[1]
