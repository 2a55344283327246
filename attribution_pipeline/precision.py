"""Stored precision (decision D14).

PHP binds doubles; MySQL rounds the *shortest round-trip decimal form* of the double half away
from zero to the column's scale (spec 3.7: 0.123455 -> 0.12346, 99.99999999999999 -> 100.0000,
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


def stored_decimal(expr: pl.Expr, dtype: pl.Decimal) -> pl.Expr:
    """The DECIMAL MySQL stores when PHP binds the double ``expr`` to a ``dtype`` column."""
    return (
        expr.cast(pl.String)
        .cast(_EXACT)
        .round(dtype.scale, mode="half_away_from_zero")
        .cast(dtype)
    )


def stored_credit(expr: pl.Expr) -> pl.Expr:
    return stored_decimal(expr, CREDIT_DTYPE)


def stored_money(expr: pl.Expr) -> pl.Expr:
    return stored_decimal(expr, MONEY_DTYPE)
