"""The source_changes asset: which (user, hour) of the run must be recomputed (D22).

Runs first. A (user, hour) whose inputs have the fingerprint recorded when its rows were last
written, and whose stored snapshot rows are still the rows written then, is not recomputed, not
rewritten and not re-exported: the hourly schedule's run over the trailing hours costs what changed.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import polars as pl

from attribution_pipeline.assets.hourly import Hourly, run_fields, run_hours, scope_users
from attribution_pipeline.assets.resources import RunScope
from attribution_pipeline.core import source_fingerprints as fp
from attribution_pipeline.core.click_reach import REACH_HOURS, click_starts
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.core.hours import HOUR, hour_ranges
from attribution_pipeline.core.model_rules import parse_model_row
from attribution_pipeline.logs import log_event
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import prosper_reads, read_replica, source_state
from attribution_pipeline.storage.database import Database, is_sqlite
from attribution_pipeline.storage.frame_io import read_frame
from attribution_pipeline.storage.stored_rows import stored_snapshots


def full_rewrite_reason(scope: RunScope, settings: Settings) -> str | None:
    """Why every (user, hour) of the run is recomputed and rewritten, or None (incremental)."""
    if scope.full:
        return "full rewrite (--full)"
    if scope.dry_run:
        return "dry run (compares everything)"
    if scope.models:
        return "full rewrite (a run of some models only)"
    if settings.journey_source != "clicks":
        return "full rewrite (journeys read from 202_conversion_touchpoints)"
    return None


def rules(settings: Settings) -> dict:
    """The settings a run's rows depend on, beside the database's rows; the scoped rows' settings
    only when scoped rows are written (D31), so that switching them on or off recomputes every pair.
    The visitor recipe (D32) makes the visitor journeys; a user's clicks of every campaign are in
    the click fingerprints already, so a visitor journey's new click recomputes its hours too."""
    scoped = ({"scope_types": list(settings.scope_types), "scoped_touchpoints": settings.scoped_touchpoints}
              if settings.scope_types else {})
    return {"lookback_seconds": settings.lookback_seconds, "touch_cap": settings.touch_cap,
            "journey_source": settings.journey_source, "visitor_key": list(settings.visitor_key), **scoped}


def compute_changes(db: Database, settings: Settings, scope: RunScope, hours: list[int], logger=None,
                    reader: Database | None = None) -> pl.DataFrame:
    """:data:`~attribution_pipeline.core.source_fingerprints.CHANGES` for the run's users and hours.
    The source scans read ``reader`` (the replica once the lag guard let it, D30); what the pipeline
    recorded and stored is read on the primary."""
    wanted = scope_users(db, scope)
    reader = reader or db

    def read_users():
        with reader.engine().connect() as conn:
            users = [] if wanted == [] else prosper_reads.active_users(conn, wanted)
            models = prosper_reads.model_rows(conn, users)
            user_fp = fp.user_fingerprints(users, models, source_state.settings_rows(conn, users),
                                           source_state.campaign_rows(conn, users) + scope_rows(conn, users, settings),
                                           rules(settings))
            return users, models, user_fp

    users, models, user_fp = db.retry.run(read_users, what="source fingerprints", logger=logger)
    full_users = sorted({s.user_id for s in map(parse_model_row, models) if s.is_valid and s.journey == "visitor"})
    conversions, clicks, starts, copies = source_parts(reader, users, hours, settings, full_users, logger=logger)
    current = fp.source_fingerprints(user_fp, conversions, clicks, starts, copies)

    def read():
        with db.engine().connect() as own:
            reason = full_rewrite_reason(scope, settings)
            if reason is None and not source_state.has_state_table(own):
                reason = "full rewrite (no attribution_source_state table: run `attribution init-db`)"
            if reason is not None:
                return fp.decide(current, pl.DataFrame(), pl.DataFrame(), full_reason=reason)
            owned = pl.DataFrame([{"model_id": s.model_id, "user_id": s.user_id}
                                  for s in map(parse_model_row, models) if s.is_valid],
                                 schema={"model_id": pl.Int64, "user_id": pl.Int64})
            stored = fp.stored_fingerprints(stored_snapshots(own, owned, hours, reader=read_frame, scopes="all"))
            return fp.decide(current, source_state.recorded(own, users, hours), stored, full_reason=None)

    return db.retry.run(read, what="source fingerprints", logger=logger)


