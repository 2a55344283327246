"""Asset checks (assets/check_kit.py and the checks beside each asset, core/contracts.py) on real MariaDB runs of the Dagster job: each check fails on
crafted bad data and passes on good data, in one-hour and range runs. Results are read back from
the Dagster instance: the run-level evaluation (failing hours and sample in its metadata) and the
per-hour evaluations, which make the UI's partition view red exactly on the failing hours."""

import dagster as dg
import polars as pl
import pytest

import scenarios
from attribution_pipeline.assets import check_kit, freshness
from attribution_pipeline.assets.hourly import hourly_partitions
from attribution_pipeline.core import contracts as schemas
from attribution_pipeline.core import frames
from attribution_pipeline.core.hours import hour_key, key_hour
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.io_managers import hourly_parquet
from attribution_pipeline.settings import DEFAULT_PARTITIONS_START
from attribution_pipeline.storage import click_reads, database
from pipeline import HOUR, settings
import pipeline

T = scenarios.T
H0, H1, H2 = T, T + HOUR, T + 2 * HOUR
K0, K1, K2 = hour_key(H0), hour_key(H1), hour_key(H2)
PARTITIONS = hourly_partitions(DEFAULT_PARTITIONS_START)  # the partitions of settings() in these tests
FIRST = key_hour(DEFAULT_PARTITIONS_START)

#: The data checks (asset, check): every one is hourly-partitioned.
DATA_CHECKS = [
    ("attribution_models", "frame_schema"),
    ("conversions", "frame_schema"),
    ("conversions", "orphan_conversions"),
    ("conversions", "zero_or_null_payouts"),
    ("journeys", "frame_schema"),
    ("journeys", "click_slice_schema"),
    ("journeys", "duplicated_click_ids"),
    ("journeys", "clicks_after_conversion"),
    ("credits", "frame_schema"),
    ("snapshots", "frame_schema"),
]
SCHEMA_CHECKS = [c for c in DATA_CHECKS if c[1].endswith("schema")]
WARNING_CHECKS = [c for c in DATA_CHECKS if c not in SCHEMA_CHECKS]


def run(*args, **kwargs):
    """A run that recomputes every hour: these tests evaluate the checks again over hours already
    written, which a run would otherwise leave alone when nothing changed (D22)."""
    return pipeline.run(*args, full=True, **kwargs)


