"""Runs that tell the truth and survive faults (issue 16): real processes, a real MariaDB.

Every test drives the ``attribution`` command as a subprocess (through ``tests/faults/driver.py``
when a fault is installed inside it) over six hours of generated data, one hour per chunk
(``ATTRIBUTION_CHUNK_HOURS=1``: each hour is its own transaction), on a throwaway database that
starts with "old" rows in every hour (``faults/dataset.py``). After each fault:

* every hour is all-or-nothing: it holds its old rows or exactly the rows a clean run writes
  (``faults/observe.py``); the clean rows are computed once per module, by a run without
  faults on the template database;
* no named lock is held (the hours' write locks, the runs' own locks);
* the audit rows are exactly those of the committed chunks (one per (user, model) and chunk);
* the next run (or the run itself, for transient faults) ends with exactly the clean rows.

Faults: SIGKILL before and after a chunk's COMMIT and during the Parquet exports; connections
killed during reads (connectorx and PyMySQL), during LOAD DATA and during the read-back; the
database unreachable for 8 and 60 seconds mid-run (a TCP proxy, ``faults/tcp_proxy.py``); two runs
over overlapping hours while conversions are inserted and soft-deleted; a chunk failing with a
non-transient error, then the failed run resumed.

Each run costs 10-20 s (importing Dagster, creating the run, recording its events), so scenarios
that do not depend on each other run side by side (``gather``): the two clean runs, and the four
transient-fault runs, which share the 60 s outage's wait. The module takes about 4 minutes on
a quiet 2-core machine.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dagster as dg
import polars as pl
import pytest
from sqlalchemy.engine import make_url

from attribution_pipeline.exports.columns import TABLES
from attribution_pipeline.exports.layout import exported_hours, part_path
from attribution_pipeline.storage import database, tables
from conftest import _new_database
from faults import cli_runs, dataset, observe
from faults.cli_runs import CliRun, hour_key, make_homes, rebuild_args
from faults.dataset import ALL_HOURS, HOUR, T0
from faults.killer import ConnectionKiller
from faults.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 240  # seconds: a run takes 10-30 s here; a run through a 60 s outage about 90
CLICK_READ = b"FROM `202_clicks`"
TOUCHPOINT_LOAD = b"INTO TABLE `202_attribution_touchpoints`"
READ_BACK = b"`202_attribution_touchpoints`.touchpoint_id > "  # storage/stored_rows.py inserted_touchpoints


# ------------------------------------------------------------------------------------------
# fixtures: the template database and its clean rows, per-test databases
# ------------------------------------------------------------------------------------------


@dataclass
class Clean:
    template_db: str  # the generated source data and the clean rows of its six hours
    rows: dict  # hour -> observe.HourRows of a clean run over the six hours
    final_rows: dict  # the same over the data as the overlapping-runs test leaves it
    models_of_user: dict[int, set[int]]


def _fresh_database(server) -> tuple[str, str]:
    url = _new_database(server)
    engine = database.make_engine(url)
    tables.create_missing(engine)
    engine.dispose()
    return url, make_url(url).database


def _drop(server, name: str) -> None:
    with server.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(scope="module")
def clean(mysql_server, tmp_path_factory):
    """The template database (seeded once) and what a clean run writes: over the seeded data,
    and over the data after ``dataset.change_source`` (two runs side by side)."""
    template_url, template_db = _fresh_database(mysql_server)
    final_url, final_db = _fresh_database(mysql_server)
    base = tmp_path_factory.mktemp("faults_clean")
    made = []
    try:
        dataset.seed(template_url)
        dataset.copy_source(final_url, template_db)
        dataset.change_source(final_url)

        def clean_run(url: str, name: str) -> None:
            made.append(make_homes(base, name))
            run = cli_runs.run(rebuild_args(url, T0, len(ALL_HOURS)), made[-1], name=name, timeout=RUN_TIMEOUT)
            assert run.returncode == 0, run.describe()

        gather({"clean run": lambda: clean_run(template_url, "clean"),
                "clean run over the changed data": lambda: clean_run(final_url, "clean-final")})
        rows, final_rows = observe.stored_by_hour(template_url), observe.stored_by_hour(final_url)
        assert sorted(rows) == ALL_HOURS and all(  # 12 global rows an hour (scoped ones beside them, D31)
            sum(1 for s in rows[h].snapshots if s[3] == "global") == 12 for h in ALL_HOURS), rows
        assert rows != final_rows
        yield Clean(template_db, rows, final_rows, dataset.models_of_user(template_url))
    finally:
        for h in made:
            h.remove()
        _drop(mysql_server, template_db)
        _drop(mysql_server, final_db)


def prepare(url: str, clean: Clean) -> dict:
    """``url``'s database gets the template's source data and old rows in every hour; returns them."""
    dataset.copy_source(url, clean.template_db)
    dataset.install_old_rows(url, clean.template_db)
    before = observe.stored_by_hour(url)
    assert observe.verdicts(before, before, clean.rows, ALL_HOURS) == {h: "old" for h in ALL_HOURS}
    assert all(before[h] != clean.rows[h] for h in ALL_HOURS)
    return before


@pytest.fixture
def other_database(mysql_server):
    """A second throwaway database with Prosper202's tables (for scenarios run side by side)."""
    names = []

    def make() -> str:
        url, name = _fresh_database(mysql_server)
        names.append(name)
        return url

    yield make
    for name in names:
        _drop(mysql_server, name)


