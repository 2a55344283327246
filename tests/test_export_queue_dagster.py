"""The export queue in Dagster (issue 18): the ``attribution_export_queue`` sensor stamps System Checks'
cron row 3 on every tick and asks for one run per pending export; ``attribution_export_job``
processes one export per run (completed; ``already claimed`` the second time; a red run for a
failed export); the queue's two health checks are recorded without a run and alerted once when
they turn red, once when they turn green. Real MariaDB (conftest's ``mysql_url``), real local
HTTP receivers."""

import http.server
import json
import threading
import time

import dagster as dg
import pytest
from sqlalchemy import text

from attribution_pipeline.automation.alerts import Alerter
from attribution_pipeline.automation.export_queue_health import (
    PENDING_AGE_CHECK,
    QUEUE_KEY,
    WEBHOOK_FAILURES_CHECK,
    evaluate_queue_health,
)
from attribution_pipeline.automation.export_queue_runs import (
    EXPORT_JOB_NAME,
    ExportFailed,
    attribution_export_queue,
    export_run_config,
)
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.export_queue.queue_ops import QueueHealth
from attribution_pipeline.storage.database import Database
from export_queue_seed import H0, add_export, add_snapshot, engine_for, export_row, queue_settings, seed_owners

SECRET, HEADER_VALUE = "whsec-never-shown-7", "hdr-never-shown-9"


class Receiver:
    """A local HTTP server (127.0.0.1): records every POSTed body and its headers, answers ``status``."""

    def __init__(self, status=200):
        self.bodies: list[dict] = []
        self.status = status
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.bodies.append({"json": json.loads(body), "headers": dict(self.headers)})
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def queue(mysql_url, tmp_path):
    """(settings, engine) of a fresh database with users 1-3, models 1, 2, 3, 5 and model 1's rows."""
    engine = engine_for(mysql_url)
    with engine.begin() as conn:
        seed_owners(conn)
        for i, hour in enumerate((H0, H0 + 3600, H0 + 7200)):
            add_snapshot(conn, 10 + i, 1, hour, clicks=i + 1, conversions=1, revenue="35.5000", cost="1.0000")
    yield queue_settings(mysql_url, tmp_path, webhook_allow_hosts=("127.0.0.1",)), engine
    engine.dispose()


