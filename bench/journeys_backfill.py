"""Journey backfill benchmark (D28): ``attribution journeys backfill`` over every conversion of a
seeded database, wall time and peak RSS, against PHP's ``backfill-conversion-journeys.php``
(37 minutes for 22k conversions over 218k clicks).

    python -m bench.journeys_backfill                 # 22k conversions, 218k clicks, 720 h (PHP's size)
    python -m bench.journeys_backfill --size default  # 100k conversions, 2M clicks, 720 h (bench.run's data)

Seeds ``attr_bench_<tag>`` with the generator as ``bench.run`` does (``--reuse`` keeps it; the
default size shares ``bench.run``'s database), empties ``202_conversion_touchpoints``, waits for
InnoDB to go quiet, then runs the backfill in a child process twice: into the empty table, and
again over its own rows (a rerun replaces every journey). Wall time is the parent's; peak RSS is
the child's own VmHWM. Last, the stored journeys of ``--check`` random conversions are compared
with the independent PHP-rules oracle (``tests/oracle``). Raw output goes to ``bench/out/``.
"""

import argparse
import json
import os
import random
import sys
import time

from bench.proc import measured
from bench.run import HOUR, PY, REPO, START, Bench

SIZES = {"php": (218_000, 22_000), "default": (2_000_000, 100_000)}


def child(args) -> None:
    """Run the backfill (in the measured process) and print its report as one JSON line."""
    from attribution_pipeline.settings import Settings
    from attribution_pipeline.storage import journey_backfill
    from attribution_pipeline.storage.database import Database
    from attribution_pipeline.storage.journey_source import JourneyRule
    from bench.peak import own_peak_mib

    settings = Settings.from_env()
    report = journey_backfill.backfill(Database.from_settings(settings), JourneyRule.from_settings(settings),
                                       args.start, args.end, batch_size=args.batch_size)
    detail = {k: v for k, v in vars(report).items() if k != "stage_seconds"}
    detail["stage_seconds"] = {k: round(v, 2) for k, v in report.stage_seconds.items()}
    print(json.dumps({**detail, "vmhwm_mib": own_peak_mib()}))


def oracle_check(bench: Bench, sample: int, seed: int) -> dict:
    """The stored journeys of ``sample`` random conversions against the oracle's (D2, D13, D15)."""
    from sqlalchemy import text

    sys.path.insert(0, str(REPO / "tests"))
    from oracle import php_engine

    engine = bench.engine()
    with engine.connect() as conn:
        ids = sorted(int(i) for i in conn.execute(text(
            "SELECT c.conv_id FROM `202_conversion_logs` c JOIN `202_users` u ON u.user_id = c.user_id "
            "WHERE c.deleted = 0 AND u.user_deleted = 0")).scalars())
        chosen = sorted(random.Random(seed).sample(ids, min(sample, len(ids))))
        source = php_engine._Source(conn)
        checked = differing = multi = 0
        for conv_id in chosen:
            row = conn.execute(text("SELECT user_id, conv_time FROM `202_conversion_logs` WHERE conv_id = :c"),
                               {"c": conv_id}).one()
            hour = int(row.conv_time) - int(row.conv_time) % HOUR
            conv = next((c for c in source.conversions(int(row.user_id), [hour]) if c.conv_id == conv_id), None)
            want = None
            if conv is not None and source.multi_touch_enabled(conv.user_id, conv.campaign_id):
                want = [(c, t) for c, t in source.journey_from_clicks(conv, 30, 25)]
                multi += 1
            got = [(int(c), int(t)) for c, t in conn.execute(text(
                "SELECT click_id, click_time FROM `202_conversion_touchpoints` WHERE conv_id = :c ORDER BY position"),
                {"c": conv_id})] or None
            checked += 1
            differing += got != want
    return {"conversions_checked": checked, "multi_touch": multi, "differing": differing}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["php", "default"], default="php")
    p.add_argument("--hours", type=int, default=720)
    p.add_argument("--seed", type=int, default=202)
    p.add_argument("--batch-size", type=int, default=5000)
    p.add_argument("--check", type=int, default=1000, help="conversions compared with the oracle (0: none)")
    p.add_argument("--server-url", default=os.environ.get("ATTRIBUTION_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306"))
    p.add_argument("--reuse", action="store_true", help="re-use an already seeded database of the same size")
    p.add_argument("--workdir")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, help=argparse.SUPPRESS)
    p.add_argument("--end", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    clicks, conversions = SIZES[args.size]
    scale = conversions / 100_000
    bench_args = argparse.Namespace(
        clicks=clicks, conversions=conversions, hours=args.hours, users=max(4, round(40 * scale)), seed=args.seed,
        server_url=args.server_url, reuse=args.reuse, workdir=args.workdir, persistent_instance=False,
        chunk_hours=None, tag=f"{clicks // 1000}k_{conversions // 1000}k_{args.hours}h")
    bench = Bench(bench_args)
    bench.seed()
    window = (START, START + args.hours * HOUR)
    results = {"size": args.size, "database": bench.database, "seed": bench.results.get("seed"),
               "batch_size": args.batch_size, "window": window}
    bench.sql("TRUNCATE TABLE `202_conversion_touchpoints`")
    for name in ("into an empty table", "rerun over its own rows"):
        bench.settle(name)
        wall, rss, out = measured([PY, "-m", "bench.journeys_backfill", "--child", "--start", str(window[0]),
                                   "--end", str(window[1]), "--batch-size", str(args.batch_size)],
                                  env=bench.env(bench.work / "home"))
        detail = json.loads(out.strip().splitlines()[-1])
        results[name] = {"wall_s": round(wall, 2), "peak_rss_mib": detail.pop("vmhwm_mib"), **detail}
        print(f"{name}: {wall:.2f} s, peak RSS {results[name]['peak_rss_mib']} MiB, {detail['persisted']:,} journeys, "
              f"{detail['rows_written']:,} rows, stages {detail['stage_seconds']}", flush=True)
    results["rows_stored"] = int(bench.sql("SELECT COUNT(*) FROM `202_conversion_touchpoints`").split()[-1])
    if args.check:
        results["oracle"] = oracle_check(bench, args.check, args.seed)
        print(f"oracle: {results['oracle']}")
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"journeys-{bench_args.tag}-{stamp}.json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
