"""The whole pipeline (Dagster job, real MariaDB): parity with the PHP engine and each decision.

The oracle (tests/oracle/php_engine.py) is an independent scalar port of the PHP engine with the
project's decisions; tests/scenarios.py holds the spec's worked examples and their PHP values.
"""

import json

import polars as pl
import pytest
from sqlalchemy import func, insert, select, text, update

import scenarios
from attribution_pipeline.storage import database
from attribution_pipeline.storage import tables
from oracle import php_engine
from pipeline import HOUR, run

T = scenarios.T
HOURS_4_6 = [T, T + HOUR, T + 2 * HOUR]


def engine_for(url):
    return database.make_engine(url)


def stored(url, hours=None):
    with engine_for(url).connect() as conn:
        return php_engine.stored_rows(conn, hours)


def expected(url, hours, **kw):
    with engine_for(url).connect() as conn:
        return php_engine.expected_rows(conn, hours, **kw)


def load_4_6(url, **kw):
    with engine_for(url).begin() as conn:
        return scenarios.load_section_4_6(conn, **kw)


def snapshot_rows(url):
    with engine_for(url).connect() as conn:
        return conn.execute(
            select(tables.attribution_snapshots).order_by(tables.attribution_snapshots.c.snapshot_id)
        ).mappings().all()


# ------------------------------------------------------------------------------------------
# parity: spec §4.6, each model alone and all together (D1)
# ------------------------------------------------------------------------------------------


def test_section_4_6_stored_journeys_match_php_exactly(mysql_url):
    ids = load_4_6(mysql_url)
    _, report = run(mysql_url, T, T + 2 * HOUR, journey_source="stored")
    assert report["outcome"] == 0
    got = stored(mysql_url)
    want_snapshots, want_touchpoints = scenarios.section_4_6_expected(ids, "stored")
    assert sorted(got.snapshots) == sorted(want_snapshots)
    assert sorted(got.touchpoints) == sorted(want_touchpoints)
    # the spec's headline numbers, read straight from the table
    by_model = {(s[0], s[2]): s for s in got.snapshots}
    assert [by_model[(ids[k], T)][3] for k in ("last_touch", "position_based", "time_decay", "assisted")] == [2, 9, 9, 7]
    assert {by_model[(m, T)][5:] for m in ids.values()} == {("35.5000", "1.5000")}
    assert {by_model[(m, T + HOUR)][5:] for m in ids.values()} == {("7.2500", "0.2500")}
    assert {by_model[(m, T + 2 * HOUR)][5:] for m in ids.values()} == {("11.0000", "0.9000")}
    td = sorted((t[3], t[4], t[6]) for t in got.touchpoints if t[0] == ids["time_decay"] and t[3] in (1, 2))
    assert [c for _, _, c in td] == ["0.11615", "0.23230", "0.32381", "0.32773",
                                      "0.08732", "0.17465", "0.24345", "0.24640", "0.24818"]


@pytest.mark.parametrize("journey_source", ["stored", "clicks"])
def test_each_model_alone_equals_all_models_together(mysql_url, journey_source):
    ids = load_4_6(mysql_url, extra_models=(("first_touch", "first_touch", None), ("linear", "linear", None),
                                            ("algorithmic", "algorithmic", '{"config":"x"}')))
    run(mysql_url, T, T + 2 * HOUR, journey_source=journey_source)
    together = stored(mysql_url)
    assert not php_engine.diff(expected(mysql_url, HOURS_4_6, journey_source=journey_source), together)
    alone_snapshots, alone_touchpoints = [], []
    with engine_for(mysql_url).begin() as conn:
        conn.execute(tables.attribution_touchpoints.delete())
        conn.execute(tables.attribution_snapshots.delete())
    for model_id in ids.values():
        run(mysql_url, T, T + 2 * HOUR, models=[model_id], journey_source=journey_source)
    alone = stored(mysql_url)
    assert sorted(alone.snapshots) == sorted(together.snapshots)
    assert sorted(alone.touchpoints) == sorted(together.touchpoints)
    assert len({s[0] for s in together.snapshots}) == len(ids)  # no model takes over another's rows (Q1)


