"""A visitor's clicks and conversions in MySQL: where they are, and deleting them (D27, erasure).

A visitor is named by click ids and conversion ids (Prosper202 has no visitor key the pipeline
reads). The conversions made on the given clicks (``202_conversion_logs.click_id``) are the
visitor's too and are erased with them. Their traces in the pipeline's tables:

* ``202_attribution_touchpoints`` rows whose ``click_id`` is a given click (``click_lookup``
  index) or whose ``conv_id`` is one of the conversions, in the snapshots of the (user, hour)s
  they touch (``snapshot_conv`` index);
* ``202_conversion_touchpoints`` rows of those clicks (``click_lookup``) or conversions
  (``conv_id``);
* with ``include_source``: the ``202_clicks`` and ``202_conversion_logs`` rows themselves, and
  the clicks' ``202_clicks_advance`` rows (the visitor's address, platform, browser and device:
  what visitor-level journeys key visitors by), where that table exists.

The affected (user, hour)s are then rebuilt by the caller (the snapshots' aggregates).
Everything is deleted in one transaction under the named locks of the affected hours (a visitor's
ids are few). Nothing here prints or logs an id.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl
from sqlalchemy import delete, func, inspect, or_, select, tuple_
from sqlalchemy.engine import Connection, Engine

from attribution_pipeline.storage import tables
from attribution_pipeline.storage.frame_io import chunked, read_frame
from attribution_pipeline.storage.hour_rewrite import read_committed
from attribution_pipeline.storage.locks import hours_locked
from attribution_pipeline.storage.source_state import hour_floor

SNAP, TOUCH = tables.attribution_snapshots, tables.attribution_touchpoints
JOURNEY, CONV, CLK = tables.conversion_touchpoints, tables.conversion_logs, tables.clicks
ADV = tables.clicks_advance
PAIRS = {"user_id": pl.Int64, "date_hour": pl.Int64}
_IDS = 1000


@dataclass
class VisitorScope:
    clicks: list[int]
    conversions: list[int]  # the given ones and those made on the given clicks
    pairs: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=PAIRS))  # affected (user, hour)s
    source_clicks: int = 0  # rows of the clicks still in 202_clicks
    source_conversions: int = 0  # rows of the conversions still in 202_conversion_logs

    @property
    def has_source(self) -> bool:
        return bool(self.source_clicks or self.source_conversions)

    def with_pairs(self, more: pl.DataFrame) -> "VisitorScope":
        pairs = pl.concat([self.pairs, more.select(list(PAIRS)).cast(PAIRS)]).unique().sort(list(PAIRS))
        return VisitorScope(self.clicks, self.conversions, pairs, self.source_clicks, self.source_conversions)


def _frames(conn: Connection, statements) -> pl.DataFrame:
    return pl.concat([pl.DataFrame(schema=PAIRS), *[read_frame(conn, s, PAIRS) for s in statements]])


def visitor_scope(conn: Connection, clicks: Iterable[int], conversions: Iterable[int]) -> VisitorScope:
    """Where the visitor's ids are stored (see module docstring)."""
    clicks, given = sorted({int(c) for c in clicks}), {int(c) for c in conversions}
    convs = set(given)
    for part in chunked(clicks, _IDS):
        convs |= {int(r[0]) for r in conn.execute(select(CONV.c.conv_id).where(CONV.c.click_id.in_(list(part))))}
    convs_list = sorted(convs)
    conv_hour = hour_floor(CONV.c.conv_time).label("date_hour")
    statements = []
    for part in chunked(clicks, _IDS):
        statements.append(select(SNAP.c.user_id, SNAP.c.date_hour).select_from(
            TOUCH.join(SNAP, SNAP.c.snapshot_id == TOUCH.c.snapshot_id)).where(TOUCH.c.click_id.in_(list(part))).distinct())
        statements.append(select(CONV.c.user_id, conv_hour).select_from(
            JOURNEY.join(CONV, CONV.c.conv_id == JOURNEY.c.conv_id)).where(JOURNEY.c.click_id.in_(list(part))).distinct())
    for part in chunked(convs_list, _IDS):
        statements.append(select(CONV.c.user_id, conv_hour).where(CONV.c.conv_id.in_(list(part))).distinct())
    pairs = _frames(conn, statements).unique().sort(list(PAIRS))
    source_clicks = sum(conn.execute(select(func.count()).where(CLK.c.click_id.in_(list(p)))).scalar()
                        for p in chunked(clicks, _IDS))
    source_convs = sum(conn.execute(select(func.count()).where(CONV.c.conv_id.in_(list(p)))).scalar()
                       for p in chunked(convs_list, _IDS))
    return VisitorScope(clicks, convs_list, pairs, int(source_clicks), int(source_convs))


