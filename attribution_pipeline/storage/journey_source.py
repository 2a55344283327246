"""Journeys for conversions, built the one way the pipeline builds them (D2, D13, D15).

:class:`JourneySource` is used by the ``journeys`` asset, chunk by chunk, and by the exports when
they must recompute the journeys of hours whose frames are gone. It reads what the journey rules
need from MySQL and applies ``core.journey_rules``:

* ``source="clicks"`` (default, D13): the multi-touch settings of the conversions' users and the
  advertiser of their campaigns (spec §5.1), then, for the multi-touch conversions, the clicks of
  their accounts and campaigns through a
  :class:`~attribution_pipeline.storage.click_stream.ClickStream`, which reads each click once
  however many chunks follow, in slices, and keeps only the clicks later conversions can use
  (memory: one slice plus ``cap`` clicks per account and campaign, not the 30-day lookback);
* ``source="stored"``: PHP's rebuild semantics, the journeys stored in ``202_conversion_touchpoints``.

Every read is retried on transient MySQL errors (the database's retry policy).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core import journey_rules as rules
from attribution_pipeline.core.chunk_plan import click_slice_rows
from attribution_pipeline.core.frames import FrameStats
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import prosper_reads
from attribution_pipeline.storage.click_reads import clicks_by_id
from attribution_pipeline.storage.click_stream import ClickStream
from attribution_pipeline.storage.database import Database


@dataclass(frozen=True)
class JourneyRule:
    """The journey rule's settings (D2, D13)."""

    lookback_seconds: int = 30 * 86400
    touch_cap: int = 25
    source: str = "clicks"  # "clicks" or "stored"
    click_slice_rows: int = 1_000_000  # about how many click rows one read holds (ClickStream)

    @classmethod
    def from_settings(cls, settings: Settings) -> "JourneyRule":
        return cls(lookback_seconds=settings.lookback_seconds, touch_cap=settings.touch_cap,
                   source=settings.journey_source, click_slice_rows=click_slice_rows(settings.memory_budget_mb))


class JourneySource:
    """frames.JOURNEYS for chunks of conversions of a fixed set of (user, campaign) pairs."""

    def __init__(self, db: Database, rule: JourneyRule, logger=None):
        self._db = db
        self._rule = rule
        self._logger = logger
        self._settings: pl.DataFrame | None = None
        self._networks: pl.DataFrame | None = None
        self._stream: ClickStream | None = None

    @property
    def prepared(self) -> bool:
        return self._rule.source == "stored" or self._stream is not None

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
        rule = self._rule
        self._stream = ClickStream(self._db, multi.get_column("user_id").unique().to_list(),
                                   multi.get_column("campaign_id").unique().to_list(),
                                   lookback_seconds=rule.lookback_seconds, touch_cap=rule.touch_cap,
                                   slice_rows=rule.click_slice_rows, logger=self._logger,
                                   pairs=multi.select("user_id", aff_campaign_id="campaign_id"))
        if stats is not None:
            stats.add_stage("read_settings", time.perf_counter() - started)

    def journeys(self, conversions: pl.DataFrame, stats: FrameStats | None = None,
                 split: Callable[[pl.DataFrame], list[pl.DataFrame]] | None = None) -> pl.DataFrame:
        """The journeys of ``conversions`` (frames.CONVERSIONS rows whose click was found, of the
        prepared pairs), recording reads, build time and counts in ``stats``. ``split`` cuts the
        conversions of a slice into pieces built one after the other (an hour over the memory
        budget, ``core/chunk_plan.py``); each journey is built whole, so pieces change nothing."""
        stats = stats if stats is not None else FrameStats()
        if conversions.height == 0:
            return frames.empty(frames.JOURNEYS)
        started = time.perf_counter()
        if self._rule.source == "stored":
            out = self._stored_journeys(conversions, stats)
        else:
            read_before = self._stream.read_seconds
            duplicates = self._stream.duplicates
            flagged = rules.multi_touch_flags(conversions, self._settings, self._networks)
            parts = [part for due, clicks in self._stream.serve(flagged) for part in self._build(due, clicks, split)]
            out = pl.concat(parts) if len(parts) > 1 else parts[0] if parts else frames.empty(frames.JOURNEYS)
            reading = self._stream.read_seconds - read_before
            stats.add_stage("read_clicks", reading)
            stats.add_stage("build", time.perf_counter() - started - reading)
            stats.count("duplicated_click_ids", self._stream.duplicates - duplicates)
            stats.counters["clicks_read"] = self._stream.rows_read
            stats.counters["click_queries"] = self._stream.queries
            stats.counters["most_clicks_held"] = max(stats.counters.get("most_clicks_held", 0), self._stream.most_rows)
        stats.count("touches", out.height)
        return out

    def _build(self, due: pl.DataFrame, clicks: pl.DataFrame, split) -> list[pl.DataFrame]:
        """The journeys of ``due`` from ``clicks``, in the pieces ``split`` cuts (one if None)."""
        build = lambda convs, slice_: rules.build_journeys(  # noqa: E731
            convs, slice_, lookback_seconds=self._rule.lookback_seconds, touch_cap=self._rule.touch_cap)
        if split is None:
            return [build(due, clicks)]
        return [build(piece, _clicks_of(piece, clicks)) for piece in split(due)]

    def _stored_journeys(self, conversions: pl.DataFrame, stats: FrameStats) -> pl.DataFrame:
        """PHP's rebuild semantics: the journeys stored in 202_conversion_touchpoints (D13)."""
        started = time.perf_counter()
        stored, clicks = self._stored(conversions)
        stats.add_stage("read_clicks", time.perf_counter() - started)
        stats.count("duplicated_click_ids", rules.duplicated_click_ids(clicks).height)
        started = time.perf_counter()
        out = rules.stored_journeys(conversions, stored, rules.dedupe_clicks(clicks))
        stats.add_stage("build", time.perf_counter() - started)
        return out

    def _stored(self, conversions: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        def read():
            with self._db.engine().connect() as conn:
                found = prosper_reads.stored_touchpoints(conn, conversions.get_column("conv_id").to_list())
                return found, clicks_by_id(conn, found.get_column("click_id").unique().to_list())

        return self._db.retry.run(read, what="read stored journeys", logger=self._logger)


def _clicks_of(conversions: pl.DataFrame, clicks: pl.DataFrame) -> pl.DataFrame:
    """The clicks of the accounts and campaigns of ``conversions`` (a piece of a slice)."""
    if clicks.height == 0:
        return clicks
    pairs = conversions.filter(pl.col("multi_touch")).select("user_id", aff_campaign_id="campaign_id").unique()
    return clicks.join(pairs, on=["user_id", "aff_campaign_id"], how="semi")


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
