"""Markov-chain removal effects over journeys (docs/markov.md): the fit of a Markov model.

A path is ``start -> channel states -> (conversion) | (null)``. The transition probabilities are
the observed transition counts normalised per state; the chain is absorbing, and the conversion
probability from the start is the solution of ``(I - Q) x = r`` (``Q``: transient-to-transient
probabilities, ``r``: transient-to-conversion probabilities). A channel's removal effect is
``1 - P(conversion | channel removed) / P(conversion)``, removing a channel redirecting every
transition into its states to (null); its share is its removal effect over their sum.

Channels are ``Int64`` ids >= 0 (a ppc account, a campaign, ...). Negative ids are reserved:
``OTHER`` (the channels grouped together beyond ``max_channels``) and ``START``, ``CONVERSION``
and ``NULL`` (the non-channel states, in ``MarkovFit.transitions``).

Everything is whole-frame Polars and NumPy linear algebra: the removal of every channel is one
batch of small systems (docs/markov.md, "Every removal at once").
"""

from dataclasses import dataclass

import numpy as np
import polars as pl

OTHER = -1  #: the channel standing for every channel grouped together beyond ``max_channels``
START = -2  #: the start state (``from_channel`` of a path's first transition)
CONVERSION = -3  #: the conversion state (``to_channel`` of a converting path's last transition)
NULL = -4  #: the (null) state (``to_channel`` of a non-converting path's last transition)
ORDER2_MAX_CHANNELS = 50  #: order 2's default channel limit (up to 51 x 50 pair states)
_NO_PREV = -9  # internal stand-in for "no previous channel" (null in the frames returned)

PATHS_COLUMNS = ("path_id", "step", "channel", "converted")  # plus an optional "weight"
TRANSITIONS_SCHEMA = {"from_prev": pl.Int64, "from_channel": pl.Int64, "to_channel": pl.Int64, "count": pl.Float64}
CHANNELS_SCHEMA = {"channel": pl.Int64, "touches": pl.Float64, "removal_effect": pl.Float64, "share": pl.Float64}
CHANNEL_MAP_SCHEMA = {"channel": pl.Int64, "model_channel": pl.Int64}


@dataclass(frozen=True)
class MarkovFit:
    """The fit of one Markov model: frames sorted by their leading columns, so equal inputs give
    equal fits.

    * ``channels``: one row per model channel (``OTHER`` included when grouping happened):
      ``channel``, ``touches`` (weighted touches before self loops collapse), ``removal_effect``
      in [0, 1] and ``share`` (the removal effects normalised to sum to 1; all 0 when none is
      positive, e.g. when no path converted);
    * ``channel_map``: ``channel`` (every input channel) -> ``model_channel`` (itself or ``OTHER``);
    * ``transitions``: the weighted transition counts. A state is ``(from_prev, from_channel)``:
      ``from_prev`` is null in order 1 (and for the start state in order 2); a transition leads
      to ``(from_channel, to_channel)`` in order 2 and ``to_channel`` in order 1, or is absorbed
      (``to_channel`` = ``CONVERSION`` or ``NULL``);
    * ``conversion_probability``: P(conversion) from the start; ``paths_used`` and
      ``conversions_used``: weighted counts of the paths and converting paths fitted.
    """

    order: int
    self_loops: bool
    channels: pl.DataFrame
    channel_map: pl.DataFrame
    transitions: pl.DataFrame
    conversion_probability: float
    paths_used: float
    conversions_used: float