def _snapshot_ids(conn: Connection, pairs: pl.DataFrame) -> list[int]:
    keys = [(int(u), int(h)) for u, h in pairs.iter_rows()]
    return [int(r[0]) for part in chunked(keys, _IDS) for r in conn.execute(
        select(SNAP.c.snapshot_id).where(tuple_(SNAP.c.user_id, SNAP.c.date_hour).in_(list(part))))]


def _delete(conn: Connection, table, column, ids: list[int], *extra) -> int:
    return sum(conn.execute(delete(table).where(column.in_(list(part)), *extra)).rowcount for part in chunked(ids, _IDS))


def erase_visitor_rows(engine: Engine, scope: VisitorScope, *, include_source: bool, lock_timeout: int) -> dict[str, int]:
    """Delete the visitor's rows (see module docstring) in one transaction, under the named locks
    of the affected hours; returns the rows deleted per table."""
    hours = sorted(set(scope.pairs.get_column("date_hour").to_list()))
    counts = dict.fromkeys(("touchpoints", "conversion_touchpoints", "source_clicks", "source_clicks_advance",
                            "source_conversions"), 0)
    with engine.connect() as conn:
        with hours_locked(conn, hours, lock_timeout):
            read_committed(conn)
            snaps = _snapshot_ids(conn, scope.pairs)
            for part in chunked(snaps, _IDS):
                counts["touchpoints"] += conn.execute(delete(TOUCH).where(TOUCH.c.snapshot_id.in_(list(part)), or_(
                    TOUCH.c.click_id.in_(scope.clicks), TOUCH.c.conv_id.in_(scope.conversions)))).rowcount
            counts["touchpoints"] += _delete(conn, TOUCH, TOUCH.c.click_id, scope.clicks)
            counts["conversion_touchpoints"] = (_delete(conn, JOURNEY, JOURNEY.c.click_id, scope.clicks)
                                                + _delete(conn, JOURNEY, JOURNEY.c.conv_id, scope.conversions))
            if include_source:
                counts["source_conversions"] = _delete(conn, CONV, CONV.c.conv_id, scope.conversions)
                counts["source_clicks"] = _delete(conn, CLK, CLK.c.click_id, scope.clicks)
                if inspect(conn).has_table(ADV.name):
                    counts["source_clicks_advance"] = _delete(conn, ADV, ADV.c.click_id, scope.clicks)
            conn.commit()
    return counts


def record_erasure(engine: Engine, scope: VisitorScope, counts: dict[str, int], *, now: int) -> int:
    """One ``202_attribution_audit`` row (action ``visitor_erasure``, counts only, never an id) per
    affected user."""
    users = sorted(set(scope.pairs.get_column("user_id").to_list()))
    meta = json.dumps({"clicks": len(scope.clicks), "conversions": len(scope.conversions), **counts},
                      separators=(",", ":"), sort_keys=True)
    with engine.begin() as conn:
        for user in users:
            conn.execute(tables.attribution_audit.insert().values(
                user_id=int(user), model_id=None, action="visitor_erasure", metadata=meta, created_at=now))
    return len(users)
