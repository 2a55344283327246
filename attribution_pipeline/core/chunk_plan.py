"""Chunks sized by the work they hold, within a memory budget (``ATTRIBUTION_MEMORY_BUDGET_MB``).

A run's hours are cut into chunks of whole, consecutive hours (``ATTRIBUTION_CHUNK_HOURS`` is only
an upper bound on a chunk's hours). What a chunk costs is estimated from cheap counts, before any
heavy read: for each hour ``H``

    rows(H) = sum over users u of conversions(u, H) x (cap + 1) x max(1, valid models(u))

an upper bound of the chunk's credit rows (every journey has at most ``cap + 1`` touches, D2; each
valid model credits each touch at most once, D1; a user without a valid model still has journeys,
hence the ``max(1, ...)``). Only conversions whose click was found count (D16). The clicks a
journey can actually use are not known before the journeys are built: any campaign with traffic
fills the cap within the 30-day lookback (on the dense tenant of issue 17 most journeys were at
the cap), so the estimate takes the cap. It is what every step can compute the same way from the
stored ``conversions`` and ``attribution_models`` frames, so the journeys, credits, snapshots and
write-back steps cut the run the same way.

A chunk's estimated peak is ``FIXED_MIB + rows x BYTES_PER_ROW``; chunks are filled greedily, hour
by hour, while that stays within the budget. An hour whose own estimate is over the budget is a
chunk of its own and is computed in pieces inside its ``produce`` (:func:`pieces`: by user, then
a user's conversions by ``conv_id`` range), concatenated into that hour's frame; the write-back
still writes the hour in one transaction (D9).

Measured figures (``BYTES_PER_ROW``, ``FIXED_MIB``, ``CLICK_BYTES``)
-----------------------------------------------------------------
Method: peak RSS of the whole job run in-process as ``attribution rebuild`` runs it (every step
and check), the process sampled every 10 ms from a thread (``/proc/self/statm``), each step's peak
read from the samples between its start and end events; the figure is the peak before the
Parquet exports step (which keeps its own chunking). Data: the demo generator (seed 202, 4
accounts of which one deleted, 2 campaigns each, 300k clicks over 31 days, 30k conversions in 24
hours), multi-touch on everywhere and only the models that credit every touch active (linear,
time decay, position based: 3-5 valid per account), so that journeys are at the cap (25.7 touches
per conversion) and the credit rows equal the estimate (1.90M touchpoints for 1.94M estimated
rows over 24 hours): the worst case per estimated row. The first 6, 12 and 24 hours, each as one
chunk (budget out of the way), held 0.48M, 0.96M and 1.94M estimated rows and peaked at 576, 782
and 1,283 MiB (the write-back step's peak each time). Slopes: 452 bytes a row from 6 to 12 hours,
538 from 12 to 24; ``FIXED_MIB`` is the intercept (about 340 MiB: Python, Dagster, Polars, the
run's bookkeeping), rounded up. A run of several chunks peaks higher: a later chunk runs on top of
memory the allocator kept from the earlier ones. The largest seen: 72 hours of 60k conversions
(the same shape, 600k clicks) in two chunks of 2.21M estimated rows peaked at 1,611 MiB, 598 bytes
a row above ``FIXED_MIB`` (then rounded up to 620). On 2026-12-04, with the visitor journeys, the
scoped and spend exports added, the default benchmark (720 h, 2M clicks, 100k conversions) peaked at
1,985 MiB in the write-back with chunks of 2.0M estimated rows (at 620), 857 bytes a row above
``FIXED_MIB``; ``BYTES_PER_ROW`` is 850 since (the same run then peaked at 1,599 MiB in the write-back;
bench/RESULTS.md, "Memory at 10M clicks"). With every model type active
(last and first touch credit one touch a journey) the one-chunk runs gave 315 bytes an estimated
row. Check: the 24 hours under budgets of 700 and 900 MiB were cut into 4 and 2 chunks and peaked
at 701 and 802 MiB (at 560 bytes a row). ``CLICK_BYTES``: the journeys step alone over 720 hours of 1M clicks held at most
272k click rows at once and peaked 163 MiB above its start, about 57 MiB of it the journeys built:
about 400 bytes a click row.
"""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from attribution_pipeline.settings import Settings

