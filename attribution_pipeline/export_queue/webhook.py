"""An export's webhook (D25): the JSON body Prosper202's export worker POSTs, signed with the
export's secret, sent only to a checked address (``webhook_address``), retried with backoff.

``build_payload`` makes the body: the export's fields, the file inlined as base64 (files over
10 MB are not inlined; the body says so and carries ``download_url``). ``deliver_webhook`` POSTs
it with ``X-Prosper202-Signature: hex(HMAC-SHA256(body, secret))`` when the export has a secret,
15 s per attempt, 2xx meaning delivered; redirects are not followed; timeouts, connection errors
and 5xx are retried up to ``Settings.webhook_attempts`` times, the delay doubling from
``Settings.webhook_retry_delay_seconds``; a 4xx (or any other status) and a refused address end
it at once. Each attempt is logged with its number, status or error and seconds: never the
secret, the body, the headers' values, or the URL's query string and userinfo.
"""

import base64
import hashlib
import hmac
import http.client
import io
import json
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from attribution_pipeline.export_queue.webhook_address import (
    AddressRefused, AllowList, WebhookTarget, connection, parse_target, resolve_checked,
)
from attribution_pipeline.logs import log_event

SIGNATURE_HEADER = "X-Prosper202-Signature"
TIMEOUT_SECONDS = 15.0  # per attempt, as the PHP worker's cURL timeout
INLINE_LIMIT_BYTES = 10 * 1024 * 1024  # files above this are not inlined as base64
RESPONSE_BODY_LIMIT_BYTES = 64 * 1024  # the receiver's answer is kept up to this many bytes
TLS_CONTEXT: ssl.SSLContext | None = None  # None: the system's trusted CAs (tests set their own)
USER_AGENT = "attribution-pipeline-webhook/1"
DOWNLOAD_PATH = "202-account/attribution/download.php"
OMITTED_NOTE = "file exceeds the 10 MB inline limit; fetch download_url"
#: Headers the pipeline sets itself: an export's custom headers cannot replace them.
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding", "connection",
                              SIGNATURE_HEADER.lower()})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK = 3 * 256 * 1024  # base64 is streamed in multiples of 3 bytes: no padding mid-stream


@dataclass(frozen=True)
class WebhookAttempt:
    """One POST: its number (from 1), the HTTP status or the error, and how long it took."""

    number: int
    status_code: int | None
    error: str | None
    seconds: float


@dataclass(frozen=True)
class WebhookResult:
    """A delivery's outcome; ``status_code``, ``response_body`` (at most 64 KiB, decoded as UTF-8)
    and ``error`` are those of the last attempt, ``attempted_at`` its start (epoch seconds)."""

    ok: bool
    attempts: tuple[WebhookAttempt, ...]
    status_code: int | None
    response_body: str | None
    error: str | None
    attempted_at: int

    def __repr__(self) -> str:  # short: no response body
        return (f"WebhookResult(ok={self.ok}, attempts={len(self.attempts)}, status_code={self.status_code}, "
                f"error={self.error!r}, attempted_at={self.attempted_at})")


# ------------------------------------------------------------------------------------------
# The body
# ------------------------------------------------------------------------------------------


def download_url(export_id: int, settings) -> str | None:
    """``<scheme>://<tracking domain>/<base path>/202-account/attribution/download.php?export_id=N``
    (https unless the tracking domain names its scheme); None without a tracking domain."""
    domain = (settings.tracking_domain or "").strip()
    if not domain:
        return None
    scheme, _, host = domain.rpartition("://")
    parts = [host.strip("/"), (settings.tracking_base_path or "").strip("/"), DOWNLOAD_PATH]
    return f"{(scheme or 'https').lower()}://" + "/".join(p for p in parts if p) + f"?export_id={int(export_id)}"


def _members(fields: Mapping) -> bytes:
    """JSON object members (no braces), compact as PHP's ``json_encode``."""
    return ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in fields.items()).encode()


