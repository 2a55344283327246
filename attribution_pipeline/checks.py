"""Asset checks: what ops watch in the Dagster UI, and what each red check means.

Every asset shows its checks under *Assets -> attribution -> <asset> -> Checks*. A check is red
when it failed; its latest evaluation names the failing hours (``failing_hours``, partition keys
such as ``2024-06-01-09:00``), counts them and shows a sample of at most 20 failing rows as ids
(conversion, click, model, user ids; never an IP address, a user agent or a referer).

========================== ======================= ======== =========================================
asset                      check                   severity meaning when red (and what to do)
========================== ======================= ======== =========================================
attribution_models         frame_schema            ERROR    the stored models frame breaks its
                                                            contract (schemas.Models): a pipeline bug;
                                                            look at the sample, fix, re-run the hours
conversions                frame_schema            ERROR    the conversions frame breaks its contract
conversions                orphan_conversions      WARN     conversions whose click row is missing
                                                            from 202_clicks: skipped, as in PHP (D16)
conversions                zero_or_null_payouts    WARN     counted conversions with a payout that is
                                                            0, negative or NULL: they attribute no
                                                            revenue; check the pixel/postback amount
journeys                   frame_schema            ERROR    the journeys frame breaks its contract
journeys                   click_slice_schema      ERROR    a click the journeys were built from
                                                            breaks 202_clicks' contract (schemas.ClickSlice)
journeys                   duplicated_click_ids    WARN     a journey touch whose click id is stored
                                                            more than once in 202_clicks: counted once
                                                            (D15); find the duplicate rows
journeys                   clicks_after_conversion WARN     a touch later than its conversion (the
                                                            converting click's time is after conv_time)
credits                    frame_schema            ERROR    the credits frame breaks its contract
snapshots                  frame_schema            ERROR    the snapshots frame breaks its contract
attribution_writeback      latest_hour_fresh       WARN     the latest complete hour is still not
                                                            written 2 hours after it ended: is the
                                                            schedule running, are runs failing?
========================== ======================= ======== =========================================

(``attribution_models.valid_models`` and the write-back's ``writeback_reconciliation``,
``held_groups`` and ``foreign_writes`` are yielded by the assets themselves.)

Partitions. Every data check is an hourly-partitioned check (``partitions_def`` = the assets'
hourly partitions) that receives the stored frame of exactly the run's hours through the
``HourlyParquetIOManager`` and reads it one chunk of hours at a time (memory is bounded by a chunk).
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

import time
import warnings
from collections.abc import Callable, Iterator

import dagster as dg
import polars as pl
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    # Not exported by dagster 1.13's public API, but required to tie a per-hour evaluation to the
    # hour's materialisation (without it the UI treats the evaluation as stale).
    AssetCheckEvaluationTargetMaterializationData,
)
from sqlalchemy import func, select

from attribution_pipeline import frames, schemas
from attribution_pipeline import schema as tables
from attribution_pipeline.assets.common import hourly_partitions
from attribution_pipeline.assets.credits import credits, snapshots
from attribution_pipeline.assets.extract import attribution_models, conversions
from attribution_pipeline.assets.journeys import journeys
from attribution_pipeline.assets.writeback import attribution_writeback
from attribution_pipeline.db import chunked, read_by_ids, read_frame, with_retries
from attribution_pipeline.frames import HourlyFrame
from attribution_pipeline.logs import log_event
from attribution_pipeline.partitions import HOUR, KEY_FORMAT, floor_hour, hour_key, key_hour, partitions_start
from attribution_pipeline.resources import DatabaseResource

SAMPLE_SIZE = 20  # failing rows shown per evaluation (ids only)
HOURLY_RESULTS_MAX_HOURS = 24  # runs up to this long record a result for every hour
FAILING_HOUR_RESULTS_MAX = 100  # longer runs record at most this many failing hours per check
FAILING_HOURS_LISTED = 500  # hours named in a run-level evaluation's metadata
FRESHNESS_GRACE_SECONDS = 2 * HOUR  # an hour must be written within 2 hours of its end
_IN_LIST = 5000

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN

#: The checked assets' keys (inside a check, the asset's name is its loaded frame).
ATTRIBUTION_MODELS_KEY = attribution_models.key
CONVERSIONS_KEY = conversions.key
JOURNEYS_KEY = journeys.key
CREDITS_KEY = credits.key
SNAPSHOTS_KEY = snapshots.key
WRITEBACK_KEY = attribution_writeback.key

#: Check steps run before the write-back step (see the module docstring).
_BEFORE_WRITEBACK = {"dagster/priority": "1"}


def _now() -> int:
    return int(time.time())


# ------------------------------------------------------------------------------------------
# Findings: the failing rows of one chunk, as (date_hour, ids..., reason)
# ------------------------------------------------------------------------------------------


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
    cases = schemas.failure_cases(model, df)
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


def run_frame_check(context: dg.AssetCheckExecutionContext, frame: HourlyFrame, *, asset_key: dg.AssetKey,
                    check_name: str, severity: dg.AssetCheckSeverity, ids: dict, noun: str,
                    finder: Callable[[tuple[int, ...], pl.DataFrame, Tally], pl.DataFrame]) -> Iterator:
    """Apply ``finder`` to each chunk of the stored ``frame``, then report (never raises)."""
    started = time.perf_counter()
    tally = Tally(frame.hours, ids)
    try:
        for chunk, df in frame.chunks():
            tally.add(df.height, _in_chunk(finder(chunk, df, tally), chunk))
    except Exception as exc:  # noqa: BLE001 - reported as a failed evaluation, see the module docstring
        tally.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    yield from results(context, asset_key=asset_key, check_name=check_name, severity=severity, tally=tally,
                       noun=noun, started=started)


def _hourly_check(asset, name: str, severity: dg.AssetCheckSeverity, description: str, **kwargs):
    """``@asset_check`` on the hourly partitions (see the module docstring).

    Partitioned asset checks are a preview feature of Dagster 1.13 (they are what makes a check
    read only the run's hours and show per-hour status); its PreviewWarning is silenced here, for
    these definitions only, because the choice is deliberate and documented in the README.
    """

    def decorate(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return dg.asset_check(
                asset=asset, name=name, partitions_def=hourly_partitions, description=description,
                metadata={"severity": severity.value}, op_tags=_BEFORE_WRITEBACK, **kwargs,
            )(fn)

    return decorate


# ------------------------------------------------------------------------------------------
# Schema checks (ERROR)
# ------------------------------------------------------------------------------------------

_CONV_IDS = {"conv_id": pl.Int64, "click_id": frames.CLICK_ID}
_TOUCH_IDS = {"conv_id": pl.Int64, "position": pl.Int32, "click_id": frames.CLICK_ID}
_MODEL_IDS = {"model_id": pl.Int64, "user_id": pl.Int64}
_CREDIT_IDS = {"model_id": pl.Int64, "conv_id": pl.Int64, "position": pl.Int32, "click_id": frames.CLICK_ID}
_SNAPSHOT_IDS = {"model_id": pl.Int64, "user_id": pl.Int64}

_SCHEMA_HELP = ("Red: the stored frame breaks its contract; the sample names the rows (ids) and the rule. "
                "A pipeline bug or a damaged frame file: fix it, then re-materialise the failing hours.")


def _schema_finder(model, ids: dict):
    return lambda chunk, df, tally: schema_findings(model, df, chunk, ids)


@_hourly_check(attribution_models, "frame_schema", ERROR,
               f"The models frame matches schemas.Models (frames.MODELS). {_SCHEMA_HELP}")
def models_frame_schema(context: dg.AssetCheckExecutionContext, attribution_models: HourlyFrame):
    yield from run_frame_check(context, attribution_models, asset_key=ATTRIBUTION_MODELS_KEY,
                               check_name="frame_schema", severity=ERROR, ids=_MODEL_IDS,
                               noun="model rows breaking schemas.Models",
                               finder=_schema_finder(schemas.Models, _MODEL_IDS))


@_hourly_check(conversions, "frame_schema", ERROR,
               f"The conversions frame matches schemas.Conversions (frames.CONVERSIONS). {_SCHEMA_HELP}")
def conversions_frame_schema(context: dg.AssetCheckExecutionContext, conversions: HourlyFrame):
    yield from run_frame_check(context, conversions, asset_key=CONVERSIONS_KEY,
                               check_name="frame_schema", severity=ERROR, ids=_CONV_IDS,
                               noun="conversion rows breaking schemas.Conversions",
                               finder=_schema_finder(schemas.Conversions, _CONV_IDS))


@_hourly_check(journeys, "frame_schema", ERROR,
               f"The journeys frame matches schemas.Journeys (frames.JOURNEYS). {_SCHEMA_HELP}")
def journeys_frame_schema(context: dg.AssetCheckExecutionContext, journeys: HourlyFrame):
    yield from run_frame_check(context, journeys, asset_key=JOURNEYS_KEY,
                               check_name="frame_schema", severity=ERROR, ids=_TOUCH_IDS,
                               noun="touch rows breaking schemas.Journeys",
                               finder=_schema_finder(schemas.Journeys, _TOUCH_IDS))


@_hourly_check(journeys, "click_slice_schema", ERROR,
               "The clicks the journeys were built from (every touch's click-slice row, deduplicated: "
               "schemas.ClickSlice = extract.CLICKS) match 202_clicks' contract. " + _SCHEMA_HELP)
def journeys_click_slice_schema(context: dg.AssetCheckExecutionContext, journeys: HourlyFrame):
    def finder(chunk, df, tally):
        return schema_findings(schemas.ClickSlice, schemas.click_slice_of_journeys(df), chunk, _TOUCH_IDS, source=df)

    yield from run_frame_check(context, journeys, asset_key=JOURNEYS_KEY,
                               check_name="click_slice_schema", severity=ERROR, ids=_TOUCH_IDS,
                               noun="touch clicks breaking schemas.ClickSlice", finder=finder)


@_hourly_check(credits, "frame_schema", ERROR,
               f"The credits frame matches schemas.Credits (frames.CREDITS). {_SCHEMA_HELP}")
def credits_frame_schema(context: dg.AssetCheckExecutionContext, credits: HourlyFrame):
    yield from run_frame_check(context, credits, asset_key=CREDITS_KEY,
                               check_name="frame_schema", severity=ERROR, ids=_CREDIT_IDS,
                               noun="credit rows breaking schemas.Credits",
                               finder=_schema_finder(schemas.Credits, _CREDIT_IDS))


@_hourly_check(snapshots, "frame_schema", ERROR,
               f"The snapshots frame matches schemas.Snapshots (frames.SNAPSHOTS). {_SCHEMA_HELP}")
def snapshots_frame_schema(context: dg.AssetCheckExecutionContext, snapshots: HourlyFrame):
    yield from run_frame_check(context, snapshots, asset_key=SNAPSHOTS_KEY,
                               check_name="frame_schema", severity=ERROR, ids=_SNAPSHOT_IDS,
                               noun="snapshot rows breaking schemas.Snapshots",
                               finder=_schema_finder(schemas.Snapshots, _SNAPSHOT_IDS))


# ------------------------------------------------------------------------------------------
# Warning checks (WARN: they never fail a run)
# ------------------------------------------------------------------------------------------


@_hourly_check(conversions, "orphan_conversions", WARN,
               "Conversions whose click row is missing from 202_clicks (click_rows = 0). They are skipped, "
               "as in PHP (D16). Red: the sample names conv_id and click_id; find why the click row is gone "
               "(purge, partition drop, a conversion posted for an unknown click).")
def conversions_orphans(context: dg.AssetCheckExecutionContext, conversions: HourlyFrame):
    def finder(chunk, df, tally):
        return df.filter(pl.col("click_rows") == 0).select(
            "date_hour", "conv_id", "click_id", reason=pl.lit("click row missing from 202_clicks")
        )

    yield from run_frame_check(context, conversions, asset_key=CONVERSIONS_KEY,
                               check_name="orphan_conversions", severity=WARN, ids=_CONV_IDS,
                               noun="orphan conversion(s)", finder=finder)


@_hourly_check(conversions, "zero_or_null_payouts", WARN,
               "Counted conversions (click row found) whose payout (202_conversion_logs.click_payout) is 0, "
               "negative or NULL: they attribute no revenue. Red: check the postback/pixel amount or the "
               "campaign payout of the conversions in the sample.")
def conversions_zero_payouts(context: dg.AssetCheckExecutionContext, conversions: HourlyFrame):
    def finder(chunk, df, tally):
        counted = df.filter(pl.col("click_rows") > 0)
        found = counted.filter(pl.col("payout").is_null() | (pl.col("payout") <= 0)).select(
            "date_hour", "conv_id", "click_id",
            reason=pl.when(pl.col("payout").is_null()).then(pl.lit("payout is NULL"))
            .when(pl.col("payout") == 0).then(pl.lit("payout is 0")).otherwise(pl.lit("payout is negative")),
        )
        tally.count("null_payouts", int(counted.get_column("payout").is_null().sum()))
        tally.count("zero_payouts", int((counted.get_column("payout") == 0).sum()))
        tally.count("negative_payouts", int((counted.get_column("payout") < 0).sum()))
        return found

    yield from run_frame_check(context, conversions, asset_key=CONVERSIONS_KEY,
                               check_name="zero_or_null_payouts", severity=WARN, ids=_CONV_IDS,
                               noun="conversion(s) with a zero, negative or NULL payout", finder=finder)


_clk = tables.clicks
_DUPLICATES_SCHEMA = {"click_id": frames.CLICK_ID, "copies": pl.Int64}


def duplicated_click_rows(engine, click_ids: list[int], logger=None) -> pl.DataFrame:
    """Which of ``click_ids`` are stored more than once in 202_clicks, and how many times: set-based
    ``SELECT click_id, COUNT(*) ... GROUP BY click_id HAVING COUNT(*) > 1`` over ranges of ids
    (dense ids) or IN lists (sparse ones), on Prosper202's ``click_id`` index (db.read_by_ids)."""
    def statement(where):
        return select(_clk.c.click_id, func.count().label("copies")).where(where) \
            .group_by(_clk.c.click_id).having(func.count() > 1)

    def read():
        with engine.connect() as conn:
            return read_by_ids(conn, _clk.c.click_id, click_ids, statement, _DUPLICATES_SCHEMA, in_list=_IN_LIST)

    return with_retries(read, what="read duplicated click ids", logger=logger)


@_hourly_check(journeys, "duplicated_click_ids", WARN,
               "Journey touches whose click id is stored more than once in 202_clicks (the table has no "
               "unique key). The click counts once (D15; PHP counts the conversion twice). Red: the sample "
               "names click_id, how many copies and a conversion using it; remove the duplicate rows.")
def journeys_duplicated_click_ids(context: dg.AssetCheckExecutionContext, journeys: HourlyFrame,
                                  db: DatabaseResource):
    ids = {**_TOUCH_IDS, "copies": pl.Int64}
    engine = db.engine()

    def finder(chunk, df, tally):
        dups = duplicated_click_rows(engine, df.get_column("click_id").unique().to_list(), logger=context.log)
        tally.count("duplicated_click_ids", dups.height)
        return df.join(dups, on="click_id").select(
            "date_hour", "conv_id", "position", "click_id", "copies",
            reason=pl.format("click id stored {} times in 202_clicks", "copies"),
        )

    yield from run_frame_check(context, journeys, asset_key=JOURNEYS_KEY,
                               check_name="duplicated_click_ids", severity=WARN, ids=ids,
                               noun="touch(es) on a duplicated click id", finder=finder)


@_hourly_check(journeys, "clicks_after_conversion", WARN,
               "Journey touches whose click_time is later than their conversion's conv_time: in practice the "
               "converting click, added with 202_conversion_logs.click_time (D2), dated after the conversion. "
               "Red: the sample names conv_id, click_id and the seconds; check the clocks or the click ids "
               "posted with these conversions.")
def journeys_clicks_after_conversion(context: dg.AssetCheckExecutionContext, journeys: HourlyFrame):
    ids = {**_TOUCH_IDS, "seconds_after": pl.Int64}

    def finder(chunk, df, tally):
        late = df.filter(pl.col("click_time") > pl.col("conv_time"))
        tally.count("converting_clicks_after_conversion", int(late.get_column("is_converting").sum()))
        return late.select(
            "date_hour", "conv_id", "position", "click_id",
            seconds_after=pl.col("click_time") - pl.col("conv_time"),
            reason=pl.when(pl.col("is_converting")).then(pl.lit("converting click after its conversion"))
            .otherwise(pl.lit("touch after its conversion")),
        )

    yield from run_frame_check(context, journeys, asset_key=JOURNEYS_KEY,
                               check_name="clicks_after_conversion", severity=WARN, ids=ids,
                               noun="touch(es) later than their conversion", finder=finder)


# ------------------------------------------------------------------------------------------
# Freshness (WARN): evaluated in every run of the job and, between runs, by a sensor
# ------------------------------------------------------------------------------------------

FRESHNESS_CHECK = "latest_hour_fresh"


def due_hour(now: int) -> int:
    """The latest hour that must be written by ``now``: it ended at least 2 hours ago."""
    return floor_hour(now - FRESHNESS_GRACE_SECONDS) - HOUR


def evaluate_freshness(instance: dg.DagsterInstance, now: int | None = None) -> dg.AssetCheckEvaluation:
    """Is the latest hour that ended 2 hours ago materialised (``attribution_writeback``)?

    Returned as an unpartitioned evaluation of ``attribution_writeback.latest_hour_fresh``, with the
    due hour, the latest write and how late it is. The check and the freshness sensor share it.
    """
    now = _now() if now is None else now
    asset_key = WRITEBACK_KEY
    due = due_hour(now)
    due_key = hour_key(due)
    first = key_hour(partitions_start())
    written = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, {due_key}
    ) if due >= first else {}
    latest = instance.fetch_materializations(asset_key, limit=1).records
    latest_record = latest[0] if latest else None
    passed = due < first or due_key in written
    overdue_minutes = 0 if passed else max(0, (now - (due + HOUR + FRESHNESS_GRACE_SECONDS)) // 60)
    metadata = {
        "due_hour": due_key,
        "overdue_minutes": int(overdue_minutes),
        "grace_minutes": FRESHNESS_GRACE_SECONDS // 60,
        "evaluated_at": dg.MetadataValue.timestamp(float(now)),
        "last_written_hour": (latest_record.partition_key or "") if latest_record else "",
        "failing_hours": dg.MetadataValue.json([] if passed else [due_key]),
    }
    if latest_record is not None:
        metadata["last_written_at"] = dg.MetadataValue.timestamp(latest_record.timestamp)
    if passed:
        description = (f"{due_key} (the latest hour that ended {FRESHNESS_GRACE_SECONDS // 3600} hours ago) is written"
                       if due >= first else "no hour is due yet (partitions start later)")
    else:
        description = (f"{due_key} is not written {FRESHNESS_GRACE_SECONDS // 3600} hours after it ended "
                       f"(overdue by {overdue_minutes} min); last write: "
                       f"{metadata['last_written_hour'] or 'never'}. Is the hourly_attribution schedule "
                       "running, are its runs failing?")
    target = (AssetCheckEvaluationTargetMaterializationData(storage_id=latest_record.storage_id,
                                                            run_id=latest_record.run_id,
                                                            timestamp=latest_record.timestamp)
              if latest_record is not None else None)
    return dg.AssetCheckEvaluation(asset_key=asset_key, check_name=FRESHNESS_CHECK, passed=passed, severity=WARN,
                                   description=description, metadata=metadata, target_materialization_data=target)


@dg.asset_check(
    asset=attribution_writeback,
    name=FRESHNESS_CHECK,
    description="The latest complete UTC hour is written (attribution_writeback materialised) within 2 hours "
    "of its end. Evaluated after every run of the job and every 10 minutes by the attribution_freshness "
    "sensor. Red: due_hour names the missing hour; check that the hourly_attribution schedule is on and "
    "that its runs succeed (Runs, filter attribution_job).",
    metadata={"severity": WARN.value, "grace_minutes": FRESHNESS_GRACE_SECONDS // 60},
)
def writeback_latest_hour_fresh(context: dg.AssetCheckExecutionContext):
    evaluation = evaluate_freshness(context.instance)
    log_event(context.log, "check_evaluated", stage="checks", run_id=context.run.run_id, asset="attribution_writeback", check=FRESHNESS_CHECK,
              severity=WARN.value, passed=evaluation.passed, due_hour=evaluation.metadata["due_hour"].value)
    return dg.AssetCheckResult(passed=evaluation.passed, severity=WARN, description=evaluation.description,
                               metadata=dict(evaluation.metadata))


#: Every check of this module, for ``Definitions(asset_checks=...)``.
ASSET_CHECKS = [
    models_frame_schema,
    conversions_frame_schema,
    conversions_orphans,
    conversions_zero_payouts,
    journeys_frame_schema,
    journeys_click_slice_schema,
    journeys_duplicated_click_ids,
    journeys_clicks_after_conversion,
    credits_frame_schema,
    snapshots_frame_schema,
    writeback_latest_hour_fresh,
]
