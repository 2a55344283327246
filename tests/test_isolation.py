"""Isolation and atomicity (real Dagster runs on MariaDB): every run reads its own intermediate
frames (never those of a concurrent run), a re-execution finds the frames of the run it
re-executes, shared frames are hard links of a complete run's files, and the exports of a set of
hours are published to readers all tables at once."""

import os
import shutil
import threading
import time
from datetime import datetime, timezone

import dagster as dg
import polars as pl
import pytest
from sqlalchemy import text

from attribution_pipeline.assets import credits as credits_assets
from attribution_pipeline.assets import parquet_exports, writeback_run
from attribution_pipeline.assets.hourly import range_tags
from attribution_pipeline.automation.jobs import JOB_NAME
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.demo.generator import GeneratorConfig, seed
from attribution_pipeline.exports import layout
from attribution_pipeline.exports.columns import TABLES
from attribution_pipeline.io_managers import hourly_parquet
from attribution_pipeline.io_managers.hourly_parquet import RUNS_DIR, hour_file, private_root
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import database
from oracle import php_engine
from pipeline import HOUR, run, settings

START = int(datetime(2025, 3, 1, tzinfo=timezone.utc).timestamp())
HOURS = [START + i * HOUR for i in range(4)]
CONFIG = GeneratorConfig(seed=23, start=START, hours=4, users=3, clicks=6000, conversions=240)
FRAME_ASSETS = ("source_changes", "attribution_models", "conversions", "journeys", "visitor_journeys", "credits",
                "snapshots")


def seeded(url):
    engine = database.make_engine(url)
    seed(engine, CONFIG)
    return engine


def stored(url, hours):
    """The global snapshot and touchpoint rows stored for ``hours``, ids left out, sorted."""
    with database.make_engine(url).connect() as conn:
        rows = php_engine.stored_rows(conn, hours)
    return sorted(rows.snapshots), sorted(rows.touchpoints)


def change_source_data(engine):
    """Another state of the source: a third of the conversions deleted, every payout one more."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE `202_conversion_logs` SET deleted = 1 WHERE conv_id % 3 = 0"))
        conn.execute(text("UPDATE `202_conversion_logs` SET click_payout = click_payout + 1"))


def clear_outputs(engine):
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM `202_attribution_touchpoints`"))
        conn.execute(text("DELETE FROM `202_attribution_snapshots`"))


def frames_root():
    return settings().frames_path


def isolation_job():
    """The hourly job as the environment's settings build it (reconstructable for a re-execution)."""
    return build_definitions(Settings.from_env()).resolve_job_def(JOB_NAME)


# ------------------------------------------------------------------------------------------


def test_concurrent_runs_over_the_same_hours_each_read_only_their_own_frames(mysql_url, monkeypatch):
    engine = seeded(mysql_url)
    a_hours, b_hours = HOURS, HOURS[1:]
    run(mysql_url, a_hours[0], a_hours[-1])
    want_a = stored(mysql_url, a_hours)  # what A computes alone from its data
    assert want_a[0] and want_a[1]

    # run A; between its `credits` and `snapshots` steps the source changes and run B runs fully over
    # three of A's hours (it publishes its frames to the shared folder while A is running)
    real_run_hours = credits_assets.run_hours
    during: dict = {}

    def run_b_inside_a(context):
        if context.asset_key == dg.AssetKey("snapshots") and not during:
            during["a_run_id"] = context.run.run_id
            change_source_data(engine)
            result, _ = run(mysql_url, b_hours[0], b_hours[-1])
            during["b_run_id"] = result.run_id
            during["b_rows"] = stored(mysql_url, b_hours)
        return real_run_hours(context)

    monkeypatch.setattr(credits_assets, "run_hours", run_b_inside_a)
    result_a, _ = run(mysql_url, a_hours[0], a_hours[-1], full=True)  # A recomputes every hour (D22)
    monkeypatch.setattr(credits_assets, "run_hours", real_run_hours)
    assert during["a_run_id"] == result_a.run_id != during["b_run_id"]

    # A wrote exactly what it computes alone from its own data: its credits, snapshots and the
    # frames its write-back read are its own, not B's (which the shared folder held meanwhile)
    assert stored(mysql_url, a_hours) == want_a
    [check] = [e for e in result_a.get_asset_check_evaluations() if e.check_name == "export_reconciliation"]
    assert check.passed

    # B wrote exactly what it computes alone from the changed data, and that differs from A's
    run(mysql_url, b_hours[0], b_hours[-1])
    want_b = stored(mysql_url, b_hours)
    assert during["b_rows"] == want_b
    assert want_b != stored_subset(want_a, b_hours)
    # both runs' private folders were removed when their exports succeeded
    assert not list((frames_root() / RUNS_DIR).iterdir())


