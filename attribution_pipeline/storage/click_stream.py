"""The clicks journeys are built from, read in bounded slices (D2, D15, D36).

A journey is the newest ``cap`` clicks of the conversion's account and campaign within the
lookback (D2). A range run processes its chunks in time order, so :class:`ClickStream` reads
``202_clicks`` forward, one *slice* of time after another, each read once, and after each slice
keeps only what a later conversion can still use: per (account, campaign), the newest ``cap``
distinct clicks (a click older than those can never be among the newest ``cap`` of a later
conversion: the ``cap`` newer ones are in its window too), and nothing older than the earliest
window a later conversion can have. Memory therefore holds one slice of clicks plus ``cap`` clicks
per (account, campaign) pair, instead of the whole lookback (30 days of clicks: with 10M clicks
over a month, more than the memory budget by itself).

The history before a request's first conversion is read backward (D36): from that conversion
back, a span of time at a time, only for the pairs that have fewer than ``cap`` clicks so far,
until every pair has ``cap`` or the window's start is reached. Only those newest ``cap`` can
serve the request, so a busy campaign needs minutes of its history, not 30 days: an hourly run
that recomputes one hour no longer reads the whole lookback of its accounts' clicks.

A slice ends where the rows it held reach about ``slice_rows`` (the next slice's length is adapted
to the density of the last one), so a day of heavy traffic is read in several slices and a quiet
month in one. The conversions that fall in a slice are served with it: their journeys are built
from the kept clicks plus the slice. Requests must move forward in time to read each click once;
a request that reaches back (the exports' scattered hours) starts again from its own window.

Duplicated click ids (D15) are collapsed as they are read, by ``core.journey_rules.dedupe_clicks``:
the kept rows are one per click id. Within the history read backward the earliest copy wins as if
the whole window had been read: the kept click ids' copies are looked up by id once the history
is read (an older copy moves its click back in time, and its pair is read again). A copy of a
click id whose earlier copy was dropped by a forward slice (more than ``cap`` newer clicks of its
campaign came between them) counts as a click of its own time; the click window this replaces had
the same boundary at its lookback edge.
"""

