"""The hourly schedule: what Prosper202's attribution cron did, without its defects."""

import dagster as dg

from attribution_pipeline.automation.run_priority import priority_tags
from attribution_pipeline.assets.hourly import range_tags
from attribution_pipeline.automation.jobs import attribution_job
from attribution_pipeline.core.hours import HOUR, floor_hour
from attribution_pipeline.settings import Settings

TRAILING_HOURS = 24
#: Run priority of the schedule's runs: the queued run coordinator starts them before queued
#: backfill ranges (priority 0) when a slot or a MySQL-writes pool slot frees up (D29).
SCHEDULE_PRIORITY = priority_tags("schedule")


def trailing_window(scheduled_epoch: int, hours: int = TRAILING_HOURS) -> tuple[int, int]:
    """The ``hours`` complete UTC hours before ``scheduled_epoch`` (first, last hour starts)."""
    last = floor_hour(scheduled_epoch) - HOUR
    return last - (hours - 1) * HOUR, last


@dg.schedule(
    cron_schedule="15 * * * *",
    job=attribution_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At :15 each hour, one run over the trailing 24 complete hours, as the PHP cron does, "
    "so late soft deletes and payout or cost edits are picked up.",
)
def hourly_attribution(context: dg.ScheduleEvaluationContext, settings: dg.ResourceParam[Settings]):
    first, last = trailing_window(int(context.scheduled_execution_time.timestamp()))
    if last < settings.first_hour:
        return dg.SkipReason(f"the partitions start at {settings.partitions_start}, after the last complete hour")
    return dg.RunRequest(run_key=f"hourly-{last}",
                         tags={**range_tags(max(first, settings.first_hour), last), **SCHEDULE_PRIORITY})
