"""Reconciliation: the files on disk against MySQL, per hour (the ``export_reconciliation`` check)."""

from collections.abc import Sequence
from pathlib import Path

import polars as pl
from sqlalchemy import BigInteger, cast, func, select
from sqlalchemy.engine import Connection, Engine

from attribution_pipeline.core import frames
from attribution_pipeline.exports.columns import EXPORT_TABLES
from attribution_pipeline.exports.layout import part_path
from attribution_pipeline.exports.shares import SHARE_SCALE, units
from attribution_pipeline.exports.spend import spend_mismatches
from attribution_pipeline.exports.stored import global_hours
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.frame_io import read_frame

_snap = tables.attribution_snapshots

_RECONCILE = {"date_hour": pl.Int64, "rows": pl.Int64, "revenue_units": pl.Int64, "cost_units": pl.Int64}
_SCOPED = {"date_hour": pl.Int64, "scoped": pl.Int64}
_GLOBAL_FILE_ROWS = pl.col("scope_type") == "global"


def _mysql_hour_totals(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """Per hour: global snapshot rows (filtered explicitly) and their revenue and cost in exact 1e-4 units."""
    def sum_units(col):
        return cast(func.round(func.sum(col) * 10**SHARE_SCALE), BigInteger)

    stmt = (
        select(_snap.c.date_hour, func.count().label("rows"), sum_units(_snap.c.attributed_revenue).label("revenue_units"),
               sum_units(_snap.c.attributed_cost).label("cost_units"))
        .where(*global_hours(min(hours), max(hours)))
        .group_by(_snap.c.date_hour)
    )
    return read_frame(conn, stmt, _RECONCILE).filter(pl.col("date_hour").is_in(list(hours)))


def _scoped_rows(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """Per hour: the scoped snapshot rows (D31), every scope type."""
    stmt = (select(_snap.c.date_hour, func.count().label("scoped"))
            .where(_snap.c.scope_type != "global", _snap.c.date_hour.between(min(hours), max(hours)))
            .group_by(_snap.c.date_hour))
    return read_frame(conn, stmt, _SCOPED).filter(pl.col("date_hour").is_in(list(hours)))


def _sum_by_hour(paths: list[Path], revenue: str, cost: str, where: pl.Expr | None = None) -> pl.DataFrame:
    """Rows and exact revenue/cost units per ``date_hour`` of the Parquet files ``paths`` (the
    rows ``where`` keeps)."""
    scan = pl.scan_parquet(paths)
    return (
        (scan if where is None else scan.filter(where))
        .group_by("date_hour")
        .agg(rows=pl.len().cast(pl.Int64), revenue_units=units(pl.col(revenue).sum(), SHARE_SCALE),
             cost_units=units(pl.col(cost).sum(), SHARE_SCALE))
        .collect()
    )


def _file_hour_totals(root: Path, hours: Sequence[int]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, list[int]]:
    """Per hour, read back from the Parquet files: global snapshot rows and totals, touchpoint
    share totals, scoped snapshot rows; and the hours missing one of their files."""
    missing = sorted({h for h in hours for t in EXPORT_TABLES if not part_path(root, t, h).exists()})
    absent = set(missing)
    present = [h for h in hours if h not in absent]
    if not present:
        return frames.empty(_RECONCILE), frames.empty(_RECONCILE), frames.empty(_SCOPED), missing
    snap_paths = [part_path(root, "snapshots", h) for h in present]
    snaps = _sum_by_hour(snap_paths, "attributed_revenue", "attributed_cost", _GLOBAL_FILE_ROWS)
    scoped = (pl.scan_parquet(snap_paths).filter(~_GLOBAL_FILE_ROWS).group_by("date_hour")
              .agg(scoped=pl.len().cast(pl.Int64)).collect())
    shares = _sum_by_hour([part_path(root, "touchpoints", h) for h in present], "revenue_share", "cost_share")
    return snaps.cast(_RECONCILE), shares.cast(_RECONCILE), scoped.cast(_SCOPED), missing


def reconcile(engine: Engine, root: Path, hours: Sequence[int]) -> pl.DataFrame:
    """One row per hour of ``hours`` whose exported files disagree with MySQL, with the reason.

    An hour reconciles when its files exist, its ``snapshots`` file has exactly the rows,
    revenue and cost (exact DECIMAL(12,4) units) of the global snapshots MySQL stores for it, and
    its ``touchpoints`` shares sum to the same revenue and cost (every snapshot with money has
    touchpoints), it holds as many scoped rows (D31) as MySQL, and its ``click_spend`` file the
    clicks and spend of the hour's clicks in ``202_clicks``. Empty frame: every hour agrees."""
    reasons = pl.DataFrame(schema={"date_hour": pl.Int64, "reason": pl.String})
    if not hours:
        return reasons
    with engine.connect() as conn:
        stored = _mysql_hour_totals(conn, hours).join(_scoped_rows(conn, hours), on="date_hour", how="full",
                                                      coalesce=True)
    snaps, shares, scoped, missing = _file_hour_totals(root, hours)
    absent = set(missing)
    every = pl.DataFrame({"date_hour": [h for h in hours if h not in absent]}, schema={"date_hour": pl.Int64})
    zero = {"rows": 0, "revenue_units": 0, "cost_units": 0}
    joined = (
        every.join(stored, on="date_hour", how="left")
        .join(snaps, on="date_hour", how="left", suffix="_file")
        .join(shares.drop("rows"), on="date_hour", how="left", suffix="_shares")
        .join(scoped, on="date_hour", how="left", suffix="_file")
        .with_columns(pl.col(c).fill_null(0) for c in [*zero, *(f"{c}_file" for c in zero),
                                                         "revenue_units_shares", "cost_units_shares", "scoped",
                                                         "scoped_file"])
    )
    wrong = joined.with_columns(
        reason=pl.concat_str(
            pl.when(pl.col("rows") != pl.col("rows_file")).then(
                pl.format("snapshots file has {} rows, MySQL {}; ", "rows_file", "rows")),
            pl.when((pl.col("revenue_units") != pl.col("revenue_units_file"))
                    | (pl.col("cost_units") != pl.col("cost_units_file"))).then(
                pl.lit("snapshots file revenue/cost differ from MySQL; ")),
            pl.when((pl.col("revenue_units_shares") != pl.col("revenue_units"))
                    | (pl.col("cost_units_shares") != pl.col("cost_units"))).then(
                pl.lit("touchpoint shares do not sum to the stored revenue/cost; ")),
            pl.when(pl.col("scoped") != pl.col("scoped_file")).then(
                pl.format("snapshots file has {} scoped rows, MySQL {}; ", "scoped_file", "scoped")),
            ignore_nulls=True,
        ).str.strip_chars_end("; ")
    ).filter(pl.col("reason") != "").select("date_hour", "reason")
    gone = pl.DataFrame({"date_hour": missing, "reason": ["a table's file is missing"] * len(missing)},
                        schema=reasons.schema)
    spend = spend_mismatches(engine, root, [h for h in hours if h not in absent])
    both = pl.concat([wrong, spend]).group_by("date_hour").agg(pl.col("reason").str.join("; "))
    return pl.concat([both, gone]).sort("date_hour")
