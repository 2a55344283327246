"""Write-back safety on real MariaDB: transient errors are retried (a real KILL, a real lock wait
timeout), anything else fails once with a clear message and leaves the old rows, held groups keep
their rows while the rest is written, concurrent writers of the same hours are serialised, and
rows written by the PHP engine are reported (D9, D19, D20; issue 4 items 2, 3 and 6)."""

import threading
import time

import polars as pl
import pymysql
import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import make_url

import scenarios
from attribution_pipeline.storage import database, hour_rewrite, locks, stored_rows, tables
from oracle import php_engine
from pipeline import HOUR, run

T = scenarios.T
LAST = T + 2 * HOUR


def raw_connection(url):
    u = make_url(url)
    return pymysql.connect(host=u.host, port=u.port or 3306, user=u.username, password=u.password or "",
                           database=u.database, autocommit=True)


def rows(url):
    with database.make_engine(url).connect() as conn:
        got = php_engine.stored_rows(conn)
    return sorted(got.snapshots), sorted(got.touchpoints)


@pytest.fixture
def loaded(mysql_url):
    with database.make_engine(mysql_url).begin() as conn:
        ids = scenarios.load_section_4_6(conn)
    return mysql_url, ids


def test_connection_killed_mid_write_is_retried_and_result_equals_an_undisturbed_run(loaded, monkeypatch):
    url, _ = loaded
    run(url, T, LAST)
    undisturbed = rows(url)
    with database.make_engine(url).begin() as conn:
        conn.execute(tables.attribution_touchpoints.delete())
        conn.execute(tables.attribution_snapshots.delete())

    real_bulk_load = hour_rewrite.bulk_load
    kills = []

    def kill_then_load(conn, table, df, **kw):
        if table is tables.attribution_touchpoints and not kills:
            thread_id = conn.connection.dbapi_connection.thread_id()
            killer = raw_connection(url)
            with killer.cursor() as cur:
                cur.execute("KILL %s", (thread_id,))  # a real KILL from another connection
            killer.close()
            kills.append(thread_id)
        return real_bulk_load(conn, table, df, **kw)

    monkeypatch.setattr(hour_rewrite, "bulk_load", kill_then_load)
    monkeypatch.setenv("ATTRIBUTION_DB_RETRY_DELAY", "0.05")
    _, report = run(url, T, LAST)
    assert len(kills) == 1
    assert report["outcome"] == 0 and report["chunks_committed"] == 1
    assert rows(url) == undisturbed


def test_lock_wait_timeout_is_retried_until_the_other_transaction_lets_go(loaded, monkeypatch):
    url, ids = loaded
    run(url, T, LAST)
    before = rows(url)
    blocker = raw_connection(url)
    blocker.autocommit(False)
    with blocker.cursor() as cur:
        cur.execute("SET SESSION innodb_lock_wait_timeout = 50")
        cur.execute("SELECT snapshot_id FROM `202_attribution_snapshots` WHERE model_id = %s FOR UPDATE", (ids["assisted"],))
    release = threading.Timer(2.5, blocker.rollback)
    release.start()
    monkeypatch.setenv("ATTRIBUTION_DB_RETRY_DELAY", "0.2")
    real_connect = database.make_engine

    def short_lock_wait_engine(u, **kw):
        engine = real_connect(u, **kw)
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _short(dbapi_connection, _):
            with dbapi_connection.cursor() as cur:
                cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
        return engine

    monkeypatch.setattr(database, "make_engine", short_lock_wait_engine)
    started = time.monotonic()
    _, report = run(url, T, LAST)
    release.join()
    blocker.close()
    assert time.monotonic() - started > 2  # it really waited for the lock, failed, and retried
    assert report["outcome"] == 0
    assert rows(url) == before


def test_a_non_transient_error_fails_once_and_leaves_the_old_rows(loaded, capsys):
    url, _ = loaded
    run(url, T, LAST)
    with database.make_engine(url).begin() as conn:  # conversion 2's touchpoints are gone: the run must
        conn.exec_driver_sql("DELETE FROM `202_attribution_touchpoints` WHERE conv_id = 2")  # load them (D37)
    before = rows(url)
    with database.make_engine(url).begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_conv_2 BEFORE INSERT ON `202_attribution_touchpoints` FOR EACH ROW "
            "BEGIN IF NEW.conv_id = 2 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by test trigger'; END IF; END"
        )
    from attribution_pipeline.cli import main

    attempts = []
    real_write = hour_rewrite.write_chunk

    def counting(*a, **kw):
        attempts.append(1)
        return real_write(*a, **kw)

    hour_rewrite.write_chunk, saved = counting, hour_rewrite.write_chunk
    import attribution_pipeline.assets.writeback_run as asset_module

    asset_module.write_chunk, saved_asset = counting, asset_module.write_chunk
    try:
        code = main(["rebuild", "--db-url", url, "--start", str(T), "--end", str(LAST + HOUR), "--full"])
    finally:
        hour_rewrite.write_chunk, asset_module.write_chunk = saved, saved_asset
    assert code == 1
    assert attempts == [1]  # not retried
    err = capsys.readouterr()
    assert "refused by test trigger" in err.out + err.err
    assert rows(url) == before  # the rolled-back chunk left the old rows untouched