@pytest.fixture
def homes(tmp_path):
    made = []

    def make(name: str) -> cli_runs.Homes:
        made.append(make_homes(tmp_path, name))
        return made[-1]

    yield make
    for h in made:
        h.remove()


# ------------------------------------------------------------------------------------------
# assertions shared by the tests
# ------------------------------------------------------------------------------------------


def dagster_runs(homes: cli_runs.Homes) -> dict[str, dg.DagsterRunStatus]:
    with dg.DagsterInstance.from_config(str(homes.dagster)) as instance:
        return {r.run_id: r.status for r in instance.get_runs()}


def assert_hours(url: str, want: dict, *, context: str = "") -> None:
    """The database holds exactly ``want``'s rows in every hour (and nothing else)."""
    stored = observe.stored_by_hour(url)
    wrong = {hour_key(h): observe.describe_difference(stored.get(h, observe.EMPTY), want[h])
             for h in ALL_HOURS if stored.get(h, observe.EMPTY) != want[h]}
    extra = sorted(h for h in stored if h not in ALL_HOURS)
    assert not wrong and not extra, f"{context}: hours differing from a clean run: {wrong}; other hours: {extra}"


def assert_no_lock_held(url: str, run_ids=()) -> None:
    held = observe.held_locks(url, observe.lock_names(url, ALL_HOURS, run_ids))
    assert held == {}, f"named locks still held (name -> connection id): {held}"


def new_audit_rows(url: str, after_id: int) -> list[dict]:
    return [r for r in observe.audit_rows(url) if r["audit_id"] > after_id]


def assert_audit_of_chunks(rows: list[dict], clean: Clean, hours, *, context: str) -> None:
    """One ``snapshot_rebuild`` row per (user, model) of each committed one-hour chunk, carrying
    that hour's clicks and conversions; none for any other hour."""
    got, want = observe.audit_signature(rows), observe.expected_audit(clean.rows, hours)
    assert got == want, (
        f"{context}: audit rows are not one per (user, model) of each committed chunk "
        f"({len(hours)} chunk(s): {[hour_key(h) for h in hours]}): {sum(got.values())} rows, "
        f"{sum(want.values())} expected; unexpected {dict(got - want)}; missing {dict(want - got)}"
    )


def logged_retries(run: CliRun) -> int:
    """Retries the run logged (its ``db_retry`` events, printed on stderr at WARNING level)."""
    return run.stderr.count('"event":"db_retry"')


