"""The Prosper202 schema is created exactly once, idempotently, on MariaDB and SQLite."""

from sqlalchemy import inspect

from attribution_pipeline.storage import database
from attribution_pipeline.storage import tables


def test_create_missing_is_idempotent_on_mariadb(mysql_url_empty):
    engine = database.make_engine(mysql_url_empty)
    created = tables.create_missing(engine)
    assert "202_attribution_snapshots" in created and "202_clicks" in created
    assert len(created) == len(tables.metadata.tables)
    assert tables.create_missing(engine) == []
    cols = {c["name"]: str(c["type"]) for c in inspect(engine).get_columns("202_attribution_touchpoints")}
    assert cols["credit"] == "DECIMAL(10, 5)"
    with engine.connect() as conn:
        ddl = conn.exec_driver_sql("SHOW CREATE TABLE `202_clicks`").fetchone()[1]
    assert "KEY `user_click_time` (`user_id`,`click_time`)" in ddl
    assert "PRIMARY KEY" not in ddl  # 202_clicks has no key on click_id (D15)
    engine.dispose()


def test_existing_tables_are_left_alone(mysql_url_empty):
    engine = database.make_engine(mysql_url_empty)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE `202_clicks` (click_id BIGINT UNSIGNED NOT NULL, extra INT) "
                             "PARTITION BY HASH(click_id) PARTITIONS 2")
    created = tables.create_missing(engine)
    assert "202_clicks" not in created
    with engine.connect() as conn:
        ddl = conn.exec_driver_sql("SHOW CREATE TABLE `202_clicks`").fetchone()[1]
    assert "`extra`" in ddl and "PARTITION" in ddl
    engine.dispose()


def test_sqlite_schema_has_prefixed_index_names(tmp_path):
    engine = database.make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert len(tables.create_missing(engine)) == len(tables.metadata.tables)
    assert tables.create_missing(engine) == []
    names = {ix["name"] for ix in inspect(engine).get_indexes("202_clicks")}
    assert "202_clicks__user_click_time" in names
