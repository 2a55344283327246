"""``attribution query``, ``attribution duckdb`` and ``attribution compare``: for analysts.

* ``query "SQL"`` runs SQL in an in-memory DuckDB that has the views ``snapshots`` (the global
  rows), ``touchpoints``, ``journeys``, ``click_spend``, ``snapshots_<scope type>`` (D31),
  ``credits_by_touch_hour`` and ``accrual`` over the export folder and prints a table (``--csv``, ``--json``).
  It is confined (``duckdb_views.connect``): it reads only the export folder, writes no file,
  loads no extension, and cannot change that; ``--unrestricted`` lifts it for a trusted shell. The
  query runs holding the export folder's publish lock shared, so it never sees an hour
  half-replaced.
* ``duckdb [FILE]`` is for interactive work. With FILE, the three views are written into that
  DuckDB database file (views, not copies: they read the export folder at query time, so the file
  stays current), which any DuckDB client opens: the ``duckdb`` CLI, a notebook, DBeaver. If the
  ``duckdb`` CLI is installed it is started on the file (a temporary one without FILE): completion,
  ``.mode``, ``.timer``, everything an analyst expects. Without it, FILE is written and how to open
  it is printed; without FILE a small built-in shell runs (readline history, statements ending
  with ``;``, ``.tables``, ``.schema``, ``.mode``, ``.quit``), so the command never dead-ends; it
  is confined like ``query`` unless ``--unrestricted``. The ``duckdb`` CLI is the analyst's own
  program (it has ``.shell``): it is started on the file as it is.
* ``compare --start T --end T [--by SCOPE]`` prints attributed revenue per value of a scope type
  (``account``, the default: the ppc account; ``traffic_source``: its ppc network; ``campaign``,
  ``advertiser``, ``landing_page``; D31) under every active model, side by side, with totals and
  spreads, and writes the same as a PNG bar chart. ``--axis touch`` prints instead, per click hour
  (or day) of the window, the revenue each model credits to those clicks beside their spend (every
  click in ``202_clicks``) and each model's ROAS (``analytics/accrual.py``); it takes no ``--by``.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from attribution_pipeline.analytics import accrual_render
from attribution_pipeline.analytics.accrual import compare_touch
from attribution_pipeline.analytics.comparison import compare
from attribution_pipeline.analytics.duckdb_views import ExportsNotFound, connect, print_result, run_sql
from attribution_pipeline.analytics.render import render_chart, render_text
from attribution_pipeline.cli.common import EXIT_OK, db_arg, fail, window_args
from attribution_pipeline.cli.shell import repl
from attribution_pipeline.core.hours import check_window, hour_key, parse_time
from attribution_pipeline.errors import AttributionError
from attribution_pipeline.settings import SCOPE_TYPES, Settings
from attribution_pipeline.storage.database import Database, preflight


def _pipe_safe(command):
    """``attribution query ... | head`` closes the pipe early: stop quietly, as shell tools do."""
    def run(args, settings: Settings) -> int:
        try:
            return command(args, settings)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_OK

    run.__doc__ = command.__doc__
    return run


def _export_arg(p) -> None:
    p.add_argument("--export-dir", help="export folder (default: $ATTRIBUTION_EXPORT_DIR, else "
                   "$ATTRIBUTION_HOME/exports)")


def _unrestricted_arg(p) -> None:
    p.add_argument("--unrestricted", action="store_true",
                   help="lift the confinement (DuckDB may then read and write any file and load extensions): "
                        "only in a trusted shell")


def export_dir(args, settings: Settings) -> Path:
    """``--export-dir``, else the settings' export folder."""
    return Path(args.export_dir).resolve() if args.export_dir else settings.export_path


def cmd_query(args, settings: Settings) -> int:
    import duckdb

    sql = sys.stdin.read() if args.sql == "-" else args.sql
    fmt = "csv" if args.csv else "json" if args.json else "table"
    try:
        con = connect(export_dir(args, settings), confined=not args.unrestricted)
    except ExportsNotFound as exc:
        return fail(str(exc))
    try:
        result = run_sql(con, sql)  # holds the publish lock while it runs; the rows are kept
        print_result(result, fmt=fmt, max_rows=args.max_rows)
    except duckdb.Error as exc:
        return fail(f"{type(exc).__name__}: {exc}")
    finally:
        con.close()
    return EXIT_OK


def duckdb_cli(settings: Settings) -> str | None:
    """The ``duckdb`` command line shell, if installed (``$ATTRIBUTION_DUCKDB_CLI`` or on PATH)."""
    return settings.duckdb_cli or shutil.which("duckdb")


