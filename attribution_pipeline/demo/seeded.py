"""Seeded randomness and frame shapes for the generator.

Small tables draw from ``random.Random`` seeded per purpose; large ones from a SplitMix64 hash of
the row number computed with Polars integer expressions (wrapping UInt64 arithmetic), so the same
configuration gives byte-identical frames whatever Polars' own hash function does.
"""

import hashlib
import random

import polars as pl
from sqlalchemy import Table
from sqlalchemy.types import Numeric, String

from attribution_pipeline.demo.config import UNITS

_U64 = pl.UInt64
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def stream_key(seed: int, name: str) -> int:
    """A 64-bit stream key for (seed, purpose)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest(), "little")


def seeded_rng(seed: int, name: str) -> random.Random:
    return random.Random(stream_key(seed, name))


def hash64(x: pl.Expr, key: int) -> pl.Expr:
    """SplitMix64 of ``x * golden + key`` in wrapping UInt64 arithmetic (stable across versions)."""
    z = x.cast(_U64) * pl.lit(_GOLDEN, _U64) + pl.lit(key, _U64)
    z = z.xor(z // pl.lit(1 << 30, _U64)) * pl.lit(_MIX1, _U64)
    z = z.xor(z // pl.lit(1 << 27, _U64)) * pl.lit(_MIX2, _U64)
    return z.xor(z // pl.lit(1 << 31, _U64))


def uniform(x: pl.Expr, key: int) -> pl.Expr:
    """A double uniform in [0, 1) per row, from the top 53 bits of :func:`hash64`."""
    return (hash64(x, key) // pl.lit(1 << 11, _U64)).cast(pl.Float64) * (1.0 / (1 << 53))


def below(x: pl.Expr, key: int, n) -> pl.Expr:
    """An integer uniform in [0, n) per row (``n`` an int or an integer expression > 0)."""
    return (uniform(x, key) * n).floor().cast(pl.Int64)


def permutation(n: int, key: int) -> pl.Series:
    """A seeded permutation of 0..n-1 (position -> rank), for exact-size random subsets."""
    return pl.select((hash64(pl.int_range(n), key).rank("ordinal") - 1).cast(pl.Int64)).to_series()


def decimal_units(units: pl.Expr, precision: int, scale: int = 5) -> pl.Expr:
    """Integer 1e-5 units as ``pl.Decimal(precision, scale)``."""
    return (units.cast(pl.Decimal(38, 5)) / UNITS).cast(pl.Decimal(precision, scale))


def round_units(units: pl.Expr, q: pl.Expr) -> pl.Expr:
    """Round integer units to a multiple of ``q`` (half up; units are non-negative)."""
    return (units + q // 2) // q * q


_CLICK_ID_COLUMNS = {("202_clicks", "click_id"), ("202_conversion_logs", "click_id"),
                     ("202_conversion_touchpoints", "click_id"), ("202_clicks_advance", "click_id")}


def table_schema(table: Table) -> dict[str, pl.DataType]:
    """The Polars dtypes of a generated frame for ``table`` (columns in table order)."""
    out = {}
    for col in table.columns:
        if (table.name, col.name) in _CLICK_ID_COLUMNS:
            out[col.name] = pl.UInt64
        elif isinstance(col.type, Numeric) and col.type.scale is not None and col.type.asdecimal:
            out[col.name] = pl.Decimal(col.type.precision, col.type.scale)
        elif isinstance(col.type, String):
            out[col.name] = pl.String
        else:
            out[col.name] = pl.Int64
    return out


def table_frame(table: Table, data) -> pl.DataFrame:
    """``data`` (a frame, or a list of row dicts) as exactly ``table``'s columns and dtypes."""
    dtypes = table_schema(table)
    if isinstance(data, list) and not data:
        data = pl.DataFrame(schema=dtypes)
    elif isinstance(data, list):
        data = pl.DataFrame([pl.Series(name, [row[name] for row in data], dtype=dtype) for name, dtype in dtypes.items()])
    missing = [c for c in dtypes if c not in data.columns]
    if missing:
        raise ValueError(f"{table.name}: generated frame lacks {missing}")
    df = data.select([pl.col(c).cast(t) for c, t in dtypes.items()])
    for col in table.columns:
        if not col.nullable and df.height and df.get_column(col.name).null_count():
            raise ValueError(f"{table.name}.{col.name} is NOT NULL but the generated frame has nulls")
    return df
