"""Erasure (D27): ``attribution erase --user`` leaves no trace of a deleted user's ids in any table,
Parquet file, frame, report or export file the pipeline writes, changes no other user's row, and a
following run does not bring them back; ``attribution erase --click/--conversion`` refuses while the
source rows exist, and with ``--include-source`` leaves no trace and rebuilds the affected hours."""

import json

import polars as pl
import pytest
from sqlalchemy import select, update

from attribution_pipeline.cli import main
from attribution_pipeline.demo.generator import GeneratorConfig, generate, load
from attribution_pipeline.storage import database, tables
from lifecycle_data import (
    MYSQL_STORES,
    PARQUET_TABLES,
    add_export,
    conversion_journeys,
    frame_files,
    mysql_frame,
    parquet,
    reports,
    touchpoints_by_user,
)
from pipeline import HOUR, run, settings

START = 1735689600  # 2025-01-01 00:00 UTC
FIRST, LAST = START, START + 5 * HOUR


@pytest.fixture
def world(mysql_url, monkeypatch):
    """Three users' hours written (journeys persisted), export rows and files, a retention row."""
    monkeypatch.setenv("ATTRIBUTION_PERSIST_JOURNEYS", "1")
    monkeypatch.setenv("ATTRIBUTION_PARTITIONS_START", "2025-01-01-00:00")
    engine = database.make_engine(mysql_url)
    load(engine, generate(GeneratorConfig(seed=11, start=START, hours=6, users=3, campaigns_per_user=2, clicks=5000,
                                          conversions=400, models="main6", invalid_models=False, anomalies=False)))
    run(mysql_url, FIRST, LAST)
    config = settings(mysql_url)
    snaps = mysql_frame(engine, tables.attribution_snapshots).with_columns(pl.col("user_id", "model_id").cast(pl.Int64))
    users = sorted(snaps.get_column("user_id").unique().to_list())
    for user in users:
        model = snaps.filter(pl.col("user_id") == user).get_column("model_id").min()
        add_export(engine, config.export_files_path, user_id=user, model_id=model, start_hour=START)
    with engine.begin() as conn:
        conn.execute(tables.retention_windows.insert().values(user_id=users[0], days=90, updated_at=START))
    yield {"url": mysql_url, "engine": engine, "settings": config, "users": users}
    engine.dispose()


def ids_of(engine, config, user: int) -> dict[str, set[int]]:
    """Every id of ``user`` the pipeline stored: snapshots, conversions, clicks, models."""
    snaps = mysql_frame(engine, tables.attribution_snapshots).filter(pl.col("user_id") == str(user))
    touches = touchpoints_by_user(engine).filter(pl.col("user_id") == user)
    journeys = conversion_journeys(engine).filter(pl.col("user_id") == user)
    return {"snapshot_id": set(map(int, snaps["snapshot_id"])), "model_id": set(map(int, snaps["model_id"])),
            "conv_id": set(map(int, touches["conv_id"])) | set(journeys["conv_id"]),
            "click_id": set(map(int, touches["click_id"])) | set(journeys["click_id"])}


def others(world, user: int) -> dict[str, pl.DataFrame]:
    """Every row of the other users, in every store."""
    engine, config = world["engine"], world["settings"]
    out = {name: mysql_frame(engine, t).filter(pl.col("user_id") != str(user)).sort(pl.all())
           for name, t in MYSQL_STORES.items() if "user_id" in t.c}
    out["touchpoints"] = touchpoints_by_user(engine).filter(pl.col("user_id") != user).sort(pl.all())
    out["conversion_touchpoints"] = conversion_journeys(engine).filter(pl.col("user_id") != user).sort(pl.all())
    for table in PARQUET_TABLES:
        out[f"parquet_{table}"] = parquet(config.export_path, table).filter(pl.col("user_id") != user)
    return out


def assert_same(a: dict, b: dict) -> None:
    for key in a:
        assert a[key].equals(b[key]), key


def no_trace(world, user: int | None, ids: dict[str, set[int]]) -> None:
    """No table, Parquet file, frame, report or export file holds ``user`` or its ids."""
    engine, config = world["engine"], world["settings"]
    columns = {"user_id": {user} if user is not None else set(), **ids}
    for name, table in MYSQL_STORES.items():
        frame = mysql_frame(engine, table)
        for column, values in columns.items():
            if column in frame.columns and values:
                assert not set(frame[column].drop_nulls().cast(pl.Int64)) & values, (name, column)
    files = [*(p for t in PARQUET_TABLES for p in (config.export_path / t).glob("**/*.parquet")),
             *frame_files(config.frames_path)]
    assert files
    for path in files:
        frame = pl.read_parquet(path)
        for column, values in columns.items():
            if column in frame.columns and values:
                assert not set(frame[column].drop_nulls().cast(pl.Int64)) & values, (str(path), column)
    return files