def stored_subset(rows, hours):
    snapshots, touchpoints = rows
    return [r for r in snapshots if r[2] in hours], [r for r in touchpoints if r[2] in hours]


def test_reexecution_from_failure_reads_the_failed_parents_frames(mysql_url, tmp_path, monkeypatch):
    engine = seeded(mysql_url)
    monkeypatch.setenv("ATTRIBUTION_DB_URL", mysql_url)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    run(mysql_url, HOURS[0], HOURS[-1])
    want = stored(mysql_url, HOURS)
    clear_outputs(engine)

    real_write = writeback_run.write_chunk
    failures = []

    def fail_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise RuntimeError("the disk is on fire (not transient)")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(writeback_run, "write_chunk", fail_once)
    frames = frames_root()
    with dg.DagsterInstance.get() as instance:
        parent, _ = run(mysql_url, HOURS[0], HOURS[-1], instance=instance, expect_success=False)
        assert not parent.success and failures
        assert stored(mysql_url, HOURS) == ([], [])
        kept = private_root(frames, parent.run_id)
        assert sorted(p.name for p in kept.iterdir()) == sorted(FRAME_ASSETS)  # kept for a re-execution
        # the shared frames are gone: the re-execution can only find the frames in its parent's folder
        for asset in FRAME_ASSETS:
            shutil.rmtree(frames / asset)

        options = dg.ReexecutionOptions.from_failure(parent.run_id, instance)
        # the UI copies the parent's tags (its partition range) into a re-execution; execute_job does not
        with dg.execute_job(dg.reconstructable(isolation_job), instance, reexecution_options=options,
                            tags=range_tags(HOURS[0], HOURS[-1])) as child:
            assert child.success, [e.message for e in child.all_events if e.is_failure]
            child_run = instance.get_run_by_id(child.run_id)
            executed = {e.step_key for e in child.all_events if e.event_type_value == "STEP_SUCCESS"}
        assert child_run.parent_run_id == parent.run_id
        assert {"attribution_writeback", "attribution_exports"} <= executed
        assert not executed & {"journeys", "credits", "snapshots"}  # read from the parent's folder
    assert stored(mysql_url, HOURS) == want
    # after success the frames of the run and of the failed run it re-executed are removed
    assert not private_root(frames, child.run_id).exists() and not kept.exists()


def test_export_publication_waits_for_readers_and_shows_one_generation(mysql_url):
    engine = seeded(mysql_url)
    hour = HOURS[1]
    root = settings().export_path
    run(mysql_url, hour)
    old = {t: layout.part_path(root, t, hour).read_bytes() for t in TABLES}
    change_source_data(engine)

    outcome: list = []

    def writer():
        try:
            outcome.append(run(mysql_url, hour))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            outcome.append(exc)

    thread = threading.Thread(target=writer, name="export-writer")
    with layout.publish_lock(root, shared=True):
        thread.start()
        deadline = time.monotonic() + 300
        while not all(list(layout.hour_dir(root, t, hour).glob(f".{layout.PART}.*.tmp")) for t in TABLES):
            assert thread.is_alive() and time.monotonic() < deadline, outcome
            time.sleep(0.05)
        time.sleep(0.5)  # the writer has staged every table and waits for the lock to rename them
        assert thread.is_alive()
        assert {t: layout.part_path(root, t, hour).read_bytes() for t in TABLES} == old
    thread.join(300)
    assert not thread.is_alive() and not isinstance(outcome[0], BaseException), outcome
    new = {t: layout.part_path(root, t, hour).read_bytes() for t in TABLES}
    assert all(new[t] != old[t] for t in TABLES)
    assert not list(layout.hour_dir(root, "snapshots", hour).glob(".*.tmp"))
    snapshots = pl.read_parquet(layout.part_path(root, "snapshots", hour)).filter(scope_type="global")  # D31
    touchpoints = pl.read_parquet(layout.part_path(root, "touchpoints", hour))
    assert snapshots["attributed_revenue"].sum() == touchpoints["revenue_share"].sum()
    with engine.connect() as conn:
        mysql = conn.execute(text("SELECT SUM(attributed_revenue) FROM `202_attribution_snapshots` "
                                  "WHERE scope_type = 'global' AND date_hour = :h"), {"h": hour}).scalar()
    assert snapshots["attributed_revenue"].sum() == mysql


