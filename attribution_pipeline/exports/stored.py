"""Set-based reads of what MySQL stores for a chunk of hours: snapshots, touchpoints, clicks, names.

Only ids, times, money and names are selected: never ``ip``, ``user_agent`` or referers.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from attribution_pipeline.core import frames
from attribution_pipeline.core.journey_rules import dedupe_clicks
from attribution_pipeline.exports.columns import CPC_DTYPE, PAYOUT_DTYPE
from attribution_pipeline.core.precision import CREDIT_DTYPE, MONEY_DTYPE
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.frame_io import chunked, read_by_ids, read_frame

_IN_LIST = 5000


_snap = tables.attribution_snapshots
_touch = tables.attribution_touchpoints
_models = tables.attribution_models
_conv = tables.conversion_logs
_clk = tables.clicks

_SNAPSHOT_READ = {
    "snapshot_id": pl.Int64,
    "date_hour": pl.Int64,
    "model_id": pl.Int64,
    "user_id": pl.Int64,
    "attributed_clicks": pl.Int64,
    "attributed_conversions": pl.Int64,
    "attributed_revenue": MONEY_DTYPE,
    "attributed_cost": MONEY_DTYPE,
    "model_name": pl.String,
    "model_slug": pl.String,
    "model_type": pl.String,
    "is_active": pl.Int64,
}
_TOUCH_ROW = {
    "snapshot_id": pl.Int64,
    "conv_id": pl.Int64,
    "click_id": frames.CLICK_ID,
    "position": pl.Int32,
    "credit": CREDIT_DTYPE,
}
_CONVERSION_READ = {
    "conv_id": pl.Int64,
    "conv_time": pl.Int64,
    "conv_click_id": frames.CLICK_ID,
    "conv_click_time": pl.Int64,
    "conversion_payout": PAYOUT_DTYPE,
}
_TOUCH_READ_ROW = {**_TOUCH_ROW, "date_hour": pl.Int64}
_TOUCH_READ = {**_TOUCH_READ_ROW, **{k: v for k, v in _CONVERSION_READ.items() if k != "conv_id"}}
_CLICK_READ = {
    "click_id": frames.CLICK_ID,
    "click_time": pl.Int64,
    "aff_campaign_id": pl.Int64,
    "ppc_account_id": pl.Int64,
    "landing_page_id": pl.Int64,
    "click_cpc": CPC_DTYPE,
}


def global_hours(lo: int, hi: int):
    return (_snap.c.scope_type == "global", _snap.c.scope_id.is_(None), _snap.c.date_hour.between(lo, hi))


def read_snapshots(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """Every global snapshot row stored for ``hours``, with its model's name, slug, type, active flag."""
    if not hours:
        return frames.empty(_SNAPSHOT_READ)
    stmt = (
        select(_snap.c.snapshot_id, _snap.c.date_hour, _snap.c.model_id, _snap.c.user_id, _snap.c.attributed_clicks,
               _snap.c.attributed_conversions, _snap.c.attributed_revenue, _snap.c.attributed_cost,
               _models.c.model_name, _models.c.model_slug, _models.c.model_type, _models.c.is_active)
        .select_from(_snap.outerjoin(_models, _models.c.model_id == _snap.c.model_id))
        .where(*global_hours(min(hours), max(hours)))
    )
    return read_frame(conn, stmt, _SNAPSHOT_READ).filter(pl.col("date_hour").is_in(list(hours)))


