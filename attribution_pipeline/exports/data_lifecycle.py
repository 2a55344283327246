"""Retention and erasure across every store the pipeline writes (D27), without Dagster: the
retention job, ``attribution retention`` and ``attribution erase`` call these.

Stores: MySQL (``storage/purge_rows.py``, ``storage/visitor_rows.py``), the export queue's rows
and files, the Parquet exports, the frames and the run reports (``exports/purge_files.py``).
MySQL rows go first, then the files: an export that read MySQL before the purge holds the export
lock until it published, and the Parquet purge takes that lock after it.
"""

import time
from dataclasses import dataclass, field

import polars as pl

from attribution_pipeline.errors import AttributionError
from attribution_pipeline.exports.columns import EXPORT_TABLES
from attribution_pipeline.exports.purge_files import (
    cutoff_rule,
    drop_export_rows,
    export_rows_to_drop,
    frames_before,
    ids_rule,
    remove_export_files,
    remove_frames_before,
    scrub_frames,
    scrub_reports,
)
from attribution_pipeline.logs import log_event, stdlib_logger
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import purge_rows, retention_windows, tables, visitor_rows
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.markov_fits import delete_model_fits
from attribution_pipeline.storage.retention_windows import Window


class VisitorSourceRemains(AttributionError):
    """An erasure of clicks or conversions whose Prosper202 rows still exist, without ``--include-source``."""


@dataclass
class UserRetention:
    window: Window
    counts: dict[str, int]  # rows per MySQL store (would be) removed, export files, Parquet rows
    deleted: bool


@dataclass
class RetentionOutcome:
    now: int
    dry_run: bool
    users: list[UserRetention] = field(default_factory=list)
    parquet: dict[str, int] = field(default_factory=dict)  # rows per export table, hours rewritten/removed
    frame_files: int = 0

    @property
    def deleted(self) -> bool:
        return any(u.deleted for u in self.users)

    def totals(self, deleted: bool) -> dict[str, int]:
        out: dict[str, int] = {}
        for user in self.users:
            if user.deleted == deleted:
                for store, n in user.counts.items():
                    out[store] = out.get(store, 0) + n
        return out

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = []
        for u in self.users:
            what = ", ".join(f"{k} {v}" for k, v in u.counts.items() if v) or "nothing"
            if u.window.deletes:
                out.append(f"user {u.window.user_id} (window {u.window.days} days, {u.window.source}): {verb} {what}")
            else:
                out.append(f"user {u.window.user_id} (no window; a {u.window.days}-day window would remove): {what}")
        out.append(f"frames: {'removed' if self.deleted else 'would remove'} {self.frame_files} file(s)")
        return out

    def metadata(self) -> dict:
        return {"dry_run": self.dry_run, "users_purged": sum(u.deleted for u in self.users),
                "removed": self.totals(True), "not_configured_would_remove": self.totals(False),
                "frame_files": self.frame_files, "parquet": self.parquet,
                "windows": {str(u.window.user_id): f"{u.window.days}d {u.window.source}" for u in self.users}}


def _export_counts(settings: Settings, windows: list[Window]) -> dict[int, int]:
    """Parquet rows each user's window drops (all tables)."""
    found = export_rows_to_drop(settings.export_path, cutoff_rule({w.user_id: w.before for w in windows}))
    return {int(u): int(n) for u, n in found.group_by("user_id").agg(n=pl.col("rows").sum()).iter_rows()}


def run_retention(db: Database, settings: Settings, *, now: int | None = None, dry_run: bool = False,
                  logger=None) -> RetentionOutcome:
    """Purge, per user with a window, every row and file older than it; users without a window
    (and every user in a dry run) are only counted."""
    now = int(time.time()) if now is None else now
    logger = logger or stdlib_logger
    engine = db.engine()
    with engine.connect() as conn:
        windows = retention_windows.user_windows(conn, settings.retention_days, now)
        counts = {w.user_id: purge_rows.count_rows(conn, w.user_id, w.before) for w in windows}
    parquet = _export_counts(settings, windows)
    outcome = RetentionOutcome(now=now, dry_run=dry_run)
    purging = [w for w in windows if w.deletes and not dry_run]
    for window in windows:
        user_counts = {**counts[window.user_id], "parquet_rows": parquet.get(window.user_id, 0)}
        if window in purging:
            user_counts = purge_user(db, settings, window, user_counts, now=now, logger=logger)
        outcome.users.append(UserRetention(window, user_counts, window in purging))
    reported = [w for w in windows if w.deletes] or windows  # frames: the shortest window's cutoff
    if purging:
        outcome.parquet = drop_export_rows(settings.export_path, cutoff_rule({w.user_id: w.before for w in purging}))
        outcome.frame_files = remove_frames_before(settings.frames_path, max(w.before for w in purging))
    elif reported:
        outcome.frame_files = len(frames_before(settings.frames_path, max(w.before for w in reported)))
    log_event(logger, "retention_done", dry_run=dry_run, users_purged=len(purging), removed=outcome.totals(True),
              not_configured_would_remove=outcome.totals(False), frame_files=outcome.frame_files)
    return outcome


