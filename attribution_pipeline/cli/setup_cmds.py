"""``attribution init-db``, ``seed`` and ``demo``: the database, synthetic data, the embedded demo."""

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from attribution_pipeline.cli.common import EXIT_FATAL, EXIT_OK, db_arg, fail
from attribution_pipeline.cli.jobrun import model_names, run_job
from attribution_pipeline.cli.outcome import print_summary
from attribution_pipeline.core.hours import check_time, hour_key, parse_time
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.demo.generator import GeneratorConfig, seed
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.database import Database, preflight
from attribution_pipeline.storage.schema_expectations import add_missing_indexes

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_HOURS = 72


def cmd_init_db(args, settings: Settings) -> int:
    db = Database.from_settings(settings)
    preflight(db)  # one attempt, named error (cli.main prints it): no retries on a wrong password
    created = tables.create_missing(db.engine())
    print(f"database: {db.display_url()}")
    print(f"created {len(created)} table(s): {', '.join(created)}" if created else "every table already exists; nothing changed")
    if getattr(args, "add_indexes", False):  # D28: the doctor's recommended indexes that are missing
        added = add_missing_indexes(db.engine())
        print("\n".join(f"added index {s.name} on {s.label}" for s in added) if added else "every recommended index exists")
    return EXIT_OK


def cmd_seed(args, settings: Settings) -> int:
    db = Database.from_settings(settings)
    now = int(time.time())
    start = check_time(parse_time(args.start), now, "start") if args.start else now - now % 3600 - args.hours * 3600
    preflight(db)
    config = GeneratorConfig(seed=args.seed, start=start, hours=args.hours, scale=args.scale,
                             clicks=args.clicks, conversions=args.conversions, models=args.models)
    counts = seed(db.engine(), config)
    print(f"database: {db.display_url()}")
    print(f"seeded {hour_key(start)} .. {hour_key(start + (args.hours - 1) * 3600)} UTC:")
    for table, n in counts.items():
        print(f"  {table}: {n} rows")
    return EXIT_OK


def dagster_home(settings: Settings) -> Path:
    """``$DAGSTER_HOME``, else ``$ATTRIBUTION_HOME/dagster``, holding the repository's dagster.yaml."""
    home = (settings.dagster_home or settings.home / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    template = REPO_ROOT / "dagster.yaml"
    if template.exists() and not (home / "dagster.yaml").exists():
        shutil.copy(template, home / "dagster.yaml")
    return home


def _fresh_demo_home(settings: Settings) -> None:
    """Remove what an earlier demo left under ``$ATTRIBUTION_HOME`` (database, frames, reports, exports)."""
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    for leftover in ("attribution.sqlite", "attribution.sqlite-wal", "attribution.sqlite-shm"):
        (home / leftover).unlink(missing_ok=True)
    for folder in ("frames", "reports", "exports"):
        shutil.rmtree(home / folder, ignore_errors=True)


def cmd_demo(args, settings: Settings) -> int:
    started = time.time()
    _fresh_demo_home(settings)
    settings = settings.replace(db_url=settings.default_db_url, dagster_home=dagster_home(settings))
    db = Database.from_settings(settings)
    tables.create_missing(db.engine())
    now = int(time.time())
    last = now - now % 3600 - 3600
    first = last - (DEMO_HOURS - 1) * 3600
    counts = seed(db.engine(), GeneratorConfig(seed=args.seed, start=first, hours=DEMO_HOURS, scale=args.scale))
    print(f"demo database: {settings.db_url}")
    print("seeded: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    result, report = run_job(build_definitions(settings), settings, first, last, source="demo")
    if report is None or not result.success:
        return fail("the demo run failed; see the Dagster run in the UI")
    print_summary(report, model_names(db.engine(), report))
    _print_next_steps(settings, started, last)
    return EXIT_OK if report["outcome"] in (0, 2) else EXIT_FATAL


def _print_next_steps(settings: Settings, started: float, last: int) -> None:
    home = settings.home
    print(f"\ndone in {time.time() - started:.1f}s. Next:")
    print(f"  - open the UI:  DAGSTER_HOME={settings.dagster_home} ATTRIBUTION_HOME={home} .venv/bin/dagster dev")
    print("    (Assets > attribution: the hours are materialised, with their checks and metadata)")
    print(f"  - inspect the rows Prosper202's dashboard reads:  sqlite3 {home / 'attribution.sqlite'} "
          "'select model_id, date_hour, attributed_clicks, attributed_revenue from \"202_attribution_snapshots\" limit 10'")
    day_start = datetime.fromtimestamp(last - 23 * 3600, tz=timezone.utc).strftime("%Y-%m-%dT%H:00")
    day_end = datetime.fromtimestamp(last + 3600, tz=timezone.utc).strftime("%Y-%m-%dT%H:00")
    print(f"  - rebuild the last 24 hours like the PHP cron (outcome 2: the demo seeds invalid models on purpose):\n"
          f"      ATTRIBUTION_HOME={home} .venv/bin/attribution rebuild --start {day_start} --end {day_end} --dry-run")
    print(f"  - query the Parquet exports with DuckDB (docs/exports.md), compare the models:\n"
          f"      ATTRIBUTION_HOME={home} .venv/bin/attribution query \"SELECT date, model_name, sum(attributed_revenue) "
          f"AS revenue_usd FROM snapshots GROUP BY ALL ORDER BY ALL\"\n"
          f"      ATTRIBUTION_HOME={home} .venv/bin/attribution compare --start {day_start} --end {day_end}")


def add_subcommands(sub) -> None:
    p = sub.add_parser("init-db", help="create the Prosper202 tables that are missing (never alters existing ones)")
    db_arg(p)
    p.add_argument("--add-indexes", action="store_true",
                   help="also add the recommended indexes `attribution doctor` finds missing (CREATE INDEX only)")
    p.set_defaults(func=cmd_init_db)

    p = sub.add_parser("seed", help="fill a database with seeded synthetic Prosper202 data")
    db_arg(p)
    p.add_argument("--seed", type=int, default=202)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--hours", type=int, default=72, help="hours of conversions (default 72)")
    p.add_argument("--start", help="first hour of conversions (default: 'hours' hours before the current hour)")
    p.add_argument("--clicks", type=int, help="total clicks (default from --scale)")
    p.add_argument("--conversions", type=int, help="total conversions (default from --scale)")
    p.add_argument("--models", default="all", choices=["all", "main6", "none"])
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("demo", help="(re)create the embedded demo database, seed it, materialise its last 72 hours")
    p.add_argument("--seed", type=int, default=202)
    p.add_argument("--scale", type=float, default=1.0)
    p.set_defaults(func=cmd_demo)
