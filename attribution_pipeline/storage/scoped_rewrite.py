"""The scoped rows of one chunk, replaced inside its transaction, beside the global ones (D31, D9).

A run owns the scoped rows (``scope_type`` one of ``settings.SCOPE_TYPES``) of the same
(model, user, hour) keys as the global rows it owns, held groups and the (user, hour) pairs not
recomputed aside. In the chunk's transaction, after the global rows (``hour_rewrite``):

1. find the stored scoped rows of those keys, whatever their type (a type switched off included);
2. delete their touchpoints and them;
3. insert the computed scoped rows (a (key, scope type, scope id) that existed keeps its lowest
   snapshot id and its ``created_at``), and, with scoped touchpoints on, their touchpoints;
4. read both back and compare with what was computed; a difference rolls the chunk back.

So a rerun replaces exactly the scoped rows it owns, and the rows of a type switched off are gone
after the next run over their hours. Rows of other scope types (``adgroup``) are never touched.
"""

import polars as pl
from sqlalchemy import delete
from sqlalchemy.engine import Connection

from attribution_pipeline.core.invariants import GROUP
from attribution_pipeline.core.scope_credit import SCOPE_KEY
from attribution_pipeline.storage.bulk import bulk_load
from attribution_pipeline.storage.frame_io import chunked, read_frame_uncommitted
from attribution_pipeline.storage.stored_rows import (
    IDS_PER_STATEMENT,
    SNAP,
    STORED_TOUCHPOINTS,
    TOUCH,
    check_same_rows,
    index_order,
    inserted_touchpoints,
    max_touchpoint_id,
    stored_snapshots,
)

_VALUES = ["lookback_start", "lookback_end", "attributed_clicks", "attributed_conversions", "attributed_revenue",
           "attributed_cost"]


def owned_scoped(conn: Connection, plan) -> pl.DataFrame:
    """The stored scoped rows ``plan`` (a ``hour_rewrite.ChunkWrite``) owns: those of its owned
    keys, minus held groups and (user, hour) pairs not recomputed."""
    existing = stored_snapshots(conn, plan.owned, plan.hours, scopes="scoped").join(
        plan.held.select(GROUP).unique(), on=GROUP, how="anti")
    if plan.unchanged is not None:
        existing = existing.join(plan.unchanged, on=["user_id", "date_hour"], how="anti")
    return existing


def replace_scoped(conn: Connection, plan, outcome, *, now: int, batch_rows: int) -> pl.DataFrame:
    """Steps 1-4 of the module docstring for ``plan``; counts into ``outcome``. Returns the scoped
    rows now stored for its keys (``STORED_SCOPED``, read back and verified)."""
    with outcome.stage("scoped_find"):
        existing = owned_scoped(conn, plan)
    old_ids = existing.get_column("snapshot_id").to_list()
    with outcome.stage("scoped_delete"):
        for ids in chunked(old_ids, IDS_PER_STATEMENT):
            outcome.scoped_touchpoints_deleted += conn.execute(
                delete(TOUCH).where(TOUCH.c.snapshot_id.in_(list(ids)))).rowcount
            outcome.scoped_snapshots_deleted += conn.execute(
                delete(SNAP).where(SNAP.c.snapshot_id.in_(list(ids)))).rowcount
    kept = existing.group_by(SCOPE_KEY).agg(pl.col("snapshot_id").min(), pl.col("created_at").min())
    rows = (
        plan.scoped.join(kept, on=SCOPE_KEY, how="left")
        .with_columns(lookback_start=pl.lit(plan.lookback_start), lookback_end=pl.lit(plan.lookback_end),
                      created_at=pl.col("created_at").fill_null(now))
        .select("snapshot_id", *SCOPE_KEY, *_VALUES, "created_at")
    )
    with outcome.stage("scoped_load"):
        outcome.scoped_snapshots_written = bulk_load(
            conn, SNAP, rows.filter(pl.col("snapshot_id").is_not_null()), batch_rows=batch_rows) + bulk_load(
            conn, SNAP, rows.filter(pl.col("snapshot_id").is_null()).drop("snapshot_id"), batch_rows=batch_rows)
    with outcome.stage("scoped_read_back"):
        written = stored_snapshots(conn, plan.owned, plan.hours, reader=read_frame_uncommitted, scopes="scoped").join(
            plan.scoped.select(SCOPE_KEY), on=SCOPE_KEY, how="semi")
        check_same_rows(rows.select(*SCOPE_KEY, *_VALUES), written.select(*SCOPE_KEY, *_VALUES), "scoped snapshots",
                        SCOPE_KEY)
    if plan.scoped_credits is not None:
        _load_touchpoints(conn, plan, written, outcome, now=now, batch_rows=batch_rows)
    return written


def _load_touchpoints(conn: Connection, plan, written: pl.DataFrame, outcome, *, now: int, batch_rows: int) -> None:
    """Insert the scoped rows' touchpoints and read them back."""
    touch_rows = index_order(
        plan.scoped_credits.join(written.select("snapshot_id", *SCOPE_KEY), on=SCOPE_KEY)
        .select("snapshot_id", "conv_id", "click_id", "position", credit="credit_stored", weight="credit_stored",
                created_at=pl.lit(now))
    )
    with outcome.stage("scoped_load_touchpoints"):
        before = max_touchpoint_id(conn)
        outcome.scoped_touchpoints_written = bulk_load(conn, TOUCH, touch_rows, batch_rows=batch_rows)
    with outcome.stage("scoped_read_back_touchpoints"):
        inserted = inserted_touchpoints(conn, before, max_touchpoint_id(conn), written.get_column("snapshot_id"))
        key = ["snapshot_id", "conv_id", "position", "click_id"]
        cols = [*key, "credit", "weight"]
        check_same_rows(touch_rows.select(cols).cast(STORED_TOUCHPOINTS), inserted.select(cols), "scoped touchpoints",
                        key)