def assert_retries_reported(run: CliRun, at_least: int) -> None:
    """The report counts every retried database operation of the run, reads included."""
    report, logged = run.report(), logged_retries(run)
    assert report["db_retries"] >= max(at_least, logged, 1), (
        f"report db_retries {report['db_retries']}; {logged} db_retry events logged, at least {at_least} expected")


def hours_of(ranges) -> set[int]:
    """Hours of ``committed_hours``/``uncommitted_hours`` ranges: [first, last] (or with a reason),
    or {"first_hour", "last_hour", ...}."""
    out = set()
    for item in ranges:
        first, last = (item["first_hour"], item["last_hour"]) if isinstance(item, dict) else (item[0], item[1])
        out |= {h for h in ALL_HOURS if hour_key(h) >= first and hour_key(h) <= last}
    return out


def assert_exports_cover_every_hour(homes: cli_runs.Homes, clean: Clean) -> None:
    for table in TABLES:
        missing = sorted(set(ALL_HOURS) - set(exported_hours(homes.exports, table)))
        assert not missing, f"no {table} export for {[hour_key(h) for h in missing]}"
    counts = {h: pl.read_parquet(part_path(homes.exports, "snapshots", h)).height for h in ALL_HOURS}
    assert counts == {h: len(clean.rows[h].snapshots) for h in ALL_HOURS}, counts


def gather(scenarios: dict) -> dict:
    """Run independent scenarios side by side (threads); every failure is reported, by name."""
    with ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
        futures = {name: pool.submit(fn) for name, fn in scenarios.items()}
        results, failures = {}, []
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as exc:  # noqa: BLE001 - reported below with the others
                failures.append(f"[{name}] {type(exc).__name__}: {exc}")
    assert not failures, "\n\n".join(failures)
    return results


# ------------------------------------------------------------------------------------------
# 1. SIGKILL at commit boundaries and during the exports
# ------------------------------------------------------------------------------------------

KILL_POINTS = [("before_commit", 1), ("after_commit", 3), ("during_exports", 1)]


def committed_before_kill(fault: str, n: int) -> int:
    return {"before_commit": n - 1, "after_commit": n}[fault]


@pytest.mark.parametrize("fault, n", KILL_POINTS, ids=[f"{f}-{n}" for f, n in KILL_POINTS])
def test_sigkill_leaves_whole_hours_and_the_next_run_repairs_them(fault, n, clean, mysql_url, homes):
    before = prepare(mysql_url, clean)
    host = homes("host")  # the killed run and the next one share their homes and Dagster instance
    killed = cli_runs.run(rebuild_args(mysql_url, T0, len(ALL_HOURS)), host, fault=(fault, n), name="killed",
                          timeout=RUN_TIMEOUT)
    assert killed.killed_by_fault, f"the run was not killed at {fault} {n}\n{killed.describe()}"

    # right after the kill: whole hours, the first chunks new, no lock, audit rows of those chunks
    stored = observe.stored_by_hour(mysql_url)
    assert None not in stored, "touchpoints without their snapshot"
    verdict = observe.verdicts(stored, before, clean.rows, ALL_HOURS)
    assert "mixed" not in verdict.values(), {hour_key(h): v for h, v in verdict.items()}
    new = [h for h in ALL_HOURS if verdict[h] == "new"]
    # D35: the first chunk is exported as soon as it commits, while the next chunks are written, so
    # a kill at its first export file finds the first chunk (or the first few) committed
    committed = new[:max(1, len(new))] if fault == "during_exports" else ALL_HOURS[:committed_before_kill(fault, n)]
    assert new == committed == ALL_HOURS[:len(committed)], {hour_key(h): v for h, v in verdict.items()}
    runs = dagster_runs(host)
    assert list(runs.values()) == [dg.DagsterRunStatus.STARTED], runs
    (killed_id,) = runs
    assert_no_lock_held(mysql_url, [killed_id])
    audits = observe.audit_rows(mysql_url)
    assert_audit_of_chunks(audits, clean, committed, context=f"after SIGKILL {fault} {n}")
    assert (observe.cron_stamp(mysql_url) is not None) == bool(committed), "System Checks stamp"

    # the next run over the same hours repairs everything and marks the killed run FAILED
    following = cli_runs.run(rebuild_args(mysql_url, T0, len(ALL_HOURS)), host, name="following",
                             timeout=RUN_TIMEOUT)
    assert following.returncode == 0, following.describe()
    assert_hours(mysql_url, clean.rows, context="after the following run")
    report = following.report()
    assert_no_lock_held(mysql_url, [killed_id, report["run_id"]])
    after = max((r["audit_id"] for r in audits), default=0)
    assert_audit_of_chunks(new_audit_rows(mysql_url, after), clean, ALL_HOURS, context="the following run")
    assert_exports_cover_every_hour(host, clean)
    runs = dagster_runs(host)
    assert runs.get(report["run_id"]) == dg.DagsterRunStatus.SUCCESS, runs
    assert runs.get(killed_id) == dg.DagsterRunStatus.FAILURE, (
        f"the killed run {killed_id} is still {runs.get(killed_id)} after the next run")