def test_clicks_mode_builds_the_journey_php_only_gets_after_backfill(mysql_url):
    ids = load_4_6(mysql_url, stored_journeys=False)
    run(mysql_url, T, T + 2 * HOUR)
    want_snapshots, want_touchpoints = scenarios.section_4_6_expected(ids, "clicks")
    got = stored(mysql_url)
    assert sorted(got.snapshots) == sorted(want_snapshots)
    assert sorted(got.touchpoints) == sorted(want_touchpoints)
    # conversion 4 (click 105, no stored journey) now has the campaign's five clicks
    conv4 = [t for t in got.touchpoints if t[0] == ids["position_based"] and t[3] == 4]
    assert [t[5] for t in sorted(conv4, key=lambda t: t[4])] == [101, 102, 103, 104, 105]


# ------------------------------------------------------------------------------------------
# re-runs, ranges, chunks
# ------------------------------------------------------------------------------------------


def test_rerun_is_idempotent_and_keeps_ids_and_created_at(mysql_url):
    load_4_6(mysql_url)
    run(mysql_url, T, T + 2 * HOUR)
    first = snapshot_rows(mysql_url)
    first_rows = stored(mysql_url)
    run(mysql_url, T, T + 2 * HOUR)
    second = snapshot_rows(mysql_url)
    assert [(r["snapshot_id"], r["created_at"]) for r in second] == [(r["snapshot_id"], r["created_at"]) for r in first]
    assert sorted(stored(mysql_url).touchpoints) == sorted(first_rows.touchpoints)
    assert sorted(stored(mysql_url).snapshots) == sorted(first_rows.snapshots)


def test_range_run_equals_hour_by_hour_and_any_chunk_size(mysql_url):
    load_4_6(mysql_url)
    run(mysql_url, T, T + 2 * HOUR, chunk_hours=168)
    ranged = stored(mysql_url)
    for chunk_hours in (1, 2):
        with engine_for(mysql_url).begin() as conn:
            conn.execute(tables.attribution_touchpoints.delete())
            conn.execute(tables.attribution_snapshots.delete())
        run(mysql_url, T, T + 2 * HOUR, chunk_hours=chunk_hours)
        assert sorted(stored(mysql_url).touchpoints) == sorted(ranged.touchpoints)
        assert sorted(stored(mysql_url).snapshots) == sorted(ranged.snapshots)
    with engine_for(mysql_url).begin() as conn:
        conn.execute(tables.attribution_touchpoints.delete())
        conn.execute(tables.attribution_snapshots.delete())
    for hour in HOURS_4_6:
        run(mysql_url, hour)
    assert sorted(stored(mysql_url).touchpoints) == sorted(ranged.touchpoints)
    assert sorted(stored(mysql_url).snapshots) == sorted(ranged.snapshots)


def test_sqlite_and_mariadb_store_the_same_values(mysql_url, sqlite_url):
    load_4_6(mysql_url, extra_models=(("linear", "linear", None),))
    load_4_6(sqlite_url, extra_models=(("linear", "linear", None),))
    run(mysql_url, T, T + 2 * HOUR)
    run(sqlite_url, T, T + 2 * HOUR)
    a, b = stored(mysql_url), stored(sqlite_url)
    assert sorted(a.snapshots) == sorted(b.snapshots)
    assert sorted(a.touchpoints) == sorted(b.touchpoints)
    assert len(a.touchpoints) > 40


# ------------------------------------------------------------------------------------------
# decisions that change results
# ------------------------------------------------------------------------------------------


def test_d3_whole_hours_keep_conversions_before_the_window_start_minute(mysql_url):
    """PHP's partial first hour drops conversion 1 (T+300) when run from T+1000 (Q4); we do not."""
    load_4_6(mysql_url)
    from attribution_pipeline.cli import main

    code = main(["rebuild", "--db-url", mysql_url, "--start", str(T + 1000), "--end", str(T + 3000)])
    assert code == 0
    rows = [s for s in stored(mysql_url).snapshots if s[2] == T]
    assert {(s[4], s[5]) for s in rows} == {(2, "35.5000")}  # both conversions of hour T
    assert all(s[2] == T for s in stored(mysql_url).snapshots)  # nothing outside the selection


def test_d4_stale_rows_and_php_duplicates_are_removed(mysql_url):
    ids = load_4_6(mysql_url)
    lt = ids["last_touch"]
    with engine_for(mysql_url).begin() as conn:
        # a PHP duplicate placeholder (Q10) and an all-zero row (Q5) for hour T + 2h
        for clicks in (5, 0):
            conn.execute(insert(tables.attribution_snapshots).values(
                model_id=lt, user_id=1, scope_type="global", scope_id=None, date_hour=T, lookback_start=0,
                lookback_end=0, attributed_clicks=clicks, attributed_conversions=0, attributed_revenue=0,
                attributed_cost=0, created_at=1))
        # soft-delete the only conversion of hour T + 2h
        conn.execute(update(tables.conversion_logs).where(tables.conversion_logs.c.conv_id == 4).values(deleted=1))
    run(mysql_url, T, T + 2 * HOUR)
    got = stored(mysql_url)
    assert [s for s in got.snapshots if s[0] == lt and s[2] == T] == [(lt, 1, T, 2, 2, "35.5000", "1.5000")]
    assert not [s for s in got.snapshots if s[2] == T + 2 * HOUR]  # no zero row for the emptied hour
    assert not [t for t in got.touchpoints if t[3] == 4]


