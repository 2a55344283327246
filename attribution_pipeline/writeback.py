"""Write-back into Prosper202's tables (D4, D8, D9, D11, D12, D14, D18, D19, D20).

A run *owns* the global rows of every (user, model, hour) where the user is selected and not
deleted, the model is active, valid and selected, and the hour is selected (D9). For each chunk of
whole hours, in one transaction, under a named lock per hour (``GET_LOCK`` on MySQL,
``BEGIN IMMEDIATE`` on SQLite):

1. find the stored snapshot rows of the owned keys (held groups excluded: their rows stay);
2. delete their touchpoints and them (stale hours and PHP's duplicate rows go too, D4);
3. insert the new snapshots (a key that existed keeps its lowest snapshot id and its
   created_at, as PHP reruns do), read their ids back, insert their touchpoints;
4. read both tables back and compare with what was computed (as DECIMAL strings); any
   difference raises :class:`WriteBackMismatch` and the chunk rolls back;
5. commit. A crash at any point leaves the chunk's old rows or its new rows, never a mix.

Re-running the same hours gives the same rows (idempotent). Rows of other users, inactive,
invalid or unselected models and other hours are never touched.
"""

import hashlib
import json
import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import polars as pl
from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.engine import Connection, Engine

from attribution_pipeline import schema
from attribution_pipeline.db import (
    bulk_insert,
    bulk_load,
    chunked,
    is_sqlite,
    read_frame,
    read_frame_in_transaction,
    read_frame_uncommitted,
)
from attribution_pipeline.precision import CREDIT_DTYPE, MONEY_DTYPE
from attribution_pipeline.errors import LockTimeout, WriteBackMismatch

SNAP = schema.attribution_snapshots
TOUCH = schema.attribution_touchpoints
GROUP = ["model_id", "user_id", "date_hour"]
_IDS_PER_STATEMENT = 5000


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


