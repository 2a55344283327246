"""Bad source rows, one kind per case (issue 16): each is named, by a check, a held group's reason or
a skipped model's reason, and changes nothing but its own (user, model, hour) groups (D19, D21).

Every case gets two accounts (``scenarios.Account``: a user with one conversion per hour, early
touches and two multi-touch models) and adds its bad row(s) to the first one, ``a`` (or across
``a`` and ``b``). Accounts share no row, so all the cases of a journey source live in one database
and one run: a baseline database without the bad rows and a database with them are loaded and run
once per module, then compared group by group. A case asserts (a) what names its bad row and
(b) that every group of its two accounts and of two untouched control accounts, except the groups
the row is meant to change, equals the baseline (snapshot and touchpoints as stored).

Both databases have two columns changed by hand, as some installs have: ``202_clicks.click_cpc``
DECIMAL(20,5) NULL (a cost beyond DECIMAL(12,4), a NULL cpc) and ``202_conversion_logs.click_payout``
NULL (a NULL payout). Prosper202's own schema has neither; every other row is the same.
"""

from dataclasses import dataclass, field
from typing import Callable

import dagster as dg
import polars as pl
import pytest
from sqlalchemy import text

from attribution_pipeline.assets.inputs import DUPLICATE_POSTBACK_SECONDS, duplicated_postbacks_finder
from attribution_pipeline.core import frames
from attribution_pipeline.core.invariants import unstorable_values
from attribution_pipeline.core.precision import CREDIT_DTYPE, MONEY_DTYPE, quantize
from attribution_pipeline.storage import database, tables
from conftest import _new_database
from oracle import php_engine
from pipeline import HOUR, run
from scenarios import ACCOUNT_HOURS, T, Account, add_click, add_conversion, add_model, add_stored_journey, load_account

H0, H1, H2 = ACCOUNT_HOURS
CONTROL = (Account(10), Account(11))  # no bad row: every group equals the baseline
STORED_TOUCH_CAP = 3  # the stored-journeys run: a stored journey of 5 touches is too long
SCHEMA_VARIANT = (
    "ALTER TABLE `202_clicks` MODIFY click_cpc DECIMAL(20,5) NULL",
    "ALTER TABLE `202_conversion_logs` MODIFY click_payout DECIMAL(11,5) NULL",
)


@dataclass
class Outcome:
    """One journey source's two runs: the report and the run-level check evaluations of the run with
    the bad rows, and the stored rows of both, per group: {(model, user, hour): (snapshot, touchpoints)}."""

    report: dict
    checks: dict
    base: dict
    bad: dict


@dataclass(frozen=True)
class Bad:
    """A kind of bad source row: ``add(conn, a, b)`` inserts it, ``named(out, a, b)`` asserts what
    names it, ``affected(a, b)`` is the groups it is meant to change (held, changed or gone)."""

    name: str
    add: Callable
    named: Callable
    affected: Callable = field(default=lambda a, b: set())
    source: str = "clicks"


# ------------------------------------------------------------------------------------------
# bad rows
# ------------------------------------------------------------------------------------------


def side_conversion(conn, a: Account, k: int, payout="5", *, cpc="0.10", click_time=H1 + 300, conv_time=H1 + 1000,
                    deleted=0) -> int:
    """A click and its conversion (id ``a.id(k)``) on the side campaign: out of the good journeys."""
    add_click(conn, a.id(k), a.user_id, a.side_campaign, click_time, cpc, ppc_account_id=a.user_id)
    add_conversion(conn, a.id(k), a.id(k), a.side_campaign, a.user_id, payout, click_time, conv_time, deleted)
    return a.id(k)


def revenue_overflow(conn, a, b):
    # 101 conversions at the largest payout DECIMAL(11,5) holds: the hour's revenue is beyond DECIMAL(12,4)
    for k in range(500, 601):
        side_conversion(conn, a, k, "999999.99999", click_time=H1 + 100)


def null_column(table, key, column):
    """A side conversion, then its ``table.column`` set to NULL (the schema variant allows it)."""
    def add(conn, a, b):
        row = side_conversion(conn, a, 500)
        conn.execute(table.update().where(table.c[key] == row).values({column: None}))
    return add


def model_row(model_type, config):
    return lambda conn, a, b: add_model(conn, a.user_id * 10 + 9, a.user_id, model_type, config)


