"""Source fingerprints summed in the database, and the pipeline's record of what it wrote (D22).

Reads (one grouped SELECT each, never a row per conversion or click): the count and two CRC32 sums
of every conversion row (with its converting click) per (user, conversion hour), and of every click
row per (user, click hour); the users' settings rows and campaigns. SQLite gets MySQL's ``CRC32``
as a function registered on each connection (``storage/database.py``).

``attribution_source_state`` holds, per (user, hour) the pipeline wrote, the fingerprints its rows
were computed from and stored as, the token of that write and the token the Parquet export last
published. It is written inside the write-back's chunk transaction, so it never describes rows
that were not committed.
"""

from collections.abc import Sequence
from functools import reduce
from operator import add

import polars as pl
from sqlalchemy import (
    BigInteger, String, and_, cast, delete, func, inspect, literal_column, select, tuple_, type_coerce, update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from attribution_pipeline.core.click_reach import CAMPAIGN_PARTS, CONVERSION_CAMPAIGNS
from attribution_pipeline.core.hours import HOUR
from attribution_pipeline.core.source_fingerprints import PARTS, RECORDED
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.frame_io import chunked, read_frame

STATE = tables.source_state
_conv, _clk = tables.conversion_logs, tables.clicks
_USERS_PER_STATEMENT = 2000


class hour_floor(FunctionElement):  # noqa: N801 - an SQL function's name
    """The UTC hour start of an epoch-seconds column: ``x DIV 3600 * 3600`` (MySQL), integer
    division on SQLite (``%`` would be doubled by the PyMySQL paramstyle on a literal statement)."""

    type = BigInteger()
    name = "hour_floor"
    inherit_cache = True


@compiles(hour_floor)
def _hour_floor_sqlite(element, compiler, **kw):
    return f"(({compiler.process(element.clauses, **kw)}) / {HOUR} * {HOUR})"


@compiles(hour_floor, "mysql")
@compiles(hour_floor, "mariadb")
def _hour_floor_mysql(element, compiler, **kw):
    return f"(({compiler.process(element.clauses, **kw)}) DIV {HOUR} * {HOUR})"


def _text(*columns, outer=()):
    """``a|b|...`` of the columns as text, NULL as ``~`` (the same text on MySQL and SQLite).

    A column that can be NULL (nullable, or of the ``outer``-joined table) is cast and coalesced;
    a NOT NULL one goes into ``CONCAT`` as it is, whose implicit conversion gives the same text as
    the cast: building the text is most of the scan's cost (2.3M clicks: 2.1 s instead of 2.7 s)."""
    parts = [func.coalesce(cast(c, String), literal_column("'~'", String)) if c.nullable or c.table in outer
             else type_coerce(c, String) for c in columns]
    return reduce(add, [p for c in parts for p in (c, literal_column("'|'", String))][:-1])


def _parts(text, users, hour_of, table_filter, from_, *by):
    """SELECT user, ``by``, hour, count, two CRC32 sums of ``text``, grouped by user, ``by`` and hour."""
    hour = hour_floor(hour_of).label("date_hour")
    return (
        select(
            users.label("user_id"), *by, hour, func.count().label("rows"),
            cast(func.sum(func.crc32(text)), BigInteger).label("sum_a"),
            cast(func.sum(func.crc32(text + literal_column("'#'", String))), BigInteger).label("sum_b"),
        )
        .select_from(from_).where(table_filter).group_by(users, *by, hour)
    )


def _per_users(conn: Connection, users: Sequence[int], statement, schema: dict) -> pl.DataFrame:
    """``statement(users_part)`` read for each slice of ``users``, as one frame of ``schema``."""
    frames = [read_frame(conn, statement(list(part)), schema) for part in chunked(sorted(users), _USERS_PER_STATEMENT)]
    return pl.concat([pl.DataFrame(schema=schema), *frames])


def conversion_parts(conn: Connection, users: Sequence[int], lo: int, hi: int) -> pl.DataFrame:
    """Per (user, conversion hour) of ``lo <= conv_time <= hi``: every conversion row, soft-deleted
    ones too, with its converting click rows (LEFT JOIN on click_id, every copy: D15, D21)."""
    text = _text(_conv.c.conv_id, _conv.c.click_id, _conv.c.campaign_id, _conv.c.conv_time, _conv.c.click_time,
                 _conv.c.click_payout, _conv.c.deleted, _clk.c.click_id, _clk.c.user_id, _clk.c.click_time,
                 _clk.c.click_cpc, _clk.c.ppc_account_id, _clk.c.landing_page_id, _clk.c.aff_campaign_id, outer=(_clk,))
    return _per_users(conn, users, lambda part: _parts(
        text, _conv.c.user_id, _conv.c.conv_time, and_(_conv.c.conv_time.between(lo, hi), _conv.c.user_id.in_(part)),
        _conv.outerjoin(_clk, _clk.c.click_id == _conv.c.click_id)), PARTS)


_CLICK_TEXT = (_clk.c.click_id, _clk.c.aff_campaign_id, _clk.c.click_time, _clk.c.ppc_account_id,
               _clk.c.landing_page_id, _clk.c.click_cpc)


def click_parts(conn: Connection, users: Sequence[int], lo: int, hi: int) -> pl.DataFrame:
    """Per (user, click hour) of ``lo <= click_time <= hi``: every click row (Prosper202's
    ``user_click_time`` index serves the range)."""
    return _per_users(conn, users, lambda part: _parts(
        _text(*_CLICK_TEXT), _clk.c.user_id, _clk.c.click_time,
        and_(_clk.c.user_id.in_(part), _clk.c.click_time.between(max(0, lo), hi)), _clk), PARTS)


def campaign_click_parts(conn: Connection, users: Sequence[int], lo: int, hi: int) -> pl.DataFrame:
    """:func:`click_parts` per (user, campaign, click hour): the counts find each hour's reach (D38)."""
    return _per_users(conn, users, lambda part: _parts(
        _text(*_CLICK_TEXT), _clk.c.user_id, _clk.c.click_time,
        and_(_clk.c.user_id.in_(part), _clk.c.click_time.between(max(0, lo), hi)), _clk,
        _clk.c.aff_campaign_id.label("campaign_id")), CAMPAIGN_PARTS)


def older_copies(conn: Connection, users: Sequence[int], lo: int, hi: int) -> pl.DataFrame:
    """Per (user, click hour) of the clicks with ``lo <= click_time <= hi``: their copies (same
    click id, same user) with an earlier ``click_time``, wherever they lie (D15, D38)."""
    new, old = _clk.alias("newer"), _clk.alias("older")
    text = _text(*(old.c[c.name] for c in _CLICK_TEXT))
    return _per_users(conn, users, lambda part: _parts(
        text, new.c.user_id, new.c.click_time,
        and_(new.c.user_id.in_(part), new.c.click_time.between(max(0, lo), hi)),
        new.join(old, and_(old.c.click_id == new.c.click_id, old.c.user_id == new.c.user_id,
                           old.c.click_time < new.c.click_time))), PARTS)


def conversion_campaigns(conn: Connection, users: Sequence[int], lo: int, hi: int) -> pl.DataFrame:
    """``user_id, date_hour, campaign_id`` of the conversions with ``lo <= conv_time <= hi``,
    soft-deleted ones too: the campaigns whose clicks the hour's journeys use (D2, D38)."""
    hour = hour_floor(_conv.c.conv_time).label("date_hour")
    return _per_users(conn, users, lambda part: select(_conv.c.user_id, hour, _conv.c.campaign_id).where(
        _conv.c.user_id.in_(part), _conv.c.conv_time.between(lo, hi)).group_by(
        _conv.c.user_id, hour, _conv.c.campaign_id), CONVERSION_CAMPAIGNS)


def settings_rows(conn: Connection, users: Sequence[int]) -> list[dict]:
    """Every 202_attribution_settings row of ``users``."""
    s = tables.attribution_settings
    return [dict(r._mapping) for r in conn.execute(select(s).where(s.c.user_id.in_(list(users))))] if users else []


def campaign_rows(conn: Connection, users: Sequence[int]) -> list[dict]:
    """(user, campaign, advertiser) of ``users``' campaigns: a campaign's advertiser decides its
    multi-touch setting (spec §5.1)."""
    c = tables.aff_campaigns
    stmt = select(c.c.user_id, c.c.aff_campaign_id, c.c.aff_network_id).where(c.c.user_id.in_(list(users)))
    return [dict(r._mapping) for r in conn.execute(stmt)] if users else []


def account_rows(conn: Connection, users: Sequence[int]) -> list[dict]:
    """(user, ppc account, ppc network) of ``users``' accounts: an account's network is the
    ``traffic_source`` scope of its clicks (D31)."""
    a = tables.ppc_accounts
    stmt = select(a.c.user_id, a.c.ppc_account_id, a.c.ppc_network_id).where(a.c.user_id.in_(list(users)))
    return [dict(r._mapping) for r in conn.execute(stmt)] if users else []


def has_state_table(conn: Connection) -> bool:
    return inspect(conn).has_table(STATE.name)


def recorded(conn: Connection, users: Sequence[int], hours: Sequence[int]) -> pl.DataFrame:
    """:data:`~attribution_pipeline.core.source_fingerprints.RECORDED` of ``users`` in ``hours``."""
    if not users or not hours:
        return pl.DataFrame(schema=RECORDED)
    return _per_users(conn, users, lambda part: select(
        STATE.c.user_id, STATE.c.date_hour, STATE.c.source_fp, STATE.c.stored_fp).where(
        STATE.c.date_hour.between(min(hours), max(hours)), STATE.c.user_id.in_(part)), RECORDED).filter(
        pl.col("date_hour").is_in(list(hours)))


def _delete_keys(conn: Connection, keys: pl.DataFrame) -> int:
    pairs = [(int(u), int(h)) for u, h in keys.select("user_id", "date_hour").unique().iter_rows()]
    return sum(
        conn.execute(delete(STATE).where(tuple_(STATE.c.user_id, STATE.c.date_hour).in_(list(part)))).rowcount
        for part in chunked(pairs, 1000)
    )


def record(conn: Connection, rows: pl.DataFrame, *, token: str, now: int) -> int:
    """Replace the state of the (user, hour) keys of ``rows`` (:data:`RECORDED`), inside the
    caller's transaction; the export token is cleared (the hour is to be exported)."""
    if rows.height == 0:
        return 0
    _delete_keys(conn, rows)
    values = [{**r, "write_token": token, "export_token": None, "written_at": now}
              for r in rows.select(list(RECORDED)).iter_rows(named=True)]
    conn.execute(STATE.insert(), values)
    return len(values)


def forget(conn: Connection, keys: pl.DataFrame) -> int:
    """Remove the state of (user, hour) keys (held groups: recomputed by the next run)."""
    return _delete_keys(conn, keys) if keys.height else 0


def pending_exports(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """``user_id, date_hour, write_token`` of the (user, hour) rows of ``hours`` written since
    their hour was last exported."""
    schema = {"user_id": pl.Int64, "date_hour": pl.Int64, "write_token": pl.String}
    if not hours:
        return pl.DataFrame(schema=schema)
    stmt = select(STATE.c.user_id, STATE.c.date_hour, STATE.c.write_token).where(
        STATE.c.date_hour.between(min(hours), max(hours)),
        (STATE.c.export_token.is_(None)) | (STATE.c.export_token != STATE.c.write_token),
    )
    return read_frame(conn, stmt, schema).filter(pl.col("date_hour").is_in(list(hours)))


def mark_exported(conn: Connection, pending: pl.DataFrame) -> int:
    """Note the export of ``pending`` rows (as :func:`pending_exports` read them before the
    export): a row written again since keeps its new token unexported. One statement per (token,
    hour), over the primary key (a three-column ``IN`` list of 1,000 rows a statement made the
    server compare every row of the table with every listed key: 5 s for a 720-hour run)."""
    groups = pending.group_by("write_token", "date_hour").agg(pl.col("user_id").unique().sort())
    return sum(
        conn.execute(update(STATE).where(STATE.c.date_hour == int(hour), STATE.c.write_token == str(token),
                                         STATE.c.user_id.in_([int(u) for u in part]))
                     .values(export_token=STATE.c.write_token)).rowcount
        for token, hour, users in groups.iter_rows()
        for part in chunked(users, 1000)
    )


def unmark_exported(conn: Connection, hours: Sequence[int]) -> int:
    """Clear the export token of every (user, hour) of ``hours``: they are to be exported again."""
    return conn.execute(update(STATE).where(STATE.c.date_hour.in_([int(h) for h in hours]))
                        .values(export_token=None)).rowcount
