"""The frames that cross asset boundaries: their columns, and a container that streams them.

Every intermediate frame has a ``date_hour`` column (the UTC hour of the conversion it belongs
to), so any set of whole hours can be stored, read back and recombined, one hour or a range.

:class:`HourlyFrame` is what assets return and receive. It is a *recipe* that yields the frame
chunk by chunk (whole hours at a time): the IO manager stores each chunk as it is produced, and a
downstream asset reads only the hours of its current chunk. Memory is therefore bounded by one
chunk, whatever the length of the partition range.
"""

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import polars as pl

from attribution_pipeline.core.chunk_plan import plan_run
from attribution_pipeline.core.hours import chunk_hours
from attribution_pipeline.core.precision import CREDIT_DTYPE, MONEY_DTYPE
from attribution_pipeline.settings import Settings

# ------------------------------------------------------------------------------------------
# Column contracts (name -> dtype). The pandera models of core/contracts.py mirror these.
# ------------------------------------------------------------------------------------------

CLICK_ID = pl.UInt64  # 202_clicks.click_id is BIGINT UNSIGNED

#: One row per conversion of the hours (spec §2.1, D15, D16).
CONVERSIONS = {
    "date_hour": pl.Int64,
    "conv_id": pl.Int64,
    "user_id": pl.Int64,
    "campaign_id": pl.Int64,  # 202_conversion_logs.campaign_id
    "click_id": CLICK_ID,  # the converting click
    "conv_time": pl.Int64,
    "click_time": pl.Int64,  # 202_conversion_logs.click_time (used when the click is added)
    "payout": pl.Float64,  # 202_conversion_logs.click_payout as a double: the revenue
    "cpc": pl.Float64,  # converting click's 202_clicks.click_cpc as a double: the cost
    "ppc_account_id": pl.Int64,  # converting click's traffic source
    "landing_page_id": pl.Int64,  # converting click's landing page
    "click_campaign_id": pl.Int64,  # converting click's aff_campaign_id
    "click_rows": pl.UInt32,  # rows of 202_clicks sharing the converting click id (D15: >1)
}

#: One row per touch of each conversion's journey, positions 0..n-1 (D2, D13).
JOURNEYS = {
    "date_hour": pl.Int64,
    "user_id": pl.Int64,
    "conv_id": pl.Int64,
    "conv_time": pl.Int64,
    "position": pl.Int32,
    "n": pl.Int32,  # journey length
    "click_id": CLICK_ID,
    "click_time": pl.Int64,
    "is_converting": pl.Boolean,  # this touch is the conversion's own click
    "multi_touch": pl.Boolean,  # multi-touch was enabled for the conversion (spec §5.1)
    "touch_campaign_id": pl.Int64,  # the touch click's aff_campaign_id (null if unknown)
    "touch_ppc_account_id": pl.Int64,
    "touch_landing_page_id": pl.Int64,
    "touch_cpc": pl.Float64,  # the touch click's own click_cpc (exports only, never the PHP tables)
}

#: The click slice journeys are built from: rows of 202_clicks (duplicates included until D15
#: collapses them).
CLICKS = {
    "click_id": CLICK_ID,
    "user_id": pl.Int64,
    "aff_campaign_id": pl.Int64,
    "click_time": pl.Int64,
    "ppc_account_id": pl.Int64,
    "landing_page_id": pl.Int64,
    "click_cpc": pl.Float64,
}

#: One row per (hour, active model of a selected user), valid or not (spec §3.6, D6, D7, D10).
MODELS = {
    "date_hour": pl.Int64,
    "model_id": pl.Int64,
    "user_id": pl.Int64,
    "model_name": pl.String,
    "model_slug": pl.String,
    "model_type": pl.String,
    "strategy": pl.String,  # the credit function used (algorithmic -> last_touch or markov); null if invalid
    "half_life_hours": pl.Int64,  # time_decay only
    "first_touch_weight": pl.Float64,  # position_based only
    "last_touch_weight": pl.Float64,  # position_based only
    "is_valid": pl.Boolean,
    "error": pl.String,  # the validation message when invalid
    "created_at": pl.Int64,
    "journey": pl.String,  # "account_campaign" (D2) or "visitor" (D32); null if invalid
    "markov_channel": pl.String,  # algorithmic Markov models only (D32): account | traffic_source | landing_page
    "markov_order": pl.Int64,  # 1 or 2
    "training_days": pl.Int64,
    "self_loops": pl.Boolean,
}

#: What every strategy returns: one row per credited touch (credit > 0).
STRATEGY_OUTPUT = {
    "model_id": pl.Int64,
    "conv_id": pl.Int64,
    "position": pl.Int32,
    "click_id": CLICK_ID,
    "credit": pl.Float64,
    "user_id": pl.Int64,  # the model's user
}

#: One row per (model, conversion, credited touch): the future 202_attribution_touchpoints rows.
CREDITS = {
    "date_hour": pl.Int64,
    "model_id": pl.Int64,
    "user_id": pl.Int64,
    "conv_id": pl.Int64,
    "position": pl.Int32,
    "click_id": CLICK_ID,
    "credit": pl.Float64,  # unrounded double, as PHP computes it
    "revenue": pl.Float64,  # conversion payout x credit (D5)
    "cost": pl.Float64,  # converting click's cpc x credit (D5)
    "credit_stored": CREDIT_DTYPE,  # what DECIMAL(10,5) stores (D14)
}

