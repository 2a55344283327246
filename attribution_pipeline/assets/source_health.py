"""``prosper202_database.source_health``: ``attribution doctor``'s findings as an asset check ops
see in the UI (D28).

``prosper202_database`` is an AssetSpec: Prosper202's MySQL database, which the pipeline reads and
writes but does not materialise. Its one check, unpartitioned, runs ``storage.doctor_checks.
diagnose`` (the same findings as ``attribution doctor``): red (ERROR) when a table or column is
missing or the server is too old, red (WARN) on warnings (a missing index, several default models,
``max_allowed_packet`` under 32 MiB, a buffer pool smaller than a day of attribution rows, a stale
cron stamp), green otherwise. Its metadata lists every finding with its fix. Daily at 04:20 UTC
(``attribution_source_health_daily``), or *Execute* in the UI; never part of the hourly job.
"""

import dagster as dg

from attribution_pipeline.core.health_findings import ERROR, WARN, problems, worst
from attribution_pipeline.logs import log_event, stdlib_logger
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.doctor_checks import diagnose

DATABASE_KEY = dg.AssetKey("prosper202_database")
HEALTH_CHECK = "source_health"
HEALTH_JOB = "attribution_source_health"

prosper202_database = dg.AssetSpec(
    DATABASE_KEY,
    group_name="health",
    description="Prosper202's MySQL database: the source tables the pipeline reads and the attribution tables it "
    "writes. Not materialised here; its source_health check runs `attribution doctor`'s checks.",
)


def health_result(findings, logger=None) -> dg.AssetCheckResult:
    """The check's result for doctor's ``findings``: passed when there is no warning or error."""
    bad = problems(findings)
    level = worst(findings)
    log_event(logger or stdlib_logger, "check_evaluated", level="info" if not bad else "warning", stage="checks",
              check=HEALTH_CHECK, passed=not bad, problems=len(bad))
    return dg.AssetCheckResult(
        check_name=HEALTH_CHECK,
        asset_key=DATABASE_KEY,
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR if level == ERROR else dg.AssetCheckSeverity.WARN,
        description=("healthy" if not bad else "; ".join(f"{f.name}: {f.message}" for f in bad[:3])
                     + (" ..." if len(bad) > 3 else "")),
        metadata={
            "errors": sum(f.severity == ERROR for f in findings),
            "warnings": sum(f.severity == WARN for f in findings),
            "problems": dg.MetadataValue.json([f.as_dict() for f in bad[:100]]),
            "findings": dg.MetadataValue.json([f.as_dict() for f in findings[:200]]),
        },
    )


@dg.asset_check(
    asset=DATABASE_KEY,
    name=HEALTH_CHECK,
    description="`attribution doctor` in the UI: required tables, columns and indexes (the runbook's and the "
    "scaling note's), at most one default model per user, max_allowed_packet >= 32 MiB, the buffer pool against a "
    "day of snapshots and touchpoints, the server version, 202_cronjob_logs id 2 recent, partitioning (info). "
    "Red: read `problems` in the metadata; each names its fix.",
    metadata={"severity": "ERROR on errors, WARN on warnings"},
)
def database_source_health(context: dg.AssetCheckExecutionContext, db: dg.ResourceParam[Database]):
    return health_result(diagnose(db, logger=context.log), context.log)


source_health_job = dg.define_asset_job(
    HEALTH_JOB, selection=dg.AssetSelection.checks(dg.AssetCheckKey(DATABASE_KEY, HEALTH_CHECK)),
    description="`attribution doctor`'s checks (prosper202_database.source_health), on their own.",
)

source_health_schedule = dg.ScheduleDefinition(
    name="attribution_source_health_daily", job=source_health_job, cron_schedule="20 4 * * *",
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 04:20 UTC: `attribution doctor`'s checks as the source_health asset check.",
)
