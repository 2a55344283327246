"""Structured logs: one JSON object per event, never personal data or credentials.

Fields: ``event``, ``level``, ``run_id``, ``partition_range``, ``stage``, counts, ``latency_ms``.
Only ids, counts, timings and masked URLs are ever passed in; the helpers refuse values that
look like an IP address, a user agent or a URL with a password, as a last line of defence.
"""

import json
import logging
import re
import time
from contextlib import contextmanager

_FORBIDDEN = re.compile(r"(\b\d{1,3}(\.\d{1,3}){3}\b)|(Mozilla/)|(://[^/\s:@]+:[^@\s]+@)", re.IGNORECASE)


def clean(value):
    """``value`` with any string that looks like an IP address, a user agent or a URL with a
    password replaced by ``[redacted]`` (recursively through dicts and lists)."""
    if isinstance(value, str) and _FORBIDDEN.search(value):
        return "[redacted]"
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def event_line(event: str, level: str = "info", **fields) -> str:
    payload = {"event": event, "level": level, **{k: clean(v) for k, v in fields.items()}}
    return json.dumps(payload, separators=(",", ":"), default=str, sort_keys=False)


def log_event(logger, event: str, level: str = "info", **fields) -> None:
    """Emit one JSON line through a Dagster or stdlib logger."""
    line = event_line(event, level, **fields)
    getattr(logger, "error" if level == "error" else "warning" if level == "warning" else "info")(line)


@contextmanager
def timed(logger, event: str, **fields):
    """Log ``event`` with ``latency_ms`` when the block ends; yields a dict for extra counts."""
    extra: dict = {}
    started = time.perf_counter()
    try:
        yield extra
    finally:
        log_event(logger, event, latency_ms=round((time.perf_counter() - started) * 1000, 1), **fields, **extra)


stdlib_logger = logging.getLogger("attribution_pipeline")


@contextmanager
def timed_into(totals: dict[str, float], name: str):
    """Add the wall seconds the block takes to ``totals[name]`` (stage timings of a run)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        totals[name] = totals.get(name, 0.0) + time.perf_counter() - started
