"""The reads of the whole-history gap scan: which (user, hour) has conversions, which has rows.

Two grouped reads over the whole history (hours from the first partition to the last due hour):
small results (one row per user and hour at most) whatever the table sizes.
"""

import polars as pl
from sqlalchemy import and_, exists, func, select
from sqlalchemy.engine import Connection

from attribution_pipeline.core.model_rules import parse_model_row
from attribution_pipeline.storage import prosper_reads, tables

USER_HOURS = {"user_id": pl.Int64, "date_hour": pl.Int64}


def users_with_models(conn: Connection) -> list[int]:
    """Non-deleted users with at least one active, valid model: the users whose conversions give rows."""
    users = prosper_reads.active_users(conn)
    return sorted({int(r["user_id"]) for r in prosper_reads.model_rows(conn, users) if parse_model_row(r).is_valid})


def conversion_user_hours(conn: Connection, first_hour: int, end: int, users: list[int]) -> pl.DataFrame:
    """(user_id, date_hour, conversions) of live conversions in [first_hour, end) whose click exists
    and belongs to the same user (the conversions a run credits: D16, D21)."""
    if not users:
        return pl.DataFrame(schema={**USER_HOURS, "conversions": pl.Int64})
    c, k = tables.conversion_logs, tables.clicks
    hour = (c.c.conv_time - c.c.conv_time % 3600).label("date_hour")
    stmt = (
        select(c.c.user_id, hour, func.count().label("conversions"))
        .where(c.c.deleted == 0, c.c.conv_time >= first_hour, c.c.conv_time < end, c.c.user_id.in_(users),
               exists().where(and_(k.c.click_id == c.c.click_id, k.c.user_id == c.c.user_id)))
        .group_by(c.c.user_id, hour)
    )
    rows = conn.execute(stmt).all()
    return pl.DataFrame([tuple(int(v) for v in r) for r in rows], orient="row",
                        schema={**USER_HOURS, "conversions": pl.Int64})


def snapshot_user_hours(conn: Connection, first_hour: int, end: int) -> pl.DataFrame:
    """(user_id, date_hour) that have global snapshot rows in [first_hour, end)."""
    s = tables.attribution_snapshots
    stmt = (select(s.c.user_id, s.c.date_hour).distinct()
            .where(s.c.scope_type == "global", s.c.date_hour >= first_hour, s.c.date_hour < end))
    rows = conn.execute(stmt).all()
    return pl.DataFrame([(int(u), int(h)) for u, h in rows], orient="row", schema=USER_HOURS)


def snapshot_hours(conn: Connection, first_hour: int, end: int) -> list[int]:
    """Hours in [first_hour, end) that have global snapshot rows (any user)."""
    s = tables.attribution_snapshots
    stmt = (select(s.c.date_hour).distinct()
            .where(s.c.scope_type == "global", s.c.date_hour >= first_hour, s.c.date_hour < end))
    return sorted(int(h) for (h,) in conn.execute(stmt))
