"""Reads of the clicks of visitors: ``202_clicks`` with its ``202_clicks_advance`` row and its
account's traffic source, the visitor key reduced to an opaque integer as it is read (issue 22).

The visitor key (ATTRIBUTION_VISITOR_KEY, default ``ip_id, platform_id, browser_id, device_id``)
is PERSONAL DATA. Its columns are read only here, and each read slice is reduced at once to
``visitor`` (UInt64): a Polars hash of ``(user_id, key columns...)`` seeded with a secret drawn
when the process starts, then the key columns are dropped. So a visitor is always within one
Prosper202 user; the value is not stable across processes (compare visitors only within one read,
or one process); and nothing returned, logged, stored or exported carries the key, or a hash of it
that could be matched elsewhere. Two different keys hash alike with probability about 2**-64 per
pair (negligible: 10**7 visitors give about 3 * 10**-6 chances of any collision).

A click without a ``202_clicks_advance`` row (Prosper202 writes one per click; an import or a
purge may leave one out) is a visitor of its own, keyed by its click id: its journey is one touch
and its path is itself (never merged with another click).

The read is set-based and parameterised: ``202_clicks`` of the users in ``[lo, hi]`` through
Prosper202's ``user_click_time (user_id, click_time)`` index, LEFT JOINs on the advance row's
primary key and the account's primary key, in time slices of ``slice_seconds`` (each slice one
query per 5000 users, and one retry unit), so only one slice's raw columns are in memory at a time
beside the reduced frame (72 bytes per click: 2M clicks are about 150 MB). Clicks outside the
window can be added by id (``click_ids``: the converting clicks of the conversions, whatever their
age).
"""

import secrets
from collections.abc import Sequence

import polars as pl
from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from attribution_pipeline.core.visitor_paths import VISITOR_CLICKS
from attribution_pipeline.settings import VISITOR_KEY_COLUMNS, SettingsError
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.frame_io import chunked, read_frame

_IN_LIST = 5000
#: Default length of one read slice (seconds).
SLICE_SECONDS = 86400
#: Seeds the visitor hash: drawn once per process, never written anywhere.
_SALT = secrets.randbits(63)
_ORPHAN_SALT = secrets.randbits(63)

_clk, _adv, _ppc = tables.clicks, tables.clicks_advance, tables.ppc_accounts
_RAW = {
    "click_id": pl.UInt64, "user_id": pl.Int64, "click_time": pl.Int64, "aff_campaign_id": pl.Int64,
    "ppc_account_id": pl.Int64, "landing_page_id": pl.Int64, "click_cpc": pl.Float64, "ppc_network_id": pl.Int64,
    "advance_click_id": pl.UInt64,
}


def checked_recipe(recipe: Sequence[str] | str) -> tuple[str, ...]:
    """``recipe`` (202_clicks_advance column names, or their comma list), or ``SettingsError`` if
    it names none or a column that cannot be part of a visitor key."""
    names = recipe.split(",") if isinstance(recipe, str) else recipe
    columns = tuple(dict.fromkeys(str(c).strip().lower() for c in names if str(c).strip()))
    unknown = [c for c in columns if c not in VISITOR_KEY_COLUMNS or c not in _adv.c]
    if unknown or not columns:
        raise SettingsError(f"visitor key {list(columns)}: use one or more of {', '.join(VISITOR_KEY_COLUMNS)}"
                            + (f" (unknown: {unknown})" if unknown else ""))
    return columns


def _statement(recipe: tuple[str, ...]):
    return select(
        _clk.c.click_id, _clk.c.user_id, _clk.c.click_time, _clk.c.aff_campaign_id, _clk.c.ppc_account_id,
        _clk.c.landing_page_id, _clk.c.click_cpc, _ppc.c.ppc_network_id, _adv.c.click_id.label("advance_click_id"),
        *[_adv.c[name].label(f"key_{i}") for i, name in enumerate(recipe)],
    ).select_from(
        _clk.outerjoin(_adv, _adv.c.click_id == _clk.c.click_id)
        .outerjoin(_ppc, _ppc.c.ppc_account_id == _clk.c.ppc_account_id)
    )