def tick(settings, instance, cursor=None):
    """One evaluation of the sensor, with the resources the definitions give it."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"db": Database.from_settings(settings),
                                                 "alerts": Alerter.from_settings(settings)})
    return attribution_export_queue(context)


def execute(settings, instance, export_id):
    job = build_definitions(settings).resolve_job_def(EXPORT_JOB_NAME)
    return job.execute_in_process(run_config=export_run_config(export_id), instance=instance, raise_on_error=False)


def stamp(engine):
    with engine.connect() as conn:
        return conn.execute(text("SELECT last_execution_time FROM 202_cronjob_logs WHERE id = 3")).scalar()


def output_metadata(result) -> dict:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.metadata.items()}


def run_log_text(instance, run_id) -> str:
    return "\n".join(dg.serialize_value(r.event_log_entry) for r in instance.get_records_for_run(run_id).records)


def latest_check(instance, name):
    key = dg.AssetCheckKey(QUEUE_KEY, name)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
    return None if record is None else record.event.dagster_event.event_specific_data


# ------------------------------------------------------------------------------------------
# The sensor: the System Checks stamp, one run per pending export
# ------------------------------------------------------------------------------------------


def test_a_tick_on_an_empty_queue_stamps_cron_row_3_and_asks_for_nothing(queue):
    settings, engine = queue
    before = int(time.time())
    with dg.instance_for_test() as instance:
        result = tick(settings, instance)
        assert isinstance(result, dg.SensorResult) and not result.run_requests
        assert "no pending export" in result.skip_reason.skip_message
        assert stamp(engine) >= before
        assert latest_check(instance, PENDING_AGE_CHECK).passed  # recorded on the first tick
        assert latest_check(instance, WEBHOOK_FAILURES_CHECK).passed


def test_one_run_request_per_pending_export_keyed_by_id_and_queued_at(queue):
    settings, engine = queue
    now = int(time.time())
    with engine.begin() as conn:
        first = add_export(conn, queued_at=now - 20)
        second = add_export(conn, queued_at=now - 10, fmt="xlsx")
        done = add_export(conn, status="completed", queued_at=now - 30)
        failed = add_export(conn, status="failed", queued_at=now - 30)
    with dg.instance_for_test() as instance:
        requests = tick(settings, instance).run_requests
        assert [r.run_key for r in requests] == [f"{first}:{now - 20}", f"{second}:{now - 10}"]
        assert requests[0].run_config == {"ops": {"process_queued_export": {"config": {"export_id": first}}}}
        assert requests[1].tags == {"attribution/kind": "export", "attribution/export_id": str(second),
                                "dagster/priority": "5"}
        assert not {done, failed} & {r.run_config["ops"]["process_queued_export"]["config"]["export_id"]
                                     for r in requests}
        with engine.begin() as conn:  # the first is processed; the failed one is reset to pending
            conn.execute(text("UPDATE 202_attribution_exports SET status = 'completed' WHERE export_id = :i"),
                         {"i": first})
            conn.execute(text("UPDATE 202_attribution_exports SET status = 'pending', queued_at = :q "
                              "WHERE export_id = :i"), {"i": failed, "q": now})
        keys = [r.run_key for r in tick(settings, instance).run_requests]
        assert keys == [f"{second}:{now - 10}", f"{failed}:{now}"]  # a new queued_at: a new run


def test_a_broken_database_skips_the_tick_with_the_url_masked(queue):
    settings, _ = queue
    broken = settings.replace(db_url="mysql+pymysql://root:pw-never-shown@127.0.0.1:1/prosper202")
    with dg.instance_for_test() as instance:
        result = tick(broken, instance)
    assert isinstance(result, dg.SkipReason)
    assert "could not be polled" in result.skip_message and "OperationalError" in result.skip_message
    assert "pw-never-shown" not in result.skip_message and "***" in result.skip_message


# ------------------------------------------------------------------------------------------
# The job: one export per run
# ------------------------------------------------------------------------------------------


def test_the_run_completes_the_export_and_a_second_run_finds_it_already_claimed(queue, receiver):
    settings, engine = queue
    with engine.begin() as conn:
        export_id = add_export(conn, webhook_url=receiver.url, secret=SECRET,
                               headers=json.dumps({"X-Hook-Token": HEADER_VALUE}))
    with dg.instance_for_test() as instance:
        [request] = tick(settings, instance).run_requests
        result = execute(settings, instance, export_id)
        assert result.success
        with engine.connect() as conn:
            row = export_row(conn, export_id)
        assert (row["status"], row["rows_exported"], row["webhook_status_code"]) == ("completed", 3, 200)
        metadata = output_metadata(result)
        assert metadata["outcome"] == "completed" and metadata["rows_exported"] == 3
        assert metadata["webhook_attempts"] == 1 and metadata["webhook_status_code"] == 200
        assert metadata["file_name"] == row["file_path"].rsplit("/", 1)[-1]
        assert instance.get_run_by_id(result.run_id).tags["attribution/export_outcome"] == "completed"
        assert len(receiver.bodies) == 1 and receiver.bodies[0]["headers"]["X-Hook-Token"] == HEADER_VALUE
        logged = run_log_text(instance, result.run_id)
        assert SECRET not in logged and HEADER_VALUE not in logged and receiver.url not in logged

        again = execute(settings, instance, export_id)
        assert again.success and "already claimed" in run_log_text(instance, again.run_id)
        assert output_metadata(again)["outcome"] == "skipped"
        with engine.connect() as conn:
            assert export_row(conn, export_id) == row  # nothing changed
            audits = conn.execute(text("SELECT COUNT(*) FROM 202_attribution_audit "
                                       "WHERE action = 'export_processed'")).scalar()
        assert audits == 1 and len(receiver.bodies) == 1
        assert tick(settings, instance).run_requests == []


def test_an_invalid_export_fails_the_run_with_its_reason_on_the_row(queue):
    settings, engine = queue
    with engine.begin() as conn:
        export_id = add_export(conn, model_id=2)  # model 2 belongs to user 2
    with dg.instance_for_test() as instance:
        result = execute(settings, instance, export_id)
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        error = failure.step_failure_data.error
        assert error.cls_name == ExportFailed.__name__ and "model_not_owned" in error.message
        assert failure.step_failure_data.user_failure_data.metadata["outcome"].value == "failed"
        assert instance.get_run_by_id(result.run_id).tags["attribution/export_outcome"] == "failed"
    with engine.connect() as conn:
        row = export_row(conn, export_id)
    assert row["status"] == "failed" and row["last_error"].startswith("model_not_owned")


# ------------------------------------------------------------------------------------------
# Health: two checks recorded without a run, alerted once per change
# ------------------------------------------------------------------------------------------


def test_an_old_pending_export_fails_the_age_check_and_alerts_once_then_recovers(queue, receiver):
    settings, engine = queue
    settings = settings.replace(alert_webhook_url=receiver.url)
    with engine.begin() as conn:
        export_id = add_export(conn, queued_at=int(time.time()) - 600)
    with dg.instance_for_test() as instance:
        result = tick(settings, instance)
        evaluation = latest_check(instance, PENDING_AGE_CHECK)
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert evaluation.metadata["pending_count"].value == 1
        assert evaluation.metadata["oldest_pending_age_seconds"].value >= 600
        assert len(receiver.bodies) == 1
        alert = receiver.bodies[0]["json"]
        assert alert["kind"] == "check_failure"
        assert [(c["asset"], c["check"]) for c in alert["failed_checks"]] == [("attribution_export_queue",
                                                                               PENDING_AGE_CHECK)]
        result = tick(settings, instance, cursor=result.cursor)  # still red: no second alert
        assert len(receiver.bodies) == 1 and len(result.run_requests) == 1

        assert execute(settings, instance, export_id).success
        tick(settings, instance, cursor=result.cursor)  # green again: one recovery alert
        assert latest_check(instance, PENDING_AGE_CHECK).passed
        assert [b["json"]["kind"] for b in receiver.bodies] == ["check_failure", "check_recovered"]
        assert receiver.bodies[1]["json"]["recovered_checks"][0]["check"] == PENDING_AGE_CHECK


def test_the_webhook_check_fails_past_10_percent_of_at_least_one_attempt(queue):
    def webhook_check(sent, failed):
        [_, evaluation] = evaluate_queue_health(QueueHealth(0, 0, sent, failed))
        assert evaluation.check_name == WEBHOOK_FAILURES_CHECK
        return evaluation.passed

    assert webhook_check(0, 0) and webhook_check(10, 1) and webhook_check(20, 2)
    assert not webhook_check(1, 1) and not webhook_check(9, 1) and not webhook_check(10, 2)
    [age, _] = evaluate_queue_health(QueueHealth(3, 300, 0, 0))
    assert age.passed and not evaluate_queue_health(QueueHealth(3, 301, 0, 0))[0].passed

    settings, engine = queue  # the last hour's failed webhooks, read from the queue by the sensor
    now = int(time.time())
    with engine.begin() as conn:
        for code in (200, 500):
            export_id = add_export(conn, status="completed", webhook_url="https://hooks.example/x")
            conn.execute(text("UPDATE 202_attribution_exports SET webhook_attempted_at = :t, "
                              "webhook_status_code = :c WHERE export_id = :i"), {"t": now - 60, "c": code, "i": export_id})
    with dg.instance_for_test() as instance:
        tick(settings, instance)
        evaluation = latest_check(instance, WEBHOOK_FAILURES_CHECK)
    assert not evaluation.passed and evaluation.metadata["webhooks_failed_last_hour"].value == 1
    assert evaluation.severity == dg.AssetCheckSeverity.WARN


def test_an_export_left_processing_by_a_dead_worker_fails_the_age_check(queue):
    [age, _] = evaluate_queue_health(QueueHealth(0, 0, 0, 0, 1))
    assert not age.passed and "1 export(s) processing for more than 30 min" in age.description
    settings, engine = queue  # claimed 31 minutes ago and never finished; a fresh claim is fine
    now = int(time.time())
    with engine.begin() as conn:
        for claimed in (now - 31 * 60, now - 60):
            export_id = add_export(conn, status="processing")
            conn.execute(text("UPDATE 202_attribution_exports SET started_at = :t WHERE export_id = :i"),
                         {"t": claimed, "i": export_id})
    with dg.instance_for_test() as instance:
        tick(settings, instance)
        evaluation = latest_check(instance, PENDING_AGE_CHECK)
    assert not evaluation.passed and evaluation.metadata["stuck_processing"].value == 1
    assert evaluation.metadata["pending_count"].value == 0


def test_the_definitions_register_the_job_the_sensor_on_by_default_and_the_checks(tmp_path):
    defs = build_definitions(queue_settings("sqlite:///" + str(tmp_path / "p.sqlite"), tmp_path))
    sensor = defs.resolve_sensor_def("attribution_export_queue")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 30
    assert sensor.job_name == EXPORT_JOB_NAME
    job = defs.resolve_job_def(EXPORT_JOB_NAME)
    assert job.tags["attribution/kind"] == "export"
    graph = defs.resolve_asset_graph()
    assert {k.name for k in graph.asset_check_keys if k.asset_key == QUEUE_KEY} == {PENDING_AGE_CHECK,
                                                                                   WEBHOOK_FAILURES_CHECK}
