"""Set-based reads: the conversion index and the literal-rendering guard of the fast path (the click
stream journeys are built from: tests/test_click_stream.py)."""

import polars as pl
import pytest
from sqlalchemy import select

import scenarios
from attribution_pipeline.storage import click_reads, database, frame_io, prosper_reads, tables
from attribution_pipeline.storage.database import Database

T = scenarios.T
DAY = 86400


def test_conversion_index_scans_once_and_each_chunk_equals_a_fresh_read(mysql_url):
    """A range's chunks read through one scan + primary-key reads give exactly the rows of the
    per-chunk time query, for ids out of time order, duplicated and missing clicks, deleted users
    and conversions, and rows added or undeleted after the scan."""
    import random

    engine = database.make_engine(mysql_url)
    rng = random.Random(7)
    hours = [T + h * 3600 for h in range(48)]
    with engine.begin() as conn:
        scenarios.add_user(conn, 1)
        scenarios.add_user(conn, 2)
        scenarios.add_user(conn, 3, deleted=1)
        for i in range(300):  # conv ids mostly follow time, with some late, back-dated ones
            conv_time = T - 7200 + rng.randrange(52 * 3600) if i % 17 else T + rng.randrange(48 * 3600)
            user = 1 + i % 3
            click_id = 50_000 + i
            if i % 11:
                scenarios.add_click(conn, click_id, user, 10, conv_time - 60, cpc=f"0.{i % 90 + 10}")
            if i % 23 == 0:
                scenarios.add_click(conn, click_id, user, 10, conv_time - 30, cpc="0.05")  # duplicate id
            scenarios.add_conversion(conn, 1000 + i, click_id, 10, user, "1.50", conv_time - 60, conv_time,
                                     deleted=1 if i % 13 == 0 else 0)

    for users in (None, [2]):
        index = prosper_reads.ConversionIndex(Database(mysql_url), hours, users)
        chunks = [hours[i:i + 7] for i in range(0, len(hours), 7)]
        for n, chunk in enumerate(chunks):
            if n == 2:  # after the scan: a new row in a later chunk, one undeleted, one deleted
                with engine.begin() as conn:
                    new_id = 5000 + (users is not None)  # auto-increment: above every id so far
                    scenarios.add_click(conn, 90_000 + new_id, 2, 10, chunks[4][0] + 5)
                    scenarios.add_conversion(conn, new_id, 90_000 + new_id, 10, 2, "2.00",
                                             chunks[4][0] + 5, chunks[4][0] + 65)
                    c = tables.conversion_logs.c
                    later = c.conv_time.between(chunks[3][0], hours[-1] + 3599) & c.user_id.in_(users or [1, 2])
                    for was, now in ((1, 0), (0, 1)):  # undelete one later row, delete another
                        conv_id = conn.execute(select(c.conv_id).where(later, c.deleted == was)).scalars().first()
                        conn.execute(tables.conversion_logs.update().where(c.conv_id == conv_id).values(deleted=now))
            got = index.conversions(chunk)
            with engine.connect() as conn:
                fresh = prosper_reads.conversions(conn, chunk, users)
            assert got.sort("conv_id").equals(fresh.sort("conv_id")), (users, n)
            assert got.height > 0
        assert index.scans == 1
    whole = prosper_reads.ConversionIndex(Database(mysql_url), hours)  # the range as one chunk: one query, no scan
    with engine.connect() as conn:
        assert whole.conversions(hours).equals(prosper_reads.conversions(conn, hours))
    assert whole.scans == 0
    with pytest.raises(ValueError, match="outside the indexed range"):
        prosper_reads.ConversionIndex(Database(mysql_url), hours).conversions([T - 3600])


def test_literal_rendering_refuses_anything_but_integers_and_identifiers(mysql_url):
    engine = database.make_engine(mysql_url)
    c = tables.clicks.c
    with engine.connect() as conn:
        sql = frame_io.literal_sql(conn, select(c.click_id).where(c.user_id.in_([1, 2]), c.click_time.between(5, 9)))
        assert "IN (1, 2)" in sql and "BETWEEN 5 AND 9" in sql
        with pytest.raises(ValueError, match="may not be rendered"):
            frame_io.literal_sql(conn, select(c.click_id).where(tables.conversion_logs.c.ip == "1.2.3.4' OR '1'='1"))
        with pytest.raises(ValueError):
            frame_io.literal_sql(conn, select(c.click_id).where(c.click_cpc == 0.5))


def test_decimal_reads_are_correctly_rounded_doubles(mysql_url):
    engine = database.make_engine(mysql_url)
    values = ["0.70000", "1.23000", "0.10000", "12.34565", "0.00001", "2.50000", "0.33333"]
    with engine.begin() as conn:
        for i, v in enumerate(values):
            scenarios.add_click(conn, 500 + i, 1, 10, T, cpc=v)
    with engine.connect() as conn:
        df = click_reads.clicks(conn, [1], [10], T, T)
    got = dict(zip(df["click_id"].to_list(), df["click_cpc"].to_list()))
    assert [got[500 + i] for i in range(len(values))] == [float(v) for v in values]