def _reduced(raw: pl.DataFrame, width: int) -> pl.DataFrame:
    """``raw`` with its key columns replaced by the opaque ``visitor`` (VISITOR_CLICKS)."""
    keys = [f"key_{i}" for i in range(width)]
    visitor = (
        pl.when(pl.col("advance_click_id").is_null())
        .then(pl.struct("user_id", "click_id").hash(_ORPHAN_SALT))
        .otherwise(pl.struct("user_id", *keys).hash(_SALT))
    )
    return raw.select([visitor.alias(c) if c == "visitor" else pl.col(c) for c in VISITOR_CLICKS]).cast(VISITOR_CLICKS)


def visitor_clicks_in(conn: Connection, users: Sequence[int], lo: int, hi: int, recipe: Sequence[str] | str,
                      click_ids: Sequence[int] = (), *, window: bool = True) -> pl.DataFrame:
    """VISITOR_CLICKS of ``users`` with ``lo <= click_time <= hi`` (one query per 5000 users; not
    read if ``window`` is false), plus those of ``click_ids`` of the same users outside that window
    (none read twice)."""
    recipe = checked_recipe(recipe)
    schema = _RAW | {f"key_{i}": pl.UInt64 for i in range(len(recipe))}
    stmt = _statement(recipe)
    lo = max(0, int(lo))
    ids = sorted({int(c) for c in click_ids})
    parts = [pl.DataFrame(schema=VISITOR_CLICKS)]
    for user_part in chunked(sorted({int(u) for u in users}), _IN_LIST):
        of_users = _clk.c.user_id.in_(list(user_part))
        if window and hi >= lo:
            window_rows = stmt.where(of_users, _clk.c.click_time.between(lo, hi))
            parts.append(_reduced(read_frame(conn, window_rows, schema), len(recipe)))
        for id_part in chunked(ids, _IN_LIST):
            outside = or_(_clk.c.click_time < lo, _clk.c.click_time > hi)
            by_id = stmt.where(of_users, and_(_clk.c.click_id.in_(list(id_part)), outside))
            parts.append(_reduced(read_frame(conn, by_id, schema), len(recipe)))
    return pl.concat(parts)


def read_visitor_clicks(db: Database, users: Sequence[int], lo: int, hi: int, recipe: Sequence[str] | str, *,
                        click_ids: Sequence[int] = (), slice_seconds: int = SLICE_SECONDS, logger=None) -> pl.DataFrame:
    """VISITOR_CLICKS of ``users`` with ``lo <= click_time <= hi`` (duplicated click ids as stored,
    D15), read in slices of ``slice_seconds`` (each retried on transient errors), plus the clicks
    of ``click_ids`` (the converting clicks) of those users outside the window."""
    recipe = checked_recipe(recipe)
    users = sorted({int(u) for u in users})
    lo, hi, step = max(0, int(lo)), int(hi), max(1, int(slice_seconds))
    if not users:
        return pl.DataFrame(schema=VISITOR_CLICKS)

    def read(a: int, b: int, ids: Sequence[int], window: bool) -> pl.DataFrame:
        def work():
            with db.engine().connect() as conn:
                return visitor_clicks_in(conn, users, a, b, recipe, ids, window=window)
        return db.retry.run(work, what="read visitor clicks", logger=logger)

    parts = [read(a, min(hi, a + step - 1), (), True) for a in range(lo, hi + 1, step)]
    if click_ids:  # the converting clicks outside the window
        parts.append(read(lo, hi, click_ids, False))
    return pl.concat([pl.DataFrame(schema=VISITOR_CLICKS), *parts], rechunk=True)
