"""Revenue by click hour (the accrual view): hand-built clicks where a click of hour A is credited by a
conversion of hour B and a click of hour A that never reached a journey still counts in A's spend;
the exact numbers through the ``click_spend`` export, the ``credits_by_touch_hour`` and ``accrual``
views, the documented query and ``attribution compare --axis touch`` (real job on MariaDB)."""

import io
import re
import shutil
from contextlib import redirect_stdout
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import update

import scenarios
from attribution_pipeline.analytics.duckdb_views import connect
from attribution_pipeline.cli import main
from attribution_pipeline.exports import layout
from attribution_pipeline.exports.purge_files import cutoff_rule, drop_export_rows, ids_rule
from attribution_pipeline.exports.reconcile import reconcile
from attribution_pipeline.storage import database, tables
from conftest import _new_database
from pipeline import HOUR, run

A = scenarios.T  # 2024-06-01 09:00 UTC: the assisting click, and a click of another campaign
B = A + 2 * HOUR  # 11:00: the converting click and its conversion
EXPORTS_DOC = Path(__file__).resolve().parents[1] / "docs" / "exports.md"
D = Decimal


def load(conn) -> dict[str, int]:
    """User 1: campaign 10's click 101 (hour A, stored twice: one click, D15) and converting click 103
    (hour B; conversion 1, 10.00, in hour B), campaign 20's click 102 (hour A, no conversion: in no
    journey; stored twice, the second copy dearer and on account 1: D15 keeps the first); user 2:
    a click without models."""
    scenarios.add_user(conn, 1)
    scenarios.add_user(conn, 2)
    for campaign, user in ((10, 1), (20, 1), (30, 2)):
        scenarios.add_campaign(conn, campaign, user, 1)
    scenarios.add_click(conn, 101, 1, 10, A + 600, "0.20", ppc_account_id=1)
    scenarios.add_click(conn, 101, 1, 10, A + 600, "0.20", ppc_account_id=1)
    scenarios.add_click(conn, 102, 1, 20, A + 1200, "0.30", ppc_account_id=2)
    scenarios.add_click(conn, 102, 1, 20, A + 1200, "0.35", ppc_account_id=1)
    scenarios.add_click(conn, 103, 1, 10, B + 300, "0.50", ppc_account_id=1)
    scenarios.add_click(conn, 201, 2, 30, A + 100, "1.00", ppc_account_id=3)
    scenarios.add_conversion(conn, 1, 103, 10, 1, "10.00", B + 300, B + 900)
    scenarios.add_model(conn, 1, 1, "last_touch", slug="last-touch")
    scenarios.add_model(conn, 2, 1, "linear", slug="linear")
    return {"last-touch": 1, "linear": 2}


