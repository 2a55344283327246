"""The click stream the journeys are built from (storage/click_stream.py): slices read forward once,
only what later conversions can use kept, and journeys equal to those built from the whole slice."""

import random

import polars as pl
import pytest

import scenarios
from attribution_pipeline.core import frames
from attribution_pipeline.core import journey_rules as J
from attribution_pipeline.storage import click_reads, database
from attribution_pipeline.storage.click_stream import ClickStream, keep_for_later
from attribution_pipeline.storage.database import Database
from test_journeys import clicks_frame, conversions_frame

T = 1717232400  # 2024-06-01 09:00 UTC
HOUR, DAY = 3600, 86400


class MemoryStream(ClickStream):
    """A ClickStream reading an in-memory 202_clicks instead of the database."""

    def __init__(self, table: pl.DataFrame, **kw):
        super().__init__(None, table["user_id"].unique().to_list(), table["aff_campaign_id"].unique().to_list(), **kw)
        self.table = table
        self.reads: list[tuple[int, int]] = []
        self.range_rows = 0

    def _read(self, lo, hi, pairs=None):
        self.reads.append((lo, hi))
        users, campaigns = (self._users, self._campaigns) if pairs is None else (
            pairs["user_id"].to_list(), pairs["aff_campaign_id"].to_list())
        df = self.table.filter(pl.col("click_time").is_between(max(0, lo), hi), pl.col("user_id").is_in(users),
                               pl.col("aff_campaign_id").is_in(campaigns))
        self.rows_read += df.height
        self.range_rows += df.height
        self.queries += 1
        return df

    def _copies(self, click_ids):
        df = self.table.filter(pl.col("click_id").is_in(click_ids))
        self.rows_read += df.height
        self.queries += 1
        return df


def random_traffic(seed: int, lookback: int):
    """Clicks of 2 accounts x 3 campaigns over 40 days (dense, sparse and empty stretches, exact
    duplicates, a duplicate at another time) and conversions over the last 10 days."""
    rng = random.Random(seed)
    rows, click_id = [], 1000
    for user in (1, 2):
        for campaign in (10, 11, 12):
            rate = rng.choice([0.2, 2, 20])  # clicks an hour
            t = T - 40 * DAY
            while t < T + 10 * DAY:
                t += int(rng.expovariate(rate / HOUR)) + 1
                if campaign == 12 and T - 20 * DAY < t < T - 5 * DAY:
                    continue  # a quiet fortnight
                rows.append((click_id, user, campaign, t))
                if rng.random() < 0.01:
                    rows.append((click_id, user, campaign, t))  # stored twice (D15)
                if rng.random() < 0.005:
                    rows.append((click_id, user, campaign, t + 5))  # a copy 5 s later: the earliest row wins
                click_id += rng.choice([1, 1, 1, 2])
    clicks = clicks_frame(rows)
    unique = J.dedupe_clicks(clicks).filter(pl.col("click_time") >= T)
    picked = unique.sample(n=300, seed=seed).sort("click_time")
    convs = [(i + 1, c, u, k, t + rng.randrange(0, 3 * HOUR)) for i, (c, u, k, t) in
             enumerate(picked.select("click_id", "user_id", "aff_campaign_id", "click_time").rows())]
    conversions = conversions_frame(convs, clicks).with_columns(multi_touch=pl.col("conv_id") % 7 != 0)
    return clicks, conversions


