"""The write-back protocol: one chunk of whole hours replaced atomically (D4, D8, D9, D12, D14).

A run *owns* the global rows of every (user, model, hour) where the user is selected and not
deleted, the model is active, valid and selected, and the hour is selected (D9), and the scoped
rows of the same keys (D31, ``storage/scoped_rewrite.py``, written after the global ones). For each chunk of
whole hours, in one transaction, under a named lock per hour (``GET_LOCK`` on MySQL,
``BEGIN IMMEDIATE`` on SQLite):

1. find the stored snapshot rows of the owned keys (held groups and the (user, hour) pairs not
   recomputed excluded: their rows stay);
2. delete their touchpoints and them (stale hours and PHP's duplicate rows go too, D4), but for
   the touchpoints of groups whose stored touchpoints are exactly the computed ones (D37);
3. insert the new snapshots (a key that existed keeps its lowest snapshot id and its
   created_at, as PHP reruns do), read their ids back, insert their touchpoints;
4. read both tables back and compare with what was computed (as DECIMAL strings); any
   difference raises :class:`WriteBackMismatch` and the chunk rolls back;
5. record what each recomputed (user, hour) was computed from (D22), write the chunk's audit rows
   and the cron-log stamp (D18, D11);
6. commit. A crash at any point leaves the chunk's old rows or its new rows, never a mix.

Re-running the same hours gives the same rows (idempotent). Rows of other users, inactive,
invalid or unselected models and other hours are never touched.
"""

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from sqlalchemy import delete, select
from sqlalchemy.engine import Connection, Engine

from attribution_pipeline.core.invariants import GROUP
from attribution_pipeline.core.source_fingerprints import empty_stored_fp, stored_fingerprints
from attribution_pipeline.core.run_summary import foreign_rows
from attribution_pipeline.logs import timed_into
from attribution_pipeline.storage import source_state, tables
from attribution_pipeline.storage.audit import record_chunk
from attribution_pipeline.storage.bulk import bulk_load
from attribution_pipeline.storage.database import is_sqlite
from attribution_pipeline.storage.frame_io import chunked, read_frame_uncommitted
from attribution_pipeline.storage.locks import hours_locked
from attribution_pipeline.storage.scoped_rewrite import replace_scoped
from attribution_pipeline.storage.stored_rows import (
    IDS_PER_STATEMENT,
    SNAP,
    STORED_SCOPED,
    STORED_TOUCHPOINTS,
    TOUCH,
    check_same_rows,
    index_order,
    inserted_touchpoints,
    max_touchpoint_id,
    stored_snapshots,
    unchanged_touchpoints,
)


@dataclass
class ChunkWrite:
    """What to write for one chunk of hours."""

    hours: tuple[int, ...]
    owned: pl.DataFrame  # (model_id, user_id) of the owned models
    snapshots: pl.DataFrame  # frames.SNAPSHOTS rows of groups not held
    credits: pl.DataFrame  # frames.CREDITS rows of groups not held
    held: pl.DataFrame  # invariants.HELD: groups whose stored rows stay
    lookback_start: int
    lookback_end: int
    journeys: pl.DataFrame | None = None  # frames.JOURNEYS to persist into 202_conversion_touchpoints
    audits: pl.DataFrame | None = None  # the chunk's audit rows (D18), committed with its rows
    unchanged: pl.DataFrame | None = None  # (user_id, date_hour) not recomputed: their rows stay (D22)
    state: pl.DataFrame | None = None  # (user_id, date_hour, source_fp) to record as written (D22)
    token: str = ""  # the write's token in attribution_source_state (the run id)
    scoped: pl.DataFrame | None = None  # scope_credit.SCOPED rows to write (D31); None: scoped rows untouched
    scoped_credits: pl.DataFrame | None = None  # scope_credit.SCOPED_CREDITS: their touchpoints (None: none)
    #: The scoped rows still being computed while the global rows are written: called (it waits)
    #: just before they are written, it gives an object with ``rows``, ``credits`` and ``held`` (the
    #: values of ``scoped``, ``scoped_credits`` and the groups to hold); groups to hold raise
    #: :class:`ScopedGroupsHeld` (the caller plans the chunk again with them held).
    pending_scoped: Callable[[], Any] | None = None
    #: Called as the touchpoints start loading, or as the write starts when it has none (the
    #: write-back starts the previous chunk's exports then).
    on_load: Callable[[], None] | None = None


class ScopedGroupsHeld(Exception):
    """The scoped rows computed while the chunk's global rows were written hold groups (their rows
    do not add up, D31): the chunk's transaction rolls back, to be planned again with them held."""

    def __init__(self, held: pl.DataFrame):
        super().__init__(f"{held.height} group(s) held by their scoped rows")


