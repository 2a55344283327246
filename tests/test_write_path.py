"""The write-back's transaction does not make other writers wait (READ COMMITTED on MariaDB)."""

from sqlalchemy import func, select, text

from attribution_pipeline.storage import database, hour_rewrite, tables
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
