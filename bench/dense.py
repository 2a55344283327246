"""Dense benchmark profile: 72 hours of journeys at the 25-touch cap, cold and hourly steady state.

    python -m bench.dense                     # 72 h, 2.3M clicks, 200k conversions, 13 models, 3 users
    python -m bench.dense --scale 0.02        # the same shape, 2% of the clicks and conversions
    python -m bench.dense --reuse             # keep the seeded database attr_bench_dense_<size>

The data (``bench/dense_data.py``): 3 users with 2 campaigns each, every campaign equally busy,
so nearly every journey is at the cap (25 clicks, 26 with an old converting click), and 13 active
models (5 + 4 + 4): ~92 touchpoint rows per conversion, ~18M over 72 hours at full size.

In one invocation, on that data, each measured thing in its own process (wall time from the
parent; peak RSS is the child's own ``VmHWM``, see ``bench/cli_peak.py``), after InnoDB has
stopped writing in the background (``Bench.settle``):

1. **cold 72 h**: ``attribution rebuild`` (the command line, in-memory Dagster instance) over the
   72 hours, every state table of the pipeline empty (:meth:`Bench.state_tables`: every table
   of ``storage/tables.py`` that is not a source table, read at run time) and a fresh
   ``ATTRIBUTION_HOME`` (no frames, no exports); its SELECTs are recorded (``ATTRIBUTION_RECORD_SQL``);
2. **I/O floor** of (1), the recipe of ``bench.run`` (a): the ``mariadb`` client replays the
   recorded SELECTs, output discarded, then ``LOAD DATA LOCAL INFILE`` (default session settings)
   loads exactly the snapshot and touchpoint rows (1) wrote into fresh copies of the two tables
   (``CREATE TABLE ... LIKE``: the DDL ``init-db`` created);
3. **cold 24 h**: the trailing 24 hours, state tables emptied again, fresh ``ATTRIBUTION_HOME``;
4. **steady state**: the same trailing-24-hour ``attribution rebuild``, same ``ATTRIBUTION_HOME``
   as (3), ``--repeats`` times with no source change, then once after adding 1 to
   ``click_payout`` of the conversions of one hour (``--edit-hour``, counted from the first of the
   24; parameterised UPDATE, undone afterwards, untimed). Each run's JSON report (the command writes
   it under ``ATTRIBUTION_HOME/reports``) gives the rows written and, when the pipeline reports
   them, ``groups_written``, ``groups_unchanged``, ``user_hours_skipped`` and ``hours_exported``
   ("n/a" otherwise).

``ATTRIBUTION_CHUNK_HOURS`` is unset in every run (the pipeline's default) unless
``--chunk-hours`` is given. Results: a markdown table on stdout, raw JSON and the table in
``bench/out/dense-*`` (not committed).
"""

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from bench.dense_data import dense_config, generate_dense
from bench.proc import measured
from bench.run import HOUR, PY, START, Bench

#: Counters of the write-back report printed for the steady-state runs when present.
COUNTERS = ("groups_written", "groups_unchanged", "user_hours_skipped", "hours_exported")