import time
from collections.abc import Iterator, Sequence

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core.frames import CLICKS
from attribution_pipeline.core.journey_rules import dedupe_clicks, duplicated_click_ids
from attribution_pipeline.storage.click_reads import clicks, clicks_by_id
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
                 touch_cap: int, slice_rows: int, pairs: pl.DataFrame | None = None, logger=None):
        """``pairs`` (``user_id``, ``aff_campaign_id``): the pairs whose conversions will be served
        (default: every user with every campaign); the history before a request is read for them."""
        self._db = db
        self._logger = logger
        self._users = sorted(set(int(u) for u in users))
        self._campaigns = sorted(set(int(c) for c in campaigns))
        grid = pl.DataFrame({"user_id": self._users}, schema={"user_id": pl.Int64}).join(
            pl.DataFrame({"aff_campaign_id": self._campaigns}, schema={"aff_campaign_id": pl.Int64}), how="cross")
        self._pairs = grid if pairs is None else (
            pairs.select(pl.col("user_id").cast(pl.Int64), pl.col("aff_campaign_id").cast(pl.Int64)).unique()
            .join(grid, on=_PAIR, how="semi"))
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

    def _read(self, lo: int, hi: int, pairs: pl.DataFrame | None = None) -> pl.DataFrame:
        """The clicks of ``pairs`` (every pair of the stream by default) in ``[lo, hi]``: the
        accounts' clicks on the campaigns (pairs of an account with another's campaign too)."""
        users = self._users if pairs is None else pairs.get_column("user_id").unique().sort().to_list()
        campaigns = self._campaigns if pairs is None else pairs.get_column("aff_campaign_id").unique().sort().to_list()

        return self._counted(lambda conn: clicks(conn, users, campaigns, lo, hi), "read clicks")

    def _counted(self, query, what: str) -> pl.DataFrame:
        """``query(conn)`` on a connection of its own, retried, timed and counted."""
        def read():
            with self._db.engine().connect() as conn:
                return query(conn)

        started = time.perf_counter()
        df = self._db.retry.run(read, what=what, logger=self._logger)
        self.read_seconds += time.perf_counter() - started
        self.rows_read += df.height
        self.queries += 1
        return df

    def _start(self, lo: int, first: int) -> None:
        """Be ready to serve conversions from ``first`` on, whose windows start at ``lo``."""
        if self._hi is None or lo < self._lo or first <= self._hi or lo > self._hi:
            # nothing kept, or kept clicks that cannot serve this request: start from its window
            self._fill_back(lo, first)
        else:
            self._kept, self._lo = self._kept.filter(pl.col("click_time") >= lo), lo

    def _fill_back(self, lo: int, first: int) -> None:
        """Keep what conversions from ``first`` on can use of the clicks in ``[lo, first - 1]``:
        per pair, the newest ``cap`` distinct clicks (D36). Read backward from ``first``, a span at
        a time, only for the pairs that have fewer than ``cap`` so far, until each has ``cap`` or
        ``lo`` is reached; then the kept click ids' older copies in the window (D15: the earliest
        row of a click id wins, as if the whole window had been read)."""
        kept, hi, span, forward_span = frames.empty(CLICKS), first - 1, self._span, None
        wanting = self._pairs
        while True:
            while wanting.height and hi >= lo:
                start = max(lo, hi - span + 1)
                read = self._read(start, hi, wanting)
                span = self._next_span(read.height, hi - start + 1)
                forward_span = forward_span or span  # the density just before ``first``
                kept, hi = self._merged(kept, read, first), start - 1
                wanting = self._wanting(kept)
            older = self._older_copies(kept, lo, first - 1)
            if older.height == 0:
                break
            # a kept click counts at its older copy's time: its pair's clicks pruned as older than
            # it may be among the newest ``cap`` after all: read the pair's span again
            moved = kept.join(older.select("click_id"), on="click_id", how="semi").select(_PAIR).unique()
            again = self._read(hi + 1, first - 1, moved)
            self.duplicates += older.get_column("click_id").n_unique()
            kept = self._merged(kept, pl.concat([again, older]), first, count=False)
            wanting = self._wanting(kept)
        self._kept, self._lo, self._hi = kept, lo, first - 1
        self._span = forward_span or self._span

    def _merged(self, kept: pl.DataFrame, read: pl.DataFrame, first: int, count: bool = True) -> pl.DataFrame:
        """What conversions from ``first`` on can use of ``kept`` and ``read`` (deduplicated)."""
        raw = pl.concat([kept, read])
        self.most_rows = max(self.most_rows, raw.height)
        if count:
            self.duplicates += duplicated_click_ids(raw).height
        return keep_for_later(dedupe_clicks(raw), first - 1, self._lookback, self._cap)

    def _wanting(self, kept: pl.DataFrame) -> pl.DataFrame:
        """The pairs with fewer than ``cap`` kept clicks."""
        full = kept.group_by(_PAIR).len().filter(pl.col("len") >= self._cap).select(_PAIR)
        return self._pairs.join(full, on=_PAIR, how="anti")

    def _older_copies(self, kept: pl.DataFrame, lo: int, hi: int) -> pl.DataFrame:
        """Rows of the stream's accounts and campaigns in ``[lo, hi]`` with a kept click id and an
        earlier time."""
        if kept.height == 0:
            return kept
        copies = self._copies(kept.get_column("click_id").to_list())
        return (copies.filter(pl.col("click_time").is_between(max(0, lo), hi), pl.col("user_id").is_in(self._users),
                              pl.col("aff_campaign_id").is_in(self._campaigns))
                .join(kept.select("click_id", kept_time="click_time"), on="click_id")
                .filter(pl.col("click_time") < pl.col("kept_time")).drop("kept_time"))

    def _copies(self, click_ids: list[int]) -> pl.DataFrame:
        """Every 202_clicks row of ``click_ids``."""
        return self._counted(lambda conn: clicks_by_id(conn, click_ids), "read click copies")

    def _add_pairs(self, conversions: pl.DataFrame) -> None:
        """Pairs of ``conversions`` the stream was not told of (within its accounts and campaigns):
        served too, starting again from the request's window (their history was not read)."""
        new = (conversions.select(pl.col("user_id").cast(pl.Int64), aff_campaign_id=pl.col("campaign_id").cast(pl.Int64))
               .unique().filter(pl.col("user_id").is_in(self._users) & pl.col("aff_campaign_id").is_in(self._campaigns))
               .join(self._pairs, on=_PAIR, how="anti"))
        if new.height:
            self._pairs, self._hi = pl.concat([self._pairs, new]), None

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
        self._add_pairs(multi)
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
