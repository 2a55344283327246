"""Database plumbing shared by every stage: engines, set-based reads into Polars, bulk writes.

Any SQLAlchemy URL works: ``mysql+pymysql://user:pass@host/db`` for a real Prosper202 database,
``sqlite:///path`` for the embedded demo default. Statements are SQLAlchemy Core with bound
parameters; values are never formatted into SQL text.
"""

import os
import re
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


_MYSQL = ("mysql", "mariadb")


def _connectorx():
    try:
        import connectorx
    except ImportError:  # pragma: no cover - connectorx is a dependency; the DBAPI path remains
        return None
    return connectorx


def connectorx_uri(conn_or_engine) -> str:
    url = conn_or_engine.engine.url if hasattr(conn_or_engine, "engine") else conn_or_engine.url
    return url.set(drivername="mysql", query={}).render_as_string(hide_password=False)


_SAFE_TEXT = re.compile(r"^[A-Za-z0-9_]*$")


def literal_sql(conn: Connection, stmt: Select) -> str:
    """``stmt`` with its parameters rendered as literals by SQLAlchemy's dialect, for drivers that
    cannot bind (connectorx) and for the benchmark's replay of the pipeline's reads.

    Only integers, NULL and identifier-like constants may be rendered; anything else is refused,
    so no value from data or from a user ever becomes SQL text.
    """
    for name, value in stmt.compile(dialect=conn.dialect).params.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None or isinstance(v, bool) or isinstance(v, int):
                continue
            if isinstance(v, str) and _SAFE_TEXT.match(v):
                continue
            raise ValueError(f"parameter {name}={v!r} may not be rendered as a literal")
    return str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))


def _record(conn: Connection, stmt: Select) -> None:
    """With ``ATTRIBUTION_RECORD_SQL`` set, append the read's SQL to that file (benchmark floor)."""
    target = os.environ.get("ATTRIBUTION_RECORD_SQL")
    if target and conn.dialect.name in _MYSQL:
        with open(target, "a") as out:
            out.write(literal_sql(conn, stmt).replace("\n", " ") + ";\n")


def _conform_read(df: pl.DataFrame, schema: dict) -> pl.DataFrame:
    """Cast a read to ``schema``; DECIMAL -> double goes through the exact decimal text, so the
    double is correctly rounded (PHP's ``(float)"12.34"``)."""
    exprs = []
    for name, dtype in df.schema.items():
        target = schema.get(name)
        if target is None:
            exprs.append(pl.col(name))
        elif target == pl.Float64 and isinstance(dtype, pl.Decimal):
            exprs.append(pl.col(name).cast(pl.String).cast(pl.Float64))
        elif target == pl.String and isinstance(dtype, pl.Decimal):
            exprs.append(pl.col(name).cast(pl.String))
        else:
            exprs.append(pl.col(name).cast(target))
    return df.select(exprs)


