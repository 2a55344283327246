"""Write paths into a copy of ``202_attribution_touchpoints``: LOAD DATA batches, row order, session
settings, DELETE shapes.

    python -m bench.write_paths                      # 2M rows
    python -m bench.write_paths --rows 200000 --rows-per-snapshot 2000

On its own database (``attr_bench_write_paths``, created if missing; ``--database``), in a table
``write_probe`` created from the pipeline's definition of ``202_attribution_touchpoints``
(``storage/tables.py``: the DDL ``init-db`` creates, same keys and indexes), fresh for every
measurement. Rows are touchpoint-shaped: ``--rows-per-snapshot`` rows per ``snapshot_id`` (the
dense profile writes ~20k per (model, user, hour)), 25 positions per ``conv_id``, scattered
``click_id``s. Every measurement runs on a new connection, in ONE transaction ending in COMMIT (as
the pipeline writes a chunk), after InnoDB has stopped writing in the background; CSV files are
written before the clock starts.

* **LOAD DATA LOCAL INFILE** at several batch sizes (one statement per batch), rows ordered by
  (snapshot_id, conv_id, position) and in a random order, default session settings;
* **session settings**, ordered rows, ``--session-batch`` rows per statement:
  ``tx_isolation='READ-COMMITTED'`` (safe: see RESULTS.md) and ``unique_checks=0,
  foreign_key_checks=0`` into the empty table and into a table that already has one row (NOT safe
  for a shared table: see RESULTS.md; measured only to show what it would buy). The session-scope
  ``innodb_*`` variables of the server are listed: none of them changes how rows are written;
* **DELETE** of the rows of the middle third of the snapshots: ``snapshot_id IN (all ids)`` in one
  statement (what the write-back does), ``IN`` batches of ``--delete-batch`` ids, ``snapshot_id
  BETWEEN`` (a range of the secondary index) and ``touchpoint_id BETWEEN`` (a primary-key range);
* **concurrent writers**: while a LOAD DATA or DELETE is uncommitted, does another session's
  one-row INSERT of a new snapshot wait (2 s lock wait timeout)?
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl
import pymysql
from sqlalchemy import URL, MetaData, create_engine
from sqlalchemy.pool import NullPool

from attribution_pipeline.storage import tables

PROBE = "write_probe"
COLUMNS = "snapshot_id, conv_id, click_id, position, credit, weight, created_at"
SETTINGS = {
    "default": [],
    "READ-COMMITTED": ["SET SESSION tx_isolation = 'READ-COMMITTED'"],
    "unique_checks=0, foreign_key_checks=0 (NOT safe)": ["SET SESSION unique_checks = 0",
                                                         "SET SESSION foreign_key_checks = 0"],
}


def touchpoint_rows(n: int, per_snapshot: int, seed: int) -> pl.DataFrame:
    i = pl.int_range(n, dtype=pl.Int64, eager=True)
    units = (i * 7_919 % 99_999 + 1).cast(pl.Float64) / 100_000
    return pl.DataFrame({
        "snapshot_id": i // per_snapshot + 1,
        "conv_id": i // 25 + 1,
        "click_id": (i * 2_654_435_761 + seed) % 1_000_000_007 + 4_300_000_000,
        "position": i % 25,
        "credit": units,
        "weight": units,
        "created_at": pl.repeat(1_735_689_600, n, dtype=pl.Int64, eager=True),
    })


def write_batches(df: pl.DataFrame, size: int, folder: Path, name: str) -> list[Path]:
    paths = []
    for k, offset in enumerate(range(0, df.height, size)):
        path = folder / f"{name}-{k:05d}.csv"
        df.slice(offset, size).write_csv(path, include_header=False, float_precision=5)
        paths.append(path)
    return paths


class Probe:
    def __init__(self, args):
        self.args = args
        self.connect_args = dict(host=args.host, port=args.port, user=args.user, password=args.password or "",
                                 local_infile=True, autocommit=False)
        server = pymysql.connect(**{k: v for k, v in self.connect_args.items() if k != "local_infile"})
        with server.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{args.database}` CHARACTER SET utf8mb4 "
                        "COLLATE utf8mb4_general_ci")
        server.close()
        self.connect_args["database"] = args.database
        # the table as init-db creates it (tables.create_missing: CREATE TABLE, then its indexes)
        self.table = tables.attribution_touchpoints.to_metadata(MetaData(), name=PROBE)
        url = URL.create("mysql+pymysql", username=args.user, password=args.password or None, host=args.host,
                         port=args.port, database=args.database)
        self.engine = create_engine(url, poolclass=NullPool)

    def connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(**self.connect_args)

    def query(self, sql: str) -> list[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                rows = list(cur.fetchall())
            conn.commit()
            return rows
        finally:
            conn.close()

    def fresh_table(self, rows_first: list[Path] = ()) -> None:
        """An empty ``write_probe`` (Prosper202's DDL), then the files ``rows_first`` loaded, untimed."""
        self.query(f"DROP TABLE IF EXISTS `{PROBE}`")
        self.table.create(self.engine)
        if rows_first:
            self.timed(rows_first, [])

    def settle(self) -> float:
        """Wait (at most ``--settle-timeout`` s) until InnoDB writes under 256 KiB/s over 5 s."""
        started = time.perf_counter()

        def written() -> int:
            return int(self.query("SHOW GLOBAL STATUS LIKE 'Innodb_data_written'")[0][1])

        before = written()
        while time.perf_counter() - started < self.args.settle_timeout:
            time.sleep(5)
            now = written()
            if now - before < 256 * 1024 * 5:
                break
            before = now
        return time.perf_counter() - started

    def timed(self, files: list[Path], session: list[str], statements: list[tuple[str, tuple]] = ()) -> dict:
        """``session``, then LOAD DATA of each of ``files`` or each of ``statements``, then COMMIT: seconds, rows."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                for sql in session:
                    cur.execute(sql)
                rows = 0
                started = time.perf_counter()
                for path in files:
                    rows += cur.execute(f"LOAD DATA LOCAL INFILE %s INTO TABLE `{PROBE}` FIELDS TERMINATED BY ',' "
                                        f"({COLUMNS})", (str(path),))
                for sql, params in statements:
                    rows += cur.execute(sql, params)
                conn.commit()
                return {"seconds": round(time.perf_counter() - started, 3), "rows": rows}
        finally:
            conn.close()


def measure_loads(probe: Probe, df: pl.DataFrame, folder: Path) -> list[dict]:
    a, out = probe.args, []
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=a.seed)
    sizes = sorted({min(s, df.height) for s in a.batches} | {df.height})  # and all rows in one statement
    for order, frame in (("ordered", df), ("random order", shuffled)):
        for size in sizes:
            files = write_batches(frame, size, folder, f"{order[:3]}-{size}")
            probe.fresh_table()
            wait = probe.settle()
            result = probe.timed(files, [])
            out.append({"kind": "load", "order": order, "batch": size, "statements": len(files),
                        "session": "default", **result, "settle_s": round(wait, 1)})
            print(f"    load, {order}, {size:,} rows per statement: {result['seconds']} s", flush=True)
            for path in files:
                path.unlink()
    files = write_batches(df, min(a.session_batch, df.height), folder, "session")
    first_row = write_batches(df.head(1), 1, folder, "first-row")
    for name, session in list(SETTINGS.items())[1:]:
        targets = [("empty table", [])] + ([("table holding 1 row", first_row)] if "unique_checks" in name else [])
        for target, preload in targets:
            probe.fresh_table(preload)
            wait = probe.settle()
            result = probe.timed(files, session)
            out.append({"kind": "load", "order": "ordered", "batch": min(a.session_batch, df.height),
                        "statements": len(files), "session": f"{name}, {target}", **result,
                        "settle_s": round(wait, 1)})
            print(f"    load, session {name}, {target}: {result['seconds']} s", flush=True)
    return out


def delete_statements(lo: int, hi: int, first: int, last: int, k: int) -> list[tuple[str, list[tuple[str, tuple]]]]:
    """(shape, statements) deleting the rows of snapshots ``lo``..``hi`` (touchpoint ids ``first``..``last``)."""
    ids = list(range(lo, hi + 1))
    t = f"DELETE FROM `{PROBE}` WHERE "

    def in_list(chunk):
        return (t + f"snapshot_id IN ({', '.join(['%s'] * len(chunk))})", tuple(chunk))

    return [
        (f"snapshot_id IN ({len(ids)} ids), one statement (the write-back's shape)", [in_list(ids)]),
        (f"snapshot_id IN (...), {k} ids per statement", [in_list(ids[i:i + k]) for i in range(0, len(ids), k)]),
        ("snapshot_id BETWEEN lo AND hi (secondary index range)", [(t + "snapshot_id BETWEEN %s AND %s", (lo, hi))]),
        ("touchpoint_id BETWEEN lo AND hi (primary key range)", [(t + "touchpoint_id BETWEEN %s AND %s", (first, last))]),
    ]


def measure_deletes(probe: Probe, df: pl.DataFrame, folder: Path) -> list[dict]:
    """Each DELETE shape on a fresh table holding all rows, deleting the middle third of the snapshots."""
    snapshots = int(df.get_column("snapshot_id").max())
    lo = snapshots // 3 + 1
    hi = max(lo, 2 * snapshots // 3)
    files = write_batches(df, min(probe.args.session_batch, df.height), folder, "delete")
    out = []
    for index in range(4):
        probe.fresh_table(files)
        first, last = probe.query(f"SELECT MIN(touchpoint_id), MAX(touchpoint_id) FROM `{PROBE}` "
                                  f"WHERE snapshot_id BETWEEN {lo} AND {hi}")[0]
        name, statements = delete_statements(lo, hi, first, last, probe.args.delete_batch)[index]
        wait = probe.settle()
        result = probe.timed([], [], statements)
        out.append({"kind": "delete", "shape": name, "statements": len(statements), "snapshots": hi - lo + 1,
                    **result, "settle_s": round(wait, 1)})
        print(f"    delete, {name}: {result['rows']:,} rows in {result['seconds']} s", flush=True)
    return out


def waits(probe: Probe, session: list[str], preload: list[Path], action: tuple[str, tuple], snapshot: int) -> str:
    """Whether a second session's one-row INSERT (``snapshot``) waits while ``action`` (after ``session``,
    on a table holding ``preload``) is uncommitted: "waits" (lock wait timeout, 2 s) or "goes through"."""
    probe.fresh_table(preload)
    loader, other = probe.connect(), probe.connect()
    try:
        with loader.cursor() as cur:
            for sql in session:
                cur.execute(sql)
            cur.execute(*action)
        with other.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 2")
            try:
                cur.execute(f"INSERT INTO `{PROBE}` ({COLUMNS}) VALUES (%s, 1, 1, 0, 0.5, 0.5, 0)", (snapshot,))
                other.commit()
                return "goes through"
            except pymysql.err.OperationalError as error:
                if error.args[0] != 1205:
                    raise
                return "waits (lock wait timeout)"
    finally:
        loader.rollback()
        loader.close()
        other.close()


def measure_waits(probe: Probe, folder: Path) -> list[dict]:
    """Does a concurrent writer of the table wait for the loader's or deleter's transaction?"""
    df = touchpoint_rows(3_000, 100, probe.args.seed)  # snapshots 1..30
    rows, one = write_batches(df, 3_000, folder, "waits"), write_batches(df.head(1), 1, folder, "waits-one")
    load = (f"LOAD DATA LOCAL INFILE %s INTO TABLE `{PROBE}` FIELDS TERMINATED BY ',' ({COLUMNS})", (str(rows[0]),))
    unsafe = SETTINGS["unique_checks=0, foreign_key_checks=0 (NOT safe)"]
    newest = (f"DELETE FROM `{PROBE}` WHERE snapshot_id IN (28, 29, 30)", ())
    older = (f"DELETE FROM `{PROBE}` WHERE snapshot_id IN (18, 19, 20)", ())
    cases = [
        ("LOAD DATA into the empty table", "default", [], [], load, 31),
        ("LOAD DATA into the empty table", "unique_checks=0, foreign_key_checks=0", unsafe, [], load, 31),
        ("LOAD DATA into a table holding 1 row", "unique_checks=0, foreign_key_checks=0", unsafe, one, load, 31),
        ("DELETE the newest snapshots (28-30 of 30), IN", "default (REPEATABLE-READ)", [], rows, newest, 31),
        ("DELETE the newest snapshots (28-30 of 30), IN", "READ-COMMITTED", SETTINGS["READ-COMMITTED"], rows, newest, 31),
        ("DELETE older snapshots (18-20 of 30), IN", "default (REPEATABLE-READ)", [], rows, older, 31),
    ]
    out = []
    for what, session_name, session, preload, action, snapshot in cases:
        result = waits(probe, session, preload, action, snapshot)
        out.append({"transaction": what, "session": session_name, "insert_snapshot_id": snapshot, "other_writer": result})
        print(f"    {what}, {session_name}: another writer's insert of snapshot {snapshot} {result}", flush=True)
    return out


def report(results: dict) -> str:
    lines = [f"server: {results['server']}; {results['rows']:,} rows, {results['rows_per_snapshot']:,} per snapshot_id",
             "session-scope innodb_* variables of this server (none changes how rows are written): "
             + ", ".join(results["innodb_session_variables"]), "",
             "| kind | rows | order | rows per statement | statements | session / shape | seconds | rows/s |",
             "|---|---:|---|---:|---:|---|---:|---:|"]
    for r in results["measures"]:
        rate = f"{r['rows'] / r['seconds']:,.0f}" if r["seconds"] else "n/a"
        if r["kind"] == "load":
            lines.append(f"| LOAD DATA | {r['rows']:,} | {r['order']} | {r['batch']:,} | {r['statements']} | "
                         f"{r['session']} | {r['seconds']} | {rate} |")
        else:
            lines.append(f"| DELETE ({r['snapshots']} snapshots) | {r['rows']:,} | ordered | | {r['statements']} | "
                         f"{r['shape']} | {r['seconds']} | {rate} |")
    lines += ["", "| uncommitted transaction | session | another session inserts a row of snapshot 31 |",
              "|---|---|---|"]
    lines += [f"| {w['transaction']} | {w['session']} | {w['other_writer']} |" for w in results.get("waits", [])]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3306)
    p.add_argument("--user", default="root")
    p.add_argument("--password", default="")
    p.add_argument("--database", default="attr_bench_write_paths")
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--rows-per-snapshot", type=int, default=20_000)
    p.add_argument("--batches", type=int, nargs="+", default=[50_000, 200_000, 1_000_000],
                   help="rows per LOAD DATA statement (all rows in one statement is always measured too)")
    p.add_argument("--session-batch", type=int, default=200_000, help="rows per statement for the session settings")
    p.add_argument("--delete-batch", type=int, default=8, help="snapshot ids per DELETE ... IN statement")
    p.add_argument("--seed", type=int, default=202)
    p.add_argument("--settle-timeout", type=float, default=300.0)
    args = p.parse_args()
    probe = Probe(args)
    variables = probe.query("SELECT LOWER(variable_name) FROM information_schema.system_variables WHERE variable_scope "
                            "IN ('SESSION', 'SESSION ONLY') AND variable_name LIKE 'INNODB%' ORDER BY 1")
    results = {"server": " ".join(str(v) for v in probe.query("SELECT @@version, @@innodb_buffer_pool_size, "
                                                              "@@innodb_flush_log_at_trx_commit, @@binlog_format")[0]),
               "rows": args.rows, "rows_per_snapshot": args.rows_per_snapshot,
               "innodb_session_variables": [v[0] for v in variables], "config": vars(args) | {"password": None}}
    df = touchpoint_rows(args.rows, args.rows_per_snapshot, args.seed)
    with tempfile.TemporaryDirectory(prefix="attr-write-paths-") as tmp:
        print("LOAD DATA ...", flush=True)
        results["measures"] = measure_loads(probe, df, Path(tmp))
        print("DELETE ...", flush=True)
        results["measures"] += measure_deletes(probe, df, Path(tmp))
        print("concurrent writers ...", flush=True)
        results["waits"] = measure_waits(probe, Path(tmp))
    probe.query(f"DROP TABLE IF EXISTS `{PROBE}`")
    text = report(results)
    print("\n" + text)
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"write-paths-{stamp}.json").write_text(json.dumps(results, indent=1, default=str))
    (out / f"write-paths-{stamp}.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
