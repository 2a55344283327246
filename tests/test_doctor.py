"""``attribution doctor``, ``init-db --add-indexes`` and the ``source_health`` check (D28) on
MariaDB: a missing index is a named warning (exit 2) until ``init-db --add-indexes`` adds it; a
healthy database exits 0; missing tables or columns are errors (exit 1); the check evaluates in
process and fails with the finding in its metadata."""

import time
from contextlib import contextmanager

import dagster as dg
from sqlalchemy import text

from attribution_pipeline.assets.source_health import HEALTH_CHECK, HEALTH_JOB
from attribution_pipeline.automation import alerts, sensors
from attribution_pipeline.cli import main
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.storage import database, tables
from conftest import _server_connect
from pipeline import settings
from scenarios import add_model, add_user

MISSING = "index_missing:202_clicks(user_id, click_time)"


def doctor(url, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["doctor", "--db-url", url])
    return code, capsys.readouterr().out


def stamp_cron(url, when: int) -> None:
    with database.make_engine(url).begin() as conn:
        conn.execute(tables.cronjob_logs.insert(), {"id": tables.CRONJOB_LOG_ID_ATTRIBUTION, "last_execution_time": when})


def drop_index(url) -> None:
    with database.make_engine(url).begin() as conn:
        conn.execute(text("ALTER TABLE `202_clicks` DROP INDEX `user_click_time`"))


@contextmanager
def packet_at_least_32_mib():
    """The server's max_allowed_packet raised to 32 MiB for the test (Debian's default is 16),
    then put back."""
    server = _server_connect()
    with server.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_allowed_packet")
        before = int(cur.fetchone()[0])
        if before < 32 * 1024 * 1024:
            cur.execute("SET GLOBAL max_allowed_packet = 33554432")
    try:
        yield
    finally:
        with server.cursor() as cur:
            if before < 32 * 1024 * 1024:
                cur.execute("SET GLOBAL max_allowed_packet = %s", (before,))
        server.close()


def test_missing_index_is_a_warning_until_init_db_adds_it(mysql_url, capsys):
    drop_index(mysql_url)
    code, out = doctor(mysql_url, capsys)
    assert code == 2
    assert f"[warning] {MISSING}" in out
    assert "fix: attribution init-db --add-indexes" in out and "CREATE INDEX user_click_time ON `202_clicks`" in out
    assert main(["init-db", "--add-indexes", "--db-url", mysql_url]) == 0
    assert "added index user_click_time on 202_clicks(user_id, click_time)" in capsys.readouterr().out
    code, out = doctor(mysql_url, capsys)
    assert MISSING not in out and "index_missing" not in out
    assert main(["init-db", "--add-indexes", "--db-url", mysql_url]) == 0
    assert "every recommended index exists" in capsys.readouterr().out


def test_a_healthy_database_exits_0(mysql_url, capsys):
    assert main(["init-db", "--add-indexes", "--db-url", mysql_url]) == 0
    stamp_cron(mysql_url, int(time.time()) - 600)
    with packet_at_least_32_mib():
        code, out = doctor(mysql_url, capsys)
    assert code == 0, out
    assert "0 error(s), 0 warning(s): healthy" in out
    assert "[info] partitioning:202_attribution_snapshots: not partitioned" in out
    assert "[info] server_version: mariadb" in out


def test_errors_exit_1(mysql_url, capsys):
    with database.make_engine(mysql_url).begin() as conn:
        conn.execute(text("DROP TABLE `202_attribution_audit`"))
        conn.execute(text("ALTER TABLE `202_conversion_logs` DROP COLUMN `deleted`"))
        add_user(conn, 7)
        add_model(conn, 1, 7, "last_touch", slug="a")
        add_model(conn, 2, 7, "linear", slug="b")
        conn.execute(text("UPDATE `202_attribution_models` SET is_default = 1"))
    stamp_cron(mysql_url, int(time.time()) - 5 * 3600)
    code, out = doctor(mysql_url, capsys)
    assert code == 1
    assert "[error] table_missing:202_attribution_audit" in out and "fix: attribution init-db" in out
    assert "[error] column_missing:202_conversion_logs.deleted" in out
    assert "ALTER TABLE `202_conversion_logs` ADD COLUMN `deleted` TINYINT(4);" in out
    assert "[warning] several_default_models:user 7" in out and "AND model_id <> 2;" in out
    assert "[warning] attribution_cron: the last attribution run committed 5.0 h ago" in out


class Recorder(alerts.Alerter):
    """An alert sender that keeps what it is given."""

    sent: list = []

    def send(self, logger, payload: dict) -> bool:
        Recorder.sent.append(payload)
        return True


def test_source_health_check_fails_with_the_finding_in_its_metadata(mysql_url):
    drop_index(mysql_url)
    job = build_definitions(settings(mysql_url)).resolve_job_def(HEALTH_JOB)
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(raise_on_error=False, instance=instance)
    assert result.success
    evaluation = next(e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert evaluation.check_name == HEALTH_CHECK and evaluation.asset_key.path == ["prosper202_database"]
    assert not evaluation.passed
    problems = evaluation.metadata["problems"].value
    assert any(p["name"] == MISSING and "init-db --add-indexes" in p["fix"] for p in problems)
    assert MISSING in evaluation.description
    # ops hear of it: the check-failure alert sensor sends it (D28)
    Recorder.sent.clear()
    context = dg.build_run_status_sensor_context(
        sensor_name="attribution_check_failure_alert", dagster_event=result.get_run_success_event(),
        dagster_instance=instance, dagster_run=result.dagster_run,
        resources={"alerts": Recorder(), "settings": settings(mysql_url)})
    sensors.attribution_check_failure_alert(context)
    [payload] = Recorder.sent
    assert payload["job"] == HEALTH_JOB
    assert [(c["asset"], c["check"], c["severity"]) for c in payload["failed_checks"]] == [
        ("prosper202_database", HEALTH_CHECK, "WARN")]
