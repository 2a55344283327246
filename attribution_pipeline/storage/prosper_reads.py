"""Reads of Prosper202's users, models, conversions and settings (spec §2.1, §5.1; D3, D13, D15, D16).

Each function is one (or a few) SQLAlchemy Core SELECTs with bound parameters, never a query per
hour, per conversion or per row. Everything returned is a Polars frame with the dtypes of
:mod:`attribution_pipeline.core.frames`.
"""

from collections.abc import Sequence

import polars as pl
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from attribution_pipeline.core import frames
from attribution_pipeline.core.hours import HOUR
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.frame_io import read_by_ids, read_frame

_conv = tables.conversion_logs
_clk = tables.clicks
_usr = tables.users


def active_users(conn: Connection, users: Sequence[int] | None = None) -> list[int]:
    """Ids of the users a run processes: not deleted (D16), optionally only ``users``."""
    stmt = select(_usr.c.user_id).where(_usr.c.user_deleted == 0).order_by(_usr.c.user_id)
    if users:
        stmt = stmt.where(_usr.c.user_id.in_(list(users)))
    return [int(r[0]) for r in conn.execute(stmt)]


def user_rows(conn: Connection, users: Sequence[int]) -> dict[int, int]:
    """user_id -> user_deleted for the given ids that exist."""
    stmt = select(_usr.c.user_id, _usr.c.user_deleted).where(_usr.c.user_id.in_(list(users)))
    return {int(u): int(d) for u, d in conn.execute(stmt)}


def model_rows(conn: Connection, users: Sequence[int], active_only: bool = True) -> list[dict]:
    """Rows of ``202_attribution_models`` of ``users`` (spec §4.2 step 2: ``is_active = 1``)."""
    if not users:
        return []
    m = tables.attribution_models
    stmt = select(m).where(m.c.user_id.in_(list(users))).order_by(m.c.user_id, m.c.created_at.desc(), m.c.model_id)
    if active_only:
        stmt = stmt.where(m.c.is_active == 1)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def model_owners(conn: Connection, model_ids: Sequence[int]) -> list[int]:
    """The users owning ``model_ids`` (ascending)."""
    m = tables.attribution_models
    owners = conn.execute(select(m.c.user_id).where(m.c.model_id.in_(list(model_ids)))).scalars()
    return sorted({int(u) for u in owners})


def model_rows_by_id(conn: Connection, model_ids: Sequence[int]) -> list[dict]:
    m = tables.attribution_models
    stmt = select(m).where(m.c.model_id.in_(list(model_ids)))
    return [dict(r._mapping) for r in conn.execute(stmt)]


_CONVERSION_READ_SCHEMA = {
    "conv_id": pl.Int64,
    "click_id": frames.CLICK_ID,
    "campaign_id": pl.Int64,
    "user_id": pl.Int64,
    "conv_time": pl.Int64,
    "click_time": pl.Int64,
    "payout": pl.Float64,
    "found_click_id": frames.CLICK_ID,
    "found_click_time": pl.Int64,
    "cpc": pl.Float64,
    "ppc_account_id": pl.Int64,
    "landing_page_id": pl.Int64,
    "click_campaign_id": pl.Int64,
}
#: What the reads return: the join rows and the found click's user (D21).
_READ_SCHEMA = {**_CONVERSION_READ_SCHEMA, "found_click_user_id": pl.Int64}


def conversions(conn: Connection, hours: Sequence[int], users: Sequence[int] | None = None) -> pl.DataFrame:
    """The conversions of whole UTC ``hours`` (contiguous), frames.CONVERSIONS.

    Spec 2.1's predicate (``deleted = 0``, inclusive bounds) over whole hours (D3), users not
    deleted (D16). 202_clicks is LEFT joined so that conversions whose click row is missing stay
    visible with ``click_rows = 0`` (D16: skipped downstream, counted by a check). A click id
    present several times in 202_clicks is collapsed to one row (D15: the row with the smallest
    click_time, then click_cpc, then ppc_account_id) and ``click_rows`` says how many there were.
    Only the clicks of the conversion's own user count (D21): see :func:`collapse_conversion_rows`.
    """
    if not hours:
        return frames.empty(frames.CONVERSIONS)
    stmt = _conversions_statement(min(hours), max(hours) + HOUR - 1, users)
    raw = read_frame(conn, stmt, _READ_SCHEMA)
    return collapse_conversion_rows(raw)


