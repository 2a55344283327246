"""The journey purge: stored journeys of conversions whose multi-touch setting is off (spec §5.9,
Q15 fixed; D13, D28).

PHP's ``purge-disabled-journeys.php`` takes every settings row with ``multi_touch_enabled = 0``
and deletes the journeys of that row's scope, so a user with multi-touch off on one campaign of a
scope type PHP does not filter loses every journey, an enabled campaign under a disabled
advertiser loses its journeys too, soft-deleted conversions keep theirs, and it counts
conversions. Here the purge applies the switch the way the rebuild reads it (spec §5.1, D13: on
by default, then the user's global row, then the advertiser row, then the campaign row; the most
specific existing row wins; ``core.journey_rules.multi_touch_flags``) to every conversion of each
user with at least one switched-off row, soft-deleted conversions included, and deletes exactly
the stored touches of the conversions whose effective setting is off, counting rows.

One user at a time: one read of the user's settings rows, conversions (ids and campaigns, on
Prosper202's ``user_id`` index) and campaign advertisers; the stored touch counts of the
switched-off conversions (on ``202_conversion_touchpoints``' ``conv_id`` index); then deletes of at
most ``batch_size`` conversions per transaction. ``dry_run`` counts without deleting.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl
from sqlalchemy import delete, func, select

from attribution_pipeline.core import journey_rules as rules
from attribution_pipeline.storage import prosper_reads, tables
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.frame_io import chunked, read_by_ids, read_frame

_conv = tables.conversion_logs
_touch = tables.conversion_touchpoints
_CONVERSIONS = {"conv_id": pl.Int64, "user_id": pl.Int64, "campaign_id": pl.Int64}
_COUNTS = {"conv_id": pl.Int64, "rows": pl.Int64}


@dataclass
class UserPurge:
    """One user's purge: conversions whose setting is off, those with stored journeys, rows."""

    user_id: int
    conversions_off: int
    journeys: int
    rows: int


@dataclass
class PurgeReport:
    dry_run: bool
    users: list[UserPurge] = field(default_factory=list)

    @property
    def journeys(self) -> int:
        return sum(u.journeys for u in self.users)

    @property
    def rows(self) -> int:
        return sum(u.rows for u in self.users)


def users_with_switch_off(db: Database, users: Sequence[int] | None = None, logger=None) -> list[int]:
    """Users with at least one ``202_attribution_settings`` row with ``multi_touch_enabled = 0``:
    nobody else can have a conversion whose effective setting is off (the default is on)."""
    s = tables.attribution_settings
    stmt = select(s.c.user_id).where(s.c.multi_touch_enabled == 0).distinct()
    if users:
        stmt = stmt.where(s.c.user_id.in_(sorted(set(int(u) for u in users))))

    def read():
        with db.engine().connect() as conn:
            return sorted(int(u) for u in conn.execute(stmt).scalars())

    return db.retry.run(read, what="read multi-touch settings", logger=logger)


def switched_off(db: Database, user_id: int, logger=None) -> tuple[int, pl.DataFrame]:
    """How many conversions of ``user_id`` (soft-deleted ones included) have their effective
    multi-touch setting off, and the conv_id of those with stored touches, with ``rows``: how many."""
    def read():
        with db.engine().connect() as conn:
            convs = read_frame(conn, select(_conv.c.conv_id, _conv.c.user_id, _conv.c.campaign_id)
                               .where(_conv.c.user_id == user_id), _CONVERSIONS)
            settings = prosper_reads.multi_touch_settings(conn, [user_id])
            networks = prosper_reads.campaign_networks(conn, convs.get_column("campaign_id").unique().to_list())
            off = rules.multi_touch_flags(convs, settings, networks).filter(~pl.col("multi_touch"))
            return off.height, _stored_counts(conn, off.get_column("conv_id").to_list())

    return db.retry.run(read, what="read switched-off conversions", logger=logger)


def _stored_counts(conn, conv_ids: list[int]) -> pl.DataFrame:
    def statement(where):
        return select(_touch.c.conv_id, func.count().label("rows")).where(where).group_by(_touch.c.conv_id)

    if not conv_ids:
        return pl.DataFrame(schema=_COUNTS)
    return read_by_ids(conn, _touch.c.conv_id, conv_ids, statement, _COUNTS)


def purge(db: Database, *, users: Sequence[int] | None = None, dry_run: bool = False, batch_size: int = 5000,
          logger=None) -> PurgeReport:
    """Delete (or with ``dry_run`` count) the stored journeys of every conversion whose effective
    multi-touch setting is off, of ``users`` (None: every user)."""
    report = PurgeReport(dry_run=dry_run)
    for user_id in users_with_switch_off(db, users, logger):
        off_count, stored = switched_off(db, user_id, logger)
        rows = int(stored.get_column("rows").sum()) if stored.height else 0
        if not dry_run and stored.height:
            rows = sum(db.retry.run(lambda ids=ids: _delete(db, ids), what="purge journeys", logger=logger)
                       for ids in chunked(stored.get_column("conv_id").sort().to_list(), max(1, batch_size)))
        report.users.append(UserPurge(user_id=user_id, conversions_off=off_count, journeys=stored.height, rows=rows))
    return report


def _delete(db: Database, conv_ids: Sequence[int]) -> int:
    """One transaction: every stored touch of ``conv_ids``; the rows deleted."""
    with db.engine().begin() as conn:
        return int(conn.execute(delete(_touch).where(_touch.c.conv_id.in_(list(conv_ids)))).rowcount)
