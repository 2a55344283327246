"""``attribution rebuild``: recompute and rewrite whole UTC hours, like ``attribution-rebuild.php``."""

import time

from attribution_pipeline.cli.common import db_arg, fail
from attribution_pipeline.cli.jobrun import failed_check_lines, model_names, run_job
from attribution_pipeline.core.hours import hour_key, parse_time, select_hours
from attribution_pipeline.core.model_rules import parse_model_row
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.errors import AttributionError, ModelSelectionError, UnknownUserError
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import prosper_reads
from attribution_pipeline.storage.database import Database


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


def print_summary(report: dict, names: dict[int, str]) -> None:
    """The run's report as the operator reads it: rows written, skipped models, held groups."""
    print(f"run {report['run_id']}: {report['first_hour']} .. {report['last_hour']} UTC "
          f"({report['hours']} hour{'s' if report['hours'] != 1 else ''})")
    print(f"  conversions: {report['conversions']}")
    if report["dry_run"]:
        counts = report.get("comparison_counts", {})
        for row in report.get("comparison", []):
            name = names.get(row["model_id"], "")
            print(f"  user {row['user_id']} model {row['model_id']} {name} {row['hour']}: {row['status']}")
        print("  dry run, nothing written: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no owned rows"))
    else:
        print(f"  rows written: {report['snapshots_written']} snapshots, {report['touchpoints_written']} touchpoints "
              f"(replaced {report['snapshots_deleted']} snapshots, {report['touchpoints_deleted']} touchpoints)")
        for model_id, counts in report["rows_by_model"].items():
            name = names.get(int(model_id), "")
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
            name = names.get(h["model_id"], "")
            print(f"    model {h['model_id']} {name} user {h['user_id']} {h['hour']}: {h['reason']}")
    else:
        print("  held groups: none")
    for chunk in report.get("rolled_back_chunks", []):
        print(f"  rolled back {chunk['first_hour']} .. {chunk['last_hour']}: {chunk['reason']}")


def cmd_rebuild(args, settings: Settings) -> int:
    db = Database.from_settings(settings)
    try:
        now = int(time.time())
        start, end = parse_time(args.start), parse_time(args.end)
        selection = select_hours(start, end, now, settings.first_hour)
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
                             models=models, dry_run=args.dry_run, verbose=args.verbose)
    if report is None or not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        detail = failure.step_failure_data.error.message.strip() if failure and failure.step_failure_data.error else ""
        if report:
            print_summary(report, model_names(engine, report))
        return fail(f"nothing was committed. {detail.splitlines()[0] if detail else ''}".strip())
    print_summary(report, model_names(engine, report))
    checks = failed_check_lines(result)
    print(f"  failed checks ({len(checks)}):" if checks else "  failed checks: none")
    for line in checks:
        print(f"    {line}")
    code = int(report["outcome"])
    print({0: "outcome 0: everything selected was written and every check passed",
           2: "outcome 2: committed, but some models were skipped or some groups were held back (listed above)",
           1: "outcome 1: nothing was committed"}[code] if not args.dry_run else f"dry run outcome {code}")
    return code


def add_subcommands(sub) -> None:
    p = sub.add_parser("rebuild", help="recompute and rewrite whole UTC hours (like attribution-rebuild.php)")
    db_arg(p)
    p.add_argument("--start", required=True, help="epoch seconds or ISO-8601 (UTC when no offset); inclusive")
    p.add_argument("--end", required=True, help="epoch seconds or ISO-8601; exclusive")
    p.add_argument("--user", type=int, action="extend", nargs="+", help="only these users (repeatable)")
    p.add_argument("--model", type=int, action="extend", nargs="+", help="only these models (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="compute and compare with the stored rows, write nothing")
    p.add_argument("--verbose", action="store_true", help="print the run's structured log lines")
    p.set_defaults(func=cmd_rebuild)
