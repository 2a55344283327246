"""Retention (D27): on a seeded 90-day database whose hours at 80, 45, 30 and 5 days ago were
written, a 30-day window (one user overriding it with 60 days) leaves exactly the rows newer than
each user's window in every store; unconfigured, the daily job deletes nothing and reports what a
30-day window would remove; ``--dry-run`` deletes nothing."""

import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from sqlalchemy import func, select

import conftest
from attribution_pipeline.automation.retention import RETENTION_JOB, RETENTION_SCHEDULE, retention_schedule
from attribution_pipeline.cli import main
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.demo.generator import GeneratorConfig, generate, load
from attribution_pipeline.exports.data_lifecycle import run_retention
from attribution_pipeline.exports.purge_files import frame_hour
from attribution_pipeline.storage import database, tables
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.purge_rows import plan_batches
from attribution_pipeline.storage.retention_windows import cutoff
from lifecycle_data import (
    MYSQL_STORES,
    PARQUET_TABLES,
    add_export,
    conversion_journeys,
    frame_files,
    mysql_frame,
    parquet,
    touchpoints_by_user,
)
from pipeline import HOUR, run, settings

DAY = 86400
NOW = int(time.time()) // HOUR * HOUR + 1800
START = NOW - NOW % HOUR - 90 * DAY
C30, C60 = cutoff(NOW, 30), cutoff(NOW, 60)
#: The hours written: 80 and 45 days ago, across the 30-day cutoff, 5 days ago.
RANGES = [(NOW - 80 * DAY, 4), (NOW - 45 * DAY, 4), (C30 - 2 * HOUR, 4), (NOW - 5 * DAY, 3)]


@pytest.fixture(scope="module")
def world(mysql_server, tmp_path_factory):
    """One seeded and written database and home for the module (the purge test comes last)."""
    url = conftest._new_database(mysql_server)
    engine = database.make_engine(url)
    tables.create_missing(engine)
    load(engine, generate(GeneratorConfig(seed=7, start=START, hours=90 * 24, users=3, campaigns_per_user=2,
                                          clicks=8000, conversions=4000, models="main6", invalid_models=False,
                                          anomalies=False)))
    home = tmp_path_factory.mktemp("retention_home")
    for first, hours in RANGES:
        first -= first % HOUR
        run(url, first, first + (hours - 1) * HOUR, home=home, persist_journeys=True)
    config = settings(url, home=home)
    files = config.export_files_path
    with engine.connect() as conn:
        users = [r[0] for r in conn.execute(select(tables.users.c.user_id).order_by(tables.users.c.user_id))]
    for user in users:
        for days_ago in (80, 45, 10):
            add_export(engine, files, user_id=user, model_id=1, start_hour=NOW - NOW % HOUR - days_ago * DAY)
        add_export(engine, files, user_id=user, model_id=1, start_hour=NOW - NOW % HOUR - 80 * DAY, status="processing")
    outside = home / "elsewhere" / "keep.csv"
    add_export(engine, files, user_id=users[0], model_id=1, start_hour=NOW - 80 * DAY, file_path=outside)
    yield {"url": url, "engine": engine, "home": home, "settings": config, "users": users, "outside": outside}
    engine.dispose()


def everything(world) -> dict:
    engine, config = world["engine"], world["settings"]
    return {
        **{name: mysql_frame(engine, table).sort(pl.all()) for name, table in MYSQL_STORES.items()},
        **{f"parquet_{t}": parquet(config.export_path, t) for t in PARQUET_TABLES},
        "frames": [str(p) for p in frame_files(config.frames_path)],
        "files": sorted(str(p) for p in config.export_files_path.rglob("*") if p.is_file()),
    }


def test_batches_are_bounded_by_rows_and_hours():
    weights = pl.DataFrame({"date_hour": [h * HOUR for h in range(10)], "rows": [10, 20, 30, 90, 5, 5, 5, 5, 5, 5]})
    batches = plan_batches(weights, limit=50, max_hours=4)
    assert [len(b) for b in batches] == [2, 1, 1, 4, 2]  # 30 alone (10+20+30 > 50), 90 alone (over the limit)
    assert [h for b in batches for h in b] == weights["date_hour"].to_list()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].equals(b[k]) if isinstance(a[k], pl.DataFrame) else a[k] == b[k] for k in a)


def test_unconfigured_schedule_run_deletes_nothing_and_reports(world):
    assert retention_schedule.cron_schedule == "30 3 * * *"
    assert retention_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert retention_schedule.name == RETENTION_SCHEDULE
    before = everything(world)
    defs = build_definitions(world["settings"])
    assert any(s.name == RETENTION_SCHEDULE and s.job_name == RETENTION_JOB for s in defs.schedules)
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(RETENTION_JOB).execute_in_process(instance=instance)
        assert result.success
        meta = next(e.event_specific_data.metadata for e in result.all_events
                    if e.event_type_value == "STEP_OUTPUT" and e.event_specific_data.metadata)
    assert meta["users_purged"].value == 0 and meta["removed"].value == {}
    would = meta["not_configured_would_remove"].value
    older = before["snapshots"].filter(pl.col("date_hour").cast(pl.Int64) < cutoff(int(time.time()), 30)).height
    assert would["snapshots"] == older > 0 and would["touchpoints"] > 0 and would["parquet_rows"] > 0
    assert meta["frame_files"].value > 0
    assert same(everything(world), before)


