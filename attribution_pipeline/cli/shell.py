"""The built-in DuckDB shell of ``attribution duckdb`` (when no ``duckdb`` command line is installed)."""

import sys
from pathlib import Path

from attribution_pipeline.analytics.duckdb_views import VIEWS, print_result, run_sql
from attribution_pipeline.cli.common import EXIT_OK
from attribution_pipeline.exports.columns import EXPORT_TABLES

HELP = """Statements end with ';' (a statement may span lines). Views: snapshots, touchpoints, journeys,
click_spend, snapshots_campaign, snapshots_advertiser, snapshots_account, snapshots_traffic_source,
snapshots_landing_page, credits_by_touch_hour, accrual.
  .tables            list the views
  .schema [VIEW]     columns and types
  .mode table|csv|json
  .maxrows N         rows shown in table mode (now {max_rows})
  .help              this text
  .quit / .exit      leave (or Ctrl-D)"""


def repl(con, *, stdin=None, out=None, max_rows: int = 100, history: Path | None = None) -> int:
    """A minimal DuckDB shell over ``con`` (used when no ``duckdb`` CLI is installed); ``history``
    is the readline history file of an interactive session."""
    import duckdb

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    interactive = stdin.isatty()
    readline = None
    if interactive and history is not None:
        try:
            import readline  # noqa: F401 - line editing and history for input()

            history.parent.mkdir(parents=True, exist_ok=True)
            if history.exists():
                readline.read_history_file(history)
        except (ImportError, OSError):
            readline = None
    fmt = "table"
    buffer: list[str] = []
    print("DuckDB over the attribution exports. Views: snapshots, touchpoints, journeys. "
          "End statements with ';'. .help for help, .quit to leave.", file=out)
    while True:
        prompt = "   ...> " if buffer else "attribution> "
        if interactive:
            try:
                line = input(prompt)
            except EOFError:
                print(file=out)
                break
            except KeyboardInterrupt:
                print(file=out)
                buffer = []
                continue
        else:
            line = stdin.readline()
            if not line:
                break
            line = line.rstrip("\n")
        stripped = line.strip()
        if not buffer and stripped.startswith("."):
            command, _, arg = stripped.partition(" ")
            arg = arg.strip().rstrip(";")
            if command in (".quit", ".exit", ".q"):
                break
            if command == ".help":
                print(HELP.format(max_rows=max_rows), file=out)
            elif command == ".tables":
                print("  ".join(VIEWS), file=out)
            elif command == ".schema":
                for table in [arg] if arg else EXPORT_TABLES:
                    try:
                        print_result(con.sql(f"DESCRIBE {table}").select("column_name", "column_type"),
                                               max_rows=200, out=out)
                    except duckdb.Error as exc:
                        print(f"error: {exc}", file=out)
            elif command == ".mode" and arg in ("table", "csv", "json"):
                fmt = arg
            elif command == ".maxrows" and arg.isdigit():
                max_rows = int(arg)
            else:
                print(f"unknown command {stripped!r}; .help lists the commands", file=out)
            continue
        if not stripped and not buffer:
            continue
        buffer.append(line)
        if not stripped.endswith(";"):
            continue
        sql = "\n".join(buffer)
        buffer = []
        try:
            print_result(run_sql(con, sql), fmt=fmt, max_rows=max_rows, out=out)
        except duckdb.Error as exc:
            print(f"error: {type(exc).__name__}: {exc}", file=out)
    if readline is not None:
        try:
            readline.write_history_file(history)
        except OSError:
            pass
    return EXIT_OK
