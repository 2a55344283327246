"""The exports without re-reading what the run just wrote (issue 17): the touchpoints of the groups
the run's write-back wrote come from its credits frame, checked against the stored snapshot rows;
every other row (other users, inactive models, held groups, rows rewritten since) is read from
MySQL; the files are byte for byte those of an export read entirely from MySQL. Export chunks are
sized by touchpoint rows, any subset of hours can be exported and reconciled alone, and the data
checks of one asset read its stored frame once."""

from decimal import Decimal

import polars as pl
import pytest
from sqlalchemy import bindparam, func, select, text, update

import scenarios
from attribution_pipeline.assets import check_kit, parquet_exports, writeback_exports
from attribution_pipeline.core import frames
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.exports import layout, runner
from attribution_pipeline.exports.build import BUILD_ROWS
from attribution_pipeline.exports.columns import TABLES
from attribution_pipeline.exports.from_run import GROUP, RunWrites, run_touches, written_snapshots
from attribution_pipeline.exports.reconcile import reconcile
from attribution_pipeline.io_managers.hourly_parquet import stored_frame
from attribution_pipeline.storage import database, tables
from pipeline import HOUR, run, settings
from test_exports import CONFIG, HOURS, root, seeded

H = 1_717_232_400  # a whole hour
LO, HI = H, H + 2 * HOUR - 1  # the run's window


def snapshot(sid, model, user, hour=H, clicks=2, revenue="1.5000", lo=LO, hi=HI):
    return {"snapshot_id": sid, "model_id": model, "user_id": user, "date_hour": hour, "attributed_clicks": clicks,
            "attributed_conversions": 1, "attributed_revenue": Decimal(revenue), "attributed_cost": Decimal("0.1000"),
            "lookback_start": lo, "lookback_end": hi}


STORED = {"snapshot_id": pl.Int64, "model_id": pl.Int64, "user_id": pl.Int64, "date_hour": pl.Int64,
          "attributed_clicks": pl.Int64, "attributed_conversions": pl.Int64, "attributed_revenue": pl.Decimal(12, 4),
          "attributed_cost": pl.Decimal(12, 4), "lookback_start": pl.Int64, "lookback_end": pl.Int64}


def frame_of(rows, schema):
    return pl.DataFrame(rows, schema=schema)


def computed_of(stored: pl.DataFrame) -> pl.DataFrame:
    """What the run computed for the groups of ``stored`` (frames.SNAPSHOTS columns it compares)."""
    return stored.select(*GROUP, "attributed_clicks", "attributed_conversions", "attributed_revenue", "attributed_cost")


def test_only_stored_rows_the_run_wrote_and_nobody_rewrote_are_taken_from_its_frames():
    stored = frame_of([
        snapshot(1, 10, 1),  # the run's own row
        snapshot(2, 11, 1, lo=LO + 17),  # a raw window: the PHP engine wrote it since
        snapshot(3, 12, 1, revenue="9.9999"),  # edited since (the run computed 1.5000, below)
        snapshot(4, 13, 1), snapshot(5, 13, 1),  # a duplicated key (PHP, Q1): neither is the run's
        snapshot(6, 14, 1),  # held by the run: its stored row is an older one
        snapshot(7, 15, 2),  # a user whose rows this run did not compute
        snapshot(8, 16, 3),  # another run wrote this (user, hour) since (its token)
        snapshot(9, 17, 1, hour=H + HOUR),  # an hour the run did not commit itself
    ], STORED)
    computed = computed_of(stored.filter(pl.col("user_id") != 2)).with_columns(
        attributed_revenue=pl.when(pl.col("model_id") == 12).then(pl.lit(Decimal("1.5000")))
        .otherwise(pl.col("attributed_revenue")).cast(pl.Decimal(12, 4)))
    held = pl.DataFrame({"model_id": [14], "user_id": [1], "date_hour": [H]})
    tokens = pl.DataFrame({"user_id": [1, 3], "date_hour": [H, H], "write_token": ["run-a", "run-b"]})
    got = written_snapshots(stored, computed, hours=[H], window=(LO, HI), held=held, tokens=tokens, token="run-a")
    assert got.get_column("snapshot_id").to_list() == [1]
    # without a write token (the run recorded none, D22) the (user, hour) of user 3 is the run's too
    got = written_snapshots(stored, computed, hours=[H], window=(LO, HI), held=held)
    assert sorted(got.get_column("snapshot_id").to_list()) == [1, 8]


