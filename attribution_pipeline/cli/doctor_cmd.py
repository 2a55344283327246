"""``attribution doctor``: the runbook's schema checks and Prosper202's System Checks in one
command (D28). Exit 0 healthy, 2 warnings, 1 errors; each finding is printed with its fix. The
``source_health`` asset check shows the same findings in the Dagster UI."""

from attribution_pipeline.cli.common import db_arg, fail
from attribution_pipeline.core.health_findings import ERROR, WARN, exit_code
from attribution_pipeline.errors import AttributionError
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage.database import Database, preflight
from attribution_pipeline.storage.doctor_checks import CRON_MAX_AGE_SECONDS, diagnose


def cmd_doctor(args, settings: Settings) -> int:
    db = Database.from_settings(settings)
    try:
        preflight(db)
    except AttributionError as exc:
        return fail(f"{type(exc).__name__}: {exc}")
    print(f"database: {db.display_url()}")
    findings = diagnose(db, cron_max_age=int(args.cron_max_age_hours * 3600))
    for finding in findings:
        print(finding.line())
    errors = sum(f.severity == ERROR for f in findings)
    warnings = sum(f.severity == WARN for f in findings)
    code = exit_code(findings)
    print(f"{errors} error(s), {warnings} warning(s): "
          + ("healthy" if code == 0 else "fix the errors first" if errors else "see the fixes above"))
    return code


def add_subcommands(sub) -> None:
    p = sub.add_parser("doctor", help="check the database: tables, columns, indexes, default models, server "
                       "settings, the attribution cron stamp (exit 0 healthy, 2 warnings, 1 errors)")
    db_arg(p)
    p.add_argument("--cron-max-age-hours", type=float, default=CRON_MAX_AGE_SECONDS / 3600,
                   help="202_cronjob_logs id 2 older than this is a warning (default 2)")
    p.set_defaults(func=cmd_doctor)