def source_parts(reader: Database, users: list[int], hours: list[int], settings: Settings, full_users: list[int],
                 logger=None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The conversion parts of the run's hours, and the click parts, click windows and older copies
    their fingerprints sum (D38): first, at once, the conversions with their campaigns and the
    clicks per campaign from ``REACH_HOURS`` before the first hour; then, at once, the older clicks
    of the users with an hour whose window is the whole lookback, in two halves of whole hours, and
    the older copies of the clicks in reach-limited windows. Each read on its own connection and
    retried on its own, so the server's scans share its cores (MySQL/MariaDB; one read after the
    other on SQLite)."""
    lo, hi = hours[0], hours[-1] + HOUR - 1
    clicks_from, near = max(0, lo - settings.lookback_seconds), max(0, lo - REACH_HOURS * HOUR)
    sqlite = is_sqlite(reader.engine())

    def part(what: str, read_part):
        def read():
            with reader.engine().connect() as conn:
                return read_part(conn)

        return lambda: reader.retry.run(read, what=f"source fingerprints ({what})", logger=logger)

    def at_once(tasks: list) -> list:
        if sqlite or len(tasks) < 2:
            return [task() for task in tasks]
        with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="source-fingerprints") as pool:
            return list(pool.map(lambda task: task(), tasks))

    (conversions, campaigns), near_clicks = at_once([
        part("conversions", lambda conn: (source_state.conversion_parts(conn, users, lo, hi),
                                          source_state.conversion_campaigns(conn, users, lo, hi))),
        part("clicks", lambda conn: source_state.campaign_click_parts(conn, users, near, hi)),
    ])
    grid = pl.DataFrame({"user_id": users}, schema={"user_id": pl.Int64}).join(
        pl.DataFrame({"date_hour": hours}, schema={"date_hour": pl.Int64}), how="cross")
    starts = click_starts(grid, near_clicks, campaigns, cap=settings.touch_cap,
                          lookback_seconds=settings.lookback_seconds, full_users=full_users)
    far_users = sorted(set(starts.filter(pl.col("start") < near).get_column("user_id").to_list()))
    ranges = halves(clicks_from, near - 1) if far_users else []
    limited = starts.filter(pl.col("reach_limited"))
    copied_users, copied_from = sorted(set(limited.get_column("user_id").to_list())), limited.get_column("start").min()
    *far, copies = at_once([
        *[part("clicks", lambda conn, r=r: source_state.click_parts(conn, far_users, *r)) for r in ranges],
        part("click copies", lambda conn: source_state.older_copies(conn, copied_users, copied_from or 0, hi)),
    ])
    clicks = pl.concat([near_clicks.drop("campaign_id").cast(fp.PARTS), *far])
    return conversions, clicks, starts, copies


def halves(lo: int, hi: int) -> list[tuple[int, int]]:
    """``[lo, hi]`` cut at the hour boundary nearest its middle (a (user, hour) sum whole in one
    half), or whole when no boundary falls inside."""
    middle = (lo + (hi - lo + 1) // 2 + HOUR // 2) // HOUR * HOUR
    return [(lo, middle - 1), (middle, hi)] if lo < middle <= hi else [(lo, hi)]


def scope_rows(conn, users: list[int], settings: Settings) -> list[dict]:
    """The ppc accounts' networks when ``traffic_source`` rows are written (D31): the rows read them."""
    return source_state.account_rows(conn, users) if "traffic_source" in settings.scope_types else []


#: Run tag: the hours the run recomputes, as JSON ``[[first, last], ...]`` epoch ranges (absent:
#: every hour). The data checks record per-hour results only for them: an hour not recomputed
#: keeps the results of the run that wrote it.
RECOMPUTED_TAG = "attribution/recomputed_hours"
_MAX_RANGES = 50


def tag_recomputed(context: dg.AssetExecutionContext, hours: list[int], recomputed: list[int]) -> None:
    wanted = sorted(set(recomputed))
    if wanted == sorted(hours):
        return
    ranges = [list(r) for r in hour_ranges(wanted)]
    if len(ranges) <= _MAX_RANGES:
        context.instance.add_run_tags(context.run.run_id, {RECOMPUTED_TAG: json.dumps(ranges)})