def test_the_run_credits_cover_a_snapshot_only_when_they_count_its_clicks():
    written = pl.DataFrame({"snapshot_id": [1, 2, 3], "model_id": [10, 11, 12], "user_id": [1, 1, 1],
                            "date_hour": [H, H, H], "attributed_clicks": [2, 2, 0]})
    credit = {"date_hour": H, "user_id": 1, "conv_id": 7, "credit": 0.5, "revenue": 1.0, "cost": 0.1,
              "credit_stored": Decimal("0.50000")}
    credits = pl.DataFrame([
        {**credit, "model_id": 10, "position": 0, "click_id": 70},
        {**credit, "model_id": 10, "position": 1, "click_id": 71},
        {**credit, "model_id": 11, "position": 0, "click_id": 70},  # one credit for two clicks: not the run's rows
    ], schema=frames.CREDITS)
    touches, covered = run_touches(credits, written)
    assert sorted(covered.get_column("snapshot_id").to_list()) == [1, 3]  # 3: written without touchpoints
    assert touches.select("snapshot_id", "click_id", "position", "credit").rows() == [
        (1, 70, 0, Decimal("0.50000")), (1, 71, 1, Decimal("0.50000"))]


def mysql_touchpoints(url, hours) -> list[tuple]:
    """(snapshot_id, conv_id, click_id, position, credit) of every global touchpoint of ``hours``."""
    sql = text("SELECT t.snapshot_id, t.conv_id, t.click_id, t.position, t.credit FROM `202_attribution_touchpoints` t "
               "JOIN `202_attribution_snapshots` s ON s.snapshot_id = t.snapshot_id "
               "WHERE s.scope_type = 'global' AND s.date_hour IN :hours").bindparams(bindparam("hours", expanding=True))
    with database.make_engine(url).connect() as conn:
        return sorted((int(a), int(b), int(c), int(d), Decimal(e)) for a, b, c, d, e in conn.execute(sql, {"hours": hours}))


def exported_touchpoints(folder, hours) -> list[tuple]:
    df = pl.concat([layout.read_part(folder, "touchpoints", h) for h in hours])
    return sorted(df.select("snapshot_id", "conv_id", "click_id", "position", "credit").rows())


def export_metadata(result) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("attribution_exports")[0].metadata.items()}


def assert_same_files_as_read_from_mysql(url, hours, tmp_path):
    """The run's export files equal, byte for byte, an export of the same hours read from MySQL."""
    journeys = stored_frame(settings().frames_path, "journeys", hours)
    out = tmp_path / f"mysql-{len(list(tmp_path.iterdir()))}"
    runner.export_chunk(database.make_engine(url), hours, root=out, journeys=journeys, users=None, recompute=None)
    for table in TABLES:
        for hour in hours:
            mine, theirs = layout.part_path(root(), table, hour), layout.part_path(out, table, hour)
            assert mine.read_bytes() == theirs.read_bytes(), (table, hour)


def test_the_export_takes_the_run_touchpoints_from_its_frames_byte_for_byte(mysql_url, monkeypatch, tmp_path):
    engine = seeded(mysql_url)
    for module in (parquet_exports, writeback_exports):  # several chunks, by rows
        monkeypatch.setattr(module, "chunk_rows", lambda budget_mb: 1500)
    result, _ = run(mysql_url, HOURS[0], HOURS[-1])
    meta = export_metadata(result)
    assert meta["touchpoints_from_run"] == meta["rows_touchpoints"] > 5000 and meta["touchpoints_from_mysql"] == 0
    assert meta["export_chunks"] == 4  # about 1,900 touchpoints an hour: one hour per chunk
    assert meta["hours_exported_by_writeback"] == meta["hours_exported"] == len(HOURS)  # as each chunk committed (D35)
    assert_same_files_as_read_from_mysql(mysql_url, HOURS, tmp_path)
    # an inactive model keeps its rows (D9), a --user run rewrites user 1 only: user 2's rows and the
    # inactive model's come from MySQL, user 1's from the run's frames
    m = tables.attribution_models
    with engine.begin() as conn:
        model_id = conn.execute(select(func.min(m.c.model_id)).where(m.c.model_type == "linear", m.c.user_id == 1)).scalar()
        conn.execute(update(m).where(m.c.model_id == model_id).values(is_active=0))
    result, _ = run(mysql_url, HOURS[0], HOURS[-1], users=[1], full=True)
    meta = export_metadata(result)
    assert meta["touchpoints_from_run"] > 0 and meta["touchpoints_from_mysql"] > 0
    assert meta["touchpoints_from_run"] + meta["touchpoints_from_mysql"] == meta["rows_touchpoints"]
    assert exported_touchpoints(root(), HOURS) == mysql_touchpoints(mysql_url, HOURS)
    assert_same_files_as_read_from_mysql(mysql_url, HOURS, tmp_path)


