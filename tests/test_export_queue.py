"""The export queue (D23, D24): files byte-compatible with PHP's worker, both schemas, per-row
validation, the atomic claim under two racing worker processes, the CLI. Each test has its own
MariaDB database (conftest's ``mysql_url``)."""

import json
import logging
import multiprocessing
from pathlib import Path

import openpyxl
from sqlalchemy import text

from attribution_pipeline.export_queue.export_files import csv_field, php_number
from attribution_pipeline.export_queue.worker import pending_exports, process_export, process_pending, queue_health
from export_queue_seed import (
    ALTERNATIVE_DDL, H0, add_export, add_snapshot, engine_for, export_row, queue_settings, seed_owners,
)

LOG = logging.getLogger("test_export_queue")

GOLDEN_CSV = (
    b"snapshot_id,model_id,scope_type,scope_id,date_hour,lookback_start,lookback_end,attributed_clicks,"
    b"attributed_conversions,attributed_revenue,attributed_cost,created_at\n"
    b"10,1,global,,1717200000,1717196400,1717203599,3,2,100,0,1717207200\n"
    b'9,1,"global ",,1717203600,1717200000,1717207199,0,0,0.0001,1234567.8912,1717210800\n'
    b"11,1,global,,1717203600,1717200000,1717207199,1,1,35.5,12.25,1717210800\n"
    b"12,1,global,,1717207200,1717203600,1717210799,0,0,0,0,1717214400\n"
)


def seed_golden(conn):
    """Model 1's global rows in [H0, H0 + 2h] (both ends inclusive, as PHP's BETWEEN), and rows
    that must stay out: other hours, another model, another scope, a global row with a scope id."""
    seed_owners(conn)
    add_snapshot(conn, 10, 1, H0, clicks=3, conversions=2, revenue="100.0000", cost="0.0000")
    add_snapshot(conn, 11, 1, H0 + 3600, clicks=1, conversions=1, revenue="35.5000", cost="12.2500")
    # 'global ' equals 'global' in MariaDB's PAD SPACE collation: PHP exports it too, quoted (a space)
    add_snapshot(conn, 9, 1, H0 + 3600, scope_type="global ", revenue="0.0001", cost="1234567.8912")
    add_snapshot(conn, 12, 1, H0 + 7200)
    add_snapshot(conn, 13, 1, H0 + 10800, revenue="1")  # after end_hour
    add_snapshot(conn, 14, 1, H0 - 3600, revenue="1")  # before start_hour
    add_snapshot(conn, 15, 5, H0, revenue="1")  # another model of the user
    add_snapshot(conn, 16, 1, H0, scope_type="campaign", scope_id=7, revenue="7")  # a campaign scope
    add_snapshot(conn, 17, 1, H0, scope_id=5, revenue="1")  # global type with a scope id: not global


def test_php_fputcsv_quoting_and_float_printing():
    assert [csv_field(v) for v in ("global", "", "a,b", 'say "hi"', "back\\\"slash", "tab\there", "line\nend",
                                   "cr\rx", "two words", "trail\\")] == [
        "global", "", '"a,b"', '"say ""hi"""', '"back\\"slash"', '"tab\there"', '"line\nend"', '"cr\rx"',
        '"two words"', '"trail\\"']
    from decimal import Decimal

    assert [php_number(Decimal(v)) for v in ("100.0000", "35.5000", "0.0000", "-2.5000", "0.0001",
                                             "99999999.9999")] == ["100", "35.5", "0", "-2.5", "0.0001",
                                                                   "99999999.9999"]
    assert php_number(1717200000) == "1717200000"


