"""Reads of ``202_clicks``: the journey slice (read through ``storage/click_stream.py``), clicks by
id, duplicated ids (D2, D15).

Set-based SELECTs with bound parameters, served by Prosper202's ``user_click_time (user_id,
click_time)`` and ``click_id`` indexes; frames have the columns of ``core.frames.CLICKS``.
"""

from collections.abc import Sequence

import polars as pl
from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection

from attribution_pipeline.core import frames
from attribution_pipeline.core.frames import CLICKS
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.frame_io import chunked, read_by_ids, read_frame

_IN_LIST = 5000  # ids per IN (...) list
_clk = tables.clicks


def clicks(
    conn: Connection, users: Sequence[int], campaigns: Sequence[int], lo: int, hi: int
) -> pl.DataFrame:
    """Clicks of ``users`` on ``campaigns`` with ``lo <= click_time <= hi`` (the journey slice).

    Served by Prosper202's ``user_click_time (user_id, click_time)`` index.
    """
    if not users or not campaigns or hi < lo:
        return frames.empty(CLICKS)
    stmt = select(
        _clk.c.click_id,
        _clk.c.user_id,
        _clk.c.aff_campaign_id,
        _clk.c.click_time,
        _clk.c.ppc_account_id,
        _clk.c.landing_page_id,
        _clk.c.click_cpc,
    ).where(
        _clk.c.user_id.in_(bindparam("users", expanding=True)),
        _clk.c.aff_campaign_id.in_(bindparam("campaigns", expanding=True)),
        _clk.c.click_time.between(max(0, lo), hi),
    )
    parts = []
    campaign_list = sorted(set(int(c) for c in campaigns))
    for user_part in chunked(sorted(set(int(u) for u in users)), _IN_LIST):
        for campaign_part in chunked(campaign_list, _IN_LIST):
            parts.append(
                read_frame(conn, stmt.params(users=list(user_part), campaigns=list(campaign_part)), CLICKS)
            )
    return pl.concat(parts) if parts else frames.empty(CLICKS)


def clicks_by_id(conn: Connection, click_ids: Sequence[int]) -> pl.DataFrame:
    """202_clicks rows of ``click_ids`` (the touches of stored journeys)."""
    ids = sorted(set(int(c) for c in click_ids))
    parts = [frames.empty(CLICKS)]
    stmt = select(*[_clk.c[name] for name in CLICKS]).where(_clk.c.click_id.in_(bindparam("ids", expanding=True)))
    for part in chunked(ids, _IN_LIST):
        parts.append(read_frame(conn, stmt.params(ids=list(part)), CLICKS))
    return pl.concat(parts)


_DUPLICATES_SCHEMA = {"click_id": frames.CLICK_ID, "copies": pl.Int64}


def duplicated_click_rows(db: Database, click_ids: list[int], logger=None) -> pl.DataFrame:
    """Which of ``click_ids`` are stored more than once in 202_clicks, and how many times (D15):
    set-based ``SELECT click_id, COUNT(*) ... GROUP BY click_id HAVING COUNT(*) > 1`` over ranges
    of ids (dense ids) or IN lists (sparse ones), on Prosper202's ``click_id`` index (read_by_ids)."""
    def statement(where):
        return select(_clk.c.click_id, func.count().label("copies")).where(where) \
            .group_by(_clk.c.click_id).having(func.count() > 1)

    def read():
        with db.engine().connect() as conn:
            return read_by_ids(conn, _clk.c.click_id, click_ids, statement, _DUPLICATES_SCHEMA, in_list=_IN_LIST)

    return db.retry.run(read, what="read duplicated click ids", logger=logger)