@pytest.fixture(scope="module")
def world(mysql_server, tmp_path_factory):
    url = _new_database(mysql_server)
    engine = database.make_engine(url)
    tables.create_missing(engine)
    with engine.begin() as conn:
        load(conn)
    home = tmp_path_factory.mktemp("accrual_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTRIBUTION_HOME", str(home))
        for name in ("ATTRIBUTION_DB_URL", "ATTRIBUTION_EXPORT_DIR", "DAGSTER_HOME"):
            mp.delenv(name, raising=False)
        result, _ = run(url, A, B)
        yield {"url": url, "engine": engine, "root": home / "exports", "home": home, "result": result}
    engine.dispose()
    with mysql_server.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{engine.url.database}`")


def reconciled(result) -> bool:
    checks = [c for c in result.get_asset_check_evaluations() if c.check_name == "export_reconciliation"]
    return bool(checks) and all(c.passed for c in checks)


def spend_rows(root) -> list[tuple]:
    df = pl.read_parquet(str(root / "click_spend" / "**" / "*.parquet"))
    return sorted(df.select("date_hour", "user_id", "campaign_id", "ppc_account_id", "landing_page_id", "clicks",
                            "spend").iter_rows())


#: click_spend: every click of each hour, journey or not, D15 duplicates once per user and hour.
SPEND = [
    (A, 1, 10, 1, 0, 1, D("0.20000")),
    (A, 1, 20, 2, 0, 1, D("0.30000")),
    (A, 2, 30, 3, 0, 1, D("1.00000")),
    (B, 1, 10, 1, 0, 1, D("0.50000")),
]
#: accrual (user 1): (model, click hour, touches, credited conversions, revenue, cost, clicks, spend).
ACCRUAL = [
    (1, A, 0, D("0"), D("0"), D("0"), 2, D("0.50000")),
    (1, B, 1, D("1.00000"), D("10.0000"), D("0.5000"), 1, D("0.50000")),
    (2, A, 1, D("0.50000"), D("5.0000"), D("0.2500"), 2, D("0.50000")),
    (2, B, 1, D("0.50000"), D("5.0000"), D("0.2500"), 1, D("0.50000")),
]


def test_click_spend_holds_every_click_of_each_hour_and_accrual_sets_it_against_touch_hour_revenue(world):
    root = world["root"]
    assert reconciled(world["result"])
    assert spend_rows(root) == SPEND
    assert layout.part_path(root, "click_spend", A + HOUR).exists()  # an exported hour without clicks: empty file
    con = connect(root)
    got = con.execute("SELECT model_id, date_hour, touches, credited_conversions, revenue, cost, clicks, spend "
                      "FROM accrual WHERE user_id = 1 ORDER BY ALL").fetchall()
    assert [tuple(r) for r in got] == ACCRUAL
    assert con.execute("SELECT count(*) FROM accrual WHERE user_id = 2").fetchone()[0] == 0  # no model: no row
    # the touch-hour view: the conversion (hour B) credits hour A's click under linear
    credits = con.execute("SELECT model_name, date, hour, revenue FROM credits_by_touch_hour ORDER BY ALL").fetchall()
    assert [(m, str(d), h, r) for m, d, h, r in credits] == [
        ("last-touch", "2024-06-01", 11, D("10.0000")), ("linear", "2024-06-01", 9, D("5.0000")),
        ("linear", "2024-06-01", 11, D("5.0000"))]
    # by conversion hour, all of it is hour B's
    assert con.execute("SELECT DISTINCT hour FROM snapshots").fetchall() == [(11,)]
    hour_start = con.execute("SELECT DISTINCT hour_start FROM accrual WHERE date_hour = ?", [A]).fetchone()[0]
    assert hour_start.isoformat() == "2024-06-01T09:00:00"


def documented_queries() -> list[str]:
    section = EXPORTS_DOC.read_text().split("\n## Revenue by click hour", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def test_documented_roas_by_click_day_query(world):
    queries = documented_queries()
    assert queries
    rows = connect(world["root"]).execute(queries[0]).fetchall()
    assert [(u, str(d), m, c, s, r, float(x)) for u, d, m, c, s, r, x in rows] == [
        (1, "2024-06-01", "last-touch", 3, D("1.00000"), D("10.0000"), 10.0),
        (1, "2024-06-01", "linear", 3, D("1.00000"), D("10.0000"), 10.0)]


def cli(*args) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def test_compare_axis_touch_prints_revenue_by_click_hour_against_spend(world, tmp_path, capsys):
    window = ["--db-url", world["url"], "--start", "2024-06-01T09:00", "--end", "2024-06-01T12:00"]
    png = tmp_path / "touch.png"
    code, out = cli("compare", *window, "--axis", "touch", "--out", str(png))
    assert code == 0, out
    table = out.split("User 1 (amounts in USD)\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split() for line in table if not line.startswith("-")] == [
        ["click", "hour", "clicks", "spend", "last-touch", "linear"],
        ["2024-06-01", "09:00", "2", "0.50", "0.00", "5.00"],
        ["2024-06-01", "10:00", "0", "0.00", "0.00", "0.00"],
        ["2024-06-01", "11:00", "1", "0.50", "10.00", "5.00"],
        ["total", "3", "1.00", "10.00", "10.00"],
        ["ROAS", "10.00x", "10.00x"],
    ]
    assert "User 2" not in out  # spend but no model
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # only hour A's clicks: the linear half of the conversion, against hour A's spend
    code, out = cli("compare", *window[:3], "2024-06-01T09:00", "--end", "2024-06-01T10:00", "--axis", "touch",
                    "--out", str(tmp_path / "a.png"))
    assert code == 0 and re.search(r"^total\s+2\s+0\.50\s+0\.00\s+5\.00$", out, re.M), out
    assert re.search(r"^ROAS\s+0\.00x\s+10\.00x$", out, re.M), out
    assert cli("compare", *window, "--axis", "touch", "--by", "campaign")[0] == 1
    assert "--by does not combine with --axis touch" in capsys.readouterr().err


def test_erasure_and_retention_rewrite_click_spend_like_the_other_tables(world, tmp_path):
    root = tmp_path / "exports"
    shutil.copytree(world["root"], root)
    visitor = drop_export_rows(root, ids_rule({"click_id": [101, 102], "conv_id": [1]}))
    assert visitor["click_spend"] == 0 and spend_rows(root) == SPEND  # sums: no click id in them
    erased = drop_export_rows(root, ids_rule({"user_id": [2]}))
    assert erased["click_spend"] == 1 and spend_rows(root) == [r for r in SPEND if r[1] != 2]
    purged = drop_export_rows(root, cutoff_rule({1: B}))
    assert purged["click_spend"] == 2 and spend_rows(root) == [SPEND[-1]]
    assert not layout.part_path(root, "click_spend", A).exists()  # hour A lost its last row in every table


def test_an_incremental_run_exports_an_hour_again_when_its_clicks_change(world):
    """Adding a click that reaches no journey (hour A+1, which has no conversion) re-exports that
    hour's click_spend through the source fingerprints (D22); the reconciliation names an hour whose
    clicks changed after its export."""
    url, root = world["url"], world["root"]
    with world["engine"].begin() as conn:
        scenarios.add_click(conn, 104, 1, 20, A + HOUR + 60, "0.40", ppc_account_id=2)
    result, _ = run(url, A, B, home=world["home"])  # incremental: only the pairs whose clicks changed
    assert reconciled(result)
    assert spend_rows(root) == sorted([*SPEND, (A + HOUR, 1, 20, 2, 0, 1, D("0.40000"))])
    assert connect(root).execute("SELECT revenue, clicks, spend FROM accrual WHERE date_hour = ? AND model_id = 2",
                                 [A + HOUR]).fetchall() == [(D("0"), 1, D("0.40000"))]
    assert reconcile(world["engine"], root, [A, A + HOUR, B]).height == 0
    with world["engine"].begin() as conn:
        conn.execute(update(tables.clicks).where(tables.clicks.c.click_id == 104).values(click_cpc=D("0.45")))
    wrong = reconcile(world["engine"], root, [A, A + HOUR, B])
    assert wrong.get_column("date_hour").to_list() == [A + HOUR]
    assert "click_spend file has 1 clicks and 40000 spend units, 202_clicks 1 and 45000" in wrong["reason"][0]
