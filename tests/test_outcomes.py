"""Outcomes that match what was committed (D18, D19): a run that commits some chunks and fails on
another says so (exit 2, committed and uncommitted hours, the reason), its audit rows and cron
stamp cover exactly the committed chunks, and `attribution resume` writes only the others."""

import json

import dagster as dg
import pytest
from sqlalchemy import func, select

import scenarios
from attribution_pipeline.cli import main
from attribution_pipeline.storage import database, tables
from pipeline import HOUR

T = scenarios.T
REFUSE_CONV_3 = (
    "CREATE TRIGGER refuse_conv_3 BEFORE INSERT ON `202_attribution_touchpoints` FOR EACH ROW "
    "BEGIN IF NEW.conv_id = 3 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by test trigger'; END IF; END"
)


def audit_rows(url):
    with database.make_engine(url).connect() as conn:
        return conn.execute(select(tables.attribution_audit.c.model_id, tables.attribution_audit.c.metadata)).all()


def snapshot_hours(url):
    """Global rows per hour; an hour holding only scoped rows (D31) would show as 0."""
    with database.make_engine(url).connect() as conn:
        snaps = tables.attribution_snapshots
        every = dict.fromkeys(conn.execute(select(snaps.c.date_hour).distinct()).scalars(), 0)
        return every | dict(conn.execute(select(snaps.c.date_hour, func.count()).where(snaps.c.scope_type == "global")
                                         .group_by(snaps.c.date_hour)).all())


def test_a_chunk_that_fails_after_others_committed_exits_2_and_resume_writes_only_it(mysql_url, tmp_path,
                                                                                   monkeypatch, capsys):
    with database.make_engine(mysql_url).begin() as conn:
        ids = scenarios.load_section_4_6(conn)
        conn.exec_driver_sql(REFUSE_CONV_3)  # conversion 3 converts in the second hour
    monkeypatch.setenv("ATTRIBUTION_CHUNK_HOURS", "1")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    args = ["--db-url", mysql_url]

    code = main(["rebuild", *args, "--start", str(T), "--end", str(T + 3 * HOUR)])
    out = capsys.readouterr()
    assert code == 2, out
    assert "nothing was committed" not in out.out + out.err
    assert "committed hours: 2024-06-01-09:00 .. 2024-06-01-09:00, 2024-06-01-11:00 .. 2024-06-01-11:00" in out.out
    assert "not committed 2024-06-01-10:00 .. 2024-06-01-10:00: chunk rolled back:" in out.out
    assert "refused by test trigger" in out.out
    assert "outcome 2: committed in part" in out.out and "every check passed" not in out.out
    assert snapshot_hours(mysql_url) == {T: len(ids), T + 2 * HOUR: len(ids)}
    # one audit row per (model, committed chunk), committed with the chunk
    audits = audit_rows(mysql_url)
    assert sorted(m for m, _ in audits) == sorted(list(ids.values()) * 2)
    assert {json.loads(meta)["hours_processed"] for _, meta in audits} == {1}

    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster"))
    failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert len(failed) == 1
    (report_file,) = (tmp_path / "attribution_home" / "reports").glob("*.json")
    report = json.loads(report_file.read_text())
    assert (report["outcome"], report["chunks_committed"], report["run_id"]) == (2, 2, failed[0].run_id)
    assert [(c["first_hour"], c["last_hour"]) for c in report["uncommitted_hours"]] == [
        ("2024-06-01-10:00", "2024-06-01-10:00")]

    with database.make_engine(mysql_url).begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse_conv_3")
    code = main(["resume", *args, failed[0].run_id])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 chunk(s) committed by the run it resumes" in out
    assert snapshot_hours(mysql_url) == {T: len(ids), T + HOUR: len(ids), T + 2 * HOUR: len(ids)}
    audits = audit_rows(mysql_url)
    assert len(audits) == 3 * len(ids)  # the resumed chunks were not written (nor audited) twice
    runs = instance.get_runs()
    assert runs[0].tags["attribution/resume_of"] == failed[0].run_id


def test_warning_checks_never_contradict_the_outcome_line(mysql_url, capsys):
    with database.make_engine(mysql_url).begin() as conn:
        scenarios.load_section_4_6(conn)
        scenarios.add_conversion(conn, 50, 55555, 10, 1, "99", T + 100, T + 200)  # orphan: a WARN check
    code = main(["rebuild", "--db-url", mysql_url, "--start", str(T), "--end", str(T + 3 * HOUR)])
    out = capsys.readouterr().out
    assert code == 0
    assert "WARN conversions.orphan_conversions" in out
    assert "every check passed" not in out
    assert "outcome 0: everything selected was written; 1 warning check(s) about the data are listed above" in out


