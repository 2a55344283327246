"""What is stored for the owned keys: snapshot and touchpoint rows, read inside or outside a write."""

from collections.abc import Sequence

import polars as pl
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from attribution_pipeline.core.precision import CREDIT_DTYPE, MONEY_DTYPE
from attribution_pipeline.core.packed_keys import packed_order
from attribution_pipeline.errors import WriteBackMismatch
from attribution_pipeline.settings import SCOPE_TYPES
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.frame_io import (
    chunked,
    read_frame,
    read_frame_in_transaction,
    read_frame_uncommitted,
)

SNAP = tables.attribution_snapshots
TOUCH = tables.attribution_touchpoints
IDS_PER_STATEMENT = 5000


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
#: Stored rows with their scope (D31): the global and the scoped rows of the owned keys.
STORED_SCOPED = {**STORED_SNAPSHOTS, "scope_type": pl.String, "scope_id": pl.Int64}
STORED_TOUCHPOINTS = {
    "snapshot_id": pl.Int64,
    "conv_id": pl.Int64,
    "click_id": pl.UInt64,
    "position": pl.Int32,
    "credit": CREDIT_DTYPE,
    "weight": CREDIT_DTYPE,
}


def stored_snapshots(conn: Connection, owned: pl.DataFrame, hours: Sequence[int], reader=read_frame_in_transaction,
                     *, scopes: str = "global") -> pl.DataFrame:
    """Stored rows of the owned (model, user) pairs in ``hours`` (all of them, duplicates too):
    ``scopes="global"`` the global rows (:data:`STORED_SNAPSHOTS`); ``"scoped"`` the rows of the
    scope types the pipeline writes (``settings.SCOPE_TYPES``, D31) and ``"all"`` both
    (:data:`STORED_SCOPED`)."""
    schema = STORED_SNAPSHOTS if scopes == "global" else STORED_SCOPED
    if owned.height == 0 or not hours:
        return pl.DataFrame(schema=schema)
    scope_filter = {
        "global": (SNAP.c.scope_type == "global", SNAP.c.scope_id.is_(None)),
        "scoped": (SNAP.c.scope_type.in_(SCOPE_TYPES),),
        "all": (((SNAP.c.scope_type == "global") & SNAP.c.scope_id.is_(None)) | SNAP.c.scope_type.in_(SCOPE_TYPES),),
    }[scopes]
    model_ids = owned.get_column("model_id").unique().sort().to_list()
    parts = []
    for ids in chunked(model_ids, IDS_PER_STATEMENT):
        stmt = select(*[SNAP.c[name] for name in schema]).where(
            *scope_filter,
            SNAP.c.date_hour.between(min(hours), max(hours)),
            SNAP.c.model_id.in_(list(ids)),
        )
        parts.append(reader(conn, stmt, schema))
    found = pl.concat(parts)
    return found.join(owned.select("model_id", "user_id"), on=["model_id", "user_id"], how="semi").filter(
        pl.col("date_hour").is_in(list(hours))
    )


def _by_snapshot_ids(conn: Connection, snapshot_ids: Sequence[int], statement, schema: dict,
                     reader=read_frame) -> pl.DataFrame:
    """``statement(ids)`` read for every slice of ``snapshot_ids`` (``IDS_PER_STATEMENT`` at a
    time), concatenated and cast to ``schema``."""
    parts = [pl.DataFrame(schema=schema)]
    for ids in chunked(sorted(snapshot_ids), IDS_PER_STATEMENT):
        parts.append(reader(conn, statement(list(ids)), schema))
    return pl.concat(parts).cast(schema)


def stored_touchpoints(conn: Connection, snapshot_ids: Sequence[int], reader=read_frame) -> pl.DataFrame:
    columns = [TOUCH.c[name] for name in STORED_TOUCHPOINTS]
    return _by_snapshot_ids(conn, snapshot_ids, lambda ids: select(*columns).where(TOUCH.c.snapshot_id.in_(ids)),
                            STORED_TOUCHPOINTS, reader)


def max_touchpoint_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(TOUCH.c.touchpoint_id), 0))).scalar())


def check_same_rows(want: pl.DataFrame, got: pl.DataFrame, what: str, key: Sequence[str]) -> None:
    """Raise :class:`WriteBackMismatch` unless ``got`` (rows read back) holds exactly the rows of
    ``want`` (computed, cast to ``got``'s types): compared as they come first (a read-back in the
    order the rows were loaded: no sort of a chunk's rows), else sorted by ``key``; the message
    counts the rows missing and unexpected, with a sample."""
    want = want.cast(got.schema)
    if want.equals(got):
        return
    want, got = want.sort(key), got.sort(key)
    if not want.equals(got):
        missing = want.join(got, on=want.columns, how="anti", nulls_equal=True)
        extra = got.join(want, on=want.columns, how="anti", nulls_equal=True)
        sample = (missing if missing.height else extra).head(3).to_dicts()
        raise WriteBackMismatch(f"{what}: read back {got.height} rows, computed {want.height}; {missing.height} "
                                f"computed rows missing, {extra.height} unexpected; e.g. {sample}")


