"""Several integer columns packed into one 128-bit key, to sort (or group) on one column.

Polars sorts a frame on one Int128 column several times faster than on three or more columns (a
multi-column sort compares row by row: 0.57 s against 0.16 s for 790k touchpoints sorted in the
exports' order, bench/RESULTS.md). ``packed_key("a", ("b", 32), ("c", 16))`` is
``a * 2^48 + b * 2^16 + c``: ordered exactly as ``(a, b, c)`` when every later column holds
non-negative values below ``2^width`` (Prosper202's ``int(10) unsigned`` ids below 2^32, its
``smallint unsigned`` positions below 2^16) and the first fits in the remaining bits (any Int64
does, next to at most 64 bits of later columns). :func:`packed_order` checks the widths on the
frame and falls back to the multi-column order when a value does not fit, so the result never
depends on the shortcut.
"""

from collections.abc import Sequence

import polars as pl

#: Bits a key may give to the columns after the first: an Int64 first column keeps the key below 2^127.
_LATER_BITS = 63


def packed_key(first: str, *rest: tuple[str, int]) -> pl.Expr:
    """``first * 2^(w1 + w2 + ...) + c1 * 2^(w2 + ...) + ... + cn`` as Int128, for ``rest`` =
    ``(c1, w1), ..., (cn, wn)`` (the caller guarantees the widths; :func:`packed_order` checks)."""
    if sum(width for _, width in rest) > _LATER_BITS:
        raise ValueError("a packed key gives at most 63 bits to the columns after the first")
    key = pl.col(first).cast(pl.Int128)
    for name, width in rest:
        key = key * (1 << width) + pl.col(name).cast(pl.Int128)
    return key


def fits(frame: pl.DataFrame, rest: Sequence[tuple[str, int]]) -> bool:
    """Whether every value of the ``rest`` columns of ``frame`` is non-null, >= 0 and below 2^width."""
    if frame.height == 0 or not rest:
        return True
    checks = [(pl.col(n).is_not_null() & (pl.col(n) >= 0) & (pl.col(n) < (1 << w))).all() for n, w in rest]
    return bool(frame.select(pl.all_horizontal(checks)).item())


def packed_order(frame: pl.DataFrame, first: str, *rest: tuple[str, int]) -> pl.Expr | list[str]:
    """What to sort ``frame`` by for the order of ``(first, *rest columns)``: the packed key when
    the widths hold on ``frame`` (and ``first`` has no nulls), else the column names."""
    if frame.get_column(first).null_count() == 0 and fits(frame, rest):
        return packed_key(first, *rest)
    return [first, *(name for name, _ in rest)]


def duplicated_rows(frame: pl.DataFrame, keys: Sequence[str]) -> pl.Series:
    """Row indices (UInt32) of ``frame`` whose ``keys`` values occur more than once, every copy
    included (nulls equal to nulls), as pandera's ``unique`` reports them.

    Integer keys without nulls are packed into one key with the widths their values need (a
    width per later column from its largest value), and a frame whose packed keys are all
    distinct is done in one ``n_unique`` (75 ms against 204 ms for ``is_duplicated`` on three
    columns, 2.4M credit rows); otherwise, or when a duplicate exists, the rows are found on the
    columns themselves."""
    none = pl.Series("index", [], dtype=pl.UInt32)
    if frame.height < 2:
        return none
    key = _distinct_key(frame, list(keys))
    if key is not None and frame.select(key.n_unique()).item() == frame.height:
        return none
    return frame.select(pl.struct(list(keys)).is_duplicated().arg_true().alias("index")).to_series()


def _distinct_key(frame: pl.DataFrame, keys: list[str]) -> pl.Expr | None:
    """One integer expression equal on two rows exactly when their ``keys`` are, or None."""
    if not keys or any(not frame.schema[k].is_integer() for k in keys):
        return None
    bounds = frame.select(*[pl.col(k).null_count().alias(f"n{i}") for i, k in enumerate(keys)],
                          *[pl.col(k).min().alias(f"lo{i}") for i, k in enumerate(keys)],
                          *[pl.col(k).max().alias(f"hi{i}") for i, k in enumerate(keys)]).row(0)
    count = len(keys)
    if any(bounds[:count]) or any(lo < 0 for lo in bounds[count + 1:2 * count]):
        return None
    rest = [(name, max(1, int(hi).bit_length())) for name, hi in zip(keys[1:], bounds[2 * count + 1:])]
    # an unsigned 64-bit first column needs one bit more than an Int64 one below 2^127
    if sum(width for _, width in rest) > _LATER_BITS - (frame.schema[keys[0]] == pl.UInt64):
        return None
    return packed_key(keys[0], *rest)
