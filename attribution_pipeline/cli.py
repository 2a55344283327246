"""The ``attribution`` command line.

``attribution rebuild`` is the replacement for ``php 202-cronjobs/attribution-rebuild.php``: it
runs the same Dagster job the schedule runs, in-process, as ONE run over the selected hours
(recorded in the Dagster instance when ``DAGSTER_HOME`` is set, so it shows in the UI).

Exit codes (D19): 0 everything selected was written and every check passed; 2 the run committed
but some models were skipped or some (user, model, hour) groups were held back; 1 nothing was
committed (a named error is printed).
"""

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from datetime import datetime, timezone
from contextlib import nullcontext
from pathlib import Path

from attribution_pipeline.cli_analytics import add_subcommands
from attribution_pipeline.db import attribution_home, make_engine, resolve_db_url, safe_url
from attribution_pipeline.errors import AttributionError, ModelSelectionError, UnknownUserError
from attribution_pipeline.partitions import hour_key, key_hour, parse_time, partitions_start, range_tags, select_hours

EXIT_OK, EXIT_FATAL, EXIT_PARTIAL = 0, 1, 2
REPO_ROOT = Path(__file__).resolve().parents[1]


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FATAL


def _use_db(url: str | None) -> str:
    """Resolve the database URL and hand it to Dagster through the environment (never run config)."""
    resolved = resolve_db_url(url)
    os.environ["ATTRIBUTION_DB_URL"] = resolved
    return resolved


# ------------------------------------------------------------------------------------------
# rebuild
# ------------------------------------------------------------------------------------------


def validate_scope(engine, users: list[int], models: list[int]) -> None:
    """Named errors before anything runs: unknown or deleted users (D16); models that are
    unknown, inactive, invalid or not owned by a selected user (D9)."""
    from attribution_pipeline import extract
    from attribution_pipeline.models import parse_model_row

    with engine.connect() as conn:
        if users:
            found = extract.user_rows(conn, users)
            unknown = [u for u in users if u not in found]
            deleted = [u for u in users if found.get(u) == 1]
            if unknown:
                raise UnknownUserError(f"user(s) {unknown} do not exist in 202_users")
            if deleted:
                raise UnknownUserError(f"user(s) {deleted} are deleted (user_deleted = 1); they are never processed")
        if models:
            rows = {int(r["model_id"]): r for r in extract.model_rows_by_id(conn, models)}
            for model_id in models:
                row = rows.get(model_id)
                if row is None:
                    raise ModelSelectionError(f"model {model_id} does not exist in 202_attribution_models")
                if int(row["is_active"]) != 1:
                    raise ModelSelectionError(f"model {model_id} ({row['model_slug']}) is inactive")
                spec = parse_model_row(row)
                if not spec.is_valid:
                    raise ModelSelectionError(f"model {model_id} ({row['model_slug']}) is invalid: {spec.error}")
                if users and spec.user_id not in users:
                    raise ModelSelectionError(f"model {model_id} belongs to user {spec.user_id}, who is not selected")
                owner = extract.user_rows(conn, [spec.user_id]).get(spec.user_id)
                if owner != 0:
                    raise ModelSelectionError(f"model {model_id} belongs to user {spec.user_id}, who is deleted or missing")


def _instance(dry_run: bool):
    import dagster as dg

    if dry_run or not os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.ephemeral()
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def run_job(first_hour: int, last_hour: int, *, users=(), models=(), dry_run=False, report_path=None,
            source="cli", defs=None, instance=None, verbose=False):
    """Execute the attribution job in-process as one run over ``[first_hour, last_hour]``.

    Returns (dagster result, report dict or None).
    """
    if defs is None:
        from attribution_pipeline.definitions import defs

    report_path = report_path or str(attribution_home() / "reports" / f"{source}-{uuid.uuid4().hex}.json")
    run_config = {
        # Dagster's console logger prints every event at DEBUG; the CLI prints its own summary.
        # Events (including our JSON log lines) are stored in the instance whatever this level.
        "loggers": {"console": {"config": {"log_level": "INFO" if verbose else "WARNING"}}},
        "resources": {
            "scope": {"config": {"users": list(users), "models": list(models), "dry_run": dry_run,
                                 "report_path": report_path}}
        }
    }
    job = defs.resolve_job_def("attribution_job")
    with (nullcontext(instance) if instance is not None else _instance(dry_run)) as instance:
        result = job.execute_in_process(
            run_config=run_config,
            instance=instance,
            tags={**range_tags(first_hour, last_hour), "attribution/source": source},
            raise_on_error=False,
        )
    report = json.loads(Path(report_path).read_text()) if Path(report_path).exists() else None
    return result, report


def failed_checks(result) -> list[str]:
    """Failed asset checks of a run, one line each (severity, asset, check, description)."""
    lines = []
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        data = event.event_specific_data
        if data.passed or getattr(data, "partition", None):
            continue
        severity = getattr(data.severity, "value", data.severity)
        text = (data.description or "").splitlines()[0][:200] if data.description else ""
        lines.append(f"{severity} {data.asset_key.to_user_string()}.{data.check_name}: {text}")
    return sorted(set(lines))


