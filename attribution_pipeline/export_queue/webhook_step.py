"""The worker's webhook step: an export row's webhook settings handed to ``webhook.py``.

After an export is marked completed, a row with a non-empty ``webhook_url`` gets its POST: its
``webhook_headers`` (a JSON object of strings, as Prosper202 stores them; anything else fails the
webhook with reason ``webhook_headers_invalid`` and nothing is sent), its secret (canonical schema
only), the payload :func:`webhook.build_payload` builds and :func:`webhook.deliver_webhook`'s
attempts. Nothing here logs or returns the URL, the secret or a header's value.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attribution_pipeline.export_queue.export_rules import ExportSpec
from attribution_pipeline.export_queue.queue_schema import ExportSchema


@dataclass(frozen=True)
class WebhookOutcome:
    """The webhook's result as the worker records it (the row's webhook columns, the audit)."""

    ok: bool
    attempts: int
    status_code: int | None
    response_body: str | None
    error: str | None
    attempted_at: int | None  # None: nothing was sent


def parse_headers(raw) -> dict[str, str]:
    """``webhook_headers`` as a dict (NULL or '' -> {}); ValueError when it is not a JSON object of strings."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        raise ValueError("webhook_headers is not valid JSON") from None
    if isinstance(value, list) and not value:
        return {}  # PHP's json_encode([]) of an empty header map
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("webhook_headers is not a JSON object of strings")
    return value


def _not_sent(error: str) -> WebhookOutcome:
    return WebhookOutcome(ok=False, attempts=0, status_code=None, response_body=None, error=error, attempted_at=None)


def send_webhook(row: dict, schema: ExportSchema, spec: ExportSpec, path: Path, rows: int, completed_at: int, *,
                 settings, log, deliver: Callable | None = None) -> WebhookOutcome | None:
    """POST the export's webhook if its row has a URL (None: it has none)."""
    url = str(row.get("webhook_url") or "").strip()
    if not url:
        return None
    try:
        headers = parse_headers(row.get(schema.headers) if schema.headers else None)
    except ValueError as exc:
        return _not_sent(f"webhook_headers_invalid: {exc}")
    from attribution_pipeline.export_queue import webhook  # the POST itself: address checks, signature, retries

    secret = (row.get(schema.secret) if schema.secret else None) or None
    try:
        body = webhook.build_payload(export=spec.payload_fields(), file_path=path, rows_exported=rows,
                                     completed_at=completed_at, settings=settings)
        result = (deliver or webhook.deliver_webhook)(url=url, body=body, secret=secret, headers=headers,
                                                      settings=settings, log=log)
    except Exception as exc:  # noqa: BLE001 - the webhook fails, named; the export's file stays
        return WebhookOutcome(ok=False, attempts=0, status_code=None, response_body=None,
                              error=f"webhook_error: {type(exc).__name__}", attempted_at=int(time.time()))
    return WebhookOutcome(ok=bool(result.ok), attempts=len(result.attempts), status_code=result.status_code,
                          response_body=result.response_body,
                          error=None if result.ok else (result.error or f"Unexpected status code {result.status_code}"),
                          attempted_at=int(result.attempted_at))
