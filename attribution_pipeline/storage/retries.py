"""Retries of transient database errors, within a time budget: outages are absorbed by the run.

``work`` must be safe to repeat: a read, or a whole transaction that rolled back (a chunk write is
retried from its first statement on a fresh connection, never one statement alone). Any other
error propagates at once. The policy comes from the settings through :class:`Database`:
``ATTRIBUTION_DB_RETRY_BUDGET`` seconds in all (default 90: a 60 s server restart fits),
``ATTRIBUTION_DB_RETRY_DELAY`` first delay, doubled per attempt up to 5 s,
``ATTRIBUTION_DB_RETRIES`` attempts at most.

Transient means the server could not be reached or the connection was lost, whatever the driver
(PyMySQL's error numbers, connectorx's ``RuntimeError`` texts), or the transaction lost a lock
race. Each retry is counted in :attr:`RetryPolicy.counter` (the assets report it in metadata).
"""

import re
import threading
import time
from dataclasses import dataclass, field

from attribution_pipeline.logs import log_event, stdlib_logger

#: MySQL/MariaDB errors worth retrying, by number.
TRANSIENT_MYSQL_ERRORS = {
    1040: "too many connections",
    1053: "server shutdown in progress",
    1205: "lock wait timeout",
    1213: "deadlock",
    1927: "connection was killed",
    2002: "cannot connect (socket)",
    2003: "cannot connect (connection refused)",
    2006: "server has gone away",
    2013: "lost connection",
    2055: "lost connection (system error)",
    4031: "disconnected by the server (idle timeout)",
}
#: Texts of the same errors where a driver gives no number (connectorx's ``RuntimeError``, OSError).
_TRANSIENT_TEXT = [
    (re.compile(r"gone away", re.I), 2006),
    (re.compile(r"Lost connection|Connection reset|Broken pipe|unexpected ?EOF|UnexpectedEof", re.I), 2013),
    (re.compile(r"Connection refused|Can't connect|could not connect|timed out|Connection timed out", re.I), 2003),
    (re.compile(r"Connection was killed|connection killed", re.I), 1927),
    (re.compile(r"Deadlock found", re.I), 1213),
    (re.compile(r"Lock wait timeout", re.I), 1205),
    (re.compile(r"server shutdown|shutdown in progress", re.I), 1053),
    (re.compile(r"\bIoError\b|\bCodecError\b|\bDriverError\b.*(?:Io|Closed)|Error\(Io|\bio error\b", re.I), 2013),
]
_SERVER_ERROR = re.compile(r"\bERROR (\d{4})\b")


def transient_error_code(error: BaseException) -> int | None:
    """The MySQL error number of ``error`` (or of an error it wraps) if it is transient, else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        orig = getattr(error, "orig", None)
        args = getattr(orig if orig is not None else error, "args", ())
        if args and isinstance(args[0], int) and not isinstance(args[0], bool):
            if args[0] in TRANSIENT_MYSQL_ERRORS:
                return args[0]
        elif isinstance(error, (RuntimeError, OSError, ConnectionError)) or type(error).__name__ in (
                "RuntimeError", "PanicException"):
            text = str(error)
            server_error = _SERVER_ERROR.search(text)  # connectorx: "MySqlError { ERROR 1049 (42000): ..."
            if server_error:
                code = int(server_error.group(1))
                return code if code in TRANSIENT_MYSQL_ERRORS else None
            for pattern, code in _TRANSIENT_TEXT:
                if pattern.search(text):
                    return code
        if isinstance(error, (ConnectionError, TimeoutError)):
            return 2013
        error = error.__cause__ or error.__context__
    return None


@dataclass
class RetryCounter:
    """Retries made through a policy, by what was retried (thread-safe)."""

    total: int = 0
    by_what: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str) -> None:
        with self._lock:
            self.total += 1
            kind = what.split(" ", 1)[0]
            self.by_what[kind] = self.by_what.get(kind, 0) + 1


@dataclass(frozen=True)
class RetryPolicy:
    """Run ``work`` again on a transient error until it succeeds, ``budget_seconds`` have passed
    since the first attempt, or ``attempts`` were made; waiting ``base_delay`` seconds, then twice
    as long each time, at most ``max_delay``."""

    attempts: int = 60
    base_delay: float = 0.5
    budget_seconds: float = 90.0
    max_delay: float = 5.0
    counter: RetryCounter = field(default_factory=RetryCounter, compare=False)

    def run(self, work, *, what: str, logger=None):
        """``work()``; on a transient error, run it again (exponential backoff, within the budget)."""
        delay = self.base_delay
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return work()
            except Exception as error:  # noqa: BLE001 - classified below, re-raised unless transient
                code = transient_error_code(error)
                elapsed = time.monotonic() - started
                if code is None or attempt >= self.attempts or elapsed + delay > self.budget_seconds:
                    if code is not None:
                        log_event(logger or stdlib_logger, "db_retry_exhausted", level="error", what=what,
                                  mysql_error=code, reason=TRANSIENT_MYSQL_ERRORS.get(code, ""), attempts=attempt,
                                  elapsed_s=round(elapsed, 1))
                    raise
                self.counter.add(what)
                log_event(logger or stdlib_logger, "db_retry", level="warning", what=what, mysql_error=code,
                          reason=TRANSIENT_MYSQL_ERRORS.get(code, ""), attempt=attempt, next_delay_s=delay)
                time.sleep(delay)
                delay = min(max(delay, 0.05) * 2, self.max_delay)


def is_transient(error: BaseException) -> bool:
    return transient_error_code(error) is not None
