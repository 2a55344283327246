"""The exports of the write-back's committed chunks, built while the next chunk is written (D35).

The write-back spends most of its time waiting on MariaDB's ``LOAD DATA``, which holds one core,
while the pipeline's process idles; the exports step that followed it was bound by building and
encoding Parquet on the pipeline's side. So once a chunk commits, its hours are exported in a
background thread, exactly as the export step would export them (``exports/runner.export_chunk``:
under the export lock, the touchpoints the run wrote from its frames, the rest from MySQL), and
their state rows are marked exported (D22). The export step then finds them exported, exports only
what is still pending, and reconciles every hour exported in the run, these included
(:func:`exported_during_writeback`).

A committed chunk's export starts when the next chunk's touchpoints start loading
(:meth:`CommittedExports.start`; as its write starts when it has none, as in an hourly run that
finds its hours unchanged), or when the write-back waits for it (the next commit, the end of the
run): the next chunk's own steps before its load (reading its frames, the invariants, finding and
deleting the stored rows, the snapshots, preparing the touchpoints) run without an export beside
them, and the export runs while MariaDB loads (dense profile, cold 72 hours: a lower peak, the
same time, bench/RESULTS.md). One chunk is exported at a time: the next commit waits for the
previous chunk's export, so memory holds at most one chunk being written and one being exported.
Only a full run that records what it wrote (``writeback.records_state``) exports this way; an
export that fails leaves its hours pending for the export step, and the write-back's outcome does
not depend on it.
"""

import dataclasses
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import dagster as dg
import polars as pl

from attribution_pipeline.assets.source_changes import hours_to_export, mark_exported
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.core.hours import HOUR, hour_key, hour_ranges
from attribution_pipeline.exports.from_run import RunWrites
from attribution_pipeline.exports.reconcile import reconcile
from attribution_pipeline.exports.runner import ExportStats, chunk_rows, export_chunk, row_chunks
from attribution_pipeline.exports.stored import touch_rows_per_hour
from attribution_pipeline.logs import log_event
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.journey_source import JourneyRule, journeys_of

#: Metadata of the write-back's observation naming hours it exported (the export step reads it).
EXPORTED_FIRST, EXPORTED_LAST, EXPORT_STATS = "exported_first_hour", "exported_last_hour", "export_stats"
#: ... and the range's hours that disagree with MySQL once exported, as [hour, reason] (None: not reconciled).
RECONCILED = "reconciled_failing"


@dataclasses.dataclass
class ExportedChunk:
    """A committed chunk's export: the hours exported (those pending, D22), its stats, or its error."""

    chunk: tuple[int, ...]
    hours: list[int]
    stats: ExportStats
    error: str | None = None
    wrong: pl.DataFrame | None = None  # ``reconcile`` of ``hours`` once exported; None: not reconciled


class CommittedExports:
    """Exports each committed chunk in one background thread (see the module docstring)."""

    def __init__(self, *, db: Database, settings: Settings, credits: HourlyFrame, snapshots: HourlyFrame,
                 journeys: HourlyFrame, window: tuple[int, int], token: str):
        self.db, self.settings = db, settings
        self.credits, self.snapshots, self.journeys = credits, snapshots, journeys
        self.window, self.token = window, token
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="committed-exports")
        self._pending: Future | None = None
        self._go = threading.Event()  # set: the pending export may start

    def submit(self, chunk: tuple[int, ...], held: pl.DataFrame, skipped: pl.DataFrame | None) -> list[ExportedChunk]:
        """Export ``chunk`` (just committed; ``held``: its held groups, ``skipped``: its (user, hour)
        pairs not recomputed) once the previous chunk's export is done, which is returned; the
        export starts at :meth:`start` (or at the next :meth:`wait`)."""
        done = self.wait()
        self._go.clear()
        self._pending = self._pool.submit(self._when_started, tuple(chunk), held, skipped)
        return done

    def start(self) -> None:
        """Let the pending export start (the write-back calls this as the next chunk's touchpoints
        start loading)."""
        self._go.set()

    def wait(self) -> list[ExportedChunk]:
        """The export in progress, once done (an empty list when none was)."""
        self._go.set()
        pending, self._pending = self._pending, None
        return [pending.result()] if pending is not None else []

    def _when_started(self, chunk: tuple[int, ...], held: pl.DataFrame, skipped: pl.DataFrame | None) -> ExportedChunk:
        self._go.wait()
        return self._export(chunk, held, skipped)

    def close(self) -> list[ExportedChunk]:
        try:
            return self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def _export(self, chunk: tuple[int, ...], held: pl.DataFrame, skipped: pl.DataFrame | None) -> ExportedChunk:
        done: list[int] = []
        total = ExportStats()
        try:
            hours, pending = hours_to_export(self.db, list(chunk), records_state=True)
            run = RunWrites(credits=self.credits, snapshots=self.snapshots, hours=frozenset(chunk), window=self.window,
                            held=held, token=self.token)
            for part in self._parts(hours):
                total.add(self.db.retry.run(lambda part=part: self._export_part(part, run, skipped),
                                            what=f"export {hour_key(part[0])}..{hour_key(part[-1])}"))
                done += part
            mark_exported(self.db, pending, done)
            wrong = self.db.retry.run(lambda: reconcile(self.db.engine(), self.settings.export_path, done),
                                      what="reconcile exported hours")
            return ExportedChunk(chunk, done, total, wrong=wrong)
        except Exception as exc:  # noqa: BLE001 - the export step exports (and reconciles) what is left
            return ExportedChunk(chunk, done, total, error=f"{type(exc).__name__}: {str(exc)[:300]}")

    def _parts(self, hours: list[int]) -> list[tuple[int, ...]]:
        rows = touch_rows_per_hour(self.db.engine(), hours)
        return row_chunks(hours, rows, max_rows=chunk_rows(self.settings.memory_budget_mb),
                          max_hours=self.settings.chunk_hours)

    def _export_part(self, hours: tuple[int, ...], run: RunWrites, skipped: pl.DataFrame | None) -> ExportStats:
        rule = JourneyRule.from_settings(self.settings)
        return export_chunk(self.db.engine(), hours, root=self.settings.export_path, journeys=self.journeys,
                            users=None, run=run, skipped=skipped,
                            recompute=lambda hs, users: journeys_of(self.db, rule, list(hs), users))


