"""Set-based reads: the sliding click window and the literal-rendering guard of the fast path."""

import polars as pl
import pytest
from sqlalchemy import select

import scenarios
from attribution_pipeline import db, extract, schema

T = scenarios.T
DAY = 86400


def test_click_window_reads_each_click_once_and_equals_fresh_reads(mysql_url):
    engine = db.make_engine(mysql_url)
    with engine.begin() as conn:
        for i in range(200):
            scenarios.add_click(conn, 10_000 + i, 1 + i % 2, 10 + i % 3, T + i * 6 * 3600)
        scenarios.add_click(conn, 10_050, 2, 10, T + 50 * 6 * 3600 + 7)  # a duplicate id with another time (D15)
    window = extract.ClickWindow(engine, [1, 2], [10, 11])
    slices = [(T + d * DAY - 30 * DAY, T + d * DAY + 3599) for d in range(0, 50, 7)]
    for lo, hi in slices:
        got = window.between(lo, hi).sort("click_id", "click_time")
        with engine.connect() as conn:
            fresh = extract.clicks(conn, [1, 2], [10, 11], lo, hi).sort("click_id", "click_time")
        assert got.equals(fresh)
    with engine.connect() as conn:
        total = extract.clicks(conn, [1, 2], [10, 11], slices[0][0], slices[-1][1]).height
    assert window.rows_read == total  # every click read exactly once
    assert window.queries == len(slices)


def test_literal_rendering_refuses_anything_but_integers_and_identifiers(mysql_url):
    engine = db.make_engine(mysql_url)
    c = schema.clicks.c
    with engine.connect() as conn:
        sql = db.literal_sql(conn, select(c.click_id).where(c.user_id.in_([1, 2]), c.click_time.between(5, 9)))
        assert "IN (1, 2)" in sql and "BETWEEN 5 AND 9" in sql
        with pytest.raises(ValueError, match="may not be rendered"):
            db.literal_sql(conn, select(c.click_id).where(schema.conversion_logs.c.ip == "1.2.3.4' OR '1'='1"))
        with pytest.raises(ValueError):
            db.literal_sql(conn, select(c.click_id).where(c.click_cpc == 0.5))


def test_decimal_reads_are_correctly_rounded_doubles(mysql_url):
    engine = db.make_engine(mysql_url)
    values = ["0.70000", "1.23000", "0.10000", "12.34565", "0.00001", "2.50000", "0.33333"]
    with engine.begin() as conn:
        for i, v in enumerate(values):
            scenarios.add_click(conn, 500 + i, 1, 10, T, cpc=v)
    with engine.connect() as conn:
        df = extract.clicks(conn, [1], [10], T, T)
    got = dict(zip(df["click_id"].to_list(), df["click_cpc"].to_list()))
    assert [got[500 + i] for i in range(len(values))] == [float(v) for v in values]
