"""Incremental runs (D22): a run over hours already written recomputes and rewrites only the
(user, hour) pairs whose inputs or stored rows changed, and the rows stay identical to a full
rewrite after every kind of source change."""

import json

import pytest
from sqlalchemy import func, select, text, update

from attribution_pipeline.core import chunk_plan as cp
from attribution_pipeline.demo.generator import GeneratorConfig, generate, load
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import database, tables
from oracle import php_engine
from pipeline import HOUR, run, settings

START = 1735689600  # 2025-01-01 00:00 UTC
#: Scope types a run writes by default (D31): the chunk plan counts their memory.
DEFAULT_SCOPES = len(Settings.from_env({}).scope_types)
HOURS = [START + i * HOUR for i in range(6)]
conv, clk, models, snaps = (tables.conversion_logs, tables.clicks, tables.attribution_models,
                            tables.attribution_snapshots)


def seed(url):
    engine = database.make_engine(url)
    load(engine, generate(GeneratorConfig(seed=21, start=START, hours=len(HOURS), scale=0.3, invalid_models=False)))
    return engine


def rows(engine):
    with engine.connect() as conn:
        got = php_engine.stored_rows(conn, HOURS)
    return sorted(got.snapshots), sorted(got.touchpoints)


def a_conversion(engine, hour_index: int) -> dict:
    """A converting conversion of hour ``hour_index`` (its row as stored)."""
    lo = HOURS[hour_index]
    with engine.connect() as conn:
        return dict(conn.execute(select(conv).where(conv.c.conv_time.between(lo, lo + HOUR - 1), conv.c.deleted == 0)
                                 .order_by(conv.c.conv_id).limit(1)).one()._mapping)


def users_with_conversions(engine, hour_index: int) -> int:
    lo = HOURS[hour_index]
    with engine.connect() as conn:
        return conn.execute(select(func.count(func.distinct(conv.c.user_id)))
                            .where(conv.c.conv_time.between(lo, lo + HOUR - 1))).scalar()


def incremental_then_full(url, engine, **settings):
    """The incremental run's report and rows, then a --full run's rows over the same hours."""
    _, report = run(url, HOURS[0], HOURS[-1], **settings)
    after = rows(engine)
    _, full = run(url, HOURS[0], HOURS[-1], full=True, **settings)
    assert full["user_hours_skipped"] == 0 and full["user_hours_recomputed"] == report["user_hours_recomputed"] + \
        report["user_hours_skipped"]
    return report, after, rows(engine)


def new_conversion(engine):
    row = a_conversion(engine, 2)
    with engine.begin() as conn:
        conn.execute(conv.insert().values({**{k: v for k, v in row.items() if k != "conv_id"},
                                           "transaction_id": "incremental-test", "conv_time": row["conv_time"] + 60}))
    return row["user_id"], 1


def soft_delete(engine):
    row = a_conversion(engine, 3)
    with engine.begin() as conn:
        conn.execute(update(conv).where(conv.c.conv_id == row["conv_id"]).values(deleted=1))
    return row["user_id"], 1


def payout_edit(engine):
    row = a_conversion(engine, 4)
    with engine.begin() as conn:
        conn.execute(update(conv).where(conv.c.conv_id == row["conv_id"]).values(click_payout=row["click_payout"] + 7))
    return row["user_id"], 1


def click_cost_edit(engine):
    row = a_conversion(engine, 5)
    with engine.begin() as conn:
        conn.execute(update(clk).where(clk.c.click_id == row["click_id"]).values(click_cpc=clk.c.click_cpc + 1))
    return row["user_id"], None  # the click's hour and every later hour of the user can use it


def model_edit(engine):
    with engine.connect() as conn:
        model = conn.execute(select(models).where(models.c.model_type == "time_decay", models.c.is_active == 1)
                             .order_by(models.c.model_id).limit(1)).one()._mapping
    config = json.loads(model["weighting_config"])
    config["half_life_hours"] = int(config.get("half_life_hours", 24)) + 5
    with engine.begin() as conn:
        conn.execute(update(models).where(models.c.model_id == model["model_id"])
                     .values(weighting_config=json.dumps(config)))
    return model["user_id"], len(HOURS)


def foreign_write(engine):
    with engine.connect() as conn:
        snap = conn.execute(select(snaps).where(snaps.c.date_hour == HOURS[1]).order_by(snaps.c.snapshot_id)
                            .limit(1)).one()._mapping
    with engine.begin() as conn:  # what PHP's inline rebuild writes: its raw window, other values
        conn.execute(update(snaps).where(snaps.c.snapshot_id == snap["snapshot_id"])
                     .values(attributed_revenue=snap["attributed_revenue"] + 3, lookback_start=snap["date_hour"] + 17))
    return snap["user_id"], 1


