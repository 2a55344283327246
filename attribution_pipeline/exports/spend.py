"""The spend of every click of an hour, read from ``202_clicks``: the ``click_spend`` export and the
spend side of the touch-hour views (``accrual``, ``attribution compare --axis touch``).

An hour's spend is ``SUM(click_cpc)`` over **all** its clicks, whether or not they reached a
journey, per (user, click hour, campaign, ppc account, landing page). A click id stored more than
once in a user's hour counts once, as D15 collapses it: the row with the smallest ``click_time``,
then ``click_cpc``, then ``ppc_account_id`` (copies stored in different hours, or for different
users, each count where they are stored: a row says nothing else).

Set-based and server-side: per user chunk and range of hours, one grouped SELECT of the groups'
rows and cpc, one of each (user, hour)'s rows and distinct click ids; only for the (user, hour)s
where those differ (duplicated ids: rare) are the copies read, to take the extra ones out. Served
by Prosper202's ``user_click_time (user_id, click_time)`` index, like the source fingerprints'
click scan (D22), which is what makes a run export an hour again when its clicks change. Users:
those a run processes (not deleted, D16). Only ids and money are read: never ``ip``,
``user_agent`` or referers.
"""

from collections.abc import Sequence
from pathlib import Path

import polars as pl
from sqlalchemy import BigInteger, and_, cast, distinct, func, select
from sqlalchemy.engine import Connection, Engine

from attribution_pipeline.core import frames
from attribution_pipeline.core.hours import HOUR, hour_ranges
from attribution_pipeline.exports.columns import CPC_DTYPE, SPEND_SCALE
from attribution_pipeline.exports.layout import part_path
from attribution_pipeline.exports.shares import units
from attribution_pipeline.storage import prosper_reads, tables
from attribution_pipeline.storage.frame_io import chunked, read_frame
from attribution_pipeline.storage.source_state import hour_floor

_clk = tables.clicks
_USERS_PER_STATEMENT = 1000
_DIMENSIONS = {"aff_campaign_id": pl.Int64, "ppc_account_id": pl.Int64, "landing_page_id": pl.Int64}
_PAIR = ["user_id", "date_hour"]
#: Per (user, click hour, campaign, ppc account, landing page): clicks and exact spend units (1e-5).
SPEND_READ = {"user_id": pl.Int64, "date_hour": pl.Int64, **_DIMENSIONS, "clicks": pl.Int64, "spend_units": pl.Int64}
#: Per (user, click hour): clicks and exact spend units.
SPEND_TOTALS = {"user_id": pl.Int64, "date_hour": pl.Int64, "clicks": pl.Int64, "spend_units": pl.Int64}
_COUNTS = {"user_id": pl.Int64, "date_hour": pl.Int64, "clicks": pl.Int64, "ids": pl.Int64, "spend_units": pl.Int64}
_COPY = {"click_id": frames.CLICK_ID, "user_id": pl.Int64, "click_time": pl.Int64, **_DIMENSIONS,
         "click_cpc": CPC_DTYPE}


def _spend_units():
    return cast(func.round(func.sum(_clk.c.click_cpc) * 10**SPEND_SCALE), BigInteger)


def _windows(conn: Connection, hours: Sequence[int], users: Sequence[int] | None):
    """``(user ids, lo, hi)`` of every statement: user chunks x ranges of consecutive hours."""
    wanted = prosper_reads.active_users(conn, users)
    return [(list(part), lo, hi + HOUR - 1) for part in chunked(wanted, _USERS_PER_STATEMENT)
            for lo, hi in hour_ranges(hours)]


def _where(users: list[int], lo: int, hi: int):
    return and_(_clk.c.user_id.in_(users), _clk.c.click_time.between(lo, hi))


def _read(conn: Connection, windows, statement, schema: dict) -> pl.DataFrame:
    return pl.concat([frames.empty(schema), *(read_frame(conn, statement(*w), schema) for w in windows)])


def _groups(users: list[int], lo: int, hi: int):
    hour = hour_floor(_clk.c.click_time).label("date_hour")
    dims = [_clk.c[c] for c in _DIMENSIONS]
    return (select(_clk.c.user_id, hour, *dims, func.count().label("clicks"), _spend_units().label("spend_units"))
            .where(_where(users, lo, hi)).group_by(_clk.c.user_id, hour, *dims))


def _counts(users: list[int], lo: int, hi: int):
    hour = hour_floor(_clk.c.click_time).label("date_hour")
    return (select(_clk.c.user_id, hour, func.count().label("clicks"), func.count(distinct(_clk.c.click_id)).label("ids"),
                   _spend_units().label("spend_units"))
            .where(_where(users, lo, hi)).group_by(_clk.c.user_id, hour))