def test_csv_equals_php_bytes_and_xlsx_holds_the_same_numbers(mysql_url, tmp_path):
    engine = engine_for(mysql_url)
    with engine.begin() as conn:
        seed_golden(conn)
        csv_id = add_export(conn, scope_id=0)  # Q18: scope_id 0 is global
        xlsx_id = add_export(conn, fmt="Excel", scope_id=None)
        scoped_id = add_export(conn, scope_type="campaign", scope_id=7)
        empty_id = add_export(conn, scope_type="landing_page", scope_id=3, fmt="xls")
    settings = queue_settings(mysql_url, tmp_path)
    results = {r.export_id: r for r in process_pending(engine, settings, log=LOG)}
    assert {i: r.outcome for i, r in results.items()} == dict.fromkeys([csv_id, xlsx_id, scoped_id, empty_id],
                                                                       "completed")
    csv_path = Path(results[csv_id].file_path)
    assert csv_path.read_bytes() == GOLDEN_CSV
    assert csv_path.parent == tmp_path / "files"
    assert csv_path.name.startswith(f"attribution_export_{csv_id}_") and csv_path.suffix == ".csv"
    assert not [p for p in csv_path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    with engine.connect() as conn:
        row = export_row(conn, csv_id)
    assert (row["status"], row["rows_exported"], row["file_path"], row["last_error"]) == (
        "completed", 4, str(csv_path), None)
    assert row["started_at"] and row["completed_at"] and row["failed_at"] is None

    xlsx_path = Path(results[xlsx_id].file_path)
    assert xlsx_path.suffix == ".xlsx"
    sheet = openpyxl.load_workbook(xlsx_path, read_only=True).worksheets[0]
    cells = [list(r) for r in sheet.iter_rows()]
    values = [[c.value for c in r] for r in cells]
    expected = [line.split(",") for line in GOLDEN_CSV.decode().replace('"global "', "global ").splitlines()]
    assert values[0] == expected[0]
    assert len(values) == len(expected)
    for got, want in zip(values[1:], expected[1:]):
        assert got[2] == want[2] and got[3] is None
        numeric = [i for i in range(12) if i not in (2, 3)]
        assert [got[i] for i in numeric] == [float(want[i]) for i in numeric]
    assert all(cells[1][i].data_type == "n" for i in (0, 1, 4, 7, 8, 9, 10, 11))

    scoped = Path(results[scoped_id].file_path).read_bytes().splitlines()
    assert scoped[1] == b"16,1,campaign,7,1717200000,1717196400,1717203599,0,0,7,0,1717207200" and len(scoped) == 2
    assert results[empty_id].rows_exported == 0  # a scope without rows completes empty, as PHP's


MALFORMED = {  # the row's fields -> the reason it fails with
    "unknown_format": {"fmt": "json"},
    "unknown_scope": {"scope_type": "region"},
    "scope_id_required": {"scope_type": "campaign", "scope_id": None},
    "unknown_status": {"status": "PENDING"},  # matches status='pending' in MariaDB's collation
    "unknown_status ": {"status": "pending "},  # so does a trailing space (PAD SPACE)
    "empty_range": {"start": H0, "end": H0},
    "empty_range ": {"start": H0 + 7200, "end": H0},
    "model_not_found": {"model_id": 999},
    "model_not_owned": {"model_id": 2},
    "user_deleted": {"user_id": 3, "model_id": 3},
    "user_not_found": {"user_id": 99},
}


def test_malformed_rows_fail_with_their_reasons_while_the_others_complete(mysql_url, tmp_path):
    engine = engine_for(mysql_url)
    with engine.begin() as conn:
        seed_golden(conn)
        good = [add_export(conn)]
        bad = {add_export(conn, **fields): reason.strip() for reason, fields in MALFORMED.items()}
        good.append(add_export(conn, fmt="XLSX"))
        queued = add_export(conn, status="queued")  # v3's in-memory status: not pending, never touched
    results = {r.export_id: r for r in process_pending(engine, queue_settings(mysql_url, tmp_path), log=LOG)}
    assert set(results) == set(good) | set(bad)
    with engine.connect() as conn:
        rows = {i: export_row(conn, i) for i in [*good, *bad, queued]}
        audits = conn.execute(text("SELECT metadata FROM 202_attribution_audit WHERE action = 'export_processed'"))
        audit_ids = sorted(json.loads(m)["export_id"] for (m,) in audits)
        stamp = conn.execute(text("SELECT last_execution_time FROM 202_cronjob_logs WHERE id = 3")).scalar()
    for export_id in good:
        assert rows[export_id]["status"] == "completed" and rows[export_id]["rows_exported"] == 4
    for export_id, reason in bad.items():
        row = rows[export_id]
        assert (row["status"], row["last_error"].split(":")[0]) == ("failed", reason), row
        assert row["failed_at"] and row["started_at"] and row["file_path"] is None
        assert results[export_id].reason.startswith(reason)
    assert rows[queued]["status"] == "queued"
    assert audit_ids == sorted([*good, *bad])
    assert stamp and pending_exports(engine) == []


def test_alternative_schema_end_to_end(mysql_url, tmp_path):
    engine = engine_for(mysql_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE 202_attribution_exports"))
        conn.execute(text(ALTERNATIVE_DDL))
        seed_golden(conn)
        first = add_export(conn, fmt="xls", scope_id=None, alternative=True, queued_at=2000)
        second = add_export(conn, fmt="csv", alternative=True, queued_at=1000)
        bad = add_export(conn, fmt="pdf", alternative=True, queued_at=3000)
    assert [p.export_id for p in pending_exports(engine)] == [second, first, bad]  # by created_at
    assert [p.queued_at for p in pending_exports(engine)] == [1000, 2000, 3000]
    assert queue_health(engine, 3600) == (3, 2600, 0, 0, 0)
    settings = queue_settings(mysql_url, tmp_path)
    results = {r.export_id: r for r in process_pending(engine, settings, log=LOG)}
    assert {i: r.outcome for i, r in results.items()} == {first: "completed", second: "completed", bad: "failed"}
    with engine.connect() as conn:
        rows = {i: export_row(conn, i) for i in (first, second, bad)}
    assert Path(rows[second]["file_path"]).read_bytes() == GOLDEN_CSV
    assert Path(rows[first]["file_path"]).suffix == ".xlsx"
    for export_id in (first, second):
        row = rows[export_id]
        assert row["status"] == "completed" and row["error_message"] is None
        assert len(row["download_token"]) == 64 and int(row["download_token"], 16) >= 0
        assert row["last_attempted_at"] and row["completed_at"]
    assert rows[first]["download_token"] != rows[second]["download_token"]
    assert rows[bad]["status"] == "failed" and rows[bad]["error_message"].startswith("unknown_format")
    assert rows[bad]["download_token"] is None


def test_a_claimed_export_is_not_processed_again(mysql_url, tmp_path):
    engine = engine_for(mysql_url)
    with engine.begin() as conn:
        seed_golden(conn)
        export_id = add_export(conn)
    settings = queue_settings(mysql_url, tmp_path)
    assert process_export(engine, settings, export_id, log=LOG).outcome == "completed"
    again = process_export(engine, settings, export_id, log=LOG)
    assert (again.outcome, again.reason) == ("skipped", "already claimed")
    assert process_export(engine, settings, 12345, log=LOG).outcome == "skipped"
    assert len(list((tmp_path / "files").iterdir())) == 1


def _race_worker(url, files_dir, home, barrier, results):
    import logging as stdlib_logging

    from attribution_pipeline.export_queue.worker import process_pending as run_pending
    from attribution_pipeline.settings import Settings
    from attribution_pipeline.storage.database import Database

    settings = Settings(home=Path(home), db_url=url, export_files_dir=Path(files_dir))
    seen = []

    def wait_for_the_other(pending):  # both workers have read the pending rows before either claims
        seen.append(len(pending))
        barrier.wait(timeout=120)

    done = run_pending(Database.from_settings(settings), settings, log=stdlib_logging.getLogger("race"),
                       before_claim=wait_for_the_other)
    results.put((seen[0], [(r.export_id, r.outcome) for r in done]))


def test_two_worker_processes_process_each_export_exactly_once(mysql_url, tmp_path):
    engine = engine_for(mysql_url)
    with engine.begin() as conn:
        seed_golden(conn)
        ids = [add_export(conn, fmt="csv" if i % 2 else "xlsx", queued_at=1000 + i) for i in range(50)]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_race_worker, args=(mysql_url, str(tmp_path / "files"), str(tmp_path / "home"),
                                                      barrier, results)) for _ in range(2)]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=300) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert [seen for seen, _ in outcomes] == [50, 50]  # each read all 50 before either claimed
    completed = sorted(i for _, done in outcomes for i, outcome in done if outcome == "completed")
    skipped = sorted(i for _, done in outcomes for i, outcome in done if outcome == "skipped")
    assert completed == ids and skipped == ids  # each export completed once, by one worker
    assert len(list((tmp_path / "files").iterdir())) == 50
    with engine.connect() as conn:
        audits = [json.loads(m)["export_id"] for (m,) in conn.execute(
            text("SELECT metadata FROM 202_attribution_audit WHERE action = 'export_processed'"))]
        statuses = conn.execute(text("SELECT status, COUNT(*) FROM 202_attribution_exports GROUP BY status")).all()
    assert sorted(audits) == ids
    assert [tuple(s) for s in statuses] == [("completed", 50)]