def index_order(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` in ``(snapshot_id, conv_id, position)`` order, the touchpoints' ``snapshot_conv``
    index order (sequential inserts into it), sorted on one packed 128-bit key
    (``core/packed_keys.py``): about half the time of a three-column sort. Only the insert order
    depends on it; what is read back is compared whatever the order."""
    return rows.sort(packed_order(rows, "snapshot_id", ("conv_id", 32), ("position", 16)))


def inserted_touchpoints(conn: Connection, after_id: int, last_id: int, snapshot_ids: pl.Series) -> pl.DataFrame:
    """Touchpoints this transaction inserted (id in ``(after_id, last_id]``, of ``snapshot_ids``),
    read back before commit, in id order (the order they were inserted: the write-back compares
    them with what it loaded without sorting either): a sequential primary-key range scan, 3x
    faster than looking the rows up by snapshot id (bench/HISTORY.md). The upper bound (the highest
    id just after our insert) keeps the scan to our rows even when later rows exist, and makes the
    statement mean the same whenever it runs (the benchmark replays it). Rows another writer
    inserted meanwhile within the range are filtered out by snapshot id; should any belong to our
    snapshots, the comparison fails and the chunk rolls back."""
    stmt = select(*[TOUCH.c[name] for name in STORED_TOUCHPOINTS]).where(
        TOUCH.c.touchpoint_id > after_id, TOUCH.c.touchpoint_id <= last_id
    ).order_by(TOUCH.c.touchpoint_id)
    found = read_frame_uncommitted(conn, stmt, STORED_TOUCHPOINTS).cast(STORED_TOUCHPOINTS)
    return found.filter(pl.col("snapshot_id").is_in(snapshot_ids.implode()))


def touchpoint_counts(conn: Connection, snapshot_ids: Sequence[int]) -> pl.DataFrame:
    """``snapshot_id, stored``: how many touchpoints each snapshot id has (an index-only count on
    Prosper202's ``snapshot_conv`` index); ids without any are absent."""
    return _by_snapshot_ids(conn, snapshot_ids, lambda ids: select(
        TOUCH.c.snapshot_id, func.count().label("stored")).where(TOUCH.c.snapshot_id.in_(ids)).group_by(
        TOUCH.c.snapshot_id), {"snapshot_id": pl.Int64, "stored": pl.Int64})


def unchanged_touchpoints(conn: Connection, existing: pl.DataFrame, computed: pl.DataFrame,
                          group: Sequence[str]) -> pl.DataFrame:
    """The snapshot ids (``snapshot_id``) among ``existing`` (stored snapshot rows of the groups a
    chunk rewrites) whose stored touchpoints are exactly ``computed`` (``group`` keys, ``conv_id,
    click_id, position, credit, weight``: what the chunk would insert): a group with one stored
    snapshot row, still computed, whose touchpoints have the computed count and then, read, the same
    rows. A payout or cost edit changes a group's snapshot values and not its touchpoints; those
    stay as stored instead of being deleted and loaded again. Anything else differs and is replaced."""
    empty = pl.DataFrame(schema={"snapshot_id": pl.Int64})
    single = (existing.group_by(*group).agg(pl.len().alias("rows"), pl.col("snapshot_id").first())
              .filter(pl.col("rows") == 1).drop("rows"))
    if single.height == 0:  # a cold run: nothing stored, nothing to compare
        return empty
    candidates = computed.join(single, on=list(group))
    counts = (single.join(candidates.group_by("snapshot_id").agg(computed=pl.len()), on="snapshot_id")
              .join(touchpoint_counts(conn, single.get_column("snapshot_id").to_list()), on="snapshot_id", how="left")
              .filter(pl.col("computed") == pl.col("stored").fill_null(0)))
    ids = counts.get_column("snapshot_id")
    if ids.len() == 0:
        return empty
    want = (candidates.filter(pl.col("snapshot_id").is_in(ids.implode()))
            .select(list(STORED_TOUCHPOINTS)).cast(STORED_TOUCHPOINTS))
    stored = stored_touchpoints(conn, ids.to_list())
    differ = pl.concat([want.join(stored, on=want.columns, how="anti", nulls_equal=True).select("snapshot_id"),
                        stored.join(want, on=want.columns, how="anti", nulls_equal=True).select("snapshot_id")])
    return counts.select("snapshot_id").join(differ.unique(), on="snapshot_id", how="anti")
