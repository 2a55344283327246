"""Backfill benchmark: a month of hours as one run, against the I/O floor, on the same data.

    python -m bench.run                      # 720 hours, 2M clicks, 100k conversions, 6 models/account
    python -m bench.run --scale 0.1          # smaller
    python -m bench.run --clicks 10000000 --conversions 1000000
    python -m bench.run --clicks 10000000 --conversions 1000000 --memory-only   # (b) alone

In one invocation, on one seeded MariaDB database (``attr_bench_<tag>``, re-used with
``--reuse``), it measures:

(a) the I/O floor: the ``mariadb`` command-line client reading exactly the rows the pipeline
    reads (the pipeline's own SELECTs, recorded while (b) runs, replayed with output discarded)
    plus ``LOAD DATA LOCAL INFILE`` of exactly the rows the pipeline wrote, into copies of the
    output tables;
(b) the pipeline's range run over all hours as ONE Dagster run (recorded in a temporary Dagster
    instance), and the same for the first half of the hours (memory must not grow with the range);
(c) one Dagster run per hour (each in its own process, as a run launcher would) for a sample of
    hours, extrapolated to all hours;
(d) the credit computation alone (every model, every chunk), without I/O.

Each measured thing runs in its own process: wall time is measured by the parent; peak RSS is the
child's own VmHWM, reported by the child (``wait4``'s ``ru_maxrss`` would include the parent's RSS
at fork, which Linux carries into the child across ``exec``). Before each measurement that
touches the server the parent waits until InnoDB has stopped writing in the background (under
256 KiB/s over 5 s), so that no measurement competes with the seeding's background writes.
"""

import argparse
import compileall
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.proc import measured

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
START = 1735689600  # 2025-01-01 00:00 UTC
HOUR = 3600


