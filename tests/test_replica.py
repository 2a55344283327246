"""The read replica (D30) with real replication: two private MariaDB servers started by the test
(primary -> replica, GTID replication). The large reads go to the replica, every write to the
primary; a replica made to lag (its SQL thread stopped after a payout edit) is waited for up to
ATTRIBUTION_REPLICA_MAX_WAIT_SECONDS, then the primary is read: no stale rows are written."""

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pymysql
from sqlalchemy import select, update

from attribution_pipeline.demo.generator import GeneratorConfig, generate, load
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import database, read_replica, tables
from faults.tcp_proxy import free_port
from oracle import php_engine
from pipeline import HOUR, run

START = 1735689600  # 2025-01-01 00:00 UTC
HOURS = [START + i * HOUR for i in range(4)]
READ_STEPS = ("source_changes", "attribution_models", "conversions", "journeys")
conv = tables.conversion_logs


class Server:
    """A private mariadbd: its own data directory, socket, port and general query log."""

    def __init__(self, root: Path, name: str, server_id: int, *extra: str):
        self.dir = root / name
        self.port = free_port()
        self.log = self.dir / "general.log"
        datadir = self.dir / "data"
        self.dir.mkdir(parents=True)
        root_user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--skip-test-db",
                        "--auth-root-authentication-method=normal", *root_user],
                       check=True, capture_output=True, timeout=120)
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", *root_user, f"--datadir={datadir}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.dir / 'mysqld.sock'}", f"--pid-file={self.dir / 'pid'}",
             f"--server-id={server_id}", f"--log-bin={datadir / 'bin'}", "--binlog-format=ROW",
             "--gtid-strict-mode=1", "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
             "--general-log=1", f"--general-log-file={self.log}", f"--log-error={self.dir / 'error.log'}",
             "--skip-name-resolve", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.query("SELECT 1")
                return
            except pymysql.MySQLError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd {name} did not start: "
                                       + (self.dir / "error.log").read_text()[-2000:]) from None
                time.sleep(0.2)

    def query(self, sql: str, args=None, user: str = "root", password: str = ""):
        conn = pymysql.connect(host="127.0.0.1", port=self.port, user=user, password=password, autocommit=True,
                               connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    def url(self, user: str = "root", password: str = "", db: str = "prosper") -> str:
        auth = f"{user}:{password}" if password else user
        return f"mysql+pymysql://{auth}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


def caught_up(primary: Server, replica: Server, timeout: float = 30) -> None:
    (pos,), = primary.query("SELECT @@GLOBAL.gtid_binlog_pos")
    (got,), = replica.query("SELECT MASTER_GTID_WAIT(%s, %s)", (pos, timeout))
    assert got == 0, f"the replica did not reach {pos}"


def start_pair(root: Path, started: list) -> tuple[Server, Server]:
    """Primary and replica, replicating, with a small Prosper202 database seeded on the primary;
    each server is appended to ``started`` as soon as it runs (the caller stops them)."""
    primary = Server(root, "primary", 1)
    started.append(primary)
    replica = Server(root, "replica", 2, "--read-only=1", "--log-slave-updates=0")
    started.append(replica)
    primary.query("CREATE USER 'repl'@'%' IDENTIFIED BY 'replpw'")
    primary.query("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'")
    primary.query("CREATE DATABASE prosper CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    # the pipeline reads the replica as a user that may only read (replicated from the primary)
    primary.query("CREATE USER 'reader'@'%' IDENTIFIED BY 'r3ader'")
    primary.query("GRANT SELECT ON prosper.* TO 'reader'@'%'")
    replica.query("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER='repl', "
                  "MASTER_PASSWORD='replpw', MASTER_USE_GTID=slave_pos", (primary.port,))
    replica.query("START SLAVE")
    engine = database.make_engine(primary.url())
    tables.create_missing(engine)
    load(engine, generate(GeneratorConfig(seed=21, start=START, hours=len(HOURS), scale=0.2, invalid_models=False)))
    engine.dispose()
    caught_up(primary, replica)
    return primary, replica


def snapshot_rows(url: str):
    engine = database.make_engine(url)
    try:
        with engine.connect() as conn:
            got = php_engine.stored_rows(conn, HOURS)
        return sorted(got.snapshots), sorted(got.touchpoints)
    finally:
        engine.dispose()


def read_from(result) -> dict[str, set[str]]:
    """Per reading step, the servers its materializations say it read (``read_from`` metadata)."""
    found: dict[str, set[str]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        key = mat.asset_key.to_user_string()
        if key in READ_STEPS:
            found.setdefault(key, set()).add(mat.metadata["read_from"].value)
    return found


def wait_seconds(result) -> dict[str, float]:
    return {e.event_specific_data.materialization.asset_key.to_user_string():
            e.event_specific_data.materialization.metadata["replica_wait_seconds"].value
            for e in result.get_asset_materialization_events()
            if e.event_specific_data.materialization.asset_key.to_user_string() in READ_STEPS}


def statements(server: Server, user: str) -> list[str]:
    """The statements the connections of ``user`` sent to ``server`` (its general query log; a
    statement over several lines is one entry)."""
    threads, found, current = set(), [], None
    for line in server.log.read_text(errors="replace").splitlines():
        m = re.match(r"^(?:\d{6}\s+[\d:]+)?\s+(\d+) (Connect|Query|Init DB|Quit|Prepare|Execute|Close stmt)\t?(.*)$",
                     line)
        if not m:
            if current is not None:
                found[current] += "\n" + line
            continue
        thread, kind, rest = m.groups()
        current = None
        if kind == "Connect" and rest.startswith(f"{user}@"):
            threads.add(thread)
        elif kind in ("Query", "Prepare") and thread in threads:
            found.append(rest)
            current = len(found) - 1
    return found


def test_reads_go_to_the_replica_and_a_lagging_replica_is_not_read(tmp_path):
    root, started = tmp_path / "servers", []
    try:
        primary, replica = start_pair(root, started)
        read_url = replica.url("reader", "r3ader")
        # the secret is masked wherever the settings and the database are shown
        shown = Settings.from_env({"ATTRIBUTION_HOME": str(tmp_path), "ATTRIBUTION_DB_URL": primary.url(),
                                   "ATTRIBUTION_DB_READ_URL": read_url})
        assert "r3ader" not in repr(shown) and "r3ader" not in repr(database.Database.from_settings(shown))
        assert shown.db_read_url == read_url and shown.replica_max_wait_seconds == 30.0

        result, report = run(primary.url(), HOURS[0], HOURS[-1], db_read_url=read_url, replica_max_wait_seconds=20)
        assert read_from(result) == {step: {"replica"} for step in READ_STEPS}
        assert report["user_hours_recomputed"] > 0
        reads = statements(replica, "reader")
        assert any("202_conversion_logs" in s and "202_users" in s for s in reads)  # conversions
        assert any("FROM `202_clicks`" in s or "FROM 202_clicks" in s for s in reads)  # click slices
        assert any("202_attribution_models" in s for s in reads)  # models
        assert any("MASTER_GTID_WAIT" in s for s in reads)  # the lag guard
        # nothing but reads on the replica; every write went to the primary and arrived by replication
        assert not [s for s in reads if re.match(r"\s*(INSERT|UPDATE|DELETE|REPLACE|LOAD|CREATE|DROP)", s, re.I)]
        assert not [s for s in statements(primary, "root") if "MASTER_GTID_WAIT" in s]
        caught_up(primary, replica)
        written = snapshot_rows(primary.url())
        assert written[0] and snapshot_rows(replica.url()) == written

        # a replica that lags: its SQL thread stops, then a payout is edited on the primary
        replica.query("STOP SLAVE SQL_THREAD")
        engine = database.make_engine(primary.url())
        with engine.connect() as conn:
            edited = dict(conn.execute(select(conv).where(conv.c.conv_time >= HOURS[2], conv.c.deleted == 0)
                                       .order_by(conv.c.conv_id).limit(1)).one()._mapping)
        with engine.begin() as conn:
            conn.execute(update(conv).where(conv.c.conv_id == edited["conv_id"])
                         .values(click_payout=edited["click_payout"] + 7))
        engine.dispose()
        lagged_at = time.monotonic()
        result, report = run(primary.url(), HOURS[0], HOURS[-1], db_read_url=read_url, replica_max_wait_seconds=1.5)
        assert read_from(result) == {step: {"primary"} for step in READ_STEPS}
        assert all(1.4 <= waited < 15 for waited in wait_seconds(result).values()), wait_seconds(result)
        assert time.monotonic() - lagged_at < 120
        assert report["user_hours_recomputed"] >= 1  # the edit was seen: the replica still has the old payout
        (old_payout,), = replica.query("SELECT click_payout FROM prosper.`202_conversion_logs` WHERE conv_id = %s",
                                       (edited["conv_id"],))
        assert float(old_payout) == float(edited["click_payout"])
        after_lag = snapshot_rows(primary.url())
        assert after_lag != written
        # the rows are those of a full rewrite that reads only the primary
        run(primary.url(), HOURS[0], HOURS[-1], full=True)
        assert snapshot_rows(primary.url()) == after_lag

        # the replica resumes, catches up and is read again
        replica.query("START SLAVE SQL_THREAD")
        caught_up(primary, replica)
        choice = read_replica.choose_reader(database.Database(primary.url(), read_url=read_url, replica_max_wait=5))
        assert (choice.read_from, choice.db.url) == ("replica", read_url)
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
