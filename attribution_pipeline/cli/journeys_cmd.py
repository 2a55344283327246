"""``attribution journeys backfill`` and ``attribution journeys purge``: Prosper202's stored
journeys (``202_conversion_touchpoints``), replacing ``backfill-conversion-journeys.php`` and
``purge-disabled-journeys.php`` (spec §2.5, §5.9; D28)."""

import time

from attribution_pipeline.cli.common import EXIT_OK, db_arg, fail, window_args
from attribution_pipeline.cli.rebuild import validate_scope
from attribution_pipeline.core.hours import check_window, parse_time
from attribution_pipeline.errors import AttributionError
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import journey_backfill, journey_purge
from attribution_pipeline.storage.database import Database, preflight
from attribution_pipeline.storage.journey_source import JourneyRule


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def cmd_backfill(args, settings: Settings) -> int:
    db = Database.from_settings(settings)
    users = sorted(set(args.user or []))
    try:
        start, end = parse_time(args.start), parse_time(args.end)
        check_window(start, end, int(time.time()))
        if args.batch_size < 1:
            raise AttributionError(f"--batch-size {args.batch_size}: use 1 or more")
        preflight(db)
        validate_scope(db.engine(), users, [])
    except AttributionError as exc:
        return fail(f"{type(exc).__name__}: {exc}")
    print(f"database: {db.display_url()}")
    print(f"journeys of conversions {_iso(start)} .. {_iso(end)} (end excluded)"
          + (f", users {users}" if users else "") + f", batches of {args.batch_size}")
    report = journey_backfill.backfill(
        db, JourneyRule.from_settings(settings), start, end, users=users or None, batch_size=args.batch_size,
        write_batch_rows=settings.write_batch_rows, lock_timeout=settings.lock_timeout_seconds,
        progress=print)
    print(f"conversions in the window: {report.conversions} ({report.conversions - report.counted} without their "
          f"click row, skipped: D16, D21)")
    print(f"journeys written: {report.persisted} conversion(s), {report.rows_written} row(s) in {report.batches} "
          f"batch(es); multi-touch off, left alone: {report.single_touch}")
    print(f"done in {report.seconds:.1f}s")
    return EXIT_OK


def cmd_purge(args, settings: Settings) -> int:
    db = Database.from_settings(settings)
    users = sorted(set(args.user or []))
    try:
        preflight(db)
    except AttributionError as exc:
        return fail(f"{type(exc).__name__}: {exc}")
    print(f"database: {db.display_url()}")
    report = journey_purge.purge(db, users=users or None, dry_run=args.dry_run, batch_size=args.batch_size)
    verb = "would purge" if args.dry_run else "purged"
    for user in report.users:
        print(f"user {user.user_id}: multi-touch off for {user.conversions_off} conversion(s); {verb} "
              f"{user.journeys} stored journey(s), {user.rows} row(s)")
    if not report.users:
        print("no user has multi-touch switched off" + (f" among users {users}" if users else ""))
    print(f"total: {verb} {report.journeys} journey(s), {report.rows} row(s) of 202_conversion_touchpoints"
          + (" (dry run: nothing deleted)" if args.dry_run else ""))
    return EXIT_OK


def add_subcommands(sub) -> None:
    journeys = sub.add_parser("journeys", help="Prosper202's stored journeys (202_conversion_touchpoints)")
    inner = journeys.add_subparsers(dest="journeys_command", required=True)

    p = inner.add_parser("backfill", help="store the journeys of a window's conversions, like "
                         "backfill-conversion-journeys.php (where multi-touch is on)")
    db_arg(p)
    window_args(p)
    p.add_argument("--batch-size", type=int, default=journey_backfill.DEFAULT_BATCH_SIZE,
                   help=f"conversions per transaction (default {journey_backfill.DEFAULT_BATCH_SIZE})")
    p.set_defaults(func=cmd_backfill)

    p = inner.add_parser("purge", help="delete the stored journeys of conversions whose multi-touch setting is "
                         "off (replaces purge-disabled-journeys.php)")
    db_arg(p)
    p.add_argument("--user", type=int, action="extend", nargs="+", help="only these users (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    p.add_argument("--batch-size", type=int, default=5000, help="conversions per delete transaction (default 5000)")
    p.set_defaults(func=cmd_purge)
