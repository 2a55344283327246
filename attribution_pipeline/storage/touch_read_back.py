"""The touchpoints a chunk inserts, read back batch by batch while the next batch loads.

The write-back reads its touchpoints back before it commits (step 4 of ``storage/hour_rewrite.py``)
through a second session at READ UNCOMMITTED (``frame_io.read_frame_uncommitted``), which sees the
rows of the open transaction as soon as a ``LOAD DATA`` statement has stored them. So the rows of
one batch are read on that second session, in a background thread, while the write connection
loads the next batch: the read-back no longer waits for the whole load. Each batch's rows are the
primary-key range between the highest id before and after its statement, as the single read-back
was (rows another writer inserted in between are filtered out by snapshot id, and any of ours that
differ fail the comparison, which still sees every row at once).

Where a read would go through the write connection itself (SQLite, a URL asking for TLS, no
connectorx), nothing is read in the background: the rows are read once after the load, as before.
"""

from concurrent.futures import Future, ThreadPoolExecutor

import polars as pl
from sqlalchemy.engine import Connection

from attribution_pipeline.storage.frame_io import reads_on_own_session
from attribution_pipeline.storage.stored_rows import STORED_TOUCHPOINTS, inserted_touchpoints, max_touchpoint_id


class TouchpointReadBack:
    """Use as a context manager around the load; :meth:`batch_loaded` after each statement (the
    ``after_batch`` of ``bulk.bulk_load``), :meth:`rows` once the load is done."""

    def __init__(self, conn: Connection, snapshot_ids: pl.Series):
        self._conn, self._ids = conn, snapshot_ids
        self._mark = max_touchpoint_id(conn)  # AUTO_INCREMENT only grows: our rows lie above it
        self._pool = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-back")
                      if reads_on_own_session(conn) else None)
        self._parts: list[Future] = []

    def __enter__(self) -> "TouchpointReadBack":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _read_to(self, last: int) -> None:
        lo, self._mark = self._mark, last
        if last > lo:
            self._parts.append(self._pool.submit(inserted_touchpoints, self._conn, lo, last, self._ids))

    def batch_loaded(self) -> None:
        """A statement stored a batch: read its id range in the background."""
        if self._pool is not None:
            self._read_to(max_touchpoint_id(self._conn))

    def rows(self) -> pl.DataFrame:
        """Every touchpoint of the chunk's snapshot ids inserted since the start (waits for the
        background reads)."""
        last = max_touchpoint_id(self._conn)
        if self._pool is None:
            return inserted_touchpoints(self._conn, self._mark, last, self._ids)
        self._read_to(last)  # rows of a statement not reported (none when every batch was)
        parts = [part.result() for part in self._parts]
        return pl.concat(parts) if parts else pl.DataFrame(schema=STORED_TOUCHPOINTS)
