"""Retries of transient MySQL errors: a dropped connection or a lost lock race runs again.

``work`` must be safe to repeat: a read, or a whole transaction that rolled back. Any other error
propagates at once. The policy (attempts, first delay) comes from the settings
(``ATTRIBUTION_DB_RETRIES``, ``ATTRIBUTION_DB_RETRY_DELAY``) through :class:`Database`.
"""

import re
import time
from dataclasses import dataclass

from attribution_pipeline.logs import log_event, stdlib_logger

#: MySQL/MariaDB errors worth retrying: the connection dropped (2006 server has gone away, 2013
#: lost connection, e.g. a KILL or a server restart) or the transaction lost a lock race (1205 lock
#: wait timeout, 1213 deadlock). Anything else is a real error and fails at once.
TRANSIENT_MYSQL_ERRORS = {2006: "server has gone away", 2013: "lost connection", 1205: "lock wait timeout",
                          1213: "deadlock"}
_TRANSIENT_TEXT = re.compile(r"\b(2006|2013|1205|1213)\b|gone away|Lost connection|Deadlock found|Lock wait timeout",
                             re.IGNORECASE)


def transient_error_code(error: BaseException) -> int | None:
    """The MySQL error number of ``error`` if it is transient (worth retrying), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        orig = getattr(error, "orig", None)
        args = getattr(orig if orig is not None else error, "args", ())
        if args and isinstance(args[0], int) and args[0] in TRANSIENT_MYSQL_ERRORS:
            return args[0]
        if type(error).__name__ in ("RuntimeError", "OSError") and _TRANSIENT_TEXT.search(str(error)):
            match = re.search(r"\b(2006|2013|1205|1213)\b", str(error))
            return int(match.group(1)) if match else 2013
        error = error.__cause__ or error.__context__
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` runs in all, waiting ``base_delay`` seconds, then twice as long each time."""

    attempts: int = 4
    base_delay: float = 0.5

    def run(self, work, *, what: str, logger=None):
        """``work()``; on a transient MySQL error, run it again (exponential backoff)."""
        delay = self.base_delay
        for attempt in range(1, max(1, self.attempts) + 1):
            try:
                return work()
            except Exception as error:  # noqa: BLE001 - classified below, re-raised unless transient
                code = transient_error_code(error)
                if code is None or attempt >= self.attempts:
                    raise
                log_event(logger or stdlib_logger, "db_retry", level="warning", what=what, mysql_error=code,
                          reason=TRANSIENT_MYSQL_ERRORS[code], attempt=attempt, next_delay_s=delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
