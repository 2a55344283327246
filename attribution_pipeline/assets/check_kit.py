"""The machinery every data check shares: findings, per-hour tallies, evaluations, the schema check.

A check is a finder (``finder(chunk, df, tally) -> findings``: the failing rows of one chunk of its
asset's stored frame, as ``date_hour``, ids and a reason) run over the frame chunk by chunk by
:func:`run_frame_check`; :func:`results` turns the tally into evaluations. The checks themselves
live beside their assets (``assets/inputs.py``, ``journeys.py``, ``credits.py``, ...); what each
one means when red is in ``docs/operations.md``.

Partitions. Every data check is an hourly-partitioned check (``partitions_def`` = the assets'
hourly partitions) that receives the stored frame of exactly the run's hours through the
``HourlyParquetIOManager`` and reads it one chunk of hours at a time (memory is bounded by a chunk).
The checks of one asset run one after another and share the chunks they read (:class:`FrameChunks`,
up to :data:`CHECK_CACHE_MB`): a stored frame that fits is read once per run, not once per check.
Dagster runs such a check **once per run** over the whole range, and an ``AssetCheckResult`` only
carries a partition when the run targets a single partition key (``dagster/partition``); in a range
run (schedule, backfill, CLI, even over one hour) it has no partition. So each check records:

* one **run-level** evaluation (the ``AssetCheckResult``): passed, counts, ``failing_hours``, sample;
* one **per-hour** evaluation (``AssetCheckEvaluation`` with the hour's partition key) for every
  hour of runs of at most :data:`HOURLY_RESULTS_MAX_HOURS` hours (the schedule's 24), and for the
  failing hours only (at most :data:`FAILING_HOUR_RESULTS_MAX`) of longer runs. Each costs a write
  to the Dagster instance (tens of ms on the SQLite instance), which is why a month's backfill does
  not record 720 green hours per check; its run-level evaluation is the verdict for every hour.

The partition view of a check therefore shows a bad hour red, with its own reason and sample.

Checks never raise: an error while evaluating (an unreadable frame, a failed query) is reported as
a failed evaluation naming the error, so a check can never turn a committed run into a failed one.
Check steps carry ``dagster/priority`` so they run before the write-back step, which removes the
private frames of a scoped (``--user``/``--model``/``--dry-run``) run when it ends.
"""

import threading
import time
from collections.abc import Callable, Iterator

import dagster as dg
import polars as pl

from attribution_pipeline.assets.hourly import Hourly
from attribution_pipeline.assets.source_changes import recomputed_hours
from attribution_pipeline.core import contracts, frames
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.core.hours import HOUR, hour_key
from attribution_pipeline.dagster_compat import AssetCheckEvaluationTargetMaterializationData
from attribution_pipeline.logs import log_event
from attribution_pipeline.settings import KEY_FORMAT
from attribution_pipeline.storage.frame_io import chunked

SAMPLE_SIZE = 20  # failing rows shown per evaluation (ids only)
HOURLY_RESULTS_MAX_HOURS = 24  # runs up to this long record a result for every hour
FAILING_HOUR_RESULTS_MAX = 100  # longer runs record at most this many failing hours per check
FAILING_HOURS_LISTED = 500  # hours named in a run-level evaluation's metadata

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN

#: The ids a check's findings name, per frame.
CONV_IDS = {"conv_id": pl.Int64, "click_id": frames.CLICK_ID}
TOUCH_IDS = {"conv_id": pl.Int64, "position": pl.Int32, "click_id": frames.CLICK_ID}
MODEL_IDS = {"model_id": pl.Int64, "user_id": pl.Int64}
CREDIT_IDS = {"model_id": pl.Int64, "conv_id": pl.Int64, "position": pl.Int32, "click_id": frames.CLICK_ID}
SNAPSHOT_IDS = {"model_id": pl.Int64, "user_id": pl.Int64}

#: ``finder(chunk, df, tally)``: the failing rows of one chunk (``date_hour``, ids, ``reason``).
Finder = Callable[[tuple[int, ...], pl.DataFrame, "Tally"], pl.DataFrame]

_SCHEMA_HELP = ("Red: the stored frame breaks its contract; the sample names the rows (ids) and the rule. "
                "A pipeline bug or a damaged frame file: fix it, then re-materialise the failing hours.")


def _findings_schema(ids: dict) -> dict:
    return {"date_hour": pl.Int64, **ids, "reason": pl.String}