def find_key(data, key: str):
    """The value of ``key`` anywhere in a JSON document (first found, depth first), else None."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        values = data.values()
    elif isinstance(data, list):
        values = data
    else:
        return None
    for value in values:
        found = find_key(value, key)
        if found is not None:
            return found
    return None


class DenseBench(Bench):
    def seed(self):
        if self.fresh_database():
            a = self.args
            cfg = dense_config(seed=a.seed, start=START, hours=a.hours, clicks=a.clicks, conversions=a.conversions,
                               users=a.users, campaigns_per_user=a.campaigns_per_user)
            self.load_frames(lambda: generate_dense(cfg))

    def fresh_home(self, name: str) -> Path:
        home = self.work / name
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        return home

    def rebuild(self, name: str, first: int, hours: int, home: Path, record: Path | None = None) -> dict:
        """One ``attribution rebuild`` over ``hours`` hours from ``first``, measured; its report's figures."""
        reports = home / "reports"
        before = set(reports.glob("*.json")) if reports.exists() else set()
        self.settle(name)
        wall, _, out = measured([PY, "-m", "bench.cli_peak", "rebuild", "--start", str(first),
                                 "--end", str(first + hours * HOUR)], env=self.env(home, record))
        child = json.loads(out.strip().splitlines()[-1])
        new = sorted(set(reports.glob("*.json")) - before, key=lambda p: p.stat().st_mtime)
        report = json.loads(new[-1].read_text()) if new else {}
        keys = ("outcome", "conversions", "snapshots_written", "touchpoints_written", "snapshots_deleted",
                "touchpoints_deleted", "seconds", "stage_seconds")
        result = {"wall_s": round(wall, 2), "peak_rss_mib": child["vmhwm_mib"], "exit_code": child["exit_code"],
                  "hours": hours, **{k: report.get(k) for k in keys},
                  "counters": {k: find_key(report, k) for k in COUNTERS}, "report": str(new[-1]) if new else None}
        print(f"    {name}: {result['wall_s']} s, peak RSS {result['peak_rss_mib']} MiB, exit {result['exit_code']}, "
              f"{result['touchpoints_written']} touchpoints written; "
              + ", ".join(f"{k} {_shown(v)}" for k, v in result["counters"].items()), flush=True)
        return result

    def cold(self, name: str, first: int, hours: int, record: bool = False) -> dict:
        self.reset_outputs()
        home = self.fresh_home(name)
        result = self.rebuild(name, first, hours, home, home / "reads.sql" if record else None)
        return {**result, "home": str(home)}

    def edit_hour(self, hour: int, delta: int) -> int:
        """Add ``delta`` to ``click_payout`` of the conversions of ``hour`` (parameterised); rows changed."""
        from sqlalchemy import text

        with self.engine().begin() as conn:
            return conn.execute(text("UPDATE `202_conversion_logs` SET click_payout = click_payout + :delta "
                                     "WHERE conv_time >= :lo AND conv_time < :hi"),
                                {"delta": delta, "lo": hour, "hi": hour + HOUR}).rowcount

    def steady(self, home: Path, first: int) -> dict:
        a = self.args
        runs = [self.rebuild(f"steady-{i + 1}", first, a.steady_hours, home) for i in range(a.repeats)]
        hour = first + a.edit_hour * HOUR
        edited = self.edit_hour(hour, 1)
        print(f"    edited click_payout of {edited} conversions of hour {hour} (+1)", flush=True)
        try:
            after = self.rebuild("steady-edited", first, a.steady_hours, home)
        finally:
            self.edit_hour(hour, -1)
        return {"unchanged": runs, "edited": {**after, "edited_hour": hour, "edited_conversions": edited}}

    # --------------------------------------------------------------------------------------
    def run(self):
        self.seed()
        info = self.sql("SELECT @@version, @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit, @@max_allowed_packet")
        self.results["server"] = info.strip().splitlines()[-1]
        a = self.args
        trailing = START + (a.hours - a.steady_hours) * HOUR
        self.results["pairs"] = []
        for i in range(a.pairs):  # each cold run followed by its own floor: the server's speed drifts
            label = f" (pair {i + 1} of {a.pairs})" if a.pairs > 1 else ""
            print(f"(1) cold: attribution rebuild over {a.hours} hours, empty state tables{label} ...", flush=True)
            cold = self.cold(f"cold-all-{i + 1}" if i else "cold-all", START, a.hours, record=True)
            print(f"    state tables emptied: {', '.join(self.results['state_tables'])}", flush=True)
            print(f"(2) I/O floor of (1){label} ...", flush=True)
            floor = self.io_floor(Path(cold["home"]))
            print(f"    {floor}; ratio {cold['wall_s'] / max(floor['wall_s'], 1e-9):.2f}", flush=True)
            self.results["pairs"].append({"cold": cold, "floor": floor})
        first = self.results["pairs"][0]
        self.results["cold_all"], self.results["io_floor"] = first["cold"], first["floor"]
        print(f"(3) cold: the trailing {a.steady_hours} hours, empty state tables ...", flush=True)
        self.results["cold_trailing"] = self.cold("cold-trailing", trailing, a.steady_hours)
        print(f"(4) steady state: the trailing {a.steady_hours} hours again, {a.repeats}x unchanged, then one "
              "hour edited ...", flush=True)
        self.results["steady"] = self.steady(Path(self.results["cold_trailing"]["home"]), trailing)
        self.report()

    def report(self):
        text = "\n".join(report_lines(self.results, self.args))
        self.write_out(text, prefix="dense")


