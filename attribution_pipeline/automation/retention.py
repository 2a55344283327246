"""The daily retention job and its schedule (D27): on by default, deleting nothing until a window
is configured (``ATTRIBUTION_RETENTION_DAYS`` or a user's ``attribution_retention`` row); until
then each run only reports, as run metadata, what a 30-day window would remove."""

import dagster as dg

from attribution_pipeline.exports.data_lifecycle import run_retention
from attribution_pipeline.logs import log_event
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage.database import Database

RETENTION_JOB = "attribution_retention_job"
RETENTION_SCHEDULE = "attribution_retention"


@dg.op(description="Per user, delete every snapshot, touchpoint, journey, source-state row, export row and "
       "file, Parquet export row and frame older than the user's retention window (D27); report only "
       "where no window is configured.")
def retention_purge(context: dg.OpExecutionContext, db: dg.ResourceParam[Database],
                    settings: dg.ResourceParam[Settings]) -> dg.Output:
    outcome = run_retention(db, settings, logger=context.log)
    for line in outcome.lines()[:200]:
        log_event(context.log, "retention_user", line=line)
    meta = outcome.metadata()
    return dg.Output(meta, metadata={
        "users_purged": meta["users_purged"],
        "removed": dg.MetadataValue.json(meta["removed"]),
        "not_configured_would_remove": dg.MetadataValue.json(meta["not_configured_would_remove"]),
        "parquet": dg.MetadataValue.json(meta["parquet"]),
        "frame_files": meta["frame_files"],
        "windows": dg.MetadataValue.json(dict(list(meta["windows"].items())[:500])),
    })


@dg.job(name=RETENTION_JOB, description="Retention (D27): delete what is older than each user's window.")
def retention_job():
    retention_purge()


retention_schedule = dg.ScheduleDefinition(
    name=RETENTION_SCHEDULE, job=retention_job, cron_schedule="30 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:30 UTC: retention (D27). Deletes nothing until a window is configured; "
    "until then it reports what a 30-day window would remove.",
)