def _in_chunk(findings: pl.DataFrame, chunk: tuple[int, ...]) -> pl.DataFrame:
    """Every finding in one of the chunk's hours: a date_hour that is not a whole hour goes to the
    hour it falls in, anything else outside the chunk (only a broken frame can have it: the IO
    manager stores each row in its date_hour's file) to the chunk's first hour."""
    floored = pl.col("date_hour") - pl.col("date_hour") % HOUR
    return findings.with_columns(
        date_hour=pl.when(pl.col("date_hour").is_in(list(chunk))).then(pl.col("date_hour"))
        .when(floored.is_in(list(chunk))).then(floored)
        .otherwise(chunk[0])
    )


def schema_findings(model, df: pl.DataFrame, chunk: tuple[int, ...], ids: dict,
                    source: pl.DataFrame | None = None) -> pl.DataFrame:
    """The failure cases of ``df`` under the pandera ``model`` as findings.

    A row failure is reported with the ids of its row in ``source`` (``df`` itself by default;
    the journeys frame when ``df`` is its click slice); a frame failure (missing, extra or
    misplaced column, wrong dtype) fails every hour of the chunk.
    """
    out_schema = _findings_schema(ids)
    cases = contracts.failure_cases(model, df)
    if cases.height == 0:
        return pl.DataFrame(schema=out_schema)
    source = df if source is None else source
    present = [c for c in ("date_hour", *ids) if c in source.columns]
    rows = source.select(present).with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))
    row_level = cases.filter(pl.col("index").is_not_null()).join(rows, on="index", how="left")
    frame_level = cases.filter(pl.col("index").is_null()).join(
        pl.DataFrame({"date_hour": list(chunk)}, schema={"date_hour": pl.Int64}), how="cross"
    )
    parts = [
        part.select([pl.col(c).cast(t) if c in part.columns else pl.lit(None, dtype=t).alias(c)
                     for c, t in out_schema.items()])
        for part in (row_level, frame_level)
    ]
    return _in_chunk(pl.concat(parts), chunk)


