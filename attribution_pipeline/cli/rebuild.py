"""``attribution rebuild``: recompute and rewrite whole UTC hours, like ``attribution-rebuild.php``."""

import time

import dagster as dg

from attribution_pipeline.cli import health
from attribution_pipeline.cli.common import db_arg, fail, window_args
from attribution_pipeline.assets.hourly import RANGE_END_TAG, RANGE_START_TAG
from attribution_pipeline.assets.writeback import RESUME_TAG
from attribution_pipeline.cli.jobrun import instance_for, run_job
from attribution_pipeline.cli.outcome import report_outcome
from attribution_pipeline.core.hours import hour_key, key_hour, parse_time, select_hours
from attribution_pipeline.core.model_rules import parse_model_row
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.errors import AttributionError, ModelSelectionError, UnknownUserError
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import prosper_reads
from attribution_pipeline.storage.database import Database, preflight


def validate_scope(engine, users: list[int], models: list[int]) -> None:
    """Named errors before anything runs: unknown or deleted users (D16); models that are
    unknown, inactive, invalid or not owned by a selected user (D9)."""
    with engine.connect() as conn:
        if users:
            found = prosper_reads.user_rows(conn, users)
            unknown = [u for u in users if u not in found]
            deleted = [u for u in users if found.get(u) == 1]
            if unknown:
                raise UnknownUserError(f"user(s) {unknown} do not exist in 202_users")
            if deleted:
                raise UnknownUserError(f"user(s) {deleted} are deleted (user_deleted = 1); they are never processed")
        if models:
            rows = {int(r["model_id"]): r for r in prosper_reads.model_rows_by_id(conn, models)}
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
                owner = prosper_reads.user_rows(conn, [spec.user_id]).get(spec.user_id)
                if owner != 0:
                    raise ModelSelectionError(f"model {model_id} belongs to user {spec.user_id}, who is deleted or missing")


def cmd_rebuild(args, settings: Settings) -> int:
    db = Database.from_settings(settings)
    try:
        now = int(time.time())
        start, end = parse_time(args.start), parse_time(args.end)
        selection = select_hours(start, end, now, settings.first_hour)  # bounded times (TimeRangeError)
        preflight(db)  # one attempt, no retries: a wrong password or host fails at once, named
        engine = db.engine()
        users = sorted(set(args.user or []))
        models = sorted(set(args.model or []))
        validate_scope(engine, users, models)
    except AttributionError as exc:
        return fail(f"{type(exc).__name__}: {exc}")
    if selection.incomplete:
        print(f"notice: {len(selection.incomplete)} hour(s) from {hour_key(selection.incomplete[0])} are not complete "
              "yet and were left out")
    print(f"database: {db.display_url()}")
    result, report = run_job(build_definitions(settings), settings, selection.first, selection.last, users=users,
                             models=models, dry_run=args.dry_run, full=args.full, verbose=args.verbose)
    return report_outcome(result, report, engine)


def add_subcommands(sub) -> None:
    p = sub.add_parser("rebuild", help="recompute and rewrite whole UTC hours (like attribution-rebuild.php)")
    db_arg(p)
    window_args(p)
    p.add_argument("--model", type=int, action="extend", nargs="+", help="only these models (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="compute and compare with the stored rows, write nothing")
    p.add_argument("--full", action="store_true",
                   help="recompute and rewrite every hour, even those whose inputs did not change (D22)")
    p.add_argument("--verbose", action="store_true", help="print the run's structured log lines")
    p.set_defaults(func=cmd_rebuild)
    add_resume(sub)
    health.add_subcommands(sub)


def cmd_resume(args, settings: Settings) -> int:
    """Run a failed run's hours and scope again; the chunks it (or a run it resumed) committed are
    not written again (D19). Needs the Dagster instance the run was recorded in (``DAGSTER_HOME``)."""
    if settings.dagster_home is None:
        return fail("DAGSTER_HOME is not set: runs are recorded only in a persistent Dagster instance")
    instance = instance_for(settings, dry_run=False)
    parent = instance.get_run_by_id(args.run_id)
    if parent is None:
        return fail(f"run {args.run_id} is not in the Dagster instance at {settings.dagster_home}")
    if parent.status != dg.DagsterRunStatus.FAILURE:
        return fail(f"run {args.run_id} is {parent.status.value}, not FAILURE: only a failed run is resumed")
    first_key, last_key = parent.tags.get(RANGE_START_TAG), parent.tags.get(RANGE_END_TAG)
    if not first_key or not last_key:
        return fail(f"run {args.run_id} has no hour range tags: re-execute it from the Dagster UI instead")
    scope = ((parent.run_config or {}).get("resources", {}).get("scope", {}).get("config", {}))
    if scope.get("dry_run"):
        return fail(f"run {args.run_id} was a dry run: nothing to resume")
    db = Database.from_settings(settings)
    print(f"database: {db.display_url()}")
    print(f"resuming run {args.run_id}: {first_key} .. {last_key}")
    result, report = run_job(build_definitions(settings), settings, key_hour(first_key), key_hour(last_key),
                             users=scope.get("users", []), models=scope.get("models", []), instance=instance,
                             full=bool(scope.get("full", False)),
                             verbose=args.verbose, tags={RESUME_TAG: args.run_id}, source="resume")
    return report_outcome(result, report, db.engine())


def add_resume(sub) -> None:
    p = sub.add_parser("resume", help="run a failed run again, skipping the chunks it committed")
    db_arg(p)
    p.add_argument("run_id", help="the failed run's id (printed by rebuild; Dagster UI, Runs)")
    p.add_argument("--verbose", action="store_true", help="print the run's structured log lines")
    p.set_defaults(func=cmd_resume)