def test_held_group_keeps_its_rows_while_other_hours_and_models_are_written(loaded):
    url, ids = loaded
    run(url, T, LAST, journey_source="stored")
    with database.make_engine(url).begin() as conn:
        # a concurrent PHP writer left conversion 3's converting click twice in its stored journey
        scenarios.add_stored_journey(conn, 3, [(201, T + 3650), (201, T + 3650)])
        # and every other hour changes: a new payout for conversion 1 (hour T)
        conn.execute(update(tables.conversion_logs).where(tables.conversion_logs.c.conv_id == 1).values(click_payout=21))
        conn.execute(update(tables.attribution_snapshots).where(tables.attribution_snapshots.c.date_hour == T + HOUR)
                     .values(attributed_clicks=99))  # mark the held hour's rows to see that they stay
    _, report = run(url, T, LAST, journey_source="stored")
    assert report["outcome"] == 2
    held = {(h["model_id"], h["hour"]) for h in report["held"]}
    assert held == {(m, "2024-06-01-10:00") for m in ids.values()}
    assert all("converting_click" in h["reason"] for h in report["held"]), report["held"]
    snaps, _ = rows(url)
    assert {s[3] for s in snaps if s[2] == T + HOUR} == {99}  # held: old rows kept
    assert {s[5] for s in snaps if s[2] == T} == {"36.5000"}  # other hours written with new values


def test_writers_of_the_same_hours_are_serialised(loaded, capsys):
    url, _ = loaded
    holder = raw_connection(url)
    with holder.cursor() as cur:
        with database.make_engine(url).connect() as conn:
            cur.execute("SELECT GET_LOCK(%s, 0)", (locks.lock_name(conn, T + HOUR),))
    _, report = run(url, T, LAST, lock_timeout_seconds=1, expect_success=False)
    assert report["outcome"] == 1
    assert "LockTimeout" in report["rolled_back_chunks"][0]["reason"]
    assert rows(url) == ([], [])
    holder.close()  # releases the lock
    _, report = run(url, T, LAST, lock_timeout_seconds=1)
    assert report["outcome"] == 0 and rows(url)[0]


def test_rows_written_by_the_php_engine_are_reported(loaded):
    url, ids = loaded
    with database.make_engine(url).begin() as conn:
        conn.execute(insert(tables.attribution_snapshots).values(
            model_id=ids["last_touch"], user_id=1, scope_type="global", scope_id=None, date_hour=T,
            lookback_start=T + 900 - 86400, lookback_end=T + 900, attributed_clicks=1, attributed_conversions=1,
            attributed_revenue=20, attributed_cost=0.8, created_at=1))
    result, report = run(url, T, LAST)
    assert report["foreign_rows"] == 1
    check = next(e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                 and e.event_specific_data.check_name == "foreign_writes")
    assert not check.event_specific_data.passed
    assert check.event_specific_data.metadata["failing_hours"].value == ["2024-06-01-09:00"]
    _, report = run(url, T, LAST)
    assert report["foreign_rows"] == 0


def test_touchpoint_read_back_reads_only_the_id_range_the_chunk_inserted(mysql_url):
    """The read-back before commit scans ``(before, after]`` of the primary key: rows inserted later
    (ids above the range) are not read, even of the same snapshot, and rows of other snapshots in
    the range are filtered out; a replay of the statement later reads the same rows."""
    engine = database.make_engine(mysql_url)
    rows_ = [{"touchpoint_id": i, "snapshot_id": 7 if i != 4 else 8, "conv_id": 100 + i, "click_id": 1000 + i,
              "position": 0, "credit": "0.50000", "weight": "0.50000", "created_at": 1} for i in range(1, 11)]
    with engine.begin() as conn:
        conn.execute(insert(tables.attribution_touchpoints), rows_)
        assert stored_rows.max_touchpoint_id(conn) == 10
        got = stored_rows.inserted_touchpoints(conn, 2, 6, pl.Series([7]))
    assert got.get_column("conv_id").to_list() == [103, 105, 106]
    assert got.get_column("click_id").to_list() == [1003, 1005, 1006]