def evaluations(instance, run_id):
    """{(asset, check): {"run": run-level evaluation, "hours": {partition key: evaluation}}}."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    out: dict = {}
    for record in records:
        ev = record.event_log_entry.dagster_event.event_specific_data
        entry = out.setdefault((ev.asset_key.to_user_string(), ev.check_name), {"run": None, "hours": {}})
        if ev.partition is None:
            entry["run"] = ev
        else:
            entry["hours"][ev.partition] = ev
    return out


def meta(evaluation, name):
    return evaluation.metadata[name].value


def assert_passed(evals, check, hours):
    entry = evals[check]
    assert entry["run"].passed, (check, entry["run"].description)
    assert meta(entry["run"], "failing_hours") == [] and meta(entry["run"], "hours_checked") == len(hours)
    assert sorted(entry["hours"]) == sorted(hours), check  # one green result per hour (<= 24 hours)
    assert all(e.passed for e in entry["hours"].values()), check


def assert_failed_at(evals, check, failing, hours, severity):
    entry = evals[check]
    run_level = entry["run"]
    assert not run_level.passed and run_level.severity == severity, check
    assert meta(run_level, "failing_hours") == failing, (check, run_level.description)
    assert meta(run_level, "failing_hour_count") == len(failing) and meta(run_level, "failures") >= 1
    assert all(k in run_level.description for k in failing)
    assert {k: e.passed for k, e in entry["hours"].items()} == {k: k not in failing for k in hours}, check
    for key in failing:
        hour = entry["hours"][key]
        assert hour.severity == severity and hour.target_materialization_data is not None
        assert meta(hour, "failures") >= 1 and all(s["hour"] == key for s in meta(hour, "sample"))
    return meta(run_level, "sample")


def load(url, anomalies=False):
    with database.make_engine(url).begin() as conn:
        ids = scenarios.load_section_4_6(conn)
        if anomalies:
            add_anomalies(conn)
    return ids


def add_anomalies(conn):
    """One anomaly per warning check, each on its own campaign of account 1 and in a known hour."""
    for campaign in (40, 50, 60):
        scenarios.add_campaign(conn, campaign, 1, 1)
    # H1: a counted conversion with payout 0
    scenarios.add_click(conn, 401, 1, 40, T + 3000)
    scenarios.add_conversion(conn, 61, 401, 40, 1, "0", T + 3000, H1 + 100)
    # H2: an orphan conversion (its click 999 is not in 202_clicks, D16)
    scenarios.add_conversion(conn, 62, 999, 40, 1, "3", T + 100, H2 + 100)
    # H0: a click row stored twice (D15), converting
    scenarios.add_click(conn, 501, 1, 50, T + 100)
    scenarios.add_click(conn, 501, 1, 50, T + 100)
    scenarios.add_conversion(conn, 63, 501, 50, 1, "4", T + 100, H0 + 200)
    # H2: the converting click is 500 s later than the conversion
    scenarios.add_click(conn, 601, 1, 60, H2 + 1000)
    scenarios.add_conversion(conn, 64, 601, 60, 1, "6", H2 + 1000, H2 + 500)


# ------------------------------------------------------------------------------------------
# schemas: contracts and crafted frames (no database)
# ------------------------------------------------------------------------------------------


def test_schemas_mirror_the_frame_contracts():
    assert len(schemas.CONTRACTS) == 6
    for model, contract in schemas.CONTRACTS.items():
        schema = model.to_schema()
        assert list(schema.columns) == list(contract), model.__name__
        assert {c: col.dtype.type for c, col in schema.columns.items()} == contract, model.__name__
        assert schema.strict is True and schema.ordered is True


def _credit_rows(**changes):
    row = {"date_hour": H1, "model_id": 7, "user_id": 1, "conv_id": 3, "position": 0, "click_id": 2**32 + 5,
           "credit": 1.0, "revenue": 2.0, "cost": 0.5, "credit_stored": "1.00000"}
    good = pl.DataFrame([row]).with_columns(pl.col("credit_stored").cast(pl.Decimal(38, 5)))
    bad = pl.DataFrame([{**row, "conv_id": 4, **changes}]).with_columns(pl.col("credit_stored").cast(pl.Decimal(38, 5)))
    return frames.conform(pl.concat([good, bad]), frames.CREDITS)


@pytest.mark.parametrize("changes, reason", [
    ({"credit": 1.5}, "credit: less_than_or_equal_to"),
    ({"credit": 0.0}, "credit: greater_than(0)"),
    ({"date_hour": H1 + 60}, "date_hour: whole_utc_hour"),
    ({"model_id": -1}, "model_id: greater_than(0)"),
    ({"conv_id": 3}, "multiple_fields_uniqueness"),
])
def test_schema_findings_name_the_failing_row_by_its_ids(changes, reason):
    df = _credit_rows(**changes)
    ids = {"model_id": pl.Int64, "conv_id": pl.Int64, "position": pl.Int32, "click_id": frames.CLICK_ID}
    found = check_kit.schema_findings(schemas.Credits, df, (H0, H1), ids)
    assert found.height >= 1 and found["reason"].str.starts_with(reason.split("(")[0]).any(), found
    assert set(found["date_hour"]) == {H1}  # a row outside the chunk's hours is put in the chunk
    assert set(found.columns) == {"date_hour", *ids, "reason"}  # ids and a reason: never raw values


def test_a_frame_level_failure_fails_every_hour_of_the_chunk():
    df = _credit_rows().drop("cost")
    found = check_kit.schema_findings(schemas.Credits, df, (H0, H1, H2), {"model_id": pl.Int64})
    assert set(found["date_hour"]) == {H0, H1, H2}
    assert found["reason"].str.contains("cost").any() and found["model_id"].is_null().all()
    wrong_type = _credit_rows().with_columns(pl.col("credit_stored").cast(pl.Decimal(12, 4)))
    found = check_kit.schema_findings(schemas.Credits, wrong_type, (H1,), {"model_id": pl.Int64})
    assert found["reason"].str.contains("credit_stored").any()


# ------------------------------------------------------------------------------------------
# the pipeline (MariaDB)
# ------------------------------------------------------------------------------------------


def test_good_data_passes_every_check_in_one_hour_range_and_scoped_runs(mysql_url):
    load(mysql_url)
    instance = dg.DagsterInstance.ephemeral()
    # first, before any shared frame exists: a --user run's frames are private and the write-back
    # removes them when it ends; the checks run before it (dagster/priority) and read them
    result, _ = run(mysql_url, H0, H2, users=[1], instance=instance)
    evals = evaluations(instance, result.run_id)
    for check in DATA_CHECKS:
        assert evals[check]["run"].passed and meta(evals[check]["run"], "rows_checked") > 0, check
    result, _ = run(mysql_url, H1, instance=instance)
    evals = evaluations(instance, result.run_id)
    for check in DATA_CHECKS:
        assert_passed(evals, check, [K1])
    result, _ = run(mysql_url, H0, H2, instance=instance)
    evals = evaluations(instance, result.run_id)
    for check in DATA_CHECKS:
        assert_passed(evals, check, [K0, K1, K2])
    assert meta(evals[("journeys", "frame_schema")]["run"], "rows_checked") == 15
    # the UI's per-partition state of a check
    key = dg.AssetCheckKey(dg.AssetKey("conversions"), "frame_schema")
    state = instance.event_log_storage.get_asset_check_state([(key, PARTITIONS)])[key]
    succeeded = state.subsets[next(s for s in state.subsets if s.value == "SUCCEEDED")]
    assert set(succeeded.value.get_partition_keys()) == {K0, K1, K2}


def test_a_single_partition_run_records_the_result_on_its_partition(mysql_url):
    """UI launches of one partition (tag dagster/partition): the run-level result is the hour's."""
    load(mysql_url, anomalies=True)
    instance = dg.DagsterInstance.ephemeral()
    job = build_definitions(settings(mysql_url)).resolve_job_def("attribution_job")
    result = job.execute_in_process(partition_key=K2, instance=instance, raise_on_error=False)
    assert result.success
    evals = evaluations(instance, result.run_id)
    # no run-level (partition-less) evaluation: the single result carries the partition
    orphan = evals[("conversions", "orphan_conversions")]
    assert orphan["run"] is None and set(orphan["hours"]) == {K2} and not orphan["hours"][K2].passed
    assert meta(orphan["hours"][K2], "failing_hours") == [K2]
    assert evals[("conversions", "frame_schema")]["hours"][K2].passed


