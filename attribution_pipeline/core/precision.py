"""Stored precision (decision D14).

PHP binds doubles; MySQL rounds the *shortest round-trip decimal form* of the double half away
from zero to the column's scale (spec §3.7: 0.123455 -> 0.12346, 99.99999999999999 -> 100.0000,
-0.000005 -> -0.00001). We reproduce that in the pipeline, vectorised: Polars prints a float in
its shortest round-trip form, that string is parsed exactly as a decimal, then rounded half away
from zero. Writing the resulting exact decimals makes SQLite and MariaDB store the same values.
"""

import polars as pl

CREDIT_SCALE = 5  # 202_attribution_touchpoints.credit / weight: DECIMAL(10,5)
MONEY_SCALE = 4  # 202_attribution_snapshots.attributed_revenue / _cost: DECIMAL(12,4)

CREDIT_DTYPE = pl.Decimal(10, CREDIT_SCALE)
MONEY_DTYPE = pl.Decimal(12, MONEY_SCALE)

_EXACT = pl.Decimal(38, 20)


def max_units(dtype: pl.Decimal) -> int:
    """The largest magnitude ``dtype`` holds, in units of its last digit (DECIMAL(12,4): 10**12 - 1)."""
    return 10**dtype.precision - 1


def storable(expr: pl.Expr, dtype: pl.Decimal) -> pl.Expr:
    """Does the double ``expr`` fit ``dtype`` once rounded to its scale? False for NaN and
    infinities, null for null."""
    units = (expr.cast(pl.Float64) * 10**dtype.scale).round(0, mode="half_away_from_zero")
    return expr.cast(pl.Float64).is_finite() & (units.abs() <= max_units(dtype))


def stored_decimal(expr: pl.Expr, dtype: pl.Decimal) -> pl.Expr:
    """The DECIMAL MySQL stores when PHP binds the double ``expr`` to a ``dtype`` column; null when
    it does not fit (see the module docstring)."""
    x = expr.cast(pl.Float64)
    bound = 10 ** (dtype.precision - dtype.scale)  # |x| >= bound never fits; below it the string is plain
    exact = (
        pl.when(x.is_finite() & (x.abs() < bound)).then(x).otherwise(None)
        .cast(pl.String)
        .cast(_EXACT)
        .round(dtype.scale, mode="half_away_from_zero")
    )
    largest = pl.lit(max_units(dtype), dtype=pl.Int64).cast(_EXACT) / 10**dtype.scale
    return pl.when(exact.abs() <= largest).then(exact).otherwise(None).cast(dtype)


def stored_credit(expr: pl.Expr) -> pl.Expr:
    return stored_decimal(expr, CREDIT_DTYPE)


def stored_money(expr: pl.Expr) -> pl.Expr:
    return stored_decimal(expr, MONEY_DTYPE)


def rounded(expr: pl.Expr, dtype: pl.Decimal) -> pl.Expr:
    """``expr`` rounded numerically, half away from zero, to ``dtype``: what MySQL stores except
    where :func:`near_tie` (then :func:`with_exact_ties` takes the exact path)."""
    scale = 10**dtype.scale
    # the double nearest the rounded decimal; Polars' float -> DECIMAL cast rounds to nearest, so
    # it lands exactly on that decimal (checked against Python's decimal in tests). Values that do
    # not fit become null first: Polars' cast raises on them even when not strict.
    units = (expr.cast(pl.Float64) * scale).round(0, mode="half_away_from_zero")
    return pl.when(units.abs() <= max_units(dtype)).then(units.truediv(scale)).otherwise(None).cast(dtype)


def near_tie(expr: pl.Expr, dtype: pl.Decimal) -> pl.Expr:
    """Is ``expr`` within a few ulps of a half-way tie at ``dtype``'s scale (where :func:`rounded` may differ)?"""
    units = expr.cast(pl.Float64) * 10**dtype.scale
    # |computed units - shortest decimal x 10**scale| is a few ulps: far below this margin. Values
    # beyond the column never are (the margin would cover every double there; they do not fit).
    near = ((units - units.floor()) - 0.5).abs() <= units.abs().clip(lower_bound=1.0) * 1e-12
    return near & (units.abs() <= max_units(dtype) + 1)


def with_exact_ties(frame: pl.DataFrame, source: str, target: str, tie: str, dtype: pl.Decimal) -> pl.DataFrame:
    """``frame`` with ``target`` recomputed by the exact decimal path where ``tie`` is true, ``tie`` dropped."""
    ties = frame.get_column(tie).arg_true()
    if ties.len():
        exact = frame.get_column(source).gather(ties).to_frame("x").select(stored_decimal(pl.col("x"), dtype)).to_series()
        frame = frame.with_columns(frame.get_column(target).scatter(ties, exact))
    return frame.drop(tie)


def quantize(values: pl.Series, dtype: pl.Decimal) -> pl.Series:
    """The same result as :func:`stored_decimal` on a whole column, about 5x faster.

    Rounding ``x * 10**scale`` numerically is exact except within a few ulps of a half-way tie,
    where the double's shortest decimal form decides (0.123455 is stored 0.12346 although the
    double is slightly below the tie). Those rows, about one in a million for credits, go through
    the exact decimal path; every other row is rounded numerically (half away from zero).
    """
    x = pl.col("x")
    frame = values.to_frame("x").select(x, fast=rounded(x, dtype), near_tie=near_tie(x, dtype))
    return with_exact_ties(frame, "x", "fast", "near_tie", dtype).get_column("fast").rename(values.name)