@pytest.mark.parametrize("during_writeback", [True, False], ids=["exported-as-committed", "export-step"])
def test_rows_rewritten_after_the_write_back_are_read_from_mysql(mysql_url, monkeypatch, during_writeback):
    """Between a chunk's commit and its export (D35: in the write-back, as the chunk commits, or in
    the export step), other writers rewrite some of its rows: those are exported from MySQL."""
    engine = seeded(mysql_url)
    s, t, state = tables.attribution_snapshots, tables.attribution_touchpoints, tables.source_state
    module, name = (writeback_exports, "RunWrites") if during_writeback else (parquet_exports, "run_writes")
    original = getattr(module, name)
    rewritten = {}

    def writers_commit_meanwhile(*args, **kwargs):
        """Between the write-back's commit and the export: the PHP engine rewrites one snapshot (its
        raw window, another credit) and another run rewrites user 2's rows of an hour (its token)."""
        found = original(*args, **kwargs)
        with engine.begin() as conn:
            sid = conn.execute(select(func.min(s.c.snapshot_id)).where(s.c.date_hour == HOURS[0], s.c.user_id == 1)).scalar()
            conn.execute(update(s).where(s.c.snapshot_id == sid).values(lookback_start=HOURS[0] - 1234))
            tid = conn.execute(select(func.min(t.c.touchpoint_id)).where(t.c.snapshot_id == sid)).scalar()
            conn.execute(update(t).where(t.c.touchpoint_id == tid).values(credit=Decimal("0.12345")))
            conn.execute(update(state).where(state.c.user_id == 2, state.c.date_hour == HOURS[1])
                         .values(write_token="another-run"))
            other = select(s.c.snapshot_id).where(s.c.user_id == 2, s.c.date_hour == HOURS[1])
            rewritten["touches"] = conn.execute(select(func.count()).where(
                (t.c.snapshot_id == sid) | t.c.snapshot_id.in_(other))).scalar()
        return found

    monkeypatch.setattr(module, name, writers_commit_meanwhile)
    result, _ = run(mysql_url, HOURS[0], HOURS[-1], export_during_writeback=during_writeback)
    meta = export_metadata(result)
    assert meta["touchpoints_from_mysql"] == rewritten["touches"] > 0
    assert exported_touchpoints(root(), HOURS) == mysql_touchpoints(mysql_url, HOURS)
    assert Decimal("0.12345") in {row[4] for row in exported_touchpoints(root(), HOURS[:1])}
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "export_reconciliation"]
    assert check.passed


def test_held_groups_keep_their_stored_rows_in_the_export(mysql_url):
    """A group the write-back held keeps its stored rows (D19): they are exported from MySQL, not
    from what the run computed for it."""
    T = scenarios.T
    with database.make_engine(mysql_url).begin() as conn:
        scenarios.load_section_4_6(conn)
    hours = [T, T + HOUR, T + 2 * HOUR]
    run(mysql_url, T, hours[-1], journey_source="stored")
    with database.make_engine(mysql_url).begin() as conn:  # conversion 3's click stored twice: held
        scenarios.add_stored_journey(conn, 3, [(201, T + 3650), (201, T + 3650)])
    result, report = run(mysql_url, T, hours[-1], journey_source="stored")
    assert report["held_groups"] > 0 and {h["hour"] for h in report["held"]} == {"2024-06-01-10:00"}
    meta = export_metadata(result)
    assert meta["touchpoints_from_mysql"] == len(mysql_touchpoints(mysql_url, [T + HOUR])) > 0
    assert meta["touchpoints_from_run"] == len(mysql_touchpoints(mysql_url, [T, T + 2 * HOUR]))
    assert exported_touchpoints(root(), hours) == mysql_touchpoints(mysql_url, hours)