def _shown(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _row(label: str, r: dict) -> str:
    c = r["counters"]
    return (f"| {label} | {r['wall_s']} | {r['peak_rss_mib']:,} | {_shown(r['conversions'])} | "
            f"{_shown(r['touchpoints_written'])} | {_shown(r['touchpoints_deleted'])} | "
            + " | ".join(_shown(c[k]) for k in COUNTERS) + " |")


def report_lines(r: dict, a) -> list[str]:
    f, cold, warm = r["io_floor"], r["cold_all"], r["cold_trailing"]
    steady = r["steady"]["unchanged"]
    edited = r["steady"]["edited"]
    rows = r.get("seed", {}).get("rows", {})
    lines = [
        "",
        f"data: {_shown(rows.get('202_clicks'))} clicks, {_shown(rows.get('202_conversion_logs'))} conversions in "
        f"{a.hours} hours, {a.users} users x {a.campaigns_per_user} campaigns, {_shown(rows.get('202_attribution_models'))} "
        f"models; ATTRIBUTION_* settings the runs saw: {r.get('tuning_env') or 'none (defaults)'}; server (version, buffer pool, "
        f"flush_log_at_trx_commit, max_allowed_packet): {r['server']}",
        f"state tables emptied before each cold run: {', '.join(r.get('state_tables', []))}",
        f"waited for InnoDB's background writes to stop before each measurement (s): {r.get('settle_s', {})}",
        "",
        "| measure | wall s | peak RSS MiB | conversions | touchpoints written | touchpoints deleted | "
        + " | ".join(COUNTERS) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(COUNTERS),
        f"| I/O floor of the cold {a.hours} h run: client reads ({f['rows_read']:,} rows) | {f['reads_s']} | | | | |"
        + " |" * len(COUNTERS),
        f"| I/O floor: LOAD DATA of the rows written ({f['rows_written']:,} rows) | {f['writes_s']} | | | | |"
        + " |" * len(COUNTERS),
        f"| **I/O floor total** | **{f['wall_s']}** | | | | |" + " |" * len(COUNTERS),
        _row(f"**cold {a.hours} h** (`attribution rebuild`, empty tables)", cold),
    ]
    for i, pair in enumerate(r.get("pairs", [])[1:], start=2):
        pf, pc = pair["floor"], pair["cold"]
        lines.append(f"| pair {i}: I/O floor (reads {pf['reads_s']} + LOAD DATA {pf['writes_s']}) | {pf['wall_s']} | | | | |"
                     + " |" * len(COUNTERS))
        lines.append(_row(f"pair {i}: cold {a.hours} h", pc))
    lines.append(_row(f"cold trailing {a.steady_hours} h (reference)", warm))
    lines += [_row(f"steady {a.steady_hours} h, no source change, run {i + 1}", s) for i, s in enumerate(steady)]
    lines.append(_row(f"steady {a.steady_hours} h, {edited['edited_conversions']:,} conversions of one hour edited",
                      edited))
    median = statistics.median(s["wall_s"] for s in steady)
    ratios = [p["cold"]["wall_s"] / max(p["floor"]["wall_s"], 1e-9) for p in r.get("pairs", [])] or \
        [cold["wall_s"] / max(f["wall_s"], 1e-9)]
    shown = ", ".join(f"{x:.2f}" for x in ratios)
    lines += [
        "",
        f"cold {a.hours} h / I/O floor = {shown}" + (f" (median {statistics.median(ratios):.2f})" if len(ratios) > 1 else ""),
        f"steady (median of {len(steady)}) / cold trailing {a.steady_hours} h = {median / warm['wall_s']:.2f}; "
        f"edited / cold trailing = {edited['wall_s'] / warm['wall_s']:.2f}",
        f"touchpoints per conversion (cold {a.hours} h): "
        f"{(cold['touchpoints_written'] or 0) / max(cold['conversions'] or 0, 1):.1f}",
        "write-back stages, cold (s): " + json.dumps(cold.get("stage_seconds")),
        "write-back stages, steady run 1 (s): " + json.dumps(steady[0].get("stage_seconds") if steady else None),
        "write-back stages, edited (s): " + json.dumps(edited.get("stage_seconds")),
    ]
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies clicks and conversions (2.3M / 200k)")
    p.add_argument("--clicks", type=int)
    p.add_argument("--conversions", type=int)
    p.add_argument("--hours", type=int, default=72)
    p.add_argument("--steady-hours", type=int, default=24, help="the trailing hours rebuilt by the steady state")
    p.add_argument("--repeats", type=int, default=3, help="steady-state runs with no source change")
    p.add_argument("--pairs", type=int, default=1,
                   help="cold runs over --hours, each followed by its own I/O floor (the median ratio is reported)")
    p.add_argument("--edit-hour", type=int, default=12, help="which of the trailing hours is edited (0-based)")
    p.add_argument("--users", type=int, default=3)
    p.add_argument("--campaigns-per-user", type=int, default=2)
    p.add_argument("--chunk-hours", type=int, help="ATTRIBUTION_CHUNK_HOURS (default: unset, the pipeline's default)")
    p.add_argument("--seed", type=int, default=202)
    p.add_argument("--server-url", default=os.environ.get("ATTRIBUTION_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306"))
    p.add_argument("--tag", help="database suffix (default from the size)")
    p.add_argument("--reuse", action="store_true", help="re-use an already seeded database of the same tag")
    p.add_argument("--workdir")
    p.add_argument("--persistent-instance", action="store_true",
                   help="record the runs in a SQLite Dagster instance under each run's ATTRIBUTION_HOME")
    args = p.parse_args()
    args.clicks = args.clicks or round(2_300_000 * args.scale)
    args.conversions = args.conversions or round(200_000 * args.scale)
    if (not 0 < args.steady_hours <= args.hours or not 0 <= args.edit_hour < args.steady_hours or args.repeats < 1
            or args.pairs < 1):
        p.error("need 0 < --steady-hours <= --hours, 0 <= --edit-hour < --steady-hours, --repeats >= 1 and --pairs >= 1")
    args.tag = args.tag or f"dense_{args.clicks // 1000}k_{args.conversions // 1000}k_{args.hours}h"
    started = time.perf_counter()
    DenseBench(args).run()
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
