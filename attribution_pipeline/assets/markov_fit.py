"""The daily ``attribution_markov_fit`` asset (D32): the Markov chains of the data-driven models,
one per model and day, with their job and their daily schedule.

Partition ``D`` (a UTC day) fits every valid Markov model of every active user on the training
window that ends when ``D`` ends, and stores it (``attribution_markov_fits``): the credits of the
day after ``D`` use it. Rematerialising a day refits it (the stored fit is replaced); the hours
that used it keep their rows until they are rebuilt (``attribution rebuild --full``). The hourly
job is not daily-partitioned, hence a job of its own; a run of the hourly job that finds a fit
missing makes it first (``storage/markov_training.py``), so the schedule is what keeps that work
off the hourly runs, not what makes credits correct.
"""

from datetime import datetime, timezone

import dagster as dg
import polars as pl

from attribution_pipeline.core.model_rules import models_frame, parse_model_row
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import markov_fits, markov_training, prosper_reads
from attribution_pipeline.storage.database import Database

ASSET = "attribution_markov_fit"
JOB = "attribution_markov_fit_job"
SCHEDULE = "attribution_markov_fit_daily"
#: Rows of removal effects shown per model in the materialisation's metadata.
SHOWN_CHANNELS = 50


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """UTC days from the day of the first hourly partition."""
    first = datetime.fromtimestamp(settings.first_hour, tz=timezone.utc).strftime("%Y-%m-%d")
    return dg.DailyPartitionsDefinition(start_date=first, timezone="UTC")


def _markov_models(db: Database) -> pl.DataFrame:
    with db.engine().connect() as conn:
        rows = prosper_reads.model_rows(conn, prosper_reads.active_users(conn))
    return markov_training.markov_models(models_frame([parse_model_row(r) for r in rows], [0]))


def _effects_table(fit) -> str:
    lines = ["| channel | touches | removal effect | share |", "|---:|---:|---:|---:|"]
    ordered = fit.channels.sort("share", descending=True).head(SHOWN_CHANNELS)
    lines += [f"| {'other' if c == -1 else c} | {t:.0f} | {e:.6f} | {s:.6f} |" for c, t, e, s in ordered.rows()]
    return "\n".join(lines)


def fit_metadata(made: list) -> dict:
    """What the UI shows of the day's fits: per model a table, and numbers it plots across days."""
    meta: dict = {"models_fitted": len(made)}
    for trained in made:
        fit, model = trained.fit, trained.row.model_id
        meta[f"model_{model}_paths"] = int(round(fit.paths_used))
        meta[f"model_{model}_converting_paths"] = int(round(fit.conversions_used))
        meta[f"model_{model}_conversion_probability"] = float(fit.conversion_probability)
        meta[f"model_{model}_removal_effects"] = dg.MetadataValue.md(_effects_table(fit))
        for channel, effect in fit.channels.sort("share", descending=True).head(10).select(
                "channel", "removal_effect").rows():
            meta[f"model_{model}_removal_effect_{'other' if channel == -1 else channel}"] = float(effect)
    return meta


def build(settings: Settings) -> tuple:
    """The daily fit asset, its job and its schedule, on ``settings``' days."""
    days = daily_partitions(settings)

    @dg.asset(name=ASSET, partitions_def=days, group_name="attribution_markov", kinds={"polars", "sql"},
              description="The Markov chain of every data-driven (Markov) model, fitted per user on the visitor "
              "paths of its training window ending with the day (D32); the next day's credits use it.")
    def attribution_markov_fit(context: dg.AssetExecutionContext, db: dg.ResourceParam[Database],
                               settings: dg.ResourceParam[Settings]) -> dg.MaterializeResult:
        window_end = int(days.time_window_for_partition_key(context.partition_key).end.timestamp())
        made, failed = [], {}
        for model in _markov_models(db).iter_rows(named=True):
            try:  # one model that cannot be fitted does not stop the others
                trained = markov_training.train(db, model, window_end, settings.visitor_key)
                markov_fits.store_fit(db, trained.row)
                made.append(trained)
            except Exception as exc:  # noqa: BLE001 - named below, the run fails after the others are stored
                failed[int(model["model_id"])] = f"{type(exc).__name__}: {exc}"[:300]
        context.log.info(f"markov fits stored: {len(made)} model(s), window ending {window_end}")
        metadata = {"window_end": window_end, **fit_metadata(made)}
        if failed:
            raise dg.Failure(description=f"Markov fits failed for model(s) {sorted(failed)}",
                             metadata={**metadata, "failed": dg.MetadataValue.json(failed)})
        return dg.MaterializeResult(metadata=metadata)

    job = dg.define_asset_job(JOB, selection=[ASSET],
                              description="Fit the data-driven models' Markov chains of one day (D32).")
    schedule = dg.build_schedule_from_partitioned_job(
        job, name=SCHEDULE, hour_of_day=0, minute_of_hour=20, default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily at 00:20 UTC: fit the day that just ended, before the hourly runs of the new day need it.")
    return attribution_markov_fit, job, schedule
