"""What retention and erasure tests read: every store the pipeline writes, as comparable frames."""

import json
from pathlib import Path

import polars as pl
from sqlalchemy import select, text

from attribution_pipeline.storage import tables

#: MySQL tables the pipeline writes, with the columns compared (ids included).
MYSQL_STORES = {
    "snapshots": tables.attribution_snapshots,
    "touchpoints": tables.attribution_touchpoints,
    "conversion_touchpoints": tables.conversion_touchpoints,
    "source_state": tables.source_state,
    "exports": tables.attribution_exports,
    "audit": tables.attribution_audit,
    "retention": tables.retention_windows,
}
PARQUET_TABLES = ("snapshots", "touchpoints", "journeys", "click_spend")


def mysql_frame(engine, table) -> pl.DataFrame:
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(table))]
    cols = [c.name for c in table.columns]
    if not rows:
        return pl.DataFrame(schema={c: pl.String for c in cols})
    return pl.DataFrame([{k: (str(v) if v is not None else None) for k, v in r.items()} for r in rows],
                        schema={c: pl.String for c in cols})


def conversion_journeys(engine) -> pl.DataFrame:
    """202_conversion_touchpoints with the conversion's user and time."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT j.touchpoint_id, j.conv_id, j.click_id, j.position, c.user_id, c.conv_time "
            "FROM 202_conversion_touchpoints j JOIN 202_conversion_logs c ON c.conv_id = j.conv_id")).all()
    return pl.DataFrame([tuple(r) for r in rows], orient="row",
                        schema={"touchpoint_id": pl.Int64, "conv_id": pl.Int64, "click_id": pl.UInt64,
                                "position": pl.Int64, "user_id": pl.Int64, "conv_time": pl.Int64})


def touchpoints_by_user(engine) -> pl.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT t.touchpoint_id, t.snapshot_id, t.conv_id, t.click_id, t.position, t.credit, s.user_id, s.date_hour "
            "FROM 202_attribution_touchpoints t JOIN 202_attribution_snapshots s ON s.snapshot_id = t.snapshot_id")).all()
    return pl.DataFrame([tuple(str(v) for v in r) for r in rows], orient="row",
                        schema=["touchpoint_id", "snapshot_id", "conv_id", "click_id", "position", "credit",
                                "user_id", "date_hour"]).with_columns(
        pl.col("user_id", "date_hour").cast(pl.Int64))


def parquet(root: Path, table: str) -> pl.DataFrame:
    files = sorted((Path(root) / table).glob("date=*/hour=*/*.parquet"))
    if not files:
        return pl.DataFrame()
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed").sort(pl.all())


def frame_files(root: Path) -> list[Path]:
    return sorted(Path(root).glob("**/date=*/hour=*.parquet"))


def all_frames(root: Path) -> list[pl.DataFrame]:
    return [pl.read_parquet(p) for p in frame_files(root)]


def reports(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(root).glob("*.json"))]


def add_export(engine, files_root: Path, *, user_id: int, model_id: int, start_hour: int, status: str = "completed",
               file_path: Path | None = None, write_file: bool = True) -> tuple[int, Path | None]:
    """A 202_attribution_exports row (and its file) as the export worker leaves it."""
    with engine.begin() as conn:
        export_id = conn.execute(tables.attribution_exports.insert().values(
            user_id=user_id, model_id=model_id, scope_type="global", scope_id=None, start_hour=start_hour,
            end_hour=start_hour + 3 * 3600, requested_format="csv", status=status, queued_at=start_hour,
            created_at=start_hour, updated_at=start_hour)).inserted_primary_key[0]
    path = None
    if status == "completed":
        path = file_path or Path(files_root) / f"attribution_export_{export_id}_20260101_000000.csv"
        if write_file:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"user,{user_id}\n")
        with engine.begin() as conn:
            conn.execute(tables.attribution_exports.update().where(
                tables.attribution_exports.c.export_id == export_id).values(file_path=str(path)))
    return int(export_id), path
