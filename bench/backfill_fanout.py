"""Fanned-out backfills: the default 720-hour benchmark as ONE run, and as multi-run backfills of
24 and 168 hours per run (issue 20: ``ATTRIBUTION_BACKFILL_HOURS_PER_RUN``).

    python -m bench.backfill_fanout --reuse          # the database bench.run seeds (seeds it if missing)
    python -m bench.backfill_fanout --scale 0.1      # smaller

Each run is its own ``attribution rebuild --start --end`` process (``bench.cli_peak``: exactly what
the console script runs, then the process's own VmHWM), started one after the other, each range as
a run launcher would start a backfill's run in a fresh process; the ranges are those
``BackfillPolicy.multi_run(N)`` makes (N consecutive hours, the last range shorter). The runs are
sequential, as they are through the daemon when the ``attribution_mysql_writes`` pool has one slot
(or one worker): the wall time is the sum, and two at once would at best halve it on two cores
for the compute, never for the one MariaDB disk. Each process records its run in an in-memory
Dagster instance, as ``attribution rebuild`` without ``DAGSTER_HOME`` does (no daemon, no
PostgreSQL: the per-run costs of queueing and launching through a deployment are not in here).

Before each scenario every state table of the pipeline is emptied (``Bench.reset_outputs``), so
every scenario writes every row, and the server is left to settle (``Bench.settle``, at most ``SETTLE_S``; the 1-minute load average is
recorded before and after each scenario). The rows
written are counted after each scenario: they must be equal whatever the fan-out. Run it from a
snapshot of one commit (``git archive``) when others change the working tree: each child imports
the code as it is when it starts.

Per-run overhead is measured twice, after the scenarios (every hour then written and unchanged):
a run over 24 unchanged hours (incremental, D22: fingerprints compared, nothing recomputed or
written) and a run over 24 hours before the data (nothing to read); three of each.
"""

import argparse
import json
import os
import statistics
import time

from bench.proc import measured
from bench.run import HOUR, PY, START, Bench

#: At most this long waiting for InnoDB's background writes to stop before a scenario: on a server
#: other work keeps busy they never stop, and bench.run's 600 s would only add idle time.
SETTLE_S = 90.0
OUTPUTS = ("202_attribution_snapshots", "202_attribution_touchpoints")


def ranges(first: int, hours: int, per_run: int) -> list[tuple[int, int]]:
    """[start, end) epoch ranges of ``per_run`` hours (0: one range) covering ``hours`` hours."""
    end = first + hours * HOUR
    step = (per_run or hours) * HOUR
    return [(start, min(start + step, end)) for start in range(first, end, step)]


