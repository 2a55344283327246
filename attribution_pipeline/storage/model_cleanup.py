"""Removing the stored rows of a model deleted from ``202_attribution_models`` (D26).

A deleted model's snapshot rows (every scope) and their touchpoints are deleted in bounded
transactions: the model's snapshots, in hour order, are cut into batches of at most
``touchpoints_per_batch`` touchpoints (a single snapshot with more is a batch of its own), and
each batch is one transaction under the write-back's named locks of its hours (D9,
``storage/locks.py``), so it never interleaves with a writer of those hours. Inside the lock the
model is looked up again: a model that exists (created again with the same id) is never cleaned.
The listing is repeated until it finds nothing, so rows a run committed meanwhile go too.

``attribution_source_state`` (D22) is left as it is: its fingerprints cover the rows of active
models only, so a deleted model that was active changes both the source and the stored
fingerprints of its user's hours (the next run over them recomputes them), and one that was
inactive was never part of them. The write-back never writes rows of a model that no longer
exists (``hour_rewrite.without_deleted_models``), so nothing brings them back. A deleted
data-driven model's Markov fits (D32) are deleted last.
"""

import time
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from attribution_pipeline.storage import tables
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.frame_io import chunked
from attribution_pipeline.storage.locks import hours_locked
from attribution_pipeline.storage.markov_fits import delete_model_fits
from attribution_pipeline.storage.stored_rows import IDS_PER_STATEMENT

TOUCHPOINTS_PER_BATCH = 50_000
MAX_PASSES = 5  # listings of the model's rows; the second normally finds nothing
SNAP, TOUCH, MODELS = tables.attribution_snapshots, tables.attribution_touchpoints, tables.attribution_models


@dataclass
class Cleanup:
    """What was removed for one model."""

    model_id: int
    snapshots_deleted: int = 0
    touchpoints_deleted: int = 0
    batches: int = 0
    hours: set[int] = field(default_factory=set)
    skipped: str = ""  # why nothing was removed (the model exists)
    seconds: float = 0.0
    markov_fits_deleted: int = 0  # its Markov fits (D32), when it was a data-driven model


def model_exists(conn: Connection, model_id: int) -> bool:
    return conn.execute(select(MODELS.c.model_id).where(MODELS.c.model_id == model_id)).first() is not None


def snapshot_plan(conn: Connection, model_id: int) -> list[tuple[int, int, int]]:
    """``(snapshot_id, date_hour, touchpoints)`` of every stored snapshot of the model, in hour order."""
    stmt = (
        select(SNAP.c.snapshot_id, SNAP.c.date_hour, func.count(TOUCH.c.touchpoint_id))
        .select_from(SNAP.outerjoin(TOUCH, TOUCH.c.snapshot_id == SNAP.c.snapshot_id))
        .where(SNAP.c.model_id == model_id)
        .group_by(SNAP.c.snapshot_id, SNAP.c.date_hour)
        .order_by(SNAP.c.date_hour, SNAP.c.snapshot_id)
    )
    return [(int(s), int(h), int(n)) for s, h, n in conn.execute(stmt)]


def batches(plan: list[tuple[int, int, int]], limit: int) -> list[list[tuple[int, int, int]]]:
    """``plan`` cut into consecutive batches of at most ``limit`` touchpoints (one snapshot over
    it is a batch alone)."""
    out: list[list] = []
    total = 0
    for row in plan:
        if not out or (total + row[2] > limit and out[-1]):
            out.append([])
            total = 0
        out[-1].append(row)
        total += row[2]
    return out


def _delete_batch(conn: Connection, model_id: int, batch: list[tuple[int, int, int]]) -> tuple[int, int] | None:
    """Inside the caller's transaction: the batch's touchpoints and snapshots (None: the model exists)."""
    if model_exists(conn, model_id):
        return None
    snaps = touches = 0
    for ids in chunked([row[0] for row in batch], IDS_PER_STATEMENT):
        touches += conn.execute(delete(TOUCH).where(TOUCH.c.snapshot_id.in_(list(ids)))).rowcount
        snaps += conn.execute(delete(SNAP).where(SNAP.c.snapshot_id.in_(list(ids)),
                                                 SNAP.c.model_id == model_id)).rowcount
    return snaps, touches


def _locked_batch(db: Database, model_id: int, batch, lock_timeout: int) -> tuple[int, int] | None:
    hours = sorted({row[1] for row in batch})
    with db.engine().connect() as conn, hours_locked(conn, hours, lock_timeout):
        transaction = conn.begin()
        try:
            done = _delete_batch(conn, model_id, batch)
        except BaseException:
            transaction.rollback()
            raise
        transaction.commit()
        return done


def remove_model_rows(db: Database, model_id: int, *, lock_timeout: int,
                      touchpoints_per_batch: int = TOUCHPOINTS_PER_BATCH, logger=None) -> Cleanup:
    """Delete every stored row of the deleted model ``model_id`` (see module docstring)."""
    started = time.perf_counter()
    outcome = Cleanup(model_id=model_id)

    def listing():
        with db.engine().connect() as conn:
            return "exists" if model_exists(conn, model_id) else snapshot_plan(conn, model_id)

    for _ in range(MAX_PASSES):
        plan = db.retry.run(listing, what=f"list rows of deleted model {model_id}", logger=logger)
        if plan == "exists":
            outcome.skipped = "the model exists in 202_attribution_models"
            break
        if not plan:
            break
        for batch in batches(plan, touchpoints_per_batch):
            done = db.retry.run(lambda b=batch: _locked_batch(db, model_id, b, lock_timeout),
                                what=f"delete rows of deleted model {model_id}", logger=logger)
            if done is None:
                outcome.skipped = "the model exists in 202_attribution_models"
                outcome.seconds = time.perf_counter() - started
                return outcome
            outcome.snapshots_deleted += done[0]
            outcome.touchpoints_deleted += done[1]
            outcome.batches += 1
            outcome.hours.update(row[1] for row in batch)
    if not outcome.skipped:
        outcome.markov_fits_deleted = db.retry.run(lambda: _delete_fits(db, model_id),
                                                   what=f"delete markov fits of deleted model {model_id}", logger=logger)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _delete_fits(db: Database, model_id: int) -> int:
    with db.engine().begin() as conn:
        return 0 if model_exists(conn, model_id) else delete_model_fits(conn, [model_id])
