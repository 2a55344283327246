"""Each conversion's credit split over its touches by the Markov shares (docs/markov.md).

A touch of channel ``c`` in a journey whose distinct (model) channels are ``C`` gets

    credit = (share_c / n_c) / sum(share_c' for c' in C)

``n_c`` being the journey's touches of ``c``: the channels split the conversion in proportion to
their shares, and the touches of one channel split its part equally. The credits of a
conversion sum to 1. A channel the fit grouped into ``OTHER`` counts as ``OTHER`` (its touches
and the other grouped channels' share ``OTHER``'s part). A channel unknown to the fit (absent
from its paths, or no fit for the key) has share 0. When every channel of a journey has share 0
(or is unknown) the conversion is split equally over its touches, and counted in
``CreditSplit.fallback_conversions`` for the caller to report.

Whole-frame Polars and NumPy: one join, a numbering of the conversions, a stable sort and a few
``bincount``s; no Python per row.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from attribution_pipeline.core.markov_chain import MarkovFit

TOUCH_COLUMNS = ("conv_id", "position", "channel")  # plus the key columns
SHARES_SCHEMA = {"channel": pl.Int64, "model_channel": pl.Int64, "share": pl.Float64}


@dataclass(frozen=True)
class CreditSplit:
    """``credits``: the touches in their input order with a Float64 ``credit`` column;
    ``fallback_conversions``: conversions split equally because none of their channels has a
    positive share; ``unknown_touches``: touches whose channel the shares lack."""

    credits: pl.DataFrame
    fallback_conversions: int
    unknown_touches: int


def credit_shares(fit: MarkovFit) -> pl.DataFrame:
    """SHARES_SCHEMA: every channel of the fit's paths with its model channel and that model
    channel's share (sorted by channel); add the key columns to feed ``split_credit``."""
    shares = fit.channels.select(model_channel="channel", share="share")
    return fit.channel_map.join(shares, on="model_channel", how="left").select(
        "channel", "model_channel", pl.col("share").fill_null(0.0)).sort("channel").cast(SHARES_SCHEMA)


def split_credit(touches: pl.DataFrame, shares: pl.DataFrame, *, key: Sequence[str] = ()) -> CreditSplit:
    """The credit of every touch of ``touches`` (``*key``, ``conv_id``, ``position``, ``channel``;
    other columns are kept) under ``shares`` (``*key``, ``channel``, ``share`` >= 0, optionally
    ``model_channel``: one row per key and channel). A conversion is (``*key``, ``conv_id``).

    One join gives each touch its share and its model channel's slot (dense per key). The
    conversions are numbered densely: in journey order (each conversion's touches adjacent with
    positions 0, 1, ..., n-1, as journeys frames come) by one pass over the rows; rows in journey
    order within each key (several models' rows interleaved) are first sorted by key; any other
    order takes a window. ``n_c``, the conversions' share totals and sizes are then computed
    over (conversion, slot) cells by NumPy (docs/markov.md, "Speed"). (``*key``, ``conv_id``,
    ``position``) must be unique.
    """
    key = list(key)
    missing = sorted(set([*key, *TOUCH_COLUMNS]) - set(touches.columns)) \
        + sorted(set([*key, "channel", "share"]) - set(shares.columns))
    if missing:
        raise ValueError(f"touches or shares lack the columns {missing}")
    table = _share_table(shares, key)
    # eager: the lazy plan of the join and the window took 2.5 times as long
    frame = touches.join(table, on=[*key, "channel"], how="left", maintain_order="left")
    unknown = frame.get_column("_slot").null_count()
    width = int(table.get_column("_slot").max() or 0) + 2  # the last slot: channels unknown to the shares
    order, conversion = _numbered(frame, key)
    slot = frame.get_column("_slot").fill_null(width - 1).to_numpy()
    share = frame.get_column("_share").fill_null(0.0).to_numpy()
    if order is None:
        credit, fallback = _credits(conversion, slot, share, width)
    else:  # computed in key order, returned in the rows' order
        credit, fallback = np.empty(frame.height), 0
        credit[order], fallback = _credits(conversion, slot[order], share[order], width)
    return CreditSplit(credits=frame.drop("_slot", "_share").with_columns(credit=pl.Series(credit, dtype=pl.Float64)),
                       fallback_conversions=fallback, unknown_touches=unknown)


