"""One run of the write-back: chunk by chunk commit or roll back, then outcome, audit, report, checks.

:class:`WritebackRun` owns what the ``attribution_writeback`` asset used to keep in a dozen local
variables: the groups held back by an invariant (D19), the chunks committed or rolled back (D9),
the rows written by someone else (D20), the dry run's comparison, the run's totals and timings. The
asset feeds it each chunk's frames, then asks it for the audit rows (D18), the report (the JSON the
CLI prints), the outcome (D19) and the check results.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from attribution_pipeline.assets.resources import RunScope, run_retries
from attribution_pipeline.assets.writeback_scopes import ScopePlanner
from attribution_pipeline.core import invariants
from attribution_pipeline.core.hours import HOUR, hour_key, hour_ranges
from attribution_pipeline.core.invariants import GROUP
from attribution_pipeline.core.run_summary import FOREIGN, audit_rows, run_summary
from attribution_pipeline.logs import log_event, timed_into
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.hour_rewrite import ChunkOutcome, ChunkWrite, ScopedGroupsHeld, write_chunk
from attribution_pipeline.storage.retries import is_transient
from attribution_pipeline.storage.shadow import compare_with_stored

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN
_COUNTS = ("snapshots_written", "touchpoints_written", "snapshots_deleted", "touchpoints_deleted", "touchpoints_kept",
           "journey_touches_written", "scoped_snapshots_written", "scoped_touchpoints_written",
           "scoped_snapshots_deleted", "scoped_touchpoints_deleted")
#: What an incremental run recomputed and left alone (D22), summed over its committed chunks.
_INCREMENTAL = ("user_hours_recomputed", "user_hours_skipped", "groups_written", "groups_unchanged")


@dataclass
class ChunkFrames:
    """The stored frames of one chunk of hours, as the write-back reads them."""

    models: pl.DataFrame
    conversions: pl.DataFrame
    journeys: pl.DataFrame
    credits: pl.DataFrame
    snapshots: pl.DataFrame
    changes: pl.DataFrame | None = None  # source_changes of the chunk (D22); None: every pair recomputed
    visitor_journeys: pl.DataFrame | None = None  # journeys of the models on visitor journeys (D32)

    def touched_clicks(self) -> pl.DataFrame:
        """Both journey sets' touches: where each credited click's scope values come from."""
        if self.visitor_journeys is None or self.visitor_journeys.height == 0:
            return self.journeys
        return pl.concat([self.journeys, self.visitor_journeys.select(self.journeys.columns)])


class WritebackRun:
    """The write-back of one run over ``hours`` (see the module docstring).

    ``resumed``: hours a parent of this run (a re-execution or retry of a failed run) committed
    already; chunks made only of them are not written again. ``on_commit(chunk, plan)`` is called
    after each chunk commits (the asset notes it for a later resume, queues its exports, D35);
    ``on_load()`` as a chunk's touchpoints start loading (the queued exports start then).
    """

    def __init__(self, *, db: Database, settings: Settings, scope: RunScope, hours: list[int], run_id: str,
                 logger, fields: dict, resumed: frozenset[int] = frozenset(), on_commit=None,
                 record_state: bool = False, on_load=None):
        self.db, self.settings, self.scope = db, settings, scope
        self.hours, self.run_id, self.logger, self.fields = hours, run_id, logger, fields
        self.resumed, self.on_commit, self.on_load = resumed, on_commit, on_load
        self.record_state = record_state and not scope.dry_run  # note what was written from what (D22)
        self._change_counts: dict[tuple[int, ...], dict[str, int]] = {}
        self.now = int(time.time())
        self.lookback_start, self.lookback_end = hours[0], hours[-1] + HOUR - 1
        self.held: list[pl.DataFrame] = []
        self.foreign: list[pl.DataFrame] = []
        self.rolled_back: list[dict] = []  # chunks tried and rolled back (their groups are held)
        self.not_attempted: list[dict] = []  # chunks never tried: the run stopped before them
        self.committed: list[pl.DataFrame] = []
        self.committed_chunks: list[tuple[int, ...]] = []
        self.resumed_chunks: list[tuple[int, ...]] = []
        self.compared: list[pl.DataFrame] = []
        self.skipped: dict[int, dict] = {}
        self.totals = {"conversions": 0, **{k: 0 for k in _COUNTS}, "chunks_committed": 0, "chunks_resumed": 0,
                       **{k: 0 for k in _INCREMENTAL}}
        self.by_model: dict[int, dict[str, int]] = {}
        self.stage_seconds: dict[str, float] = {}
        self.started = time.perf_counter()
        self.stop_reason: str | None = None
        self.scopes = ScopePlanner(db, settings, logger)  # the scoped rows (D31)

    def stage(self, name: str):
        """Time a stage of the run into ``stage_seconds``."""
        return timed_into(self.stage_seconds, name)

    # -- chunks --------------------------------------------------------------------------------

    def run_chunk(self, chunk: tuple[int, ...], read) -> None:
        """Write one chunk (``read(chunk)`` gives its frames), unless a parent run committed it or
        the run stopped; a chunk whose frames cannot be read is not committed, named."""
        if self.stop_reason is not None:
            self.not_attempted.append(_span(chunk, f"not attempted: {self.stop_reason}"))
            return
        if not self.scope.dry_run and self.resumed and set(chunk) <= self.resumed:
            self.resumed_chunks.append(chunk)
            self.totals["chunks_resumed"] += 1
            log_event(self.logger, "chunk_resumed", stage="writeback", first_hour=hour_key(chunk[0]),
                      last_hour=hour_key(chunk[-1]), **self.fields)
            return
        try:
            with self.stage("read_frames"):
                frames = read(chunk)
        except Exception as exc:  # noqa: BLE001 - a chunk that cannot be read is named, the others go on
            self._not_committed(chunk, exc, stop=is_transient(exc))
            return
        self.process(chunk, frames)

    def plan(self, chunk: tuple[int, ...], frames: ChunkFrames, *, scoped_later: bool = False) -> ChunkWrite:
        """What to write for ``chunk``: the owned models' rows minus the groups an invariant holds,
        and the chunk's audit rows (D18), committed in its transaction. ``scoped_later``: the
        scoped rows (D31) are computed in the background while the global rows are written."""
        models = frames.models
        for row in models.filter(~pl.col("is_valid")).unique(subset="model_id").iter_rows(named=True):
            self.skipped[row["model_id"]] = {"model_id": row["model_id"], "user_id": row["user_id"],
                                             "slug": row["model_slug"], "reason": row["error"]}
        self.totals["conversions"] += int((frames.conversions["click_rows"] > 0).sum())
        with self.stage("invariants"):
            held = invariants.held_groups(conversions=frames.conversions, journeys=frames.journeys,
                                          credits=frames.credits, snapshots=frames.snapshots, models=models,
                                          touch_cap=self.settings.touch_cap)
        scoped_args = (frames.credits, frames.touched_clicks(), frames.snapshots, held)
        pending = self.scopes.plan_later(*scoped_args) if scoped_later else None
        scoped = None if scoped_later else self.scopes.plan(*scoped_args)
        held = held if scoped is None else pl.concat([held, scoped.held])
        keys = held.select(GROUP).unique()
        changes = frames.changes
        if changes is not None:
            skipped = changes.filter(~pl.col("recompute"))
            self._change_counts[chunk] = {
                "user_hours_recomputed": changes.height - skipped.height, "user_hours_skipped": skipped.height,
                "groups_unchanged": int(skipped.get_column("stored_groups").fill_null(0).sum())}
        persist = self.settings.persist_journeys and self.settings.journey_source == "clicks"
        snapshots = invariants.without_groups(frames.snapshots, keys)
        summary = run_summary([snapshots.with_columns(chunk=pl.lit(chunk[0]))])
        return ChunkWrite(
            hours=chunk,
            owned=models.filter(pl.col("is_valid")).select("model_id", "user_id").unique(),
            snapshots=snapshots,
            credits=invariants.without_groups(frames.credits, keys),
            held=held,
            lookback_start=self.lookback_start,
            lookback_end=self.lookback_end,
            journeys=_journeys_to_persist(frames.journeys, held) if persist else None,
            audits=audit_rows(summary, lookback_start=self.lookback_start, lookback_end=self.lookback_end,
                              now=self.now) if summary.height else None,
            unchanged=None if changes is None else changes.filter(~pl.col("recompute")).select("user_id", "date_hour"),
            state=(changes.filter(pl.col("recompute")).select("user_id", "date_hour", "source_fp")
                   if changes is not None and self.record_state else None),
            token=self.run_id,
            scoped=None if scoped is None else scoped.rows,
            scoped_credits=None if scoped is None else scoped.credits,
            pending_scoped=pending,
            on_load=self.on_load,
        )

    def process(self, chunk: tuple[int, ...], frames: ChunkFrames) -> None:
        """Compare (dry run) or write ``chunk``: commit, or roll back and hold all its groups."""
        try:
            plan = self.plan(chunk, frames, scoped_later=not self.scope.dry_run)
        except Exception as exc:  # noqa: BLE001 - named, and the other chunks go on
            self._not_committed(chunk, exc, stop=False)
            return
        if self.scope.dry_run:
            def compare():
                with self.db.engine().connect() as conn:
                    return compare_with_stored(conn, plan)

            self.compared.append(self.db.retry.run(compare, what="dry-run comparison", logger=self.logger))
            self.held.append(plan.held)
            return
        try:
            try:
                outcome = self._write(chunk, plan)
            except ScopedGroupsHeld:  # rows that do not add up: the chunk again, those groups held
                plan = self.plan(chunk, frames)
                outcome = self._write(chunk, plan)
        except Exception as exc:  # noqa: BLE001 - the chunk rolled back; named below
            self._rolled_back(chunk, frames.snapshots, plan.owned, exc)
            return
        self._committed(chunk, plan, outcome)

    def _write(self, chunk: tuple[int, ...], plan: ChunkWrite) -> ChunkOutcome:
        return self.db.retry.run(
            lambda: write_chunk(self.db.engine(), plan, now=self.now, batch_rows=self.settings.write_batch_rows,
                                lock_timeout=self.settings.lock_timeout_seconds),
            what=f"write {hour_key(chunk[0])}..{hour_key(chunk[-1])}", logger=self.logger)

    def _not_committed(self, chunk: tuple[int, ...], exc: Exception, *, stop: bool) -> None:
        """A chunk that could not be planned or read: not written; an outage the retries could not
        outlast stops the run (the later chunks are named not attempted)."""
        reason = _reason("not committed", exc)
        self.rolled_back.append(_span(chunk, reason))
        log_event(self.logger, "chunk_not_committed", level="error", stage="writeback", first_hour=hour_key(chunk[0]),
                  last_hour=hour_key(chunk[-1]), error=type(exc).__name__, **self.fields)
        if stop:
            self.stop_reason = reason

    def _rolled_back(self, chunk: tuple[int, ...], snapshots: pl.DataFrame, owned: pl.DataFrame,
                     exc: Exception) -> None:
        """The chunk kept its old rows: every owned group of it is held, with the error as reason."""
        reason = _reason("chunk rolled back", exc)
        self.rolled_back.append(_span(chunk, reason))
        log_event(self.logger, "chunk_rolled_back", level="error", stage="writeback", first_hour=hour_key(chunk[0]),
                  last_hour=hour_key(chunk[-1]), error=type(exc).__name__, **self.fields)
        every_group = snapshots.select(GROUP).join(owned, on=["model_id", "user_id"], how="semi")
        self.held.append(every_group.with_columns(reason=pl.lit(reason)).cast(invariants.HELD))
        if is_transient(exc):
            self.stop_reason = reason

    def _committed(self, chunk: tuple[int, ...], plan: ChunkWrite, outcome: ChunkOutcome) -> None:
        self.held.append(plan.held)
        if outcome.foreign is not None:
            self.foreign.append(outcome.foreign)
        self.committed.append(plan.snapshots.with_columns(chunk=pl.lit(chunk[0])))
        self.committed_chunks.append(chunk)
        self.totals["chunks_committed"] += 1
        for key in _COUNTS:
            self.totals[key] += getattr(outcome, key)
        self._count_changes(plan, outcome)
        for model_id, counts in outcome.by_model.items():
            acc = self.by_model.setdefault(model_id, {"snapshots": 0, "touchpoints": 0})
            acc["snapshots"] += counts["snapshots"]
            acc["touchpoints"] += counts["touchpoints"]
        for stage, seconds in outcome.stage_seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        log_event(self.logger, "chunk_committed", stage="writeback", first_hour=hour_key(chunk[0]),
                  last_hour=hour_key(chunk[-1]), snapshots=outcome.snapshots_written,
                  touchpoints=outcome.touchpoints_written, audit_rows=outcome.audit_rows,
                  latency_ms=round(outcome.seconds * 1000, 1),
                  stage_ms={k: round(v * 1000, 1) for k, v in outcome.stage_seconds.items()}, **self.fields)
        if self.on_commit is not None:
            self.on_commit(chunk, plan)

    def _count_changes(self, plan: ChunkWrite, outcome: ChunkOutcome) -> None:
        self.totals["groups_written"] += outcome.snapshots_written
        for key, value in self._change_counts.pop(plan.hours, {}).items():
            self.totals[key] += value

    # -- the end of the run ----------------------------------------------------------------------

    def finish(self) -> None:
        """After the last chunk: one ``attribution_job`` log event per (user, model) committed (the
        audit rows and the cron stamp were committed with each chunk)."""
        if not self.committed or self.scope.dry_run:
            return
        for row in run_summary(self.committed).iter_rows(named=True):
            log_event(self.logger, "attribution_job", stage="writeback", model_id=row["model_id"],
                      user_id=row["user_id"], batches=row["batches"], hours_processed=row["hours_processed"],
                      clicks=row["clicks"], conversions=row["conversions"], revenue=round(row["revenue"], 4),
                      cost=round(row["cost"], 4), window=f"{self.lookback_start}-{self.lookback_end}", **self.fields)

    @property
    def failed_chunks(self) -> list[dict]:
        """Chunks of the run that were not committed (rolled back, unreadable, not attempted)."""
        return self.rolled_back + self.not_attempted

    def committed_ranges(self) -> list[list[str]]:
        """Hours committed by this run or, for a resumed run, by its parents: [first, last] ranges."""
        hours = sorted({h for c in self.committed_chunks + self.resumed_chunks for h in c})
        return _ranges(hours)

    def held_frame(self) -> pl.DataFrame:
        return pl.concat(self.held) if self.held else pl.DataFrame(schema=invariants.HELD)

    def foreign_frame(self) -> pl.DataFrame:
        return pl.concat(self.foreign) if self.foreign else pl.DataFrame(schema=FOREIGN)

    @property
    def outcome(self) -> int:
        """D19: 0 everything written and valid; 2 something committed, but models were skipped,
        groups held or chunks not committed; 1 nothing committed although something was to be
        written (a dry run is never 1)."""
        held = self.held_frame().height
        anything = bool(self.committed_chunks or self.resumed_chunks)
        if not self.scope.dry_run and not anything and (self.failed_chunks or held):
            return 1
        return 0 if (held == 0 and not self.skipped and not self.failed_chunks) else 2

    def report(self) -> dict:
        """The run's report (the CLI prints it; a dry run's includes the comparison)."""
        held, foreign = self.held_frame(), self.foreign_frame()
        report = {
            "run_id": self.run_id,
            "first_hour": hour_key(self.hours[0]),
            "last_hour": hour_key(self.hours[-1]),
            "hours": len(self.hours),
            "dry_run": self.scope.dry_run,
            "outcome": self.outcome,
            **self.totals,
            "committed_hours": [] if self.scope.dry_run else self.committed_ranges(),
            "uncommitted_hours": self.failed_chunks,
            "db_retries": run_retries(self.db, self.run_id),
            "rows_by_model": {str(k): v for k, v in sorted(self.by_model.items())},
            "skipped_models": list(self.skipped.values()),
            "held_groups": held.height,
            "held": [{**r, "hour": hour_key(r["date_hour"])} for r in held.head(500).iter_rows(named=True)],
            "rolled_back_chunks": self.rolled_back,
            "foreign_rows": foreign.height,
            "seconds": round(time.perf_counter() - self.started, 3),
            "stage_seconds": {k: round(v, 3) for k, v in sorted(self.stage_seconds.items())},
        }
        if self.scope.dry_run:
            comparison = (pl.concat(self.compared) if self.compared
                          else pl.DataFrame(schema={**{g: pl.Int64 for g in GROUP}, "status": pl.String}))
            report["comparison"] = [{**r, "hour": hour_key(r["date_hour"])} for r in comparison.iter_rows(named=True)]
            report["comparison_counts"] = dict(comparison.group_by("status").len().iter_rows())
        return report

    def write_report(self, path: Path) -> dict:
        report = self.report()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(report, indent=1, default=str))
        tmp.replace(path)
        log_event(self.logger, "writeback_done", stage="writeback", outcome=report["outcome"],
                  held_groups=report["held_groups"], rolled_back_chunks=len(self.rolled_back),
                  skipped_models=len(self.skipped), db_retries=report["db_retries"], **self.totals, **self.fields)
        return report

    def check_results(self, report: dict) -> list[dg.AssetCheckResult]:
        """``writeback_reconciliation``, ``foreign_writes``, ``held_groups`` and ``scoped_totals`` of this run."""
        foreign = self.foreign_frame()
        foreign_list = [{**r, "hour": hour_key(r["date_hour"])} for r in foreign.head(100).iter_rows(named=True)]
        held_list = report["held"]
        return [
            dg.AssetCheckResult(
                check_name="writeback_reconciliation", passed=not self.failed_chunks, severity=ERROR,
                metadata={"chunks_committed": self.totals["chunks_committed"],
                          "chunks_resumed": self.totals["chunks_resumed"],
                          "chunks_rolled_back": len(self.failed_chunks),
                          "rolled_back": dg.MetadataValue.json(self.failed_chunks[:50])},
            ),
            dg.AssetCheckResult(
                check_name="foreign_writes", passed=foreign.height == 0, severity=WARN,
                metadata={"foreign_rows": foreign.height, "sample": dg.MetadataValue.json(foreign_list[:20]),
                          "failing_hours": dg.MetadataValue.json(sorted({f["hour"] for f in foreign_list})[:100])},
                description=f"{foreign.height} stored row(s) of this run's keys were written by someone else"
                if foreign.height else "no foreign writes",
            ),
            dg.AssetCheckResult(
                check_name="held_groups", passed=report["held_groups"] == 0, severity=ERROR,
                metadata={"held_groups": report["held_groups"], "held": dg.MetadataValue.json(held_list[:100]),
                          "failing_hours": dg.MetadataValue.json(sorted({h["hour"] for h in held_list})[:100])},
            ),
            self.scopes.check_result(),
        ]

    def materialize_result(self, report: dict, path: Path) -> dg.MaterializeResult:
        return dg.MaterializeResult(
            metadata={
                **self.totals,
                "hours": len(self.hours),
                "outcome": report["outcome"],
                "dry_run": self.scope.dry_run,
                "held_groups": report["held_groups"],
                "rolled_back_chunks": len(self.rolled_back),
                "skipped_models": len(self.skipped),
                "foreign_rows": report["foreign_rows"],
                "db_retries": report["db_retries"],
                "rows_by_model": dg.MetadataValue.json(report["rows_by_model"]),
                "report": str(path),
                "seconds": report["seconds"],
                **{f"seconds_{k}": round(v, 3) for k, v in sorted(self.stage_seconds.items())},
            },
            check_results=self.check_results(report),
        )


def _journeys_to_persist(journeys: pl.DataFrame, held: pl.DataFrame) -> pl.DataFrame:
    """Multi-touch journeys of the chunk, minus those of (user, hour) groups held back."""
    return journeys.filter(pl.col("multi_touch")).join(
        held.select("user_id", "date_hour").unique(), on=["user_id", "date_hour"], how="anti"
    )


def _span(chunk: tuple[int, ...], reason: str) -> dict:
    return {"first_hour": hour_key(chunk[0]), "last_hour": hour_key(chunk[-1]), "reason": reason}


def _reason(what: str, exc: Exception) -> str:
    first_line = (str(exc).splitlines() or [""])[0][:300]
    return f"{what}: {type(exc).__name__}: {first_line}"


def _ranges(hours: list[int]) -> list[list[str]]:
    """Consecutive hours as [first, last] hour-key ranges."""
    return [[hour_key(a), hour_key(b)] for a, b in hour_ranges(hours)]