def split_budget(engine, kind: str | None) -> dict:
    """Settings that split every run of the test as ``kind`` says (nothing: the default budget)."""
    if kind is None:
        return {}
    with engine.connect() as conn:
        models_per_user = conn.execute(text("SELECT MAX(n) FROM (SELECT COUNT(*) n FROM `202_attribution_models` "
                                            "WHERE is_active = 1 GROUP BY user_id) m")).scalar()
        per_hour = conn.execute(text("SELECT MAX(n) FROM (SELECT COUNT(*) n FROM `202_conversion_logs` "
                                     "GROUP BY conv_time DIV 3600) c")).scalar()
        per_user_hour = conn.execute(text("SELECT MAX(n) FROM (SELECT COUNT(*) n FROM `202_conversion_logs` "
                                          "GROUP BY user_id, conv_time DIV 3600) c")).scalar()
    conversions = {"hours": per_hour, "users": per_user_hour, "conversion ranges": 2}[kind]
    return {"memory_budget_mb": cp.budget_mb_for(conversions * cp.touches_bound(25) * models_per_user, DEFAULT_SCOPES)}


@pytest.mark.parametrize("change,split", [
    (new_conversion, None), (soft_delete, None), (payout_edit, None), (click_cost_edit, None), (model_edit, None),
    (foreign_write, None),
    (new_conversion, "hours"), (click_cost_edit, "users"), (model_edit, "conversion ranges"),
    (soft_delete, "conversion ranges"),
])
def test_rows_equal_a_full_rewrite_after_each_kind_of_change(mysql_url, change, split):
    engine = seed(mysql_url)
    budget = split_budget(engine, split)
    result, first = run(mysql_url, HOURS[0], HOURS[-1], **budget)
    assert first["user_hours_recomputed"] > 0 and first["snapshots_written"] > 0
    if split is not None:  # the budget did cut the run as named
        assert first["chunks_committed"] == len(HOURS)
        credits = {k: v.value for k, v in result.asset_materializations_for_node("credits")[0].metadata.items()}
        if split != "users":  # (whether an hour holds several users over the budget depends on the data)
            assert (credits.get("pieces", 0) > len(HOURS)) == (split == "conversion ranges"), credits
    before = rows(engine)
    user, expected_pairs = change(engine)
    report, incremental, full = incremental_then_full(mysql_url, engine, **budget)
    assert incremental == full  # what the incremental run left is what a full rewrite writes
    if change is foreign_write:  # the edited row was seen and replaced: the rows are ours again
        assert incremental == before and report["foreign_rows"] == 1
        assert report["user_hours_recomputed"] == 1
        return
    assert incremental != before  # the change did reach the rows
    assert report["user_hours_recomputed"] >= 1
    if expected_pairs is not None:
        assert report["user_hours_recomputed"] == expected_pairs, report
    assert report["user_hours_skipped"] == first["user_hours_recomputed"] - report["user_hours_recomputed"]
    changed = {(r[1], r[2]) for part in (0, 1) for r in set(incremental[part]) ^ set(before[part])}
    assert {u for u, _ in changed} == {user}


def exports_of(result) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("attribution_exports")[0].metadata.items()}


def export_files(settings_) -> dict:
    return {p: p.stat().st_mtime_ns for p in settings_.export_path.rglob("*.parquet")}


def test_a_rerun_without_changes_writes_nothing_and_reexports_nothing(mysql_url):
    engine = seed(mysql_url)
    result, first = run(mysql_url, HOURS[0], HOURS[-1])
    assert exports_of(result)["hours_exported"] == len(HOURS)
    files = export_files(settings())
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT snapshot_id, created_at FROM `202_attribution_snapshots` ORDER BY 1")).all()
    result, again = run(mysql_url, HOURS[0], HOURS[-1])
    assert exports_of(result)["hours_exported"] == 0 and export_files(settings()) == files  # no file rewritten
    assert again["user_hours_recomputed"] == 0
    assert again["user_hours_skipped"] == first["user_hours_recomputed"]
    assert again["snapshots_written"] == again["snapshots_deleted"] == again["touchpoints_deleted"] == 0
    assert again["groups_unchanged"] == first["snapshots_written"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT snapshot_id, created_at FROM `202_attribution_snapshots` ORDER BY 1")).all() \
            == ids
    payout_edit(engine)  # one hour changes: that hour alone is exported again, and its files agree with MySQL
    result, edited = run(mysql_url, HOURS[0], HOURS[-1])
    exported = exports_of(result)
    assert edited["user_hours_recomputed"] == 1 and exported["hours_exported"] == 1
    changed = {p for p, t in export_files(settings()).items() if files[p] != t}
    assert {p.parent.name for p in changed} == {"hour=04"} and len(changed) == 4  # its four files
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "export_reconciliation"]
    assert check.passed and check.metadata["hours_checked"].value == 1


def test_full_rewrite_and_a_held_group_are_recomputed_next_time(mysql_url):
    engine = seed(mysql_url)
    run(mysql_url, HOURS[0], HOURS[-1])
    _, full = run(mysql_url, HOURS[0], HOURS[-1], full=True)
    assert full["user_hours_skipped"] == 0 and full["snapshots_written"] > 0
    with engine.begin() as conn:  # the state of one pair is lost: that pair only is recomputed
        conn.execute(tables.source_state.delete().where(tables.source_state.c.date_hour == HOURS[0]))
    _, report = run(mysql_url, HOURS[0], HOURS[-1])
    assert report["user_hours_recomputed"] == users_with_any_state(full, HOURS[0], engine)