def _numbered(frame: pl.DataFrame, key: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
    """Each row's conversion numbered 0, 1, ..., and the row order they are numbered in (None:
    the frame's own order)."""
    conversion = [*key, "conv_id"]
    if frame.height == 0:
        return None, np.zeros(0, dtype=np.int64)
    if _in_journey_order(frame, conversion):
        return None, _run_ids(frame)
    if key:
        order = frame.select(pl.arg_sort_by(key, maintain_order=True)).to_series()
        by_key = frame.select(*conversion, "position")[order]
        if _in_journey_order(by_key, conversion):
            return order.to_numpy(), _run_ids(by_key)
    first = frame.with_row_index("_row").select(pl.col("_row").first().over(conversion)).to_series().to_numpy()
    return None, (np.cumsum(first == np.arange(first.size)) - 1)[first]


def _in_journey_order(frame: pl.DataFrame, conversion: list[str]) -> bool:
    """Does every run of rows starting at position 0, then 1, 2, ... hold one conversion's rows?"""
    position = pl.col("position")
    same = pl.all_horizontal(*map(_same_as_previous, conversion))
    return bool(frame.select(((position == 0) | (same & (position == position.shift(1) + 1))).fill_null(False).all())[0, 0])


def _run_ids(frame: pl.DataFrame) -> np.ndarray:
    """0, 1, ... for the runs of rows that start at position 0 (a frame in journey order)."""
    lengths = _run_lengths(frame.get_column("position").to_numpy()[1:] == 0, each=False)
    return np.repeat(np.arange(lengths.size), lengths)


def _same_as_previous(column: str) -> pl.Expr:
    return (pl.col(column) == pl.col(column).shift(1)).fill_null(False)


def _share_table(shares: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """``*key``, ``channel``, ``_share`` and ``_slot``: the model channel's rank within the key."""
    model = pl.col("model_channel") if "model_channel" in shares.columns else pl.col("channel")
    table = shares.select(*key, pl.col("channel").cast(pl.Int64), _model=model.cast(pl.Int64),
                          _share=pl.col("share").cast(pl.Float64))
    if table.select(pl.struct(*key, "channel").is_duplicated().any())[0, 0]:
        raise ValueError("shares hold more than one row for a key and channel")
    if table.select(~(pl.col("_share") >= 0).all() | pl.col("_share").is_null().any())[0, 0]:
        raise ValueError("shares must be numbers >= 0")
    slot = pl.col("_model").rank("dense") - 1
    return table.select(*key, "channel", "_share", _slot=(slot.over(key) if key else slot).cast(pl.Int64))


def _credits(conversion: np.ndarray, slot: np.ndarray, share: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """Each touch's credit and the number of conversions split equally, from each touch's
    conversion (dense ids), model channel ``slot`` and ``share``."""
    if conversion.size == 0:
        return np.zeros(0), 0
    conversions = int(conversion.max()) + 1
    # n_c: the run lengths of the (conversion, slot) cells sorted; a stable sort is quick on
    # journey order (sorted by conversion already, a few touches to order within each)
    cell = conversion * width
    cell += slot
    order = np.argsort(cell, kind="stable")
    ordered = cell[order]
    n_c = cell  # reused: the cells are not needed any more
    n_c[order] = _run_lengths(ordered[1:] != ordered[:-1])
    credit = share / n_c
    total = np.bincount(conversion, weights=credit, minlength=conversions)
    equal = ~(total > 0)  # every share 0: the part is 0, 0 / inf is 0, and the equal split is added
    np.divide(credit, np.where(equal, np.inf, total)[conversion], out=credit)
    if equal.any():
        credit += np.where(equal, 1.0 / np.bincount(conversion, minlength=conversions), 0.0)[conversion]
    return credit, int(np.count_nonzero(equal))


def _run_lengths(changes: np.ndarray, each: bool = True) -> np.ndarray:
    """The lengths of the runs of rows that ``changes`` (row i + 1 starts a run) delimits: per
    row when ``each``, else per run."""
    bounds = np.concatenate([[0], np.flatnonzero(changes) + 1, [changes.size + 1]])
    lengths = np.diff(bounds)
    return np.repeat(lengths, lengths) if each else lengths
