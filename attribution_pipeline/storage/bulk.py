"""Bulk writes from Polars frames: ``LOAD DATA LOCAL INFILE`` on MySQL, batched INSERTs elsewhere.

Statements are SQLAlchemy Core with bound parameters (the file name of LOAD DATA included);
identifiers are quoted by the dialect. Values are never formatted into SQL text. The connection
sends a local file only for the statement that names it (``database.local_file_allowed``): a
server asking for any other file gets nothing.
"""

import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from sqlalchemy import Table, exc, text
from sqlalchemy.engine import Connection

from attribution_pipeline.storage.database import LocalInfileRefusedError, local_file_allowed


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
    and identifiers are quoted by the dialect's identifier preparer. Each statement allows its
    connection to send that one file (``local_file_allowed``); a server asking for another file
    gets nothing and the write fails (``LocalInfileRefused``, never a silent fallback).
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
    batches = list(_batches(_csv_escaped(df), chunk_rows))
    total = 0
    # the next batch's file is written while the server loads this one (two files in turn)
    with tempfile.TemporaryDirectory(prefix="attribution-load-") as tmp, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-csv") as writer:
        def write(i: int) -> str:
            path = str(Path(tmp) / f"rows-{i % 2}.csv")
            batches[i].write_csv(path, include_header=False, null_value="\\N", quote_style="non_numeric")
            return path

        pending = writer.submit(write, 0)
        for i in range(len(batches)):
            path = pending.result()
            if i + 1 < len(batches):
                pending = writer.submit(write, i + 1)
            if i == 0:
                try:
                    with conn.begin_nested(), local_file_allowed(conn, path):
                        total += conn.execute(stmt, {"path": path}).rowcount
                except exc.DBAPIError as error:
                    code = error.orig.args[0] if error.orig is not None and error.orig.args else None
                    if code not in LOAD_DATA_REFUSED or isinstance(error.orig, LocalInfileRefusedError):
                        raise
                    return bulk_insert(conn, table, df, batch_rows)
            else:
                with local_file_allowed(conn, path):
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
