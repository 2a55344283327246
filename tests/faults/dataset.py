"""The fault tests' data: six hours of the synthetic generator's Prosper202 data, small.

Two users with six valid models each (no invalid models, no anomalies: a clean run exits 0),
120 conversions over six hours (every hour has conversions of both users, so every hour has a row
for each of the 12 (user, model) pairs) and 3,000 clicks. A database is seeded once per test
module (the *template*); each test copies the source tables into its own throwaway database.

The *old rows*: every hour starts with rows a clean run did not write (the clean rows with other
revenue, weights and run window), so that after a fault each hour shows whether it holds its old
rows, its new rows or a mix.
"""

from attribution_pipeline.demo.generator import GeneratorConfig, generate
from attribution_pipeline.demo.generator import seed as generator_seed
from attribution_pipeline.storage import database, tables
from faults.killer import server_connect

T0 = 1717232400  # 2024-06-01 09:00 UTC
HOUR = 3600
HOURS = 6
ALL_HOURS = [T0 + i * HOUR for i in range(HOURS)]
CONFIG = GeneratorConfig(seed=202, start=T0, hours=HOURS, scale=0.5, clicks=3000, conversions=120, models="main6",
                         invalid_models=False, anomalies=False)


def source_tables() -> list[str]:
    return [name for name in generate(CONFIG) if name in tables.metadata.tables]


def seed(url: str) -> None:
    engine = database.make_engine(url)
    try:
        generator_seed(engine, CONFIG)
    finally:
        engine.dispose()


def _columns(table) -> list[str]:
    return [c.name for c in table.columns]


def copy_source(url: str, template_db: str) -> None:
    """The template's source tables into ``url``'s database (which has Prosper202's tables)."""
    conn = server_connect(url, database=True)
    try:
        with conn.cursor() as cur:
            for name in source_tables():
                cols = ", ".join(f"`{c}`" for c in _columns(tables.metadata.tables[name]))
                cur.execute(f"INSERT INTO `{name}` ({cols}) SELECT {cols} FROM `{template_db}`.`{name}`")
    finally:
        conn.close()


def install_old_rows(url: str, clean_db: str) -> None:
    """Every hour's "old" rows: the clean rows of ``clean_db`` with revenue + 1, an earlier
    run window and created_at, touchpoints weighing 0 (whole-hour windows, one row per key: not
    rows the pipeline would report as written by the PHP engine)."""
    snap, touch = tables.attribution_snapshots, tables.attribution_touchpoints
    changed = {"attributed_revenue": "attributed_revenue + 1", "lookback_start": f"lookback_start - {24 * HOUR}",
               "created_at": "created_at - 86400"}
    conn = server_connect(url, database=True)
    try:
        with conn.cursor() as cur:
            for table, overrides in ((snap, changed), (touch, {"weight": "0", "created_at": "created_at - 86400"})):
                cols = _columns(table)
                exprs = ", ".join(overrides.get(c, f"`{c}`") for c in cols)
                cur.execute(f"INSERT INTO `{table.name}` ({', '.join(f'`{c}`' for c in cols)}) "
                            f"SELECT {exprs} FROM `{clean_db}`.`{table.name}`")
    finally:
        conn.close()


def insert_conversions(url: str) -> int:
    """New conversions while runs go on: a copy (id + 1,000,000, one second later) of every 4th
    conversion of hours 2-4."""
    cols = _columns(tables.conversion_logs)
    exprs = {"conv_id": "conv_id + 1000000", "transaction_id": "CONCAT('fault-', conv_id)",
             "conv_time": "conv_time + 1", "deleted": "0"}
    select = ", ".join(exprs.get(c, f"`{c}`") for c in cols)
    return _execute(url, f"INSERT INTO `202_conversion_logs` ({', '.join(f'`{c}`' for c in cols)}) SELECT {select} "
                         f"FROM `202_conversion_logs` WHERE deleted = 0 AND conv_id < 1000000 AND conv_id % 4 = 0 "
                         f"AND conv_time % 3600 < 3599 AND conv_time BETWEEN {T0 + 2 * HOUR} AND {T0 + 5 * HOUR - 1}")


def soft_delete_conversions(url: str) -> int:
    """Soft-deleted conversions while runs go on: every 5th conversion of hours 1-3."""
    return _execute(url, f"UPDATE `202_conversion_logs` SET deleted = 1 WHERE conv_id % 5 = 1 AND conv_id < 1000000 "
                         f"AND conv_time BETWEEN {T0 + HOUR} AND {T0 + 4 * HOUR - 1}")


def change_source(url: str) -> None:
    """Both changes, in their order (the final data of the overlapping-runs test)."""
    insert_conversions(url)
    soft_delete_conversions(url)


def _execute(url: str, sql: str) -> int:
    conn = server_connect(url, database=True)
    try:
        with conn.cursor() as cur:
            return cur.execute(sql)
    finally:
        conn.close()


def models_of_user(url: str) -> dict[int, set[int]]:
    conn = server_connect(url, database=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT user_id, model_id FROM `202_attribution_models` WHERE is_active = 1")
            out: dict[int, set[int]] = {}
            for user, model in cur.fetchall():
                out.setdefault(int(user), set()).add(int(model))
            return out
    finally:
        conn.close()
