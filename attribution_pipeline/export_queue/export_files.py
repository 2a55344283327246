"""The export files: CSV byte-compatible with PHP's worker, XLSX instead of its "xls" (D24).

* **CSV** is what PHP's ``fputcsv`` writes: comma, a field enclosed in double quotes only when it
  holds a comma, a double quote, a backslash, a newline, a carriage return, a tab or a space; a
  double quote inside doubled unless a backslash precedes it (PHP's escape character); LF line
  ends; NULL as an empty field; integers in decimal; the DECIMAL measures as PHP prints a float
  (``precision=14``, ``%.14G``: ``100.0000`` -> ``100``, ``35.5000`` -> ``35.5``, ``0`` -> ``0``).
* **XLSX** (for ``xls``, ``xlsx`` and ``excel``; PHP wrote tab-separated text named ``.xls``) is
  written by XlsxWriter in its constant-memory mode (one row in memory at a time), numbers as
  numeric cells, NULL as an empty cell. A sheet holds 1,048,576 rows: past 1,048,575 data rows
  the export fails (:class:`XlsxRowLimit`).

A file is named as PHP names it, ``attribution_export_<export_id>_<YYYYmmdd_HHMMSS>.<csv|xlsx>``
(UTC), written under a temporary name in the same folder, flushed to disk, then renamed: a
reader (Prosper202's ``download.php``, a webhook) sees the whole file or none.
"""

import os
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from attribution_pipeline.export_queue.snapshot_pages import COLUMNS

#: Rows of an XLSX sheet (Excel's limit), the header included.
XLSX_MAX_ROWS = 1_048_576
_ENCLOSE = re.compile(r'[,"\\\n\r\t ]')
_STRING_COLUMNS = frozenset(i for i, c in enumerate(COLUMNS) if c == "scope_type")


class XlsxRowLimit(ValueError):
    """The export has more rows than an XLSX sheet holds (reason ``xlsx_row_limit``)."""

    reason = "xlsx_row_limit"


def php_number(value) -> str:
    """A number as PHP's ``(string)`` prints it: ints in decimal, floats with ``precision=14``."""
    if isinstance(value, int):
        return str(value)
    return "%.14G" % float(value)


def csv_field(value: str) -> str:
    """One field as PHP's ``fputcsv`` writes it (delimiter ``,``, enclosure ``"``, escape ``\\``)."""
    if not _ENCLOSE.search(value):
        return value
    out, escaped = [], False
    for ch in value:
        if ch == "\\":
            escaped = True
        elif not escaped and ch == '"':
            out.append('"')
        else:
            escaped = False
        out.append(ch)
    return '"' + "".join(out) + '"'


def csv_line(row: tuple) -> str:
    cells = []
    for i, value in enumerate(row):
        if value is None:
            cells.append("")
        elif i in _STRING_COLUMNS or isinstance(value, str):
            cells.append(csv_field(str(value)))
        else:
            cells.append(php_number(value))
    return ",".join(cells) + "\n"


def file_name(export_id: int, kind: str, when: int) -> str:
    stamp = datetime.fromtimestamp(when, tz=timezone.utc).strftime("%Y%m%d_%H%M%S")
    return f"attribution_export_{export_id}_{stamp}.{kind}"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_csv(tmp: Path, pages: Iterable[list[tuple]]) -> int:
    rows = 0
    with open(tmp, "wb") as out:
        out.write(csv_line(COLUMNS).encode())
        for page in pages:
            out.write("".join(csv_line(r) for r in page).encode("utf-8"))
            rows += len(page)
        out.flush()
        os.fsync(out.fileno())
    return rows


def _write_xlsx(tmp: Path, pages: Iterable[list[tuple]]) -> int:
    import xlsxwriter

    workbook = xlsxwriter.Workbook(str(tmp), {"constant_memory": True, "tmpdir": str(tmp.parent)})
    sheet = workbook.add_worksheet("snapshots")
    sheet.write_row(0, 0, COLUMNS)
    rows = 0
    try:
        for page in pages:
            if rows + len(page) > XLSX_MAX_ROWS - 1:
                raise XlsxRowLimit(f"the export has more than {XLSX_MAX_ROWS - 1:,} rows, the most an XLSX sheet "
                                   "holds (ask for csv)")
            for row in page:
                rows += 1
                for col, value in enumerate(row):
                    if value is None:
                        continue
                    if isinstance(value, str):
                        sheet.write_string(rows, col, value)
                    else:
                        sheet.write_number(rows, col, float(value) if isinstance(value, Decimal) else value)
    finally:
        workbook.close()
    with open(tmp, "rb+") as done:
        os.fsync(done.fileno())
    return rows


def write_export_file(directory: Path, export_id: int, kind: str, pages: Iterable[list[tuple]], *,
                      when: int) -> tuple[Path, int]:
    """Write the rows of ``pages`` as ``kind`` ("csv" or "xlsx") under ``directory``, atomically;
    return the file's path and its data row count. On any error no file is left behind."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o775)
    final = directory / file_name(export_id, kind, when)
    tmp = directory / f".{final.name}.{secrets.token_hex(4)}.partial"
    try:
        rows = (_write_csv if kind == "csv" else _write_xlsx)(tmp, pages)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return final, rows
