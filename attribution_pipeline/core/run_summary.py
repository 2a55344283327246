"""What a run committed, summed per (user, model), and the rows it found written by others.

Pure Polars: the write-back asset feeds it the snapshots of its committed chunks.
"""

import polars as pl

from attribution_pipeline.core.invariants import GROUP
from attribution_pipeline.core.php import php_json


def run_summary(committed: list[pl.DataFrame]) -> pl.DataFrame:
    """Per (user, model): batches, hours, clicks, conversions, revenue, cost of committed snapshots
    (``committed``: frames.SNAPSHOTS rows of each committed chunk, with the chunk's first hour as
    ``chunk``). Revenue and cost are ordered double sums, as PHP's run metrics (spec §4.5)."""
    if not committed:
        return pl.DataFrame(schema={"user_id": pl.Int64, "model_id": pl.Int64})
    snaps = pl.concat(committed)
    return (
        snaps.sort(["user_id", "model_id", "date_hour"])
        .group_by(["user_id", "model_id"], maintain_order=True)
        .agg(
            batches=pl.col("chunk").n_unique(),
            hours_processed=pl.len(),
            clicks=pl.col("attributed_clicks").sum(),
            conversions=pl.col("attributed_conversions").sum(),
            revenue=pl.col("revenue").cum_sum().last(),
            cost=pl.col("cost").cum_sum().last(),
        )
    )


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