def test_d6_invalid_model_is_skipped_and_reported_others_are_written(mysql_url):
    ids = load_4_6(mysql_url, extra_models=(("bad_td", "time_decay", '{"half_life_hours": 0}'),
                                            ("unknown", "data_driven", None)))
    _, report = run(mysql_url, T, T + 2 * HOUR)
    assert report["outcome"] == 2
    skipped = {m["model_id"]: m["reason"] for m in report["skipped_models"]}
    assert set(skipped) == {ids["bad_td"], ids["unknown"]}
    assert "half_life_hours" in skipped[ids["bad_td"]]
    written = {s[0] for s in stored(mysql_url).snapshots}
    assert written == {ids[k] for k in ("last_touch", "position_based", "time_decay", "assisted")}


def test_d7_first_touch_and_linear_are_computed(mysql_url):
    ids = load_4_6(mysql_url, models=("first_touch", "linear"))
    run(mysql_url, T, T + 2 * HOUR, journey_source="stored")
    tps = stored(mysql_url).touchpoints
    first = sorted((t[3], t[5], t[6]) for t in tps if t[0] == ids["first_touch"])
    assert first[:2] == [(1, 101, "1.00000"), (2, 101, "1.00000")]
    linear_conv2 = sorted(t[6] for t in tps if t[0] == ids["linear"] and t[3] == 2)
    assert linear_conv2 == ["0.20000"] * 5


def test_d9_only_owned_keys_are_touched(mysql_url):
    ids = load_4_6(mysql_url)
    lt, pb = ids["last_touch"], ids["position_based"]
    with engine_for(mysql_url).begin() as conn:
        scenarios.add_user(conn, 2)
        scenarios.add_model(conn, 90, 2, "last_touch")
        for model_id, user, hour in ((90, 2, T), (lt, 1, T - HOUR), (lt, 1, T + 3 * HOUR)):
            conn.execute(insert(tables.attribution_snapshots).values(
                model_id=model_id, user_id=user, scope_type="global", scope_id=None, date_hour=hour,
                lookback_start=0, lookback_end=0, attributed_clicks=7, attributed_conversions=7,
                attributed_revenue=7, attributed_cost=7, created_at=1))
        conn.execute(insert(tables.attribution_snapshots).values(  # an adgroup-scope row is never ours (D8, D31)
            model_id=lt, user_id=1, scope_type="adgroup", scope_id=10, date_hour=T, lookback_start=0,
            lookback_end=0, attributed_clicks=7, attributed_conversions=7, attributed_revenue=7,
            attributed_cost=7, created_at=1))
    run(mysql_url, T, T + 2 * HOUR, users=[1], models=[lt])
    rows = {(r["model_id"], r["user_id"], r["scope_type"], r["date_hour"]): r["attributed_clicks"] for r in snapshot_rows(mysql_url)}
    assert rows[(90, 2, "global", T)] == 7  # other user
    assert rows[(lt, 1, "global", T - HOUR)] == 7 and rows[(lt, 1, "global", T + 3 * HOUR)] == 7  # other hours
    assert rows[(lt, 1, "adgroup", T)] == 7  # other scope
    assert rows[(lt, 1, "global", T)] == 2
    assert not [k for k in rows if k[0] == pb]  # unselected model untouched (nothing written)

    # a deactivated model keeps its old rows
    run(mysql_url, T, T + 2 * HOUR)
    pb_rows = [r for r in snapshot_rows(mysql_url) if r["model_id"] == pb]
    with engine_for(mysql_url).begin() as conn:
        conn.execute(update(tables.attribution_models).where(tables.attribution_models.c.model_id == pb).values(is_active=0))
        conn.execute(update(tables.conversion_logs).values(deleted=1))
    run(mysql_url, T, T + 2 * HOUR)
    assert [r for r in snapshot_rows(mysql_url) if r["model_id"] == pb] == pb_rows
    assert not [r for r in snapshot_rows(mysql_url) if r["model_id"] == lt and r["date_hour"] == T and r["scope_type"] == "global"]


