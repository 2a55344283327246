"""Export webhooks (export_queue/webhook.py, webhook_address.py; D25) against a real local HTTP(S)
receiver: the body and its signature, custom headers, retries and backoff, no redirects, the
address checks and the allow-list, the pinned connection, truncation, and a secret that never
reaches a log line, a result or its repr."""

import base64
import hashlib
import hmac
import http.server
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from attribution_pipeline.export_queue import webhook, webhook_address
from attribution_pipeline.export_queue.webhook import build_payload, deliver_webhook, download_url
from attribution_pipeline.export_queue.webhook_address import AllowList, address_refusal
from attribution_pipeline.settings import Settings

SECRET = "whsec-0123456789-very-secret"
TOKEN = "Bearer header-token-42"
EXPORT = {"export_id": 7, "model_id": 3, "format": "csv", "scope_type": "global", "scope_id": None,
          "start_hour": 1_700_000_000, "end_hour": 1_700_086_400}


class Receiver:
    """A local webhook receiver: records every request; answers with the queued answers
    ``(status, body, delay seconds, headers)`` in turn, then 200."""

    def __init__(self, answers=(), tls: ssl.SSLContext | None = None):
        self.requests: list[dict] = []
        self.answers = list(answers)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers), "body": body})
                status, payload, delay, extra = receiver.answers.pop(0) if receiver.answers else (200, b"ok", 0, {})
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST  # a followed redirect would show up as a second request

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that gave up: expected
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, host="127.0.0.1", path="/hooks/export?token=q-token", scheme="http"):
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class ListLog:
    """A logger that keeps its lines."""

    def __init__(self):
        self.lines: list[str] = []

    def info(self, line):
        self.lines.append(line)

    warning = error = info

    def events(self):
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def receiver():
    made = []

    def make(*answers, tls=None):
        made.append(Receiver(answers, tls))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env({"ATTRIBUTION_HOME": str(tmp_path)}).replace(
        webhook_allow_hosts=("127.0.0.1",), webhook_retry_delay_seconds=0.01)


def deliver(url, settings, body=b'{"export_id":7}', secret=SECRET, headers=None, log=None):
    return deliver_webhook(url=url, body=body, secret=secret, headers=headers or {}, settings=settings,
                           log=log or ListLog())


# ------------------------------------------------------------------------------------------
# What is sent
# ------------------------------------------------------------------------------------------


def test_the_body_is_signed_and_custom_headers_arrive(receiver, settings):
    r = receiver()
    body = json.dumps({"export_id": 7, "file_contents": base64.b64encode(b"a,b\n").decode()}).encode()
    result = deliver(r.url(), settings, body=body, headers={"Authorization": TOKEN, "X-Tenant": "acme corp", "X-Name": "café"})
    assert result.ok and result.status_code == 200 and result.error is None and result.response_body == "ok"
    assert [a.number for a in result.attempts] == [1] and result.attempts[0].status_code == 200
    [got] = r.requests
    assert got["method"] == "POST" and got["path"] == "/hooks/export?token=q-token" and got["body"] == body
    expected = hmac.new(SECRET.encode(), got["body"], hashlib.sha256).hexdigest()
    assert got["headers"]["X-Prosper202-Signature"] == expected
    assert got["headers"]["Content-Type"] == "application/json"
    assert got["headers"]["Authorization"] == TOKEN and got["headers"]["X-Tenant"] == "acme corp"
    assert got["headers"]["X-Name"].encode("latin-1").decode("utf-8") == "café"  # UTF-8 bytes, verbatim
    assert got["headers"]["Host"] == f"127.0.0.1:{r.port}"
    assert abs(result.attempted_at - time.time()) < 5


def test_custom_headers_cannot_replace_the_pipelines_own(receiver, settings):
    r = receiver()
    log = ListLog()
    forged = {"Content-Type": "text/plain", "x-prosper202-signature": "forged", "Host": "evil.example",
              "Content-Length": "1", "X-Split": "a\r\nX-Injected: 1", "Bad Name": "x", "X-Fine": "yes"}
    assert deliver(r.url(), settings, headers=forged, log=log).ok
    got = r.requests[0]["headers"]
    assert got["Content-Type"] == "application/json" and got["Host"] == f"127.0.0.1:{r.port}"
    assert got["X-Prosper202-Signature"] == webhook.signature(b'{"export_id":7}', SECRET)
    assert got["Content-Length"] == str(len(b'{"export_id":7}')) and "X-Injected" not in got
    assert got["X-Fine"] == "yes" and "X-Split" not in got
    [dropped] = [e for e in log.events() if e["event"] == "export_webhook_headers_dropped"]
    assert "evil.example" not in log.lines[0] and "forged" not in log.lines[0] and len(dropped["headers"]) == 6