def _describe(clause) -> tuple:
    """("between", lo, hi) or ("in", n) of an id_predicates clause."""
    compiled = clause.compile(compile_kwargs={"literal_binds": True}).string
    if " BETWEEN " in compiled:
        lo, hi = compiled.split(" BETWEEN ")[1].split(" AND ")
        return ("between", int(lo), int(hi))
    return ("in", compiled.count(",") + 1)


def test_id_predicates_read_dense_ids_by_range_and_sparse_ids_by_list():
    col = tables.clicks.c.click_id
    dense = list(range(1000, 1100))  # 100 ids filling their span
    sparse = [10**6 + 1000 * i for i in range(10)]  # 10 ids, 1 in 1000
    clauses = frame_io.id_predicates(col, [*sparse, *dense, 1050], in_list=25, range_ids=60)
    # dense batches of 25 merge into ranges of at most 60 ids; sparse ones stay IN lists of 25 at most
    assert [_describe(c) for c in clauses] == [
        ("between", 1000, 1049), ("between", 1050, 1099), ("in", 10),
    ]
    assert frame_io.id_predicates(col, []) == []
    # a sparse stretch between dense ids ends the range, so no range spans it
    gap = [*range(0, 25), *[10**6 * (i + 1) for i in range(25)], *range(10**8, 10**8 + 25)]
    assert [_describe(c) for c in frame_io.id_predicates(col, gap, in_list=25)] == [
        ("between", 0, 24), ("in", 25), ("between", 10**8, 10**8 + 24)]
    # half-filled spans are dense at density 0.5, lists above it
    evens = list(range(0, 200, 2))
    assert [_describe(c) for c in frame_io.id_predicates(col, evens, in_list=50, density=0.5)] == [("between", 0, 198)]
    assert [_describe(c) for c in frame_io.id_predicates(col, evens, in_list=50, density=0.6)] == [("in", 50), ("in", 50)]


def test_range_reads_return_only_the_ids_asked_for(mysql_url, monkeypatch):
    """Duplicate-click counts and the export's click reads take ranges for dense ids: clicks in the
    gaps of a range (a duplicated id nobody asked for) must not leak into the answer."""
    from attribution_pipeline.exports import stored

    engine = database.make_engine(mysql_url)
    far = 5 * 10**12
    with engine.begin() as conn:
        for i in range(1, 41):
            scenarios.add_click(conn, i, 1, 10, T + i)
        scenarios.add_click(conn, 5, 1, 10, T + 500)  # asked for: 2 copies
        scenarios.add_click(conn, 11, 1, 10, T + 600)  # in the range, not asked for: must not appear
        for _ in range(3):
            scenarios.add_click(conn, far, 2, 11, T + 700)  # sparse, 3 copies
    asked = [i for i in range(1, 41) if i != 11] + [far]
    monkeypatch.setattr(click_reads, "_IN_LIST", 8)
    dups = click_reads.duplicated_click_rows(Database(mysql_url), asked).sort("click_id")
    assert dups.rows() == [(5, 2), (far, 3)]
    monkeypatch.setattr(stored, "_IN_LIST", 8)
    with engine.connect() as conn:
        clicks = stored.read_clicks(conn, asked).sort("click_id")
        # a frame's column (repeated ids, unsorted, another dtype) reads the same rows
        column = pl.Series("touch_click", [*reversed(asked), *asked[:5]], dtype=pl.Int64)
        from_series = stored.read_clicks(conn, column).sort("click_id")
    assert clicks.get_column("click_id").to_list() == sorted(asked)
    assert clicks.filter(pl.col("click_id") == 5).get_column("click_time").to_list() == [T + 5]  # D15: earliest copy
    assert from_series.equals(clicks)


def test_hour_files_read_back_as_one_contiguous_frame(tmp_path):
    """A chunk of hours is read as one buffer per column: downstream joins and gathers on a frame
    of one chunk per hour file are several times slower (bench/RESULTS.md)."""
    from attribution_pipeline.io_managers.hourly_parquet import read_hours, write_hour

    hours = (3600 * 10, 3600 * 11, 3600 * 12)
    parts = [pl.DataFrame({"date_hour": [h] * (i + 2), "conv_id": list(range(i, i + 2 + i)),
                           "payout": [0.5 * i] * (i + 2)}) for i, h in enumerate(hours)]
    for hour, df in zip(hours, parts):
        write_hour(tmp_path, "conversions", hour, df)

    got = read_hours(tmp_path, "conversions", hours)

    assert got.equals(pl.concat(parts))
    assert got.height == 9
    assert got.n_chunks("all") == [1, 1, 1]