def stored_journey_too_long(conn, a, b):
    """A side conversion whose stored journey (202_conversion_touchpoints) has STORED_TOUCH_CAP + 2 touches."""
    conv = side_conversion(conn, a, 500, click_time=H1 + 500)
    touches = [(a.id(600 + n), H1 + 100 * n) for n in range(1, STORED_TOUCH_CAP + 2)]
    for click, time in touches:
        add_click(conn, click, a.user_id, a.side_campaign, time, "0.10", ppc_account_id=a.user_id)
    add_stored_journey(conn, conv, [*touches, (conv, H1 + 500)])


def stored_converting_click_twice(conn, a, b):
    """A side conversion whose stored journey holds its converting click twice (a concurrent PHP writer)."""
    conv = side_conversion(conn, a, 500)
    add_stored_journey(conn, conv, [(conv, H1 + 300), (conv, H1 + 300)])


def hour_1(a, b):
    return {(m, a.user_id, H1) for m in a.models}


# ------------------------------------------------------------------------------------------
# what names them
# ------------------------------------------------------------------------------------------


def sample_of(out, asset, check):
    evaluation = out.checks.get((asset, check))
    assert evaluation is not None and not evaluation.passed, (asset, check, "did not fail")
    return evaluation.metadata["sample"].value


def named_by(asset, check, *, reason="", **ids):
    """The run-level evaluation of ``asset.check`` failed, and its sample names the row: ``ids``
    are functions of (a, b) giving the values the sample row must hold."""
    def named(out, a, b):
        want = {k: f(a, b) for k, f in ids.items()}
        sample = sample_of(out, asset, check)
        assert any(want.items() <= row.items() and reason in row["reason"] for row in sample), (want, sample)
    return named


def held(*parts):
    """Every model of ``a`` in H1 is held, with a reason holding ``parts``, and nothing was written."""
    def named(out, a, b):
        reasons: dict = {}
        for h in out.report["held"]:
            if h["user_id"] == a.user_id:
                reasons.setdefault((h["model_id"], h["user_id"], h["date_hour"]), []).append(h["reason"])
        assert set(reasons) == hour_1(a, b), reasons
        wanted = [p.format(conv=a.id(500)) for p in parts]
        assert all(any(all(p in r for p in wanted) for r in found) for found in reasons.values()), reasons
        assert not hour_1(a, b) & set(out.bad)
    return named


def skipped(reason):
    """The extra model of ``a`` is skipped with ``reason``, named by ``valid_models``, and has no rows."""
    def named(out, a, b):
        model_id = a.user_id * 10 + 9
        assert {m["model_id"]: m["reason"] for m in out.report["skipped_models"]}.get(model_id, "").startswith(reason)
        valid_models = out.checks[("attribution_models", "valid_models")]
        assert not valid_models.passed
        assert any(s["model_id"] == model_id for s in valid_models.metadata["skipped"].value)
        assert not [g for g in out.bad if g[0] == model_id]
    return named


def counted(extra_conversions, revenue_change):
    """The affected groups are written with ``extra_conversions`` more conversions and the revenue
    changed by ``revenue_change``."""
    def check(out, a, b):
        for group in hour_1(a, b):
            (_, _, _, _, base_convs, base_revenue, _), _ = out.base[group]
            (_, _, _, _, convs, revenue, _), _ = out.bad[group]
            assert convs == base_convs + extra_conversions, group
            assert float(revenue) == pytest.approx(float(base_revenue) + revenue_change), group
    return check


def both(*assertions):
    def named(out, a, b):
        for assertion in assertions:
            assertion(out, a, b)
    return named


def unnamed(out, a, b):
    """Ignored, as PHP ignores it: no held group, no skipped model, no failed check names it."""
    assert not [h for h in out.report["held"] if h["user_id"] == a.user_id]
    assert not [m for m in out.report["skipped_models"] if m["user_id"] == a.user_id]
    bad_ids = {a.id(500)}
    for evaluation in out.checks.values():
        assert not [s for s in evaluation.metadata.get("sample", dg.MetadataValue.json([])).value
                    if s.get("conv_id") in bad_ids], evaluation.check_name


def gone(out, a, b):
    assert not a.groups() & set(out.bad) and a.groups() <= set(out.base)
    assert not [h for h in out.report["held"] if h["user_id"] == a.user_id]


def one(x):
    return lambda a, b: x