def read_touches(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """Every touchpoint row of the global snapshots of ``hours``, with its hour, its conversion's time,
    converting click and payout (never ip or user agent). The conversions are read apart, by
    primary key, and joined here: one lookup per conversion instead of one per touch."""
    if not hours:
        return frames.empty(_TOUCH_READ)
    stmt = (
        select(_touch.c.snapshot_id, _touch.c.conv_id, _touch.c.click_id, _touch.c.position, _touch.c.credit,
               _snap.c.date_hour)
        .select_from(_touch.join(_snap, _snap.c.snapshot_id == _touch.c.snapshot_id))
        .where(*global_hours(min(hours), max(hours)))
    )
    touches = read_frame(conn, stmt, _TOUCH_READ_ROW).filter(pl.col("date_hour").is_in(list(hours)))
    conversions = read_conversions(conn, touches.get_column("conv_id").unique().to_list())
    return frames.conform(touches.join(conversions, on="conv_id", how="left"), _TOUCH_READ, "touchpoints read")


def read_conversions(conn: Connection, conv_ids: Sequence[int]) -> pl.DataFrame:
    """Time, converting click and payout of ``conv_ids`` (202_conversion_logs' primary key)."""
    return read_by_ids(conn, _conv.c.conv_id, conv_ids, lambda where: select(
        _conv.c.conv_id, _conv.c.conv_time, _conv.c.click_id.label("conv_click_id"),
        _conv.c.click_time.label("conv_click_time"), _conv.c.click_payout.label("conversion_payout"),
    ).where(where), _CONVERSION_READ, in_list=_IN_LIST)


def read_clicks(conn: Connection, click_ids: Sequence[int]) -> pl.DataFrame:
    """One row per click id (D15: the smallest click_time, then cpc, then ppc account)."""
    return dedupe_clicks(read_by_ids(
        conn, _clk.c.click_id, click_ids, lambda where: select(*[_clk.c[c] for c in _CLICK_READ]).where(where),
        _CLICK_READ, in_list=_IN_LIST,
    ))


NAMES = {"id": pl.Int64, "name": pl.String}


@dataclass
class Names:
    """Display names of the campaigns, traffic sources (ppc accounts) and landing pages."""

    campaigns: pl.DataFrame
    ppc_accounts: pl.DataFrame
    landing_pages: pl.DataFrame


def _names(conn: Connection, id_col, name_col, ids: Sequence[int]) -> pl.DataFrame:
    wanted = sorted({int(i) for i in ids if i is not None})
    parts = [frames.empty(NAMES)]
    for part in chunked(wanted, _IN_LIST):
        stmt = select(id_col.label("id"), name_col.label("name")).where(id_col.in_(list(part)))
        parts.append(read_frame(conn, stmt, NAMES))
    return pl.concat(parts).unique("id", keep="first")


def read_names(conn: Connection, touches: Sequence[pl.DataFrame]) -> Names:
    """Names of every campaign, ppc account and landing page referenced by ``touches`` frames
    (columns ``campaign_id``, ``ppc_account_id``, ``landing_page_id``)."""
    def ids(col: str) -> list[int]:
        found = [t.get_column(col).drop_nulls().unique() for t in touches if t.height]
        return pl.concat(found).unique().to_list() if found else []

    return Names(
        campaigns=_names(conn, tables.aff_campaigns.c.aff_campaign_id, tables.aff_campaigns.c.aff_campaign_name,
                         ids("campaign_id")),
        ppc_accounts=_names(conn, tables.ppc_accounts.c.ppc_account_id, tables.ppc_accounts.c.ppc_account_name,
                            ids("ppc_account_id")),
        landing_pages=_names(conn, tables.landing_pages.c.landing_page_id,
                             tables.landing_pages.c.landing_page_nickname, ids("landing_page_id")),
    )


@dataclass
class StoredRows:
    """What MySQL stores for a chunk of hours (committed rows): the global snapshots, their
    touchpoint rows (with ``date_hour`` and their conversion's fields), those touches' and
    converting clicks (D15) and the display names they or the journeys reference."""

    snapshots: pl.DataFrame
    touches: pl.DataFrame
    clicks: pl.DataFrame
    names: Names


def read_stored_rows(engine: Engine, hours: Sequence[int], extra_touches: Sequence[pl.DataFrame] = ()) -> StoredRows:
    """Set-based reads of everything the exports of ``hours`` need from MySQL; names of every
    campaign, traffic source and landing page the clicks or ``extra_touches`` reference."""
    with engine.connect() as conn:
        snaps = read_snapshots(conn, hours)
        touches = read_touches(conn, hours)
        clicks = read_clicks(conn, pl.concat([touches.get_column("click_id"),
                                              touches.get_column("conv_click_id").drop_nulls()]).to_list())
        referenced = clicks.select(campaign_id="aff_campaign_id", ppc_account_id="ppc_account_id",
                                   landing_page_id="landing_page_id")
        names = read_names(conn, [referenced, *extra_touches])
    return StoredRows(snaps, touches, clicks, names)
