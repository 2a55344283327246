"""What a finished run tells the operator: its report, its failed checks and its exit code (D19).

The exit code and the last line always agree with what was committed and with the checks listed
above it: 0 everything selected was written (warnings about the source data may be listed: they
do not change the code); 2 something was committed but not everything (skipped models, held
groups, chunks that failed after others committed, or a failed ERROR check); 1 nothing was
committed, or the run failed before its write-back.
"""

from attribution_pipeline.cli.common import EXIT_FATAL, EXIT_OK, EXIT_PARTIAL, fail
from attribution_pipeline.cli.jobrun import failed_check_lines, model_names


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
        pairs = report.get("user_hours_recomputed", 0) + report.get("user_hours_skipped", 0)
        if pairs:  # incremental runs (D22)
            print(f"  recomputed: {report['user_hours_recomputed']} of {pairs} (user, hour) pair(s); "
                  f"{report['user_hours_skipped']} unchanged since written, left as stored "
                  f"({report.get('groups_unchanged', 0)} snapshot rows)")
        print(f"  rows written: {report['snapshots_written']} snapshots, {report['touchpoints_written']} touchpoints "
              f"(replaced {report['snapshots_deleted']} snapshots, {report['touchpoints_deleted']} touchpoints)"
              + (f"; {report['touchpoints_kept']} touchpoints of rewritten groups unchanged, left as stored"
                 if report.get("touchpoints_kept") else ""))
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
    _print_hours(report)


def _print_hours(report: dict) -> None:
    if report["dry_run"]:
        return
    resumed = f" ({report['chunks_resumed']} chunk(s) committed by the run it resumes)" if report.get("chunks_resumed") else ""
    committed = report.get("committed_hours", [])
    print("  committed hours: " + (", ".join(f"{a} .. {b}" for a, b in committed) or "none") + resumed)
    for chunk in report["uncommitted_hours"]:
        print(f"  not committed {chunk['first_hour']} .. {chunk['last_hour']}: {chunk['reason']}")
    if report.get("db_retries"):
        print(f"  database operations retried: {report['db_retries']}")


def step_failure(result) -> str:
    """The first failed step's error, one line."""
    failure = next((e for e in result.all_events if e.is_step_failure), None)
    detail = failure.step_failure_data.error.message.strip() if failure and failure.step_failure_data.error else ""
    return (detail.splitlines() or ["the run failed"])[0]


def exit_code(report: dict, success: bool, checks: list[str]) -> int:
    """D19's exit code of a run whose write-back wrote ``report``."""
    if report["dry_run"]:
        return int(report["outcome"])
    if report["outcome"] == EXIT_FATAL or not (report.get("committed_hours") or report.get("chunks_committed")):
        return EXIT_FATAL if (not success or report["outcome"] == EXIT_FATAL) else int(report["outcome"])
    if not success or any(line.startswith("ERROR ") for line in checks):
        return EXIT_PARTIAL
    return int(report["outcome"])


def outcome_line(code: int, report: dict, checks: list[str], success: bool) -> str:
    warnings = sum(line.startswith("WARN ") for line in checks)
    errors = len(checks) - warnings
    if report["dry_run"]:
        return f"dry run outcome {code}"
    if code == EXIT_OK:
        tail = ("every check passed" if not checks else
                f"{warnings} warning check(s) about the data are listed above; they do not change the exit code")
        return f"outcome 0: everything selected was written; {tail}"
    if code == EXIT_PARTIAL:
        reasons = []
        if not success or report.get("uncommitted_hours"):
            reasons.append("some hours were not committed (listed above): run them again, or `attribution resume "
                           f"{report['run_id']}`")
        if report["held_groups"] or report["skipped_models"]:
            reasons.append("some models were skipped or groups held back (listed above)")
        if errors:
            reasons.append(f"{errors} ERROR check(s) failed (listed above)")
        return "outcome 2: committed in part; " + "; ".join(reasons or ["see above"])
    return "outcome 1: nothing was committed"


def report_outcome(result, report: dict | None, engine) -> int:
    """Print what the run did and return its exit code."""
    checks = failed_check_lines(result)
    if report is None:  # the run failed before its write-back wrote a report: nothing was written
        for line in checks:
            print(f"    {line}")
        return fail(f"nothing was committed: {step_failure(result)}")
    try:
        names = model_names(engine, report)
    except Exception:  # noqa: BLE001 - names are cosmetic: the database may be the reason the run failed
        names = {}
    print_summary(report, names)
    print(f"  failed checks ({len(checks)}):" if checks else "  failed checks: none")
    for line in checks:
        print(f"    {line}")
    code = exit_code(report, result.success, checks)
    line = outcome_line(code, report, checks, result.success)
    if code == EXIT_FATAL:
        return fail(f"{line}: {step_failure(result)}" if not result.success else line)
    print(line)
    return code
