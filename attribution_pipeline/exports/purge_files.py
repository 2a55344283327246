"""Deleting what the pipeline stored on disk for some users, hours or ids (D27: retention and
erasure): Parquet export hours, intermediate frames, run reports and the export queue's files.

* **Parquet exports** (``exports/layout.py``): every hour whose files hold rows to drop is read,
  filtered and written again through the layout's two phases (:func:`stage_part`, then
  :func:`publish_parts` renames under the publish lock), the whole purge holding the export lock,
  so no run exports meanwhile and a reader sees the old files or the new ones. The other users'
  rows are kept as they are. An hour left with no row in any table loses its files (MySQL has no
  snapshot of it either).
  ``click_spend`` rows are per user and click hour (a user's erasure and retention drop them like
  the other tables' rows) and hold no click or conversion id (a visitor's erasure leaves them:
  they are sums; the hour's next export counts what ``202_clicks`` then holds).
* **Frames** (the hourly IO manager's ``<frames>/<asset>/date=/hour=HH.parquet``, also under
  ``_runs/<run>/``): intermediate, recomputed by running the hours again. Retention deletes the
  files of old hours; an erasure rewrites each file that holds a dropped row without it.
* **Run reports** (``<home>/reports/*.json``): an erasure removes the entries naming the user or
  its models (held groups, comparisons, skipped models, rows per model); the rest stays.
* **Export queue files**: the file a ``202_attribution_exports`` row names, only when it lies
  inside the export files folder, and files named after the export's id there.

Nothing here prints or logs a row's content.
"""

import json
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from attribution_pipeline.exports.columns import EXPORT_TABLES
from attribution_pipeline.exports.layout import (
    export_lock,
    hour_dir,
    part_path,
    publish_lock,
    publish_parts,
    read_part,
    stage_part,
    table_glob,
)

#: Hours staged and published together.
HOURS_PER_PUBLISH = 24
#: Rows to drop, as an expression over a table's columns (``None``: the table keeps every row).
DropRule = Callable[[str, Iterable[str]], pl.Expr | None]


def ids_rule(ids: Mapping[str, Iterable[int]]) -> DropRule:
    """Drop the rows whose column (``user_id``, ``conv_id``, ``click_id``) holds one of the ids
    given for it; a table without any of those columns keeps its rows."""
    wanted = {column: sorted({int(v) for v in values}) for column, values in ids.items() if values}

    def rule(_table: str, columns: Iterable[str]) -> pl.Expr | None:
        present = [pl.col(c).is_in(v) for c, v in wanted.items() if c in set(columns)]
        if not present:
            return None
        expr = present[0]
        for more in present[1:]:
            expr = expr | more
        return expr

    return rule


def cutoff_rule(cutoffs: Mapping[int, int]) -> DropRule:
    """Drop each user's rows of hours before that user's cutoff (users not named keep theirs)."""
    users, befores = list(cutoffs), [int(cutoffs[u]) for u in cutoffs]

    def rule(_table: str, columns: Iterable[str]) -> pl.Expr | None:
        if not users or not {"user_id", "date_hour"} <= set(columns):
            return None
        before = pl.col("user_id").replace_strict(users, befores, default=None, return_dtype=pl.Int64)
        return (pl.col("date_hour") < before).fill_null(False)

    return rule


# ------------------------------------------------------------------------------------------
# Parquet exports
# ------------------------------------------------------------------------------------------


def _table_files(root: Path, table: str) -> list[Path]:
    return sorted((Path(root) / table).glob("date=*/hour=*/*.parquet"))


def _schema_names(path: Path) -> list[str]:
    return list(pl.read_parquet_schema(path))


def export_rows_to_drop(root: Path, rule: DropRule) -> pl.DataFrame:
    """``table, user_id, date_hour, rows``: the rows of the export folder ``rule`` drops."""
    frames = []
    for table in EXPORT_TABLES:
        files = _table_files(root, table)
        expr = rule(table, _schema_names(files[0])) if files else None
        if expr is None:
            continue
        found = (pl.scan_parquet(table_glob(root, table), hive_partitioning=False).filter(expr)
                 .group_by("user_id", "date_hour").agg(rows=pl.len()).collect())
        frames.append(found.select(pl.lit(table).alias("table"), pl.col("user_id").cast(pl.Int64),
                                   pl.col("date_hour").cast(pl.Int64), pl.col("rows").cast(pl.Int64)))
    schema = {"table": pl.String, "user_id": pl.Int64, "date_hour": pl.Int64, "rows": pl.Int64}
    return pl.concat([pl.DataFrame(schema=schema), *frames])


def _rewrite_hour(root: Path, hour: int, rule: DropRule, removed: dict[str, int]):
    """The hour's new files (staged, not yet published), or None when no row of it is left."""
    current = {t: read_part(root, t, hour) for t in EXPORT_TABLES}
    kept: dict[str, pl.DataFrame] = {}
    for table, df in current.items():
        expr = rule(table, df.columns) if df is not None else None
        kept[table] = df if expr is None else df.filter(~expr)
        if df is not None:
            removed[table] = removed.get(table, 0) + df.height - kept[table].height
    if all(df is None or df.height == 0 for df in kept.values()):
        return None
    return [stage_part(root, t, hour, df) for t, df in kept.items()
            if df is not None and df.height != current[t].height]