@dataclass
class ChunkOutcome:
    hours: tuple[int, ...]
    snapshots_deleted: int = 0
    touchpoints_deleted: int = 0
    snapshots_written: int = 0
    touchpoints_written: int = 0
    journey_touches_written: int = 0
    seconds: float = 0.0
    by_model: dict[int, dict[str, int]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    foreign: pl.DataFrame | None = None  # stored rows of owned keys someone else wrote (D20)

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - started


# ------------------------------------------------------------------------------------------
# locks
# ------------------------------------------------------------------------------------------


def lock_name(conn: Connection, hour: int) -> str:
    """A server-wide MySQL lock name for one hour of this database (<= 64 characters)."""
    database = conn.engine.url.database or ""
    tag = hashlib.sha1(database.encode()).hexdigest()[:12]
    return f"attribution:{tag}:{hour}"


@contextmanager
def hours_locked(conn: Connection, hours: Sequence[int], timeout_seconds: int):
    """Hold one named lock per hour (ascending, so two writers never deadlock) on MySQL.

    On SQLite the write transaction itself (``BEGIN IMMEDIATE``) serialises writers.
    """
    if is_sqlite(conn):
        yield
        return
    taken: list[str] = []
    try:
        for hour in sorted(hours):
            name = lock_name(conn, hour)
            got = conn.execute(select(func.get_lock(name, timeout_seconds))).scalar()
            if got != 1:
                raise LockTimeout(
                    f"hour {hour} is being written by another run (lock {name!r} not granted in "
                    f"{timeout_seconds}s); retry later or raise ATTRIBUTION_LOCK_TIMEOUT"
                )
            taken.append(name)
        conn.commit()  # GET_LOCK autobegan a transaction; the locks belong to the session
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        for name in taken:
            conn.execute(select(func.release_lock(name)))
        if conn.in_transaction():
            conn.commit()


# ------------------------------------------------------------------------------------------
# reading what is stored
# ------------------------------------------------------------------------------------------

STORED_SNAPSHOTS = {
    "snapshot_id": pl.Int64,
    "model_id": pl.Int64,
    "user_id": pl.Int64,
    "date_hour": pl.Int64,
    "lookback_start": pl.Int64,
    "lookback_end": pl.Int64,
    "attributed_clicks": pl.Int64,
    "attributed_conversions": pl.Int64,
    "attributed_revenue": MONEY_DTYPE,
    "attributed_cost": MONEY_DTYPE,
    "created_at": pl.Int64,
}
STORED_TOUCHPOINTS = {
    "snapshot_id": pl.Int64,
    "conv_id": pl.Int64,
    "click_id": pl.UInt64,
    "position": pl.Int32,
    "credit": CREDIT_DTYPE,
    "weight": CREDIT_DTYPE,
}


def stored_snapshots(conn: Connection, owned: pl.DataFrame, hours: Sequence[int], reader=read_frame_in_transaction) -> pl.DataFrame:
    """Stored global rows of the owned (model, user) pairs in ``hours`` (all of them, duplicates too)."""
    if owned.height == 0 or not hours:
        return pl.DataFrame(schema=STORED_SNAPSHOTS)
    model_ids = owned.get_column("model_id").unique().sort().to_list()
    parts = []
    for ids in chunked(model_ids, _IDS_PER_STATEMENT):
        stmt = select(*[SNAP.c[name] for name in STORED_SNAPSHOTS]).where(
            SNAP.c.scope_type == "global",
            SNAP.c.scope_id.is_(None),
            SNAP.c.date_hour.between(min(hours), max(hours)),
            SNAP.c.model_id.in_(list(ids)),
        )
        parts.append(reader(conn, stmt, STORED_SNAPSHOTS))
    found = pl.concat(parts)
    return found.join(owned.select("model_id", "user_id"), on=["model_id", "user_id"], how="semi").filter(
        pl.col("date_hour").is_in(list(hours))
    )


def stored_touchpoints(conn: Connection, snapshot_ids: Sequence[int], reader=read_frame) -> pl.DataFrame:
    parts = [pl.DataFrame(schema=STORED_TOUCHPOINTS)]
    for ids in chunked(sorted(snapshot_ids), _IDS_PER_STATEMENT):
        stmt = select(*[TOUCH.c[name] for name in STORED_TOUCHPOINTS]).where(TOUCH.c.snapshot_id.in_(list(ids)))
        parts.append(reader(conn, stmt, STORED_TOUCHPOINTS))
    return pl.concat(parts).cast(STORED_TOUCHPOINTS)


def max_touchpoint_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(TOUCH.c.touchpoint_id), 0))).scalar())


def inserted_touchpoints(conn: Connection, after_id: int, last_id: int, snapshot_ids: pl.Series) -> pl.DataFrame:
    """Touchpoints this transaction inserted (id in ``(after_id, last_id]``, of ``snapshot_ids``),
    read back before commit: a sequential primary-key range scan, 3x faster than looking the rows
    up by snapshot id (bench/RESULTS.md). The upper bound (the highest id just after our insert)
    keeps the scan to our rows even when later rows exist, and makes the statement mean the same
    whenever it runs (the benchmark replays it). Rows another writer inserted meanwhile within the
    range are filtered out by snapshot id; should any belong to our snapshots, the comparison fails
    and the chunk rolls back."""
    stmt = select(*[TOUCH.c[name] for name in STORED_TOUCHPOINTS]).where(
        TOUCH.c.touchpoint_id > after_id, TOUCH.c.touchpoint_id <= last_id
    )
    found = read_frame_uncommitted(conn, stmt, STORED_TOUCHPOINTS).cast(STORED_TOUCHPOINTS)
    return found.filter(pl.col("snapshot_id").is_in(snapshot_ids.implode()))


# ------------------------------------------------------------------------------------------
# the chunk transaction
# ------------------------------------------------------------------------------------------