CASES = [
    # values that do not fit their stored column: the group is held and named (D19 storable_values)
    Bad("revenue_overflow", revenue_overflow, held("storable_values: attributed_revenue 101000020.49",
                                                   "202_attribution_snapshots.attributed_revenue DECIMAL(12,4)"),
        hour_1),
    Bad("cost_overflow", lambda conn, a, b: side_conversion(conn, a, 500, cpc="1000000000"),
        held("storable_values: attributed_cost 1", "202_attribution_snapshots.attributed_cost DECIMAL(12,4)"), hour_1),
    Bad("null_click_cpc", null_column(tables.clicks, "click_id", "click_cpc"),
        both(held("storable_values: conversion {conv} cost null"),
             named_by("conversions", "frame_schema", reason="found_click_has_cpc", conv_id=lambda a, b: a.id(500))),
        hour_1),
    # payouts: counted, named by a WARN check (revenue 0 for NULL, as PHP's float cast)
    Bad("null_payout", null_column(tables.conversion_logs, "conv_id", "click_payout"),
        both(named_by("conversions", "zero_or_null_payouts", reason="payout is NULL", conv_id=lambda a, b: a.id(500)),
             counted(1, 0.0)), hour_1),
    Bad("zero_payout", lambda conn, a, b: side_conversion(conn, a, 500, "0"),
        both(named_by("conversions", "zero_or_null_payouts", reason="payout is 0", conv_id=lambda a, b: a.id(500)),
             counted(1, 0.0)), hour_1),
    Bad("negative_payout", lambda conn, a, b: side_conversion(conn, a, 500, "-5"),
        both(named_by("conversions", "zero_or_null_payouts", reason="payout is negative",
                      conv_id=lambda a, b: a.id(500)), counted(1, -5.0)), hour_1),
    # conversions that do not count
    Bad("foreign_user_click", lambda conn, a, b: add_conversion(conn, a.id(500), b.converting_click(1), a.campaign,
                                                                a.user_id, "50", H1 + 600, H1 + 1200),
        named_by("conversions", "foreign_user_clicks", reason="another user", conv_id=lambda a, b: a.id(500),
                 click_id=lambda a, b: b.converting_click(1))),
    Bad("orphan_conversion", lambda conn, a, b: add_conversion(conn, a.id(500), a.id(900), a.campaign, a.user_id,
                                                               "50", H1 + 600, H1 + 1200),
        named_by("conversions", "orphan_conversions", conv_id=lambda a, b: a.id(500), click_id=lambda a, b: a.id(900))),
    Bad("soft_deleted_conversion", lambda conn, a, b: side_conversion(conn, a, 500, deleted=1), unnamed),
    Bad("conversion_after_the_window", lambda conn, a, b: side_conversion(
        conn, a, 500, click_time=H2 + HOUR + 10, conv_time=H2 + HOUR + 100), unnamed),
    Bad("conversion_before_the_window", lambda conn, a, b: side_conversion(
        conn, a, 500, click_time=H0 - 600, conv_time=H0 - 1), unnamed),
    Bad("deleted_user", lambda conn, a, b: conn.execute(
        tables.users.update().where(tables.users.c.user_id == a.user_id).values(user_deleted=1)),
        gone, lambda a, b: a.groups()),
    # clicks
    Bad("duplicated_postback", lambda conn, a, b: add_conversion(conn, a.id(500), a.converting_click(1), a.campaign,
                                                                 a.user_id, "20.5", H1 + 600, H1 + 905),
        both(named_by("conversions", "duplicated_postbacks", conv_id=lambda a, b: a.id(500),
                      first_conv_id=lambda a, b: a.converting_click(1), seconds_after=one(5)),
             counted(1, 20.5)), hour_1),
    Bad("duplicated_click_id", lambda conn, a, b: add_click(conn, a.converting_click(1), a.user_id, a.campaign,
                                                            H1 + 600, "0.2", ppc_account_id=a.user_id),
        named_by("journeys", "duplicated_click_ids", conv_id=lambda a, b: a.converting_click(1),
                 click_id=lambda a, b: a.converting_click(1), copies=one(2))),
    Bad("click_id_shared_with_another_user", lambda conn, a, b: add_click(
        conn, a.converting_click(1), b.user_id, b.side_campaign, H1 + 60, "9.99", ppc_account_id=b.user_id),
        named_by("journeys", "duplicated_click_ids", conv_id=lambda a, b: a.converting_click(1), copies=one(2))),
    Bad("click_after_conversion", lambda conn, a, b: side_conversion(conn, a, 500, click_time=H1 + 1500),
        both(named_by("journeys", "clicks_after_conversion", conv_id=lambda a, b: a.id(500), seconds_after=one(500)),
             counted(1, 5.0)), hour_1),
    # model rows: skipped and reported (D6), the user's other models written
    Bad("model_invalid_json", model_row("time_decay", "{'half_life_hours': 12}"),
        skipped("Invalid weighting configuration JSON: Syntax error")),
    Bad("model_unknown_type", model_row("data_driven", None), skipped("Unsupported attribution model type")),
    Bad("model_v3_empty_time_decay", model_row("time_decay", "{}"),
        skipped("Weighting configuration required for the selected model type.")),
    Bad("model_zero_half_life", model_row("time_decay", '{"half_life_hours": 0}'),
        skipped('Time decay models require a positive integer "half_life_hours" value.')),
    Bad("model_weights_over_one", model_row("position_based", '{"first_touch_weight":0.8,"last_touch_weight":0.5}'),
        skipped("The sum of first and last touch weights must not exceed 1.")),
    # stored journeys (PHP's rebuild semantics, D13 setting): the journey invariants hold the hour
    Bad("stored_journey_too_long", stored_journey_too_long,
        held("journey_length: conversion {conv} has 5 touches"), hour_1, source="stored"),
    Bad("stored_converting_click_twice", stored_converting_click_twice,
        held("converting_click: conversion {conv} has its click 2 times"), hour_1, source="stored"),
]
SOURCES = ("clicks", "stored")


