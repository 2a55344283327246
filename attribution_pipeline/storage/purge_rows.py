"""Deleting what the pipeline stored for one user in MySQL: bounded batches under the write-back's
hour locks (D27: retention and erasure).

A purge names a user and an hour bound (``before``: every hour strictly before it; ``None``:
every hour, for an erasure). Per user it removes, hour by hour in ascending order:

* ``202_attribution_snapshots`` of the user whose ``date_hour`` is in range (the ``user_hour``
  index) and their ``202_attribution_touchpoints`` (by ``snapshot_id``: the ``snapshot_conv``
  index);
* ``202_conversion_touchpoints`` of the user's conversions whose ``conv_time`` is in range (the
  conversions found through ``202_conversion_logs``' ``user_id`` index, their journeys by the
  ``conv_id`` index): the hour a journey belongs to is its conversion's, as for the write-back;
* ``attribution_source_state`` rows of the (user, hour)s (D22): an hour purged is no longer
  "recorded", so only a run whose window covers it again writes it again.

The hours are cut into batches of at most :data:`MAX_HOURS_PER_BATCH` hours and, where the rows
allow it, at most :data:`BATCH_ROWS` rows; each batch holds the named lock of each of its hours
(``storage/locks.py``, the write-back's, so a run writing those hours waits, D9) and commits
whenever :data:`BATCH_ROWS` rows were deleted in its transaction, so no transaction deletes more.
Deleting is idempotent: a batch interrupted (or retried after a lost connection) is finished by
the next attempt. Nothing here prints or logs a row's content; counts are returned.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import polars as pl
from sqlalchemy import and_, delete, func, inspect, select, true
from sqlalchemy.engine import Connection, Engine

from attribution_pipeline.core.hours import HOUR
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.frame_io import chunked, read_frame
from attribution_pipeline.storage.hour_rewrite import read_committed
from attribution_pipeline.storage.locks import hours_locked
from attribution_pipeline.storage.source_state import hour_floor

#: Rows deleted in one transaction at most (a transaction is committed once it reaches this).
BATCH_ROWS = 50_000
#: Hours of one batch at most (one named lock each).
MAX_HOURS_PER_BATCH = 168
#: Ids in one ``IN (...)`` list.
IDS_PER_DELETE = 5000

SNAP, TOUCH = tables.attribution_snapshots, tables.attribution_touchpoints
JOURNEY, CONV = tables.conversion_touchpoints, tables.conversion_logs
STATE, AUDIT, EXPORTS = tables.source_state, tables.attribution_audit, tables.attribution_exports

#: The MySQL stores a purge counts, in the order they are reported.
ROW_STORES = ("snapshots", "touchpoints", "conversion_touchpoints", "source_state", "export_rows")
_HOURS = {"date_hour": pl.Int64, "rows": pl.Int64}


@dataclass
class Budget:
    """Commits the connection's transaction each time ``limit`` rows were deleted in it."""

    conn: Connection
    limit: int = BATCH_ROWS
    pending: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def deleted(self, store: str, rows: int) -> None:
        self.counts[store] = self.counts.get(store, 0) + rows
        self.pending += rows
        if self.pending >= self.limit:
            self.conn.commit()
            self.pending = 0


def _in_range(column, before: int | None, lo: int | None = None, hi: int | None = None):
    """``lo <= column <= hi`` (when given) and ``column < before`` (when given)."""
    parts = [column >= lo] if lo is not None else []
    parts += [column <= hi] if hi is not None else []
    parts += [column < before] if before is not None else []
    return and_(true(), *parts)


def has_table(conn: Connection, table) -> bool:
    return inspect(conn).has_table(table.name)


# ------------------------------------------------------------------------------------------
# what a purge would remove: counts per hour (also the batches' plan)
# ------------------------------------------------------------------------------------------


