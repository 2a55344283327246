"""Rebuilds on model and settings changes (D26): the ``attribution_model_changes`` sensor waits for
a quiet period, launches one run for just the affected users and models (rows equal to a full
rebuild), audits every change, and has a deleted model's rows removed for good."""

import json

import dagster as dg
import polars as pl
import pytest
from sqlalchemy import delete, func, insert, select, update

from attribution_pipeline.automation import model_change_sensor as mcs
from attribution_pipeline.core import change_diff
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.demo.generator import GeneratorConfig, generate, load
from attribution_pipeline.storage import database, tables
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.hour_rewrite import ChunkWrite, without_deleted_models
from attribution_pipeline.storage.model_cleanup import batches, remove_model_rows
from oracle import php_engine
from pipeline import HOUR, run, settings

START = 1735689600  # 2025-01-01 00:00 UTC
HOURS = [START + i * HOUR for i in range(6)]
T0 = START + 6 * HOUR + 900  # the sensor's clock: its 1-day window is clamped to HOURS by the partitions start
SNAP, TOUCH, MODELS, SETTINGS_T, AUDIT = (tables.attribution_snapshots, tables.attribution_touchpoints,
                                          tables.attribution_models, tables.attribution_settings,
                                          tables.attribution_audit)


@pytest.fixture
def world(mysql_url, monkeypatch):
    """A seeded database with its hours written once, the sensor's settings and a Dagster instance."""
    engine = database.make_engine(mysql_url)
    load(engine, generate(GeneratorConfig(seed=21, start=START, hours=len(HOURS), scale=0.3, users=10,
                                 invalid_models=False)))
    config = settings(mysql_url, partitions_start="2025-01-01-00:00", model_change_lookback_days=1,
                      model_change_quiet_seconds=60)
    with dg.DagsterInstance.ephemeral() as instance:
        yield {"url": mysql_url, "engine": engine, "settings": config, "instance": instance,
               "monkeypatch": monkeypatch, "cursor": None}
    engine.dispose()


def tick(world, now, **overrides):
    """Evaluate the sensor once at ``now``; keep its cursor; return its run requests."""
    world["monkeypatch"].setattr(mcs, "clock", lambda: now)
    config = world["settings"].replace(**overrides)
    context = dg.build_sensor_context(cursor=world["cursor"], instance=world["instance"],
                                      resources={"db": Database(world["url"]), "settings": config})
    result = mcs.attribution_model_changes.evaluate_tick(context)
    world["cursor"] = result.cursor
    return list(result.run_requests or [])


def execute(world, request):
    """Run what a RunRequest asks for, in process, as the daemon would launch it."""
    job = build_definitions(world["settings"]).resolve_job_def(request.job_name)
    result = job.execute_in_process(run_config=request.run_config, tags=request.tags, instance=world["instance"],
                                    raise_on_error=False)
    assert result.success
    return result


def rows(engine):
    with engine.connect() as conn:
        got = php_engine.stored_rows(conn, HOURS)
    return sorted(got.snapshots), sorted(got.touchpoints)


def snapshot_rows(engine, where):
    """Stored snapshot rows as written (ids, windows, created_at) and their touchpoint count."""
    with engine.connect() as conn:
        snaps = sorted(tuple(r) for r in conn.execute(select(SNAP).where(where)))
        touches = conn.execute(select(func.count()).select_from(TOUCH.join(SNAP, SNAP.c.snapshot_id == TOUCH.c.snapshot_id))
                               .where(where)).scalar()
    return snaps, touches


def audits(engine, action):
    with engine.connect() as conn:
        return [(r.user_id, r.model_id, json.loads(r.metadata))
                for r in conn.execute(select(AUDIT).where(AUDIT.c.action == action).order_by(AUDIT.c.audit_id))]


def a_model(engine, model_type):
    """(model_id, user_id) of an active model of ``model_type`` with stored rows."""
    with engine.connect() as conn:
        return tuple(conn.execute(
            select(MODELS.c.model_id, MODELS.c.user_id).where(MODELS.c.model_type == model_type, MODELS.c.is_active == 1,
                                                              MODELS.c.model_id.in_(select(SNAP.c.model_id)))
            .order_by(MODELS.c.model_id).limit(1)).one())


def reweight(engine, model_id, half_life):
    with engine.begin() as conn:
        conn.execute(update(MODELS).where(MODELS.c.model_id == model_id)
                     .values(weighting_config=json.dumps({"half_life_hours": half_life})))


