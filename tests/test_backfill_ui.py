"""A 720-hour asset backfill launched the way a data engineer does it from the UI (GraphQL
``launchPartitionBackfill`` against a real webserver and daemon on a temporary DAGSTER_HOME) runs
as exactly ONE run carrying the partition-range tags, and stores the same rows as running the
hours one by one (issue 3 acceptance)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

import scenarios
from attribution_pipeline.storage import database
from attribution_pipeline.assets.hourly import RANGE_END_TAG, RANGE_START_TAG
from attribution_pipeline.core.hours import hour_key
from daemon_pace import paced_pythonpath
from faults.tcp_proxy import free_port
from oracle import php_engine
from pipeline import HOUR, run

REPO = Path(__file__).resolve().parents[1]
T = scenarios.T
FIRST = T - 600 * HOUR  # 720 hours that contain the spec §4.6 conversions
LAST = FIRST + 719 * HOUR


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


ASSETS_QUERY = """{ assetNodes(group: {groupName: "attribution", repositoryName: "__repository__",
                    repositoryLocationName: "attribution_pipeline.definitions"}) { assetKey { path } isPartitioned } }"""
LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status } ... on PythonError { message } } }"""
RUNS = """query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
  ... on Runs { results { runId status tags { key value } } } } }"""


@pytest.fixture
def dagster_home(tmp_path):
    """A fresh DAGSTER_HOME, in memory (/dev/shm) where the machine has it: the webserver, the
    daemon and the run write thousands of events for a 720-partition backfill into the instance's
    SQLite files, each write a commit, and on a virtual disk each commit waits for an fsync."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        home = Path(tempfile.mkdtemp(prefix="attrtest-dagster-", dir=shm))
        yield home
        shutil.rmtree(home, ignore_errors=True)
    else:
        home = tmp_path / "dagster"
        home.mkdir()
        yield home


def test_ui_backfill_of_720_hours_is_one_run_with_hour_by_hour_rows(mysql_url, tmp_path, dagster_home):
    with database.make_engine(mysql_url).begin() as conn:
        scenarios.load_section_4_6(conn, stored_journeys=False)
    home = tmp_path / "home"
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "ATTRIBUTION_HOME": str(home),
           "ATTRIBUTION_DB_URL": mysql_url, "PYTHONPATH": paced_pythonpath(tmp_path / "daemon-pace")}
    log = open(tmp_path / "dagster-dev.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"), "-p", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        def assets_loaded():
            try:
                return graphql(port, ASSETS_QUERY)["assetNodes"]
            except OSError:
                return None

        nodes = wait_for(assets_loaded, 120, "the webserver and code location")
        # the hourly pipeline (on-demand assets such as the model comparison are not partitioned)
        selection = [{"path": n["assetKey"]["path"]} for n in nodes if n["isPartitioned"]]
        assert len(selection) >= 6
        keys = [hour_key(FIRST + i * HOUR) for i in range(720)]
        launched = graphql(port, LAUNCH, {"params": {"assetSelection": selection, "partitionNames": keys,
                                                     "fromFailure": False}})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        def finished():
            status = graphql(port, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]["status"]
            return status if status in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED") else None

        status = wait_for(finished, 600, "the backfill to finish", interval=1)
        runs = graphql(port, RUNS, {"id": backfill_id})["runsOrError"]["results"]
        assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()

    assert len(runs) == 1, runs
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert runs[0]["status"] == "SUCCESS"
    assert tags[RANGE_START_TAG] == hour_key(FIRST) and tags[RANGE_END_TAG] == hour_key(LAST)
    with database.make_engine(mysql_url).connect() as conn:
        backfilled = php_engine.stored_rows(conn)
    assert len(backfilled.snapshots) == 12

    # the same data, hour by hour, in another database
    hour_by_hour_url = mysql_url.rsplit("/", 1)[0] + "/" + database.make_engine(mysql_url).url.database + "_h"
    from sqlalchemy import create_engine

    admin = create_engine(mysql_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{database.make_engine(mysql_url).url.database}_h`")
    try:
        from attribution_pipeline.storage import tables

        engine = database.make_engine(hour_by_hour_url)
        tables.create_missing(engine)
        with engine.begin() as conn:
            scenarios.load_section_4_6(conn, stored_journeys=False)
        for hour in (FIRST, T - HOUR, T, T + HOUR, T + 2 * HOUR, LAST):
            run(hour_by_hour_url, hour)
        with engine.connect() as conn:
            one_by_one = php_engine.stored_rows(conn)
        engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database.make_engine(mysql_url).url.database}_h`")
    assert sorted(backfilled.snapshots) == sorted(one_by_one.snapshots)
    assert sorted(backfilled.touchpoints) == sorted(one_by_one.touchpoints)
