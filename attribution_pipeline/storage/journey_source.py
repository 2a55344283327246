"""Journeys for conversions, built the one way the pipeline builds them (D2, D13, D15).

:class:`JourneySource` is used by the ``journeys`` asset, chunk by chunk, and by the exports when
they must recompute the journeys of hours whose frames are gone. It reads what the journey rules
need from MySQL and applies ``core.journey_rules``:

* ``source="clicks"`` (default, D13): the multi-touch settings of the conversions' users and the
  advertiser of their campaigns (spec §5.1), then, for the multi-touch conversions, the click slice
  of their accounts and campaigns from the lookback before the first conversion to the last one,
  through a :class:`~attribution_pipeline.storage.click_reads.ClickWindow` that reads each click
  once however many chunks follow;
* ``source="stored"``: PHP's rebuild semantics, the journeys stored in ``202_conversion_touchpoints``.

Every read is retried on transient MySQL errors (the database's retry policy).
"""

import time
from dataclasses import dataclass

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core import journey_rules as rules
from attribution_pipeline.core.frames import FrameStats
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import prosper_reads
from attribution_pipeline.storage.click_reads import ClickWindow, clicks_by_id
from attribution_pipeline.storage.database import Database


@dataclass(frozen=True)
class JourneyRule:
    """The journey rule's settings (D2, D13)."""

    lookback_seconds: int = 30 * 86400
    touch_cap: int = 25
    source: str = "clicks"  # "clicks" or "stored"

    @classmethod
    def from_settings(cls, settings: Settings) -> "JourneyRule":
        return cls(lookback_seconds=settings.lookback_seconds, touch_cap=settings.touch_cap,
                   source=settings.journey_source)


class JourneySource:
    """frames.JOURNEYS for chunks of conversions of a fixed set of (user, campaign) pairs."""

    def __init__(self, db: Database, rule: JourneyRule, logger=None):
        self._db = db
        self._rule = rule
        self._logger = logger
        self._settings: pl.DataFrame | None = None
        self._networks: pl.DataFrame | None = None
        self._window: ClickWindow | None = None

    @property
    def prepared(self) -> bool:
        return self._rule.source == "stored" or self._window is not None

    def prepare(self, pairs: pl.DataFrame, stats: FrameStats | None = None) -> None:
        """Read the multi-touch settings and campaign advertisers of ``pairs`` (user_id,
        campaign_id: every pair the later chunks hold) and open the click window over the
        multi-touch ones. Not needed for stored journeys."""
        if self._rule.source == "stored":
            return
        started = time.perf_counter()
        users = pairs.get_column("user_id").unique().to_list()
        campaigns = pairs.get_column("campaign_id").unique().to_list()

        def read():
            with self._db.engine().connect() as conn:
                return prosper_reads.multi_touch_settings(conn, users), prosper_reads.campaign_networks(conn, campaigns)

        self._settings, self._networks = self._db.retry.run(read, what="read multi-touch settings", logger=self._logger)
        multi = rules.multi_touch_flags(pairs, self._settings, self._networks).filter(pl.col("multi_touch"))
        self._window = ClickWindow(self._db, multi.get_column("user_id").unique().to_list(),
                                   multi.get_column("campaign_id").unique().to_list(), logger=self._logger)
        if stats is not None:
            stats.add_stage("read_settings", time.perf_counter() - started)

    def journeys(self, conversions: pl.DataFrame, stats: FrameStats | None = None) -> pl.DataFrame:
        """The journeys of ``conversions`` (frames.CONVERSIONS rows whose click was found, of the
        prepared pairs), recording reads, build time and counts in ``stats``."""
        stats = stats if stats is not None else FrameStats()
        if conversions.height == 0:
            return frames.empty(frames.JOURNEYS)
        started = time.perf_counter()
        if self._rule.source == "stored":
            stored, clicks = self._stored(conversions)
        else:
            flagged = rules.multi_touch_flags(conversions, self._settings, self._networks)
            clicks = self._click_slice(flagged)
        stats.add_stage("read_clicks", time.perf_counter() - started)
        stats.count("duplicated_click_ids", rules.duplicated_click_ids(clicks).height)
        started = time.perf_counter()
        unique_clicks = rules.dedupe_clicks(clicks)
        if self._rule.source == "stored":
            out = rules.stored_journeys(conversions, stored, unique_clicks)
        else:
            out = rules.build_journeys(flagged, unique_clicks, lookback_seconds=self._rule.lookback_seconds,
                                       touch_cap=self._rule.touch_cap)
        stats.add_stage("build", time.perf_counter() - started)
        stats.count("touches", out.height)
        if self._window is not None:
            stats.counters["clicks_read"] = self._window.rows_read
            stats.counters["click_queries"] = self._window.queries
        return out

    def _click_slice(self, flagged: pl.DataFrame) -> pl.DataFrame:
        """Every click the multi-touch conversions of ``flagged`` may use (their lookback windows)."""
        multi = flagged.filter(pl.col("multi_touch"))
        if multi.height == 0:
            return frames.empty(frames.CLICKS)
        lo = int(multi.get_column("conv_time").min()) - self._rule.lookback_seconds
        return self._window.between(lo, int(multi.get_column("conv_time").max()))

    def _stored(self, conversions: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        def read():
            with self._db.engine().connect() as conn:
                found = prosper_reads.stored_touchpoints(conn, conversions.get_column("conv_id").to_list())
                return found, clicks_by_id(conn, found.get_column("click_id").unique().to_list())

        return self._db.retry.run(read, what="read stored journeys", logger=self._logger)


def counted(conversions: pl.DataFrame) -> pl.DataFrame:
    """The conversions that count: their click row was found (D16)."""
    return conversions.filter(pl.col("click_rows") > 0)


def journeys_of(db: Database, rule: JourneyRule, hours: list[int], users: list[int] | None,
                logger=None) -> pl.DataFrame:
    """frames.JOURNEYS of ``hours`` (any set of hours) for ``users`` (None: every user), read and
    built from scratch: what the exports use for hours whose frames are gone."""
    if not hours or users == []:
        return frames.empty(frames.JOURNEYS)

    def read():
        with db.engine().connect() as conn:
            return prosper_reads.conversions(conn, sorted(hours), users)

    conv = counted(db.retry.run(read, what="read conversions", logger=logger)).filter(
        pl.col("date_hour").is_in(list(hours)))
    source = JourneySource(db, rule, logger)
    source.prepare(conv.select("user_id", "campaign_id").unique())
    return source.journeys(conv)