class Bench:
    def __init__(self, args):
        from sqlalchemy.engine import make_url

        self.args = args
        self.server = make_url(args.server_url)
        self.database = f"attr_bench_{args.tag}"
        self.url = self.server.set(database=self.database).render_as_string(hide_password=False)
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="attr-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.hours = args.hours
        self.results: dict = {"config": vars(args) | {"database": self.database}}
        # the measured processes import the package compiled, as an installed one is (pip compiles
        # on install); where PYTHONDONTWRITEBYTECODE is set, each would compile ~150 modules (~0.25 s)
        compileall.compile_dir(str(REPO / "attribution_pipeline"), quiet=1)

    # --------------------------------------------------------------------------------------
    def mariadb_cmd(self, *extra):
        cmd = ["mariadb", f"--host={self.server.host or '127.0.0.1'}", f"--port={self.server.port or 3306}",
               f"--user={self.server.username or 'root'}", "--local-infile=1", "--quick", "--batch", "--skip-column-names"]
        if self.server.password:
            cmd.append(f"--password={self.server.password}")
        return [*cmd, *extra, self.database]

    def sql(self, statement: str) -> str:
        return subprocess.run(self.mariadb_cmd("-e", statement), capture_output=True, text=True, check=True).stdout

    def engine(self):
        from attribution_pipeline.storage import database

        return database.make_engine(self.url)

    def env(self, home: Path, record: Path | None = None) -> dict:
        env = dict(os.environ)
        env.update(ATTRIBUTION_HOME=str(home), ATTRIBUTION_DB_URL=self.url, PYTHONPATH=str(REPO))
        env.pop("DAGSTER_HOME", None)
        if self.args.persistent_instance:  # record runs in a SQLite Dagster instance, as `dagster dev` does
            env["DAGSTER_HOME"] = str(home / "dagster")
            (home / "dagster").mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / "dagster.yaml", home / "dagster" / "dagster.yaml")
        env.pop("ATTRIBUTION_RECORD_SQL", None)
        env.pop("ATTRIBUTION_CHUNK_HOURS", None)  # the pipeline's default unless --chunk-hours
        if self.args.chunk_hours:
            env["ATTRIBUTION_CHUNK_HOURS"] = str(self.args.chunk_hours)
        if record:
            env["ATTRIBUTION_RECORD_SQL"] = str(record)
        plumbing = {"ATTRIBUTION_HOME", "ATTRIBUTION_DB_URL", "ATTRIBUTION_DB_URL_FILE", "ATTRIBUTION_RECORD_SQL",
                    "ATTRIBUTION_ALERT_WEBHOOK_URL", "ATTRIBUTION_BENCH_MYSQL_URL"}
        self.results["tuning_env"] = {k: v for k, v in sorted(env.items())
                                      if k.startswith("ATTRIBUTION_") and k not in plumbing}
        return env

    # --------------------------------------------------------------------------------------
    def seed(self):
        from attribution_pipeline.demo.generator import GeneratorConfig, generate

        if self.fresh_database():
            cfg = GeneratorConfig(seed=self.args.seed, start=START, hours=self.hours, clicks=self.args.clicks,
                                  conversions=self.args.conversions, users=self.args.users, models="main6")
            self.load_frames(lambda: generate(cfg))

    def fresh_database(self) -> bool:
        """Create the benchmark database (dropping an earlier one), or keep it with ``--reuse``:
        whether it needs seeding. Any table the pipeline defines and a kept database lacks is created."""
        from sqlalchemy import create_engine, text

        from attribution_pipeline.storage import tables

        admin = self.server.set(database=None).render_as_string(hide_password=False)
        with create_engine(admin).connect() as conn:
            exists = conn.execute(text("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = :n"),
                                  {"n": self.database}).scalar()
            if exists and self.args.reuse:
                print(f"re-using database {self.database}")
                tables.create_missing(self.engine())
                rows = {t: int(self.sql(f"SELECT COUNT(*) FROM `{t}`").split()[-1]) for t in ("202_clicks", "202_conversion_logs", "202_attribution_models")}
                self.results["seed"] = {"rows": rows, "reused": True}
                return False
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{self.database}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        tables.create_missing(self.engine())
        return True

    def load_frames(self, make_frames) -> None:
        """Generate (``make_frames()``: table name -> frame) and load the source tables."""
        from attribution_pipeline.demo.generator import load
        from attribution_pipeline.storage import tables

        engine = self.engine()
        started = time.perf_counter()
        frames = make_frames()
        generated = time.perf_counter() - started
        # load 202_clicks without its secondary indexes, then build them in one pass (this is the
        # benchmark's own fresh database; the pipeline itself never alters a table)
        prep = engine.dialect.identifier_preparer
        with engine.begin() as conn:
            for index in tables.clicks.indexes:
                index.drop(conn)
        counts = load(engine, frames)
        adds = ", ".join(
            f"ADD INDEX {prep.quote(ix.name)} ({', '.join(prep.quote(c.name) for c in ix.columns)})"
            for ix in sorted(tables.clicks.indexes, key=lambda i: i.name)
        )
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {prep.format_table(tables.clicks)} {adds}")
        self.results["seed"] = {"rows": counts, "generate_s": round(generated, 1),
                                "load_s": round(time.perf_counter() - started - generated, 1)}
        print(f"seeded {self.database}: {counts['202_clicks']:,} clicks, {counts['202_conversion_logs']:,} conversions "
              f"in {time.perf_counter() - started:.0f}s", flush=True)

    def state_tables(self) -> list[str]:
        """Every table the pipeline defines that is not a Prosper202 source table and exists here: its
        output tables and any state table of its own (read from ``storage/tables.py`` at run time)."""
        from attribution_pipeline.storage import tables

        existing = set(self.sql(f"SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                f"'{self.database}'").split("\n"))
        return [t.name for t in tables.metadata.sorted_tables if t not in tables.SOURCE_TABLES and t.name in existing]

    def reset_outputs(self):
        """Empty every state table of the pipeline, so that a run writes every row."""
        names = self.state_tables()
        self.results["state_tables"] = names
        self.sql(" ".join(f"TRUNCATE TABLE `{name}`;" for name in names))

    def settle(self, what: str, timeout_s: float = 600.0, quiet_bytes_per_s: int = 256 * 1024) -> None:
        """Wait until InnoDB has stopped writing in the background, so that each measurement starts on
        a quiet server: right after seeding, the server spends minutes writing the new tables back,
        and a run measured then competes with it (the same code's range run took 164.7 s right after a
        fresh seed, its write-back 70.8 s, and 118.8-120.3 s on a quiet server, write-back 49.5-50.7 s). Quiet means under
        ``quiet_bytes_per_s`` written over 5 s (a few hundred pages may stay dirty for good)."""
        def written() -> int:
            return int(self.sql("SHOW GLOBAL STATUS LIKE 'Innodb_data_written'").split()[-1])

        started = time.perf_counter()
        before = written()
        while time.perf_counter() - started < timeout_s:
            time.sleep(5)
            now = written()
            if now - before < quiet_bytes_per_s * 5:
                break
            before = now
        self.results.setdefault("settle_s", {})[what] = round(time.perf_counter() - started, 1)

    # --------------------------------------------------------------------------------------
    def pipeline_run(self, name: str, first: int, last: int, record: bool = False):
        home = self.work / name
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        recorded = home / "reads.sql" if record else None
        self.reset_outputs()
        self.settle(name)
        wall, rss, out = measured(
            [PY, "-m", "bench.pipeline_run", "--db-url", self.url, "--first", str(first), "--last", str(last),
             "--report", str(home / "report.json")],
            env=self.env(home, recorded),
        )
        detail = json.loads(out.strip().splitlines()[-1])
        return {"wall_s": round(wall, 2), "peak_rss_mib": detail.get("vmhwm_mib") or round(rss), "wait4_maxrss_mib": round(rss),
                "hours": (last - first) // HOUR + 1, **detail, "home": str(home)}

    def io_floor(self, home: Path):
        """(a): the pipeline's reads replayed by the mariadb client + LOAD DATA of its writes."""
        reads = home / "reads.sql"
        rows_out = home / "floor_reads.tsv"
        self.settle("floor reads")
        read_wall, _, _ = measured(self.mariadb_cmd(), stdin_path=str(reads), stdout_path=str(rows_out))
        rows_read = sum(1 for _ in open(rows_out))
        rows_out.unlink()
        # the rows the pipeline wrote, in the order it wrote them, loaded into copies of the tables
        import connectorx as cx

        from attribution_pipeline.storage.frame_io import connectorx_uri

        written = {}
        for table, cols in (
            ("202_attribution_snapshots", "model_id, user_id, scope_type, scope_id, date_hour, lookback_start, "
             "lookback_end, attributed_clicks, attributed_conversions, attributed_revenue, attributed_cost, created_at"),
            ("202_attribution_touchpoints", "snapshot_id, conv_id, click_id, position, credit, weight, created_at"),
        ):
            df = cx.read_sql(connectorx_uri(self.engine()), f"SELECT {cols} FROM `{table}` ORDER BY 1",
                             return_type="polars")
            path = home / f"{table}.csv"
            df.write_csv(path, include_header=False, null_value="\\N")
            written[table] = (path, cols, df.height)
        statements = []
        for table, (path, cols, _) in written.items():
            statements.append(f"DROP TABLE IF EXISTS `floor_{table}`; CREATE TABLE `floor_{table}` LIKE `{table}`; ")
        self.sql("".join(statements))
        self.settle("floor writes")
        load = "; ".join(
            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE `floor_{table}` FIELDS TERMINATED BY ',' "
            f"OPTIONALLY ENCLOSED BY '\"' ({cols})"
            for table, (path, cols, _) in written.items()
        )
        write_wall, _, _ = measured(self.mariadb_cmd("-e", load))
        self.sql("; ".join(f"DROP TABLE `floor_{t}`" for t in written))
        rows_written = sum(n for _, _, n in written.values())
        return {"reads_s": round(read_wall, 2), "rows_read": rows_read, "writes_s": round(write_wall, 2),
                "rows_written": rows_written, "wall_s": round(read_wall + write_wall, 2)}

    def credits_only(self, home: Path, chunk_hours: int):
        wall, rss, out = measured([PY, "-m", "bench.credits_only", "--frames", str(home / "frames"),
                                   "--first", str(START), "--last", str(START + (self.hours - 1) * HOUR),
                                   "--chunk-hours", str(chunk_hours)], env=self.env(home))
        detail = json.loads(out.strip().splitlines()[-1])
        return {**detail, "process_wall_s": round(wall, 2), "peak_rss_mib": detail.get("vmhwm_mib") or round(rss)}

    def per_hour(self):
        sample = self.args.sample_hours
        step = max(1, self.hours // sample)
        hours = [START + (i * step + step // 2) * HOUR for i in range(sample)]
        runs = []
        self.reset_outputs()
        for hour in hours:
            self.settle(f"hour {hour}")
            home = self.work / f"hour-{hour}"
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            wall, rss, out = measured(
                [PY, "-m", "bench.pipeline_run", "--db-url", self.url, "--first", str(hour), "--last", str(hour),
                 "--report", str(home / "report.json")], env=self.env(home))
            detail = json.loads(out.strip().splitlines()[-1])
            runs.append({"hour": hour, "wall_s": round(wall, 2), "peak_rss_mib": detail.get("vmhwm_mib") or round(rss),
                         "run_wall_s": detail["wall_s"]})
            shutil.rmtree(home, ignore_errors=True)
        mean = sum(r["wall_s"] for r in runs) / len(runs)
        return {"sampled_hours": len(runs), "mean_s_per_hour": round(mean, 2),
                "extrapolated_s": round(mean * self.hours, 1), "runs": runs,
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}

    # --------------------------------------------------------------------------------------
    def run(self):
        self.seed()
        info = self.sql("SELECT @@version, @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit, @@max_allowed_packet")
        self.results["server"] = info.strip().splitlines()[-1]
        last = START + (self.hours - 1) * HOUR
        print("(b) range run over all hours as one run ...", flush=True)
        full = self.pipeline_run("range", START, last, record=not self.args.memory_only)
        self.results["b_range_run"] = full
        print(f"    {full['wall_s']}s, peak RSS {full['peak_rss_mib']} MiB, chunk {full['chunk_hours']} h", flush=True)
        if self.args.memory_only:
            return self.report_memory_only()
        print("(a) I/O floor ...", flush=True)
        self.results["a_io_floor"] = self.io_floor(Path(full["home"]))
        print(f"    {self.results['a_io_floor']}", flush=True)
        print("(d) credit computation alone ...", flush=True)
        self.results["d_credits_only"] = self.credits_only(Path(full["home"]), full["chunk_hours"])
        print(f"    {self.results['d_credits_only']}", flush=True)
        if not self.args.skip_half:
            print("(b') range run over the first half of the hours ...", flush=True)
            half = self.pipeline_run("range-half", START, START + (self.hours // 2 - 1) * HOUR)
            self.results["b_half_range_run"] = half
            print(f"    {half['wall_s']}s, peak RSS {half['peak_rss_mib']} MiB", flush=True)
        if not self.args.skip_per_hour:
            print(f"(c) one run per hour, {self.args.sample_hours} sampled hours ...", flush=True)
            self.results["c_per_hour"] = self.per_hour()
        self.report()

    def report(self):
        r = self.results
        a, b = r["a_io_floor"], r["b_range_run"]
        written = (b.get("touchpoints_written") or 0) + (b.get("snapshots_written") or 0)
        lines = [
            "",
            f"data: {r.get('seed', {}).get('rows', {}).get('202_clicks', '?')} clicks, "
            f"{b.get('conversions')} conversions in {self.hours} hours; chunk {b.get('chunk_hours')} h; "
            f"ATTRIBUTION_* settings the runs saw: {r.get('tuning_env') or 'none (defaults)'}; "
            f"server (version, buffer pool, flush_log_at_trx_commit, max_allowed_packet): {r['server']}",
            f"waited for InnoDB's background writes to stop before each measurement (s): {r.get('settle_s', {})}",
            f"{'measure':58} {'wall s':>8} {'peak RSS MiB':>13} {'rows/s':>12}",
            f"{'(a) I/O floor: mariadb client reads (same queries)':58} {a['reads_s']:>8} {'':>13} {a['rows_read'] / max(a['reads_s'], 1e-9):>12,.0f}",
            f"{'(a) I/O floor: LOAD DATA of the rows written':58} {a['writes_s']:>8} {'':>13} {a['rows_written'] / max(a['writes_s'], 1e-9):>12,.0f}",
            f"{'(a) I/O floor total':58} {a['wall_s']:>8}",
            f"{'(b) pipeline, all hours as one run':58} {b['wall_s']:>8} {b['peak_rss_mib']:>13} {written / b['wall_s']:>12,.0f}",
        ]
        if "b_half_range_run" in r:
            h = r["b_half_range_run"]
            lines.append(f"{'(b) pipeline, first half of the hours as one run':58} {h['wall_s']:>8} {h['peak_rss_mib']:>13}")
        if "c_per_hour" in r:
            c = r["c_per_hour"]
            lines.append(f"{'(c) one run per hour (' + str(c['sampled_hours']) + ' sampled, extrapolated)':58} "
                         f"{c['extrapolated_s']:>8} {c['peak_rss_mib']:>13}")
        d = r["d_credits_only"]
        lines.append(f"{'(d) credits stage alone, steady state (median pass)':58} {d['seconds']:>8} {d['peak_rss_mib']:>13} "
                     f"{d['journey_touches_per_s']:>12,.0f}  journey touches/s ({d['credits_per_s']:,.0f} credits/s)")
        lines.append(f"{'(d) credits stage alone, first pass':58} {d['first_pass_s']:>8} {'':>13} "
                     f"{d['first_pass_journey_touches_per_s']:>12,.0f}  journey touches/s")
        lines.append(f"{'(d) strategies alone, steady state (median pass)':58} {d['strategies_only_s']:>8} {'':>13} "
                     f"{d['strategies_journey_touches_per_s']:>12,.0f}  journey touches/s "
                     f"({d['strategies_credits_per_s']:,.0f} credits/s)")
        lines.append("")
        lines.append(f"(b)/(a) = {b['wall_s'] / a['wall_s']:.2f}   (target <= 2)")
        if "c_per_hour" in r:
            lines.append(f"(c)/(b) = {r['c_per_hour']['extrapolated_s'] / b['wall_s']:.1f}")
        if "b_half_range_run" in r:
            lines.append(f"peak RSS all hours / first half = {b['peak_rss_mib'] / r['b_half_range_run']['peak_rss_mib']:.2f}   (target <= 1.15)")
        lines.append("")
        lines.append("where (b) spends its time, per Dagster step (s): " + json.dumps(b["steps_s"]))
        lines.append("write-back stages (s): " + json.dumps(b["writeback_stages_s"]))
        lines.append("journeys (s, counts): " + json.dumps(b["journeys"]))
        self.write_out("\n".join(lines))

    def report_memory_only(self):
        b = self.results["b_range_run"]
        self.write_out(f"\ndata: {self.results['seed']['rows'].get('202_clicks')} clicks, {b.get('conversions')} "
                       f"conversions in {self.hours} hours; chunk {b.get('chunk_hours')} h; ATTRIBUTION_* settings "
                       f"the run saw: {self.results['tuning_env'] or 'none (defaults)'}\n(b) all hours as one run: {b['wall_s']} s, "
                       f"peak RSS {b['peak_rss_mib']} MiB\nsteps (s): {json.dumps(b['steps_s'])}\n"
                       f"steps' peak RSS (MiB, sampled every 20 ms): {json.dumps(b.get('step_peak_rss_mib'))}")

    def write_out(self, text: str, prefix: str = "results") -> None:
        """Print ``text``; write it and the raw results to ``bench/out/`` (not committed)."""
        print(text)
        out = REPO / "bench" / "out"
        out.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (out / f"{prefix}-{self.args.tag}-{stamp}.json").write_text(json.dumps(self.results, indent=1, default=str))
        (out / f"{prefix}-{self.args.tag}-{stamp}.txt").write_text(text + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies clicks and conversions (default 2M / 100k)")
    p.add_argument("--clicks", type=int)
    p.add_argument("--conversions", type=int)
    p.add_argument("--hours", type=int, default=720)
    p.add_argument("--users", type=int, help="accounts (default 40 x scale)")
    p.add_argument("--chunk-hours", type=int, help="ATTRIBUTION_CHUNK_HOURS for the runs (default: unset, the pipeline's default)")
    p.add_argument("--sample-hours", type=int, default=6)
    p.add_argument("--seed", type=int, default=202)
    p.add_argument("--server-url", default=os.environ.get("ATTRIBUTION_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306"))
    p.add_argument("--tag", help="database suffix (default from the size)")
    p.add_argument("--reuse", action="store_true", help="re-use an already seeded database of the same tag")
    p.add_argument("--skip-half", action="store_true")
    p.add_argument("--skip-per-hour", action="store_true")
    p.add_argument("--memory-only", action="store_true", help="only (b), for its wall time and peak RSS: no SQL "
                   "recording, no floor, no (b'), (c) or (d)")
    p.add_argument("--workdir")
    p.add_argument("--persistent-instance", action="store_true",
                   help="record the runs in a SQLite Dagster instance (default: in-memory, as `attribution rebuild` "
                   "without DAGSTER_HOME); Dagster's per-partition bookkeeping then dominates (bench/RESULTS.md)")
    args = p.parse_args()
    args.clicks = args.clicks or round(2_000_000 * args.scale)
    args.conversions = args.conversions or round(100_000 * args.scale)
    args.users = args.users or max(4, round(40 * args.scale))
    args.tag = args.tag or f"{args.clicks // 1000}k_{args.conversions // 1000}k_{args.hours}h"
    Bench(args).run()


if __name__ == "__main__":
    main()