def test_shared_frames_are_hard_links_of_the_runs_files_and_scoped_runs_never_publish(mysql_url, monkeypatch):
    engine = seeded(mysql_url)
    frames = frames_root()
    seen: dict = {}
    real_export = parquet_exports.export_hours

    def spy(context, *args, **kwargs):  # right after the run's writes, before its frames are removed
        private = private_root(frames, context.run.run_id)
        seen[context.run.run_id] = {
            (asset, hour): (os.stat(hour_file(private, asset, hour)), os.stat(hour_file(frames, asset, hour)))
            for asset in FRAME_ASSETS for hour in HOURS
        }
        return real_export(context, *args, **kwargs)

    monkeypatch.setattr(parquet_exports, "export_hours", spy)
    full, _ = run(mysql_url, HOURS[0], HOURS[-1])
    stats = seen[full.run_id]
    assert len(stats) == len(FRAME_ASSETS) * len(HOURS)
    for own, shared in stats.values():
        assert (own.st_ino, own.st_dev) == (shared.st_ino, shared.st_dev) and own.st_nlink == 2
    assert not private_root(frames, full.run_id).exists()
    published = {p: p.stat().st_ino for p in frames.rglob("*.parquet")}
    assert len(published) == len(stats) and all(p.stat().st_nlink == 1 for p in published)

    with engine.connect() as conn:
        user = conn.execute(text("SELECT MIN(user_id) FROM `202_users` WHERE user_deleted = 0")).scalar()
    scoped, _ = run(mysql_url, HOURS[0], HOURS[-1], users=[user])
    for own, shared in seen[scoped.run_id].values():
        assert own.st_ino != shared.st_ino and own.st_nlink == 1
    assert {p: p.stat().st_ino for p in frames.rglob("*.parquet")} == published  # nothing published
    assert not private_root(frames, scoped.run_id).exists()


def test_publish_copies_where_the_filesystem_cannot_link(tmp_path, monkeypatch):
    df = pl.DataFrame({"date_hour": [START]})
    source = hourly_parquet.write_hour(private_root(tmp_path, "r1"), "journeys", START, df)

    def no_links(*_args):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    shared = hourly_parquet.publish_hour(source, tmp_path, "journeys", START)
    assert shared.read_bytes() == source.read_bytes() and shared.stat().st_ino != source.stat().st_ino
    assert sorted(p.name for p in shared.parent.iterdir()) == [shared.name]


def test_private_frames_are_pruned_a_day_after_their_last_write(tmp_path):
    df = pl.DataFrame({"date_hour": [START]})
    old = hourly_parquet.write_hour(private_root(tmp_path, "old"), "journeys", START, df)
    fresh = hourly_parquet.write_hour(private_root(tmp_path, "fresh"), "journeys", START, df)
    day_ago = time.time() - hourly_parquet.STALE_PRIVATE_SECONDS - 60
    for path in (old, old.parent, old.parent.parent, private_root(tmp_path, "old")):
        os.utime(path, (day_ago, day_ago))
    hourly_parquet.prune_private_frames(tmp_path)
    assert sorted(p.name for p in (tmp_path / RUNS_DIR).iterdir()) == ["fresh"] and fresh.exists()


@pytest.mark.parametrize("lineage, holder", [(["c", "b", "a"], "b"), (["c"], None)])
def test_inputs_come_from_the_nearest_run_of_the_lineage_that_holds_the_asset(tmp_path, lineage, holder):
    df = pl.DataFrame({"date_hour": [START]})
    for run_id in ("b", "a"):
        hourly_parquet.write_hour(private_root(tmp_path, run_id), "credits", START, df)
    hourly_parquet.write_hour(private_root(tmp_path, "c"), "journeys", START, df)
    want = private_root(tmp_path, holder) if holder else tmp_path
    assert hourly_parquet.input_root(tmp_path, "credits", lineage) == want
    assert hourly_parquet.input_root(tmp_path, "journeys", lineage) == private_root(tmp_path, "c")
