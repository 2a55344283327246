"""Set-based reads into Polars: Core SELECTs with bound parameters, read at Arrow speed.

MySQL/MariaDB reads go through connectorx (about 4x PyMySQL rows, bench/RESULTS.md), which cannot
bind parameters: :func:`literal_sql` renders a statement's parameters as literals and refuses any
value that is not an integer, NULL or an identifier-like constant, so no value from data or from a
user ever becomes SQL text. SQLite (and the fallback) reads through the DBAPI.

connectorx cannot be given TLS settings (no CA, certificate or verification options in its MySQL
URI: sfu-db/connector-x issue 347), so a URL that asks for TLS (``ssl=true``, ``ssl_ca=...``:
``database.tls_requested``) is read through PyMySQL, which honours them (logged once);
:func:`connectorx_uri` refuses such a URL rather than drop its TLS parameters.
"""

import re
from collections.abc import Iterable, Sequence

import polars as pl
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.sql import Select

from attribution_pipeline.errors import TlsConfigError
from attribution_pipeline.logs import log_event, stdlib_logger
from attribution_pipeline.storage.database import RECORD_SQL_OPTION, safe_url, tls_params, tls_requested

_MYSQL = ("mysql", "mariadb")
_TLS_LOGGED: set[str] = set()


def _connectorx():
    try:
        import connectorx
    except ImportError:  # pragma: no cover - connectorx is a dependency; the DBAPI path remains
        return None
    return connectorx


def _url_of(conn_or_engine):
    if isinstance(conn_or_engine, (str, URL)):
        return make_url(conn_or_engine)
    return conn_or_engine.engine.url if hasattr(conn_or_engine, "engine") else conn_or_engine.url


def connectorx_uri(conn_or_engine) -> str:
    """The connectorx URI of an engine, a connection or a URL: its query string is dropped
    (connectorx knows none of PyMySQL's parameters), so a URL that asks for TLS is refused
    (``TlsConfigError``) instead of becoming a clear-text URI."""
    url = _url_of(conn_or_engine)
    if tls_requested(tls_params(url)):
        raise TlsConfigError("connectorx cannot use the TLS settings of the database URL; it is read through "
                             "PyMySQL instead (frame_io.uses_connectorx)")
    return url.set(drivername="mysql", query={}).render_as_string(hide_password=False)


def uses_connectorx(conn_or_engine) -> bool:
    """Whether MySQL reads of this engine/connection/URL go through connectorx: MySQL/MariaDB
    without TLS asked for. With TLS they go through PyMySQL (logged once per database)."""
    url = _url_of(conn_or_engine)
    if url.get_backend_name() not in _MYSQL:
        return False
    if tls_requested(tls_params(url)):
        shown = safe_url(url.render_as_string(hide_password=False))
        if shown not in _TLS_LOGGED:
            _TLS_LOGGED.add(shown)
            log_event(stdlib_logger, "reads_without_connectorx", level="warning", reason="tls",
                      detail="the database URL asks for TLS, which connectorx cannot use: reads go through PyMySQL")
        return False
    return True


def _reader(conn: Connection):
    """connectorx when it is installed and may be used for ``conn``, else None (the DBAPI path)."""
    return _connectorx() if uses_connectorx(conn) else None


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
    target = conn.get_execution_options().get(RECORD_SQL_OPTION)
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
    the DBAPI path as fallback and where the URL asks for TLS; SQLite: the DBAPI path.
    """
    _record(conn, stmt)
    cx = _reader(conn)
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
    cx = _reader(conn)
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


def chunked(values: Sequence, size: int) -> Iterable[Sequence]:
    for offset in range(0, len(values), size):
        yield values[offset : offset + size]


def id_predicates(column, ids: Iterable[int], *, in_list: int = 5000, density: float = 0.25,
                  range_ids: int = 250_000, distinct: bool = False) -> list:
    """WHERE clauses that together select the rows of ``column`` in ``ids``: one statement each.

    The sorted distinct ids are taken ``in_list`` at a time. A batch that fills at least
    ``density`` of its span [first, last] becomes ``column BETWEEN first AND last`` (an index range
    scan, merged with the next dense batches up to ``range_ids`` ids): far cheaper for MySQL than
    thousands of index dives of an ``IN (...)`` list, at the cost of rows in the gaps, which the
    caller filters out (``is_in``). Sparse batches stay ``IN (...)`` lists. Values are bound
    parameters either way. ``distinct``: ``ids`` are sorted distinct ints already (not sorted again).
    """
    wanted = list(ids) if distinct else sorted({int(i) for i in ids})
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


def read_by_ids(conn: Connection, column, ids: Iterable[int] | pl.Series, statement, schema: dict[str, pl.DataType], *,
                in_list: int = 5000) -> pl.DataFrame:
    """The rows ``statement(where)`` returns for the ``where`` clauses of :func:`id_predicates`
    over ``column`` and ``ids``, concatenated and restricted to ``ids`` (rows a range read in its
    gaps are dropped). The result names the id column like ``column``. ``ids`` may be a Series (a
    frame's column: made distinct and sorted by Polars, not in Python, which matters for the
    exports' hundreds of thousands of click ids read while the write-back runs)."""
    dtype = schema[column.name]
    wanted = (ids.rename(column.name).cast(dtype) if isinstance(ids, pl.Series)
              else pl.Series(column.name, list(ids), dtype=dtype)).drop_nulls().unique().sort()
    parts = [pl.DataFrame(schema=schema)]
    for where in id_predicates(column, wanted.to_list(), in_list=in_list, distinct=True):
        parts.append(read_frame(conn, statement(where), schema))
    return pl.concat(parts).filter(pl.col(column.name).is_in(wanted.implode()))