def write_chunk(engine: Engine, plan: ChunkWrite, *, now: int, batch_rows: int, lock_timeout: int) -> ChunkOutcome:
    """Replace the owned rows of one chunk of hours, atomically (see module docstring)."""
    started = time.perf_counter()
    outcome = ChunkOutcome(hours=plan.hours)
    with engine.connect() as conn:
        lock_started = time.perf_counter()
        with hours_locked(conn, plan.hours, lock_timeout):
            outcome.stage_seconds["lock"] = time.perf_counter() - lock_started
            transaction = conn.begin()
            try:
                _replace_rows(conn, plan, outcome, now=now, batch_rows=batch_rows)
                if plan.journeys is not None:
                    with outcome.stage("persist_journeys"):
                        outcome.journey_touches_written = persist_journeys(conn, plan.journeys, now=now, batch_rows=batch_rows)
            except BaseException:
                transaction.rollback()
                raise
            with outcome.stage("commit"):
                transaction.commit()
    outcome.seconds = time.perf_counter() - started
    return outcome


def _replace_rows(conn: Connection, plan: ChunkWrite, outcome: ChunkOutcome, *, now: int, batch_rows: int) -> None:
    with outcome.stage("find_stored"):
        existing = stored_snapshots(conn, plan.owned, plan.hours).join(
            plan.held.select(GROUP).unique(), on=GROUP, how="anti"
        )
    outcome.foreign = foreign_rows(existing)
    old_ids = existing.get_column("snapshot_id").to_list()
    with outcome.stage("delete"):
        for ids in chunked(old_ids, _IDS_PER_STATEMENT):
            outcome.touchpoints_deleted += conn.execute(delete(TOUCH).where(TOUCH.c.snapshot_id.in_(list(ids)))).rowcount
            outcome.snapshots_deleted += conn.execute(delete(SNAP).where(SNAP.c.snapshot_id.in_(list(ids)))).rowcount

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
        written = stored_snapshots(conn, plan.owned, plan.hours).join(plan.snapshots.select(GROUP), on=GROUP, how="semi")
        _check_snapshots(rows, written)
    with outcome.stage("prepare_touchpoints"):
        touch_rows = (
            plan.credits.join(written.select("snapshot_id", *GROUP), on=GROUP)
            .select("snapshot_id", "conv_id", "click_id", "position",
                    credit="credit_stored", weight="credit_stored", created_at=pl.lit(now))
            .sort("snapshot_id", "conv_id", "position")  # index order: sequential inserts into snapshot_conv
        )
    with outcome.stage("load_touchpoints"):
        # AUTO_INCREMENT only grows: every row inserted below lies above this id
        before = max_touchpoint_id(conn)
        outcome.touchpoints_written = bulk_load(conn, TOUCH, touch_rows, batch_rows=batch_rows)
    with outcome.stage("read_back_touchpoints"):
        inserted = inserted_touchpoints(conn, before, max_touchpoint_id(conn), written.get_column("snapshot_id"))
        _check_touchpoints(touch_rows, inserted)

    per_model = (
        plan.snapshots.group_by("model_id").agg(snapshots=pl.len())
        .join(plan.credits.group_by("model_id").agg(touchpoints=pl.len()), on="model_id", how="full", coalesce=True)
        .fill_null(0)
    )
    outcome.by_model = {
        int(m): {"snapshots": int(s), "touchpoints": int(t)}
        for m, s, t in zip(per_model["model_id"], per_model["snapshots"], per_model["touchpoints"])
    }


FOREIGN = {"model_id": pl.Int64, "user_id": pl.Int64, "date_hour": pl.Int64, "reason": pl.String}


def foreign_rows(stored: pl.DataFrame) -> pl.DataFrame:
    """Stored rows of owned keys that this pipeline did not write (D20): its rows always carry a
    window of whole hours (``lookback_start`` on the hour, ``lookback_end`` on hh:59:59) and one
    row per key; the PHP cron and its inline rebuilds (gpx, upx, subid upload) write their raw
    window, and duplicate rows (Q1, Q10)."""
    raw_window = stored.filter(
        (pl.col("lookback_start") % 3600 != 0) | ((pl.col("lookback_end") + 1) % 3600 != 0)
    ).select(*GROUP, reason=pl.format("window {}-{} is not whole hours: written by the PHP engine",
                                      "lookback_start", "lookback_end"))
    duplicated = (
        stored.group_by(GROUP).agg(rows=pl.len()).filter(pl.col("rows") > 1)
        .select(*GROUP, reason=pl.format("{} rows for one (model, user, hour): PHP duplicates", "rows"))
    )
    return pl.concat([raw_window.cast(FOREIGN), duplicated.cast(FOREIGN)]).unique(maintain_order=True)


