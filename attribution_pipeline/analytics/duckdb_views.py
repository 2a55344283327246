"""DuckDB over the Parquet exports: views ``snapshots``, ``touchpoints`` and ``journeys``.

:func:`connect` opens DuckDB (in memory, or a database file) with the three views, each
``SELECT *`` over ``read_parquet('<export dir>/<table>/**/*.parquet', hive_partitioning = true)``
with the partition columns typed (``date`` DATE, ``hour`` INTEGER). Views read the files at
query time, so a database file keeps seeing new hours. A table without any file yet gets an empty
view with the documented columns, so every query still binds.
"""

import os
import shutil
import sys
from pathlib import Path

import polars as pl

from attribution_pipeline.errors import AttributionError
from attribution_pipeline.exports.columns import SCHEMAS, TABLES
from attribution_pipeline.exports.layout import PART, exported_hours, table_glob


class ExportsNotFound(AttributionError):
    """The export folder holds no exported hour yet."""


HIVE_OPTIONS = "hive_partitioning = true, hive_types = {'date': DATE, 'hour': INTEGER}"


def duckdb_type(dtype: pl.DataType) -> str:
    """The DuckDB type a Polars dtype of the export schema is stored as in Parquet."""
    if isinstance(dtype, pl.Decimal):
        return f"DECIMAL({dtype.precision},{dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP"
    return {pl.Int64: "BIGINT", pl.Int32: "INTEGER", pl.UInt64: "UBIGINT", pl.String: "VARCHAR",
            pl.Boolean: "BOOLEAN"}[dtype.base_type()]


def view_columns(table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a view: the file's columns, then the hive partitions."""
    return [(name, duckdb_type(dtype)) for name, dtype in SCHEMAS[table].items()] + [
        ("date", "DATE"), ("hour", "INTEGER")]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(root: Path, table: str) -> str:
    """``CREATE OR REPLACE VIEW`` for ``table`` over the export folder (or empty, typed, if no file)."""
    if table not in TABLES:
        raise ValueError(f"unknown export table {table!r}")
    if any((Path(root) / table).glob(f"date=*/hour=*/{PART}")):
        body = f"SELECT * FROM read_parquet({_literal(table_glob(root, table))}, {HIVE_OPTIONS})"
    else:
        cols = ", ".join(f"CAST(NULL AS {t}) AS {name}" for name, t in view_columns(table))
        body = f"SELECT {cols} WHERE false"
    return f"CREATE OR REPLACE VIEW {table} AS {body}"


def connect(root: str | os.PathLike, database: str = ":memory:"):
    """DuckDB with the ``snapshots``, ``touchpoints`` and ``journeys`` views over ``root``."""
    import duckdb

    root = Path(root).resolve()
    if not exported_hours(root):
        raise ExportsNotFound(
            f"no exports under {root}: materialise some hours first (attribution demo, attribution rebuild, "
            f"or the hourly job), or point --export-dir / ATTRIBUTION_EXPORT_DIR at the export folder"
        )
    con = duckdb.connect(database)
    try:
        con.execute("SET TimeZone = 'UTC'")  # D17: every time in the exports is UTC
    except duckdb.Error:  # pragma: no cover - ICU is built into the Python package
        pass
    for table in TABLES:
        con.execute(view_sql(root, table))
    return con


def run_sql(con, sql: str):
    """Run one or more statements; the last one's result (a relation) or None."""
    return con.sql(sql)


def print_result(rel, *, fmt: str = "table", max_rows: int = 100, out=None) -> None:
    """Print a DuckDB relation as a boxed table (numbers right-aligned, types under the names),
    CSV or JSON (decimals as exact strings)."""
    out = out or sys.stdout
    if rel is None:
        print("ok", file=out)
        return
    if fmt == "csv":
        out.write(rel.pl().write_csv())
        return
    if fmt == "json":
        out.write(rel.pl().write_json() + "\n")
        return
    width = shutil.get_terminal_size((10_000, 40)).columns if out.isatty() else 10_000
    old, sys.stdout = sys.stdout, out
    try:
        rel.show(max_rows=max_rows, max_width=width)
    finally:
        sys.stdout = old
