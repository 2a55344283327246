"""The hourly job and its schedule."""

import dagster as dg

from attribution_pipeline.assets.credits import credits, snapshots
from attribution_pipeline.assets.exports import attribution_exports
from attribution_pipeline.assets.extract import attribution_models, conversions
from attribution_pipeline.assets.journeys import journeys
from attribution_pipeline.assets.writeback import attribution_writeback
from attribution_pipeline.partitions import HOUR, floor_hour, key_hour, partitions_start, range_tags

PIPELINE_ASSETS = [attribution_models, conversions, journeys, credits, snapshots, attribution_writeback, attribution_exports]

attribution_job = dg.define_asset_job(
    "attribution_job",
    selection=dg.AssetSelection.assets(*PIPELINE_ASSETS),
    description="Extract conversions and clicks, build journeys, credit every active model, write "
    "Prosper202's snapshot and touchpoint tables back. One run covers any range of UTC hours.",
)

TRAILING_HOURS = 24


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
def hourly_attribution(context: dg.ScheduleEvaluationContext):
    first, last = trailing_window(int(context.scheduled_execution_time.timestamp()))
    start = key_hour(partitions_start())
    if last < start:
        return dg.SkipReason(f"the partitions start at {partitions_start()}, after the last complete hour")
    first = max(first, start)
    return dg.RunRequest(run_key=f"hourly-{last}", tags=range_tags(first, last))
