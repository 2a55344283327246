"""DuckDB access to the exports and the model comparison: the documented queries (docs/exports.md) run as written,
``attribution query``/``duckdb``/``compare`` and the ``model_comparison`` asset (real pipeline on
MariaDB, one generated dataset shared by the module)."""

import io
import json
import re
from contextlib import redirect_stdout
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from sqlalchemy import func, select

from attribution_pipeline.analytics.comparison import compare
from attribution_pipeline.analytics.duckdb_views import connect
from attribution_pipeline.cli import main
from attribution_pipeline.cli.shell import repl
from attribution_pipeline.demo.generator import GeneratorConfig, seed
from attribution_pipeline.exports.columns import TABLES
from attribution_pipeline.settings import SCOPE_TYPES
from attribution_pipeline.storage import database, tables
from conftest import _new_database
from pipeline import HOUR, run, settings

EXPORTS_DOC = Path(__file__).resolve().parents[1] / "docs" / "exports.md"
START = int(datetime(2025, 5, 12, 6, tzinfo=timezone.utc).timestamp())
HOURS = 4
WINDOW = ["--start", "2025-05-12T06:00", "--end", "2025-05-12T10:00"]


@pytest.fixture(scope="module")
def dataset(mysql_server, tmp_path_factory):
    """A generated Prosper202 database (two active accounts, every model type, invalid models) run
    through the whole job once; its exports live in the module's own folder."""
    url = _new_database(mysql_server)
    engine = database.make_engine(url)
    tables.create_missing(engine)
    seed(engine, GeneratorConfig(seed=5, start=START, hours=HOURS, users=3, clicks=6000, conversions=240))
    home = tmp_path_factory.mktemp("analytics_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTRIBUTION_HOME", str(home))
        for name in ("ATTRIBUTION_DB_URL", "ATTRIBUTION_EXPORT_DIR", "DAGSTER_HOME"):
            mp.delenv(name, raising=False)
        _, report = run(url, START, START + (HOURS - 1) * HOUR, scope_types=SCOPE_TYPES)  # every scope type (D31)
    assert report["outcome"] == 2  # invalid models are seeded on purpose
    yield url, home / "exports"
    engine.dispose()
    with mysql_server.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{engine.url.database}`")


def cli(*args) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def documented_queries() -> list[str]:
    text = EXPORTS_DOC.read_text()
    section = text.split("\n## Querying", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def test_documented_queries_run_as_written_and_return_rows(dataset):
    url, root = dataset
    queries = documented_queries()
    assert len(queries) >= 5
    con = connect(root)
    for sql in queries:
        rows = con.execute(sql).fetchall()
        assert rows, sql
        code, out = cli("query", "--export-dir", str(root), sql)
        assert code == 0 and "│" in out, sql
    # the first query (revenue by model and day) and the reconciliation query agree with MySQL
    by_model_day = {(str(d), m): r for d, m, _, r, _ in con.execute(queries[0]).fetchall()}
    s, m = tables.attribution_snapshots, tables.attribution_models
    with database.make_engine(url).connect() as conn:
        want = conn.execute(select(s.c.date_hour, m.c.model_name, s.c.attributed_revenue)
                            .join(m, m.c.model_id == s.c.model_id).where(s.c.scope_type == "global")).all()
        hourly = dict(conn.execute(select(s.c.date_hour, func.sum(s.c.attributed_revenue))
                                   .where(s.c.scope_type == "global").group_by(s.c.date_hour)).all())
    expected: dict = {}
    for hour, name, revenue in want:
        key = (datetime.fromtimestamp(hour, tz=timezone.utc).strftime("%Y-%m-%d"), name)
        expected[key] = expected.get(key, Decimal(0)) + revenue
    assert by_model_day == expected
    assert {h: r for _, _, h, r, _ in con.execute(queries[-1]).fetchall()} == hourly


def test_query_formats_and_errors(dataset, tmp_path):
    _, root = dataset
    sql = "SELECT model_type, sum(attributed_revenue) AS revenue FROM snapshots GROUP BY ALL ORDER BY ALL"
    code, out = cli("query", "--export-dir", str(root), "--csv", sql)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0] == "model_type,revenue" and len(lines) == 8  # 7 model types
    code, out = cli("query", "--export-dir", str(root), "--json", sql)
    rows = json.loads(out)
    assert code == 0 and {r["model_type"] for r in rows} >= {"last_touch", "linear", "time_decay"}
    assert all(re.fullmatch(r"\d+\.\d{4}", r["revenue"]) for r in rows)  # exact decimals
    assert len({r["revenue"] for r in rows}) == 1  # every model type distributes the same revenue
    code, out = cli("query", "--export-dir", str(root), "--max-rows", "3", "SELECT * FROM journeys")
    assert code == 0 and "3 shown" in out
    assert cli("query", "--export-dir", str(root), "SELECT nope FROM snapshots")[0] == 1
    assert cli("query", "--export-dir", str(tmp_path / "nothing"), "SELECT 1")[0] == 1


def test_duckdb_file_and_builtin_shell(dataset, tmp_path, monkeypatch, capsys):
    _, root = dataset
    monkeypatch.setenv("PATH", str(tmp_path))  # no duckdb CLI: the file is written, how to open it printed
    monkeypatch.delenv("ATTRIBUTION_DUCKDB_CLI", raising=False)
    target = tmp_path / "analyst.duckdb"
    assert main(["duckdb", "--export-dir", str(root), str(target)]) == 0
    assert "written into" in capsys.readouterr().out
    with duckdb.connect(str(target), read_only=True) as con:
        counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES]
        direct = connect(root)
        assert counts == [direct.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES]
        assert min(counts) > 0
    out = io.StringIO()
    session = ".tables\n.schema snapshots\nSELECT count(*) AS n\n  FROM snapshots;\n.mode csv\n" \
              "SELECT DISTINCT model_type FROM snapshots ORDER BY 1;\nSELECT oops;\n.quit\n"
    assert repl(connect(root), stdin=io.StringIO(session), out=out) == 0
    text = out.getvalue()
    assert "snapshots  touchpoints  journeys" in text
    assert "attributed_revenue" in text and "DECIMAL(12,4)" in text
    assert f"{counts[0]}" in text
    assert "model_type\nalgorithmic\nassisted\n" in text
    assert "error:" in text  # a bad statement is reported and the shell goes on


def _parse_table(out: str, user: int) -> tuple[list[str], dict[str, list[str]]]:
    block = out.split(f"User {user} (amounts in USD)\n", 1)[1].split("\n\n", 1)[0].splitlines()
    header = re.split(r"\s{2,}", block[0].strip())
    rows = {}
    for line in block[2:]:
        if line.startswith("-"):
            continue
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return header, rows


def test_compare_prints_sources_by_models_with_totals_spread_and_a_chart(dataset, tmp_path):
    url, _ = dataset
    png = tmp_path / "chart.png"
    code, out = cli("compare", "--db-url", url, *WINDOW, "--out", str(png))
    assert code == 0, out
    assert "Window: 2025-05-12 06:00 to 2025-05-12 10:00 UTC (4 hours of conversions). Amounts in USD" in out
    m, s, p = tables.attribution_models, tables.attribution_snapshots, tables.ppc_accounts
    with database.make_engine(url).connect() as conn:
        active = conn.execute(select(m.c.user_id, m.c.model_id, m.c.model_name).where(m.c.is_active == 1)
                              .order_by(m.c.model_id)).all()
        written = dict(conn.execute(select(s.c.model_id, func.sum(s.c.attributed_revenue))
                                    .where(s.c.scope_type == "global").group_by(s.c.model_id)).all())
        sources = dict(conn.execute(select(p.c.ppc_account_id, p.c.ppc_account_name)).all())
    users = sorted({u for u, mid, _ in active if mid in written})
    assert len(users) == 2
    for user in users:
        header, rows = _parse_table(out, user)
        names = [name for u, mid, name in active if u == user and mid in written]
        assert header == ["account (ppc account)", *names, "spread", "spread %"]
        assert len(names) == 7  # every valid model type
        # totals: each model's stored revenue for the window, in cents
        totals = [Decimal(v.replace(",", "")) for v in rows["total"][:len(names)]]
        ids = [mid for u, mid, _ in active if u == user and mid in written]
        assert totals == [written[i].quantize(Decimal("0.01")) for i in ids]
        assert rows["total"][-2:] == ["0.00", "0.0%"]
        source_rows = [k for k in rows if k != "total"]
        assert source_rows and all(re.fullmatch(r".+ \(#\d+\)", k) for k in source_rows)
        for label in source_rows:
            source_id = int(label.rsplit("#", 1)[1].rstrip(")"))
            assert label == f"{sources[source_id]} (#{source_id})"
            values = [Decimal(v.replace(",", "")) for v in rows[label][:len(names)]]
            assert Decimal(rows[label][-2].replace(",", "")) == max(values) - min(values)
            assert rows[label][-1].endswith("%")
        per_model = [sum(Decimal(rows[k][j].replace(",", "")) for k in source_rows) for j in range(len(names))]
        assert all(abs(a - b) <= Decimal("0.01") * len(source_rows) for a, b in zip(per_model, totals))
    assert "Model totals equal the stored totals of 202_attribution_snapshots" in out
    assert "Active models without stored rows in the window" in out and "Broken Time Decay" in out
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 20_000
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    assert width >= 900 and height >= 800  # one panel per account
    code, out = cli("compare", "--db-url", url, *WINDOW, "--user", str(users[0]), "--out", str(tmp_path / "one.png"))
    assert code == 0 and f"User {users[0]} " in out and f"User {users[1]} " not in out
    assert cli("compare", "--db-url", url, "--start", WINDOW[3], "--end", WINDOW[1])[0] == 1  # start >= end


def test_model_comparison_asset_shows_the_table_and_is_not_in_the_hourly_job(dataset, tmp_path, monkeypatch):
    url, _ = dataset
    monkeypatch.setenv("ATTRIBUTION_EXPORT_DIR", str(tmp_path / "exports"))
    from attribution_pipeline.assets.model_comparison import model_comparison
    from attribution_pipeline.definitions import build_definitions
    from attribution_pipeline.storage.database import Database

    defs = build_definitions(settings(url))
    job_keys = {k.to_user_string() for k in defs.resolve_job_def("attribution_job").asset_layer.selected_asset_keys}
    assert "attribution_exports" in job_keys and "model_comparison" not in job_keys
    result = dg.materialize(
        [model_comparison],
        resources={"db": Database(url), "settings": settings(url)},
        run_config={"ops": {"model_comparison": {"config": {"start": WINDOW[1], "end": WINDOW[3]}}}},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("model_comparison")[0].metadata
    table = metadata["table"].value
    assert "| account (ppc account) | Last Touch |" in table and "**total**" in table
    assert metadata["hours"].value == HOURS and metadata["models"].value == 14
    assert Path(metadata["chart"].value).exists()
    with database.make_engine(url).connect() as conn:
        snaps = tables.attribution_snapshots
        total = conn.execute(select(func.sum(snaps.c.attributed_revenue)).where(snaps.c.scope_type == "global")).scalar()
    assert metadata["total_revenue_usd"].value == pytest.approx(float(total))


def scoped_sums(url) -> dict:
    """MySQL's scoped rows: (scope type, model, scope id) -> (revenue, rows, clicks)."""
    s = tables.attribution_snapshots
    with database.make_engine(url).connect() as conn:
        rows = conn.execute(select(s.c.scope_type, s.c.model_id, s.c.scope_id, func.sum(s.c.attributed_revenue),
                                   func.count(), func.sum(s.c.attributed_clicks))
                            .where(s.c.scope_type != "global").group_by(s.c.scope_type, s.c.model_id, s.c.scope_id)).all()
    return {(t, m, i): (rev, n, int(clicks)) for t, m, i, rev, n, clicks in rows}


def test_scope_views_hold_each_types_rows_and_the_documented_query_runs(dataset):
    """D31 in the exports: ``snapshots`` stays the global rows, ``snapshots_<type>`` holds each
    type's rows exactly as MySQL stores them; the *Credit by scope* query answers per traffic source."""
    url, root = dataset
    con = connect(root)
    want = scoped_sums(url)
    s = tables.attribution_snapshots
    with database.make_engine(url).connect() as conn:
        n_global = conn.execute(select(func.count()).where(s.c.scope_type == "global")).scalar()
    assert con.execute("SELECT count(*) FROM snapshots").fetchone()[0] == n_global
    assert con.execute("SELECT DISTINCT scope_type FROM snapshots").fetchall() == [("global",)]
    for scope_type in SCOPE_TYPES:
        got = {(scope_type, m, i): (rev, n, clicks) for m, i, rev, n, clicks in con.execute(
            f"SELECT model_id, scope_id, sum(attributed_revenue), count(*), sum(attributed_clicks)::INT "
            f"FROM snapshots_{scope_type} GROUP BY ALL").fetchall()}
        assert got and got == {k: v for k, v in want.items() if k[0] == scope_type}, scope_type
    section = EXPORTS_DOC.read_text().split("\n## Credit by scope", 1)[1].split("\n## ", 1)[0]
    [sql] = re.findall(r"```sql\n(.*?)```", section, re.S)
    sql = sql.replace("current_date", "DATE '2025-05-20'")  # the dataset's month
    rows = con.execute(sql).fetchall()
    names = dict(con.execute("SELECT DISTINCT model_id, model_name FROM snapshots").fetchall())
    expected: dict = {}
    for (t, m, i), (rev, _, _) in want.items():
        if t == "traffic_source":
            expected[(i, names[m])] = expected.get((i, names[m]), Decimal(0)) + rev
    assert {(ts, name): rev for ts, name, _, rev, _ in rows} == expected
    code, out = cli("query", "--export-dir", str(root), sql)
    assert code == 0 and "traffic_source" in out


def test_compare_by_each_scope_type_agrees_with_the_scoped_rows(dataset, tmp_path):
    """``compare --by``: per scope value the touches' shares, and the models' totals still the
    stored global ones. A value's shares split each snapshot's stored total by ``payout x stored
    credit`` (5 decimals, docs/exports.md), the scoped rows hold ``payout x credit`` rounded once
    a row: they agree within 0.0001 a row and a touch plus twice the credits' rounding, ``payout x
    touches x 0.000005`` (summed over the model's touches: a bound, not an estimate)."""
    url, root = dataset
    want = scoped_sums(url)
    engine = database.make_engine(url)
    credit_rounding = {m: 2 * Decimal("0.000005") * p for m, p in connect(root).execute(
        "SELECT model_id, sum(conversion_payout) FROM touchpoints GROUP BY ALL").fetchall()}
    for by in SCOPE_TYPES:
        result = compare(engine, START, START + HOURS * HOUR, by=by)
        assert result.by == by and result.users
        for user in result.users:
            assert user.totals == user.snapshot_totals, by
            for rec in user.table.iter_rows(named=True):
                for model_id, label in user.models:
                    if rec["scope_id"] == 0:  # the touches without a value: no scoped row
                        continue
                    rev, n, clicks = want.get((by, model_id, rec["scope_id"]), (Decimal(0), 0, 0))
                    bound = Decimal("0.0001") * (n + clicks) + credit_rounding[model_id]
                    assert abs(rec[label] - rev) <= bound, (by, model_id, rec)
    code, out = cli("compare", "--db-url", url, *WINDOW, "--by", "traffic_source", "--out", str(tmp_path / "ts.png"))
    assert code == 0 and "Attributed revenue by traffic source (ppc network) under each active model" in out
    header, rows = _parse_table(out, result.users[0].user_id)
    assert header[0] == "traffic source (ppc network)" and "total" in rows
    with pytest.raises(SystemExit):  # adgroup has no click attribute (D31): not a choice
        cli("compare", "--db-url", url, *WINDOW, "--by", "adgroup")