def test_warning_checks_fail_on_crafted_data_naming_the_hours_and_ids(mysql_url):
    load(mysql_url, anomalies=True)
    instance = dg.DagsterInstance.ephemeral()
    result, report = run(mysql_url, H0, H2, instance=instance)
    hours = [K0, K1, K2]
    evals = evaluations(instance, result.run_id)
    warn = dg.AssetCheckSeverity.WARN
    sample = assert_failed_at(evals, ("conversions", "zero_or_null_payouts"), [K1], hours, warn)
    assert [(s["conv_id"], s["reason"]) for s in sample] == [(61, "payout is 0")]
    assert meta(evals[("conversions", "zero_or_null_payouts")]["run"], "zero_payouts") == 1
    sample = assert_failed_at(evals, ("conversions", "orphan_conversions"), [K2], hours, warn)
    assert [(s["conv_id"], s["click_id"]) for s in sample] == [(62, 999)]
    sample = assert_failed_at(evals, ("journeys", "duplicated_click_ids"), [K0], hours, warn)
    assert {(s["conv_id"], s["click_id"], s["copies"]) for s in sample} == {(63, 501, 2)}
    sample = assert_failed_at(evals, ("journeys", "clicks_after_conversion"), [K2], hours, warn)
    assert [(s["conv_id"], s["click_id"], s["seconds_after"]) for s in sample] == [(64, 601, 500)]
    for check in SCHEMA_CHECKS:
        assert_passed(evals, check, hours)
    for samples in (meta(evals[c]["run"], "sample") for c in WARNING_CHECKS):
        assert all(set(s) <= {"hour", "conv_id", "click_id", "position", "copies", "seconds_after", "reason"}
                   for s in samples)  # ids only: no IP, user agent or referer can be in a sample
    assert report["outcome"] == 0  # warnings never hold writes back
    # the UI's partition view: red exactly on the failing hour
    key = dg.AssetCheckKey(dg.AssetKey("conversions"), "orphan_conversions")
    state = instance.event_log_storage.get_asset_check_state([(key, PARTITIONS)])[key]
    by_status = {s.value: set(sub.value.get_partition_keys()) for s, sub in state.subsets.items()}
    assert by_status["FAILED"] == {K2} and by_status["SUCCEEDED"] == {K0, K1}

    # one-hour runs: the failing hour alone fails, another hour alone passes
    result, _ = run(mysql_url, H2, instance=instance)
    evals = evaluations(instance, result.run_id)
    assert_failed_at(evals, ("conversions", "orphan_conversions"), [K2], [K2], warn)
    assert_failed_at(evals, ("journeys", "clicks_after_conversion"), [K2], [K2], warn)
    assert_passed(evals, ("conversions", "zero_or_null_payouts"), [K2])
    assert_passed(evals, ("journeys", "duplicated_click_ids"), [K2])
    result, _ = run(mysql_url, H1, instance=instance)
    evals = evaluations(instance, result.run_id)
    assert_failed_at(evals, ("conversions", "zero_or_null_payouts"), [K1], [K1], warn)
    assert_passed(evals, ("conversions", "orphan_conversions"), [K1])


