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