def purge_user(db: Database, settings: Settings, window: Window, counted: dict[str, int], *, now: int,
               logger) -> dict[str, int]:
    """Delete one user's rows older than its window, its old export rows and files; audit it."""
    engine = db.engine()
    removed = purge_rows.purge_user_rows(engine, window.user_id, window.before,
                                         lock_timeout=settings.lock_timeout_seconds, retry=db.retry, logger=logger)
    with engine.connect() as conn:
        exports = purge_rows.export_rows(conn, window.user_id, window.before)
    removed["export_rows"] = purge_rows.delete_export_rows(engine, [e for e, _ in exports])
    removed["export_files"] = remove_export_files(settings.export_files_path, exports)
    removed["parquet_rows"] = counted.get("parquet_rows", 0)
    if any(removed.values()):
        with engine.begin() as conn:
            retention_windows.record_purge(conn, window, removed, now=now)
    return removed


# ------------------------------------------------------------------------------------------
# erasure
# ------------------------------------------------------------------------------------------


def erase_user(db: Database, settings: Settings, user: int, *, logger=None) -> dict[str, int]:
    """Remove everything of ``user`` from every store the pipeline writes; one log line (no audit
    row: the user's audit rows are erased too)."""
    engine = db.engine()
    with engine.connect() as conn:
        models = purge_rows.user_model_ids(conn, user)
        exports = purge_rows.export_rows(conn, user, None, everything=True)
    counts = purge_rows.purge_user_rows(engine, user, None, lock_timeout=settings.lock_timeout_seconds,
                                        retry=db.retry, logger=logger)
    counts["export_rows"] = purge_rows.delete_export_rows(engine, [e for e, _ in exports])
    counts["export_files"] = remove_export_files(settings.export_files_path, exports)
    counts["audit_rows"] = purge_rows.delete_audit_rows(engine, user)
    counts["retention_rows"] = _forget_window(engine, user)
    counts["markov_fits"] = _forget_fits(engine, user)
    rule = ids_rule({"user_id": [user]})
    parquet = drop_export_rows(settings.export_path, rule)
    counts["parquet_rows"] = sum(parquet.get(t, 0) for t in EXPORT_TABLES)
    counts.update(scrub_frames(settings.frames_path, rule))
    counts["reports_changed"] = scrub_reports(settings.reports_path, user, models)
    log_event(logger or stdlib_logger, "user_erased", user_id=user, **counts)
    return counts


def _forget_window(engine, user: int) -> int:
    windows = tables.retention_windows
    with engine.begin() as conn:
        if not purge_rows.has_table(conn, windows):
            return 0
        return conn.execute(windows.delete().where(windows.c.user_id == user)).rowcount


def _forget_fits(engine, user: int) -> int:
    """The user's Markov fits (D32): channel ids and counts of the user's visitors' paths."""
    with engine.begin() as conn:
        if not purge_rows.has_table(conn, tables.markov_fits):
            return 0
        return delete_model_fits(conn, user_id=user)


def visitor_scope(db: Database, settings: Settings, clicks, conversions) -> visitor_rows.VisitorScope:
    """Where the visitor's ids are: MySQL, and the Parquet exports' (user, hour)s holding them."""
    with db.engine().connect() as conn:
        scope = visitor_rows.visitor_scope(conn, clicks, conversions)
    in_exports = export_rows_to_drop(settings.export_path, ids_rule({"conv_id": scope.conversions,
                                                                     "click_id": scope.clicks}))
    return scope.with_pairs(in_exports.select("user_id", "date_hour"))


def refuse_while_source(scope: visitor_rows.VisitorScope, include_source: bool) -> None:
    """:class:`VisitorSourceRemains` while the visitor's source rows exist, without ``include_source``."""
    if scope.has_source and not include_source:
        raise VisitorSourceRemains(
            f"{scope.source_clicks} click row(s) and {scope.source_conversions} conversion row(s) of this visitor are "
            "still in 202_clicks / 202_conversion_logs: the next run would compute them again. Delete them in "
            "Prosper202 first, or pass --include-source (needs DELETE on 202_clicks and 202_conversion_logs)")


def erase_visitor(db: Database, settings: Settings, scope: visitor_rows.VisitorScope, *, include_source: bool,
                  now: int | None = None, logger=None) -> dict[str, int]:
    """Remove the visitor's clicks and conversions from touchpoints, journeys, exports and frames
    (and, with ``include_source``, from 202_clicks and 202_conversion_logs). Refuses while the
    source rows exist without ``include_source``: the next run would compute them again. The
    caller rebuilds ``scope.pairs``."""
    refuse_while_source(scope, include_source)
    now = int(time.time()) if now is None else now
    engine = db.engine()
    counts = visitor_rows.erase_visitor_rows(engine, scope, include_source=include_source,
                                             lock_timeout=settings.lock_timeout_seconds)
    rule = ids_rule({"conv_id": scope.conversions, "click_id": scope.clicks})
    parquet = drop_export_rows(settings.export_path, rule)
    counts["parquet_rows"] = sum(parquet.get(t, 0) for t in EXPORT_TABLES)
    counts.update(scrub_frames(settings.frames_path, rule))
    counts["audit_rows"] = visitor_rows.record_erasure(engine, scope, counts, now=now)
    log_event(logger or stdlib_logger, "visitor_erased", clicks=len(scope.clicks), conversions=len(scope.conversions),
              users=scope.pairs.get_column("user_id").n_unique(), **counts)
    return counts