def _conversions_statement(lo: int, hi: int, users: Sequence[int] | None):
    """The SELECT of :func:`conversions` for ``lo <= conv_time <= hi``: one row per join row."""
    stmt = (
        select(
            _conv.c.conv_id,
            _conv.c.click_id,
            _conv.c.campaign_id,
            _conv.c.user_id,
            _conv.c.conv_time,
            _conv.c.click_time,
            _conv.c.click_payout.label("payout"),
            _clk.c.click_id.label("found_click_id"),
            _clk.c.click_time.label("found_click_time"),
            _clk.c.click_cpc.label("cpc"),
            _clk.c.ppc_account_id,
            _clk.c.landing_page_id,
            _clk.c.aff_campaign_id.label("click_campaign_id"),
            _clk.c.user_id.label("found_click_user_id"),
        )
        .select_from(
            _conv.join(_usr, _usr.c.user_id == _conv.c.user_id).outerjoin(_clk, _clk.c.click_id == _conv.c.click_id)
        )
        .where(_conv.c.conv_time.between(lo, hi), _conv.c.deleted == 0, _usr.c.user_deleted == 0)
    )
    if users:
        stmt = stmt.where(_conv.c.user_id.in_(list(users)))
    return stmt


def conversions_by_id(conn: Connection, conv_ids: Sequence[int], lo: int, hi: int,
                      users: Sequence[int] | None = None) -> pl.DataFrame:
    """frames.CONVERSIONS of ``conv_ids`` among :func:`conversions`' rows with ``lo <= conv_time <=
    hi`` (any bounds, not whole hours), read by primary key (the journey backfill's batches)."""
    stmt = (_conversions_statement(lo, hi, users).prefix_with("STRAIGHT_JOIN", dialect="mysql")
            .prefix_with("STRAIGHT_JOIN", dialect="mariadb"))
    return collapse_conversion_rows(read_by_ids(conn, _conv.c.conv_id, conv_ids, stmt.where, _READ_SCHEMA))


class ConversionIndex:
    """The conversions of a range's chunks, with one scan of ``202_conversion_logs`` per range.

    Prosper202 has no index on ``conv_time``, so each chunk's :func:`conversions` query scans the
    whole table: a range run of k chunks scanned it k times (30 scans of 14 s each for a month of
    1M conversions in 24-hour chunks; bench/HISTORY.md). The index instead scans the table once,
    for the ids and times of the range's conversions, and reads each chunk's rows by primary key
    (conv_id ranges or lists, :func:`~attribution_pipeline.storage.frame_io.read_by_ids`) with :func:`conversions`' whole predicate
    applied again. Rows added after the scan (conv_id above the maximum read just before it) are
    read by primary key too, and the scan ignores ``deleted``, so a chunk returns what
    :func:`conversions` returns at the time it is read. Two things it cannot see, both rarer than
    a conversion arriving for an hour after its chunk was read (which any range run misses): a row
    whose ``conv_time`` is later changed into the range, and a row committed after the scan with an
    id below one committed before it (concurrent inserts). The next run of those hours has them.
    Memory: 16 bytes per conversion of the range. A range read as one chunk is one
    :func:`conversions` query, without the scan.
    """

    def __init__(self, db: Database, hours: Sequence[int], users: Sequence[int] | None = None, logger=None):
        self._db = db
        self._logger = logger
        self._users = sorted(set(int(u) for u in users)) if users else None
        self._lo, self._hi = min(hours), max(hours) + HOUR - 1
        self._index: pl.DataFrame | None = None
        self._high_water = 0
        self.scans = 0

    def _scan(self) -> None:
        stmt = select(_conv.c.conv_id, _conv.c.conv_time).where(_conv.c.conv_time.between(self._lo, self._hi))
        if self._users:
            stmt = stmt.where(_conv.c.user_id.in_(self._users))

        def read():
            with self._db.engine().connect() as conn:
                high_water = conn.execute(select(func.coalesce(func.max(_conv.c.conv_id), 0))).scalar_one()
                return int(high_water), read_frame(conn, stmt, {"conv_id": pl.Int64, "conv_time": pl.Int64})

        self._high_water, found = self._db.retry.run(read, what="scan conversion ids", logger=self._logger)
        self._index = found.sort("conv_time")
        self.scans += 1

    def conversions(self, hours: Sequence[int]) -> pl.DataFrame:
        """frames.CONVERSIONS of whole ``hours`` (contiguous, inside the range), as :func:`conversions`."""
        if not hours:
            return frames.empty(frames.CONVERSIONS)
        lo, hi = min(hours), max(hours) + HOUR - 1
        if lo < self._lo or hi > self._hi:
            raise ValueError(f"hours {lo}..{hi} are outside the indexed range {self._lo}..{self._hi}")
        if self._index is None and (lo, hi) == (self._lo, self._hi):  # the whole range: one query
            def read_whole():
                with self._db.engine().connect() as conn:
                    return conversions(conn, hours, self._users)

            return self._db.retry.run(read_whole, what="read conversions", logger=self._logger)
        if self._index is None:
            self._scan()
        ids = self._index.filter(pl.col("conv_time").is_between(lo, hi)).get_column("conv_id")
        # conversions first, by primary key: left to itself, MySQL starts from the few users and
        # walks each one's whole user_id index
        stmt = (_conversions_statement(lo, hi, self._users).prefix_with("STRAIGHT_JOIN", dialect="mysql")
                .prefix_with("STRAIGHT_JOIN", dialect="mariadb"))

        def read():
            with self._db.engine().connect() as conn:
                known = read_by_ids(conn, _conv.c.conv_id, ids, stmt.where, _READ_SCHEMA)
                later = read_frame(conn, stmt.where(_conv.c.conv_id > self._high_water), _READ_SCHEMA)
                return known, later.filter(~pl.col("conv_id").is_in(ids.implode()))

        known, later = self._db.retry.run(read, what="read conversions", logger=self._logger)
        return collapse_conversion_rows(pl.concat([known, later]))


