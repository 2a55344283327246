"""Shadow mode (D20): compare what a run would write with what is stored, write nothing."""

from collections.abc import Sequence

import polars as pl
from sqlalchemy.engine import Connection

from attribution_pipeline.core.invariants import GROUP
from attribution_pipeline.storage.frame_io import read_frame
from attribution_pipeline.storage.hour_rewrite import ChunkWrite
from attribution_pipeline.storage.stored_rows import (
    stored_snapshots,
    stored_touchpoints,
)


def _as_text(df: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    return df.with_columns([pl.col(c).cast(pl.String) for c in columns])


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
