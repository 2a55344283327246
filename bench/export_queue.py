"""Export queue benchmark: one CSV and one XLSX export of 1M snapshot rows, wall time and peak RSS.

    python -m bench.export_queue                 # 1,000,000 rows (10 per hour over 100,000 hours)
    python -m bench.export_queue --rows 100000   # smaller
    python -m bench.export_queue --keep          # leave the database (attr_bench_export_<rows>) behind

It creates its own database on the server (``--server-url``, default
``$ATTRIBUTION_BENCH_MYSQL_URL`` or root on 127.0.0.1:3306), seeds one user, one model and
``--rows`` synthetic global snapshot rows of that model (MariaDB's sequence engine: one
``INSERT ... SELECT``), and queues two exports over every hour: ``csv`` and ``xlsx``. Each export
is processed by :func:`process_export` in its own child process (``--child``): the parent measures
the wall time (interpreter start-up and imports included), the child reports its own peak RSS
(``VmHWM``: ``wait4``'s ``ru_maxrss`` would include the parent's RSS at fork) and the row count.
The target is a peak RSS under 300 MiB whatever the row count (the rows are streamed in pages).
The database is dropped at the end unless ``--keep``; the files are written to a temporary folder
and removed.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.proc import measured

H0 = 1262304000  # 2010-01-01 00:00 UTC
ROWS_PER_HOUR = 10


def seed(url: str, rows: int) -> tuple[int, int]:
    """Tables, one user and model, ``rows`` snapshot rows, and the two exports; their ids."""
    from sqlalchemy import text

    from attribution_pipeline.storage import database, tables

    engine = database.make_engine(url)
    tables.create_missing(engine)
    last_hour = H0 + (rows - 1) // ROWS_PER_HOUR * 3600
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO 202_users (user_id, user_name) VALUES (1, 'bench')"))
        conn.execute(text("INSERT INTO 202_attribution_models (model_id, user_id, model_name, model_slug, model_type, "
                          "weighting_config, is_active, is_default, created_at, updated_at) "
                          "VALUES (1, 1, 'bench', 'bench', 'last_touch', '{}', 1, 1, 1, 1)"))
        conn.execute(text(
            "INSERT INTO 202_attribution_snapshots (snapshot_id, model_id, user_id, scope_type, scope_id, date_hour, "
            "lookback_start, lookback_end, attributed_clicks, attributed_conversions, attributed_revenue, "
            "attributed_cost, created_at) "
            "SELECT seq, 1, 1, 'global', NULL, :h0 + ((seq - 1) DIV :per) * 3600, :h0 + ((seq - 1) DIV :per) * 3600 "
            "- 3600, :h0 + ((seq - 1) DIV :per) * 3600 + 3599, seq MOD 7, seq MOD 3, (seq MOD 100000) / 8, "
            "(seq MOD 977) / 3, :h0 + ((seq - 1) DIV :per) * 3600 + 7200 "
            f"FROM seq_1_to_{int(rows)}"), {"h0": H0, "per": ROWS_PER_HOUR})
        ids = []
        for fmt in ("csv", "xlsx"):
            ids.append(conn.execute(text(
                "INSERT INTO 202_attribution_exports (user_id, model_id, scope_type, scope_id, start_hour, end_hour, "
                "requested_format, status, queued_at, created_at, updated_at) "
                "VALUES (1, 1, 'global', NULL, :s, :e, :f, 'pending', 1, 1, 1)"),
                {"s": H0, "e": last_hour, "f": fmt}).lastrowid)
    engine.dispose()
    return ids[0], ids[1]


def child(url: str, export_id: int, files_dir: str) -> int:
    """Process one export in this process; print its outcome and this process's peak RSS."""
    import logging

    from attribution_pipeline.export_queue.worker import process_export
    from attribution_pipeline.settings import Settings
    from attribution_pipeline.storage.database import Database
    from bench.peak import own_peak_mib

    settings = Settings(home=Path(files_dir), db_url=url, export_files_dir=Path(files_dir))
    started = time.perf_counter()
    result = process_export(Database.from_settings(settings), settings, export_id, log=logging.getLogger("bench"))
    size = Path(result.file_path).stat().st_size if result.file_path else 0
    print(json.dumps({"outcome": result.outcome, "reason": result.reason, "rows": result.rows_exported,
                      "file_bytes": size, "export_seconds": round(time.perf_counter() - started, 2),
                      "vmhwm_mib": own_peak_mib()}), flush=True)
    return 0 if result.outcome == "completed" else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--server-url", default=os.environ.get("ATTRIBUTION_BENCH_MYSQL_URL",
                                                          "mysql+pymysql://root@127.0.0.1:3306"))
    p.add_argument("--keep", action="store_true", help="keep the database")
    p.add_argument("--child", nargs=3, metavar=("URL", "EXPORT_ID", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2])

    import pymysql
    from sqlalchemy.engine import make_url

    server = make_url(args.server_url)
    name = f"attr_bench_export_{args.rows}"
    admin = pymysql.connect(host=server.host or "127.0.0.1", port=server.port or 3306, user=server.username or "root",
                            password=server.password or "", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")  # the benchmark's own database, by its fixed name
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    url = server.set(database=name).render_as_string(hide_password=False)
    files = Path(tempfile.mkdtemp(prefix="attr-export-bench-"))
    started = time.perf_counter()
    csv_id, xlsx_id = seed(url, args.rows)
    print(f"seeded {args.rows:,} snapshot rows in {time.perf_counter() - started:.1f} s ({name})", flush=True)
    report = {"rows": args.rows, "database": name}
    try:
        for kind, export_id in (("csv", csv_id), ("xlsx", xlsx_id)):
            wall, _, out = measured([sys.executable, "-m", "bench.export_queue", "--child", url, str(export_id),
                                     str(files)])
            figures = json.loads(out.strip().splitlines()[-1]) | {"wall_seconds": round(wall, 2)}
            report[kind] = figures
            print(f"{kind}: {figures['outcome']}, {figures['rows']:,} rows, {figures['file_bytes'] / 2**20:.1f} MiB, "
                  f"wall {wall:.1f} s (export {figures['export_seconds']} s), peak RSS {figures['vmhwm_mib']} MiB",
                  flush=True)
    finally:
        shutil.rmtree(files, ignore_errors=True)
        if not args.keep:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
    print(json.dumps(report), flush=True)
    ok = all(report.get(k, {}).get("outcome") == "completed" for k in ("csv", "xlsx"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
