"""``attribution gaps``: the whole-history gap scan, on demand (the daily schedule runs the same)."""

from attribution_pipeline.cli.common import EXIT_OK, EXIT_PARTIAL, db_arg, fail
from attribution_pipeline.cli.jobrun import instance_for
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.settings import Settings


def cmd_gaps(args, settings: Settings) -> int:
    """Run the ``attribution_gap_scan`` job in-process (recorded in ``DAGSTER_HOME``'s instance when
    set, so the check shows in the UI) and print its findings. Exit 0: no gaps; 2: gaps found."""
    from attribution_pipeline.assets.gaps import GAP_JOB, GAPS_CHECK

    job = build_definitions(settings).resolve_job_def(GAP_JOB)
    with instance_for(settings, dry_run=False) as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    evaluation = next((e.event_specific_data for e in result.all_events
                       if e.event_type_value == "ASSET_CHECK_EVALUATION"
                       and e.event_specific_data.check_name == GAPS_CHECK), None)
    if evaluation is None:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        message = failure.step_failure_data.error.message.strip() if failure else "the scan did not run"
        return fail(f"gap scan failed: {(message.splitlines() or [''])[0]}")
    meta = evaluation.metadata
    print(f"gap scan {meta['first_hour'].value} .. {meta['last_hour'].value} UTC")
    for line in meta["findings"].value:
        print(f"  {line}")
    if evaluation.passed:
        print("no gaps")
        return EXIT_OK
    print(f"gaps found: {meta['user_hours_without_snapshots'].value} user-hour(s) without snapshots, "
          f"{meta['hours_without_exports'].value} hour(s) without Parquet files, "
          f"{len(meta['dead_runs_marked_failed'].value)} dead run(s) marked failed")
    return EXIT_PARTIAL


def add_subcommands(sub) -> None:
    p = sub.add_parser("gaps", help="scan the whole history for hours without rows or files, and dead runs")
    db_arg(p)
    p.set_defaults(func=cmd_gaps)
