"""DuckDB over the Parquet exports: views ``snapshots``, ``touchpoints``, ``journeys``,
``click_spend``, one ``snapshots_<scope type>`` per scope type (D31), and the views by click hour
``credits_by_touch_hour`` and ``accrual`` (:mod:`.touch_views`).

:func:`connect` opens DuckDB (in memory, or a database file) with the views, each ``SELECT *``
over ``read_parquet('<export dir>/<table>/**/*.parquet', hive_partitioning = true)`` with the
partition columns typed (``date`` DATE, ``hour`` INTEGER). The snapshots files hold the global
rows and the scoped ones: the view ``snapshots`` keeps only the global rows (``scope_type =
'global'``; hours exported before the scope columns existed count as global), so every sum over
it means what it always meant; ``snapshots_campaign``, ``snapshots_advertiser``,
``snapshots_account``, ``snapshots_traffic_source`` and ``snapshots_landing_page`` hold the rows
of one scope type each (``scope_id`` = the campaign, advertiser, ppc account, ppc network or
landing page id). Views read the files at query time, so a database file keeps seeing new hours.
A table without any file yet gets an empty view with the documented columns, so every query
still binds.

By default the connection is **confined** (:class:`ExportsConnection`): once the views exist,
DuckDB may read only the export folder (``allowed_directories``, ``enable_external_access =
false``), installs and loads no extension, and its configuration is locked; statements that write
files or reach other databases (COPY, EXPORT, ATTACH, INSTALL/LOAD, PRAGMA, PREPARE...) are
refused, so SQL from anyone can only read the exports. ``confined=False`` (``--unrestricted``)
is for a trusted shell. :func:`run_sql` runs a query holding the export folder's publish lock
shared (``exports.layout.publish_lock``) and keeps its rows, so a query never sees an hour
half-replaced and the lock is held for the query only.
"""

import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path

import polars as pl

from attribution_pipeline.analytics.touch_views import TOUCH_VIEWS
from attribution_pipeline.settings import SCOPE_TYPES
from attribution_pipeline.errors import AttributionError
from attribution_pipeline.exports.columns import EXPORT_TABLES, SCHEMAS
from attribution_pipeline.exports.layout import PART, exported_hours, publish_lock, table_glob


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


#: The views over the snapshots files: their name -> the rows they keep (D31).
SNAPSHOT_VIEWS = {"snapshots": "coalesce(scope_type, 'global') = 'global'",
                  **{f"snapshots_{t}": f"scope_type = {_literal(t)}" for t in SCOPE_TYPES}}
VIEWS = (*EXPORT_TABLES, *(v for v in SNAPSHOT_VIEWS if v not in EXPORT_TABLES), *TOUCH_VIEWS)


def view_sql(root: Path, view: str) -> str:
    """``CREATE OR REPLACE VIEW`` for ``view`` (a table, a ``snapshots_<scope type>`` or a view by
    click hour) over the export folder (or empty, typed, if no file)."""
    if view not in VIEWS:
        raise ValueError(f"unknown export table {view!r}")
    if view in TOUCH_VIEWS:
        return f"CREATE OR REPLACE VIEW {view} AS {TOUCH_VIEWS[view]}"
    table = "snapshots" if view in SNAPSHOT_VIEWS else view
    where = f" WHERE {SNAPSHOT_VIEWS[view]}" if view in SNAPSHOT_VIEWS else ""
    cols = ", ".join(f"CAST(NULL AS {t}) AS {name}" for name, t in view_columns(table))
    if any((Path(root) / table).glob(f"date=*/hour=*/{PART}")):
        # every column of the schema, null where a file lacks it: files written before a column
        # existed (the scope columns: global rows, D31) read as they were, and views built on
        # these (by click hour) always find their columns
        body = (f"SELECT * FROM (SELECT * FROM read_parquet({_literal(table_glob(root, table))}, {HIVE_OPTIONS}, "
                f"union_by_name = true) UNION ALL BY NAME SELECT {cols} WHERE false){where}")
    else:
        body = f"SELECT {cols} WHERE false"
    return f"CREATE OR REPLACE VIEW {view} AS {body}"