def print_summary(report: dict, model_names: dict[int, str]) -> None:
    print(f"run {report['run_id']}: {report['first_hour']} .. {report['last_hour']} UTC "
          f"({report['hours']} hour{'s' if report['hours'] != 1 else ''})")
    print(f"  conversions: {report['conversions']}")
    if report["dry_run"]:
        counts = report.get("comparison_counts", {})
        for row in report.get("comparison", []):
            name = model_names.get(row["model_id"], "")
            print(f"  user {row['user_id']} model {row['model_id']} {name} {row['hour']}: {row['status']}")
        print("  dry run, nothing written: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no owned rows"))
    else:
        print(f"  rows written: {report['snapshots_written']} snapshots, {report['touchpoints_written']} touchpoints "
              f"(replaced {report['snapshots_deleted']} snapshots, {report['touchpoints_deleted']} touchpoints)")
        for model_id, counts in report["rows_by_model"].items():
            name = model_names.get(int(model_id), "")
            print(f"    model {model_id} {name}: {counts['snapshots']} snapshots, {counts['touchpoints']} touchpoints")
    if report["skipped_models"]:
        print(f"  skipped models ({len(report['skipped_models'])}):")
        for m in report["skipped_models"]:
            print(f"    model {m['model_id']} ({m['slug']}) user {m['user_id']}: {m['reason']}")
    else:
        print("  skipped models: none")
    if report["held_groups"]:
        print(f"  held groups ({report['held_groups']}), their stored rows were kept:")
        for h in report["held"]:
            name = model_names.get(h["model_id"], "")
            print(f"    model {h['model_id']} {name} user {h['user_id']} {h['hour']}: {h['reason']}")
    else:
        print("  held groups: none")
    for chunk in report.get("rolled_back_chunks", []):
        print(f"  rolled back {chunk['first_hour']} .. {chunk['last_hour']}: {chunk['reason']}")


def _model_names(engine, report: dict) -> dict[int, str]:
    from attribution_pipeline import extract

    ids = {int(k) for k in report.get("rows_by_model", {})} | {h["model_id"] for h in report.get("held", [])}
    ids |= {r["model_id"] for r in report.get("comparison", [])}
    if not ids:
        return {}
    with engine.connect() as conn:
        return {int(r["model_id"]): f"({r['model_slug']})" for r in extract.model_rows_by_id(conn, sorted(ids))}


def cmd_rebuild(args) -> int:
    url = _use_db(args.db_url)
    try:
        now = int(time.time())
        start, end = parse_time(args.start), parse_time(args.end)
        selection = select_hours(start, end, now, key_hour(partitions_start()))
        engine = make_engine(url)
        users = sorted(set(args.user or []))
        models = sorted(set(args.model or []))
        validate_scope(engine, users, models)
    except AttributionError as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    if selection.incomplete:
        print(f"notice: {len(selection.incomplete)} hour(s) from {hour_key(selection.incomplete[0])} are not complete "
              "yet and were left out")
    print(f"database: {safe_url(url)}")
    result, report = run_job(selection.first, selection.last, users=users, models=models, dry_run=args.dry_run,
                             verbose=args.verbose)
    if report is None or not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        detail = failure.step_failure_data.error.message.strip() if failure and failure.step_failure_data.error else ""
        if report:
            print_summary(report, _model_names(engine, report))
        return _fail(f"nothing was committed. {detail.splitlines()[0] if detail else ''}".strip())
    print_summary(report, _model_names(engine, report))
    checks = failed_checks(result)
    print(f"  failed checks ({len(checks)}):" if checks else "  failed checks: none")
    for line in checks:
        print(f"    {line}")
    code = int(report["outcome"])
    print({0: "outcome 0: everything selected was written and every check passed",
           2: "outcome 2: committed, but some models were skipped or some groups were held back (listed above)",
           1: "outcome 1: nothing was committed"}[code] if not args.dry_run else f"dry run outcome {code}")
    return code


# ------------------------------------------------------------------------------------------
# init-db, seed, demo
# ------------------------------------------------------------------------------------------


def cmd_init_db(args) -> int:
    from attribution_pipeline import schema

    url = _use_db(args.db_url)
    created = schema.create_missing(make_engine(url))
    print(f"database: {safe_url(url)}")
    print(f"created {len(created)} table(s): {', '.join(created)}" if created else "every table already exists; nothing changed")
    return EXIT_OK


def _generator_config(args, start: int):
    from attribution_pipeline.generator import GeneratorConfig

    return GeneratorConfig(seed=args.seed, start=start, hours=args.hours, scale=args.scale,
                           clicks=args.clicks, conversions=args.conversions, models=args.models)


