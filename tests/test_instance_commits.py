"""D34: a SQLite Dagster instance's files are synced at ATTRIBUTION_INSTANCE_SQLITE_SYNC (default
off), every other SQLite file at SQLite's default (FULL), and a bad value is named."""

import sqlite3

import pytest
from sqlalchemy import create_engine, text

from attribution_pipeline.cli.jobrun import instance_for
from attribution_pipeline.settings import Settings, SettingsError
from attribution_pipeline.storage.instance_commits import relax_instance_commits

FULL, NORMAL, OFF = 2, 1, 0


def synchronous(path) -> int:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return conn.execute(text("PRAGMA synchronous")).scalar_one()
    finally:
        engine.dispose()


def settings(tmp_path, **env) -> Settings:
    return Settings.from_env({"ATTRIBUTION_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster"),
                              **env})


@pytest.mark.parametrize("level, expected", [(None, OFF), ("normal", NORMAL), ("full", FULL)])
def test_the_instance_files_and_only_they_get_the_level(tmp_path, level, expected):
    chosen = settings(tmp_path, **({"ATTRIBUTION_INSTANCE_SQLITE_SYNC": level} if level else {}))
    with instance_for(chosen, dry_run=False) as instance:
        run_storage = tmp_path / "dagster" / "history" / "runs.db"
        assert run_storage.exists() and type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert synchronous(run_storage) == expected
        # the pipeline's own SQLite database, beside the instance, keeps SQLite's default
        own = tmp_path / "home" / "attribution.sqlite"
        own.parent.mkdir(parents=True, exist_ok=True)
        assert synchronous(own) == FULL
        # a file whose path only starts like the instance's directory is not under it
        lookalike = tmp_path / "dagster-other" / "x.db"
        lookalike.parent.mkdir()
        assert synchronous(lookalike) == FULL
    relax_instance_commits(tmp_path / "dagster", "full")  # this process's later tests see SQLite's default again
    assert synchronous(run_storage) == FULL


def test_a_connection_opened_by_plain_sqlite3_is_left_alone(tmp_path):
    relax_instance_commits(tmp_path, "off")
    try:
        with sqlite3.connect(tmp_path / "plain.db") as conn:  # not through SQLAlchemy: no listener
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == FULL
        assert synchronous(tmp_path / "through-sqlalchemy.db") == OFF
    finally:
        relax_instance_commits(tmp_path, "full")


def test_a_bad_level_is_named(tmp_path):
    with pytest.raises(SettingsError, match="ATTRIBUTION_INSTANCE_SQLITE_SYNC='sometimes': use one of off, normal, full"):
        settings(tmp_path, ATTRIBUTION_INSTANCE_SQLITE_SYNC="sometimes")


def planned_events(instance, run_id) -> list:
    import dagster as dg

    return [e.dagster_event.event_specific_data for e in
            instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)]


def test_a_throwaway_instance_plans_a_range_run_with_one_event_per_asset(mysql_url, tmp_path):
    """A range run in an ephemeral instance (``attribution rebuild`` without DAGSTER_HOME) stores one
    planned materialisation per asset, covering its hours; a persistent instance one per asset and
    hour, so that its partition view can mark the hours of a failed run failed."""
    import dagster as dg

    from attribution_pipeline.dagster_compat import plan_ranges_compactly
    from pipeline import run
    from test_exports import HOURS, seeded

    seeded(mysql_url)
    with dg.DagsterInstance.ephemeral() as throwaway:
        result, _ = run(mysql_url, HOURS[0], HOURS[-1], instance=throwaway)
        planned = planned_events(throwaway, result.run_id)
        assets = {p.asset_key for p in planned}
        assert len(planned) == len(assets) >= 8
        assert all(p.partition is None and len(p.partitions_subset.get_partition_keys()) == len(HOURS) for p in planned)
    with dg.DagsterInstance.ephemeral() as compact, dg.instance_for_test(temp_dir=str(tmp_path)) as kept:
        assert plan_ranges_compactly(compact) and plan_ranges_compactly(compact)  # once is enough
        assert not plan_ranges_compactly(kept)
        result, _ = run(mysql_url, HOURS[0], HOURS[-1], instance=kept)
        per_hour = planned_events(kept, result.run_id)
        assert len(per_hour) == len(HOURS) * len(assets) and all(p.partition is not None for p in per_hour)