def fit_markov(paths: pl.DataFrame, *, order: int = 1, self_loops: bool = False,
               max_channels: int | None = None) -> MarkovFit:
    """The Markov fit of ``paths``: one row per (``path_id``, ``step``) with ``channel`` (an
    integer id >= 0) and ``converted`` (the path's outcome, repeated on its rows), and an optional
    ``weight`` (> 0, the path's count, repeated on its rows; 1 when absent).

    ``self_loops=False`` collapses consecutive touches of one channel into one state; ``True``
    keeps them as self transitions. ``order`` 1 or 2 (states are (previous, current) channel
    pairs). ``max_channels`` (default: 50 in order 2, no limit in order 1) groups the rarest
    channels into ``OTHER`` beyond it: the ``max_channels - 1`` most touched channels (ties: the
    smaller id) are kept. Grouping happens before self loops collapse.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, not {order!r}")
    limit = max_channels if max_channels is not None else (ORDER2_MAX_CHANNELS if order == 2 else None)
    if limit is not None and limit < 1:
        raise ValueError(f"max_channels must be >= 1, not {limit!r}")
    touches = _prepared(paths)
    touches, channel_map, touched = _grouped(touches, limit)
    if not self_loops:
        touches = _collapsed(touches)
    transitions = _transitions(touches, order)
    per_path = touches.filter(_last_of_path()).select(
        paths_used=pl.col("weight").sum(), conversions_used=pl.col("weight").filter(pl.col("converted")).sum())
    p_conv, removal = _removal_effects(transitions, touched.get_column("channel"), order)
    total = float(removal.sum())
    channels = touched.with_columns(
        removal_effect=pl.Series(removal, dtype=pl.Float64),
        share=pl.Series(removal / total if total > 0 else np.zeros(len(removal)), dtype=pl.Float64))
    out = transitions.with_columns(from_prev=pl.when(pl.col("from_prev") != _NO_PREV).then(pl.col("from_prev")))
    return MarkovFit(order=order, self_loops=self_loops, channels=channels.cast(CHANNELS_SCHEMA),
                     channel_map=channel_map, transitions=out.cast(TRANSITIONS_SCHEMA).sort(
                         ["from_prev", "from_channel", "to_channel"], nulls_last=False),
                     conversion_probability=p_conv, paths_used=float(per_path[0, "paths_used"] or 0.0),
                     conversions_used=float(per_path[0, "conversions_used"] or 0.0))


def _prepared(paths: pl.DataFrame) -> pl.DataFrame:
    """The touches sorted by path and step, with a Float64 weight; bad input raises ValueError."""
    missing = sorted(set(PATHS_COLUMNS) - set(paths.columns))
    if missing:
        raise ValueError(f"paths lack the columns {missing}")
    if not paths.schema["channel"].is_integer():
        raise ValueError(f"channel must be an integer id, not {paths.schema['channel']}")
    weight = pl.col("weight").cast(pl.Float64) if "weight" in paths.columns else pl.lit(1.0)
    touches = paths.select("path_id", "step", pl.col("channel").cast(pl.Int64),
                           pl.col("converted").cast(pl.Boolean), weight.alias("weight")).sort("path_id", "step")
    bad = touches.select(
        channel=(pl.col("channel").is_null() | (pl.col("channel") < 0)).any(),
        converted=pl.col("converted").is_null().any(),
        weight=(~(pl.col("weight") > 0) | pl.col("weight").is_null() | pl.col("weight").is_infinite()).any())
    if bad.height and bad.select(pl.any_horizontal(pl.all()))[0, 0]:
        raise ValueError(f"paths need channels >= 0, a converted flag and weights > 0 (offending: {bad})")
    return touches


def _first_of_path(lag: int = 1) -> pl.Expr:
    return (pl.col("path_id") != pl.col("path_id").shift(lag)).fill_null(True)


def _last_of_path() -> pl.Expr:
    return (pl.col("path_id") != pl.col("path_id").shift(-1)).fill_null(True)


def _grouped(touches: pl.DataFrame, limit: int | None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The touches with their model channel, the channel map and the weighted touches per model
    channel (sorted by channel)."""
    counts = touches.group_by("channel").agg(touches=pl.col("weight").sum()).sort(
        ["touches", "channel"], descending=[True, False])
    kept = counts.get_column("channel") if limit is None or counts.height <= limit \
        else counts.get_column("channel").head(limit - 1)
    model = pl.when(pl.col("channel").is_in(kept.implode())).then(pl.col("channel")).otherwise(pl.lit(OTHER))
    channel_map = counts.select("channel", model_channel=model).sort("channel").cast(CHANNEL_MAP_SCHEMA)
    touched = counts.group_by(model.alias("channel")).agg(pl.col("touches").sum()).sort("channel")
    if kept.len() < counts.height:
        touches = touches.with_columns(channel=model)
    return touches, channel_map, touched


def _collapsed(touches: pl.DataFrame) -> pl.DataFrame:
    """Consecutive touches of one channel in a path as one touch (no self transitions)."""
    return touches.filter(_first_of_path() | (pl.col("channel") != pl.col("channel").shift(1)))