#: (asset, hour) -> how its stored frame is damaged, with the ids the check must name.
CORRUPTIONS = {
    ("attribution_models", H1): lambda df: df.with_columns(
        first_touch_weight=pl.when(pl.col("model_id") == 1).then(2.0).otherwise(pl.col("first_touch_weight"))),
    ("conversions", H0): lambda df: df.with_columns(
        campaign_id=pl.when(pl.col("conv_id") == 1).then(-5).otherwise(pl.col("campaign_id"))),
    ("journeys", H1): lambda df: df.with_columns(touch_cpc=pl.lit(-1.0)),
    ("credits", H2): lambda df: df.with_columns(
        credit=pl.when((pl.col("model_id") == 1) & (pl.col("conv_id") == 4)).then(1.5).otherwise(pl.col("credit"))),
    ("snapshots", H0): lambda df: df.with_columns(
        attributed_conversions=pl.when(pl.col("model_id") == 2).then(0).otherwise(pl.col("attributed_conversions"))),
}


@pytest.fixture
def corrupted_storage(monkeypatch):
    """The IO manager stores some frames damaged, as a bad disk or a bug would; checks read them back."""
    real_write = hourly_parquet.write_hour

    def write_hour(root, asset, hour, df):
        damage = CORRUPTIONS.get((asset, hour))
        return real_write(root, asset, hour, damage(df) if damage and df.height else df)

    monkeypatch.setattr(hourly_parquet, "write_hour", write_hour)