def users_with_any_state(full_report, hour, engine) -> int:
    """Active users (each has a state row per hour once a full run recorded them)."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM `202_users` WHERE user_deleted = 0")).scalar()


def test_the_fingerprint_reads_cover_every_window_as_one_read_does(mysql_url):
    """``source_changes.source_parts`` reads the clicks per campaign from a day before the run, and
    the lookback's older clicks as two halves of whole hours, beside the conversions: every
    (user, hour)'s click window sums what one read of the whole lookback gives it, on MariaDB."""
    from attribution_pipeline.assets.source_changes import halves, source_parts
    from attribution_pipeline.core.click_reach import window_sums
    from attribution_pipeline.settings import Settings
    from attribution_pipeline.storage import source_state
    from attribution_pipeline.storage.database import Database

    engine = seed(mysql_url)
    lo, hi = HOURS[0] - 30 * 86400, HOURS[-1] + HOUR - 1
    assert halves(lo, hi) == [(lo, lo + 363 * HOUR - 1), (lo + 363 * HOUR, hi)]  # 726 hours: 363 each side
    assert halves(HOURS[0], HOURS[0] + HOUR - 1) == [(HOURS[0], HOURS[0] + HOUR - 1)]
    with engine.connect() as conn:
        users = [r[0] for r in conn.execute(select(clk.c.user_id).distinct())]
        one = source_state.click_parts(conn, users, lo, hi)
        conversions = source_state.conversion_parts(conn, users, HOURS[0], hi)
    got_conversions, two, starts, _ = source_parts(Database(mysql_url), users, HOURS, Settings(home=None, db_url=mysql_url), [])
    assert one.height > len(HOURS) and starts.height == len(users) * len(HOURS)
    key = ["user_id", "date_hour"]
    assert window_sums(two, starts, "c").sort(key).equals(window_sums(one, starts, "c").sort(key))
    assert conversions.height > 0 and got_conversions.sort(key).equals(conversions.sort(key))


def test_a_payout_edit_keeps_the_groups_touchpoints_and_a_foreign_touchpoint_edit_is_replaced(mysql_url):
    """A payout edit changes its groups' snapshot values, not their touchpoints: the rewritten groups'
    touchpoints stay as stored (same ids and ``created_at``), the snapshot rows take the new values,
    and the rows equal a full rewrite (D37). A touchpoint someone else edited in a rewritten group
    differs from what is computed, so that group's touchpoints are replaced."""
    engine = seed(mysql_url)
    run(mysql_url, HOURS[0], HOURS[-1])
    touch = tables.attribution_touchpoints
    stored = lambda: sorted(tuple(r) for r in engine.connect().execute(  # noqa: E731
        select(touch.c.touchpoint_id, touch.c.snapshot_id, touch.c.conv_id, touch.c.position, touch.c.credit,
               touch.c.created_at)).all())
    before, before_rows = stored(), rows(engine)
    user, _ = payout_edit(engine)
    _, report = run(mysql_url, HOURS[0], HOURS[-1])
    assert report["user_hours_recomputed"] == 1 and report["snapshots_written"] > 0
    assert report["touchpoints_kept"] > 0 and report["touchpoints_deleted"] == report["touchpoints_written"] == 0
    assert stored() == before  # not one touchpoint deleted or written
    after = rows(engine)
    assert after[1] == before_rows[1] and after[0] != before_rows[0]  # the snapshot values moved
    _, full = run(mysql_url, HOURS[0], HOURS[-1], full=True)
    assert rows(engine) == after and full["touchpoints_written"] == 0 and full["touchpoints_kept"] > 0

    with engine.connect() as conn:  # someone edits a touchpoint of the hour the next edit recomputes
        victim = conn.execute(select(touch.c.touchpoint_id, touch.c.snapshot_id).join(
            snaps, snaps.c.snapshot_id == touch.c.snapshot_id).where(
            snaps.c.date_hour == HOURS[4], snaps.c.user_id == user).order_by(touch.c.touchpoint_id).limit(1)).one()
        group_size = conn.execute(select(func.count()).where(touch.c.snapshot_id == victim.snapshot_id)).scalar()
    with engine.begin() as conn:
        conn.execute(update(touch).where(touch.c.touchpoint_id == victim.touchpoint_id).values(credit=0.5, weight=0.5))
    payout_edit(engine)
    _, report = run(mysql_url, HOURS[0], HOURS[-1])
    assert report["touchpoints_deleted"] == report["touchpoints_written"] == group_size  # that group alone
    assert rows(engine)[1] == after[1]  # the edited touchpoint is computed again
    _, full = run(mysql_url, HOURS[0], HOURS[-1], full=True)
    assert rows(engine)[1] == after[1] and full["touchpoints_written"] == 0