def collapse_conversion_rows(raw: pl.DataFrame) -> pl.DataFrame:
    """One row per conversion from the join rows (D15), with ``click_rows`` and ``date_hour``.

    ``click_rows`` counts the click rows of the conversion's own user (202_clicks.user_id =
    202_conversion_logs.user_id), and the click columns come from one of them (D15's order). A
    conversion whose click id is found only among another user's clicks is skipped like an orphan
    (D21: ``click_rows = 0``, no journey, no credit) but keeps that click's columns, which is how
    :func:`foreign_click` tells it from an orphan (:func:`orphan`: no click row at all). Join rows
    without ``found_click_user_id`` (built by hand) count every click found as the user's.
    """
    if "found_click_user_id" in raw.columns:
        own = (pl.col("found_click_user_id") == pl.col("user_id")).fill_null(False)
    else:
        own = pl.col("found_click_id").is_not_null()
    return frames.conform(
        raw.with_columns(own=own)
        .sort(["conv_id", "own", "found_click_time", "cpc", "ppc_account_id"],
              descending=[False, True, False, False, False], nulls_last=True)
        .group_by("conv_id", maintain_order=True)
        .agg(
            pl.all().first(),
            pl.col("own").sum().cast(pl.UInt32).alias("click_rows"),
        )
        .with_columns(date_hour=pl.col("conv_time") - pl.col("conv_time") % HOUR),
        frames.CONVERSIONS,
        "conversions",
    )


def orphan() -> pl.Expr:
    """frames.CONVERSIONS rows whose click id is in no row of 202_clicks (D16)."""
    return (pl.col("click_rows") == 0) & pl.col("ppc_account_id").is_null()


def foreign_click() -> pl.Expr:
    """frames.CONVERSIONS rows whose click id is only in rows of another user's clicks (D21):
    ``click_rows = 0`` with the found click's columns (202_clicks.ppc_account_id is NOT NULL)."""
    return (pl.col("click_rows") == 0) & pl.col("ppc_account_id").is_not_null()


SETTINGS = {
    "setting_id": pl.Int64,
    "user_id": pl.Int64,
    "scope_type": pl.String,
    "scope_id": pl.Int64,
    "multi_touch_enabled": pl.Int64,
}


def multi_touch_settings(conn: Connection, users: Sequence[int]) -> pl.DataFrame:
    """The users' global, advertiser and campaign rows of ``202_attribution_settings`` (spec §5.1)."""
    if not users:
        return frames.empty(SETTINGS)
    s = tables.attribution_settings
    stmt = select(s.c.setting_id, s.c.user_id, s.c.scope_type, s.c.scope_id, s.c.multi_touch_enabled).where(
        s.c.user_id.in_(list(users))
    )
    return read_frame(conn, stmt, SETTINGS)


CAMPAIGN_NETWORKS = {"campaign_id": pl.Int64, "aff_network_id": pl.Int64}


def campaign_networks(conn: Connection, campaigns: Sequence[int]) -> pl.DataFrame:
    """campaign -> advertiser (``202_aff_campaigns.aff_network_id``), as PHP resolves it."""
    if not campaigns:
        return frames.empty(CAMPAIGN_NETWORKS)
    c = tables.aff_campaigns
    stmt = select(c.c.aff_campaign_id.label("campaign_id"), c.c.aff_network_id).where(
        c.c.aff_campaign_id.in_(list(campaigns))
    )
    return read_frame(conn, stmt, CAMPAIGN_NETWORKS)


STORED_TOUCHES = {"conv_id": pl.Int64, "click_id": frames.CLICK_ID, "click_time": pl.Int64, "position": pl.Int64}


def stored_touchpoints(conn: Connection, conv_ids: Sequence[int]) -> pl.DataFrame:
    """Rows of ``202_conversion_touchpoints`` for ``conv_ids`` (PHP's rebuild read, spec §2.1)."""
    t = tables.conversion_touchpoints
    ids = sorted(set(int(c) for c in conv_ids))
    if not ids:
        return frames.empty(STORED_TOUCHES)
    stmt = select(t.c.conv_id, t.c.click_id, t.c.click_time, t.c.position).where(
        and_(t.c.conv_id.between(ids[0], ids[-1]))
    )
    found = read_frame(conn, stmt, STORED_TOUCHES)
    return found.filter(pl.col("conv_id").is_in(ids))