def test_schema_checks_fail_on_damaged_stored_frames_naming_the_hours_and_ids(mysql_url, corrupted_storage):
    load(mysql_url)
    instance = dg.DagsterInstance.ephemeral()
    result, _ = run(mysql_url, H0, H2, instance=instance)
    hours = [K0, K1, K2]
    evals = evaluations(instance, result.run_id)
    error = dg.AssetCheckSeverity.ERROR
    sample = assert_failed_at(evals, ("attribution_models", "frame_schema"), [K1], hours, error)
    assert {(s["model_id"], s["reason"]) for s in sample} == {(1, "first_touch_weight: less_than_or_equal_to(1)")}
    sample = assert_failed_at(evals, ("conversions", "frame_schema"), [K0], hours, error)
    assert {(s["conv_id"], s["reason"]) for s in sample} == {(1, "campaign_id: greater_than_or_equal_to(0)")}
    sample = assert_failed_at(evals, ("journeys", "frame_schema"), [K1], hours, error)
    assert {s["conv_id"] for s in sample} == {3} and {s["reason"] for s in sample} == {"touch_cpc: greater_than_or_equal_to(0)"}
    sample = assert_failed_at(evals, ("journeys", "click_slice_schema"), [K1], hours, error)
    assert {(s["conv_id"], s["click_id"], s["reason"]) for s in sample} == {(3, 201, "click_cpc: greater_than_or_equal_to(0)")}
    sample = assert_failed_at(evals, ("credits", "frame_schema"), [K2], hours, error)
    assert {(s["model_id"], s["conv_id"]) for s in sample} == {(1, 4)}
    assert all(s["reason"].startswith("credit: less_than_or_equal_to") for s in sample)
    sample = assert_failed_at(evals, ("snapshots", "frame_schema"), [K0], hours, error)
    assert {(s["model_id"], s["reason"]) for s in sample} == {(2, "attributed_conversions: greater_than_or_equal_to(1)")}
    for check in WARNING_CHECKS:
        assert_passed(evals, check, hours)
    # a one-hour run over a damaged hour fails the same way
    result, _ = run(mysql_url, H1, instance=instance)
    evals = evaluations(instance, result.run_id)
    assert_failed_at(evals, ("journeys", "frame_schema"), [K1], [K1], error)
    assert_failed_at(evals, ("attribution_models", "frame_schema"), [K1], [K1], error)
    assert_passed(evals, ("credits", "frame_schema"), [K1])


def test_a_check_that_cannot_read_its_frame_fails_instead_of_failing_the_run(mysql_url, monkeypatch):
    load(mysql_url)
    instance = dg.DagsterInstance.ephemeral()

    def broken(*args, **kwargs):
        raise RuntimeError("simulated query failure")

    monkeypatch.setattr(click_reads, "duplicated_click_rows", broken)
    result, report = run(mysql_url, H0, H2, instance=instance)  # asserts the run succeeded
    evals = evaluations(instance, result.run_id)
    run_level = evals[("journeys", "duplicated_click_ids")]["run"]
    assert not run_level.passed and "simulated query failure" in run_level.description
    assert meta(run_level, "failing_hours") == [K0, K1, K2] and report["outcome"] == 0


def test_freshness_is_the_latest_hour_that_ended_two_hours_ago(mysql_url):
    load(mysql_url)
    instance = dg.DagsterInstance.ephemeral()
    run(mysql_url, H0, H2, instance=instance)
    # H2 ends at H2 + 1h; it is due 2 hours later
    assert freshness.due_hour(H2 + 3 * HOUR) == H2 and freshness.due_hour(H2 + 3 * HOUR - 1) == H1
    fresh = freshness.evaluate_freshness(instance, FIRST, now=H2 + 3 * HOUR + 1800)  # due: H2, written
    assert fresh.passed and fresh.metadata["due_hour"].value == K2
    stale = freshness.evaluate_freshness(instance, FIRST, now=H2 + 4 * HOUR + 600)  # due: H2 + 1h, never written
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.WARN
    assert stale.metadata["due_hour"].value == hour_key(H2 + HOUR)
    assert stale.metadata["overdue_minutes"].value == 10 and stale.metadata["last_written_hour"].value == K2
    assert hour_key(H2 + HOUR) in stale.description