def test_no_secret_no_signature_and_userinfo_becomes_basic_auth(receiver, settings):
    r = receiver()
    url = f"http://hook%20user:p%40ss@127.0.0.1:{r.port}/hook"
    assert deliver(url, settings, secret=None).ok
    got = r.requests[0]["headers"]
    assert "X-Prosper202-Signature" not in got
    assert got["Authorization"] == "Basic " + base64.b64encode(b"hook user:p@ss").decode()


# ------------------------------------------------------------------------------------------
# Retries, redirects, timeouts
# ------------------------------------------------------------------------------------------


def test_500_twice_then_200_is_three_attempts_on_one_resolution(receiver, settings, monkeypatch):
    r = receiver((500, b"busy", 0, {}), (502, b"busy", 0, {}), (200, b"thanks", 0, {}))
    real, calls = socket.getaddrinfo, []

    def resolve(host, *args, **kwargs):  # a name that resolves to the receiver once, elsewhere after
        calls.append(host)
        return real("127.0.0.1" if len(calls) == 1 else "192.0.2.1", *args, **kwargs)

    monkeypatch.setattr(webhook_address.socket, "getaddrinfo", resolve)
    result = deliver(r.url(host="hook.test"), settings)
    assert result.ok and result.status_code == 200 and result.response_body == "thanks"
    assert [(a.number, a.status_code, a.error) for a in result.attempts] == [
        (1, 500, "Unexpected status code 500"), (2, 502, "Unexpected status code 502"), (3, 200, None)]
    assert calls == ["hook.test"] and len(r.requests) == 3
    assert {q["headers"]["Host"] for q in r.requests} == {f"hook.test:{r.port}"}


def test_a_404_fails_at_once(receiver, settings):
    r = receiver((404, b"no such hook", 0, {}))
    result = deliver(r.url(), settings)
    assert not result.ok and result.status_code == 404 and result.error == "Unexpected status code 404"
    assert len(result.attempts) == 1 and len(r.requests) == 1 and result.response_body == "no such hook"


def test_a_redirect_is_not_followed(receiver, settings):
    r = receiver()
    r.answers.append((302, b"", 0, {"Location": r.url(path="/elsewhere")}))
    result = deliver(r.url(), settings)
    assert not result.ok and result.status_code == 302 and result.error == "Unexpected status code 302"
    assert len(result.attempts) == 1 and [q["path"] for q in r.requests] == ["/hooks/export?token=q-token"]


def test_5xx_is_retried_up_to_the_attempts_with_doubling_delays(receiver, settings, monkeypatch):
    r = receiver(*[(503, b"down", 0, {})] * 5)
    slept = []
    monkeypatch.setattr(webhook.time, "sleep", slept.append)
    result = deliver(r.url(), settings.replace(webhook_attempts=3, webhook_retry_delay_seconds=0.5))
    assert not result.ok and result.status_code == 503 and result.error == "Unexpected status code 503"
    assert len(result.attempts) == 3 == len(r.requests) and slept == [0.5, 1.0]


def test_a_timeout_is_retried(receiver, settings, monkeypatch):
    assert webhook.TIMEOUT_SECONDS == 15.0
    monkeypatch.setattr(webhook, "TIMEOUT_SECONDS", 0.3)
    r = receiver((200, b"late", 1.0, {}), (200, b"on time", 0, {}))
    result = deliver(r.url(), settings)
    assert result.ok and result.response_body == "on time" and len(r.requests) == 2
    first = result.attempts[0]
    assert first.status_code is None and "timed out" in first.error and 0.25 < first.seconds < 1.0


def test_connection_errors_are_retried(settings):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = deliver(f"http://127.0.0.1:{port}/", settings.replace(webhook_attempts=2))
    assert not result.ok and len(result.attempts) == 2 and result.status_code is None
    assert result.error.startswith("Connection failed")


def test_the_response_body_is_truncated(receiver, settings):
    r = receiver((200, b"x" * 100_000, 0, {}))
    result = deliver(r.url(), settings)
    assert result.ok and result.response_body == "x" * webhook.RESPONSE_BODY_LIMIT_BYTES == "x" * 65536


# ------------------------------------------------------------------------------------------
# Where a webhook may go
# ------------------------------------------------------------------------------------------


def test_loopback_is_refused_unless_allow_listed(receiver, settings):
    r = receiver()
    for allowed in ((), ("10.0.0.0/8", "other.example")):
        result = deliver(r.url(), settings.replace(webhook_allow_hosts=allowed))
        assert not result.ok and result.status_code is None and len(result.attempts) == 1
        assert result.error.startswith("address not allowed: 127.0.0.1 resolves to 127.0.0.1 (loopback)")
    result = deliver(r.url(host="localhost"), settings.replace(webhook_allow_hosts=()))
    assert not result.ok and result.error.startswith("address not allowed: localhost")
    assert r.requests == []


