"""``attribution query``, ``attribution duckdb`` and ``attribution compare``.

* ``query "SQL"`` runs SQL in an in-memory DuckDB that has the views ``snapshots``,
  ``touchpoints`` and ``journeys`` over the export folder and prints a table (``--csv``, ``--json``).
* ``duckdb [FILE]`` is for interactive work. With FILE, the three views are written into that
  DuckDB database file (views, not copies: they read the export folder at query time, so the file
  stays current), which any DuckDB client opens: the ``duckdb`` CLI, a notebook, DBeaver. If the
  ``duckdb`` CLI is installed it is started on the file (a temporary one without FILE): completion,
  ``.mode``, ``.timer``, everything an analyst expects. Without it, FILE is written and how to open
  it is printed; without FILE a small built-in shell runs (readline history, statements ending
  with ``;``, ``.tables``, ``.schema``, ``.mode``, ``.quit``), so the command never dead-ends.
* ``compare --start T --end T`` prints attributed revenue per traffic source under every active
  model, side by side, with totals and spreads, and writes the same as a PNG bar chart.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from attribution_pipeline import analytics, exports
from attribution_pipeline.db import attribution_home, make_engine, resolve_db_url, safe_url
from attribution_pipeline.errors import AttributionError
from attribution_pipeline.partitions import hour_key, parse_time

EXIT_OK, EXIT_FATAL = 0, 1


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FATAL


def _pipe_safe(command):
    """``attribution query ... | head`` closes the pipe early: stop quietly, as shell tools do."""
    def run(args) -> int:
        try:
            return command(args)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_OK

    run.__doc__ = command.__doc__
    return run


def _export_arg(p) -> None:
    p.add_argument("--export-dir", help="export folder (default: $ATTRIBUTION_EXPORT_DIR, else "
                   "$ATTRIBUTION_HOME/exports)")


# ------------------------------------------------------------------------------------------
# query
# ------------------------------------------------------------------------------------------


def cmd_query(args) -> int:
    import duckdb

    sql = sys.stdin.read() if args.sql == "-" else args.sql
    fmt = "csv" if args.csv else "json" if args.json else "table"
    try:
        con = analytics.connect(args.export_dir)
    except analytics.ExportsNotFound as exc:
        return _fail(str(exc))
    try:
        analytics.print_result(analytics.run_sql(con, sql), fmt=fmt, max_rows=args.max_rows)
    except duckdb.Error as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    finally:
        con.close()
    return EXIT_OK


# ------------------------------------------------------------------------------------------
# duckdb
# ------------------------------------------------------------------------------------------

HELP = """Statements end with ';' (a statement may span lines). Views: snapshots, touchpoints, journeys.
  .tables            list the views
  .schema [VIEW]     columns and types
  .mode table|csv|json
  .maxrows N         rows shown in table mode (now {max_rows})
  .help              this text
  .quit / .exit      leave (or Ctrl-D)"""


def repl(con, *, stdin=None, out=None, max_rows: int = 100) -> int:
    """A minimal DuckDB shell over ``con`` (used when no ``duckdb`` CLI is installed)."""
    import duckdb

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    interactive = stdin.isatty()
    history = attribution_home() / "duckdb_history"
    readline = None
    if interactive:
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
                print("  ".join(exports.TABLES), file=out)
            elif command == ".schema":
                for table in [arg] if arg else exports.TABLES:
                    try:
                        analytics.print_result(con.sql(f"DESCRIBE {table}").select("column_name", "column_type"),
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
            analytics.print_result(analytics.run_sql(con, sql), fmt=fmt, max_rows=max_rows, out=out)
        except duckdb.Error as exc:
            print(f"error: {type(exc).__name__}: {exc}", file=out)
    if readline is not None:
        try:
            readline.write_history_file(history)
        except OSError:
            pass
    return EXIT_OK


def duckdb_cli() -> str | None:
    """The ``duckdb`` command line shell, if installed (``$ATTRIBUTION_DUCKDB_CLI`` or on PATH)."""
    import shutil

    explicit = os.environ.get("ATTRIBUTION_DUCKDB_CLI", "").strip()
    return explicit or shutil.which("duckdb")


def cmd_duckdb(args) -> int:
    root = exports.export_root(args.export_dir)
    cli = duckdb_cli()
    target = args.file
    if target is None and cli:
        target = str(Path(tempfile.mkdtemp(prefix="attribution-duckdb-")) / "attribution.duckdb")
    try:
        con = analytics.connect(root, database=target or ":memory:")
    except analytics.ExportsNotFound as exc:
        return _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - duckdb errors (file locked, wrong version) are shown as they are
        return _fail(f"cannot open {target}: {exc}")
    if target is None:
        try:
            return repl(con)
        finally:
            con.close()
    con.close()
    if cli and sys.stdin.isatty():
        return subprocess.call([cli, target])
    print(f"views snapshots, touchpoints, journeys (over {root}) written into {Path(target).resolve()}")
    print("open it with any DuckDB client, for example:")
    print(f"  duckdb {target}" + ("" if cli else "        (the DuckDB command line shell; not installed here)"))
    print(f"  python -c \"import duckdb; print(duckdb.connect('{target}').sql('FROM snapshots LIMIT 5'))\"")
    print("the views read the export folder at query time (new hours appear by themselves); run this "
          "command again if the folder moves. For a built-in shell: attribution duckdb (without FILE).")
    return EXIT_OK


# ------------------------------------------------------------------------------------------
# compare
# ------------------------------------------------------------------------------------------


def cmd_compare(args) -> int:
    url = resolve_db_url(args.db_url)
    try:
        start, end = parse_time(args.start), parse_time(args.end)
        result = analytics.compare(make_engine(url), start, end, users=sorted(set(args.user or [])) or None)
    except AttributionError as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    out = Path(args.out) if args.out else (
        attribution_home() / "reports"
        / f"model_comparison_{hour_key(result.first_hour)}_{hour_key(result.last_hour)}.png".replace(":", "")
    )
    analytics.render_chart(result, out)
    print(f"database: {safe_url(url)}")
    print(analytics.render_text(result))
    print(f"\nchart: {out.resolve()}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------


def add_subcommands(sub) -> None:
    """Add ``query``, ``duckdb`` and ``compare`` to the ``attribution`` parser's subcommands."""
    p = sub.add_parser("query", help="run SQL (DuckDB) over the Parquet exports: views snapshots, touchpoints, journeys",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog='example: attribution query "SELECT date, model_name, sum(attributed_revenue) '
                              'FROM snapshots GROUP BY ALL ORDER BY ALL"')
    p.add_argument("sql", help="one or more SQL statements (the last one's result is printed); - reads stdin")
    _export_arg(p)
    form = p.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    form.add_argument("--json", action="store_true", help="print a JSON array of rows (decimals as exact strings)")
    p.add_argument("--max-rows", type=int, default=100, help="rows shown in table output (default 100)")
    p.set_defaults(func=_pipe_safe(cmd_query))

    p = sub.add_parser("duckdb", help="interactive DuckDB over the exports, or write the views into a DuckDB file")
    p.add_argument("file", nargs="?", help="DuckDB database file to write the views into (created if missing)")
    _export_arg(p)
    p.set_defaults(func=cmd_duckdb)

    p = sub.add_parser("compare", help="attributed revenue per traffic source under every active model, "
                       "side by side, with a PNG chart")
    p.add_argument("--db-url", help="SQLAlchemy URL (default: $ATTRIBUTION_DB_URL, else the embedded SQLite "
                   "database under $ATTRIBUTION_HOME or ./.attribution)")
    p.add_argument("--start", required=True, help="epoch seconds or ISO-8601 (UTC when no offset); inclusive")
    p.add_argument("--end", required=True, help="epoch seconds or ISO-8601; exclusive")
    p.add_argument("--user", type=int, action="extend", nargs="+", help="only these users (repeatable)")
    p.add_argument("--out", help="PNG file for the chart (default: $ATTRIBUTION_HOME/reports/model_comparison_...png)")
    p.set_defaults(func=_pipe_safe(cmd_compare))