def hour_weights(conn: Connection, user: int, before: int | None) -> pl.DataFrame:
    """``date_hour, rows``: per hour of the user in range, the snapshot, touchpoint, journey and
    state rows a purge would delete (hours with any of them)."""
    snap_hours = select(SNAP.c.date_hour, func.count().label("rows")).where(
        SNAP.c.user_id == user, _in_range(SNAP.c.date_hour, before)).group_by(SNAP.c.date_hour)
    touch_hours = select(SNAP.c.date_hour, func.count().label("rows")).select_from(
        SNAP.join(TOUCH, TOUCH.c.snapshot_id == SNAP.c.snapshot_id)).where(
        SNAP.c.user_id == user, _in_range(SNAP.c.date_hour, before)).group_by(SNAP.c.date_hour)
    frames = [read_frame(conn, snap_hours, _HOURS), read_frame(conn, touch_hours, _HOURS)]
    conv_hour = hour_floor(CONV.c.conv_time)
    frames.append(read_frame(conn, select(conv_hour.label("date_hour"), func.count().label("rows")).select_from(
        CONV.join(JOURNEY, JOURNEY.c.conv_id == CONV.c.conv_id)).where(
        CONV.c.user_id == user, _in_range(CONV.c.conv_time, before)).group_by(conv_hour), _HOURS))
    if has_table(conn, STATE):
        frames.append(read_frame(conn, select(STATE.c.date_hour, func.count().label("rows")).where(
            STATE.c.user_id == user, _in_range(STATE.c.date_hour, before)).group_by(STATE.c.date_hour), _HOURS))
    return pl.concat(frames).group_by("date_hour").agg(pl.col("rows").sum()).sort("date_hour")


def count_rows(conn: Connection, user: int, before: int | None) -> dict[str, int]:
    """The rows of each store a purge of ``user`` before ``before`` (``None``: an erasure, every
    row) would delete; nothing is deleted."""
    in_hours = _in_range(SNAP.c.date_hour, before)
    counts = {
        "snapshots": conn.execute(select(func.count()).where(SNAP.c.user_id == user, in_hours)).scalar(),
        "touchpoints": conn.execute(select(func.count()).select_from(
            SNAP.join(TOUCH, TOUCH.c.snapshot_id == SNAP.c.snapshot_id)).where(SNAP.c.user_id == user, in_hours)).scalar(),
        "conversion_touchpoints": conn.execute(select(func.count()).select_from(
            CONV.join(JOURNEY, JOURNEY.c.conv_id == CONV.c.conv_id)).where(
            CONV.c.user_id == user, _in_range(CONV.c.conv_time, before))).scalar(),
        "source_state": conn.execute(select(func.count()).where(
            STATE.c.user_id == user, _in_range(STATE.c.date_hour, before))).scalar() if has_table(conn, STATE) else 0,
        "export_rows": len(export_rows(conn, user, before, everything=before is None)),
    }
    return {k: int(v or 0) for k, v in counts.items()}


def plan_batches(weights: pl.DataFrame, *, limit: int = BATCH_ROWS,
                 max_hours: int = MAX_HOURS_PER_BATCH) -> list[tuple[int, ...]]:
    """Consecutive hours packed into batches of at most ``max_hours`` hours and, unless one hour
    alone holds more, at most ``limit`` rows."""
    batches: list[tuple[int, ...]] = []
    current: list[int] = []
    rows = 0
    for hour, n in weights.select("date_hour", "rows").iter_rows():
        if current and (rows + n > limit or len(current) >= max_hours):
            batches.append(tuple(current))
            current, rows = [], 0
        current.append(int(hour))
        rows += int(n)
    if current:
        batches.append(tuple(current))
    return batches


# ------------------------------------------------------------------------------------------
# deleting
# ------------------------------------------------------------------------------------------


def _delete_ids(budget: Budget, store: str, table, id_column, ids: Sequence[int]) -> None:
    for part in chunked(sorted(ids), IDS_PER_DELETE):
        budget.deleted(store, budget.conn.execute(delete(table).where(id_column.in_(list(part)))).rowcount)


def _delete_children(budget: Budget, store: str, table, id_column, parent_column, parents: Sequence[int]) -> None:
    """Delete ``table``'s rows whose ``parent_column`` is in ``parents``, by their ids, at most
    :data:`BATCH_ROWS` selected at a time (so the budget commits between them)."""
    for part in chunked(sorted(parents), IDS_PER_DELETE):
        while True:
            ids = [r[0] for r in budget.conn.execute(
                select(id_column).where(parent_column.in_(list(part))).limit(budget.limit))]
            if not ids:
                break
            _delete_ids(budget, store, table, id_column, ids)


