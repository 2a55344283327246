"""The write-back's transaction does not make other writers wait (READ COMMITTED on MariaDB)."""

from decimal import Decimal

import polars as pl
from sqlalchemy import func, select, text

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


def test_a_large_read_back_is_read_in_two_id_ranges_at_once_and_sees_the_uncommitted_rows(mysql_url, monkeypatch):
    """The read-back of a chunk's touchpoints splits its id range in two, read on two READ
    UNCOMMITTED sessions at once: every row the open transaction inserted, of our snapshots only,
    with its exact DECIMAL values, the same as one statement reads."""
    touch = tables.attribution_touchpoints
    ours = [dict(snapshot_id=7, conv_id=100 + i // 5, click_id=9_000_000_000 + i, position=i % 5,
                 credit=Decimal(f"0.{i:05d}"), weight=Decimal(f"0.{i:05d}"), created_at=1) for i in range(30)]
    theirs = [dict(snapshot_id=8, conv_id=1, click_id=1, position=i, credit=1, weight=1, created_at=1) for i in range(5)]
    statements = []
    real = stored_rows.read_frames_uncommitted

    def counted(conn, stmts, schema):
        statements.append(len(stmts))
        return real(conn, stmts, schema)

    monkeypatch.setattr(stored_rows, "read_frames_uncommitted", counted)
    engine = database.make_engine(mysql_url)
    with engine.connect() as conn:
        conn.execute(touch.insert(), ours[:15] + theirs + ours[15:])  # not committed
        last = stored_rows.max_touchpoint_id(conn)
        reads = []
        for split_above in (10, 1_000):
            monkeypatch.setattr(stored_rows, "READ_BACK_SPLIT_IDS", split_above)
            reads.append(stored_rows.inserted_touchpoints(conn, 0, last, pl.Series([7])).sort("conv_id", "position"))
        conn.rollback()
    assert statements == [2, 1]
    expected = pl.DataFrame([{k: r[k] for k in stored_rows.STORED_TOUCHPOINTS} for r in ours]).cast(
        stored_rows.STORED_TOUCHPOINTS).sort("conv_id", "position")
    assert reads[0].equals(expected) and reads[1].equals(expected)
    assert reads[0].get_column("credit").cast(pl.String).to_list()[:3] == ["0.00000", "0.00001", "0.00002"]