def _remove_hour(root: Path, hour: int) -> None:
    with publish_lock(root, shared=False):
        for table in EXPORT_TABLES:
            part_path(root, table, hour).unlink(missing_ok=True)
    for table in EXPORT_TABLES:
        _prune_empty(hour_dir(root, table, hour), stop=Path(root) / table)


def _prune_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to ``stop`` (excluded) while they are empty."""
    while folder != stop and folder.is_dir():
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def drop_export_rows(root: Path, rule: DropRule) -> dict[str, int]:
    """Rewrite every export hour holding rows ``rule`` drops without them (see module docstring);
    returns the rows removed per table, the hours rewritten and the hours removed."""
    removed: dict[str, int] = dict.fromkeys(EXPORT_TABLES, 0)
    rewritten = emptied = 0
    if not Path(root).is_dir():
        return {**removed, "hours_rewritten": 0, "hours_removed": 0}
    with export_lock(root):
        hours = sorted(set(export_rows_to_drop(root, rule).get_column("date_hour").to_list()))
        for start in range(0, len(hours), HOURS_PER_PUBLISH):
            staged, empty = [], []
            for hour in hours[start:start + HOURS_PER_PUBLISH]:
                files = _rewrite_hour(root, hour, rule, removed)
                if files is None:
                    empty.append(hour)
                else:
                    staged += files
                    rewritten += 1
            if staged:
                publish_parts(root, staged)
            for hour in empty:
                _remove_hour(root, hour)
            emptied += len(empty)
    return {**removed, "hours_rewritten": rewritten, "hours_removed": emptied}


# ------------------------------------------------------------------------------------------
# frames
# ------------------------------------------------------------------------------------------


def _frame_files(root: Path) -> list[Path]:
    return sorted(Path(root).glob("**/date=*/hour=*.parquet")) if Path(root).is_dir() else []


def frame_hour(path: Path) -> int:
    """The hour of a frame file ``.../date=YYYY-MM-DD/hour=HH.parquet`` (epoch seconds)."""
    day = path.parent.name.split("=", 1)[1]
    hh = path.stem.split("=", 1)[1]
    return int(datetime.strptime(f"{day} {hh}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc).timestamp())


def frames_before(root: Path, before: int) -> list[Path]:
    """The frame files of hours before ``before``."""
    return [p for p in _frame_files(root) if frame_hour(p) < before]


def remove_frames_before(root: Path, before: int) -> int:
    """Delete the frame files of hours before ``before`` (every asset, shared and per run)."""
    doomed = frames_before(root, before)
    for path in doomed:
        path.unlink(missing_ok=True)
        _prune_empty(path.parent, stop=Path(root))
    return len(doomed)


def scrub_frames(root: Path, rule: DropRule) -> dict[str, int]:
    """Rewrite each frame file holding rows ``rule`` drops without them (temporary file, rename)."""
    files = rows = 0
    for path in _frame_files(root):
        expr = rule("frame", _schema_names(path))
        if expr is None:
            continue
        df = pl.read_parquet(path)
        kept = df.filter(~expr)
        if kept.height == df.height:
            continue
        tmp = path.with_name(f".{path.name}.{os.getpid()}.scrub")
        kept.write_parquet(tmp, compression="lz4")
        os.replace(tmp, path)
        files, rows = files + 1, rows + df.height - kept.height
    return {"frame_files_rewritten": files, "frame_rows_removed": rows}


# ------------------------------------------------------------------------------------------
# run reports
# ------------------------------------------------------------------------------------------


def _scrub(value, user: int, models: set[int]):
    """``value`` without the list entries naming ``user`` or one of ``models`` and without the
    ``rows_by_model`` keys of ``models``."""
    if isinstance(value, list):
        return [_scrub(v, user, models) for v in value
                if not (isinstance(v, dict) and (_int(v.get("user_id")) == user or _int(v.get("model_id")) in models))]
    if isinstance(value, dict):
        return {k: _scrub(v, user, models) for k, v in value.items()
                if not (k.isdigit() and int(k) in models and isinstance(v, dict))}
    return value


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def scrub_reports(root: Path, user: int, models: Iterable[int]) -> int:
    """Remove ``user`` and its models from every run report under ``root``; returns the reports changed."""
    changed, model_set = 0, {int(m) for m in models}
    for path in sorted(Path(root).glob("*.json")) if Path(root).is_dir() else []:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        cleaned = _scrub(report, user, model_set)
        if cleaned != report:
            tmp = path.with_name(f".{path.name}.scrub")
            tmp.write_text(json.dumps(cleaned, indent=1, default=str))
            os.replace(tmp, path)
            changed += 1
    return changed


# ------------------------------------------------------------------------------------------
# the export queue's files
# ------------------------------------------------------------------------------------------


def remove_export_files(files_root: Path, exports: Iterable[tuple[int, str | None]]) -> int:
    """Delete the file each ``(export_id, file_path)`` names when it lies inside ``files_root``
    (never elsewhere), and the files named after the export there
    (``attribution_export_<id>_*``, a file a worker finished after its row was read)."""
    root = Path(files_root).resolve()
    if not root.is_dir():
        return 0
    removed = 0
    for export_id, file_path in exports:
        candidates = set(root.glob(f"attribution_export_{int(export_id)}_*"))
        if file_path:
            candidates.add(Path(file_path) if Path(file_path).is_absolute() else root / file_path)
        for path in candidates:
            resolved = path.resolve()
            if resolved.is_file() and resolved.is_relative_to(root) and resolved != root:
                resolved.unlink()
                removed += 1
    return removed