def record_exports(context: dg.AssetExecutionContext, asset_key: str, done: list[ExportedChunk], fields: dict) -> None:
    """Log each exported chunk, and note the hours it exported in the run's event log, where the
    export step (and a re-execution's) finds them; a failed export is a warning (its hours stay
    pending for the export step)."""
    for item in done:
        first, last = hour_key(item.chunk[0]), hour_key(item.chunk[-1])
        if item.error is not None:
            log_event(context.log, "committed_export_failed", level="warning", stage="writeback", first_hour=first,
                      last_hour=last, hours_exported=len(item.hours), error=item.error, **fields)
        else:
            log_event(context.log, "committed_exported", stage="writeback", first_hour=first, last_hour=last,
                      hours_exported=len(item.hours), files=item.stats.files, **fields)
        for i, (a, b) in enumerate(hour_ranges(item.hours)):  # the chunk's stats on its first range only
            stats = dataclasses.asdict(item.stats) if i == 0 else None
            wrong = None if item.wrong is None else [
                [h, r] for h, r in item.wrong.filter(pl.col("date_hour").is_between(a, b)).iter_rows()]
            context.log_event(dg.AssetObservation(asset_key=asset_key, description="hours exported", metadata={
                EXPORTED_FIRST: a, EXPORTED_LAST: b, EXPORT_STATS: dg.MetadataValue.json(stats),
                RECONCILED: dg.MetadataValue.json(wrong)}))


@dataclasses.dataclass
class EarlyExports:
    """What the write-back of a run exported (:func:`record_exports`): its hours, those reconciled
    and the ones of them that disagree with MySQL (``date_hour, reason``), its stats, and the hours
    the write-backs of the runs it re-executes exported (reconciled again by the export step)."""

    hours: set[int] = dataclasses.field(default_factory=set)
    reconciled: set[int] = dataclasses.field(default_factory=set)
    wrong: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    stats: ExportStats = dataclasses.field(default_factory=ExportStats)
    parents: set[int] = dataclasses.field(default_factory=set)


def observed_hours(instance: dg.DagsterInstance, run_id: str, asset_key: str, first: str, last: str):
    """``(hours, metadata)`` of each observation of ``asset_key`` in the run's event log that names
    a range of hours under the metadata keys ``first`` and ``last``."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION):
        observation = entry.dagster_event.event_specific_data.asset_observation
        metadata = observation.metadata
        if observation.asset_key == dg.AssetKey(asset_key) and first in metadata:
            lo, hi = int(metadata[first].value), int(metadata[last].value)
            yield set(range(lo, hi + HOUR, HOUR)), metadata


def exported_during_writeback(instance: dg.DagsterInstance, run_ids: list[str], asset_key: str) -> EarlyExports:
    """:class:`EarlyExports` of the first of ``run_ids`` (the current run), the others its parents."""
    found = EarlyExports()
    for i, run_id in enumerate(run_ids):
        for hours, metadata in observed_hours(instance, run_id, asset_key, EXPORTED_FIRST, EXPORTED_LAST):
            if i:
                found.parents |= hours
                continue
            found.hours |= hours
            stats, wrong = metadata[EXPORT_STATS].value, metadata[RECONCILED].value
            if stats:
                found.stats.add(ExportStats(**stats))
            if wrong is not None:
                found.reconciled |= hours
                found.wrong += [(int(h), str(r)) for h, r in wrong]
    return found