def _extra_copies(conn: Connection, counts: pl.DataFrame) -> pl.DataFrame:
    """The rows of duplicated click ids beyond the one D15 keeps, in the (user, hour)s of ``counts``
    that have any (:data:`_COPY` with ``date_hour``)."""
    doubled = counts.filter(pl.col("clicks") != pl.col("ids")).select(_PAIR)
    if doubled.height == 0:
        return frames.empty({**_COPY, "date_hour": pl.Int64})
    users = sorted(doubled.get_column("user_id").unique().to_list())

    def statement(part: list[int], lo: int, hi: int):
        ids = (select(_clk.c.click_id).where(_where(part, lo, hi)).group_by(_clk.c.click_id)
               .having(func.count() > 1).subquery())
        return select(*[_clk.c[c] for c in _COPY]).join(ids, ids.c.click_id == _clk.c.click_id).where(
            _where(part, lo, hi))

    windows = [(list(part), lo, hi + HOUR - 1) for part in chunked(users, _USERS_PER_STATEMENT)
               for lo, hi in hour_ranges(doubled.get_column("date_hour").unique().to_list())]
    copies = (_read(conn, windows, statement, _COPY)
              .with_columns(date_hour=pl.col("click_time") - pl.col("click_time") % HOUR)
              .join(doubled, on=_PAIR, how="semi"))
    # D15's order (core.journey_rules.dedupe_clicks): the first row of each id in a user's hour stays
    return (copies.sort([*_PAIR, "click_id", "click_time", "click_cpc", "ppc_account_id"])
            .filter(pl.int_range(pl.len()).over([*_PAIR, "click_id"]) > 0))


def _without(totals: pl.DataFrame, copies: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``totals`` (``keys``, ``clicks``: rows, ``spend_units``) less the extra ``copies`` of each group."""
    if copies.height == 0:
        return totals
    extra = copies.group_by(keys).agg(_n=pl.len().cast(pl.Int64), _u=units(pl.col("click_cpc").sum(), SPEND_SCALE))
    return (totals.join(extra, on=keys, how="left", nulls_equal=True)
            .with_columns(clicks=pl.col("clicks") - pl.col("_n").fill_null(0),
                          spend_units=pl.col("spend_units") - pl.col("_u").fill_null(0).cast(pl.Int64))
            .drop("_n", "_u"))


def read_spend(conn: Connection, hours: Sequence[int], users: Sequence[int] | None = None) -> pl.DataFrame:
    """:data:`SPEND_READ` of the clicks of ``hours`` (users: ``users`` or every user a run
    processes), a click id stored twice in a user's hour counted once (module docstring)."""
    if not hours:
        return frames.empty(SPEND_READ)
    windows = _windows(conn, hours, users)
    groups = _read(conn, windows, _groups, SPEND_READ)
    copies = _extra_copies(conn, _read(conn, windows, _counts, _COUNTS))
    spend = _without(groups, copies, ["user_id", "date_hour", *_DIMENSIONS])
    return frames.conform(spend.filter(pl.col("date_hour").is_in(list(hours)) & (pl.col("clicks") > 0)), SPEND_READ)


def read_spend_totals(conn: Connection, hours: Sequence[int], users: Sequence[int] | None = None) -> pl.DataFrame:
    """:data:`SPEND_TOTALS`: :func:`read_spend` summed per (user, click hour), without reading the groups."""
    if not hours:
        return frames.empty(SPEND_TOTALS)
    counts = _read(conn, _windows(conn, hours, users), _counts, _COUNTS)
    totals = _without(counts.drop("ids"), _extra_copies(conn, counts), _PAIR)
    return frames.conform(totals.filter(pl.col("date_hour").is_in(list(hours))), SPEND_TOTALS)


_FILE = {"date_hour": pl.Int64, "clicks_file": pl.Int64, "spend_file": pl.Int64}


def spend_mismatches(engine: Engine, root: Path, hours: Sequence[int]) -> pl.DataFrame:
    """``date_hour, reason`` of the hours of ``hours`` whose ``click_spend`` file (when it exists)
    holds other clicks or spend than ``202_clicks`` (exact units), for the reconciliation."""
    present = [h for h in hours if part_path(root, "click_spend", h).exists()]
    if not present:
        return pl.DataFrame(schema={"date_hour": pl.Int64, "reason": pl.String})
    with engine.connect() as conn:
        stored = read_spend_totals(conn, present).group_by("date_hour").agg(pl.col("clicks", "spend_units").sum())
    files = (pl.scan_parquet([part_path(root, "click_spend", h) for h in present]).group_by("date_hour")
             .agg(clicks_file=pl.col("clicks").sum(), spend_file=units(pl.col("spend").sum(), SPEND_SCALE))
             .collect())
    every = pl.DataFrame({"date_hour": present}, schema={"date_hour": pl.Int64})
    joined = (every.join(stored, on="date_hour", how="left").join(frames.conform(files, _FILE), on="date_hour",
                                                                   how="left").fill_null(0))
    return joined.filter((pl.col("clicks") != pl.col("clicks_file")) | (pl.col("spend_units") != pl.col("spend_file"))
                         ).select("date_hour", reason=pl.format(
                             "click_spend file has {} clicks and {} spend units, 202_clicks {} and {}",
                             "clicks_file", "spend_file", "clicks", "spend_units"))