@pytest.mark.parametrize("allowed", [("127.0.0.0/8",), ("127.0.0.1/32",), (" 127.0.0.1 ",), ("::1", "127.0.0.0/30")])
def test_a_cidr_or_address_in_the_allow_list_is_reached(receiver, settings, allowed):
    r = receiver()
    assert deliver(r.url(), settings.replace(webhook_allow_hosts=allowed)).ok and len(r.requests) == 1


def test_a_host_name_in_the_allow_list_is_reached(receiver, settings):
    r = receiver()
    result = deliver(r.url(host="LocalHost"), settings.replace(webhook_allow_hosts=("localhost.",)))
    assert result.ok and r.requests[0]["headers"]["Host"].lower() == f"localhost:{r.port}"


def test_a_name_resolving_to_any_private_address_is_refused_before_connecting(settings, monkeypatch):
    answers = {"one.example": ["10.1.2.3"], "mixed.example": ["93.184.216.34", "192.168.1.1"],
               "v6.example": ["::ffff:169.254.169.254"], "public.example": ["93.184.216.34"]}

    def resolve(host, port, *args, **kwargs):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port) if ":" not in a else (a, port, 0, 0)) for a in answers[host]]

    opened = []

    def refuse(addresses, timeout):  # records where a connection would go
        opened.append(addresses)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(webhook_address.socket, "getaddrinfo", resolve)
    monkeypatch.setattr(webhook_address, "_open", refuse)
    for host, reason in [("one.example", "private"), ("mixed.example", "private"), ("v6.example", "link-local")]:
        result = deliver(f"https://{host}/hook", settings)
        assert not result.ok and len(result.attempts) == 1 and f"({reason}" in result.error, result.error
    assert opened == []
    deliver("https://public.example/hook", settings.replace(webhook_attempts=1))
    assert opened == [[(socket.AF_INET, ("93.184.216.34", 443))]]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://127.0.0.1:70/",
                                 "javascript:alert(1)", "127.0.0.1:8080/hook", "http:///no-host", "",
                                 "http://127.0.0.1:99999/", "http://exa mple.com/"])
def test_only_http_and_https_urls_with_a_host_are_sent(settings, url):
    result = deliver(url, settings)
    assert not result.ok and result.status_code is None and len(result.attempts) == 1
    assert result.error.startswith("URL not allowed")