def test_erasing_a_deleted_user_leaves_no_trace_and_changes_no_other_row(world, capsys):
    engine, config = world["engine"], world["settings"]
    victim = world["users"][0]
    ids = ids_of(engine, config, victim)
    assert ids["snapshot_id"] and ids["conv_id"] and ids["click_id"]
    victim_files = [p for p in config.export_files_path.iterdir() if f"user,{victim}\n" == p.read_text()]
    before = others(world, victim)
    assert main(["erase", "--user", str(victim), "--yes", "--db-url", world["url"]]) == 1  # not deleted yet
    assert "is not deleted" in capsys.readouterr().err
    assert_same(others(world, victim), before)
    with engine.begin() as conn:
        conn.execute(update(tables.users).where(tables.users.c.user_id == victim).values(user_deleted=1))

    assert main(["erase", "--user", str(victim), "--db-url", world["url"]]) == 1  # no terminal, no --yes
    assert "pass --yes" in capsys.readouterr().err
    assert_same(others(world, victim), before)
    assert main(["erase", "--user", str(victim), "--yes", "--db-url", world["url"]]) == 0
    no_trace(world, victim, ids)
    assert victim_files and not any(p.exists() for p in victim_files)
    for report in reports(config.reports_path):
        assert not set(report["rows_by_model"]) & {str(m) for m in ids["model_id"]}
        assert str(victim) not in json.dumps([report.get("held"), report.get("skipped_models")])
    assert_same(others(world, victim), before)

    # the hourly schedule's kind of run over the same hours: the deleted user is skipped
    run(world["url"], FIRST, LAST)
    no_trace(world, victim, ids)
    assert_same(others(world, victim), before)


def a_visitor(engine) -> tuple[int, int, int]:
    """A click touching another conversion's multi-touch journey (not a converting click), and a
    conversion of another hour: (click, conversion, its user)."""
    journeys = conversion_journeys(engine)
    with engine.connect() as conn:
        converting = {int(r[0]) for r in conn.execute(select(tables.conversion_logs.c.click_id))}
    lengths = journeys.group_by("conv_id").agg(n=pl.len())
    touch = (journeys.join(lengths, on="conv_id").filter((pl.col("n") > 3) & (pl.col("position") == 0)
                                                         & ~pl.col("click_id").is_in(list(converting)))
             .sort("conv_id").row(0, named=True))
    other = journeys.filter((pl.col("user_id") == touch["user_id"]) & (pl.col("conv_id") != touch["conv_id"])
                            & (pl.col("conv_time") // HOUR != touch["conv_time"] // HOUR)).sort("conv_id")
    return int(touch["click_id"]), int(other["conv_id"][0]), int(touch["user_id"])


def stored_aggregates(engine) -> pl.DataFrame:
    return (mysql_frame(engine, tables.attribution_snapshots)
            .select("model_id", "user_id", "date_hour", "attributed_clicks", "attributed_conversions",
                    "attributed_revenue", "attributed_cost").sort(pl.all()))


def test_erasing_clicks_refuses_while_source_rows_exist_then_rebuilds(world, capsys):
    engine, config = world["engine"], world["settings"]
    click, conversion, user = a_visitor(engine)
    before = {name: mysql_frame(engine, t).sort(pl.all()) for name, t in MYSQL_STORES.items()}
    argv = ["erase", "--click", str(click), "--conversion", str(conversion), "--yes", "--db-url", world["url"]]
    assert main(argv) == 1
    assert "VisitorSourceRemains" in capsys.readouterr().err
    for name, table in MYSQL_STORES.items():
        assert mysql_frame(engine, table).sort(pl.all()).equals(before[name]), name

    aggregates = stored_aggregates(engine)
    assert main([*argv, "--include-source"]) == 0
    out = capsys.readouterr().out
    assert "rebuilt" in out and "outcome 0" in out and str(click) not in out
    ids = {"click_id": {click}, "conv_id": {conversion}}
    no_trace(world, None, ids)
    with engine.connect() as conn:
        assert not conn.execute(select(tables.clicks.c.click_id).where(tables.clicks.c.click_id == click)).all()
        assert not conn.execute(select(tables.conversion_logs).where(
            tables.conversion_logs.c.conv_id == conversion)).all()
    erased = stored_aggregates(engine)
    assert not erased.equals(aggregates)  # the hours' aggregates were rebuilt without the visitor
    run(world["url"], FIRST, LAST, full=True)  # a fresh rebuild of every hour
    assert stored_aggregates(engine).equals(erased)
    no_trace(world, None, ids)
