"""The write-back's transaction does not make other writers wait (READ COMMITTED on MariaDB)."""

from decimal import Decimal

import polars as pl
import pytest
from sqlalchemy import func, select, text

from attribution_pipeline.errors import WriteBackMismatch
from attribution_pipeline.storage import database, hour_rewrite, stored_rows, tables
from test_incremental import HOURS, seed
from pipeline import run


def test_another_session_inserts_touchpoints_while_a_chunk_is_being_rewritten(mysql_url, monkeypatch):
    engine = seed(mysql_url)
    run(mysql_url, HOURS[0], HOURS[-1])
    other = database.make_engine(mysql_url)
    seen: dict = {}
    real = hour_rewrite.bulk_load

    def meanwhile(conn, table, rows, **kw):
        if not seen:  # the chunk deleted its old rows and holds their locks: another writer inserts
            with other.connect() as c:
                seen["level"] = conn.exec_driver_sql("SELECT @@tx_isolation").scalar()
                c.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 3")
                top = c.execute(select(func.max(tables.attribution_snapshots.c.snapshot_id))).scalar()
                try:
                    c.execute(tables.attribution_touchpoints.insert().values(
                        snapshot_id=top + 1000, conv_id=1, click_id=1, position=0, credit=1, weight=1, created_at=0))
                    c.commit()
                    seen["inserted"] = True
                except Exception as exc:  # noqa: BLE001 - the assertion below names it
                    seen["inserted"] = f"{type(exc).__name__}: {exc}"
        return real(conn, table, rows, **kw)

    monkeypatch.setattr(hour_rewrite, "bulk_load", meanwhile)
    run(mysql_url, HOURS[0], HOURS[-1], full=True)
    assert seen["level"] == "READ-COMMITTED"
    assert seen["inserted"] is True
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM `202_attribution_touchpoints` WHERE conv_id = 1 "
                                 "AND click_id = 1 AND created_at = 0")).scalar() == 1


def test_the_read_back_sees_the_uncommitted_rows_of_our_snapshots_in_the_order_they_were_inserted(mysql_url):
    """The read-back of a chunk's touchpoints (a second session at READ UNCOMMITTED): every row
    the open transaction inserted, of our snapshots only, with its exact DECIMAL values, in the
    order they were inserted (the write-back compares them with what it loaded without sorting)."""
    touch = tables.attribution_touchpoints
    ours = [dict(snapshot_id=7, conv_id=100 + i // 5, click_id=9_000_000_000 - i, position=i % 5,
                 credit=Decimal(f"0.{i:05d}"), weight=Decimal(f"0.{i:05d}"), created_at=1) for i in range(30)]
    theirs = [dict(snapshot_id=8, conv_id=1, click_id=1, position=i, credit=1, weight=1, created_at=1) for i in range(5)]
    engine = database.make_engine(mysql_url)
    with engine.connect() as conn:
        conn.execute(touch.insert(), ours[:15] + theirs + ours[15:])  # not committed
        got = stored_rows.inserted_touchpoints(conn, 0, stored_rows.max_touchpoint_id(conn), pl.Series([7]))
        conn.rollback()
    expected = pl.DataFrame([{k: r[k] for k in stored_rows.STORED_TOUCHPOINTS} for r in ours]).cast(
        stored_rows.STORED_TOUCHPOINTS)
    assert got.equals(expected)
    assert got.get_column("credit").cast(pl.String).to_list()[:3] == ["0.00000", "0.00001", "0.00002"]


def test_the_touchpoints_read_back_match_in_load_order_or_in_any_order_and_a_difference_rolls_back():
    rows = pl.DataFrame({"snapshot_id": [1, 1, 2], "conv_id": [5, 5, 6], "position": [0, 1, 0], "click_id": [9, 8, 7],
                         "credit": ["0.50000", "0.50000", "1.00000"], "weight": ["0.50000", "0.50000", "1.00000"]})
    rows = rows.cast(stored_rows.STORED_TOUCHPOINTS)
    hour_rewrite._check_touchpoints(rows, rows)
    hour_rewrite._check_touchpoints(rows, rows.reverse())
    changed = rows.with_columns(credit=pl.when(pl.col("click_id") == 8).then(pl.col("credit") * 0).otherwise("credit")
                                .cast(stored_rows.STORED_TOUCHPOINTS["credit"]))
    with pytest.raises(WriteBackMismatch, match="1 computed rows missing, 1 unexpected"):
        hour_rewrite._check_touchpoints(rows, changed)
    with pytest.raises(WriteBackMismatch, match="read back 2 rows, computed 3"):
        hour_rewrite._check_touchpoints(rows, rows.head(2))