def test_a_subset_of_hours_is_exported_and_reconciled_alone(mysql_url):
    """Only the hours given are rewritten (the others keep their files) and reconciled."""
    engine = seeded(mysql_url)
    run(mysql_url, HOURS[0], HOURS[-1])
    before = {(t, h): layout.part_path(root(), t, h).stat().st_mtime_ns for t in TABLES for h in HOURS}
    subset = [HOURS[1], HOURS[3]]  # not contiguous
    journeys = stored_frame(settings().frames_path, "journeys", HOURS)
    run_frames = RunWrites(credits=stored_frame(settings().frames_path, "credits", HOURS),
                           snapshots=stored_frame(settings().frames_path, "snapshots", HOURS),
                           hours=frozenset(HOURS), window=(HOURS[0], HOURS[-1] + HOUR - 1),
                           held=pl.DataFrame(schema={k: pl.Int64 for k in GROUP}))
    expected = {h: layout.read_part(root(), "touchpoints", h) for h in subset}

    def read(chunk):
        return runner.read_chunk(engine, chunk, root=root(), journeys=journeys, users=None, recompute=None,
                                 run=run_frames)

    done = list(runner.export_chunks([tuple(subset)], root=root(), read=read))
    assert done[0][1].sources["touchpoints_from_run"] == sum(df.height for df in expected.values())
    for (table, hour), mtime in before.items():
        changed = layout.part_path(root(), table, hour).stat().st_mtime_ns != mtime
        assert changed == (hour in subset), (table, hour)
    for hour, df in expected.items():
        assert layout.read_part(root(), "touchpoints", hour).equals(df)
    # an hour outside the subset is damaged: the subset still reconciles, the whole range does not
    layout.write_part(root(), "snapshots", HOURS[0], layout.read_part(root(), "snapshots", HOURS[0]).head(1))
    assert reconcile(engine, root(), subset).height == 0
    assert reconcile(engine, root(), HOURS).get_column("date_hour").to_list() == [HOURS[0]]


def test_export_chunks_hold_at_most_the_rows_the_memory_budget_allows():
    hours = [H + i * HOUR for i in range(6)]
    rows = {hours[0]: 3, hours[1]: 9, hours[2]: 2, hours[4]: 4}
    assert runner.row_chunks(hours, rows, max_rows=5, max_hours=168) == [
        (hours[0],), (hours[1],), (hours[2], hours[3]), (hours[4], hours[5])]
    assert runner.row_chunks(hours, {}, max_rows=5, max_hours=4) == [tuple(hours[:4]), tuple(hours[4:])]
    assert runner.row_chunks([hours[5], hours[1]], rows, max_rows=100, max_hours=168) == [(hours[1], hours[5])]
    assert runner.chunk_rows(512) == BUILD_ROWS  # a small budget still builds a part
    assert runner.chunk_rows(2048) > runner.chunk_rows(1536) > BUILD_ROWS
    assert runner.chunk_rows(1536) * runner.BYTES_PER_TOUCH_ROW <= (1536 - runner.EXPORT_BUILD_MIB) * 2**20


def test_the_checks_of_one_asset_read_its_stored_frame_once(monkeypatch):
    reads = []
    hours = [H + i * HOUR for i in range(5)]
    data = pl.DataFrame({"date_hour": [h for h in hours for _ in range(3)], "x": list(range(15))})

    def produce(chunk, _stats):
        reads.append(chunk)
        return data.filter(pl.col("date_hour").is_in(list(chunk)))

    def frame():  # what the IO manager gives each check: a new frame object over the same files
        return HourlyFrame(hours, produce, {"date_hour": pl.Int64, "x": pl.Int64}, chunks=[hours[:2], hours[2:]])

    cache = check_kit.FrameChunks(limit_bytes=10**6)
    first = [df for _, df in cache.chunks(("run-1", "journeys", tuple(hours)), frame())]
    again = [df for _, df in cache.chunks(("run-1", "journeys", tuple(hours)), frame())]
    assert reads == [tuple(hours[:2]), tuple(hours[2:])] and cache.hits == 2
    assert all(a.equals(b) for a, b in zip(first, again)) and pl.concat(again).equals(data)
    list(cache.chunks(("run-2", "journeys", tuple(hours)), frame()))  # another run reads its own frame
    assert len(reads) == 4
    small = check_kit.FrameChunks(limit_bytes=first[0].estimated_size())  # room for the first chunk only
    reads.clear()
    for _ in range(2):
        list(small.chunks(("run-1", "journeys", tuple(hours)), frame()))
    assert reads == [tuple(hours[:2]), tuple(hours[2:]), tuple(hours[2:])]
