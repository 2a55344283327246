"""The production layout of issue 20 (D29), for real: a PostgreSQL-backed Dagster instance
(``deploy/dagster.yaml`` on a throwaway PostgreSQL database), the code location served by
``dagster code-server start``, ``dagster-webserver`` and ``dagster-daemon`` as three separate
processes loading it through ``deploy/workspace.yaml``'s gRPC entry. ``attribution backfill``
submits a 96-hour backfill through the webserver's GraphQL API with
``ATTRIBUTION_BACKFILL_HOURS_PER_RUN=24``: four runs, never more at once than the
``attribution_mysql_writes`` pool allows, each successful, and the rows equal those of one
in-process run over the same hours. Then the same with one range failing once on purpose: the
daemon's run retry re-executes that range alone and the rows are complete.
"""

import os
import secrets
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
import yaml

from attribution_pipeline.assets.hourly import MYSQL_WRITES_POOL, RANGE_END_TAG, RANGE_START_TAG
from attribution_pipeline.cli.backfill_cmd import graphql
from attribution_pipeline.core.hours import hour_key
from attribution_pipeline.demo.generator import GeneratorConfig, generate, load
from attribution_pipeline.storage import database, tables
from conftest import _new_database
from daemon_pace import paced_pythonpath
from faults.run_worker_fault import install_dir
from faults.tcp_proxy import free_port
from oracle import php_engine
from pipeline import HOUR, run
from test_backfill_ui import wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIRST = 1717200000  # 2024-06-01 00:00 UTC
HOURS, PER_RUN = 96, 24
LAST = FIRST + (HOURS - 1) * HOUR
PG_SERVER = os.environ.get("ATTRIBUTION_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")

RUNS = """query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
  ... on Runs { results { runId status startTime endTime parentRunId tags { key value } } } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status } } }"""
LOCATION = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
POOL = """query($key: String!) { instance { concurrencyLimit(concurrencyKey: $key) { slotCount } } }"""
EVENTS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events {
  __typename ... on MessageEvent { message } } } } } }"""
DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL database for the Dagster instance; dropped afterwards."""
    name = f"attrtest_dagster_{secrets.token_hex(4)}"
    try:
        admin = psycopg2.connect(PG_SERVER.replace("+psycopg2", ""), connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER}: {exc}\n`bash .ci/run` starts the local one, or "
                    "set ATTRIBUTION_TEST_POSTGRES_URL to a server where the user may create databases")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')  # name made here, not user input
    try:
        yield PG_SERVER.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def source_frames():
    """Small seeded Prosper202 data (4 users, ~15 conversions an hour) over the 96 hours."""
    return generate(GeneratorConfig(start=FIRST, hours=HOURS, clicks=8_000, conversions=1_500))


_REFERENCE = {}


@pytest.fixture(scope="module")
def single_run_rows(mysql_server, source_frames):
    """The rows one in-process run over the 96 hours stores (the reference), in a database of its own:
    computed once, when first asked for (while the deployment's first backfill runs)."""
    def rows():
        if "rows" not in _REFERENCE:
            _REFERENCE["rows"] = reference_rows(mysql_server, source_frames)
        return _REFERENCE["rows"]

    return rows