def with_scoped(plan: ChunkWrite) -> ChunkWrite:
    """``plan`` with its pending scoped rows (if any) computed, of its owned models only (a model
    deleted since the run read it is gone from ``owned``, :func:`without_deleted_models`)."""
    if plan.pending_scoped is None:
        return plan
    computed = plan.pending_scoped()
    if computed.held.height:
        raise ScopedGroupsHeld(computed.held)
    owned = plan.owned.select("model_id").unique()
    mine = lambda frame: None if frame is None else frame.join(owned, on="model_id", how="semi")  # noqa: E731
    return dataclasses.replace(plan, scoped=mine(computed.rows), scoped_credits=mine(computed.credits),
                               pending_scoped=None)


@dataclass
class ChunkOutcome:
    hours: tuple[int, ...]
    snapshots_deleted: int = 0
    touchpoints_deleted: int = 0
    snapshots_written: int = 0
    touchpoints_written: int = 0
    touchpoints_kept: int = 0  # of rewritten groups, left as stored: the same rows (D37)
    journey_touches_written: int = 0
    scoped_snapshots_deleted: int = 0
    scoped_touchpoints_deleted: int = 0
    scoped_snapshots_written: int = 0
    scoped_touchpoints_written: int = 0
    audit_rows: int = 0
    state_rows: int = 0
    seconds: float = 0.0
    by_model: dict[int, dict[str, int]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    foreign: pl.DataFrame | None = None  # stored rows of owned keys someone else wrote (D20)

    def stage(self, name: str):
        """Time a stage of the chunk's write into ``stage_seconds``."""
        return timed_into(self.stage_seconds, name)


# ------------------------------------------------------------------------------------------
# the chunk transaction
# ------------------------------------------------------------------------------------------


def write_chunk(engine: Engine, plan: ChunkWrite, *, now: int, batch_rows: int, lock_timeout: int) -> ChunkOutcome:
    """Replace the owned rows of one chunk of hours, atomically (see module docstring)."""
    started = time.perf_counter()
    outcome = ChunkOutcome(hours=plan.hours)
    if plan.on_load is not None and plan.credits.height == 0:
        plan.on_load()  # no touchpoints to load: what waits for their load need not wait
    with engine.connect() as conn:
        lock_started = time.perf_counter()
        with hours_locked(conn, plan.hours, lock_timeout):
            outcome.stage_seconds["lock"] = time.perf_counter() - lock_started
            read_committed(conn)
            transaction = conn.begin()
            try:
                plan = without_deleted_models(conn, plan)
                stored = _replace_rows(conn, plan, outcome, now=now, batch_rows=batch_rows)
                if plan.journeys is not None:
                    with outcome.stage("persist_journeys"):
                        outcome.journey_touches_written = persist_journeys(conn, plan.journeys, now=now, batch_rows=batch_rows)
                if plan.state is not None:
                    with outcome.stage("record_state"):
                        outcome.state_rows = record_state(conn, plan, now=now, stored=stored)
                if plan.audits is not None:
                    with outcome.stage("audit"):
                        outcome.audit_rows = record_chunk(conn, plan.audits, now=now)
            except BaseException:
                transaction.rollback()
                raise
            with outcome.stage("commit"):
                transaction.commit()
    outcome.seconds = time.perf_counter() - started
    return outcome


def without_deleted_models(conn: Connection, plan: ChunkWrite) -> ChunkWrite:
    """``plan`` without the models deleted from ``202_attribution_models`` since the run read them,
    looked up under the chunk's locks: a run never writes rows back for a deleted model whose rows
    the model-change sensor's cleanup removes (D26)."""
    ids = plan.owned.get_column("model_id").unique().to_list()
    if not ids:
        return plan
    m = tables.attribution_models
    present = {int(i) for i in conn.execute(select(m.c.model_id).where(m.c.model_id.in_(ids))).scalars()}
    gone = [int(i) for i in ids if int(i) not in present]
    if not gone:
        return plan
    keep = ~pl.col("model_id").is_in(gone)
    kept = lambda frame: None if frame is None else frame.filter(keep)  # noqa: E731
    return dataclasses.replace(
        plan, owned=plan.owned.filter(keep), snapshots=plan.snapshots.filter(keep), credits=plan.credits.filter(keep),
        held=plan.held.filter(keep), audits=kept(plan.audits), scoped=kept(plan.scoped),
        scoped_credits=kept(plan.scoped_credits))


def read_committed(conn: Connection) -> None:
    """Run the chunk's transaction at READ COMMITTED on MySQL/MariaDB: at the default REPEATABLE
    READ its ``DELETE ... WHERE snapshot_id IN (...)`` takes next-key locks up to the end of the
    touchpoints' ``snapshot_conv`` index (the newest snapshots are the ones rewritten), so any
    other session inserting touchpoints for new snapshots (Prosper202, another run on other hours)
    waits for the chunk's commit (bench/RESULTS.md, write path details). Our own writers are
    serialised by the hour locks; inside the transaction every read is of rows those locks guard.
    Not done where the binary log is statement-based (InnoDB refuses to log READ COMMITTED writes
    in that format)."""
    if is_sqlite(conn):
        return
    binlog = conn.exec_driver_sql("SELECT IF(@@log_bin = 1, @@binlog_format, 'OFF')").scalar()
    conn.commit()  # the SELECT autobegan a transaction; the level is set between transactions
    if str(binlog).upper() != "STATEMENT":
        conn.execution_options(isolation_level="READ COMMITTED")  # reset when the connection is returned


def _replace_rows(conn: Connection, plan: ChunkWrite, outcome: ChunkOutcome, *, now: int,
                  batch_rows: int) -> pl.DataFrame | None:
    """Steps 1-4 of the module docstring. Returns the snapshot rows now stored for the keys the
    chunk rewrote (``STORED_SCOPED``: read back and found equal to what was computed), or None when
    the scoped rows were left alone (then they are not known without a read)."""
    with outcome.stage("find_stored"):
        existing = stored_snapshots(conn, plan.owned, plan.hours).join(
            plan.held.select(GROUP).unique(), on=GROUP, how="anti"
        )
        if plan.unchanged is not None:
            existing = existing.join(plan.unchanged, on=["user_id", "date_hour"], how="anti")
    outcome.foreign = foreign_rows(existing)
    computed = plan.credits.select(*GROUP, "conv_id", "click_id", "position", credit="credit_stored",
                                   weight="credit_stored")
    with outcome.stage("compare_touchpoints"):  # groups whose touchpoints stay as stored (D37)
        same = unchanged_touchpoints(conn, existing.join(plan.snapshots.select(GROUP), on=GROUP, how="semi"),
                                     computed, GROUP)
    kept_ids = set(same.get_column("snapshot_id").to_list())
    with outcome.stage("delete"):
        _delete_stored(conn, existing.get_column("snapshot_id").to_list(), kept_ids, outcome)

    kept = existing.group_by(GROUP).agg(pl.col("snapshot_id").min(), pl.col("created_at").min())
    rows = (
        plan.snapshots.join(kept, on=GROUP, how="left")
        .with_columns(
            scope_type=pl.lit("global"),
            scope_id=pl.lit(None, dtype=pl.Int64),
            lookback_start=pl.lit(plan.lookback_start),
            lookback_end=pl.lit(plan.lookback_end),
            created_at=pl.col("created_at").fill_null(now),
        )
        .select("snapshot_id", *GROUP, "scope_type", "scope_id", "lookback_start", "lookback_end",
                "attributed_clicks", "attributed_conversions", "attributed_revenue", "attributed_cost", "created_at")
    )
    reused = rows.filter(pl.col("snapshot_id").is_not_null())
    fresh = rows.filter(pl.col("snapshot_id").is_null()).drop("snapshot_id")
    with outcome.stage("load_snapshots"):
        outcome.snapshots_written = bulk_load(conn, SNAP, reused, batch_rows=batch_rows) + bulk_load(
            conn, SNAP, fresh, batch_rows=batch_rows
        )
    with outcome.stage("read_back_snapshots"):
        written = stored_snapshots(conn, plan.owned, plan.hours, reader=read_frame_uncommitted).join(
            plan.snapshots.select(GROUP), on=GROUP, how="semi")
        _check_snapshots(rows, written)
    with outcome.stage("prepare_touchpoints"):
        touch_rows = computed.join(written.select("snapshot_id", *GROUP), on=GROUP)
        if kept_ids:  # a kept group keeps its snapshot id and its stored touchpoints
            kept_rows = pl.col("snapshot_id").is_in(list(kept_ids))
            outcome.touchpoints_kept = int(touch_rows.select(kept_rows.sum()).item())
            touch_rows = touch_rows.filter(~kept_rows)
        touch_rows = index_order(
            touch_rows.select("snapshot_id", "conv_id", "click_id", "position", "credit", "weight", created_at=pl.lit(now)))
    if plan.on_load is not None and plan.credits.height:  # (with none, called as the write started)
        plan.on_load()
    with outcome.stage("load_touchpoints"):
        # AUTO_INCREMENT only grows: every row inserted below lies above this id
        before = max_touchpoint_id(conn)
        outcome.touchpoints_written = bulk_load(conn, TOUCH, touch_rows, batch_rows=batch_rows)
    with outcome.stage("read_back_touchpoints"):
        inserted = inserted_touchpoints(conn, before, max_touchpoint_id(conn), written.get_column("snapshot_id"))
        _check_touchpoints(touch_rows, inserted)
    with outcome.stage("scoped_wait"):
        plan = with_scoped(plan)
    scoped = replace_scoped(conn, plan, outcome, now=now, batch_rows=batch_rows) if plan.scoped is not None else None

    per_model = (
        plan.snapshots.group_by("model_id").agg(snapshots=pl.len())
        .join(plan.credits.group_by("model_id").agg(touchpoints=pl.len()), on="model_id", how="full", coalesce=True)
        .fill_null(0)
    )
    outcome.by_model = {
        int(m): {"snapshots": int(s), "touchpoints": int(t)}
        for m, s, t in zip(per_model["model_id"], per_model["snapshots"], per_model["touchpoints"])
    }
    if scoped is None:
        return None
    as_global = written.with_columns(scope_type=pl.lit("global"), scope_id=pl.lit(None, dtype=pl.Int64))
    return pl.concat([as_global.select(list(STORED_SCOPED)).cast(STORED_SCOPED),
                      scoped.select(list(STORED_SCOPED)).cast(STORED_SCOPED)])


def _delete_stored(conn: Connection, old_ids: list[int], kept_ids: set[int], outcome: ChunkOutcome) -> None:
    """Delete the snapshot rows ``old_ids`` and their touchpoints, but for those of ``kept_ids``."""
    for ids in chunked(old_ids, IDS_PER_STATEMENT):
        replaced = [i for i in ids if i not in kept_ids]
        if replaced:
            outcome.touchpoints_deleted += conn.execute(delete(TOUCH).where(TOUCH.c.snapshot_id.in_(replaced))).rowcount
        outcome.snapshots_deleted += conn.execute(delete(SNAP).where(SNAP.c.snapshot_id.in_(list(ids)))).rowcount


def record_state(conn: Connection, plan: ChunkWrite, *, now: int, stored: pl.DataFrame | None = None) -> int:
    """Record, in the chunk's transaction, what each recomputed (user, hour) was computed from and
    how its snapshot rows are now stored (D22); a (user, hour) with a held group is forgotten, so
    that the next run recomputes it. ``stored``: the rows the chunk just wrote and verified (every
    owned row of a recomputed (user, hour): the others were deleted), else they are read again."""
    keys = ["user_id", "date_hour"]
    held = plan.held.select(keys).unique()
    written = plan.state.join(held, on=keys, how="anti")
    if stored is None:
        stored = stored_snapshots(conn, plan.owned, plan.hours, scopes="all")
    stored = stored_fingerprints(stored.join(written, on=keys, how="semi"))
    rows = written.join(stored, on=keys, how="left").with_columns(pl.col("stored_fp").fill_null(empty_stored_fp()))
    source_state.forget(conn, held.join(plan.state, on=keys, how="semi"))
    return source_state.record(conn, rows, token=plan.token, now=now)


def _check_snapshots(expected: pl.DataFrame, written: pl.DataFrame) -> None:
    cols = [*GROUP, "lookback_start", "lookback_end", "attributed_clicks", "attributed_conversions",
            "attributed_revenue", "attributed_cost"]
    check_same_rows(expected.select(cols), written.select(cols), "202_attribution_snapshots", GROUP)


def _check_touchpoints(expected: pl.DataFrame, written: pl.DataFrame) -> None:
    """``written`` (read back in id order) holds exactly the rows of ``expected`` (loaded in that
    order, so compared as they are when nothing differs)."""
    cols = ["snapshot_id", "conv_id", "position", "click_id", "credit", "weight"]
    check_same_rows(expected.select(cols).cast(STORED_TOUCHPOINTS), written.select(cols),
                    "202_attribution_touchpoints", cols[:4])


# ------------------------------------------------------------------------------------------
# journeys persistence (D13, optional)
# ------------------------------------------------------------------------------------------


def persist_journeys(conn: Connection, journeys: pl.DataFrame, *, now: int, batch_rows: int) -> int:
    """PHP's ``persistJourney`` for many conversions: delete each conversion's stored touches,
    insert positions 0..n-1 with one ``created_at``."""
    t = tables.conversion_touchpoints
    conv_ids = journeys.get_column("conv_id").unique().sort().to_list()
    for ids in chunked(conv_ids, IDS_PER_STATEMENT):
        conn.execute(delete(t).where(t.c.conv_id.in_(list(ids))))
    rows = journeys.select("conv_id", "click_id", "click_time", "position", created_at=pl.lit(now))
    return bulk_load(conn, t, rows, batch_rows=batch_rows)
