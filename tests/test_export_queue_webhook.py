"""The export worker with its webhook, end to end (D23): a real receiver on 127.0.0.1 that answers
500, 500, then 200 gets three signed POSTs, and the export completes with the last attempt
recorded in its row; one that answers 404 fails the export at once, its file kept. The audit row
holds neither the URL, the secret nor a header's value."""

import base64
import hashlib
import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sqlalchemy import text

from attribution_pipeline.export_queue.worker import process_pending
from export_queue_seed import add_export, engine_for, export_row, queue_settings
from test_export_queue import GOLDEN_CSV, seed_golden

SECRET = "s3cret-for-the-test"


class Receiver(BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[tuple[dict, bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        code = type(self).answers.pop(0)
        payload = f"answer {code}".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # quiet
        pass


def run_with_receiver(mysql_url, tmp_path, answers):
    """Seed one export whose webhook goes to a receiver answering ``answers``; process the queue."""
    Receiver.answers, Receiver.received = list(answers), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook?token=abc"
    engine = engine_for(mysql_url)
    try:
        with engine.begin() as conn:
            seed_golden(conn)
            export_id = add_export(conn, webhook_url=url, secret=SECRET, headers='{"X-Custom":"custom-value"}')
        settings = queue_settings(mysql_url, tmp_path, webhook_allow_hosts=("127.0.0.1",),
                                  webhook_retry_delay_seconds=0.01)
        [result] = process_pending(engine, settings, log=logging.getLogger("webhook-test"))
    finally:
        server.shutdown()
        server.server_close()
    with engine.connect() as conn:
        row = export_row(conn, export_id)
        [metadata] = conn.execute(text("SELECT metadata FROM 202_attribution_audit WHERE action = 'export_processed'")
                                  ).scalars().all()
    return export_id, result, row, metadata


def test_webhook_retried_after_two_500s_completes_the_export(mysql_url, tmp_path):
    export_id, result, row, metadata = run_with_receiver(mysql_url, tmp_path, [500, 500, 200])
    assert (result.outcome, result.webhook_attempts, result.webhook_status_code) == ("completed", 3, 200)
    assert len(Receiver.received) == 3
    headers, body = Receiver.received[-1]
    assert headers["X-Prosper202-Signature"] == hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Custom"] == "custom-value"
    payload = json.loads(body)
    assert (payload["export_id"], payload["rows_exported"], payload["status"]) == (export_id, 4, "completed")
    assert base64.b64decode(payload["file_contents"]) == GOLDEN_CSV
    assert payload["file_name"] == Path(result.file_path).name
    assert (row["status"], row["webhook_status_code"], row["webhook_response_body"]) == ("completed", 200, "answer 200")
    assert row["webhook_attempted_at"] and row["completed_at"] and row["last_error"] is None
    assert json.loads(metadata)["webhook"] == {"ok": True, "attempts": 3, "status_code": 200}
    for secret_part in (SECRET, "custom-value", "token=abc", "/hook"):
        assert secret_part not in metadata


def test_webhook_answered_404_fails_the_export_and_keeps_its_file(mysql_url, tmp_path):
    _, result, row, metadata = run_with_receiver(mysql_url, tmp_path, [404])
    assert (result.outcome, result.webhook_attempts) == ("failed", 1)  # a 4xx is not retried
    assert (row["status"], row["webhook_status_code"], row["last_error"]) == ("failed", 404,
                                                                             "Unexpected status code 404")
    assert row["failed_at"] and row["completed_at"] and row["rows_exported"] == 4  # PHP keeps them
    assert Path(row["file_path"]).read_bytes() == GOLDEN_CSV
    assert json.loads(metadata)["status"] == "failed" and SECRET not in metadata