def test_a_burst_of_weighting_edits_gives_one_run_equal_to_a_full_rebuild(world):
    engine, url = world["engine"], world["url"]
    run(url, HOURS[0], HOURS[-1])
    assert tick(world, T0) == []  # the first tick only records
    model_id, user_id = a_model(engine, "time_decay")
    before = rows(engine)
    for offset, half_life in ((5, 2), (20, 3), (40, 4)):  # a burst: each edit restarts the quiet period
        reweight(engine, model_id, half_life)
        assert tick(world, T0 + offset) == []
    assert tick(world, T0 + 99) == []  # 59 s after the last edit
    [request] = tick(world, T0 + 101)
    assert tick(world, T0 + 140) == []
    assert request.job_name == "attribution_job" and request.tags[mcs.KIND_TAG] == "model_change"
    assert request.tags["dagster/priority"] == "3"  # after the schedule (10) and exports (5), before backfills
    assert request.run_config["resources"]["scope"]["config"] == {"users": [user_id], "models": [model_id]}
    assert request.run_key.startswith("model-change-")

    edits = audits(engine, "model_change_detected")
    assert [(u, m, a["change"]) for u, m, a in edits] == [(user_id, model_id, "edited")] * 3
    assert set(edits[0][2]["fields"]) == {"weighting_config"}
    assert edits[0][2]["fields"]["weighting_config"]["old_hash"] != edits[0][2]["fields"]["weighting_config"]["new_hash"]

    execute(world, request)
    after = rows(engine)
    assert after != before
    changed = {(s[0], s[1]) for s in set(after[0]) ^ set(before[0])} | {(t[0], t[1]) for t in set(after[1]) ^ set(before[1])}
    assert changed == {(model_id, user_id)}  # only the edited model's rows changed
    run(url, HOURS[0], HOURS[-1], full=True)
    assert rows(engine) == after


def test_a_deleted_models_rows_and_exports_are_removed_and_stay_removed(world):
    engine, url, config = world["engine"], world["url"], world["settings"]
    run(url, HOURS[0], HOURS[-1])
    assert tick(world, T0) == []
    gone_a, _ = a_model(engine, "position_based")
    gone_b, _ = a_model(engine, "linear")
    kept = SNAP.c.model_id.notin_([gone_a, gone_b])
    others = snapshot_rows(engine, kept)
    _, b_touches = snapshot_rows(engine, SNAP.c.model_id == gone_b)
    with engine.begin() as conn:
        conn.execute(delete(MODELS).where(MODELS.c.model_id.in_([gone_a, gone_b])))
    assert tick(world, T0 + 5) == []
    [request] = tick(world, T0 + 70)
    assert request.job_name == mcs.CLEANUP_JOB and request.tags[mcs.KIND_TAG] == "model_cleanup"
    assert request.run_config["ops"]["remove_deleted_models"]["config"]["models"] == sorted([gone_a, gone_b])
    assert [(m, a["change"]) for _, m, a in audits(engine, "model_change_detected")] == \
        sorted([(gone_a, "deleted"), (gone_b, "deleted")])

    # bounded batches, each under the hour locks: one model by hand in batches of 200 touchpoints
    done = remove_model_rows(Database(url), gone_b, lock_timeout=5, touchpoints_per_batch=200)
    assert done.touchpoints_deleted == b_touches and done.batches >= 2 and not done.skipped
    execute(world, request)
    assert snapshot_rows(engine, SNAP.c.model_id.in_([gone_a, gone_b])) == ([], 0)
    assert snapshot_rows(engine, kept) == others  # other models' rows untouched, ids and all
    exported = pl.read_parquet(str(config.export_path / "touchpoints" / "**" / "*.parquet"), hive_partitioning=True)
    snaps_exported = pl.read_parquet(str(config.export_path / "snapshots" / "**" / "*.parquet"), hive_partitioning=True)
    assert not set(exported["model_id"].to_list()) & {gone_a, gone_b}
    assert not set(snaps_exported["model_id"].to_list()) & {gone_a, gone_b}
    assert snaps_exported.height == len(others[0])

    # the next incremental run neither brings them back nor misses anything
    run(url, HOURS[0], HOURS[-1])
    incremental = rows(engine)
    assert not {s[0] for s in incremental[0]} & {gone_a, gone_b}
    run(url, HOURS[0], HOURS[-1], full=True)
    assert rows(engine) == incremental