def sorted_journeys(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort("conv_id", "position")


@pytest.mark.parametrize("seed,slice_rows,chunk_hours", [(1, 50, 7), (2, 500, 24), (3, 5, 1), (4, 100_000, 48)])
def test_journeys_from_the_stream_equal_journeys_from_the_whole_slice(seed, slice_rows, chunk_hours):
    lookback, cap = 3 * DAY, 25
    clicks, conversions = random_traffic(seed, lookback)
    whole = J.build_journeys(conversions, J.dedupe_clicks(clicks), lookback_seconds=lookback, touch_cap=cap)
    stream = MemoryStream(clicks, lookback_seconds=lookback, touch_cap=cap, slice_rows=slice_rows)
    hours = conversions.select((pl.col("conv_time") // HOUR * HOUR).alias("h")).unique().sort("h")["h"].to_list()
    first = hours[0]
    parts = []
    for start in range(first, hours[-1] + 1, chunk_hours * HOUR):  # consecutive chunks, in time order
        chunk = conversions.filter(pl.col("conv_time").is_between(start, start + chunk_hours * HOUR - 1))
        parts += [J.build_journeys(due, seen, lookback_seconds=lookback, touch_cap=cap)
                  for due, seen in stream.serve(chunk)]
    assert sorted_journeys(pl.concat(parts)).equals(sorted_journeys(whole))
    # each click of the span read at most once, in slices that never overlap: the history before
    # the first conversion backward (D36), then forward
    span = clicks.filter(pl.col("click_time").is_between(
        conversions.filter("multi_touch")["conv_time"].min() - lookback,
        conversions.filter("multi_touch")["conv_time"].max()))
    ranges = sorted(stream.reads)
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:]))
    assert stream.range_rows <= span.height
    if slice_rows <= 500:  # memory: a slice and cap clicks per (account, campaign), not the lookback
        assert stream.most_rows < span.height / 3
        assert stream.most_rows <= 6 * cap + 8 * slice_rows


def test_only_clicks_a_later_conversion_can_use_are_kept():
    rows = [(i, 1, 10, T - 1000 + 10 * i) for i in range(1, 31)] + [(100, 2, 10, T - 5000), (101, 1, 11, T - 20)]
    kept = keep_for_later(J.dedupe_clicks(clicks_frame(rows)), after=T, lookback_seconds=1000, touch_cap=3)
    # (1, 10): the newest 3 at T; (2, 10): older than any later window (T + 1 - 1000); (1, 11): kept
    assert kept.select("click_id").to_series().to_list() == [28, 29, 30, 101]


def test_a_request_that_reaches_back_starts_again_from_its_own_window():
    clicks = clicks_frame([(i, 1, 10, T - 50 * HOUR + i * HOUR) for i in range(60)])
    conv = lambda cid, t: conversions_frame([(cid, cid, 1, 10, t)], clicks).with_columns(multi_touch=pl.lit(True))  # noqa: E731
    stream = MemoryStream(clicks, lookback_seconds=5 * HOUR, touch_cap=25, slice_rows=1000)
    late = [J.build_journeys(d, s, lookback_seconds=5 * HOUR, touch_cap=25) for d, s in stream.serve(conv(55, T + 5 * HOUR))]
    early = [J.build_journeys(d, s, lookback_seconds=5 * HOUR, touch_cap=25) for d, s in stream.serve(conv(20, T - 30 * HOUR))]
    assert late[0]["click_id"].to_list() == [50, 51, 52, 53, 54, 55]
    assert early[0]["click_id"].to_list() == [15, 16, 17, 18, 19, 20]


def test_the_stream_reads_mariadb_once_per_click(mysql_url):
    engine = database.make_engine(mysql_url)
    with engine.begin() as conn:
        for i in range(200):
            scenarios.add_click(conn, 10_000 + i, 1 + i % 2, 10 + i % 3, T + i * 6 * 3600)
        scenarios.add_click(conn, 10_048, 1, 10, T + 48 * 6 * 3600)  # an exact duplicate (D15)
    stream = ClickStream(Database(mysql_url), [1, 2], [10, 11], lookback_seconds=30 * DAY, touch_cap=3, slice_rows=20)
    with engine.connect() as conn:
        table = click_reads.clicks(conn, [1, 2], [10, 11], 0, T + 300 * DAY)
    memory = MemoryStream(table, lookback_seconds=30 * DAY, touch_cap=3, slice_rows=20)
    for day in range(0, 50, 7):  # one conversion a week, as consecutive chunks would bring them
        conv = conversions_frame([(day, 10_000, 1, 10, T + day * DAY + 3599)]).with_columns(multi_touch=pl.lit(True))
        got = [seen.sort("click_id") for _, seen in stream.serve(conv)]
        want = [seen.sort("click_id") for _, seen in memory.serve(conv)]
        assert len(got) == len(want) == 1 and got[0].equals(want[0])
    assert stream.rows_read == memory.rows_read
    assert memory.range_rows == table.filter(pl.col("click_time") <= T + 49 * DAY + 3599).height
    assert stream.queries == memory.queries and stream.duplicates == 1
    assert frames.CLICKS == dict(got[0].schema)


