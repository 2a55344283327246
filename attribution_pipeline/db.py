"""Database plumbing shared by every stage: engines, set-based reads into Polars, bulk writes.

Any SQLAlchemy URL works: ``mysql+pymysql://user:pass@host/db`` for a real Prosper202 database,
``sqlite:///path`` for the embedded demo default. Statements are SQLAlchemy Core with bound
parameters; values are never formatted into SQL text.
"""

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl
from sqlalchemy import Table, create_engine, event, exc, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.sql import Select

DEFAULT_HOME = ".attribution"
DEFAULT_SQLITE_NAME = "attribution.sqlite"


def attribution_home() -> Path:
    """``$ATTRIBUTION_HOME``, else ``./.attribution``: the demo database, frames and exports."""
    return Path(os.environ.get("ATTRIBUTION_HOME") or DEFAULT_HOME).resolve()


def default_db_url() -> str:
    return f"sqlite:///{attribution_home() / DEFAULT_SQLITE_NAME}"


def resolve_db_url(explicit: str | None = None) -> str:
    """``--db-url``, else ``ATTRIBUTION_DB_URL``, else the embedded SQLite default."""
    return explicit or os.environ.get("ATTRIBUTION_DB_URL") or default_db_url()


def safe_url(url: str) -> str:
    """The URL with its password masked: the only form that may appear in logs or metadata."""
    return make_url(url).render_as_string(hide_password=True)


def is_sqlite(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    """An engine for ``url``. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions
    (the embedded equivalent of the MySQL named lock: writers never interleave)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event drive it
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args = {}
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        connect_args = {"charset": "utf8mb4", "local_infile": True}
    return create_engine(url, pool_pre_ping=True, pool_recycle=3600, connect_args=connect_args)


def read_frame(conn: Connection, stmt: Select, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Run a Core SELECT and return its rows as a Polars frame with ``schema``.

    DECIMAL columns arrive as ``decimal.Decimal``; they are turned into doubles by parsing their
    exact decimal text (correctly rounded, as PHP's ``(float)"12.34"``).
    """
    result = conn.execute(stmt)
    names = list(result.keys())
    rows = result.fetchall()
    if not rows:
        return pl.DataFrame(schema={n: schema.get(n, pl.String) for n in names})
    columns = list(zip(*rows))
    data = {}
    for name, values in zip(names, columns):
        dtype = schema.get(name)
        if dtype == pl.Float64:
            data[name] = pl.Series(name, [None if v is None else str(v) for v in values], pl.String).cast(pl.Float64)
        elif dtype == pl.String:
            data[name] = pl.Series(name, [None if v is None else str(v) for v in values], pl.String)
        elif dtype is not None:
            data[name] = pl.Series(name, values, dtype=dtype, strict=False)
        else:
            data[name] = pl.Series(name, values)
    return pl.DataFrame(data)


def bulk_insert(conn: Connection, table: Table, df: pl.DataFrame, batch_rows: int = 5000) -> int:
    """Insert every row of ``df`` (columns named like ``table``'s) in batches; return the count.

    On MySQL, PyMySQL turns each batch into multi-row INSERT statements.
    """
    if df.height == 0:
        return 0
    columns = df.columns
    stmt = table.insert()
    total = 0
    for batch in _batches(df, batch_rows):
        conn.execute(stmt, [dict(zip(columns, row)) for row in batch.iter_rows()])
        total += batch.height
    return total


#: Server/client error codes meaning "LOAD DATA LOCAL INFILE is not allowed here": MySQL 1148
#: (command not allowed), 3948 (local files disabled), 2068 (client rejected the file), MariaDB
#: 4166 (local infile capability disabled).
LOAD_DATA_REFUSED = frozenset({1148, 2068, 3948, 4166})


def bulk_load(conn: Connection, table: Table, df: pl.DataFrame, chunk_rows: int = 500_000) -> int:
    """Insert every row of ``df`` into ``table`` as fast as the backend allows; return the count.

    On MySQL/MariaDB the rows go through ``LOAD DATA LOCAL INFILE`` from temporary CSV files
    written by Polars (``chunk_rows`` rows each; NULL as ``\\N``; every string quoted, so the
    text ``NULL`` stays a string; an explicit column list), inside the caller's transaction.
    Where the server or the client refuses LOAD DATA LOCAL (error 1148/2068/3948/4166) it falls
    back to :func:`bulk_insert`, as it always does on SQLite. The file name is a bound parameter
    and identifiers are quoted by the dialect's identifier preparer.
    """
    if df.height == 0:
        return 0
    if conn.dialect.name not in ("mysql", "mariadb"):
        return bulk_insert(conn, table, df)
    prep = conn.dialect.identifier_preparer
    columns = ", ".join(prep.quote_identifier(c) for c in df.columns)
    # X'5C' / X'0A' (backslash, newline) read the same whatever the server's sql_mode
    stmt = text(
        f"LOAD DATA LOCAL INFILE :path INTO TABLE {prep.format_table(table)} CHARACTER SET utf8mb4 "
        f"FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY X'5C' "
        f"LINES TERMINATED BY X'0A' ({columns})"
    )
    csv_ready = _csv_escaped(df)
    total = 0
    with tempfile.TemporaryDirectory(prefix="attribution-load-") as tmp:
        path = str(Path(tmp) / "rows.csv")
        for i, batch in enumerate(_batches(csv_ready, chunk_rows)):
            batch.write_csv(path, include_header=False, null_value="\\N", quote_style="non_numeric")
            if i == 0:
                try:
                    with conn.begin_nested():
                        total += conn.execute(stmt, {"path": path}).rowcount
                except exc.DBAPIError as error:
                    code = error.orig.args[0] if error.orig is not None and error.orig.args else None
                    if code not in LOAD_DATA_REFUSED:
                        raise
                    return bulk_insert(conn, table, df)
            else:
                total += conn.execute(stmt, {"path": path}).rowcount
    if total != df.height:
        raise RuntimeError(f"LOAD DATA into {table.name} stored {total} of {df.height} rows")
    return total


def _csv_escaped(df: pl.DataFrame) -> pl.DataFrame:
    """String columns escaped for LOAD DATA's ``ESCAPED BY '\\'``: backslash, NUL, CR and LF."""
    exprs = []
    for name, dtype in df.schema.items():
        if dtype == pl.String:
            expr = pl.col(name).str.replace_all("\\", "\\\\", literal=True)
            for raw, escaped in (("\x00", "\\0"), ("\r", "\\r"), ("\n", "\\n")):
                expr = expr.str.replace_all(raw, escaped, literal=True)
            exprs.append(expr)
    return df.with_columns(exprs) if exprs else df


def _batches(df: pl.DataFrame, size: int) -> Iterable[pl.DataFrame]:
    for offset in range(0, df.height, size):
        yield df.slice(offset, size)


def chunked(values: Sequence, size: int) -> Iterable[Sequence]:
    for offset in range(0, len(values), size):
        yield values[offset : offset + size]