def accounts(bad: Bad) -> tuple[Account, Account]:
    index = [c for c in CASES if c.source == bad.source].index(bad)
    return Account(100 + 2 * index), Account(101 + 2 * index)


# ------------------------------------------------------------------------------------------
# the runs
# ------------------------------------------------------------------------------------------


def load(url: str, source: str, with_bad: bool) -> None:
    engine = database.make_engine(url)
    tables.create_missing(engine)
    with engine.begin() as conn:
        for statement in SCHEMA_VARIANT:
            conn.execute(text(statement))
        for account in CONTROL:
            load_account(conn, account)
        for bad in (c for c in CASES if c.source == source):
            a, b = accounts(bad)
            load_account(conn, a)
            load_account(conn, b)
            if with_bad:
                bad.add(conn, a, b)
    engine.dispose()


def stored_groups(url: str) -> dict:
    engine = database.make_engine(url)
    with engine.connect() as conn:
        stored = php_engine.stored_rows(conn)
    engine.dispose()
    touches: dict = {}
    for t in stored.touchpoints:
        touches.setdefault(t[:3], []).append(t[3:])
    return {s[:3]: (s, touches.get(s[:3], [])) for s in stored.snapshots}


def check_results(instance, run_id) -> dict:
    """{(asset, check): run-level evaluation} of the run's checks (hourly evaluations left out)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    out = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.partition is None:
            out[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = evaluation
    return out


@pytest.fixture(scope="module")
def outcomes(mysql_server, tmp_path_factory) -> dict[str, Outcome]:
    """Per journey source: the baseline run and the run with every bad row of that source."""
    home = tmp_path_factory.mktemp("bad_input_home")
    urls, found = [], {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTRIBUTION_HOME", str(home))
        for name in ("ATTRIBUTION_DB_URL", "ATTRIBUTION_EXPORT_DIR", "DAGSTER_HOME"):
            mp.delenv(name, raising=False)
        for source in SOURCES:
            overrides = {"journey_source": source, "touch_cap": STORED_TOUCH_CAP} if source == "stored" else {}
            rows = {}
            for with_bad in (False, True):
                url = _new_database(mysql_server)
                urls.append(url)
                load(url, source, with_bad)
                instance = dg.DagsterInstance.ephemeral()
                result, report = run(url, H0, H2, instance=instance, **overrides)
                assert report["outcome"] == (2 if with_bad else 0), (source, with_bad, report["held"])
                rows[with_bad] = stored_groups(url)
            found[source] = Outcome(report=report, checks=check_results(instance, result.run_id),
                                    base=rows[False], bad=rows[True])
    yield found
    with mysql_server.cursor() as cur:
        for url in urls:
            cur.execute(f"DROP DATABASE IF EXISTS `{url.rsplit('/', 1)[1]}`")


# ------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_a_bad_row_is_named_and_changes_only_its_own_groups(outcomes, bad):
    out = outcomes[bad.source]
    a, b = accounts(bad)
    watched = a.groups() | b.groups() | set().union(*(c.groups() for c in CONTROL))
    assert watched <= set(out.base), "the baseline writes every group of the accounts"
    bad.named(out, a, b)
    affected = bad.affected(a, b)
    for group in sorted(watched - affected):
        assert out.bad.get(group) == out.base[group], (bad.name, group)
    changed = {g for g in affected if out.bad.get(g) != out.base.get(g)}
    assert changed == affected, (bad.name, affected - changed)


def test_the_table_covers_twenty_kinds_and_the_runs_commit_with_outcome_2(outcomes):
    assert len(CASES) >= 20 and len({c.name for c in CASES}) == len(CASES)
    for source in SOURCES:
        out = outcomes[source]
        assert out.report["chunks_committed"] == 1 and not out.report["rolled_back_chunks"]
        assert out.report["outcome"] == 2  # committed, with held groups and skipped models (D19)


# ------------------------------------------------------------------------------------------
# the pieces, without a database
# ------------------------------------------------------------------------------------------


def test_values_that_do_not_fit_become_null_and_are_named_with_their_column():
    values = pl.Series("x", [1.5, 99999999.99994, 99999999.99995, -1e9, float("nan"), float("inf"), None])
    assert quantize(values, MONEY_DTYPE).to_list()[:3] == [pl.Series([1.5]).cast(MONEY_DTYPE)[0],
                                                            pl.Series([99999999.9999]).cast(MONEY_DTYPE)[0], None]
    assert quantize(values, MONEY_DTYPE).null_count() == 5
    snapshots = frames.conform(pl.DataFrame({
        "date_hour": [T] * 4, "model_id": [1, 2, 3, 4], "user_id": [7] * 4, "attributed_clicks": [1, 1, 1, 2**32],
        "attributed_conversions": [1] * 4, "revenue": [1.0, float("inf"), 1e12, 1.0], "cost": [0.1, 0.1, 0.1, 0.1],
    }).with_columns(attributed_revenue=pl.lit(None), attributed_cost=pl.lit(None)), frames.SNAPSHOTS)
    snapshots = snapshots.with_columns(attributed_revenue=quantize(snapshots["revenue"], MONEY_DTYPE),
                                       attributed_cost=quantize(snapshots["cost"], MONEY_DTYPE))
    credits = frames.conform(pl.DataFrame({
        "date_hour": [T], "model_id": [1], "user_id": [7], "conv_id": [5], "position": [0], "click_id": [9],
        "credit": [float("nan")], "revenue": [1.0], "cost": [None],
    }).with_columns(credit_stored=quantize(pl.Series([float("nan")]), CREDIT_DTYPE)), frames.CREDITS)
    reasons = {(r["model_id"], r["reason"]) for r in unstorable_values(credits, snapshots).to_dicts()}
    assert reasons == {
        (1, "storable_values: conversion 5 cost null does not fit 202_attribution_snapshots.attributed_cost DECIMAL(12,4)"),
        (1, "storable_values: conversion 5 position 0 credit NaN does not fit 202_attribution_touchpoints.credit "
            "DECIMAL(10,5)"),
        (2, "storable_values: attributed_revenue inf does not fit 202_attribution_snapshots.attributed_revenue "
            "DECIMAL(12,4)"),
        (3, "storable_values: attributed_revenue 1000000000000.0 does not fit "
            "202_attribution_snapshots.attributed_revenue DECIMAL(12,4)"),
        (4, "storable_values: attributed_clicks 4294967296 does not fit 202_attribution_snapshots.attributed_clicks "
            "INT UNSIGNED"),
    }


def test_duplicated_postbacks_are_found_across_chunks_within_the_window():
    class Tally:
        def count(self, name, value):
            pass

    def chunk_frame(rows):
        return pl.DataFrame(rows, schema=["conv_id", "click_id", "conv_time"], orient="row").with_columns(
            date_hour=pl.col("conv_time") - pl.col("conv_time") % HOUR, click_id=pl.col("click_id").cast(pl.UInt64))

    finder = duplicated_postbacks_finder()
    window = DUPLICATE_POSTBACK_SECONDS
    first = finder((H0,), chunk_frame([(1, 10, H0 + 100), (2, 10, H0 + 100 + window), (3, 11, H1 - 20),
                                       (4, 12, H0 + 200), (5, 12, H0 + 201 + window)]), Tally())
    assert first.select("conv_id", "first_conv_id", "seconds_after").rows() == [(2, 1, window)]
    second = finder((H1,), chunk_frame([(6, 11, H1 + 15), (7, 10, H1 + 30)]), Tally())
    assert second.select("conv_id", "first_conv_id", "seconds_after", "reason").rows() == [
        (6, 3, 35, "35 s after conversion 3 of the same click")]