#: Peak RSS per estimated row of a chunk (see the module docstring for how it was measured).
BYTES_PER_ROW = 850
#: Peak RSS of a run before its chunks hold anything (see the module docstring).
FIXED_MIB = 350
#: Peak RSS per click row the journeys step holds (read, deduplicated, indexed by the journey rule).
CLICK_BYTES = 400
#: Estimated rows one stored row counts for when a loaded frame is iterated whole (the data checks):
#: a check costs about 440 bytes a stored row by itself, but it runs after the compute steps, on
#: top of memory the allocator has not returned yet, and its rows are real ones, not an upper
#: bound (over 720 hours of 200k conversions, 2.2M stored credit rows a chunk peaked at 1,543 MiB).
STORED_ROW_WEIGHT = 2
#: Extra peak RSS per estimated row, as a share of ``BYTES_PER_ROW``, for each scope type written
#: (D31): the default benchmark (720 h, 2M clicks, 100k conversions) peaked at 1,801 MiB with global
#: rows only and 2,507 MiB with all five scope types, 1.49 times the memory above ``FIXED_MIB``.
#: With this share it peaked at 2,010 MiB (0.15 gave 2,111 MiB: past this, the peak no longer
#: follows the chunks' size; bench/RESULTS.md, "Scoped snapshots at the default size"). Kept since the
#: scoped rows are computed one type at a time (2026-12-05): the write-back then peaked at about
#: 1,000 MiB at the default size and 1,312 MiB on the dense tenant, under the 1,536 MiB budget.
SCOPE_ROW_SHARE = 0.1
MIB = 1 << 20


def compute_budget_mb(settings: Settings) -> float:
    """The budget the chunks' estimated rows are sized for: ``settings.memory_budget_mb``, its part
    above ``FIXED_MIB`` divided by ``1 + SCOPE_ROW_SHARE x scope types`` when scoped rows are written."""
    factor = 1 + SCOPE_ROW_SHARE * len(settings.scope_types)
    return FIXED_MIB + (float(settings.memory_budget_mb) - FIXED_MIB) / factor


