"""Largest-remainder allocation: stored totals split over touches so that the shares sum exactly."""

from collections.abc import Sequence
from decimal import Decimal

import polars as pl

SHARE_SCALE = 4


def units(expr: pl.Expr, scale: int) -> pl.Expr:
    """A decimal expression as exact integer units of 10**-scale (Int128)."""
    return (expr * (10**scale)).cast(pl.Int128)


def allocate(df: pl.DataFrame, *, total: str, weight: pl.Expr, group: str, order: Sequence[str], name: str,
             scale: int = SHARE_SCALE, within: Sequence[str] = ()) -> pl.DataFrame:
    """``df`` sorted by ``within`` (columns constant within a group: they order the groups only),
    ``group`` then ``order``, with ``name``: ``total`` (a decimal equal on every
    row of a ``group``) split over the group's rows in proportion to ``weight`` (an exact Int128
    expression), in units of 10**-scale, so that the group's shares sum *exactly* to ``total``.

    Each row gets ``floor(total x w / W)`` units; the units left over (fewer than the group's rows)
    go one each to the largest remainders, ties to the first rows by ``order``. Integer arithmetic
    throughout (Int128), so no float ever decides a cent. A group whose weights sum to zero is split
    evenly. Negative totals and weights are handled (floor division on a positive denominator).
    A frame already sorted by ``within``, ``group`` and ``order`` is not sorted again (Polars checks).
    """
    i128 = pl.Int128
    out = df.sort([*within, group, *order]).with_columns(_w=weight.fill_null(0).cast(i128),
                                                _r=units(pl.col(total), scale).fill_null(0))
    out = out.with_columns(_w=pl.when(pl.col("_w").sum().over(group) == 0).then(pl.lit(1, i128))
                           .otherwise(pl.col("_w")))
    out = out.with_columns(_den=pl.col("_w").sum().over(group))
    out = out.with_columns(_sign=pl.when(pl.col("_den") < 0).then(pl.lit(-1, i128)).otherwise(pl.lit(1, i128)))
    out = out.with_columns(_num=pl.col("_r") * pl.col("_w") * pl.col("_sign"), _den=pl.col("_den") * pl.col("_sign"))
    out = out.with_columns(_floor=pl.col("_num") // pl.col("_den"))
    out = out.with_columns(_frac=pl.col("_num") - pl.col("_floor") * pl.col("_den"),
                           _left=pl.col("_r") - pl.col("_floor").sum().over(group))
    # rank 0.. by remainder, largest first; "ordinal" breaks ties by row order, i.e. by ``order``
    out = out.with_columns(_rank=pl.col("_frac").rank("ordinal", descending=True).over(group) - 1)
    out = out.with_columns(_units=pl.col("_floor") + (pl.col("_rank") < pl.col("_left")).cast(i128))
    step = pl.lit(Decimal(1).scaleb(-scale), pl.Decimal(38, scale))
    return out.with_columns(
        (pl.col("_units").cast(pl.Decimal(38, 0)) * step).cast(pl.Decimal(38, scale)).alias(name)
    ).drop("_w", "_r", "_sign", "_num", "_den", "_floor", "_frac", "_left", "_rank", "_units")