def test_a_settings_flip_rebuilds_that_user_only(world):
    engine, url = world["engine"], world["url"]
    run(url, HOURS[0], HOURS[-1])
    assert tick(world, T0) == []
    with engine.connect() as conn:  # a user with rows and no global settings row: multi-touch is on for them
        global_rows = select(SETTINGS_T.c.user_id).where(SETTINGS_T.c.scope_type == "global")
        model_id, user_id = conn.execute(
            select(SNAP.c.model_id, SNAP.c.user_id).where(SNAP.c.user_id.notin_(global_rows))
            .order_by(SNAP.c.user_id, SNAP.c.model_id).limit(1)).one()
    others = snapshot_rows(engine, SNAP.c.user_id != user_id)
    before = rows(engine)
    with engine.begin() as conn:
        conn.execute(insert(SETTINGS_T).values(user_id=user_id, scope_type="global", scope_id=None, model_id=model_id,
                                               multi_touch_enabled=0, effective_at=T0, created_at=T0, updated_at=T0))
    assert tick(world, T0 + 1) == []
    [request] = tick(world, T0 + 61)
    assert request.run_config["resources"]["scope"]["config"] == {"users": [user_id], "models": []}
    [(audited_user, audited_model, meta)] = audits(engine, "settings_change_detected")
    assert (audited_user, audited_model, meta["change"], meta["multi_touch_enabled"]) == \
        (user_id, None, "created", {"old": None, "new": 0})

    execute(world, request)
    after = rows(engine)
    assert after != before and {s[1] for s in set(after[0]) ^ set(before[0])} == {user_id}
    assert snapshot_rows(engine, SNAP.c.user_id != user_id) == others  # other users untouched
    run(url, HOURS[0], HOURS[-1], full=True)
    assert rows(engine) == after


def test_lookback_zero_launches_nothing_but_audits(world):
    engine = world["engine"]
    assert tick(world, T0, model_change_lookback_days=0) == []
    with engine.connect() as conn:
        model_id, user_id = conn.execute(select(MODELS.c.model_id, MODELS.c.user_id)
                                         .where(MODELS.c.model_type == "time_decay").limit(1)).one()
    reweight(engine, model_id, 5)
    with engine.begin() as conn:  # and one switched off: it keeps its rows, no run either
        conn.execute(update(MODELS).where(MODELS.c.model_type == "assisted", MODELS.c.user_id == user_id)
                     .values(is_active=0))
    assert tick(world, T0 + 1, model_change_lookback_days=0) == []
    assert tick(world, T0 + 100, model_change_lookback_days=0) == []
    changes = audits(engine, "model_change_detected")
    assert len(changes) == 2
    fields = {m: a["fields"] for _, m, a in changes}
    assert fields[model_id].keys() == {"weighting_config"}
    [switched] = [f for m, f in fields.items() if m != model_id]
    assert switched == {"is_active": {"old": 1, "new": 0}}


def test_switching_a_model_off_launches_nothing_and_the_writeback_drops_deleted_models(world):
    """Pure parts: rebuild scope and batching; the write-back's guard against deleted models."""
    state = change_diff.observe(
        [{"model_id": 1, "user_id": 7, "model_type": "linear", "weighting_config": None, "is_active": 0},
         {"model_id": 2, "user_id": 7, "model_type": "linear", "weighting_config": None, "is_active": 1},
         {"model_id": 3, "user_id": 8, "model_type": "linear", "weighting_config": None, "is_active": 1}], [])
    assert change_diff.rebuild_scope(change_diff.Pending(models={1}), state) is None
    assert change_diff.rebuild_scope(change_diff.Pending(models={3}, users={7}), state) == \
        change_diff.RebuildScope(users=[7, 8], models=[2, 3])
    assert [len(b) for b in batches([(1, 0, 30), (2, 0, 30), (3, 1, 90), (4, 2, 10)], 60)] == [2, 1, 1]

    engine = world["engine"]
    with engine.connect() as conn:
        live = conn.execute(select(MODELS.c.model_id, MODELS.c.user_id).limit(1)).one()
    owned = pl.DataFrame({"model_id": [live[0], 999999], "user_id": [live[1], live[1]]})
    group = pl.DataFrame({"model_id": [999999], "user_id": [live[1]], "date_hour": [START]})
    plan = ChunkWrite(hours=(START,), owned=owned, snapshots=group, credits=group, held=group.with_columns(reason=pl.lit("x")),
                      lookback_start=START, lookback_end=START + HOUR - 1)
    with engine.connect() as conn:
        kept = without_deleted_models(conn, plan)
    assert kept.owned["model_id"].to_list() == [live[0]] and kept.snapshots.height == 0 and kept.held.height == 0


def test_the_sensor_is_on_by_default_beside_its_cleanup_job():
    defs = build_definitions(settings())
    sensor = defs.resolve_sensor_def(mcs.SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 30
    assert {j.name for j in sensor.jobs} == {"attribution_job", mcs.CLEANUP_JOB}
    assert defs.resolve_job_def(mcs.CLEANUP_JOB).tags[mcs.KIND_TAG] == "model_cleanup"
