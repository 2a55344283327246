"""D35: a full run exports each chunk its write-back commits while the next chunk is written, reads
it back there and then, and leaves the export step only what is still pending; an early export
that fails or disagrees with MySQL is never lost."""

import polars as pl
from sqlalchemy import select

from attribution_pipeline.assets import writeback_exports
from attribution_pipeline.core.hours import hour_key
from attribution_pipeline.storage import tables
from pipeline import run
from test_export_speed import assert_same_files_as_read_from_mysql, export_metadata
from test_exports import HOURS, seeded

ONE_HOUR_CHUNKS = {"chunk_hours": 1}  # four write-back chunks: each exported while the next is written


def reconciliation_check(result):
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "export_reconciliation"]
    return check


def unexported(engine) -> set[int]:
    state = tables.source_state
    with engine.connect() as conn:
        rows = conn.execute(select(state.c.date_hour).where(
            state.c.export_token.is_(None) | (state.c.export_token != state.c.write_token))).all()
    return {int(r[0]) for r in rows}


def test_every_committed_chunk_is_exported_and_read_back_during_the_write_back(mysql_url, tmp_path):
    engine = seeded(mysql_url)
    result, report = run(mysql_url, HOURS[0], HOURS[-1], **ONE_HOUR_CHUNKS)
    assert report["chunks_committed"] == len(HOURS)
    meta = export_metadata(result)
    assert meta["hours_exported_by_writeback"] == meta["hours_exported"] == len(HOURS)
    assert meta["export_chunks"] == len(HOURS) and meta["touchpoints_from_run"] == meta["rows_touchpoints"] > 0
    check = reconciliation_check(result)
    assert check.passed and check.metadata["hours_checked"].value == len(HOURS)
    assert unexported(engine) == set()
    assert_same_files_as_read_from_mysql(mysql_url, HOURS, tmp_path)
    # the same run with the export step doing it all: the same files
    result, _ = run(mysql_url, HOURS[0], HOURS[-1], full=True, export_during_writeback=False, **ONE_HOUR_CHUNKS)
    meta = export_metadata(result)
    assert meta["hours_exported_by_writeback"] == 0 and meta["hours_exported"] == len(HOURS)
    assert_same_files_as_read_from_mysql(mysql_url, HOURS, tmp_path)


def test_an_hour_that_disagrees_once_exported_fails_the_check_and_is_exported_again(mysql_url, monkeypatch):
    engine = seeded(mysql_url)
    original = writeback_exports.reconcile

    def one_hour_disagrees(engine_, root, hours):
        wrong = original(engine_, root, hours)
        extra = [(h, "snapshots file has 1 rows, MySQL 2") for h in hours if h == HOURS[1]]
        return pl.concat([wrong, pl.DataFrame(extra, schema=wrong.schema, orient="row")])

    monkeypatch.setattr(writeback_exports, "reconcile", one_hour_disagrees)
    result, _ = run(mysql_url, HOURS[0], HOURS[-1], **ONE_HOUR_CHUNKS)
    check = reconciliation_check(result)
    assert not check.passed and check.metadata["failing_hours"].value == [hour_key(HOURS[1])]
    assert check.metadata["hours_checked"].value == len(HOURS)
    assert unexported(engine) == {HOURS[1]}  # the next run exports it again
    monkeypatch.setattr(writeback_exports, "reconcile", original)
    result, _ = run(mysql_url, HOURS[0], HOURS[-1], **ONE_HOUR_CHUNKS)
    meta = export_metadata(result)
    assert meta["hours_exported"] == 1  # that hour alone (found pending as its chunk committed)
    assert reconciliation_check(result).passed and unexported(engine) == set()


def test_an_export_that_fails_during_the_write_back_is_left_to_the_export_step(mysql_url, monkeypatch, tmp_path):
    engine = seeded(mysql_url)
    original = writeback_exports.export_chunk

    def full_disk_for_one_hour(engine_, hours, **kw):
        if HOURS[2] in hours:
            raise OSError(28, "No space left on device")
        return original(engine_, hours, **kw)

    monkeypatch.setattr(writeback_exports, "export_chunk", full_disk_for_one_hour)
    result, report = run(mysql_url, HOURS[0], HOURS[-1], **ONE_HOUR_CHUNKS)
    assert report["chunks_committed"] == len(HOURS) and not report["rolled_back_chunks"]  # the write-back goes on
    meta = export_metadata(result)
    assert meta["hours_exported"] == len(HOURS) and meta["hours_exported_by_writeback"] == len(HOURS) - 1
    check = reconciliation_check(result)
    assert check.passed and check.metadata["hours_checked"].value == len(HOURS)
    assert unexported(engine) == set()
    assert_same_files_as_read_from_mysql(mysql_url, HOURS, tmp_path)


def test_a_chunks_export_starts_as_the_next_chunk_loads_its_touchpoints(mysql_url, monkeypatch):
    """The next chunk's steps before its load run without the export beside them: a committed
    chunk's export starts when the next chunk's touchpoints start loading (the last one's when the
    write-back waits for it at the end)."""
    from attribution_pipeline.storage import hour_rewrite

    seeded(mysql_url)
    events = []
    load, export = hour_rewrite.bulk_load, writeback_exports.export_chunk

    def recorded_load(conn, table, df, **kw):
        if table.name == "202_attribution_touchpoints" and df.height:
            events.append(("load", int(df.get_column("snapshot_id").min())))
        return load(conn, table, df, **kw)

    def recorded_export(engine_, hours, **kw):
        events.append(("export", tuple(hours)))
        return export(engine_, hours, **kw)

    monkeypatch.setattr(hour_rewrite, "bulk_load", recorded_load)
    monkeypatch.setattr(writeback_exports, "export_chunk", recorded_export)
    _, report = run(mysql_url, HOURS[0], HOURS[-1], **ONE_HOUR_CHUNKS)
    assert report["chunks_committed"] == len(HOURS)
    kinds = [kind for kind, _ in events]
    assert kinds == ["load", "load", "export", "load", "export", "load", "export", "export"]
    assert [hours for kind, hours in events if kind == "export"] == [(h,) for h in HOURS]


def test_a_chunk_with_no_touchpoints_to_load_lets_the_queued_export_start_as_its_write_starts(mysql_url, monkeypatch):
    """An hourly run that finds its hours unchanged loads nothing: each chunk's write lets the
    queued export start as it begins, instead of the export waiting for the next commit."""
    from attribution_pipeline.assets import writeback_run

    seeded(mysql_url)
    run(mysql_url, HOURS[0], HOURS[-1], **ONE_HOUR_CHUNKS)
    events = []
    write, start = writeback_run.write_chunk, writeback_exports.CommittedExports.start

    def recorded_write(engine_, plan, **kw):
        events.append(("write", plan.hours, plan.credits.height))
        return write(engine_, plan, **kw)

    def recorded_start(self):
        events.append(("start",))
        return start(self)

    monkeypatch.setattr(writeback_run, "write_chunk", recorded_write)
    monkeypatch.setattr(writeback_exports.CommittedExports, "start", recorded_start)
    _, report = run(mysql_url, HOURS[0], HOURS[-1], **ONE_HOUR_CHUNKS)
    assert report["user_hours_recomputed"] == 0 and report["chunks_committed"] == len(HOURS)
    assert events == [e for h in HOURS for e in (("write", (h,), 0), ("start",))]