def recomputed_hours(instance: dg.DagsterInstance, run_id: str) -> set[int] | None:
    """The hours run ``run_id`` recomputed (None: every hour of the run, or not known)."""
    run = instance.get_run_by_id(run_id)
    value = run.tags.get(RECOMPUTED_TAG) if run is not None else None
    if not value:
        return None
    return {h for first, last in json.loads(value) for h in range(first, last + HOUR, HOUR)}


def source_changes(context: dg.AssetExecutionContext, db: dg.ResourceParam[Database],
                   settings: dg.ResourceParam[Settings], scope: RunScope):
    """Per (user, hour) of the run: the fingerprint of everything its rows are computed from
    (conversions with their converting clicks, the clicks its journeys can reach, models,
    multi-touch settings, the pipeline's rules), and whether it is recomputed: when that
    fingerprint, or the stored rows, differ from what the pipeline recorded at its last write
    (D22). ``--full``, dry runs and runs of some models recompute everything."""
    hours = run_hours(context)
    choice = read_replica.choose_reader(db, logger=context.log)
    changes = compute_changes(db, settings, scope, hours, logger=context.log, reader=choice.db)
    counts = dict(changes.group_by("reason").len().iter_rows())
    recompute = changes.filter(pl.col("recompute"))
    tag_recomputed(context, hours, recompute.get_column("date_hour").to_list())
    log_event(context.log, "source_changes", stage="source_changes", user_hours=changes.height,
              recomputed=recompute.height, skipped=changes.height - recompute.height, **run_fields(context))
    yield dg.Output(
        HourlyFrame.from_frame(changes, hours, fp.CHANGES, chunk_size=settings.chunk_hours,
                               scoped=not scope.is_full, name="source_changes"),
        metadata={
            "user_hours": changes.height,
            "user_hours_recomputed": recompute.height,
            "user_hours_skipped": changes.height - recompute.height,
            "hours_recomputed": recompute.get_column("date_hour").n_unique(),
            "reasons": dg.MetadataValue.json(counts),
            **choice.metadata(),
        },
    )


def recomputed(changes: HourlyFrame, chunk: tuple[int, ...]) -> pl.DataFrame:
    """``date_hour, user_id, source_fp`` of the (user, hour) pairs of ``chunk`` to recompute."""
    return changes.read(chunk).filter(pl.col("recompute")).select("date_hour", "user_id", "source_fp")


def hours_to_export(db: Database, hours: list[int], *, records_state: bool,
                    logger=None) -> tuple[list[int], pl.DataFrame | None]:
    """The run's hours whose Parquet export is to be rewritten, and the state rows to mark exported
    afterwards (:func:`mark_exported`): hours with a (user, hour) written since their last export
    (D22). A run that records no state (``writeback.records_state``: ``--model``, stored journeys,
    no state table) exports all its hours, and returns None."""
    if not records_state:
        return hours, None

    def read():
        with db.engine().connect() as conn:
            return source_state.pending_exports(conn, hours)

    pending = db.retry.run(read, what="find hours to export", logger=logger)
    return sorted(set(pending.get_column("date_hour").to_list())), pending


def mark_exported(db: Database, pending: pl.DataFrame | None, exported: list[int], logger=None) -> int:
    """Note that the hours ``exported`` were published (their pending state rows)."""
    if pending is None or not exported:
        return 0
    done = pending.filter(pl.col("date_hour").is_in(exported))

    def write():
        with db.engine().begin() as conn:
            return source_state.mark_exported(conn, done)

    return db.retry.run(write, what="note exported hours", logger=logger)


def unmark_exported(db: Database, hours: list[int], logger=None) -> int:
    """Make ``hours`` pending again (their files disagree with MySQL): the next run exports them."""
    if not hours:
        return 0

    def write():
        with db.engine().begin() as conn:
            return source_state.unmark_exported(conn, hours) if source_state.has_state_table(conn) else 0

    return db.retry.run(write, what="note hours to export again", logger=logger)


def build(hourly: Hourly) -> list:
    return [hourly.frame_asset(kinds={"mysql"})(source_changes)]