def test_cli_exports_run_once_and_list(mysql_url, capsys):
    from attribution_pipeline.cli import main

    engine = engine_for(mysql_url)
    with engine.begin() as conn:
        seed_golden(conn)
        add_export(conn, webhook_url=None, secret="never-shown-secret")
    assert main(["exports", "run", "--once", "--db-url", mysql_url]) == 0
    assert "1 completed, 0 failed" in capsys.readouterr().out
    assert main(["exports", "run", "--once", "--db-url", mysql_url]) == 0  # an empty queue
    with engine.begin() as conn:
        add_export(conn)
        bad = add_export(conn, fmt="json")
    assert main(["exports", "run", "--once", "--db-url", mysql_url]) == 2
    out = capsys.readouterr().out
    assert f"export {bad}: failed: unknown_format" in out and "1 completed, 1 failed" in out
    assert main(["exports", "list", "--limit", "2", "--db-url", mysql_url]) == 0
    listed = capsys.readouterr().out
    assert "canonical export schema" in listed and f"{bad:>6}  failed" in listed and "unknown_format" in listed
    assert "never-shown-secret" not in listed and len(listed.splitlines()) == 4
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE 202_attribution_exports"))
    assert main(["exports", "run", "--once", "--db-url", mysql_url]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_xlsx_past_the_row_limit_fails_named(mysql_url, tmp_path, monkeypatch):
    from attribution_pipeline.export_queue import export_files

    monkeypatch.setattr(export_files, "XLSX_MAX_ROWS", 3)  # a header and 2 data rows at most; the export has 4
    engine = engine_for(mysql_url)
    with engine.begin() as conn:
        seed_golden(conn)
        export_id = add_export(conn, fmt="xlsx")
    result = process_export(engine, queue_settings(mysql_url, tmp_path), export_id, log=LOG)
    assert result.outcome == "failed" and result.reason.startswith("xlsx_row_limit")
    with engine.connect() as conn:
        assert export_row(conn, export_id)["last_error"].startswith("xlsx_row_limit")
    assert not list((tmp_path / "files").iterdir())


def test_stamping_a_missing_cron_log_row_from_two_transactions_never_deadlocks(mysql_url):
    """The poll stamp is one upsert. Transaction B first takes the gap lock an UPDATE of the missing
    row takes; A's stamp then waits on it; B's own stamp must still commit and A's after it (an
    UPDATE-then-INSERT stamp would have both hold the gap lock and deadlock on their INSERTs)."""
    import threading

    from attribution_pipeline.export_queue.queue_ops import stamp_poll_conn

    engine = engine_for(mysql_url)
    with engine.begin() as conn:
        seed_owners(conn)
        conn.execute(text("DELETE FROM 202_cronjob_logs"))
    errors = []

    def stamp_a():
        try:
            with engine.begin() as conn_a:
                stamp_poll_conn(conn_a, now=1000)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with engine.begin() as conn_b:
        conn_b.execute(text("SELECT * FROM 202_cronjob_logs WHERE id = 3 FOR UPDATE"))  # the gap lock
        a = threading.Thread(target=stamp_a)
        a.start()
        a.join(timeout=1)  # A now waits on B's gap lock
        stamp_poll_conn(conn_b, now=2000)
    a.join(timeout=60)
    assert not a.is_alive() and errors == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, last_execution_time FROM 202_cronjob_logs")).all() == [(3, 1000)]