def build_payload(*, export: Mapping, file_path: Path, rows_exported: int, completed_at: int, settings) -> bytes:
    """The webhook's JSON body, fields in the PHP worker's order; ``file_contents`` is the file in
    base64, encoded chunk by chunk into the body (a file over 10 MB: null, and
    ``file_contents_omitted`` says why)."""
    file_path = Path(file_path)
    head = {
        "export_id": export["export_id"], "model_id": export["model_id"], "status": "completed",
        "format": export["format"], "scope_type": export["scope_type"], "scope_id": export["scope_id"],
        "start_hour": export["start_hour"], "end_hour": export["end_hour"], "rows_exported": rows_exported,
        "file_name": file_path.name,
    }
    tail = {"download_url": download_url(export["export_id"], settings), "completed_at": completed_at}
    body = io.BytesIO()  # getvalue() hands its buffer over: the body is never copied whole
    body.write(b"{" + _members(head) + b',"file_contents":')
    if file_path.stat().st_size > INLINE_LIMIT_BYTES:
        body.write(b'null,"file_contents_omitted":' + json.dumps(OMITTED_NOTE).encode())
    else:
        body.write(b'"')
        with file_path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                body.write(base64.b64encode(chunk))
        body.write(b'"')
    body.write(b"," + _members(tail) + b"}")
    return body.getvalue()


# ------------------------------------------------------------------------------------------
# The request
# ------------------------------------------------------------------------------------------


