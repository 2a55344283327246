"""Packed sort keys (core/packed_keys.py) and their users: the same order (and the same duplicates) as the columns."""

import numpy as np
import polars as pl
import pytest

from attribution_pipeline.core import aggregation
from attribution_pipeline.core import contracts
from attribution_pipeline.core.packed_keys import duplicated_rows, fits, packed_key, packed_order
from attribution_pipeline.exports.build import _in_export_order
from attribution_pipeline.storage.stored_rows import index_order


def _touches(n: int, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "date_hour": rng.integers(0, 3, n) * 3600,
        "user_id": rng.integers(1, 4, n),
        "model_id": rng.integers(1, 6, n),
        "conv_id": rng.integers(1, 400, n),
        "position": rng.integers(0, 26, n).astype(np.int32),
        "click_id": rng.integers(1, 10**6, n).astype(np.uint64),
        "revenue": rng.random(n) * 100,
        "cost": rng.random(n),
    }).with_columns(snapshot_id=900 - (pl.col("date_hour") // 3600 * 100 + pl.col("user_id") * 20 + pl.col("model_id")))


def test_packed_key_orders_as_the_columns():
    df = _touches(5000)
    by_key = df.sort(packed_key("snapshot_id", ("conv_id", 32), ("position", 16)), "click_id")
    assert by_key.equals(df.sort("snapshot_id", "conv_id", "position", "click_id"))
    # the key's values: a * 2^48 + b * 2^16 + c
    row = pl.DataFrame({"a": [3], "b": [5], "c": [7]})
    assert row.select(packed_key("a", ("b", 32), ("c", 16))).item() == 3 * 2**48 + 5 * 2**16 + 7
    with pytest.raises(ValueError, match="63 bits"):
        packed_key("a", ("b", 32), ("c", 32))


def test_packed_order_falls_back_to_the_columns_when_a_value_does_not_fit():
    df = pl.DataFrame({"a": [2, 1, 1], "b": [1, 2**32, 3], "c": [0, 0, 0]})
    assert not fits(df, [("b", 32)])
    assert packed_order(df, "a", ("b", 32), ("c", 16)) == ["a", "b", "c"]
    negative = pl.DataFrame({"a": [1, 1], "b": [-1, 2], "c": [0, 0]})
    assert packed_order(negative, "a", ("b", 32), ("c", 16)) == ["a", "b", "c"]
    nulls = pl.DataFrame({"a": [None, 1], "b": [1, 2], "c": [0, 0]})
    assert packed_order(nulls, "a", ("b", 32), ("c", 16)) == ["a", "b", "c"]
    fine = pl.DataFrame({"a": [2, 1], "b": [1, 2**32 - 1], "c": [0, 2**16 - 1]})
    assert isinstance(packed_order(fine, "a", ("b", 32), ("c", 16)), pl.Expr)
    assert fine.sort(packed_order(fine, "a", ("b", 32), ("c", 16))).equals(fine.sort("a", "b", "c"))


def test_index_order_and_per_conversion_match_the_multi_column_order():
    df = _touches(20000).unique(subset=["model_id", "conv_id", "position"])
    assert index_order(df).equals(df.sort("snapshot_id", "conv_id", "position"))
    got = aggregation.per_conversion(df).collect()
    want = (df.sort("model_id", "conv_id", "position").group_by("model_id", "conv_id", maintain_order=True)
            .agg(pl.col("user_id").first(), pl.col("date_hour").first(), pl.len().alias("clicks"),
                 pl.col("revenue").cum_sum().last(), pl.col("cost").cum_sum().last()))
    assert got.columns == want.columns
    assert got.equals(want)  # same rows, same order, same bits of the ordered sums
    big = df.with_columns(conv_id=pl.col("conv_id") + 2**32)  # the fallback gives the same rows
    assert aggregation.per_conversion(big).collect().with_columns(pl.col("conv_id") - 2**32).equals(want)


def test_export_order_matches_the_seven_column_sort():
    df = _touches(30000)
    df = pl.concat([df, df.head(50).with_columns(click_id=pl.col("click_id") + 1)])  # duplicate (snapshot, conv, position)
    groups, order = ["date_hour", "user_id", "model_id", "snapshot_id"], ["conv_id", "position", "click_id"]
    want = df.sort([*groups, *order])
    got = _in_export_order(df, groups, order)
    assert got.columns == df.columns and got.equals(want)
    # a snapshot id on two (hour, user, model) groups, and ids too large: the plain sort
    odd = df.with_columns(snapshot_id=pl.when(pl.col("model_id") == 1).then(1).otherwise(pl.col("snapshot_id")))
    assert _in_export_order(odd, groups, order).equals(odd.sort([*groups, *order]))
    big = df.with_columns(conv_id=pl.col("conv_id") + 2**32)
    assert _in_export_order(big, groups, order).equals(big.sort([*groups, *order]))


def _duplicates_on_columns(df: pl.DataFrame, keys: list[str]) -> list[int]:
    return df.with_row_index().filter(pl.struct(keys).is_duplicated()).get_column("index").to_list()


@pytest.mark.parametrize("case", ["distinct", "two copies", "null key", "negative", "too wide", "float key"])
def test_duplicated_rows_are_the_rows_sharing_their_keys(case):
    """Every copy of a duplicated key, whether the key packs (distinct, two copies) or the columns
    are compared (a null, a negative value, values too wide to pack, a non-integer column)."""
    df = _touches(3000).unique(["model_id", "conv_id", "position"], keep="first", maintain_order=True)
    keys = ["model_id", "conv_id", "position"]
    if case == "two copies":
        df = pl.concat([df, df.slice(10, 1), df.slice(2000, 1)])
    elif case == "null key":
        df = pl.concat([df, pl.concat([df.slice(10, 1)] * 2).with_columns(conv_id=pl.lit(None, dtype=pl.Int64))])
    elif case == "negative":
        df = pl.concat([df, df.slice(3, 1), df.slice(4, 1).with_columns(conv_id=-pl.col("conv_id"))])
    elif case == "too wide":
        df = pl.concat([df, df.slice(5, 1)]).with_columns(conv_id=pl.col("conv_id") * (1 << 50))
    elif case == "float key":
        df = pl.concat([df, df.slice(6, 1)]).with_columns(conv_id=pl.col("conv_id").cast(pl.Float64))
    want = _duplicates_on_columns(df, keys)
    assert duplicated_rows(df, keys).to_list() == want
    assert (want == []) == (case == "distinct")


def test_schema_uniqueness_failures_name_every_copy():
    """The credits contract reports each copy of a duplicated (model, conversion, position) row
    under pandera's own reason, beside the other rules' failures of the same rows."""
    credits = pl.DataFrame({
        "date_hour": [3600] * 4, "model_id": [1, 1, 1, 2], "user_id": [1] * 4, "conv_id": [5, 5, 6, 5],
        "position": [0, 0, 0, 0], "click_id": [9, 9, 8, 9], "credit": [1.0, 1.0, 2.0, 1.0],
        "revenue": [1.0] * 4, "cost": [0.5] * 4, "credit_stored": [1.0, 1.0, 1.0, 1.0],
    }).cast({"position": pl.Int32, "click_id": pl.UInt64, "credit_stored": pl.Decimal(10, 5)})
    cases = contracts.failure_cases(contracts.Credits, credits)
    assert sorted(cases.iter_rows()) == [
        ("credit: less_than_or_equal_to(1.000000001)", 2),
        ("multiple_fields_uniqueness", 0), ("multiple_fields_uniqueness", 1)]


def test_duplicated_rows_on_an_unsigned_64_bit_first_key():
    """A UInt64 first key near 2^64 beside 63 bits of later keys (past what a 128-bit key holds):
    every copy is found, and distinct rows are found distinct."""
    df = pl.DataFrame({"click_id": [2**64 - 1, 2**64 - 1, 2**64 - 2, 5],
                       "conv_id": [2**61, 2**61, 2**61, 1], "position": [1, 1, 1, 0]},
                      schema={"click_id": pl.UInt64, "conv_id": pl.Int64, "position": pl.Int64})
    assert duplicated_rows(df, ["click_id", "conv_id", "position"]).to_list() == [0, 1]
    assert duplicated_rows(df.slice(1), ["click_id", "conv_id", "position"]).to_list() == []