# ------------------------------------------------------------------------------------------
# 2. transient faults inside one run: killed connections, outages
# ------------------------------------------------------------------------------------------


def killed_connections_scenario(url: str, clean: Clean, host: cli_runs.Homes, *, reads: str) -> CliRun:
    """Kill a click read, a LOAD DATA and a read-back (once each) during one run: it exits 0 with
    exactly the clean rows, each kill counted in ``db_retries``."""
    with TcpProxy() as proxy, ConnectionKiller(url) as killer:
        # the first read of 202_clicks (held at the gate until killed), a touchpoint LOAD DATA
        watches = [killer.watch("SELECT%`202_clicks`%", name="click read", gate="202_clicks"),
                   killer.watch("LOAD DATA%INTO TABLE `202_attribution_touchpoints`%", name="LOAD DATA")]
        read_back = proxy.on_statement(
            READ_BACK, lambda conn: not killer.kill(conn.thread_id, statement="read-back", by="proxy"))
        run = cli_runs.run(rebuild_args(proxy.url(url), T0, len(ALL_HOURS)), host, name=f"kills-{reads}",
                           fault=("no_connectorx", 0) if reads == "pymysql" else None, timeout=RUN_TIMEOUT)
    for watch in watches:
        assert watch.error is None and watch.kills, f"{watch.name}: never killed ({watch.polls} polls, {watch.error})"
    assert read_back.fired, "the read-back was never sent"
    assert run.returncode == 0, run.describe()
    assert_hours(url, clean.rows, context=f"killed connections ({reads})")
    assert len(dagster_runs(host)) == 1  # the run itself absorbed the kills: no second run
    report = run.report()
    assert_no_lock_held(url, [report["run_id"]])
    assert_audit_of_chunks(observe.audit_rows(url), clean, ALL_HOURS, context=f"killed connections ({reads})")
    # a connection killed twice fails once: the watch's kill can land just after the LOAD DATA ended
    # (the connection idle, not yet gone), and the proxy then kills the same connection again as
    # the read-back that follows on it is sent; so count the connections killed, not the kills
    assert_retries_reported(run, len({kill.thread_id for kill in killer.killed}))
    return run


def outage_scenario(url: str, clean: Clean, host: cli_runs.Homes, *, seconds: int, trigger: bytes,
                    occurrence: int) -> CliRun:
    """The database unreachable for ``seconds`` (every connection cut, new ones refused) from the
    moment the run sends ``trigger``: the run waits it out and exits 0 with the clean rows."""
    with TcpProxy() as proxy:
        pause = proxy.pause_on(trigger, seconds, occurrence=occurrence)
        run = cli_runs.run(rebuild_args(proxy.url(url), T0, len(ALL_HOURS)), host, name=f"outage-{seconds}s",
                           timeout=RUN_TIMEOUT)
        outage_ended = pause.fired[0][0] + seconds if pause.fired else None
        ended = time.monotonic()
    assert pause.fired, f"the run never sent {trigger!r}: no outage happened\n{run.describe()}"
    assert run.returncode == 0, run.describe()
    assert ended >= outage_ended, "the run ended before the outage did"
    assert_hours(url, clean.rows, context=f"{seconds} s outage")
    assert len(dagster_runs(host)) == 1  # the run itself waited the outage out: no second run
    assert_no_lock_held(url, [run.report()["run_id"]])
    assert_audit_of_chunks(observe.audit_rows(url), clean, ALL_HOURS, context=f"{seconds} s outage")
    assert_retries_reported(run, 1)
    return run