def signature(body: bytes, secret: str) -> str:
    """``hex(HMAC-SHA256(body, secret))``: what a receiver recomputes over the bytes it got."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def request_headers(body: bytes, secret: str | None, custom: Mapping[str, str] | None,
                    target: WebhookTarget) -> tuple[dict[str, str | bytes], list[str]]:
    """The request's headers, and the names of custom headers dropped (a header the pipeline
    sets itself, an invalid name, a value with a line break)."""
    headers: dict[str, str | bytes] = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    dropped = []
    for name, value in (custom or {}).items():
        name, value = str(name), "" if value is None else str(value)
        if not _TOKEN.fullmatch(name):
            dropped.append("(an invalid header name)")
        elif name.lower() in RESERVED_HEADERS or any(c in value for c in "\r\n\0"):
            dropped.append(name)
        else:
            raw = value if value.isascii() else value.encode("utf-8")  # sent as the bytes PHP sends
            headers = {k: v for k, v in headers.items() if k.lower() != name.lower()} | {name: raw}
    if target.basic_auth and not any(k.lower() == "authorization" for k in headers):
        user, password = target.basic_auth
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if secret:
        headers[SIGNATURE_HEADER] = signature(body, secret)
    return headers, dropped


class _Scrubber:
    """Removes the secret from any text the delivery produces (an error, the receiver's answer)."""

    def __init__(self, secret: str | None):
        self.secret = secret or None

    def __call__(self, text: str | None) -> str | None:
        return text.replace(self.secret, "***") if text and self.secret else text


@dataclass
class _Outcome:
    status_code: int | None = None
    response_body: str | None = None
    error: str | None = None
    retry: bool = False


def _left(deadline: float) -> float:
    """Seconds left before ``deadline``; TimeoutError when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _post(conn: http.client.HTTPConnection, target: WebhookTarget, body: bytes, headers: dict[str, str | bytes],
          deadline: float) -> _Outcome:
    """One POST on a pinned connection; the status and up to 64 KiB of the answer. Connecting,
    sending and each read get what is left of the attempt's time."""
    conn.connect()
    sock = conn.sock  # kept: getresponse() drops it from the connection when the server closes
    sock.settimeout(_left(deadline))
    conn.request("POST", target.request_target, body=body, headers=headers)
    sock.settimeout(_left(deadline))
    response = conn.getresponse()
    answer = bytearray()
    try:
        while len(answer) < RESPONSE_BODY_LIMIT_BYTES and time.monotonic() < deadline:
            sock.settimeout(_left(deadline))
            piece = response.read(min(65536, RESPONSE_BODY_LIMIT_BYTES - len(answer)))
            if not piece:
                break
            answer += piece
    except (OSError, http.client.HTTPException):
        pass  # the status is what counts; keep what was read
    status = response.status
    text = bytes(answer[:RESPONSE_BODY_LIMIT_BYTES]).decode("utf-8", errors="replace")
    if 200 <= status < 300:
        return _Outcome(status, text)
    return _Outcome(status, text, f"Unexpected status code {status}", retry=status >= 500)


def _attempt(target: WebhookTarget, resolved: dict, allow: AllowList, body: bytes,
             headers: dict[str, str | bytes], timeout: float) -> _Outcome:
    """One attempt: the host resolved and checked if it has not been yet, then the POST."""
    try:
        if "addresses" not in resolved:
            resolved["addresses"] = resolve_checked(target, allow)
        conn = connection(target, resolved["addresses"], timeout, TLS_CONTEXT)
        try:
            return _post(conn, target, body, headers, time.monotonic() + timeout)
        finally:
            conn.close()
    except AddressRefused as exc:
        return _Outcome(error=str(exc))
    except TimeoutError:
        return _Outcome(error=f"Operation timed out after {timeout:g} s", retry=True)
    except ssl.SSLCertVerificationError as exc:
        return _Outcome(error=f"TLS certificate not accepted: {exc.verify_message or exc}")
    except OSError as exc:
        kind = "Could not resolve host" if isinstance(exc, socket.gaierror) else "Connection failed"
        return _Outcome(error=f"{kind}: {exc.strerror or exc}", retry=True)
    except http.client.InvalidURL:
        return _Outcome(error="URL not allowed: invalid host")
    except http.client.HTTPException as exc:
        return _Outcome(error=f"Invalid HTTP answer: {type(exc).__name__}", retry=True)
    except ValueError:  # a host name IDNA cannot encode
        return _Outcome(error="URL not allowed: invalid host name")


def _log_attempt(log, target: WebhookTarget, attempt: WebhookAttempt, of: int, retry: bool) -> None:
    log_event(log, "export_webhook_attempt", url=target.safe_url, attempt=attempt.number, attempts=of,
              status_code=attempt.status_code, error=attempt.error, seconds=attempt.seconds,
              retry=retry)


def deliver_webhook(*, url: str, body: bytes, secret: str | None, headers: Mapping[str, str], settings,
                    log) -> WebhookResult:
    """POST ``body`` to ``url`` (D25); never raises for a delivery problem: the result says it."""
    scrub = _Scrubber(secret)
    started_at = int(time.time())
    try:
        target = parse_target(url)
    except AddressRefused as exc:
        attempt = WebhookAttempt(1, None, scrub(str(exc)), 0.0)
        log_event(log, "export_webhook_attempt", attempt=1, attempts=1, status_code=None,
                  error=attempt.error, seconds=0.0, retry=False)
        return WebhookResult(False, (attempt,), None, None, attempt.error, started_at)
    sent_headers, dropped = request_headers(body, secret, headers, target)
    if dropped:
        log_event(log, "export_webhook_headers_dropped", url=target.safe_url, headers=dropped)
    allow, resolved = AllowList.parse(settings.webhook_allow_hosts), {}
    most = max(1, int(settings.webhook_attempts))
    attempts: list[WebhookAttempt] = []
    for number in range(1, most + 1):
        if number > 1:
            time.sleep(settings.webhook_retry_delay_seconds * 2 ** (number - 2))
        started_at, clock = int(time.time()), time.monotonic()
        outcome = _attempt(target, resolved, allow, body, sent_headers, TIMEOUT_SECONDS)
        attempt = WebhookAttempt(number, outcome.status_code, scrub(outcome.error),
                                 round(time.monotonic() - clock, 3))
        attempts.append(attempt)
        _log_attempt(log, target, attempt, most, outcome.retry and number < most)
        if not outcome.retry:
            break
    return WebhookResult(ok=outcome.error is None, attempts=tuple(attempts), status_code=outcome.status_code,
                         response_body=scrub(outcome.response_body), error=attempt.error,
                         attempted_at=started_at)
