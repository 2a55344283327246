"""UTC hour partitions and the hour selection rule (decisions D3, D17).

Hour ``H`` (an epoch second divisible by 3600) holds the conversions with
``H <= conv_time <= H + 3599``. Partition keys are Dagster's hourly keys (``2024-06-01-09:00``).
"""

import os
from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from attribution_pipeline.errors import (
    BeforePartitionsStartError,
    EmptySelectionError,
    InvalidWindowError,
)

HOUR = 3600
KEY_FORMAT = "%Y-%m-%d-%H:%M"
DEFAULT_PARTITIONS_START = "2023-01-01-00:00"


def partitions_start() -> str:
    """First partition, from ``ATTRIBUTION_PARTITIONS_START`` (a date, an hour key or ISO-8601)."""
    raw = os.environ.get("ATTRIBUTION_PARTITIONS_START", "").strip() or DEFAULT_PARTITIONS_START
    epoch = parse_time(raw)
    return hour_key(floor_hour(epoch))


def build_partitions_def() -> dg.HourlyPartitionsDefinition:
    return dg.HourlyPartitionsDefinition(start_date=partitions_start(), timezone="UTC", fmt=KEY_FORMAT)


def floor_hour(epoch: int) -> int:
    return epoch - epoch % HOUR


def hour_key(hour: int) -> str:
    return datetime.fromtimestamp(hour, tz=timezone.utc).strftime(KEY_FORMAT)


def key_hour(key: str) -> int:
    return int(datetime.strptime(key, KEY_FORMAT).replace(tzinfo=timezone.utc).timestamp())


def hours_between(first_hour: int, last_hour: int) -> list[int]:
    """Every hour start from ``first_hour`` to ``last_hour`` inclusive."""
    return list(range(first_hour, last_hour + HOUR, HOUR))


def hours_of_time_window(window: dg.TimeWindow) -> list[int]:
    start = int(window.start.timestamp())
    end = int(window.end.timestamp())
    return list(range(start, end, HOUR))


def parse_time(value: str | int) -> int:
    """Epoch seconds, or ISO-8601 (UTC when it has no offset), or a Dagster hour key."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text:
        raise InvalidWindowError("empty time value")
    if text.lstrip("-").isdigit():
        return int(text)
    for fmt in (KEY_FORMAT,):
        try:
            return int(datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp())
        except ValueError:
            pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidWindowError(
            f"cannot read time {text!r}: use epoch seconds or ISO-8601 such as 2024-06-01T09:00:00Z"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


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

    Raises a named error, before anything runs, when ``start >= end``, when no complete hour is
    selected, or when the window reaches before the first partition.
    """
    if start >= end:
        raise InvalidWindowError(
            f"start ({start}) must be earlier than end ({end}); the window is [start, end)"
        )
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


#: Tags that make one Dagster run cover a range of partitions (what UI backfills with a
#: single-run backfill policy set, and what `dagster asset materialize --partition-range` sets).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def range_tags(first_hour: int, last_hour: int) -> dict[str, str]:
    return {RANGE_START_TAG: hour_key(first_hour), RANGE_END_TAG: hour_key(last_hour)}
