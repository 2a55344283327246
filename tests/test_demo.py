"""`attribution demo`: a fresh embedded database, seeded, its last 72 hours materialised through
the Dagster job, in under a minute; running it twice works."""

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def test_demo_runs_twice_under_a_minute(tmp_path, monkeypatch):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("ATTRIBUTION_DB_URL", "DAGSTER_HOME")}
    env["ATTRIBUTION_HOME"] = str(home)
    for attempt in (1, 2):
        started = time.monotonic()
        done = subprocess.run([str(BIN / "attribution"), "demo"], env=env, capture_output=True, text=True, timeout=180)
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert elapsed < 60, f"demo run {attempt} took {elapsed:.1f}s"
        assert "(72 hours)" in done.stdout and "dagster dev" in done.stdout
        assert "Warning" not in done.stderr
    with sqlite3.connect(home / "attribution.sqlite") as conn:
        hours, models, rows = conn.execute(
            'select count(distinct date_hour), count(distinct model_id), count(*) from "202_attribution_snapshots"'
        ).fetchone()
        touchpoints = conn.execute('select count(*) from "202_attribution_touchpoints"').fetchone()[0]
        cron = conn.execute('select last_execution_time from "202_cronjob_logs" where id = 2').fetchone()
    assert hours == 72 and models >= 14 and rows > 500 and touchpoints > 10_000 and cron
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
    assert len(runs) == 2  # both demo runs are recorded in the instance the UI reads
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert {r.tags["dagster/asset_partition_range_end"] for r in runs} == {runs[0].tags["dagster/asset_partition_range_end"]}


def test_documented_partition_range_command_runs_as_one_run(tmp_path, monkeypatch):
    """docs/operations.md "Running a backfill": the shell command, as written (its range shortened to the
    seeded hours), materialises every hourly asset in one run carrying the range tags."""
    import re

    import dagster as dg

    page = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", page, re.S) if "dagster asset materialize" in b)
    command = block.replace("\\\n", " ").strip()
    assert "--partition-range" in command and command.startswith("DAGSTER_HOME=$PWD/.attribution/dagster ")
    home = tmp_path / ".attribution"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text((Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME",)}
    env.update(ATTRIBUTION_HOME=str(home), ATTRIBUTION_DB_URL=f"sqlite:///{home / 'attribution.sqlite'}")
    seeded = subprocess.run([str(BIN / "attribution"), "seed", "--hours", "3", "--start", "2024-06-01T00:00",
                             "--clicks", "3000", "--conversions", "120"], env=env, capture_output=True, text=True)
    assert seeded.returncode == 0, seeded.stderr
    (tmp_path / ".venv").symlink_to(BIN.parent)  # the page's command runs from the repository, with ./.venv
    shell = command.replace("2024-06-01-00:00...2024-06-30-23:00", "2024-06-01-00:00...2024-06-01-02:00")
    done = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/asset_partition_range_start"] == "2024-06-01-00:00"
    assert run.tags["dagster/asset_partition_range_end"] == "2024-06-01-02:00"
    with sqlite3.connect(home / "attribution.sqlite") as conn:
        hours = conn.execute('select count(distinct date_hour) from "202_attribution_snapshots"').fetchone()[0]
    assert hours == 3
    assert len(list((home / "exports" / "snapshots").glob("date=2024-06-01/hour=*/part.parquet"))) == 3