def test_d9_cli_refuses_inactive_invalid_or_unknown_models_before_running(mysql_url, capsys):
    ids = load_4_6(mysql_url, extra_models=(("bad", "position_based", '{"first_touch_weight":0.8,"last_touch_weight":0.5}'),))
    from attribution_pipeline.cli import main

    with engine_for(mysql_url).begin() as conn:
        conn.execute(update(tables.attribution_models).where(tables.attribution_models.c.model_id == ids["assisted"]).values(is_active=0))
    args = ["rebuild", "--db-url", mysql_url, "--start", str(T), "--end", str(T + HOUR)]
    assert main([*args, "--model", str(ids["assisted"])]) == 1
    assert "inactive" in capsys.readouterr().err
    assert main([*args, "--model", str(ids["bad"])]) == 1
    assert "sum of first and last touch weights" in capsys.readouterr().err
    assert main([*args, "--model", "999"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main([*args, "--user", "42"]) == 1
    assert "do not exist" in capsys.readouterr().err
    assert snapshot_rows(mysql_url) == []


def test_d11_d18_audit_rows_and_cron_log(mysql_url):
    ids = load_4_6(mysql_url)
    before = int(__import__("time").time())
    run(mysql_url, T, T + 2 * HOUR, journey_source="stored")  # the spec's example (4.5) used PHP's stored journeys
    with engine_for(mysql_url).connect() as conn:
        audits = conn.execute(select(tables.attribution_audit).order_by(tables.attribution_audit.c.model_id)).mappings().all()
        cron = conn.execute(select(tables.cronjob_logs)).mappings().all()
    assert [a["model_id"] for a in audits] == sorted(ids.values())
    assert {a["action"] for a in audits} == {"snapshot_rebuild"}
    pb = next(a for a in audits if a["model_id"] == ids["position_based"])
    assert pb["metadata"] == (
        f'{{"lookback_start":{T},"lookback_end":{T + 3 * HOUR - 1},"batches":1,"hours_processed":3,'
        '"clicks":11,"conversions":4,"revenue":53.75,"cost":2.65}'
    )
    assert [(c["id"], c["last_execution_time"] >= before) for c in cron] == [(2, True)]


def test_d18_a_chunk_transaction_run_again_after_its_commit_adds_no_audit_row_twice(mysql_url):
    """A transaction retried after its commit acknowledgement was lost runs again with the same
    audit rows: they replace themselves; another run's rows, even of the same (user, model), stay."""
    from attribution_pipeline.storage.audit import record_chunk

    def audits(now, revenue):
        return pl.DataFrame({"user_id": [1, 1], "model_id": [5, 6], "action": ["snapshot_rebuild"] * 2,
                             "metadata": [f'{{"revenue":{revenue}}}', '{"revenue":2.5}'], "created_at": [now, now]})

    engine = engine_for(mysql_url)
    with engine.begin() as conn:
        record_chunk(conn, audits(1000, 1.5), now=1000)  # an earlier run
    for _ in range(2):  # the chunk's transaction, then the same transaction run again
        with engine.begin() as conn:
            assert record_chunk(conn, audits(2000, 7.5), now=2000) == 2
    with engine.connect() as conn:
        rows = conn.execute(select(tables.attribution_audit.c.model_id, tables.attribution_audit.c.metadata,
                                   tables.attribution_audit.c.created_at)
                            .order_by(tables.attribution_audit.c.created_at, tables.attribution_audit.c.model_id)).all()
        cron = conn.execute(select(tables.cronjob_logs.c.id, tables.cronjob_logs.c.last_execution_time)).all()
    assert [tuple(r) for r in rows] == [(5, '{"revenue":1.5}', 1000), (6, '{"revenue":2.5}', 1000),
                                        (5, '{"revenue":7.5}', 2000), (6, '{"revenue":2.5}', 2000)]
    assert [tuple(c) for c in cron] == [(2, 2000)]


def test_d12_lookback_columns_hold_the_run_window(mysql_url):
    load_4_6(mysql_url)
    run(mysql_url, T + HOUR, T + 2 * HOUR)
    assert {(r["lookback_start"], r["lookback_end"]) for r in snapshot_rows(mysql_url)} == {(T + HOUR, T + 3 * HOUR - 1)}


def test_d15_duplicated_click_counts_once(mysql_url):
    ids = load_4_6(mysql_url)
    with engine_for(mysql_url).begin() as conn:
        scenarios.add_click(conn, 104, 1, 10, T - 600, cpc="0.80")  # click 104 stored twice
    run(mysql_url, T, T + 2 * HOUR)
    got = stored(mysql_url)
    assert [s for s in got.snapshots if s[0] == ids["last_touch"] and s[2] == T] == [(ids["last_touch"], 1, T, 2, 2, "35.5000", "1.5000")]
    assert not php_engine.diff(expected(mysql_url, HOURS_4_6), got)


def test_d16_orphans_and_deleted_users(mysql_url):
    ids = load_4_6(mysql_url)
    with engine_for(mysql_url).begin() as conn:
        scenarios.add_conversion(conn, 50, 55555, 10, 1, "99", T + 100, T + 200)  # click row missing
        scenarios.add_user(conn, 3, deleted=1)
        scenarios.add_model(conn, 91, 3, "last_touch")
        scenarios.add_click(conn, 3001, 3, 10, T + 10)
        scenarios.add_conversion(conn, 51, 3001, 10, 3, "5", T + 10, T + 20)
    _, report = run(mysql_url, T, T + 2 * HOUR)
    assert report["conversions"] == 4
    got = stored(mysql_url)
    assert not [s for s in got.snapshots if s[1] == 3]
    assert [s for s in got.snapshots if s[0] == ids["last_touch"] and s[2] == T][0][4] == 2


def test_d19_exit_codes_and_d20_dry_run(mysql_url, capsys):
    ids = load_4_6(mysql_url)
    from attribution_pipeline.cli import main

    args = ["rebuild", "--db-url", mysql_url, "--start", str(T), "--end", str(T + 3 * HOUR)]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"user 1 model {ids['last_touch']} (last-touch) 2024-06-01-09:00: new" in out
    assert snapshot_rows(mysql_url) == []  # dry run writes nothing

    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert sum(line.endswith(": same") for line in out.splitlines()) == 12 and "differs" not in out
    assert "dry run, nothing written: same 12" in out
    with engine_for(mysql_url).begin() as conn:
        conn.execute(update(tables.attribution_snapshots).where(
            tables.attribution_snapshots.c.model_id == ids["assisted"],
            tables.attribution_snapshots.c.date_hour == T).values(attributed_clicks=1))
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"model {ids['assisted']} (assisted) 2024-06-01-09:00: differs" in out

    with engine_for(mysql_url).begin() as conn:
        scenarios.add_model(conn, 77, 1, "time_decay", '{"half_life_hours": "abc"}')
    assert main(args) == 2
    out = capsys.readouterr().out
    assert "model 77" in out and "half_life_hours" in out


def test_multi_touch_disabled_gives_single_touch_journeys(mysql_url):
    ids = load_4_6(mysql_url, stored_journeys=False)
    with engine_for(mysql_url).begin() as conn:
        scenarios.add_setting(conn, 1, "global", None, 0)
    run(mysql_url, T, T + 2 * HOUR)
    got = stored(mysql_url)
    pb = [s for s in got.snapshots if s[0] == ids["position_based"]]
    assert sorted((s[2], s[3]) for s in pb) == [(T, 2), (T + HOUR, 1), (T + 2 * HOUR, 1)]
    assert not php_engine.diff(expected(mysql_url, HOURS_4_6), got)


def test_persisted_journeys_are_php_compatible(mysql_url):
    load_4_6(mysql_url, stored_journeys=False)
    run(mysql_url, T, T + 2 * HOUR, persist_journeys=True)
    with engine_for(mysql_url).connect() as conn:
        rows = conn.execute(select(tables.conversion_touchpoints.c.conv_id, tables.conversion_touchpoints.c.click_id,
                                   tables.conversion_touchpoints.c.position)
                            .order_by(tables.conversion_touchpoints.c.conv_id, tables.conversion_touchpoints.c.position)).all()
    journeys = {}
    for conv_id, click_id, position in rows:
        journeys.setdefault(conv_id, []).append((position, click_id))
    assert journeys[1] == [(0, 101), (1, 102), (2, 103), (3, 104)]
    assert journeys[2] == [(0, 101), (1, 102), (2, 103), (3, 104), (4, 105)]
    assert journeys[3] == [(0, 201)]
    # stored mode now reads what was persisted and gives the same rows
    before = stored(mysql_url)
    run(mysql_url, T, T + 2 * HOUR, journey_source="stored")
    after = stored(mysql_url)
    assert sorted(after.touchpoints) == sorted(before.touchpoints)