def test_dry_run_deletes_nothing(world, monkeypatch, capsys):
    before = everything(world)
    monkeypatch.setenv("ATTRIBUTION_HOME", str(world["home"]))
    monkeypatch.setenv("ATTRIBUTION_RETENTION_DAYS", "30")
    assert main(["retention", "--dry-run", "--db-url", world["url"]]) == 0
    out = capsys.readouterr().out
    assert "would remove" in out and "dry run: nothing was deleted" in out
    assert f"user {world['users'][0]} (window 30 days, global)" in out
    assert same(everything(world), before)


def kept(frame: pl.DataFrame, user_col: str, hour_col: str, cutoffs: dict[int, int]) -> pl.DataFrame:
    """``frame``'s rows whose hour is not older than their user's cutoff."""
    limits = pl.DataFrame({"_u": list(cutoffs), "_c": list(cutoffs.values())}, schema={"_u": pl.Int64, "_c": pl.Int64})
    return (frame.with_columns(_u=pl.col(user_col).cast(pl.Int64)).join(limits, on="_u", how="left")
            .filter(pl.col(hour_col).cast(pl.Int64) >= pl.col("_c")).drop("_u", "_c"))


def test_retention_at_30_days_keeps_exactly_the_newer_rows_in_every_store(world):
    engine, config, users = world["engine"], world["settings"], world["users"]
    long_user = next(u for u in users if mysql_frame(engine, tables.attribution_snapshots).filter(
        (pl.col("user_id") == str(u)) & pl.col("date_hour").cast(pl.Int64).is_between(C60, C30 - 1)).height)
    with engine.begin() as conn:
        conn.execute(tables.retention_windows.insert().values(user_id=long_user, days=60, updated_at=NOW))
    cutoffs = {u: (C60 if u == long_user else C30) for u in users}
    before, tps, journeys = everything(world), touchpoints_by_user(engine), conversion_journeys(engine)
    assert before["snapshots"].filter(pl.col("date_hour").cast(pl.Int64) < C30).height > 0

    outcome = run_retention(Database(world["url"]), config.replace(retention_days=30), now=NOW)
    after = everything(world)

    assert after["snapshots"].sort(pl.all()).equals(kept(before["snapshots"], "user_id", "date_hour", cutoffs).sort(pl.all()))
    assert touchpoints_by_user(engine).sort(pl.all()).equals(kept(tps, "user_id", "date_hour", cutoffs).sort(pl.all()))
    hour_of = pl.col("conv_time") - pl.col("conv_time") % HOUR
    assert conversion_journeys(engine).sort(pl.all()).equals(
        kept(journeys.with_columns(h=hour_of), "user_id", "h", cutoffs).drop("h").sort(pl.all()))
    assert after["source_state"].equals(kept(before["source_state"], "user_id", "date_hour", cutoffs).sort(pl.all()))
    exports_left = before["exports"].with_columns(_u=pl.col("user_id").cast(pl.Int64)).filter(
        (pl.col("status") == "processing") | (pl.col("start_hour").cast(pl.Int64)
                                              >= pl.col("_u").replace_strict(cutoffs))).drop("_u")
    assert after["exports"].equals(exports_left.sort(pl.all()))
    kept_files = {p for p in exports_left.get_column("file_path").drop_nulls().to_list()}
    assert set(after["files"]) == kept_files - {str(world["outside"])}
    assert world["outside"].exists()  # named by a purged row, but outside the export files folder
    for table in PARQUET_TABLES:
        assert after[f"parquet_{table}"].equals(kept(before[f"parquet_{table}"], "user_id", "date_hour", cutoffs)), table
    assert after["parquet_snapshots"].height > 0
    assert all(frame_hour(Path(p)) >= C30 for p in after["frames"])
    assert after["frames"] == [p for p in before["frames"] if frame_hour(Path(p)) >= C30]
    with engine.connect() as conn:
        audits = conn.execute(select(func.count()).where(tables.attribution_audit.c.action == "retention_purge")).scalar()
    assert audits == sum(u.deleted for u in outcome.users) == len(users)
    assert outcome.totals(True)["snapshots"] == before["snapshots"].height - after["snapshots"].height

    # the schedule's kind of run (recent hours, incremental) does not bring the purged hours back
    first = (NOW - 5 * DAY) // HOUR * HOUR
    run(world["url"], first, first + 2 * HOUR, home=world["home"], persist_journeys=True)
    assert mysql_frame(engine, tables.attribution_snapshots).sort(pl.all()).equals(after["snapshots"])
