"""Database plumbing shared by every stage: engines, set-based reads into Polars, bulk writes.

Any SQLAlchemy URL works: ``mysql+pymysql://user:pass@host/db`` for a real Prosper202 database,
``sqlite:///path`` for the embedded demo default. Statements are SQLAlchemy Core with bound
parameters; values are never formatted into SQL text.
"""

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl
from sqlalchemy import Table, create_engine, event
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


def _batches(df: pl.DataFrame, size: int) -> Iterable[pl.DataFrame]:
    for offset in range(0, df.height, size):
        yield df.slice(offset, size)


def chunked(values: Sequence, size: int) -> Iterable[Sequence]:
    for offset in range(0, len(values), size):
        yield values[offset : offset + size]
