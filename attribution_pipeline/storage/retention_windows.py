"""Each user's retention window (D27): the ``attribution_retention`` row of the user, else
``ATTRIBUTION_RETENTION_DAYS``, else none (retention is off until configured).

A user's row with ``days = 0`` keeps that user's rows for ever, whatever the global window. A
window of ``N`` days keeps every hour from ``floor_hour(now) - N days`` on: the cutoff.
"""

import json
from dataclasses import dataclass

import polars as pl

from sqlalchemy import select
from sqlalchemy.engine import Connection

from attribution_pipeline.core.hours import floor_hour
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.purge_rows import has_table

DAY = 86400
#: The window an unconfigured run reports about (what a 30-day window would remove).
REPORT_DAYS = 30
OFF, USER, GLOBAL = "off", "user", "global"

WINDOWS = tables.retention_windows


@dataclass(frozen=True)
class Window:
    user_id: int
    days: int  # the window applied (the report window when ``source`` is "off")
    source: str  # "user" (its row), "global" (ATTRIBUTION_RETENTION_DAYS) or "off" (report only)
    before: int  # the cutoff: hours strictly before it are older than the window

    @property
    def deletes(self) -> bool:
        return self.source != OFF


def cutoff(now: int, days: int) -> int:
    """The first hour a window of ``days`` keeps."""
    return floor_hour(now) - days * DAY


def overrides(conn: Connection) -> dict[int, int]:
    """``user_id -> days`` of the ``attribution_retention`` table (empty without the table)."""
    if not has_table(conn, WINDOWS):
        return {}
    return {int(u): int(d) for u, d in conn.execute(select(WINDOWS.c.user_id, WINDOWS.c.days))}


def known_users(conn: Connection) -> list[int]:
    """Every user of ``202_users``, of the overrides and of the stored snapshots."""
    users = {int(r[0]) for r in conn.execute(select(tables.users.c.user_id))}
    snaps = tables.attribution_snapshots
    users |= {int(r[0]) for r in conn.execute(select(snaps.c.user_id).distinct())}
    return sorted(users | set(overrides(conn)))


def user_windows(conn: Connection, global_days: int | None, now: int, *,
                 report_days: int = REPORT_DAYS) -> list[Window]:
    """The window of every known user; users without one get ``source = "off"`` and the report
    window. A user whose row says ``days = 0`` is left out (kept for ever)."""
    rows = overrides(conn)
    windows = []
    for user in known_users(conn):
        if user in rows:
            if rows[user] == 0:
                continue
            days, source = rows[user], USER
        elif global_days:
            days, source = global_days, GLOBAL
        else:
            days, source = report_days, OFF
        windows.append(Window(user, days, source, cutoff(now, days)))
    return windows


def without_expired(pairs: pl.DataFrame, windows: list[Window]) -> pl.DataFrame:
    """``pairs`` (``user_id``, ``date_hour``, ...) without those older than their user's window
    (retention removed them on purpose: not a gap)."""
    cutoffs = pl.DataFrame({"user_id": [w.user_id for w in windows if w.deletes],
                            "before": [w.before for w in windows if w.deletes]}, schema={"user_id": pl.Int64, "before": pl.Int64})
    joined = pairs.join(cutoffs, on="user_id", how="left")
    return joined.filter(pl.col("before").is_null() | (pl.col("date_hour") >= pl.col("before"))).drop("before")


def audit_metadata(window: Window, counts: dict[str, int]) -> str:
    """The ``retention_purge`` audit row's metadata: the window and the counts (ids only)."""
    return json.dumps({"days": window.days, "source": window.source, "before": window.before, **counts},
                      separators=(",", ":"), sort_keys=True)


def record_purge(conn: Connection, window: Window, counts: dict[str, int], *, now: int) -> None:
    """One ``202_attribution_audit`` row (action ``retention_purge``) for a user's purge."""
    conn.execute(tables.attribution_audit.insert().values(
        user_id=window.user_id, model_id=None, action="retention_purge",
        metadata=audit_metadata(window, counts), created_at=now))