#: Statement types a confined connection runs: reads, and changes to its own in-memory catalog.
CONFINED_STATEMENTS = frozenset({"SELECT", "EXPLAIN", "SET", "CREATE", "INSERT", "UPDATE", "DELETE", "DROP",
                                 "ALTER", "TRANSACTION", "MULTI", "MERGE_INTO"})


def connect(root: str | os.PathLike, database: str = ":memory:", *, confined: bool = True):
    """DuckDB with the ``snapshots``, ``touchpoints``, ``journeys`` and ``snapshots_<scope type>``
    views over ``root``: an :class:`ExportsConnection`, confined to reading ``root`` unless
    ``confined=False``."""
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
    for view in VIEWS:
        con.execute(view_sql(root, view))
    spill = _confine(con, root) if confined else None
    return ExportsConnection(con, root, confined=confined, spill=spill)


def _confine(con, root: Path) -> str:
    """Let ``con`` read only ``root`` (and spill to a private temporary folder), load no
    extension, and lock its configuration. Returns the spill folder."""
    spill = tempfile.mkdtemp(prefix="attribution-duckdb-spill-")
    for statement in (
        f"SET temp_directory = {_literal(spill)}",
        f"SET allowed_directories = [{_literal(str(root) + os.sep)}]",
        "SET enable_external_access = false",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET allow_community_extensions = false",
        "SET lock_configuration = true",
    ):
        con.execute(statement)
    return spill


class ExportsConnection:
    """A DuckDB connection with the export views. Confined, it refuses statements that write
    files or reach beyond the export folder, before DuckDB sees them (DuckDB's own settings refuse
    reads outside it). Everything else is the DuckDB connection's (``execute``, ``sql``,
    ``close``...)."""

    def __init__(self, con, root: Path, *, confined: bool, spill: str | None = None):
        self._con, self.root, self.confined = con, root, confined
        if spill:
            weakref.finalize(self, shutil.rmtree, spill, True)

    def check(self, sql: str) -> None:
        """Refuse (``duckdb.PermissionException``) a statement a confined connection does not run."""
        import duckdb

        if not self.confined:
            return
        try:
            kinds = [s.type.name for s in self._con.extract_statements(sql)]
        except ValueError:  # a statement type the Python package cannot name (UPDATE EXTENSIONS)
            kinds = ["UNKNOWN"]
        refused = sorted({"INSTALL/LOAD" if k == "LOAD" else k for k in kinds if k not in CONFINED_STATEMENTS})
        if refused:
            raise duckdb.PermissionException(
                f"{', '.join(refused)} statements are not allowed: attribution query only reads the "
                "exports (SELECT, EXPLAIN, DESCRIBE/SHOW/SUMMARIZE, SET VARIABLE, in-memory CREATE/INSERT/...); "
                "use --unrestricted in a trusted shell")

    def sql(self, query: str, *args, **kwargs):
        self.check(query)
        return self._con.sql(query, *args, **kwargs)

    def execute(self, query: str, *args, **kwargs):
        self.check(query)
        return self._con.execute(query, *args, **kwargs)

    def run(self, sql: str):
        """Run one or more statements holding the publish lock shared; the last one's rows
        (held in memory, so printing them reads no file) or None."""
        self.check(sql)
        with publish_lock(self.root, shared=True):
            rel = self._con.sql(sql)
            return None if rel is None else rel.materialize()

    def __getattr__(self, name):
        return getattr(self._con, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._con.close()


def run_sql(con, sql: str):
    """Run one or more statements; the last one's result (a relation) or None. On an
    :class:`ExportsConnection` the statements are checked and run under the publish lock."""
    return con.run(sql) if isinstance(con, ExportsConnection) else con.sql(sql)


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
