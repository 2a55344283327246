"""Set-based reads of what MySQL stores for a chunk of hours: snapshots, touchpoints, clicks, names.

Only ids, times, money and names are selected: never ``ip``, ``user_agent`` or referers.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from attribution_pipeline.core import frames
from attribution_pipeline.core.journey_rules import dedupe_clicks
from attribution_pipeline.exports.columns import CPC_DTYPE, PAYOUT_DTYPE
from attribution_pipeline.exports.from_run import TOKENS, TOUCH_ROW, RunWrites
from attribution_pipeline.core.precision import MONEY_DTYPE
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.frame_io import chunked, read_by_ids, read_frame

_IN_LIST = 5000


_snap = tables.attribution_snapshots
_touch = tables.attribution_touchpoints
_state = tables.source_state
_models = tables.attribution_models
_conv = tables.conversion_logs
_clk = tables.clicks

_SNAPSHOT_READ = {
    "snapshot_id": pl.Int64,
    "date_hour": pl.Int64,
    "model_id": pl.Int64,
    "user_id": pl.Int64,
    "scope_type": pl.String,
    "scope_id": pl.Int64,
    "attributed_clicks": pl.Int64,
    "attributed_conversions": pl.Int64,
    "attributed_revenue": MONEY_DTYPE,
    "attributed_cost": MONEY_DTYPE,
    "model_name": pl.String,
    "model_slug": pl.String,
    "model_type": pl.String,
    "is_active": pl.Int64,
    "lookback_start": pl.Int64,  # not exported: tells the rows a run wrote (exports/from_run.py)
    "lookback_end": pl.Int64,
}
_CONVERSION_READ = {
    "conv_id": pl.Int64,
    "conv_time": pl.Int64,
    "conv_click_id": frames.CLICK_ID,
    "conv_click_time": pl.Int64,
    "conversion_payout": PAYOUT_DTYPE,
}
_TOUCH_READ = {**TOUCH_ROW, **{k: v for k, v in _CONVERSION_READ.items() if k != "conv_id"}}
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


#: The global rows of a frame of snapshot rows (``scope_type``): those every sum and
#: reconciliation means; the scoped rows (D31) are exported beside them.
GLOBAL = (pl.col("scope_type") == "global") & pl.col("scope_id").is_null()


def read_snapshots(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """Every snapshot row stored for ``hours``, global and scoped (D31), with its model's name,
    slug, type, active flag."""
    if not hours:
        return frames.empty(_SNAPSHOT_READ)
    stmt = (
        select(_snap.c.snapshot_id, _snap.c.date_hour, _snap.c.model_id, _snap.c.user_id, _snap.c.scope_type,
               _snap.c.scope_id, _snap.c.attributed_clicks,
               _snap.c.attributed_conversions, _snap.c.attributed_revenue, _snap.c.attributed_cost,
               _models.c.model_name, _models.c.model_slug, _models.c.model_type, _models.c.is_active,
               _snap.c.lookback_start, _snap.c.lookback_end)
        .select_from(_snap.outerjoin(_models, _models.c.model_id == _snap.c.model_id))
        .where(_snap.c.date_hour.between(min(hours), max(hours)))
    )
    return read_frame(conn, stmt, _SNAPSHOT_READ).filter(pl.col("date_hour").is_in(list(hours)))


def read_touches(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """Every touchpoint row of the global snapshots of ``hours``, with its hour, its conversion's time,
    converting click and payout (never ip or user agent)."""
    return with_conversions(conn, read_touch_rows(conn, hours))


def read_touch_rows(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """:data:`TOUCH_ROW` of every touchpoint of the global snapshots of ``hours`` (one statement)."""
    if not hours:
        return frames.empty(TOUCH_ROW)
    stmt = (
        select(_touch.c.snapshot_id, _touch.c.conv_id, _touch.c.click_id, _touch.c.position, _touch.c.credit,
               _snap.c.date_hour)
        .select_from(_touch.join(_snap, _snap.c.snapshot_id == _touch.c.snapshot_id))
        .where(*global_hours(min(hours), max(hours)))
    )
    return read_frame(conn, stmt, TOUCH_ROW).filter(pl.col("date_hour").is_in(list(hours)))


def read_touch_rows_of(conn: Connection, snaps: pl.DataFrame) -> pl.DataFrame:
    """:data:`TOUCH_ROW` of the touchpoints of the snapshots ``snaps`` (``snapshot_id``,
    ``date_hour``), looked up by snapshot id (``snapshot_conv`` index), ``IN`` lists only: a range
    of ids would also read the touchpoints of the snapshots between them."""
    schema = {k: v for k, v in TOUCH_ROW.items() if k != "date_hour"}
    parts = [frames.empty(schema)]
    ids = snaps.get_column("snapshot_id").unique().sort().to_list()
    cols = [_touch.c[name] for name in schema]
    for part in chunked(ids, _IN_LIST):
        parts.append(read_frame(conn, select(*cols).where(_touch.c.snapshot_id.in_(list(part))), schema))
    rows = pl.concat(parts)
    return frames.conform(rows.join(snaps.select("snapshot_id", "date_hour"), on="snapshot_id"), TOUCH_ROW)


def with_conversions(conn: Connection, touches: pl.DataFrame) -> pl.DataFrame:
    """``touches`` (:data:`TOUCH_ROW`) with their conversion's time, converting click and payout.
    The conversions are read apart, by primary key, and joined here: one lookup per conversion
    instead of one per touch."""
    conversions = read_conversions(conn, touches.get_column("conv_id").unique())
    return frames.conform(touches.join(conversions, on="conv_id", how="left"), _TOUCH_READ, "touchpoints read")


def touch_rows_per_hour(engine: Engine, hours: Sequence[int]) -> dict[int, int]:
    """Touchpoint rows of each hour, from its global snapshots' ``SUM(attributed_clicks)`` (a snapshot
    counts its touchpoints; cheap: no touchpoint is read). Hours without snapshots are absent."""
    if not hours:
        return {}
    stmt = (select(_snap.c.date_hour, func.sum(_snap.c.attributed_clicks).label("rows"))
            .where(*global_hours(min(hours), max(hours))).group_by(_snap.c.date_hour))
    with engine.connect() as conn:
        df = read_frame(conn, stmt, {"date_hour": pl.Int64, "rows": pl.Int64})
    wanted = set(hours)
    return {int(h): int(n or 0) for h, n in df.iter_rows() if h in wanted}


def read_write_tokens(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """``user_id, date_hour, write_token`` of ``attribution_source_state`` in ``hours`` (D22)."""
    if not hours:
        return frames.empty(TOKENS)
    stmt = select(_state.c.user_id, _state.c.date_hour, _state.c.write_token).where(
        _state.c.date_hour.between(min(hours), max(hours)))
    return read_frame(conn, stmt, TOKENS).filter(pl.col("date_hour").is_in(list(hours)))


def read_conversions(conn: Connection, conv_ids: Sequence[int] | pl.Series) -> pl.DataFrame:
    """Time, converting click and payout of ``conv_ids`` (202_conversion_logs' primary key)."""
    return read_by_ids(conn, _conv.c.conv_id, conv_ids, lambda where: select(
        _conv.c.conv_id, _conv.c.conv_time, _conv.c.click_id.label("conv_click_id"),
        _conv.c.click_time.label("conv_click_time"), _conv.c.click_payout.label("conversion_payout"),
    ).where(where), _CONVERSION_READ, in_list=_IN_LIST)


def read_clicks(conn: Connection, click_ids: Sequence[int] | pl.Series) -> pl.DataFrame:
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
    """What MySQL stores for a chunk of hours (committed rows): the snapshots (global and scoped,
    D31), the global snapshots' touchpoint rows (with ``date_hour`` and their conversion's fields), those touches' and
    converting clicks (D15) and the display names they or the journeys reference. ``sources``
    counts where the touchpoint rows came from (``touchpoints_from_run``: the run's credits,
    ``touchpoints_from_mysql``)."""

    snapshots: pl.DataFrame
    touches: pl.DataFrame
    clicks: pl.DataFrame
    names: Names
    sources: dict[str, int] = field(default_factory=dict)


def stored_touch_rows(conn: Connection, hours: Sequence[int], snaps: pl.DataFrame,
                      run: RunWrites | None) -> tuple[pl.DataFrame, dict[str, int]]:
    """:data:`TOUCH_ROW` of every touchpoint of the snapshots ``snaps`` of ``hours``: those the
    run wrote from its credits (``exports/from_run.py``), the others from MySQL by snapshot id
    (all of them in one statement when the run wrote none)."""
    own, covered = frames.empty(TOUCH_ROW), frames.empty({"snapshot_id": pl.Int64})
    if run is not None and run.usable_hours(hours):
        tokens = read_write_tokens(conn, hours) if run.token is not None else None
        own, covered = run.touches(hours, snaps, tokens)
    if covered.height == 0:
        rest = read_touch_rows(conn, hours)
    else:
        rest = read_touch_rows_of(conn, snaps.join(covered, on="snapshot_id", how="anti"))
    sources = {"touchpoints_from_run": own.height, "touchpoints_from_mysql": rest.height,
               "snapshots_from_run": covered.height}
    return pl.concat([own, rest]), sources


def read_stored_rows(engine: Engine, hours: Sequence[int], extra_touches: Sequence[pl.DataFrame] = (),
                     run: RunWrites | None = None) -> StoredRows:
    """Set-based reads of everything the exports of ``hours`` need from MySQL; names of every
    campaign, traffic source and landing page the clicks or ``extra_touches`` reference. With
    ``run``, the touchpoints it wrote come from its frames instead (``stored_touch_rows``)."""
    with engine.connect() as conn:
        snaps = read_snapshots(conn, hours)
        rows, sources = stored_touch_rows(conn, hours, snaps.filter(GLOBAL), run)
        touches = with_conversions(conn, rows)
        clicks = read_clicks(conn, pl.concat([touches.get_column("click_id"),
                                              touches.get_column("conv_click_id").drop_nulls()]).unique())
        referenced = clicks.select(campaign_id="aff_campaign_id", ppc_account_id="ppc_account_id",
                                   landing_page_id="landing_page_id")
        names = read_names(conn, [referenced, *extra_touches])
    return StoredRows(snaps, touches, clicks, names, sources)
