"""The on-demand model comparison: attributed revenue per account (or another scope type, D31)
under every active model."""

import time

import dagster as dg

from attribution_pipeline.analytics.comparison import compare
from attribution_pipeline.analytics.render import render_chart, render_markdown, render_text
from attribution_pipeline.core.hours import HOUR, floor_hour, hour_key, parse_time
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage.database import Database


class ModelComparisonConfig(dg.Config):
    """The window to compare (epoch seconds or ISO-8601, UTC without an offset; ``end`` exclusive).
    Empty: the last 24 complete UTC hours."""

    start: str = ""
    end: str = ""
    users: list[int] = []
    by: str = "account"  # the scope type compared (D31): account, traffic_source, campaign, advertiser, landing_page


@dg.asset(
    group_name="analytics",  # on demand: selecting the "attribution" group for a backfill leaves it out
    deps=["attribution_writeback"],
    kinds={"polars", "matplotlib"},
)
def model_comparison(context: dg.AssetExecutionContext, config: ModelComparisonConfig,
                     db: dg.ResourceParam[Database], settings: dg.ResourceParam[Settings]) -> dg.MaterializeResult:
    """On demand (not in the hourly job): attributed revenue (USD) per value of the scope type
    ``by`` of its config (default ``account``, the ppc account) under every active model side by side, with totals and the spread between models,
    for the window of its config, read from the stored rows; the table is in the metadata and a
    grouped bar chart PNG is written next to the exports."""
    now = int(time.time())
    end = parse_time(config.end) if config.end else floor_hour(now)
    start = parse_time(config.start) if config.start else end - 24 * HOUR
    result = compare(db.engine(), start, end, users=config.users or None, by=config.by)
    name = f"model_comparison_{hour_key(result.first_hour)}_{hour_key(result.last_hour)}.png".replace(":", "")
    chart = settings.export_path / "comparison" / name
    render_chart(result, chart)
    context.log.info("\n" + render_text(result))
    return dg.MaterializeResult(
        metadata={
            "table": dg.MetadataValue.md(render_markdown(result)),
            "chart": dg.MetadataValue.path(str(chart)),
            "window": f"{hour_key(result.first_hour)} .. {hour_key(result.last_hour)} UTC",
            "hours": result.hours,
            "models": result.model_count,
            "scope_type": result.by,
            "scope_values": result.source_count,
            "total_revenue_usd": float(result.grand_total),
            "max_spread_usd": float(result.max_spread),
        }
    )