class Tally:
    """Per-hour failure counts and samples of one check over a run, bounded in memory."""

    def __init__(self, hours: tuple[int, ...], ids: dict):
        self.hours = tuple(hours)
        self.schema = _findings_schema(ids)
        self.rows_checked = 0
        self.counters: dict[str, int] = {}
        self.error: str | None = None
        self._per_hour: list[pl.DataFrame] = []
        self._samples: list[pl.DataFrame] = []

    def add(self, rows: int, findings: pl.DataFrame) -> None:
        self.rows_checked += rows
        if findings.height == 0:
            return
        findings = findings.select([pl.col(c).cast(t) for c, t in self.schema.items()])
        self._per_hour.append(
            findings.group_by("date_hour").agg(
                failures=pl.len(), reasons=pl.col("reason").drop_nulls().unique().sort().head(5)
            )
        )
        self._samples.append(findings.sort("date_hour").group_by("date_hour", maintain_order=True).head(SAMPLE_SIZE))

    def count(self, name: str, value: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + int(value)

    def per_hour(self) -> pl.DataFrame:
        if not self._per_hour:
            return pl.DataFrame(schema={"date_hour": pl.Int64, "failures": pl.UInt32, "reasons": pl.List(pl.String)})
        return (
            pl.concat(self._per_hour)
            .group_by("date_hour")
            .agg(pl.col("failures").sum(), _explode("reasons").unique().sort().head(5))
            .sort("date_hour")
        )

    def samples(self) -> pl.DataFrame:
        return pl.concat(self._samples) if self._samples else pl.DataFrame(schema=self.schema)


def _explode(column: str) -> pl.Expr:
    """The strings of a list column, flattened (Polars 2: ``Expr.flatten`` is gone)."""
    return pl.col(column).list.explode(keep_nulls=False, empty_as_null=False)


def _sample_json(sample: pl.DataFrame) -> list[dict]:
    """Failing rows as JSON: their hour key, ids and reason (at most SAMPLE_SIZE rows)."""
    return (
        sample.head(SAMPLE_SIZE)
        .with_columns(hour=pl.from_epoch("date_hour", time_unit="s").dt.strftime(KEY_FORMAT))
        .drop("date_hour")
        .to_dicts()
    )


def _targets(instance, asset_key: dg.AssetKey, keys: list[str]) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest materialisation of each partition key: two queries, whatever the number of keys."""
    if not keys:
        return {}
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(keys)
    )
    found: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    storage_ids = list(ids.values())
    for part in chunked(storage_ids, 1000):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(part)), limit=len(part)
        ).records
        for record in records:
            found[record.partition_key] = AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
            )
    return found


def _hour_keys(hours) -> list[str]:
    return [hour_key(int(h)) for h in hours]


def results(context: dg.AssetCheckExecutionContext, *, asset_key: dg.AssetKey, check_name: str,
            severity: dg.AssetCheckSeverity, tally: Tally, noun: str, started: float) -> list:
    """Per-hour evaluations (range runs, see the module docstring), then the run-level result.

    Never raises: if reporting itself fails, the run-level result says so (and fails)."""
    try:
        return list(_results(context, asset_key=asset_key, check_name=check_name, severity=severity,
                             tally=tally, noun=noun, started=started))
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        log_event(context.log, "check_error", level="error", stage="checks", run_id=context.run.run_id,
                  asset=asset_key.to_user_string(), check=check_name, error=error)
        return [dg.AssetCheckResult(
            asset_key=asset_key, check_name=check_name, passed=False, severity=severity,
            description=f"the check could not report: {error}",
            metadata={"error": error, "failing_hours": dg.MetadataValue.json(_hour_keys(tally.hours)[:FAILING_HOURS_LISTED])},
        )]


def _results(context: dg.AssetCheckExecutionContext, *, asset_key: dg.AssetKey, check_name: str,
             severity: dg.AssetCheckSeverity, tally: Tally, noun: str, started: float) -> Iterator:
    per_hour = tally.per_hour()
    failing = per_hour.get_column("date_hour").to_list()
    total = int(per_hour.get_column("failures").sum()) if per_hour.height else 0
    samples = tally.samples()
    passed = tally.error is None and not failing
    op_context = context.op_execution_context
    hours = tally.hours

    if not op_context.has_partition_key and tally.error is None:
        emit = list(hours) if len(hours) <= HOURLY_RESULTS_MAX_HOURS else failing[:FAILING_HOUR_RESULTS_MAX]
        recomputed = recomputed_hours(context.instance, context.run.run_id)
        if recomputed is not None:  # an hour the run left alone keeps the results of its last write (D22)
            emit = [h for h in emit if h in recomputed]
        targets = _targets(context.instance, asset_key, _hour_keys(emit))
        by_hour = {row[0]: row for row in per_hour.iter_rows()}
        for hour in emit:
            key = hour_key(hour)
            row = by_hour.get(hour)
            count = int(row[1]) if row else 0
            reasons = list(row[2]) if row else []
            yield dg.AssetCheckEvaluation(
                asset_key=asset_key,
                check_name=check_name,
                passed=count == 0,
                severity=severity,
                partition=key,
                target_materialization_data=targets.get(key),
                description=f"{count} {noun} in {key}: {'; '.join(reasons)}" if count else f"no {noun} in {key}",
                metadata={
                    "failures": count,
                    "hour": key,
                    "reasons": dg.MetadataValue.json(reasons),
                    "sample": dg.MetadataValue.json(_sample_json(samples.filter(pl.col("date_hour") == hour))),
                },
            )

    failing_keys = _hour_keys(failing)
    reasons = per_hour.select(_explode("reasons").drop_nulls().unique().sort().head(5)).to_series().to_list()
    if tally.error is not None:
        description = f"the check could not run: {tally.error}"
        failing_keys = _hour_keys(hours)
    elif failing:
        shown = ", ".join(failing_keys[:5]) + (", ..." if len(failing_keys) > 5 else "")
        description = f"{total} {noun} in {len(failing_keys)} hour(s) ({shown}): {'; '.join(reasons)}"
    else:
        description = f"no {noun} in {len(hours)} hour(s)"
    seconds = round(time.perf_counter() - started, 3)
    metadata = {
        "failures": total,
        "failing_hour_count": len(failing_keys),
        "hours_checked": len(hours),
        "rows_checked": tally.rows_checked,
        "failing_hours": dg.MetadataValue.json(failing_keys[:FAILING_HOURS_LISTED]),
        "first_failing_hour": failing_keys[0] if failing_keys else "",
        "reasons": dg.MetadataValue.json(reasons),
        "sample": dg.MetadataValue.json(_sample_json(samples)),
        "seconds": seconds,
        **tally.counters,
    }
    if tally.error is not None:
        metadata["error"] = tally.error
    # a failed WARN check is routine (it is alerted by a sensor); only a failed ERROR check is a warning line
    log_event(context.log, "check_evaluated", level="warning" if not passed and severity == ERROR else "info",
              stage="checks", run_id=context.run.run_id,
              partition_range=f"{hour_key(hours[0])}..{hour_key(hours[-1])}" if hours else "",
              asset=asset_key.to_user_string(), check=check_name, severity=severity.value, passed=passed,
              failures=total, failing_hours=len(failing_keys), rows_checked=tally.rows_checked,
              latency_ms=round(seconds * 1000, 1))
    yield dg.AssetCheckResult(
        asset_key=asset_key, check_name=check_name, passed=passed, severity=severity,
        description=description, metadata=metadata,
    )


class FrameChunks:
    """The chunks of one stored frame, kept for the next data check of the same asset in the same run.

    The checks of an asset run one after another, right after it (five read ``conversions``, four
    ``journeys``), and each read the same stored frame in the same chunks: every chunk read its
    hour files again and the chunks were planned again from the files' footers. The first check of
    an asset now keeps the chunks it reads, up to ``limit_bytes`` (a frame larger than that is kept
    in part: its first chunks), and the next checks of that asset in that run read those from
    memory; the chunks of one frame only are kept, dropped when a check of another frame (or run)
    starts. Frames are immutable once their step has run, so every check sees the same rows."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._plan: list[tuple[int, ...]] | None = None
        self._kept: dict[tuple[int, ...], pl.DataFrame] = {}
        self._bytes = 0
        self.hits = 0

    def clear(self) -> None:
        with self._lock:
            self._key, self._plan, self._kept, self._bytes = None, None, {}, 0

    def chunks(self, key: tuple, frame: HourlyFrame) -> Iterator[tuple[tuple[int, ...], pl.DataFrame]]:
        """``frame.chunks()``, from memory for the chunks an earlier check of ``key`` kept."""
        with self._lock:
            if key != self._key:
                self._key, self._plan, self._kept, self._bytes = key, None, {}, 0
            plan = self._plan
        if plan is None:
            plan = frame.chunk_list()
            with self._lock:
                if key == self._key:
                    self._plan = plan
        for chunk in plan:
            with self._lock:
                df = self._kept.get(chunk) if key == self._key else None
                self.hits += df is not None
            if df is None:
                df = frame.read(chunk)
                self._keep(key, chunk, df)
            yield chunk, df

    def _keep(self, key: tuple, chunk: tuple[int, ...], df: pl.DataFrame) -> None:
        size = df.estimated_size()
        with self._lock:
            if key == self._key and self._bytes + size <= self.limit_bytes:
                self._kept[chunk] = df
                self._bytes += size


#: Memory the checks of one asset may keep between them (:class:`FrameChunks`): a constant, so the
#: run's peak grows by at most this much whatever its rows (the chunk a check reads is sized by the
#: IO manager within ATTRIBUTION_MEMORY_BUDGET_MB; the frame of the last checks run, kept until a
#: check of another frame or run starts, is the small ``snapshots`` one in the job's order).
CHECK_CACHE_MB = 64
FRAMES = FrameChunks(CHECK_CACHE_MB << 20)


def run_frame_check(context: dg.AssetCheckExecutionContext, frame: HourlyFrame, *, asset_key: dg.AssetKey,
                    check_name: str, severity: dg.AssetCheckSeverity, ids: dict, noun: str,
                    finder: Finder) -> Iterator:
    """Apply ``finder`` to each chunk of the stored ``frame``, then report (never raises)."""
    started = time.perf_counter()
    tally = Tally(frame.hours, ids)
    try:
        for chunk, df in FRAMES.chunks((context.run.run_id, asset_key.to_user_string(), frame.hours), frame):
            tally.add(df.height, _in_chunk(finder(chunk, df, tally), chunk))
    except Exception as exc:  # noqa: BLE001 - reported as a failed evaluation, see the module docstring
        tally.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    yield from results(context, asset_key=asset_key, check_name=check_name, severity=severity, tally=tally,
                       noun=noun, started=started)


def frame_check(hourly: Hourly, asset: str, name: str, severity: dg.AssetCheckSeverity, description: str, *,
                ids: dict, noun: str, finder: Finder):
    """The check ``<asset>.<name>``: ``finder`` over the asset's stored frame, chunk by chunk."""
    asset_key = dg.AssetKey(asset)

    def check(context: dg.AssetCheckExecutionContext, frame: HourlyFrame):
        yield from run_frame_check(context, frame, asset_key=asset_key, check_name=name, severity=severity,
                                   ids=ids, noun=noun, finder=finder)

    check.__name__ = f"{asset}_{name}"
    return hourly.check(asset, name, severity, description)(check)


def schema_check(hourly: Hourly, asset: str, model, ids: dict, noun: str):
    """The ERROR check ``<asset>.frame_schema``: the stored frame matches the pandera ``model``
    (``core/contracts.py``), which mirrors its column contract in ``core/frames.py``."""
    return frame_check(hourly, asset, "frame_schema", ERROR,
                       f"The {asset} frame matches contracts.{model.__name__}. {_SCHEMA_HELP}", ids=ids, noun=noun,
                       finder=lambda chunk, df, tally: schema_findings(model, df, chunk, ids))
