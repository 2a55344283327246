"""MySQL read and write paths, measured on the benchmark database (issue 3, item 2).

    python -m bench.io_paths [--database attr_bench_2000k_100k_720h] [--rows 2000000]

Reads (the journey click slice, every column the pipeline reads, into a Polars frame):
  * SQLAlchemy + PyMySQL rows -> Polars (the DBAPI path, our SQLite path)
  * polars.read_database over a SQLAlchemy connection
  * connectorx (Arrow) through polars.read_database_uri / connectorx.read_sql (our MySQL path)
  * the ``mariadb`` command-line client, output discarded (reference)
Writes (touchpoint-shaped rows into a copy of 202_attribution_touchpoints):
  * PyMySQL multi-row INSERT batches (``executemany``), batch sizes under max_allowed_packet
  * LOAD DATA LOCAL INFILE from a Polars-written CSV (our MySQL path, ``bulk.bulk_load``)
  * the ``mariadb`` client's LOAD DATA LOCAL INFILE (reference)

Batch sizes, row order, session settings and DELETE shapes of the write path: ``bench.write_paths``.
"""

import argparse
import os
import subprocess
import tempfile
import time

import polars as pl
import pymysql
from sqlalchemy import create_engine, text

from attribution_pipeline.storage import bulk
from attribution_pipeline.storage import database
from attribution_pipeline.storage import frame_io
from attribution_pipeline.storage import tables


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def read_paths(args, engine) -> tuple[list[tuple], int]:
    """The read paths, (kind, path, rows, seconds) each; and the server's max_allowed_packet."""
    c = tables.clicks.c
    with engine.connect() as conn:
        users = [int(u) for u in conn.execute(text("SELECT DISTINCT user_id FROM `202_clicks`")).scalars()]
        campaigns = [int(u) for u in conn.execute(text("SELECT DISTINCT aff_campaign_id FROM `202_clicks`")).scalars()]
        packet = conn.execute(text("SELECT @@max_allowed_packet")).scalar()
    from sqlalchemy import select

    stmt = select(c.click_id, c.user_id, c.aff_campaign_id, c.click_time, c.ppc_account_id, c.landing_page_id,
                  c.click_cpc).where(c.user_id.in_(users), c.aff_campaign_id.in_(campaigns),
                                     c.click_time.between(0, 2**31))
    rows = []
    with engine.connect() as conn:
        sql = frame_io.literal_sql(conn, stmt)
        seconds, df = timed(lambda: frame_io._read_dbapi(conn, stmt, {"click_cpc": pl.Float64}))
        rows.append(("read", "SQLAlchemy + PyMySQL rows -> Polars", df.height, seconds))
        seconds, df = timed(lambda: pl.read_database(stmt, conn))
        rows.append(("read", "polars.read_database (SQLAlchemy connection)", df.height, seconds))
    seconds, df = timed(lambda: pl.read_database_uri(sql, frame_io.connectorx_uri(engine), engine="connectorx"))
    rows.append(("read", "polars.read_database_uri (connectorx, Arrow)", df.height, seconds))
    with engine.connect() as conn:
        seconds, df = timed(lambda: frame_io.read_frame(conn, stmt, {"click_cpc": pl.Float64}))
    rows.append(("read", "frame_io.read_frame (connectorx + exact DECIMAL -> double)", df.height, seconds))
    cli = ["mariadb", f"--host={args.server}", "--user=root", "--quick", "--batch", "--skip-column-names",
           args.database, "-e", sql]
    seconds, _ = timed(lambda: subprocess.run(cli, stdout=subprocess.DEVNULL, check=True))
    rows.append(("read", "mariadb client, output discarded (reference)", df.height, seconds))
    return rows, packet


def write_paths(args, url: str, packet: int) -> list[tuple]:
    """The write paths, (kind, path, rows, seconds) each."""
    rows = []
    n = args.rows
    data = pl.DataFrame({
        "snapshot_id": pl.int_range(n, eager=True) // 60 + 1,
        "conv_id": pl.int_range(n, eager=True) // 15 + 1,
        "click_id": pl.int_range(n, eager=True) * 7919 % 1_000_000_007 + 4_300_000_000,
        "position": (pl.int_range(n, eager=True) % 15).cast(pl.Int32),
        "credit": (pl.int_range(n, eager=True) % 99_999 + 1).cast(pl.Decimal(12, 5)) / 100_000,
    }).with_columns(pl.col("credit").cast(pl.Decimal(10, 5)), weight=pl.col("credit").cast(pl.Decimal(10, 5)),
                    created_at=pl.lit(1735689600))
    raw = pymysql.connect(host=args.server, user="root", database=args.database, local_infile=True)

    def fresh_table():
        with raw.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS io_probe")
            cur.execute("CREATE TABLE io_probe LIKE `202_attribution_touchpoints`")
        raw.commit()

    from sqlalchemy import MetaData

    probe = tables.attribution_touchpoints.to_metadata(MetaData(), name="io_probe")
    per_row = 7 * 12  # about 84 bytes of SQL text per row
    batch = max(100, min(20_000, packet // per_row // 2))
    fresh_table()
    insert_rows = data.head(min(n, 500_000))
    values = insert_rows.rows()

    def executemany():
        with raw.cursor() as cur:
            for offset in range(0, len(values), batch):
                cur.executemany(
                    "INSERT INTO io_probe (snapshot_id, conv_id, click_id, position, credit, weight, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)", values[offset: offset + batch])
        raw.commit()

    seconds, _ = timed(executemany)
    rows.append(("write", f"PyMySQL multi-row INSERT, {batch} rows per batch", insert_rows.height, seconds))
    fresh_table()
    e2 = create_engine(url, connect_args={"local_infile": True})

    def load():
        with e2.begin() as conn:
            return bulk.bulk_load(conn, probe, data)

    seconds, _ = timed(load)
    rows.append(("write", "LOAD DATA LOCAL INFILE from Polars CSV (bulk.bulk_load)", n, seconds))
    fresh_table()
    path = os.path.join(tempfile.mkdtemp(), "probe.csv")
    data.write_csv(path, include_header=False)
    cli = ["mariadb", f"--host={args.server}", "--user=root", "--local-infile=1", args.database, "-e",
           f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE io_probe FIELDS TERMINATED BY ',' "
           "(snapshot_id, conv_id, click_id, position, credit, weight, created_at)"]
    seconds, _ = timed(lambda: subprocess.run(cli, check=True))
    rows.append(("write", "mariadb client LOAD DATA LOCAL INFILE (reference)", n, seconds))
    with raw.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS io_probe")
    raw.commit()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="127.0.0.1")
    p.add_argument("--database", default="attr_bench_2000k_100k_720h")
    p.add_argument("--rows", type=int, default=2_000_000, help="rows written per write path")
    args = p.parse_args()
    url = f"mysql+pymysql://root@{args.server}:3306/{args.database}"
    rows, packet = read_paths(args, database.make_engine(url))
    rows += write_paths(args, url, packet)
    print(f"max_allowed_packet = {packet:,} bytes")
    print(f"{'':6} {'path':58} {'rows':>10} {'seconds':>8} {'rows/s':>11}")
    for kind, name, count, seconds in rows:
        print(f"{kind:6} {name:58} {count:>10,} {seconds:>8.2f} {count / seconds:>11,.0f}")


if __name__ == "__main__":
    main()