def _transitions(touches: pl.DataFrame, order: int) -> pl.DataFrame:
    """Weighted counts per (from_prev, from_channel, to_channel); from_prev is ``_NO_PREV`` when
    the state has no previous channel (order 1, and order 2's start state)."""
    first, second = _first_of_path(), ~_first_of_path() & _first_of_path(2)
    channel = pl.col("channel")
    lag1 = pl.when(first).then(pl.lit(START, pl.Int64)).otherwise(channel.shift(1))
    lag2 = pl.when(first).then(pl.lit(_NO_PREV, pl.Int64)).when(second).then(pl.lit(START, pl.Int64)) \
        .otherwise(channel.shift(2))
    steps = touches.lazy().select(
        lag2=lag2 if order == 2 else pl.lit(_NO_PREV, pl.Int64), lag1=lag1, channel=channel,
        weight=pl.col("weight"), last=_last_of_path(), converted=pl.col("converted"))
    moves = steps.select(from_prev="lag2", from_channel="lag1", to_channel="channel", count="weight")
    absorbed = steps.filter(pl.col("last")).select(
        from_prev=pl.col("lag1") if order == 2 else pl.lit(_NO_PREV, pl.Int64), from_channel="channel",
        to_channel=pl.when(pl.col("converted")).then(pl.lit(CONVERSION, pl.Int64)).otherwise(pl.lit(NULL, pl.Int64)),
        count="weight")
    return pl.concat([moves, absorbed]).group_by("from_prev", "from_channel", "to_channel").agg(
        pl.col("count").sum()).sort("from_prev", "from_channel", "to_channel").collect()


def _system(transitions: pl.DataFrame, order: int) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """``A = I - Q``, ``r`` and the transient states (``state``, ``from_prev``, ``from_channel``;
    the start state is state 0) of the absorbing chain of ``transitions``."""
    states = transitions.select("from_prev", "from_channel").unique().sort("from_prev", "from_channel") \
        .with_row_index("state")
    # a transition leads to the state (from_channel, to_channel) in order 2, (no prev, to_channel) in order 1
    indexed = transitions.join(states, on=["from_prev", "from_channel"]).with_columns(
        to_prev=pl.col("from_channel") if order == 2 else pl.lit(_NO_PREV, pl.Int64),
        p=pl.col("count") / pl.col("count").sum().over("state"))
    indexed = indexed.join(states.rename({"state": "to_state", "from_prev": "to_prev", "from_channel": "to_channel"}),
                           on=["to_prev", "to_channel"], how="left")
    n = states.height
    a = np.eye(n)
    inner = indexed.filter(pl.col("to_state").is_not_null())
    a[inner["state"].to_numpy(), inner["to_state"].to_numpy()] -= inner["p"].to_numpy()
    r = np.zeros(n)
    converting = indexed.filter(pl.col("to_channel") == CONVERSION)
    r[converting["state"].to_numpy()] = converting["p"].to_numpy()
    return a, r, states


def _removal_effects(transitions: pl.DataFrame, channels: pl.Series, order: int) -> tuple[float, np.ndarray]:
    """P(conversion) and the removal effect of each of ``channels`` (sorted ids).

    Removing channel c deletes the states whose current channel is c from ``(I - Q) x = r``
    (their inbound transitions go to (null); in order 2 the states (c, *) are reachable only
    through them). With ``G = A^-1`` and ``S`` those states, the reduced system's solution at
    the start is ``x_0 - G[0, S] G[S, S]^-1 x_S`` (a bordered system: docs/markov.md), so every
    removal is one small solve of a batch padded with identity blocks, after one factorisation.
    """
    if transitions.height == 0:
        return 0.0, np.zeros(channels.len())
    a, r, states = _system(transitions, order)
    # the columns of A^-1: the removals need its blocks (a solve with the identity, one LU)
    inverse = np.linalg.solve(a, np.eye(a.shape[0]))
    x = inverse @ r
    p_conv = float(x[0])
    if not p_conv > 0:
        return 0.0, np.zeros(channels.len())
    members = states.filter(pl.col("state") > 0).join(
        channels.to_frame("from_channel").with_row_index("slot"), on="from_channel").with_columns(
        rank=pl.int_range(pl.len()).over("slot"))
    slot, rank = members.get_column("slot").to_numpy(), members.get_column("rank").to_numpy()
    state = members.get_column("state").to_numpy()
    width = int(rank.max()) + 1
    index = np.zeros((channels.len(), width), dtype=np.int64)
    present = np.zeros((channels.len(), width), dtype=bool)
    index[slot, rank], present[slot, rank] = state, True
    both = present[:, :, None] & present[:, None, :]
    blocks = np.where(both, inverse[index[:, :, None], index[:, None, :]], np.eye(width))
    rhs = np.where(present, x[index], 0.0)[..., None]
    kept = p_conv - (np.where(present, inverse[0, index], 0.0) * np.linalg.solve(blocks, rhs)[..., 0]).sum(axis=1)
    return p_conv, np.clip(1.0 - kept / p_conv, 0.0, 1.0)
