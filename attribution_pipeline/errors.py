"""Named errors. Every refusal the pipeline makes has a class here and a message that says why."""


class AttributionError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class InvalidWindowError(AttributionError):
    """The requested time window is malformed (start >= end, unparsable time)."""


class EmptySelectionError(AttributionError):
    """The window selects no complete UTC hour (D3)."""


class BeforePartitionsStartError(AttributionError):
    """The window reaches before the first hourly partition (D3)."""


class UnknownUserError(AttributionError):
    """A --user id is not in 202_users, or the user is deleted (D16)."""


class ModelSelectionError(AttributionError):
    """A --model id is unknown, inactive, invalid or belongs to an unselected user (D9)."""


class InvalidModelConfig(AttributionError):
    """A model row fails Prosper202's validation (spec §3.6; D6 skips it)."""


class WriteBackMismatch(AttributionError):
    """Rows read back inside the write transaction differ from the rows computed (D9)."""


class LockTimeout(AttributionError):
    """Another writer holds the hours of this chunk for longer than the configured wait (D9)."""


class MissingUpstreamHours(AttributionError):
    """An intermediate frame was asked for hours that were never materialised."""


class TimeRangeError(InvalidWindowError):
    """A time argument is outside the range the pipeline accepts (before 2000-01-01 UTC, or more
    than a day after now): refused before anything is allocated."""


class DatabaseUrlError(AttributionError):
    """The database URL (or the file holding it) cannot be used; the message never shows the URL."""


class TlsConfigError(DatabaseUrlError):
    """The TLS parameters of the database URL are unknown, malformed or name unreadable files."""


class DatabaseConnectError(AttributionError):
    """The preflight connection to the database failed (the message never shows the password)."""


class DatabaseAccessDenied(DatabaseConnectError):
    """The server refused the user name and password (MySQL error 1045), or the database (1044)."""


class UnknownDatabaseError(DatabaseConnectError):
    """The server has no database of that name (MySQL error 1049)."""


class DatabaseUnreachable(DatabaseConnectError):
    """The server cannot be reached: refused, unknown host, timed out (2002, 2003, 2005, 2013)."""


class LocalInfileRefused(AttributionError):
    """The server asked for a local file this client did not generate for the running LOAD DATA
    statement; nothing was sent."""


class MarkovFitsTableMissing(AttributionError):
    """A data-driven (Markov) model needs ``attribution_markov_fits``: run ``attribution init-db`` (D32)."""
