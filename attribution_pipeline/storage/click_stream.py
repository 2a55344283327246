"""The clicks journeys are built from, read forward in time in bounded slices (D2, D15).

A journey is the newest ``cap`` clicks of the conversion's account and campaign within the
lookback (D2). A range run processes its chunks in time order, so :class:`ClickStream` reads
``202_clicks`` forward, one *slice* of time after another, each read once, and after each slice
keeps only what a later conversion can still use: per (account, campaign), the newest ``cap``
distinct clicks (a click older than those can never be among the newest ``cap`` of a later
conversion: the ``cap`` newer ones are in its window too), and nothing older than the earliest
window a later conversion can have. Memory therefore holds one slice of clicks plus ``cap`` clicks
per (account, campaign) pair, instead of the whole lookback (30 days of clicks: with 10M clicks
over a month, more than the memory budget by itself).

A slice ends where the rows it held reach about ``slice_rows`` (the next slice's length is adapted
to the density of the last one), so a day of heavy traffic is read in several slices and a quiet
month in one. The conversions that fall in a slice are served with it: their journeys are built
from the kept clicks plus the slice. Requests must move forward in time to read each click once;
a request that reaches back (the exports' scattered hours) starts again from its own window.

Duplicated click ids (D15) are collapsed as they are read, by ``core.journey_rules.dedupe_clicks``:
the kept rows are one per click id. A copy of a click id whose earlier copy was dropped (more than
``cap`` newer clicks of its campaign came between them) counts as a click of its own time; the
click window this replaces had the same boundary at its lookback edge.
"""

import time
from collections.abc import Iterator, Sequence

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core.frames import CLICKS
from attribution_pipeline.core.journey_rules import dedupe_clicks, duplicated_click_ids
from attribution_pipeline.storage.click_reads import clicks
from attribution_pipeline.storage.database import Database

HOUR = 3600
#: Shortest and longest slice read (seconds): a slice is adapted to the rows the last one held.
MIN_SPAN, MAX_SPAN = 60, 400 * 86400
_PAIR = ["user_id", "aff_campaign_id"]


def keep_for_later(clicks_seen: pl.DataFrame, after: int, lookback_seconds: int, touch_cap: int) -> pl.DataFrame:
    """The clicks of ``clicks_seen`` (deduplicated, every click up to ``after`` since the window's
    start) that a conversion later than ``after`` can still use: within its lookback, and among
    the newest ``touch_cap`` of its (account, campaign) at ``after``."""
    return (
        clicks_seen.filter(pl.col("click_time") >= after + 1 - lookback_seconds)
        .sort([*_PAIR, "click_time", "click_id"])
        .filter(pl.int_range(pl.len()).reverse().over(_PAIR) < touch_cap)
    )


class ClickStream:
    """The clicks of fixed accounts and campaigns, served slice by slice to conversions in time order."""

    def __init__(self, db: Database, users: Sequence[int], campaigns: Sequence[int], *, lookback_seconds: int,
                 touch_cap: int, slice_rows: int, logger=None):
        self._db = db
        self._logger = logger
        self._users = sorted(set(int(u) for u in users))
        self._campaigns = sorted(set(int(c) for c in campaigns))
        self._lookback = int(lookback_seconds)
        self._cap = int(touch_cap)
        self._slice_rows = max(1, int(slice_rows))
        self._kept = frames.empty(CLICKS)  # deduplicated; what later conversions can use
        self._lo: int | None = None  # the kept clicks are complete (up to the pruning) from here...
        self._hi: int | None = None  # ... to here, inclusive
        self._span = HOUR
        self.rows_read = 0
        self.queries = 0
        self.duplicates = 0  # click ids read more than once within a slice and the kept rows
        self.most_rows = 0  # the most click rows held at once (kept + one slice)
        self.read_seconds = 0.0

    def _read(self, lo: int, hi: int) -> pl.DataFrame:
        def read():
            with self._db.engine().connect() as conn:
                return clicks(conn, self._users, self._campaigns, lo, hi)

        started = time.perf_counter()
        df = self._db.retry.run(read, what="read clicks", logger=self._logger)
        self.read_seconds += time.perf_counter() - started
        self.rows_read += df.height
        self.queries += 1
        return df

    def _start(self, lo: int, first: int) -> None:
        """Be ready to serve conversions from ``first`` on, whose windows start at ``lo``."""
        if self._hi is None or lo < self._lo or first <= self._hi or lo > self._hi:
            # nothing kept, or kept clicks that cannot serve this request: start from its window
            self._kept, self._lo, self._hi = frames.empty(CLICKS), lo, lo - 1
        else:
            self._kept, self._lo = self._kept.filter(pl.col("click_time") >= lo), lo

    def _next_span(self, rows: int, span: int) -> int:
        """The next slice's length: about ``slice_rows`` rows at the density just read."""
        wanted = span * 4 if rows == 0 else span * self._slice_rows // rows
        return int(min(MAX_SPAN, max(MIN_SPAN, span // 4, min(wanted, span * 4))))

    def serve(self, conversions: pl.DataFrame) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        """``(conversions, clicks)`` pairs that cover ``conversions`` (frames.CONVERSIONS with
        ``multi_touch``): for each conversion of a pair, ``clicks`` (deduplicated) holds every
        click its journey can use. Single-touch conversions come first, with no clicks."""
        multi = conversions.filter(pl.col("multi_touch"))
        single = conversions.filter(~pl.col("multi_touch"))
        if single.height:
            yield single, frames.empty(CLICKS)
        if multi.height == 0:
            return
        first, last = int(multi.get_column("conv_time").min()), int(multi.get_column("conv_time").max())
        self._start(max(0, first - self._lookback), first)
        while self._hi < last:
            lo = self._hi + 1
            hi = min(last, lo + self._span - 1)
            read = self._read(lo, hi)
            self._span = self._next_span(read.height, hi - lo + 1)
            raw = pl.concat([self._kept, read])
            self.most_rows = max(self.most_rows, raw.height)
            self.duplicates += duplicated_click_ids(raw).height
            seen = dedupe_clicks(raw)
            del raw, read
            due = multi.filter(pl.col("conv_time").is_between(lo, hi))
            if due.height:
                yield due, seen
            self._kept = keep_for_later(seen, hi, self._lookback, self._cap)
            self._hi = hi
            self._lo = max(self._lo, hi + 1 - self._lookback)