def _as_text(df: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    return df.with_columns([pl.col(c).cast(pl.String) for c in columns])


def _check_snapshots(expected: pl.DataFrame, written: pl.DataFrame) -> None:
    cols = [*GROUP, "lookback_start", "lookback_end", "attributed_clicks", "attributed_conversions",
            "attributed_revenue", "attributed_cost"]
    want = expected.select(cols).cast(written.select(cols).schema).sort(GROUP)
    got = written.select(cols).sort(GROUP)
    if not want.equals(got):
        raise WriteBackMismatch(_describe(want, got, "202_attribution_snapshots", GROUP))


def _check_touchpoints(expected: pl.DataFrame, written: pl.DataFrame) -> None:
    key = ["snapshot_id", "conv_id", "position", "click_id"]
    cols = [*key, "credit", "weight"]
    want = expected.select(cols).cast(STORED_TOUCHPOINTS).sort(key)
    got = written.select(cols).sort(key)
    if not want.equals(got):
        raise WriteBackMismatch(_describe(want, got, "202_attribution_touchpoints", key))


def _describe(want: pl.DataFrame, got: pl.DataFrame, table: str, key: list[str]) -> str:
    missing = want.join(got, on=want.columns, how="anti")
    extra = got.join(want, on=want.columns, how="anti")
    sample = missing.head(3).to_dicts() if missing.height else extra.head(3).to_dicts()
    return (
        f"{table}: read back {got.height} rows, computed {want.height}; {missing.height} computed rows "
        f"missing, {extra.height} unexpected; e.g. {sample}"
    )


# ------------------------------------------------------------------------------------------
# journeys persistence (D13, optional)
# ------------------------------------------------------------------------------------------


def persist_journeys(conn: Connection, journeys: pl.DataFrame, *, now: int, batch_rows: int) -> int:
    """PHP's ``persistJourney`` for many conversions: delete each conversion's stored touches,
    insert positions 0..n-1 with one ``created_at``."""
    t = schema.conversion_touchpoints
    conv_ids = journeys.get_column("conv_id").unique().sort().to_list()
    for ids in chunked(conv_ids, _IDS_PER_STATEMENT):
        conn.execute(delete(t).where(t.c.conv_id.in_(list(ids))))
    rows = journeys.select("conv_id", "click_id", "click_time", "position", created_at=pl.lit(now))
    return bulk_load(conn, t, rows, batch_rows=batch_rows)


# ------------------------------------------------------------------------------------------
# audit and system check (D18, D11)
# ------------------------------------------------------------------------------------------


def php_json(value) -> str:
    """JSON as PHP's ``json_encode`` writes it: compact, floats shortest, no trailing ``.0``."""

    def fmt(v):
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            if math.isfinite(v) and v.is_integer() and abs(v) < 1e15:
                return str(int(v))
            return repr(v)
        if isinstance(v, dict):
            return "{" + ",".join(f"{json.dumps(str(k))}:{fmt(x)}" for k, x in v.items()) + "}"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(fmt(x) for x in v) + "]"
        raise TypeError(f"cannot encode {type(v).__name__}")

    return fmt(value)


def audit_rows(summary: pl.DataFrame, *, lookback_start: int, lookback_end: int, now: int) -> pl.DataFrame:
    """``snapshot_rebuild`` audit rows, one per (user, model), PHP's metadata keys in PHP's order.

    ``summary``: user_id, model_id, batches, hours_processed, clicks, conversions, revenue, cost.
    """
    metadata = [
        php_json(
            {
                "lookback_start": lookback_start,
                "lookback_end": lookback_end,
                "batches": int(b),
                "hours_processed": int(h),
                "clicks": int(c),
                "conversions": int(n),
                "revenue": float(r),
                "cost": float(k),
            }
        )
        for b, h, c, n, r, k in zip(
            summary["batches"], summary["hours_processed"], summary["clicks"],
            summary["conversions"], summary["revenue"], summary["cost"],
        )
    ]
    return summary.select("user_id", "model_id").with_columns(
        action=pl.lit("snapshot_rebuild"), metadata=pl.Series(metadata, dtype=pl.String), created_at=pl.lit(now)
    )


def finish_run(engine: Engine, audits: pl.DataFrame, *, now: int, touch_cron_log: bool) -> None:
    """Insert the audit rows and, when the run committed (D19 outcome 0 or 2), stamp
    ``202_cronjob_logs`` id 2 so Prosper202's System Checks page stays green (D11)."""
    logs = schema.cronjob_logs
    with engine.begin() as conn:
        bulk_insert(conn, schema.attribution_audit, audits)
        if touch_cron_log:
            changed = conn.execute(
                update(logs).where(logs.c.id == schema.CRONJOB_LOG_ID_ATTRIBUTION).values(last_execution_time=now)
            ).rowcount
            if not changed:
                conn.execute(logs.insert().values(id=schema.CRONJOB_LOG_ID_ATTRIBUTION, last_execution_time=now))


def compare_with_stored(conn: Connection, plan: ChunkWrite) -> pl.DataFrame:
    """Dry run (D20): per owned (user, model, hour), does the stored state equal what would be written?

    Status: ``same``, ``differs``, ``new`` (would be inserted), ``stale`` (would be deleted:
    stored rows but no conversions now), ``held`` (a check failed; nothing would change).
    """
    stored = stored_snapshots(conn, plan.owned, plan.hours, reader=read_frame)
    stored_tp = stored_touchpoints(conn, stored.get_column("snapshot_id").to_list()).join(
        stored.select("snapshot_id", *GROUP), on="snapshot_id"
    )
    cols = ["attributed_clicks", "attributed_conversions", "attributed_revenue", "attributed_cost"]
    want_s = _as_text(plan.snapshots.select(*GROUP, *cols), ["attributed_revenue", "attributed_cost"])
    got_s = _as_text(stored.select(*GROUP, *cols), ["attributed_revenue", "attributed_cost"])
    want_t = plan.credits.select(*GROUP, "conv_id", "position", "click_id", credit=pl.col("credit_stored").cast(pl.String))
    got_t = stored_tp.select(*GROUP, "conv_id", "position", "click_id", pl.col("credit").cast(pl.String))

    def fingerprint(snaps: pl.DataFrame, touches: pl.DataFrame) -> pl.DataFrame:
        s = snaps.group_by(GROUP).agg(snap=pl.concat_str(pl.all().exclude(GROUP).cast(pl.String), separator="|").sort().str.join(";"))
        t = touches.group_by(GROUP).agg(
            touch=pl.concat_str(pl.all().exclude(GROUP).cast(pl.String), separator="|").sort().str.join(";")
        )
        return s.join(t, on=GROUP, how="full", coalesce=True)

    want = fingerprint(want_s, want_t)
    got = fingerprint(got_s, got_t.cast({"position": pl.Int32}))
    both = want.join(got, on=GROUP, how="full", coalesce=True, suffix="_stored")
    held = plan.held.select(GROUP).unique().with_columns(held=pl.lit(True))
    return (
        both.join(held, on=GROUP, how="left")
        .with_columns(
            status=pl.when(pl.col("held").fill_null(False)).then(pl.lit("held"))
            .when(pl.col("snap").is_null()).then(pl.lit("stale"))
            .when(pl.col("snap_stored").is_null()).then(pl.lit("new"))
            .when((pl.col("snap") == pl.col("snap_stored")) & (pl.col("touch") == pl.col("touch_stored")))
            .then(pl.lit("same"))
            .otherwise(pl.lit("differs"))
        )
        .select(*GROUP, "status")
        .sort(GROUP)
    )