class Fanout:
    def __init__(self, bench: Bench):
        self.bench = bench
        self.results = bench.results

    def rebuild(self, home, start: int, end: int) -> dict:
        """One ``attribution rebuild`` process over [start, end): wall, the child's own VmHWM."""
        home.mkdir(parents=True, exist_ok=True)
        wall, _, out = measured([PY, "-m", "bench.cli_peak", "rebuild", "--start", str(start), "--end", str(end)],
                                env=self.bench.env(home))
        figures = json.loads(out.strip().splitlines()[-1])
        return {"start": start, "hours": (end - start) // HOUR, "wall_s": round(wall, 2),
                "peak_rss_mib": figures["vmhwm_mib"], "exit_code": figures["exit_code"]}

    def rows(self) -> dict:
        counts = {t: int(self.bench.sql(f"SELECT COUNT(*) FROM `{t}`").split()[-1]) for t in OUTPUTS}
        revenue = self.bench.sql("SELECT COALESCE(SUM(attributed_revenue), 0) FROM `202_attribution_snapshots`")
        return {**counts, "revenue_sum": revenue.split()[-1]}

    def scenario(self, per_run: int) -> dict:
        """A backfill of every hour with ``per_run`` hours per run (0: one run), in sequence."""
        name = f"per-run-{per_run or 'all'}"
        home = self.bench.work / name
        self.bench.reset_outputs()
        self.bench.settle(name, timeout_s=SETTLE_S)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        runs = []
        for start, end in ranges(START, self.bench.hours, per_run):
            runs.append(self.rebuild(home, start, end))
            print(f"    {name}: {runs[-1]}", flush=True)
        total = time.perf_counter() - started
        peaks = [r["peak_rss_mib"] for r in runs]
        walls = [r["wall_s"] for r in runs]
        return {"hours_per_run": per_run or self.bench.hours, "runs": len(runs), "total_wall_s": round(total, 1),
                "run_wall_s": {"min": min(walls), "median": statistics.median(walls), "max": max(walls)},
                "peak_rss_mib": {"min": min(peaks), "median": statistics.median(peaks), "max": max(peaks)},
                "exit_codes": sorted({r["exit_code"] for r in runs}), "rows": self.rows(),
                "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)], "each": runs}

    def overhead(self, samples: int = 3) -> dict:
        """Runs that do (almost) nothing: 24 unchanged hours, and 24 hours before the data."""
        home = self.bench.work / "overhead"
        self.bench.settle("overhead", timeout_s=SETTLE_S)
        unchanged = [self.rebuild(home, START + 24 * HOUR, START + 48 * HOUR) for _ in range(samples)]
        empty = [self.rebuild(home, START - 48 * HOUR, START - 24 * HOUR) for _ in range(samples)]

        def summary(runs):
            return {"wall_s": [r["wall_s"] for r in runs], "median_wall_s": statistics.median(r["wall_s"] for r in runs),
                    "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}

        return {"unchanged_24h": summary(unchanged), "empty_24h": summary(empty),
                "import_only_s": self.import_only()}

    def import_only(self) -> float:
        """Interpreter start + importing the package's definitions (Dagster, Polars): the floor of
        any process that starts a run."""
        wall, _, _ = measured([PY, "-c", "import attribution_pipeline.definitions"], env=self.bench.env(self.bench.work))
        return round(wall, 2)

    def run(self, per_runs: list[int]) -> None:
        self.bench.seed()
        self.results["server"] = self.bench.sql("SELECT @@version, @@innodb_buffer_pool_size").strip()
        self.results["scenarios"] = {}
        for per_run in per_runs:
            print(f"backfill of {self.bench.hours} hours, {per_run or 'all'} hours per run ...", flush=True)
            self.results["scenarios"][per_run] = self.scenario(per_run)
        print("per-run overhead ...", flush=True)
        self.results["overhead"] = self.overhead()
        self.bench.write_out(self.report(), prefix="fanout")

    def report(self) -> str:
        r = self.results
        seed = r.get("seed", {}).get("rows", {})
        lines = ["", f"data: {seed.get('202_clicks', '?')} clicks, {seed.get('202_conversion_logs', '?')} conversions in "
                 f"{self.bench.hours} hours; server {r['server']}; settle (s): {r.get('settle_s')}",
                 f"{'hours per run':>14} {'runs':>5} {'total wall s':>13} {'run wall s (min/median/max)':>30} "
                 f"{'peak RSS MiB (min/median/max)':>31} {'snapshots':>10} {'touchpoints':>12} {'load 1m':>12}"]
        for s in r["scenarios"].values():
            w, p, rows = s["run_wall_s"], s["peak_rss_mib"], s["rows"]
            lines.append(f"{s['hours_per_run']:>14} {s['runs']:>5} {s['total_wall_s']:>13} "
                         f"{w['min']:>10}/{w['median']}/{w['max']:<8} {p['min']:>12}/{p['median']}/{p['max']:<8} "
                         f"{rows['202_attribution_snapshots']:>10} {rows['202_attribution_touchpoints']:>12} "
                         f"{str(s['loadavg_1m']):>12}")
        o = r["overhead"]
        lines.append(f"per-run overhead: 24 unchanged hours {o['unchanged_24h']}; 24 empty hours {o['empty_24h']}; "
                     f"interpreter + imports {o['import_only_s']} s")
        rows = {s["hours_per_run"]: s["rows"] for s in r["scenarios"].values()}
        same = len({json.dumps(v, sort_keys=True) for v in rows.values()}) == 1
        lines.append(f"rows written (counts, revenue sum) {'EQUAL' if same else 'DIFFER'} across fan-outs: {rows}")
        return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies clicks and conversions (default 2M / 100k)")
    p.add_argument("--hours", type=int, default=720)
    p.add_argument("--per-run", type=int, nargs="+", default=[0, 168, 24], help="hours per run (0: one run)")
    p.add_argument("--seed", type=int, default=202)
    p.add_argument("--server-url", default=os.environ.get("ATTRIBUTION_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306"))
    p.add_argument("--reuse", action="store_true", help="re-use the database bench.run seeded (same size)")
    p.add_argument("--workdir")
    args = p.parse_args()
    args.clicks = round(2_000_000 * args.scale)
    args.conversions = round(100_000 * args.scale)
    args.users = max(4, round(40 * args.scale))
    args.tag = f"{args.clicks // 1000}k_{args.conversions // 1000}k_{args.hours}h"
    args.persistent_instance = False
    args.chunk_hours = None
    Fanout(Bench(args)).run(args.per_run)


if __name__ == "__main__":
    main()
