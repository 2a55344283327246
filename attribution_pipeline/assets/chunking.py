"""How the compute steps of a run cut it into chunks: the chunk plan (``core/chunk_plan.py``) made
from the run's stored ``conversions`` and ``attribution_models`` frames, the same way by every step
(journeys, credits, snapshots and the write-back), so that each chunk's estimated peak stays within
``ATTRIBUTION_MEMORY_BUDGET_MB``; and the pieces an hour over the budget is computed in."""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

from attribution_pipeline.core import chunk_plan
from attribution_pipeline.core.chunk_plan import ChunkPlan
from attribution_pipeline.core.frames import FrameStats, HourlyFrame
from attribution_pipeline.settings import Settings


@dataclass(frozen=True)
class RunChunks:
    """A run's chunk plan and what it was made from."""

    plan: ChunkPlan
    counts: pl.DataFrame  # date_hour, user_id, campaign_id, conversions (counted ones, D16)
    per_user: pl.DataFrame  # user_id, models (valid ones)
    touch_cap: int
    seconds: float

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        return self.plan.chunks

    def pairs(self) -> pl.DataFrame:
        """Every (user_id, campaign_id) with a counted conversion in the run."""
        return self.counts.select("user_id", "campaign_id").unique()

    def splitter(self, chunk: Sequence[int], stats: FrameStats) -> Callable[[pl.DataFrame], list[pl.DataFrame]] | None:
        """For a chunk over the budget (one hour), a function that cuts conversions into pieces
        (by user, then by conversion range) that fit it; None for any other chunk."""
        if not self.plan.oversized(chunk):
            return None

        def split(conversions: pl.DataFrame) -> list[pl.DataFrame]:
            parts = chunk_plan.conversion_pieces(conversions, self.per_user, self.touch_cap, self.plan.rows_budget)
            stats.count("pieces", len(parts))
            return parts

        return split

    def report(self, stats: FrameStats) -> None:
        """Put the plan into what the step reports with its materialisation."""
        stats.counters.update(self.plan.metadata())
        stats.add_stage("plan", self.seconds)


def run_chunks(hours: Sequence[int], conversions: HourlyFrame, attribution_models: HourlyFrame,
               settings: Settings) -> RunChunks:
    """The plan of ``hours`` from the run's stored conversions (per hour and user) and models (per user)."""
    started = time.perf_counter()
    counts = chunk_plan.conversion_counts(conversions)
    models = attribution_models.collect()
    plan = chunk_plan.plan_for(hours, counts, models, settings)
    return RunChunks(plan=plan, counts=counts, per_user=chunk_plan.models_per_user(models),
                     touch_cap=settings.touch_cap, seconds=time.perf_counter() - started)
