"""UTC hours: keys, parsing and the hour selection rule (decisions D3, D17).

Hour ``H`` (an epoch second divisible by 3600) holds the conversions with
``H <= conv_time <= H + 3599``. Hour keys are Dagster's hourly partition keys
(``2024-06-01-09:00``).

Times given by a user are bounded (:func:`check_time`): not before 2000-01-01 UTC and not more than
a day after now, so a mistyped epoch is a named error (``TimeRangeError``) before any list of hours
is built.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from attribution_pipeline.errors import (
    BeforePartitionsStartError,
    EmptySelectionError,
    InvalidWindowError,
    TimeRangeError,
)
from attribution_pipeline.settings import KEY_FORMAT

HOUR = 3600
#: The earliest time a user may give: 2000-01-01T00:00:00Z (Prosper202 is younger).
EARLIEST_TIME = 946_684_800
#: How far after now a user may give a time: one day.
LATEST_AHEAD_SECONDS = 86_400
_EPOCH = re.compile(r"-?[0-9]+")


def floor_hour(epoch: int) -> int:
    return epoch - epoch % HOUR


def hour_key(hour: int) -> str:
    return datetime.fromtimestamp(hour, tz=timezone.utc).strftime(KEY_FORMAT)


def key_hour(key: str) -> int:
    return int(datetime.strptime(key, KEY_FORMAT).replace(tzinfo=timezone.utc).timestamp())


def hours_between(first_hour: int, last_hour: int) -> list[int]:
    """Every hour start from ``first_hour`` to ``last_hour`` inclusive."""
    return list(range(first_hour, last_hour + HOUR, HOUR))


def hours_in(start: datetime, end: datetime) -> list[int]:
    """The hour starts of ``[start, end)`` (a Dagster partition time window's bounds)."""
    return list(range(int(start.timestamp()), int(end.timestamp()), HOUR))


def chunk_hours(hours: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """Consecutive groups of at most ``size`` hours."""
    ordered = sorted(hours)
    size = max(1, int(size))
    return [tuple(ordered[i : i + size]) for i in range(0, len(ordered), size)]


def parse_time(value: str | int) -> int:
    """Epoch seconds, or ISO-8601 (UTC when it has no offset), or a Dagster hour key."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text:
        raise InvalidWindowError("empty time value")
    if _EPOCH.fullmatch(text):
        if len(text.lstrip("-")) > 12:  # beyond year 33658: never a real time, and kept out of int maths
            raise TimeRangeError(f"time {text[:20]}{'...' if len(text) > 20 else ''} is not a plausible epoch "
                                 "second (times must be between 2000-01-01T00:00:00Z and a day after now)")
        return int(text)
    for fmt in (KEY_FORMAT,):
        try:
            return int(datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp())
        except ValueError:
            pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return int(parsed.timestamp())
    except (ValueError, OverflowError) as exc:
        raise InvalidWindowError(
            f"cannot read time {text!r}: use epoch seconds or ISO-8601 such as 2024-06-01T09:00:00Z"
        ) from None


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_time(value: int, now: int, name: str = "time") -> int:
    """``value`` if it lies between 2000-01-01T00:00:00Z and a day after ``now``, else a
    ``TimeRangeError`` naming the bounds (checked before any hour list is built)."""
    latest = now + LATEST_AHEAD_SECONDS
    if not EARLIEST_TIME <= value <= latest:
        shown = _iso(value) if -62135596800 <= value <= 253402300799 else "out of any calendar"
        raise TimeRangeError(f"{name} {value} ({shown}) is outside the accepted range: times must be between "
                             f"{_iso(EARLIEST_TIME)} and {_iso(latest)} (a day after now)")
    return value


def check_window(start: int, end: int, now: int) -> None:
    """Both bounds within :func:`check_time`'s range and ``start < end`` (named errors)."""
    check_time(start, now, "start")
    check_time(end, now, "end")
    if start >= end:
        raise InvalidWindowError(
            f"start ({start}) must be earlier than end ({end}); the window is [start, end)"
        )


@dataclass(frozen=True)
class HourSelection:
    """The whole hours a run rewrites, and the hours of the window it left out (incomplete)."""

    hours: tuple[int, ...]
    incomplete: tuple[int, ...]

    @property
    def first(self) -> int:
        return self.hours[0]

    @property
    def last(self) -> int:
        return self.hours[-1]

    @property
    def start_key(self) -> str:
        return hour_key(self.first)

    @property
    def end_key(self) -> str:
        return hour_key(self.last)


def select_hours(start: int, end: int, now: int, first_partition_hour: int) -> HourSelection:
    """D3: the complete UTC hours overlapping ``[start, end)``.

    Raises a named error, before anything runs or is allocated, when a bound is outside
    :func:`check_time`'s range, when ``start >= end``, when no complete hour is selected, or when
    the window reaches before the first partition.
    """
    check_window(start, end, now)
    first = floor_hour(start)
    last = floor_hour(end - 1)
    overlapping = hours_between(first, last)
    hours = tuple(h for h in overlapping if now >= h + HOUR)
    incomplete = tuple(h for h in overlapping if now < h + HOUR)
    if not hours:
        raise EmptySelectionError(
            f"no complete UTC hour in [{start}, {end}): the hours from {hour_key(first)} on "
            f"are not over yet (now is {now})"
        )
    if hours[0] < first_partition_hour:
        raise BeforePartitionsStartError(
            f"the window starts at {hour_key(hours[0])}, before the first partition "
            f"{hour_key(first_partition_hour)} (set ATTRIBUTION_PARTITIONS_START earlier)"
        )
    return HourSelection(hours=hours, incomplete=incomplete)



def hour_ranges(hours) -> list[tuple[int, int]]:
    """Consecutive hours as ``(first, last)`` ranges, in order."""
    ordered = sorted(set(int(h) for h in hours))
    starts = [h for i, h in enumerate(ordered) if i == 0 or ordered[i - 1] != h - HOUR]
    ends = [h for i, h in enumerate(ordered) if i == len(ordered) - 1 or ordered[i + 1] != h + HOUR]
    return list(zip(starts, ends))