def cmd_seed(args) -> int:
    from attribution_pipeline.generator import seed

    url = _use_db(args.db_url)
    now = int(time.time())
    start = parse_time(args.start) if args.start else now - now % 3600 - args.hours * 3600
    counts = seed(make_engine(url), _generator_config(args, start))
    print(f"database: {safe_url(url)}")
    print(f"seeded {hour_key(start)} .. {hour_key(start + (args.hours - 1) * 3600)} UTC:")
    for table, n in counts.items():
        print(f"  {table}: {n} rows")
    return EXIT_OK


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME``, else ``$ATTRIBUTION_HOME/dagster`` with the repository's dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or attribution_home() / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    template = REPO_ROOT / "dagster.yaml"
    if template.exists() and not (home / "dagster.yaml").exists():
        shutil.copy(template, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


DEMO_HOURS = 72


def cmd_demo(args) -> int:
    from attribution_pipeline import schema
    from attribution_pipeline.db import default_db_url
    from attribution_pipeline.generator import GeneratorConfig, seed

    started = time.time()
    home = attribution_home()
    home.mkdir(parents=True, exist_ok=True)
    for leftover in ("attribution.sqlite", "attribution.sqlite-wal", "attribution.sqlite-shm"):
        (home / leftover).unlink(missing_ok=True)
    for folder in ("frames", "reports", "exports"):
        shutil.rmtree(home / folder, ignore_errors=True)
    url = default_db_url()
    os.environ["ATTRIBUTION_DB_URL"] = url
    dagster_home = ensure_dagster_home()
    engine = make_engine(url)
    schema.create_missing(engine)
    now = int(time.time())
    last = now - now % 3600 - 3600
    first = last - (DEMO_HOURS - 1) * 3600
    counts = seed(engine, GeneratorConfig(seed=args.seed, start=first, hours=DEMO_HOURS, scale=args.scale))
    print(f"demo database: {url}")
    print("seeded: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    result, report = run_job(first, last, source="demo")
    if report is None or not result.success:
        return _fail("the demo run failed; see the Dagster run in the UI")
    print_summary(report, _model_names(engine, report))
    print(f"\ndone in {time.time() - started:.1f}s. Next:")
    print(f"  - open the UI:  DAGSTER_HOME={dagster_home} ATTRIBUTION_HOME={home} .venv/bin/dagster dev")
    print("    (Assets > attribution: the hours are materialised, with their checks and metadata)")
    print(f"  - inspect the rows Prosper202's dashboard reads:  sqlite3 {home / 'attribution.sqlite'} "
          "'select model_id, date_hour, attributed_clicks, attributed_revenue from \"202_attribution_snapshots\" limit 10'")
    day_start = datetime.fromtimestamp(last - 23 * 3600, tz=timezone.utc).strftime("%Y-%m-%dT%H:00")
    day_end = datetime.fromtimestamp(last + 3600, tz=timezone.utc).strftime("%Y-%m-%dT%H:00")
    print(f"  - rebuild the last 24 hours like the PHP cron (outcome 2: the demo seeds invalid models on purpose):\n"
          f"      ATTRIBUTION_HOME={home} .venv/bin/attribution rebuild --start {day_start} --end {day_end} --dry-run")
    print(f"  - query the Parquet exports with DuckDB (README, \"Exports for analysts\"), compare the models:\n"
          f"      ATTRIBUTION_HOME={home} .venv/bin/attribution query \"SELECT date, model_name, sum(attributed_revenue) "
          f"AS revenue_usd FROM snapshots GROUP BY ALL ORDER BY ALL\"\n"
          f"      ATTRIBUTION_HOME={home} .venv/bin/attribution compare --start {day_start} --end {day_end}")
    return EXIT_OK if report["outcome"] in (0, 2) else EXIT_FATAL


# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attribution", description="Prosper202 attribution pipeline")
    sub = parser.add_subparsers(dest="command", required=True)

    def db_arg(p):
        p.add_argument("--db-url", help="SQLAlchemy URL (default: $ATTRIBUTION_DB_URL, else the embedded SQLite "
                       "database under $ATTRIBUTION_HOME or ./.attribution)")

    p = sub.add_parser("rebuild", help="recompute and rewrite whole UTC hours (like attribution-rebuild.php)")
    db_arg(p)
    p.add_argument("--start", required=True, help="epoch seconds or ISO-8601 (UTC when no offset); inclusive")
    p.add_argument("--end", required=True, help="epoch seconds or ISO-8601; exclusive")
    p.add_argument("--user", type=int, action="extend", nargs="+", help="only these users (repeatable)")
    p.add_argument("--model", type=int, action="extend", nargs="+", help="only these models (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="compute and compare with the stored rows, write nothing")
    p.add_argument("--verbose", action="store_true", help="print the run's structured log lines")
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser("init-db", help="create the Prosper202 tables that are missing (never alters existing ones)")
    db_arg(p)
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
    add_subcommands(sub)  # query, duckdb, compare (Parquet exports for analysts)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    import dagster as dg

    # BackfillPolicy is a Dagster beta feature we use on purpose (README, "Warnings").
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