#: One row per (model, user, hour) with conversions: the future 202_attribution_snapshots rows.
SNAPSHOTS = {
    "date_hour": pl.Int64,
    "model_id": pl.Int64,
    "user_id": pl.Int64,
    "attributed_clicks": pl.Int64,
    "attributed_conversions": pl.Int64,
    "revenue": pl.Float64,  # ordered double sum (spec §3.7)
    "cost": pl.Float64,
    "attributed_revenue": MONEY_DTYPE,  # what DECIMAL(12,4) stores (D14)
    "attributed_cost": MONEY_DTYPE,
}


def empty(schema: dict) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def conform(df: pl.DataFrame, schema: dict, name: str = "frame") -> pl.DataFrame:
    """``df`` with exactly ``schema``'s columns, in order and types; a named error if one is missing."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing columns {missing}")
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])


# ------------------------------------------------------------------------------------------
# Streaming container
# ------------------------------------------------------------------------------------------


@dataclass
class FrameStats:
    """What producing a frame cost; the IO manager turns it into materialisation metadata."""

    rows: int = 0
    chunks: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def add_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def count(self, name: str, value: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + int(value)


#: ``produce(hours, stats)``: the rows of exactly ``hours``; it may add to ``stats``.
Producer = Callable[[tuple[int, ...], "FrameStats"], pl.DataFrame]
#: Explicit chunks of a frame: consecutive tuples of its hours, or a function that returns them.
Chunks = Sequence[tuple[int, ...]] | Callable[[], Sequence[tuple[int, ...]]]


class HourlyFrame:
    """A frame covering whole UTC hours, produced or read one chunk of hours at a time.

    Build one with :meth:`build` (a computation), :meth:`from_frame` (rows in memory) or the IO
    manager (stored files). Nothing is computed until the chunks are iterated (by the IO manager
    when storing, or by ``read``/``collect``). The chunks are ``chunk_size`` hours at a time, or the
    explicit ``chunks`` given (a run's chunk plan, ``core/chunk_plan.py``, or a function returning
    them, called when the frame is first iterated). ``scoped`` marks a frame computed for a subset of
    users or models (a ``--user`` run): the IO manager keeps such frames private to their run so
    they never replace complete ones. ``missing`` lists hours that cannot be read (an input whose
    files are gone); reading one raises the producer's named error.
    """

    def __init__(self, hours: Sequence[int], produce: Producer, schema: dict, *, chunk_size: int = 24,
                 chunks: Chunks | None = None, scoped: bool = False, name: str = "frame",
                 missing: Sequence[int] = ()):
        self.hours = tuple(sorted(hours))
        self._produce = produce
        self.schema = schema
        self.chunk_size = max(1, int(chunk_size))
        self._chunks = chunks
        self.scoped = scoped
        self.name = name
        self.missing = tuple(sorted(missing))
        self.stats = FrameStats()

    @classmethod
    def build(cls, hours: Sequence[int], produce: Producer, schema: dict, **kw) -> "HourlyFrame":
        """The frame ``produce(chunk, stats)`` computes, chunk by chunk, when it is iterated."""
        return cls(hours, produce, schema, **kw)

    @staticmethod
    def planned(hours: Sequence[int], conversions: "HourlyFrame", models: "HourlyFrame", settings: Settings):
        """The run's chunk plan (``core/chunk_plan.py``: chunks sized by their estimated rows within
        ``settings.memory_budget_mb``) from its stored conversions and models frames."""
        return plan_run(hours, conversions, models, settings)

    @classmethod
    def from_frame(cls, df: pl.DataFrame, hours: Sequence[int], schema: dict, **kw) -> "HourlyFrame":
        """An in-memory frame (tests, small data)."""
        data = conform(df, schema)
        return cls(hours, lambda chunk, _stats: data.filter(pl.col("date_hour").is_in(list(chunk))), schema, **kw)

    def read(self, hours: Sequence[int]) -> pl.DataFrame:
        """The rows of ``hours`` (a subset of this frame's hours), conformed to the schema."""
        wanted = tuple(sorted(hours))
        unknown = set(wanted) - set(self.hours)
        if unknown:
            raise ValueError(f"{self.name}: hours {sorted(unknown)[:5]} are outside this frame")
        started = time.perf_counter()
        df = conform(self._produce(wanted, self.stats), self.schema, self.name)
        self.stats.seconds += time.perf_counter() - started
        return df

    def chunk_list(self) -> list[tuple[int, ...]]:
        """The chunks :meth:`chunks` yields: the explicit ones (a list, or a function giving it, called
        here: a plan made when the frame is first iterated), else ``chunk_size`` hours at a time."""
        if self._chunks is None:
            return chunk_hours(self.hours, self.chunk_size)
        chunks = [tuple(c) for c in (self._chunks() if callable(self._chunks) else self._chunks)]
        if tuple(h for c in chunks for h in c) != self.hours:
            raise ValueError(f"{self.name}: its chunks do not cover its {len(self.hours)} hours once, in order")
        return chunks

    def chunks(self) -> Iterator[tuple[tuple[int, ...], pl.DataFrame]]:
        """Each chunk's hours and rows, read (or computed) when the iteration reaches it."""
        return (self._counted(hours, self.read(hours)) for hours in self.chunk_list())

    def _counted(self, hours: tuple[int, ...], df: pl.DataFrame) -> tuple[tuple[int, ...], pl.DataFrame]:
        self.stats.rows += df.height
        self.stats.chunks += 1
        return hours, df

    def collect(self) -> pl.DataFrame:
        parts = [df for _, df in self.chunks()]
        return pl.concat(parts) if parts else empty(self.schema)