REFUSED = ["127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.5.4", "192.168.0.1", "169.254.169.254",
           "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250",
           "240.0.0.1", "255.255.255.255", "192.0.0.8", "192.0.2.1", "198.18.0.1", "198.51.100.7",
           "203.0.113.9", "::", "::1", "fe80::1", "fe80::1%2", "fc00::1", "fd12:3456::1", "fec0::1",
           "ff02::1", "ff0e::1", "2001:db8::1", "2001::1", "100::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
           "::ffff:169.254.169.254", "::ffff:100.64.0.1", "::127.0.0.1", "::ffff:0:127.0.0.1",
           "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::1", "2002:7f00:1::1", "2002:a00:1::1"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "100.128.0.1", "172.32.0.1", "2606:4700:4700::1111",
          "2a00:1450:4001::200e", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", REFUSED)
def test_private_and_special_addresses_are_refused(address):
    assert address_refusal(address) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert address_refusal(address) is None


def test_the_allow_list_holds_hosts_and_networks():
    import ipaddress

    allow = AllowList.parse(["Hook.Internal.", "10.0.0.0/8", "fd00::/8", "", "127.0.0.1"])
    assert allow.allows_host("hook.internal") and not allow.allows_host("internal")
    ip = ipaddress.ip_address
    assert allow.allows_address(ip("10.9.8.7")) and allow.allows_address(ip("::ffff:10.0.0.1"))
    assert allow.allows_address(ip("fd00::5")) and allow.allows_address(ip("127.0.0.1"))
    assert not allow.allows_address(ip("127.0.0.2")) and not allow.allows_address(ip("192.168.0.1"))


# ------------------------------------------------------------------------------------------
# HTTPS: the connection goes to the checked address, TLS verifies the URL's host
# ------------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path):
    assert shutil.which("openssl"), "the HTTPS webhook tests need the openssl command line tool"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def test_https_verifies_the_certificate_against_the_urls_host(receiver, settings, certificate, monkeypatch):
    server_tls, client_tls = certificate
    monkeypatch.setattr(webhook, "TLS_CONTEXT", client_tls)
    r = receiver(tls=server_tls)
    result = deliver(r.url(host="localhost", scheme="https"), settings.replace(webhook_allow_hosts=("localhost",)))
    assert result.ok and r.requests[0]["headers"]["Host"] == f"localhost:{r.port}"
    assert r.requests[0]["headers"]["X-Prosper202-Signature"] == webhook.signature(b'{"export_id":7}', SECRET)
    wrong_name = deliver(r.url(scheme="https"), settings)  # the certificate names localhost, not 127.0.0.1
    assert not wrong_name.ok and len(wrong_name.attempts) == 1 and "certificate" in wrong_name.error
    assert len(r.requests) == 1


# ------------------------------------------------------------------------------------------
# The body
# ------------------------------------------------------------------------------------------


def test_the_payload_inlines_a_small_file(tmp_path, settings):
    path = tmp_path / "attribution_export_7_20231114_221320.csv"
    path.write_bytes(b'snapshot_id,model_id\n1,3\n"a ""b""",\xc3\xa9\n')
    body = build_payload(export=EXPORT, file_path=path, rows_exported=2, completed_at=1_700_090_000,
                         settings=settings.replace(tracking_domain="track.example.com", tracking_base_path="p202"))
    payload = json.loads(body)
    assert list(payload) == ["export_id", "model_id", "status", "format", "scope_type", "scope_id", "start_hour",
                             "end_hour", "rows_exported", "file_name", "file_contents", "download_url",
                             "completed_at"]
    assert payload | {"file_contents": None} == {
        **EXPORT, "status": "completed", "rows_exported": 2, "file_name": path.name, "file_contents": None,
        "download_url": "https://track.example.com/p202/202-account/attribution/download.php?export_id=7",
        "completed_at": 1_700_090_000}
    assert base64.b64decode(payload["file_contents"]) == path.read_bytes()


def test_the_payload_omits_a_file_over_10_mb(tmp_path, settings):
    limit = 10 * 1024 * 1024
    at_limit, over = tmp_path / "at_limit.csv", tmp_path / "over.csv"
    at_limit.write_bytes(b"\x01\x02\x03" * (limit // 3) + b"\x04" * (limit % 3))
    with over.open("wb") as handle:
        handle.truncate(limit + 1)
    local = settings.replace(tracking_domain="http://track.example.com/")
    inlined = json.loads(build_payload(export=EXPORT, file_path=at_limit, rows_exported=1, completed_at=1,
                                       settings=local))
    assert base64.b64decode(inlined["file_contents"]) == at_limit.read_bytes()
    body = build_payload(export=EXPORT, file_path=over, rows_exported=9, completed_at=1, settings=local)
    payload = json.loads(body)
    assert len(body) < 1000 and payload["file_contents"] is None and "10 MB" in payload["file_contents_omitted"]
    assert payload["download_url"] == "http://track.example.com/202-account/attribution/download.php?export_id=7"


@pytest.mark.parametrize("domain, base, url", [
    ("track.example.com", "", "https://track.example.com/202-account/attribution/download.php?export_id=7"),
    ("https://track.example.com/", "", "https://track.example.com/202-account/attribution/download.php?export_id=7"),
    ("HTTP://t.example:8080", "a/b", "http://t.example:8080/a/b/202-account/attribution/download.php?export_id=7"),
    ("t.example", "/p202/", "https://t.example/p202/202-account/attribution/download.php?export_id=7"),
    (None, "p202", None), ("  ", "", None)])
def test_the_download_url(settings, domain, base, url):
    assert download_url(7, settings.replace(tracking_domain=domain, tracking_base_path=base)) == url


# ------------------------------------------------------------------------------------------
# What is logged
# ------------------------------------------------------------------------------------------


def test_the_secret_and_header_values_never_reach_logs_or_results(receiver, settings, caplog):
    r = receiver((500, SECRET.encode() + b" echoed", 0, {}), *[(404, b"nope " + SECRET.encode(), 0, {})] * 2)
    log = ListLog()
    url = r.url(host="localhost", path="/hooks/export?token=q-token").replace("://", "://user:pw-777@")
    local = settings.replace(webhook_allow_hosts=("localhost",))
    result = deliver(url, local, headers={"Authorization": TOKEN}, log=log)
    assert not result.ok and [a.status_code for a in result.attempts] == [500, 404]
    with caplog.at_level(logging.INFO, logger="webhook-test"):
        deliver(url, local, headers={"Authorization": TOKEN}, log=logging.getLogger("webhook-test"))
    lines = log.lines + [record.getMessage() for record in caplog.records]
    assert len(lines) == 3
    for text in [*lines, repr(result), str(result), result.response_body, result.error]:
        for hidden in (SECRET, TOKEN, "q-token", "pw-777", "export_id"):
            assert hidden not in text, (hidden, text)
    events = log.events()
    assert [(e["attempt"], e["status_code"], e["retry"]) for e in events] == [(1, 500, True), (2, 404, False)]
    assert events[0]["url"] == f"http://localhost:{r.port}/hooks/export" and events[0]["seconds"] >= 0
    assert result.response_body == "nope ***"
