"""Analyst exports: the hourly Parquet export (in the hourly job) and the on-demand model comparison.

``attribution_exports`` runs after ``attribution_writeback`` on the same hourly partitions and
rewrites, for every hour of the run, one Parquet file per table from what MySQL holds after the
commit (``attribution_pipeline.exports``). ``model_comparison`` is not in the hourly job: it is
materialised on demand (UI or ``dagster asset materialize``) for a window given in its config.
"""

import time

import dagster as dg

from attribution_pipeline import analytics, exports
from attribution_pipeline.assets.common import hourly_asset, run_fields, run_hours, scope_users
from attribution_pipeline.assets.writeback import attribution_writeback
from attribution_pipeline.db import with_retries
from attribution_pipeline.frames import chunk_hours
from attribution_pipeline.logs import log_event
from attribution_pipeline.partitions import HOUR, floor_hour, hour_key, parse_time
from attribution_pipeline.resources import DatabaseResource, PipelineSettings, RunScope


@hourly_asset(
    deps=[attribution_writeback],
    kinds={"parquet", "duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            "export_reconciliation",
            asset="attribution_exports",
            description="Read back from the Parquet files after writing: every hour of the run has its three "
            "files, and its snapshots' rows, revenue and cost, and its touchpoints' revenue and cost shares, "
            "equal the global snapshots MySQL stores for the hour (exact DECIMAL(12,4) units). Red: analysts "
            "would see other totals than the dashboard; re-materialise the hours named.",
        )
    ],
)
def attribution_exports(
    context: dg.AssetExecutionContext, db: DatabaseResource, settings: PipelineSettings, scope: RunScope
) -> dg.MaterializeResult:
    """Hive-partitioned Parquet for analysts (DuckDB): ``snapshots``, ``touchpoints`` and
    ``journeys`` under ``$ATTRIBUTION_EXPORT_DIR/<table>/date=YYYY-MM-DD/hour=HH/part.parquet``,
    one file per table and hour, replaced atomically, built from every row stored for the hour
    after the write-back's commit (all users and models, so a ``--user`` run or an inactive model
    never truncates an hour). Money is DECIMAL; no personal data (README, "Exports for analysts")."""
    hours = run_hours(context)
    root = exports.export_root()
    if scope.dry_run:
        return dg.MaterializeResult(
            metadata={"dry_run": True, "files": 0, "hours": len(hours), "export_dir": dg.MetadataValue.path(str(root))},
            check_results=[dg.AssetCheckResult(check_name="export_reconciliation", passed=True,
                                               description="dry run: nothing exported")],
        )
    started = time.perf_counter()
    engine = db.engine()
    users = None if scope.is_full else scope_users(db, scope)

    def recompute(hours_, users_):
        return exports.compute_journeys(engine, hours_, users_, journey_source=settings.journey_source,
                                        lookback_seconds=settings.lookback_seconds, touch_cap=settings.touch_cap)

    def read(chunk):
        return with_retries(
            lambda: exports.read_chunk(engine, chunk, root=root, frames_root=settings.frames_path(), users=users,
                                       recompute=recompute),
            what=f"export reads {hour_key(chunk[0])}..{hour_key(chunk[-1])}", logger=context.log,
        )

    total = exports.ExportStats()
    for chunk, stats in exports.export_chunks(chunk_hours(hours, settings.chunk_hours), root=root, read=read):
        total.add(stats)
        log_event(context.log, "export_chunk", stage="exports", first_hour=hour_key(chunk[0]),
                  last_hour=hour_key(chunk[-1]), files=stats.files, **{f"rows_{t}": n for t, n in stats.rows.items()},
                  **run_fields(context))
    wrong = with_retries(lambda: exports.reconcile(engine, root, hours), what="reconcile exports", logger=context.log)
    failing = [hour_key(h) for h in wrong.get_column("date_hour").to_list()]
    seconds = round(time.perf_counter() - started, 3)
    log_event(context.log, "export_reconciled", stage="exports", failing_hours=len(failing),
              latency_ms=round(seconds * 1000), **run_fields(context))
    check = dg.AssetCheckResult(
        check_name="export_reconciliation",
        passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{len(failing)} hour(s) of the export disagree with MySQL ({', '.join(failing[:5])}"
                     f"{', ...' if len(failing) > 5 else ''})" if failing
                     else f"{len(hours)} hour(s): files and MySQL agree"),
        metadata={
            "hours_checked": len(hours),
            "failing_hour_count": len(failing),
            "failing_hours": dg.MetadataValue.json(failing[:100]),
            "sample": dg.MetadataValue.json([{"hour": hour_key(h), "reason": r}
                                             for h, r in wrong.head(20).iter_rows()]),
        },
    )
    return dg.MaterializeResult(
        check_results=[check],
        metadata={
            "hours": total.hours,
            "files": total.files,
            **{f"rows_{t}": n for t, n in total.rows.items()},
            **total.journeys,
            "journey_users_recomputed": len(users) if users is not None else 0,
            "unreconciled_snapshots": total.unreconciled_snapshots,
            "seconds": seconds,
            "export_dir": dg.MetadataValue.path(str(root)),
            "duckdb": dg.MetadataValue.md(
                f"`attribution query \"SELECT * FROM snapshots LIMIT 10\"` or, in any DuckDB:\n\n"
                f"`SELECT * FROM read_parquet('{exports.table_glob(root, 'snapshots')}', hive_partitioning = true)`"
            ),
        }
    )


class ModelComparisonConfig(dg.Config):
    """The window to compare (epoch seconds or ISO-8601, UTC without an offset; ``end`` exclusive).
    Empty: the last 24 complete UTC hours."""

    start: str = ""
    end: str = ""
    users: list[int] = []


@dg.asset(
    group_name="analytics",  # on demand: selecting the "attribution" group for a backfill leaves it out
    deps=[attribution_writeback],
    kinds={"polars", "matplotlib"},
)
def model_comparison(context: dg.AssetExecutionContext, config: ModelComparisonConfig,
                     db: DatabaseResource) -> dg.MaterializeResult:
    """On demand (not in the hourly job): attributed revenue (USD) per traffic source (ppc
    account) under every active model side by side, with totals and the spread between models,
    for the window of its config, read from the stored rows; the table is in the metadata and a
    grouped bar chart PNG is written next to the exports."""
    now = int(time.time())
    end = parse_time(config.end) if config.end else floor_hour(now)
    start = parse_time(config.start) if config.start else end - 24 * HOUR
    result = analytics.compare(db.engine(), start, end, users=config.users or None)
    chart = exports.export_root() / "comparison" / f"model_comparison_{hour_key(result.first_hour)}_{hour_key(result.last_hour)}.png".replace(":", "")
    analytics.render_chart(result, chart)
    context.log.info("\n" + analytics.render_text(result))
    return dg.MaterializeResult(
        metadata={
            "table": dg.MetadataValue.md(analytics.render_markdown(result)),
            "chart": dg.MetadataValue.path(str(chart)),
            "window": f"{hour_key(result.first_hour)} .. {hour_key(result.last_hour)} UTC",
            "hours": result.hours,
            "models": result.model_count,
            "traffic_sources": result.source_count,
            "total_revenue_usd": float(result.grand_total),
            "max_spread_usd": float(result.max_spread),
        }
    )