def test_transient_faults_are_absorbed_by_the_run_itself(clean, mysql_url, other_database, homes):
    """Four runs side by side, each on its own database, each absorbing its faults with retries:
    exit 0, exactly the clean rows, one run, every retry counted in the report.

    * killed connections, reads through connectorx: a click read, a touchpoint LOAD DATA and a
      read-back, each killed once;
    * the same with every read through PyMySQL (the driver hides connectorx);
    * an 8 s outage from the first click read;
    * a 60 s outage from the second chunk's touchpoint LOAD DATA (the first chunk committed, the
      second in flight); the other runs use its wait.
    """
    urls = [mysql_url, other_database(), other_database(), other_database()]
    for url in urls:
        prepare(url, clean)
    gather({
        "killed connections, connectorx reads": lambda: killed_connections_scenario(
            urls[0], clean, homes("kills-connectorx"), reads="connectorx"),
        "killed connections, PyMySQL reads": lambda: killed_connections_scenario(
            urls[1], clean, homes("kills-pymysql"), reads="pymysql"),
        "8 s outage during the reads": lambda: outage_scenario(
            urls[2], clean, homes("outage-8"), seconds=8, trigger=CLICK_READ, occurrence=1),
        "60 s outage during the writes": lambda: outage_scenario(
            urls[3], clean, homes("outage-60"), seconds=60, trigger=TOUCHPOINT_LOAD, occurrence=2),
    })


# ------------------------------------------------------------------------------------------
# 3. overlapping runs while the source data changes
# ------------------------------------------------------------------------------------------


class Observer:
    """Checks, every ``interval`` seconds until stopped, that every hour was written whole."""

    def __init__(self, url: str, models_of_user: dict, interval: float = 0.25):
        self.url, self.models_of_user, self.interval = url, models_of_user, interval
        self.observations = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Observer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                found = observe.hour_problems(self.url, self.models_of_user)
            except Exception as exc:  # noqa: BLE001 - an observation that fails is a problem too
                found = [f"observation failed: {type(exc).__name__}: {exc}"]
            self.observations += 1
            self.problems += [f"observation {self.observations}: {p}" for p in found]
            self._stop.wait(self.interval)