def whole_and_streamed(clicks: pl.DataFrame, conversions: pl.DataFrame, *, lookback: int, cap: int,
                       pairs: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame, "MemoryStream"]:
    whole = J.build_journeys(conversions, J.dedupe_clicks(clicks), lookback_seconds=lookback, touch_cap=cap)
    stream = MemoryStream(clicks, lookback_seconds=lookback, touch_cap=cap, slice_rows=1000, pairs=pairs)
    got = pl.concat([J.build_journeys(d, s, lookback_seconds=lookback, touch_cap=cap) for d, s in stream.serve(conversions)])
    return sorted_journeys(whole), sorted_journeys(got), stream


def test_the_history_before_a_request_is_read_backward_until_each_pair_has_cap_clicks():
    """D36: a pair with a click a minute for 30 days needs its newest 25 clicks, not the 30 days;
    a pair with few clicks is read back to the start of its window."""
    dense = [(100_000 + i, 1, 10, T - 30 * DAY + 60 * i) for i in range(30 * 24 * 60)]
    sparse = [(10 + i, 2, 10, T - 29 * DAY + i * 5 * DAY) for i in range(6)]
    clicks = clicks_frame(dense + sparse)
    conversions = conversions_frame([(1, 100_000 + 30 * 24 * 60 - 1, 1, 10, T), (2, 15, 2, 10, T + 600)],
                                    clicks).with_columns(multi_touch=pl.lit(True))
    whole, got, stream = whole_and_streamed(clicks, conversions, lookback=30 * DAY, cap=25,
                                            pairs=pl.DataFrame({"user_id": [1, 2], "aff_campaign_id": [10, 10]}))
    assert got.equals(whole)
    assert got.group_by("conv_id").len().sort("conv_id").rows() == [(1, 25), (2, 6)]
    dense_read = sum(1 for lo, hi in stream.reads if lo <= T - DAY)  # reads reaching a day back
    assert stream.range_rows < 200 + 6 and dense_read >= 1  # the dense pair: its last hour or two
    assert min(lo for lo, _ in stream.reads) == T - 30 * DAY  # the sparse pair: its whole window


def test_a_kept_click_with_an_older_copy_counts_at_the_older_time():
    """D15 and D36: a click id stored twice, its copies on either side of where the backward read
    stopped: the earliest row wins, as it does when the whole window is read."""
    m = 60
    rows = [(1, 1, 10, T - 50 * m), (2, 1, 10, T - 40 * m), (3, 1, 10, T - 30 * m), (4, 1, 10, T - 20 * m),
            (3, 1, 10, T - 120 * m), (5, 1, 10, T - 3 * DAY)]
    clicks = clicks_frame(rows)
    conversions = conversions_frame([(1, 4, 1, 10, T)], clicks).with_columns(multi_touch=pl.lit(True))
    whole, got, stream = whole_and_streamed(clicks, conversions, lookback=30 * DAY, cap=3)
    assert got.equals(whole)
    assert got.select("click_id", "click_time").rows() == [(1, T - 50 * m), (2, T - 40 * m), (4, T - 20 * m)]
    assert stream.duplicates == 1


def test_a_pair_the_stream_was_not_told_of_is_served_from_its_own_history():
    rows = [(i, 1, 10 + i % 2, T - DAY + 60 * i) for i in range(100)]
    clicks = clicks_frame(rows)
    conversions = conversions_frame([(1, 99, 1, 11, T), (2, 98, 1, 10, T + 60)], clicks) \
        .with_columns(multi_touch=pl.lit(True))
    told = pl.DataFrame({"user_id": [1], "aff_campaign_id": [10]})
    whole, got, _ = whole_and_streamed(clicks, conversions, lookback=30 * DAY, cap=5, pairs=told)
    assert got.equals(whole) and got.height == 10