def reference_rows(mysql_server, source_frames):
    url = _new_database(mysql_server)
    try:
        engine = database.make_engine(url)
        tables.create_missing(engine)
        load(engine, source_frames)
        run(url, FIRST, LAST)
        with engine.connect() as conn:
            stored = php_engine.stored_rows(conn)
        engine.dispose()
    finally:
        with mysql_server.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{url.rsplit('/', 1)[1]}`")
    assert stored.snapshots and stored.touchpoints
    return stored


class Deployment:
    """The three processes of deploy/README.md's layout, on free ports, each logging to a file."""

    def __init__(self, tmp: Path, postgres_url: str, mysql_url: str, env_extra: dict[str, str]):
        self.tmp, self.procs, self.logs = tmp, [], []
        self.home = tmp / "dagster_home"
        self.home.mkdir()
        shutil.copy(REPO / "deploy" / "dagster.yaml", self.home / "dagster.yaml")
        self.grpc_port, self.web_port = free_port(), free_port()
        workspace = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())
        workspace["load_from"][0]["grpc_server"]["port"] = self.grpc_port
        (tmp / "workspace.yaml").write_text(yaml.safe_dump(workspace))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("ATTRIBUTION_", "DAGSTER_"))}
        self.env = {**base, "DAGSTER_HOME": str(self.home), "DAGSTER_POSTGRES_URL": postgres_url}
        self.url = f"http://127.0.0.1:{self.web_port}"
        # only the code server (and the runs it starts) reads the pipeline's settings
        self.code_env = {**self.env, "ATTRIBUTION_DB_URL": mysql_url, "ATTRIBUTION_HOME": str(tmp / "shared"),
                         "ATTRIBUTION_BACKFILL_HOURS_PER_RUN": str(PER_RUN),
                         "ATTRIBUTION_MODEL_CHANGE_LOOKBACK_DAYS": "0", **env_extra}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        self.logs.append((name, log))
        self.procs.append(subprocess.Popen(args, cwd=self.tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def up(self) -> None:
        self.start("code-server", [str(BIN / "dagster"), "code-server", "start", "-m", "attribution_pipeline.definitions",
                                   "-h", "127.0.0.1", "-p", str(self.grpc_port), "--location-name",
                                   "attribution_pipeline"], self.code_env)
        self.start("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.web_port),
                                 "-w", str(self.tmp / "workspace.yaml")], self.env)
        self.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.tmp / "workspace.yaml")],
                   {**self.env, "PYTHONPATH": paced_pythonpath(self.tmp / "daemon-pace")})

        def loaded():
            self.check_alive()
            try:
                entries = graphql(self.url, LOCATION, {}, timeout=10)["workspaceOrError"]["locationEntries"]
            except Exception:  # noqa: BLE001 - not up yet
                return None
            kinds = [(e["locationOrLoadError"] or {}).get("__typename") for e in entries]
            if "PythonError" in kinds:  # the code server was not serving yet: ask the webserver to reload it
                graphql(self.url, 'mutation { reloadRepositoryLocation(repositoryLocationName: "attribution_pipeline") '
                        '{ __typename } }', {}, timeout=60)
                return None
            return kinds == ["RepositoryLocation"]

        wait_for(loaded, 180, "the webserver to load the code location from the code server", interval=2)

    def check_alive(self) -> None:
        dead = [name for (name, _), proc in zip(self.logs, self.procs) if proc.poll() is not None]
        assert not dead, f"{dead} exited (logs below)"

    def backfill(self, env_extra: dict[str, str]) -> str:
        env = {**self.code_env, "ATTRIBUTION_DAGSTER_URL": self.url, **env_extra}
        done = subprocess.run([str(BIN / "attribution"), "backfill", "--start", hour_key(FIRST),
                               "--end", hour_key(LAST + HOUR)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.split()[1].rstrip(":")

    def wait(self, backfill_id: str, timeout: float) -> str:
        def finished():
            self.check_alive()
            status = graphql(self.url, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]["status"]
            return status if status in DONE else None

        return wait_for(finished, timeout, f"backfill {backfill_id} to finish", interval=1)

    def runs(self, backfill_id: str) -> list[dict]:
        found = graphql(self.url, RUNS, {"id": backfill_id})["runsOrError"]["results"]
        for run_ in found:  # printed, shown if the test fails: why a run failed
            if run_["status"] != "SUCCESS":
                events = graphql(self.url, EVENTS, {"id": run_["runId"]})["runOrError"]["eventConnection"]["events"]
                print(run_["runId"], run_["status"], [e.get("message", "")[:300] for e in events
                                                      if "fail" in e["__typename"].lower() or "Failure" in e["__typename"]])
        return found

    def stop(self, failed: bool) -> None:
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for name, log in self.logs:
            log.close()
            if failed:
                text = (self.tmp / f"{name}.log").read_text(errors="replace")
                print(f"----- {name} (last 4000 characters) -----\n{text[-4000:]}")


@contextmanager
def deployment(tmp: Path, postgres_url: str, mysql_url: str, env_extra: dict[str, str]):
    deploy = Deployment(tmp, postgres_url, mysql_url, env_extra)
    failed = True
    try:
        deploy.up()
        yield deploy
        failed = False
    finally:
        deploy.stop(failed)


def most_at_once(runs: list[dict]) -> int:
    """The most runs whose [start, end] intervals overlap at one moment."""
    edges = sorted([(r["startTime"], 1) for r in runs] + [(r["endTime"], -1) for r in runs], key=lambda e: (e[0], e[1]))
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def ranges(runs: list[dict]) -> list[tuple[str, str]]:
    tags = [{t["key"]: t["value"] for t in r["tags"]} for r in runs]
    return sorted((t[RANGE_START_TAG], t[RANGE_END_TAG]) for t in tags)


EXPECTED_RANGES = [(hour_key(FIRST + i * PER_RUN * HOUR), hour_key(FIRST + ((i + 1) * PER_RUN - 1) * HOUR))
                   for i in range(HOURS // PER_RUN)]


def stored(mysql_url: str):
    engine = database.make_engine(mysql_url)
    with engine.connect() as conn:
        rows = php_engine.stored_rows(conn)
    engine.dispose()
    return rows


def test_multi_run_backfill_on_the_production_layout(tmp_path, postgres_url, mysql_url, source_frames,
                                                     single_run_rows):
    load(database.make_engine(mysql_url), source_frames)
    with deployment(tmp_path, postgres_url, mysql_url, {}) as deploy:
        backfill_id = deploy.backfill({"ATTRIBUTION_MYSQL_WRITE_RUNS": "1"})
        reference = single_run_rows()  # meanwhile
        status = deploy.wait(backfill_id, 420)
        runs = deploy.runs(backfill_id)
        pool = graphql(deploy.url, POOL, {"key": MYSQL_WRITES_POOL})["instance"]["concurrencyLimit"]
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs)
    assert len(runs) == HOURS // PER_RUN, runs
    assert {r["status"] for r in runs} == {"SUCCESS"}
    assert ranges(runs) == EXPECTED_RANGES
    assert pool["slotCount"] == 1  # ATTRIBUTION_MYSQL_WRITE_RUNS, set by `attribution backfill`
    assert most_at_once(runs) == 1  # the backfill tag limit (2) would allow two: the pool held them to one
    rows = stored(mysql_url)
    assert sorted(rows.snapshots) == sorted(reference.snapshots)
    assert sorted(rows.touchpoints) == sorted(reference.touchpoints)


def test_a_failed_range_is_retried_alone_and_the_rows_are_complete(tmp_path, postgres_url, mysql_url, source_frames,
                                                                   single_run_rows):
    load(database.make_engine(mysql_url), source_frames)
    fault_hour = FIRST + 30 * HOUR  # in the second range
    fault = install_dir(tmp_path / "fault", fault_hour, tmp_path / "fault-marker")
    with deployment(tmp_path, postgres_url, mysql_url, {"PYTHONPATH": str(fault)}) as deploy:
        backfill_id = deploy.backfill({"ATTRIBUTION_MYSQL_WRITE_RUNS": "2"})
        reference = single_run_rows()  # meanwhile (computed by the first test when both run)
        status = deploy.wait(backfill_id, 420)
        runs = deploy.runs(backfill_id)
    assert not (tmp_path / "fault-marker").exists(), "the fault never fired"
    failed = [r for r in runs if r["status"] == "FAILURE"]
    assert len(failed) == 1, runs
    assert ranges(failed) == [EXPECTED_RANGES[1]]
    retries = [r for r in runs if r["parentRunId"] == failed[0]["runId"]]
    assert len(retries) == 1 and retries[0]["status"] == "SUCCESS", runs
    assert ranges(retries) == [EXPECTED_RANGES[1]]  # the failed range alone, as its own run
    assert len(runs) == HOURS // PER_RUN + 1
    assert sorted(ranges([r for r in runs if r["status"] == "SUCCESS"])) == EXPECTED_RANGES
    assert most_at_once(runs) <= 2
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs)
    rows = stored(mysql_url)
    assert sorted(rows.snapshots) == sorted(reference.snapshots)
    assert sorted(rows.touchpoints) == sorted(reference.touchpoints)


# ------------------------------------------------------------------------------------------
# The pieces, without processes
# ------------------------------------------------------------------------------------------


def test_hours_per_run_picks_the_backfill_policy_and_the_write_back_is_in_the_pool():
    from attribution_pipeline.definitions import build_definitions
    from pipeline import settings

    for hours, expected in ((0, None), (24, 24)):
        graph = build_definitions(settings(backfill_hours_per_run=hours)).resolve_asset_graph()
        hourly = [k for k in graph.get_all_asset_keys()  # the daily Markov fit (D32) has a job of its own
                  if type(graph.get(k).partitions_def).__name__ == "HourlyPartitionsDefinition"]
        assert {graph.get(k).backfill_policy.max_partitions_per_run for k in hourly} == {expected}
    defs = build_definitions(settings())
    pools = {n.name: n.pool for n in defs.resolve_job_def("attribution_job").graph.node_defs}
    assert pools["attribution_writeback"] == MYSQL_WRITES_POOL


def test_the_schedule_outranks_backfill_runs_and_the_instance_config_says_how():
    from datetime import datetime, timezone

    import dagster as dg

    from attribution_pipeline.automation.schedules import hourly_attribution
    from pipeline import settings

    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2024, 6, 1, 9, 15, tzinfo=timezone.utc),
                                    resources={"settings": settings()})
    assert int(hourly_attribution.evaluate_tick(ctx).run_requests[0].tags["dagster/priority"]) > 0
    from attribution_pipeline.automation.export_queue_runs import export_tags
    from attribution_pipeline.automation.run_priority import PRIORITIES

    assert int(export_tags(7)["dagster/priority"]) == PRIORITIES["export"]
    assert PRIORITIES["schedule"] > PRIORITIES["export"] > PRIORITIES["model_change"] > PRIORITIES["backfill"] == 0
    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_POSTGRES_URL"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    runs = config["concurrency"]["runs"]
    limits = {(t["key"], t.get("value")): t["limit"] for t in runs["tag_concurrency_limits"]}
    assert set(limits) == {("dagster/backfill", None), ("attribution/kind", "export"),
                           ("attribution/kind", "model_change")}
    assert sum(limits.values()) < runs["max_concurrent_runs"]  # a slot is always left for the schedule
    assert config["concurrency"]["pools"]["granularity"] == "run"
    assert config["run_retries"]["enabled"] and config["run_retries"]["max_retries"] >= 1
    workspace = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())
    assert set(workspace["load_from"][0]["grpc_server"]) == {"host", "port", "location_name"}


def test_backfill_command_names_an_unreachable_webserver(capsys):
    from attribution_pipeline.cli import main

    code = main(["backfill", "--start", "2024-06-01T00:00", "--end", "2024-06-02T00:00",
                 "--dagster-url", f"http://user:secret@127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 1
    assert "DagsterApiError" in err and "did not answer" in err
    assert "secret" not in err