def read_frame(conn: Connection, stmt: Select, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Run a Core SELECT over committed data and return a Polars frame with ``schema``.

    MySQL/MariaDB: connectorx (Arrow, about 4x faster than PyMySQL rows; bench/RESULTS.md), with
    the DBAPI path as fallback; SQLite: the DBAPI path.
    """
    _record(conn, stmt)
    cx = _connectorx() if conn.dialect.name in _MYSQL else None
    if cx is not None:
        df = cx.read_sql(connectorx_uri(conn), literal_sql(conn, stmt), return_type="polars")
        return _conform_read(df, schema)
    return _read_dbapi(conn, stmt, schema)


def read_frame_uncommitted(conn: Connection, stmt: Select, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Read rows that ``conn``'s open transaction wrote but has not committed.

    MySQL/MariaDB: a second session at READ UNCOMMITTED through connectorx sees the transaction's
    rows as they are stored (bulk read-back at Arrow speed, before the commit). SQLite (and the
    fallback): ``conn`` itself, inside its transaction.
    """
    _record(conn, stmt)
    cx = _connectorx() if conn.dialect.name in _MYSQL else None
    if cx is not None:
        df = cx.read_sql(connectorx_uri(conn), literal_sql(conn, stmt), return_type="polars",
                         pre_execution_query=["SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED"])
        return _conform_read(df, schema)
    return _read_dbapi(conn, stmt, schema)


def read_frame_in_transaction(conn: Connection, stmt: Select, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Read through ``conn`` itself (its transaction's view), for small reads inside a write."""
    _record(conn, stmt)
    return _read_dbapi(conn, stmt, schema)


def _read_dbapi(conn: Connection, stmt: Select, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    result = conn.execute(stmt)
    names = list(result.keys())
    rows = result.fetchall()
    if not rows:
        return pl.DataFrame(schema={n: schema.get(n, pl.String) for n in names})
    columns = list(zip(*rows))
    data = {}
    for name, values in zip(names, columns):
        dtype = schema.get(name)
        if dtype == pl.Float64 or dtype == pl.String:
            text_values = pl.Series(name, [None if v is None else str(v) for v in values], pl.String)
            data[name] = text_values.cast(dtype)
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


def bulk_load(conn: Connection, table: Table, df: pl.DataFrame, chunk_rows: int = 500_000, batch_rows: int = 5000) -> int:
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
        return bulk_insert(conn, table, df, batch_rows)
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
                    return bulk_insert(conn, table, df, batch_rows)
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


def id_predicates(column, ids: Iterable[int], *, in_list: int = 5000, density: float = 0.25,
                  range_ids: int = 250_000) -> list:
    """WHERE clauses that together select the rows of ``column`` in ``ids``: one statement each.

    The sorted distinct ids are taken ``in_list`` at a time. A batch that fills at least
    ``density`` of its span [first, last] becomes ``column BETWEEN first AND last`` (an index range
    scan, merged with the next dense batches up to ``range_ids`` ids): far cheaper for MySQL than
    thousands of index dives of an ``IN (...)`` list, at the cost of rows in the gaps, which the
    caller filters out (``is_in``). Sparse batches stay ``IN (...)`` lists. Values are bound
    parameters either way.
    """
    wanted = sorted({int(i) for i in ids})
    clauses: list = []
    run: list[int] | None = None  # [first, last, count] of the current BETWEEN
    for part in chunked(wanted, in_list):
        first, last = part[0], part[-1]
        if len(part) >= density * (last - first + 1):
            if run is not None and run[2] + len(part) <= range_ids:
                run[1], run[2] = last, run[2] + len(part)
                continue
            if run is not None:
                clauses.append(column.between(run[0], run[1]))
            run = [first, last, len(part)]
        else:  # a sparse batch ends the current range: a range never spans a sparse stretch
            if run is not None:
                clauses.append(column.between(run[0], run[1]))
                run = None
            clauses.append(column.in_(list(part)))
    if run is not None:
        clauses.append(column.between(run[0], run[1]))
    return clauses


def read_by_ids(conn: Connection, column, ids: Iterable[int], statement, schema: dict[str, pl.DataType], *,
                in_list: int = 5000) -> pl.DataFrame:
    """The rows ``statement(where)`` returns for the ``where`` clauses of :func:`id_predicates`
    over ``column`` and ``ids``, concatenated and restricted to ``ids`` (rows a range read in its
    gaps are dropped). The result names the id column like ``column``."""
    wanted = pl.Series(column.name, list(ids), dtype=schema[column.name]).unique()
    parts = [pl.DataFrame(schema=schema)]
    for where in id_predicates(column, wanted.to_list(), in_list=in_list):
        parts.append(read_frame(conn, statement(where), schema))
    return pl.concat(parts).filter(pl.col(column.name).is_in(wanted.implode()))


# ------------------------------------------------------------------------------------------
# retries of transient MySQL errors
# ------------------------------------------------------------------------------------------

#: MySQL/MariaDB errors worth retrying: the connection dropped (2006 server has gone away, 2013
#: lost connection, e.g. a KILL or a server restart) or the transaction lost a lock race (1205 lock
#: wait timeout, 1213 deadlock). Anything else is a real error and fails at once.
TRANSIENT_MYSQL_ERRORS = {2006: "server has gone away", 2013: "lost connection", 1205: "lock wait timeout",
                          1213: "deadlock"}
_TRANSIENT_TEXT = re.compile(r"\b(2006|2013|1205|1213)\b|gone away|Lost connection|Deadlock found|Lock wait timeout",
                             re.IGNORECASE)


def transient_error_code(error: BaseException) -> int | None:
    """The MySQL error number of ``error`` if it is transient (worth retrying), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        orig = getattr(error, "orig", None)
        args = getattr(orig if orig is not None else error, "args", ())
        if args and isinstance(args[0], int) and args[0] in TRANSIENT_MYSQL_ERRORS:
            return args[0]
        if type(error).__name__ in ("RuntimeError", "OSError") and _TRANSIENT_TEXT.search(str(error)):
            match = re.search(r"\b(2006|2013|1205|1213)\b", str(error))
            return int(match.group(1)) if match else 2013
        error = error.__cause__ or error.__context__
    return None


def with_retries(work, *, what: str, logger=None, attempts: int | None = None, base_delay: float | None = None):
    """Run ``work()``; on a transient MySQL error run it again (exponential backoff), at most
    ``attempts`` times in all (``ATTRIBUTION_DB_RETRIES``, default 4). ``work`` must be safe to
    repeat: a read, or a whole transaction that rolled back. Other errors propagate at once."""
    import time as _time

    from attribution_pipeline.logs import log_event, stdlib_logger

    attempts = attempts or int(os.environ.get("ATTRIBUTION_DB_RETRIES", "4"))
    delay = base_delay if base_delay is not None else float(os.environ.get("ATTRIBUTION_DB_RETRY_DELAY", "0.5"))
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except Exception as error:  # noqa: BLE001 - classified below, re-raised unless transient
            code = transient_error_code(error)
            if code is None or attempt == attempts:
                raise
            log_event(logger or stdlib_logger, "db_retry", level="warning", what=what, mysql_error=code,
                      reason=TRANSIENT_MYSQL_ERRORS[code], attempt=attempt, next_delay_s=delay)
            _time.sleep(delay)
            delay = min(delay * 2, 30.0)