def wait_for(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def test_overlapping_runs_while_the_source_changes_leave_whole_hours(clean, mysql_url, homes):
    prepare(mysql_url, clean)
    host = homes("host")  # one host: both runs share their homes and Dagster instance
    start_max = observe.max_touchpoint_id(mysql_url)
    first = CliRun(rebuild_args(mysql_url, ALL_HOURS[0], 4), host, name="first")
    second = CliRun(rebuild_args(mysql_url, ALL_HOURS[2], 4), host, name="second")
    changed_while_running = []
    try:
        with Observer(mysql_url, clean.models_of_user) as observer:
            first.start()
            second.start()
            # conversions inserted once a chunk committed, others soft-deleted once another did
            for change in (dataset.insert_conversions, dataset.soft_delete_conversions):
                committed = observe.max_touchpoint_id(mysql_url)
                wait_for(lambda: observe.max_touchpoint_id(mysql_url) > max(committed, start_max)
                         or (first.returncode is not None and second.returncode is not None), RUN_TIMEOUT)
                changed_while_running.append(first.returncode is None or second.returncode is None)
                change(mysql_url)
            codes = {run.name: run.wait(RUN_TIMEOUT) for run in (first, second)}
    finally:
        first.terminate()
        second.terminate()
    assert observer.observations >= 5 and not observer.problems, (
        f"{observer.observations} observations; torn hours: {observer.problems[:20]}")
    assert changed_while_running[0], "the source changed only after both runs had ended"
    for run in (first, second):
        assert codes[run.name] in (0, 2), run.describe()
        if codes[run.name] == 2:
            report = run.report()
            assert report and (report["held_groups"] or report.get("uncommitted_hours")), run.describe()
    run_ids = [r["run_id"] for r in (first.report(), second.report()) if r]
    assert_no_lock_held(mysql_url, run_ids)

    final = cli_runs.run(rebuild_args(mysql_url, T0, len(ALL_HOURS)), host, name="final", timeout=RUN_TIMEOUT)
    assert final.returncode == 0, final.describe()
    assert_hours(mysql_url, clean.final_rows, context="after the final run over the changed data")
    assert observe.hour_problems(mysql_url, clean.models_of_user) == []
    assert_no_lock_held(mysql_url, [*run_ids, final.report()["run_id"]])


# ------------------------------------------------------------------------------------------
# 4. a chunk fails with a non-transient error; the failed run is resumed
# ------------------------------------------------------------------------------------------


def test_resumed_run_rewrites_only_the_chunks_its_parent_did_not_commit(clean, mysql_url, homes):
    before = prepare(mysql_url, clean)
    host = homes("host")
    parent = cli_runs.run(rebuild_args(mysql_url, T0, len(ALL_HOURS)), host, fault=("fail_write", 3),
                          name="parent", timeout=RUN_TIMEOUT)
    assert "FAULT fail_write 3" in parent.stderr, parent.describe()
    assert parent.returncode == 2, parent.describe()
    report = parent.report()
    committed, uncommitted = hours_of(report["committed_hours"]), hours_of(report["uncommitted_hours"])
    assert ALL_HOURS[2] in uncommitted and not committed & uncommitted, report
    assert committed | uncommitted == set(ALL_HOURS), report
    assert all("IntegrityError" in item["reason"] if isinstance(item, dict) else "IntegrityError" in str(item)
               for item in report["uncommitted_hours"] if hour_key(ALL_HOURS[2]) in str(item)), report
    assert hour_key(ALL_HOURS[2]) in parent.stdout and "IntegrityError" in parent.stdout, parent.describe()
    verdict = observe.verdicts(observe.stored_by_hour(mysql_url), before, clean.rows, ALL_HOURS)
    assert verdict == {h: "new" if h in committed else "old" for h in ALL_HOURS}, verdict
    audits = observe.audit_rows(mysql_url)
    assert_audit_of_chunks(audits, clean, sorted(committed), context="the failed run")
    ids_before = observe.touchpoint_ids_by_hour(mysql_url)
    assert_no_lock_held(mysql_url, [report["run_id"]])

    resumed = cli_runs.run(["resume", "--db-url", mysql_url, report["run_id"]], host, name="resume",
                           timeout=RUN_TIMEOUT)
    assert resumed.returncode == 0, resumed.describe()
    resumed_report = resumed.report()
    assert resumed_report["chunks_resumed"] == len(committed), resumed_report
    assert resumed_report["chunks_committed"] == len(uncommitted), resumed_report
    assert_hours(mysql_url, clean.rows, context="after the resumed run")
    ids_after = observe.touchpoint_ids_by_hour(mysql_url)
    kept = [hour_key(h) for h in ALL_HOURS if ids_after[h] == ids_before[h]]
    assert kept == [hour_key(h) for h in sorted(committed)], "hours not rewritten by the resumed run"
    assert all(ids_after[h].isdisjoint(ids_before[h]) for h in uncommitted)
    after = max((r["audit_id"] for r in audits), default=0)
    assert_audit_of_chunks(new_audit_rows(mysql_url, after), clean, sorted(uncommitted), context="the resumed run")
    assert_no_lock_held(mysql_url, [report["run_id"], resumed_report["run_id"]])