def rows_within(budget_mb: float) -> int:
    """How many estimated rows a chunk may hold under ``budget_mb`` (at least one)."""
    return max(1, int((float(budget_mb) - FIXED_MIB) * MIB) // BYTES_PER_ROW)


def budget_mb_for(rows: int, scope_types: int = 0) -> float:
    """The budget (MiB) under which a chunk holds exactly ``rows`` estimated rows (tests, docs), when
    ``scope_types`` scope types are written (:func:`compute_budget_mb`)."""
    return FIXED_MIB + (int(rows) * BYTES_PER_ROW + BYTES_PER_ROW / 2) / MIB * (1 + SCOPE_ROW_SHARE * scope_types)


def click_slice_rows(budget_mb: float) -> int:
    """About how many click rows the journeys step reads at once (``storage/click_stream.py``): a
    quarter of what the budget leaves after ``FIXED_MIB``, at ``CLICK_BYTES`` a row."""
    return max(10_000, int((float(budget_mb) - FIXED_MIB) * MIB) // 4 // CLICK_BYTES)


def touches_bound(touch_cap: int) -> int:
    """The most touches a journey can have: the cap, plus the converting click (D2)."""
    return int(touch_cap) + 1


def models_per_user(models: pl.DataFrame) -> pl.DataFrame:
    """``user_id, models``: the valid models of each user in a frames.MODELS frame."""
    return (
        models.filter(pl.col("is_valid"))
        .group_by("user_id")
        .agg(models=pl.col("model_id").n_unique().cast(pl.Int64))
    )


def conversion_weights(conversions: pl.DataFrame, per_user: pl.DataFrame, touch_cap: int) -> pl.DataFrame:
    """Each counted conversion's estimated rows: ``(cap + 1) x max(1, valid models of its user)``.

    ``conversions`` has ``date_hour``, ``user_id`` and (optionally) ``conv_id`` and ``conversions`` (a
    count per row, 1 when absent); rows whose ``click_rows`` is 0 do not count (D16)."""
    df = conversions
    if "click_rows" in df.columns:
        df = df.filter(pl.col("click_rows") > 0)
    count = pl.col("conversions") if "conversions" in df.columns else pl.lit(1, dtype=pl.Int64)
    return df.join(per_user, on="user_id", how="left").with_columns(
        weight=count.cast(pl.Int64) * touches_bound(touch_cap) * pl.col("models").fill_null(0).clip(lower_bound=1)
    ).drop("models")


def hour_rows(counts: pl.DataFrame, per_user: pl.DataFrame, touch_cap: int) -> dict[int, int]:
    """Estimated rows of each hour from ``counts`` (``date_hour, user_id, conversions``)."""
    weighted = conversion_weights(counts, per_user, touch_cap)
    per_hour = weighted.group_by("date_hour").agg(pl.col("weight").sum())
    return dict(zip(per_hour.get_column("date_hour").to_list(), per_hour.get_column("weight").to_list()))


def pack(weights: Sequence[int], limit: int, max_items: int | None = None,
         breaks: Sequence[bool] | None = None) -> list[int]:
    """The group of each item: consecutive items, greedily, while a group's sum stays within
    ``limit`` and it has at most ``max_items`` items; an item over ``limit`` is a group of its own;
    ``breaks[i]`` starts a new group at item ``i``."""
    cap = max_items if max_items is not None else len(weights) + 1
    forced = breaks if breaks is not None else [False] * len(weights)

    def step(state: tuple[int, int, int], item: tuple[int, bool]) -> tuple[int, int, int]:
        total, count, group = state
        weight, brk = item
        if count and not brk and total + weight <= limit and count < cap:
            return total + weight, count + 1, group
        return weight, 1, group + 1

    states = itertools.accumulate(zip(weights, forced), step, initial=(0, 0, -1))
    return [group for _, _, group in list(states)[1:]]


@dataclass(frozen=True)
class ChunkPlan:
    """The chunks of a run and what each is estimated to hold."""

    chunks: tuple[tuple[int, ...], ...]
    estimated_rows: tuple[int, ...]
    rows_budget: int
    budget_mb: float
    hour_rows: dict[int, int] = field(default_factory=dict)

    def oversized(self, chunk: Sequence[int]) -> bool:
        """Whether ``chunk`` (one hour, then) holds more than the budget: computed in pieces."""
        return sum(self.hour_rows.get(h, 0) for h in chunk) > self.rows_budget

    @property
    def split_hours(self) -> list[int]:
        return sorted(h for h, rows in self.hour_rows.items() if rows > self.rows_budget)

    def metadata(self) -> dict[str, int]:
        """What a step reports with its materialisation (integers: ``FrameStats.counters``)."""
        return {
            "plan_chunks": len(self.chunks),
            "plan_max_estimated_rows": max(self.estimated_rows, default=0),
            "plan_rows_budget": self.rows_budget,
            "plan_split_hours": len(self.split_hours),
            "memory_budget_mb": round(self.budget_mb),
        }


def plan_chunks(hours: Sequence[int], hour_rows: dict[int, int], *, budget_mb: float, max_hours: int) -> ChunkPlan:
    """``hours`` cut into consecutive chunks of at most ``max_hours`` hours whose estimated rows
    (``hour_rows``, 0 for an hour not listed) stay within :func:`rows_within` ``(budget_mb)``."""
    ordered = sorted(hours)
    budget = rows_within(budget_mb)
    weights = [int(hour_rows.get(h, 0)) for h in ordered]
    groups = pack(weights, budget, max(1, int(max_hours)))
    table = pl.DataFrame({"hour": ordered, "rows": weights, "group": groups},
                         schema={"hour": pl.Int64, "rows": pl.Int64, "group": pl.Int64})
    by_group = table.group_by("group", maintain_order=True).agg(pl.col("hour"), pl.col("rows").sum())
    return ChunkPlan(
        chunks=tuple(tuple(hs) for hs in by_group.get_column("hour").to_list()),
        estimated_rows=tuple(by_group.get_column("rows").to_list()),
        rows_budget=budget,
        budget_mb=float(budget_mb),
        hour_rows={h: w for h, w in zip(ordered, weights) if w},
    )


def pieces(weights: pl.DataFrame, rows_budget: int) -> pl.DataFrame:
    """``conv_id, piece``: the conversions of an hour too large for the budget, in pieces that fit.

    ``weights`` has ``user_id``, ``conv_id`` and ``weight`` (estimated rows of the conversion).
    Whole users are packed together (in ``user_id`` order) while they fit; a user over the budget
    alone is cut by ``conv_id`` range. A conversion is never cut. Pieces are numbered from 0.
    """
    per_user = weights.group_by("user_id").agg(total=pl.col("weight").sum()).sort("user_id")
    user_groups = pack(per_user.get_column("total").to_list(), rows_budget)
    users = per_user.with_columns(group=pl.Series(user_groups, dtype=pl.Int64),
                                  heavy=pl.col("total") > rows_budget)
    convs = weights.join(users.select("user_id", "group", "heavy"), on="user_id").sort("user_id", "conv_id")
    heavy = convs.filter(pl.col("heavy"))
    starts = heavy.get_column("user_id").is_first_distinct().to_list()
    sub = pl.Series(pack(heavy.get_column("weight").to_list(), rows_budget, breaks=starts), dtype=pl.Int64)
    keyed = pl.concat([
        convs.filter(~pl.col("heavy")).select("conv_id", "group", sub=pl.lit(0, dtype=pl.Int64)),
        heavy.select("conv_id", "group").with_columns(sub=sub),
    ])
    changed = (pl.col("group").diff().fill_null(1) != 0) | (pl.col("sub").diff().fill_null(1) != 0)
    return keyed.sort("group", "sub").select("conv_id", piece=changed.cast(pl.Int64).cum_sum() - 1)


def split_by_piece(df: pl.DataFrame, assignment: pl.DataFrame) -> list[pl.DataFrame]:
    """The rows of ``df`` per piece of ``assignment`` (``conv_id, piece``), in piece order."""
    keyed = df.join(assignment, on="conv_id", how="left", maintain_order="left")
    return [part.drop("piece") for part in keyed.sort("piece", maintain_order=True).partition_by("piece")]


def conversion_pieces(conversions: pl.DataFrame, per_user: pl.DataFrame, touch_cap: int,
                      rows_budget: int) -> list[pl.DataFrame]:
    """The rows of ``conversions`` (counted frames.CONVERSIONS rows, or any frame with
    ``user_id`` and ``conv_id``) in :func:`pieces` of at most ``rows_budget`` estimated rows."""
    weights = conversion_weights(conversions.select("user_id", "conv_id"), per_user, touch_cap)
    return split_by_piece(conversions, pieces(weights, rows_budget))


def row_pieces(df: pl.DataFrame, rows_budget: int) -> list[pl.DataFrame]:
    """The rows of ``df`` (frames.CREDITS rows of an hour) in :func:`pieces` of whole conversions
    holding at most ``rows_budget`` rows (a conversion over it alone is a piece of its own)."""
    weights = df.group_by("user_id", "conv_id").agg(weight=pl.len().cast(pl.Int64))
    return split_by_piece(df, pieces(weights, rows_budget))


# ------------------------------------------------------------------------------------------
# A run's plan, from its stored frames
# ------------------------------------------------------------------------------------------

_COUNTS = {"date_hour": pl.Int64, "user_id": pl.Int64, "campaign_id": pl.Int64, "conversions": pl.Int64}


def conversion_counts(conversions) -> pl.DataFrame:
    """``date_hour, user_id, campaign_id, conversions``: the counted conversions (D16) of an
    ``HourlyFrame`` of frames.CONVERSIONS, read one of its chunks at a time."""
    parts = [
        df.filter(pl.col("click_rows") > 0)
        .group_by("date_hour", "user_id", "campaign_id")
        .agg(conversions=pl.len())
        .cast(_COUNTS)
        for _, df in conversions.chunks()
    ]
    return pl.concat(parts) if parts else pl.DataFrame(schema=_COUNTS)


def plan_for(hours: Sequence[int], counts: pl.DataFrame, models: pl.DataFrame, settings: Settings) -> ChunkPlan:
    """The plan of ``hours`` from ``conversion_counts`` and a frames.MODELS frame, within
    ``settings.memory_budget_mb`` and at most ``settings.chunk_hours`` hours a chunk."""
    per_hour = hour_rows(counts, models_per_user(models), settings.touch_cap)
    return plan_chunks(hours, per_hour, budget_mb=compute_budget_mb(settings), max_hours=settings.chunk_hours)


def plan_run(hours: Sequence[int], conversions, models, settings: Settings) -> ChunkPlan:
    """The plan of ``hours`` from the ``HourlyFrame``s of the run's conversions and models: what
    the journeys, credits and write-back steps each compute, the same way."""
    return plan_for(hours, conversion_counts(conversions), models.collect(), settings)