def purge_batch(conn: Connection, user: int, hours: tuple[int, ...], before: int | None) -> dict[str, int]:
    """Delete the user's rows of ``hours`` (all hours ``< before``), the locks of those hours held
    by the caller. Commits every :data:`BATCH_ROWS` rows and at the end."""
    budget = Budget(conn)
    lo, hi = hours[0], hours[-1]
    snap_ids = [r[0] for r in conn.execute(select(SNAP.c.snapshot_id).where(
        SNAP.c.user_id == user, _in_range(SNAP.c.date_hour, before, lo, hi)))]
    _delete_children(budget, "touchpoints", TOUCH, TOUCH.c.touchpoint_id, TOUCH.c.snapshot_id, snap_ids)
    _delete_ids(budget, "snapshots", SNAP, SNAP.c.snapshot_id, snap_ids)
    conv_ids = [r[0] for r in conn.execute(select(CONV.c.conv_id).where(
        CONV.c.user_id == user, _in_range(CONV.c.conv_time, before, lo, hi + HOUR - 1)))]
    _delete_children(budget, "conversion_touchpoints", JOURNEY, JOURNEY.c.touchpoint_id, JOURNEY.c.conv_id, conv_ids)
    if has_table(conn, STATE):
        budget.deleted("source_state", conn.execute(delete(STATE).where(
            STATE.c.user_id == user, _in_range(STATE.c.date_hour, before, lo, hi))).rowcount)
    conn.commit()
    return budget.counts


def purge_user_rows(engine: Engine, user: int, before: int | None, *, lock_timeout: int,
                    retry=None, logger=None) -> dict[str, int]:
    """Delete the user's snapshots, touchpoints, journeys and state rows of every hour before
    ``before`` (``None``: every hour), batch by batch, each under its hours' named locks."""
    with engine.connect() as conn:
        batches = plan_batches(hour_weights(conn, user, before))
    totals = dict.fromkeys(ROW_STORES[:-1], 0)

    def one(batch: tuple[int, ...]) -> dict[str, int]:
        with engine.connect() as conn:
            with hours_locked(conn, batch, lock_timeout):
                read_committed(conn)
                return purge_batch(conn, user, batch, before)

    for batch in batches:
        done = retry.run(lambda b=batch: one(b), what="purge batch", logger=logger) if retry else one(batch)
        for store, n in done.items():
            totals[store] = totals.get(store, 0) + n
    return totals


# ------------------------------------------------------------------------------------------
# the export queue's rows and the audit rows
# ------------------------------------------------------------------------------------------


def export_rows(conn: Connection, user: int, before: int | None, *, everything: bool = False) -> list[tuple[int, str | None]]:
    """``(export_id, file_path)`` of the user's ``202_attribution_exports`` rows to purge: every
    row (``everything``, an erasure), else those whose range starts before ``before`` and that no
    worker is processing (a retention purge; None: none)."""
    if not has_table(conn, EXPORTS) or (before is None and not everything):
        return []
    stmt = select(EXPORTS.c.export_id, EXPORTS.c.file_path).where(EXPORTS.c.user_id == user)
    if not everything:
        stmt = stmt.where(EXPORTS.c.start_hour < before, EXPORTS.c.status != "processing")
    return [(int(r[0]), r[1]) for r in conn.execute(stmt.order_by(EXPORTS.c.export_id))]


def delete_export_rows(engine: Engine, export_ids: Iterable[int]) -> int:
    """Delete export-queue rows by id, :data:`IDS_PER_DELETE` per transaction."""
    removed = 0
    for part in chunked(sorted(export_ids), IDS_PER_DELETE):
        with engine.begin() as conn:
            removed += conn.execute(delete(EXPORTS).where(EXPORTS.c.export_id.in_(list(part)))).rowcount
    return removed


def delete_audit_rows(engine: Engine, user: int) -> int:
    """Delete every ``202_attribution_audit`` row of ``user`` (an erasure), :data:`BATCH_ROWS` per
    transaction (the ``user_lookup`` index)."""
    removed = 0
    while True:
        with engine.begin() as conn:
            ids = [r[0] for r in conn.execute(select(AUDIT.c.audit_id).where(AUDIT.c.user_id == user).limit(BATCH_ROWS))]
            if not ids:
                return removed
            for part in chunked(ids, IDS_PER_DELETE):
                removed += conn.execute(delete(AUDIT).where(AUDIT.c.audit_id.in_(list(part)))).rowcount


def user_model_ids(conn: Connection, user: int) -> list[int]:
    """Ids of the user's models: in ``202_attribution_models`` and in its stored snapshots."""
    models = tables.attribution_models
    ids = {int(r[0]) for r in conn.execute(select(models.c.model_id).where(models.c.user_id == user))}
    ids |= {int(r[0]) for r in conn.execute(select(SNAP.c.model_id).where(SNAP.c.user_id == user).distinct())}
    return sorted(ids)