def cmd_duckdb(args, settings: Settings) -> int:
    root = export_dir(args, settings)
    cli = duckdb_cli(settings)
    target = args.file
    if target is None and cli:
        target = str(Path(tempfile.mkdtemp(prefix="attribution-duckdb-")) / "attribution.duckdb")
    try:  # a FILE only holds the views (any client opens it); the built-in shell runs SQL: confined
        con = connect(root, database=target or ":memory:", confined=target is None and not args.unrestricted)
    except ExportsNotFound as exc:
        return fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - duckdb errors (file locked, wrong version) are shown as they are
        return fail(f"cannot open {target}: {exc}")
    if target is None:
        try:
            return repl(con, history=settings.home / "duckdb_history")
        finally:
            con.close()
    con.close()
    if cli and sys.stdin.isatty():
        return subprocess.call([cli, target])
    print(f"views snapshots, touchpoints, journeys, click_spend, snapshots_<scope type>, credits_by_touch_hour, "
          f"accrual (over {root}) written into "
          f"{Path(target).resolve()}")
    print("open it with any DuckDB client, for example:")
    print(f"  duckdb {target}" + ("" if cli else "        (the DuckDB command line shell; not installed here)"))
    print(f"  python -c \"import duckdb; print(duckdb.connect('{target}').sql('FROM snapshots LIMIT 5'))\"")
    print("the views read the export folder at query time (new hours appear by themselves); run this "
          "command again if the folder moves. For a built-in shell: attribution duckdb (without FILE).")
    return EXIT_OK


def cmd_compare(args, settings: Settings) -> int:
    if args.axis == "touch" and args.by:
        return fail("--by does not combine with --axis touch (one table per click hour or day, all scopes together); "
                    "for a scope by click hour, query touchpoints and click_spend with attribution query")
    db = Database.from_settings(settings)
    users = sorted(set(args.user or [])) or None
    try:
        start, end = parse_time(args.start), parse_time(args.end)
        now = int(time.time())
        check_window(start, end, now)
        preflight(db)
        if args.axis == "touch":
            result = compare_touch(db.engine(), start, end, lookback_seconds=settings.lookback_seconds, now=now,
                                   users=users)
        else:
            result = compare(db.engine(), start, end, users=users, by=args.by or "account")
    except AttributionError as exc:
        return fail(f"{type(exc).__name__}: {exc}")
    kind = "touch" if args.axis == "touch" else args.by or "account"
    out = Path(args.out) if args.out else (
        settings.reports_path
        / f"model_comparison_{kind}_{hour_key(result.first_hour)}_{hour_key(result.last_hour)}.png".replace(":", "")
    )
    chart, text = ((accrual_render.render_chart, accrual_render.render_text) if args.axis == "touch"
                   else (render_chart, render_text))
    chart(result, out)
    print(f"database: {db.display_url()}")
    print(text(result))
    print(f"\nchart: {out.resolve()}")
    return EXIT_OK


def add_subcommands(sub) -> None:
    """Add ``query``, ``duckdb`` and ``compare`` to the ``attribution`` parser's subcommands."""
    p = sub.add_parser("query", help="run SQL (DuckDB) over the Parquet exports: views snapshots, touchpoints, journeys, "
                       "click_spend, snapshots_<scope type>, credits_by_touch_hour, accrual",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog='example: attribution query "SELECT date, model_name, sum(attributed_revenue) '
                              'FROM snapshots GROUP BY ALL ORDER BY ALL"')
    p.add_argument("sql", help="one or more SQL statements (the last one's result is printed); - reads stdin")
    _export_arg(p)
    form = p.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    form.add_argument("--json", action="store_true", help="print a JSON array of rows (decimals as exact strings)")
    p.add_argument("--max-rows", type=int, default=100, help="rows shown in table output (default 100)")
    _unrestricted_arg(p)
    p.set_defaults(func=_pipe_safe(cmd_query))

    p = sub.add_parser("duckdb", help="interactive DuckDB over the exports, or write the views into a DuckDB file")
    p.add_argument("file", nargs="?", help="DuckDB database file to write the views into (created if missing)")
    _export_arg(p)
    _unrestricted_arg(p)
    p.set_defaults(func=cmd_duckdb)

    p = sub.add_parser("compare", help="attributed revenue per account, traffic source, campaign, advertiser or "
                       "landing page under every active model, side by side, with a PNG chart")
    db_arg(p)
    window_args(p)
    p.add_argument("--by", choices=SCOPE_TYPES, default=None,
                   help="the scope type compared (D31): account (ppc account, the default), traffic_source (the "
                   "account's ppc network), campaign, advertiser, landing_page")
    p.add_argument("--axis", choices=("conversion", "touch"), default="conversion",
                   help="conversion (the default): the window's conversions, per scope value; touch: the window's "
                   "clicks, revenue per click hour or day (days beyond 48 hours) against their spend, with ROAS")
    p.add_argument("--out", help="PNG file for the chart (default: $ATTRIBUTION_HOME/reports/model_comparison_...png)")
    p.set_defaults(func=_pipe_safe(cmd_compare))