def test_gap_scan_names_hours_without_snapshots_or_files_and_is_not_part_of_a_run(mysql_url, private_home,
                                                                                  capsys):
    with database.make_engine(mysql_url).begin() as conn:
        scenarios.load_section_4_6(conn)
    args = ["--db-url", mysql_url]
    assert main(["rebuild", *args, "--start", str(T), "--end", str(T + 3 * HOUR)]) == 0
    out = capsys.readouterr().out
    assert "latest_hour_fresh" not in out and "history_gaps" not in out  # neither runs inside a run
    assert main(["gaps", *args]) == 0
    assert "no gaps" in capsys.readouterr().out

    with database.make_engine(mysql_url).begin() as conn:
        scenarios.add_click(conn, 900, 1, 10, T + 5 * HOUR + 10)
        scenarios.add_conversion(conn, 90, 900, 10, 1, "3", T + 5 * HOUR + 10, T + 5 * HOUR + 60)
    (private_home / "exports" / "touchpoints" / "date=2024-06-01" / "hour=10" / "part.parquet").unlink()
    assert main(["gaps", *args]) == 2
    out = capsys.readouterr().out
    assert "user 1 2024-06-01-14:00: 1 conversion(s), no snapshots" in out
    assert "2024-06-01-10:00: snapshots in MySQL, no Parquet file of touchpoints" in out
    assert "gaps found: 1 user-hour(s) without snapshots, 1 hour(s) without Parquet files" in out


def test_every_outage_shape_is_transient_and_real_errors_are_not():
    import pymysql
    from sqlalchemy.exc import OperationalError

    from attribution_pipeline.storage.retries import transient_error_code as code

    wrapped = OperationalError("SELECT 1", {}, pymysql.err.OperationalError(1927, "Connection was killed"))
    assert [code(e) for e in (
        pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111])"),
        wrapped,
        pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
        pymysql.err.OperationalError(1053, "Server shutdown in progress"),
        RuntimeError("timed out waiting for connection: MySqlError { ERROR 1927 (70100): Connection was killed }"),
        RuntimeError("IoError(Custom { kind: UnexpectedEof, error: \"unexpected end of file\" })"),
        RuntimeError('Error(Io(Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }))'),
        ConnectionResetError(104, "Connection reset by peer"),
    )] == [2003, 1927, 2013, 1053, 1927, 2013, 2003, 2013]
    assert [code(e) for e in (
        pymysql.err.OperationalError(1045, "Access denied for user 'x'"),
        pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax"),
        RuntimeError("timed out waiting for connection: MySqlError { ERROR 1049 (42000): Unknown database 'x' }"),
        ValueError("value 1e12 out of range"),
    )] == [None, None, None, None]


def test_retries_stop_at_the_budget_and_are_counted():
    import time

    import pymysql

    from attribution_pipeline.storage.retries import RetryPolicy

    policy = RetryPolicy(attempts=100, base_delay=0.05, budget_seconds=0.5, max_delay=0.1)
    calls = []

    def down():
        calls.append(time.monotonic())
        raise pymysql.err.OperationalError(2003, "Can't connect")

    started = time.monotonic()
    try:
        policy.run(down, what="read clicks")
    except pymysql.err.OperationalError:
        pass
    assert 0.3 < time.monotonic() - started < 1.0 and len(calls) >= 4
    assert policy.counter.total == len(calls) - 1 and policy.counter.by_what == {"read": len(calls) - 1}
    flaky = iter([pymysql.err.OperationalError(2013, "Lost connection"), None])

    def once():
        error = next(flaky)
        if error:
            raise error
        return "rows"

    assert policy.run(once, what="write 2024-06-01-09:00..2024-06-01-09:00") == "rows"
    assert policy.counter.by_what["write"] == 1


@pytest.mark.parametrize("during_writeback", [False, True], ids=["export-step", "exported-as-committed"])
def test_hours_committed_by_a_failed_run_are_exported_by_the_next_run(mysql_url, private_home, during_writeback):
    """Without D35 a failed run never reaches its export step, and the next run catches up the hours
    it committed; with D35 the failed run exported them as they committed."""
    from pipeline import run

    from attribution_pipeline.exports.layout import exported_hours

    with database.make_engine(mysql_url).begin() as conn:
        scenarios.load_section_4_6(conn)
        conn.exec_driver_sql(REFUSE_CONV_3)
    result, report = run(mysql_url, T, T + 2 * HOUR, chunk_hours=1, expect_success=False,
                         export_during_writeback=during_writeback)
    assert not result.success and report["outcome"] == 2
    assert report["committed_hours"] == [["2024-06-01-09:00", "2024-06-01-09:00"], ["2024-06-01-11:00", "2024-06-01-11:00"]]
    exports = private_home / "exports"
    assert exported_hours(exports) == ([T, T + 2 * HOUR] if during_writeback else [])
    with database.make_engine(mysql_url).begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse_conv_3")
    result, report = run(mysql_url, T + HOUR, T + HOUR, chunk_hours=1,  # only the hour that failed
                         export_during_writeback=during_writeback)
    metadata = next(e.event_specific_data.materialization.metadata for e in result.all_events
                    if e.event_type_value == "ASSET_MATERIALIZATION"
                    and e.event_specific_data.materialization.asset_key.to_user_string() == "attribution_exports")
    caught_up = 0 if during_writeback else 2
    assert metadata["hours_caught_up"].value == caught_up and metadata["hours_left_to_catch_up"].value == 0
    check = next(e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                 and e.event_specific_data.check_name == "export_reconciliation")
    assert check.passed and check.metadata["hours_checked"].value == 1 + caught_up  # read back
    for table in ("snapshots", "touchpoints", "journeys"):
        assert exported_hours(exports, table) == [T, T + HOUR, T + 2 * HOUR]
