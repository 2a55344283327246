"""``attribution retention`` and ``attribution erase``: deleting data for good (D27).

``retention`` runs what the daily ``attribution_retention`` schedule runs (``--dry-run``: count
only). ``erase --user U`` removes everything of a deleted user from every store the pipeline
writes; ``erase --click ID... --conversion ID...`` removes a visitor's clicks and conversions and
rebuilds the hours they counted in. Both ask for confirmation on a terminal (``--yes`` for
scripts). Only ids and counts are printed.
"""

import sys
import time

from attribution_pipeline.cli.common import EXIT_FATAL, EXIT_OK, EXIT_PARTIAL, db_arg, fail
from attribution_pipeline.cli.jobrun import run_job
from attribution_pipeline.core.hours import HOUR, floor_hour, hour_key, hour_ranges
from attribution_pipeline.definitions import build_definitions
from attribution_pipeline.exports.data_lifecycle import (
    erase_user,
    erase_visitor,
    refuse_while_source,
    run_retention,
    visitor_scope,
)
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import prosper_reads
from attribution_pipeline.storage.database import Database, preflight

#: Affected hours closer than this are rebuilt in one run.
REBUILD_GAP_HOURS = 24


def cmd_retention(args, settings: Settings) -> int:
    db = Database.from_settings(settings)
    preflight(db)
    print(f"database: {db.display_url()}")
    outcome = run_retention(db, settings, dry_run=args.dry_run)
    for line in outcome.lines():
        print(line)
    if args.dry_run:
        print("dry run: nothing was deleted")
    elif not outcome.deleted and not any(u.window.deletes for u in outcome.users):
        print("retention is not configured (ATTRIBUTION_RETENTION_DAYS, attribution_retention): nothing was deleted")
    return EXIT_OK


def _confirmed(args, what: str, expected: str) -> bool:
    """``--yes``, or the operator typed ``expected`` on a terminal."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("error: not a terminal: pass --yes to confirm in a script", file=sys.stderr)
        return False
    answer = input(f"{what}\nThis cannot be undone. Type {expected!r} to confirm: ")
    return answer.strip() == expected


def cmd_erase(args, settings: Settings) -> int:
    if args.user is not None and (args.click or args.conversion):
        return fail("--user and --click/--conversion are separate erasures: give one kind")
    if args.user is None and not (args.click or args.conversion):
        return fail("name what to erase: --user ID, or --click ID... and/or --conversion ID...")
    db = Database.from_settings(settings)
    preflight(db)
    print(f"database: {db.display_url()}")
    if args.user is not None:
        return _erase_user(args, db, settings)
    return _erase_visitor(args, db, settings)


def _erase_user(args, db: Database, settings: Settings) -> int:
    user = int(args.user)
    with db.engine().connect() as conn:
        deleted = prosper_reads.user_rows(conn, [user]).get(user)
    if deleted != 1 and not args.force:
        state = "is not in 202_users" if deleted is None else "is not deleted (202_users.user_deleted = 0)"
        return fail(f"user {user} {state}: delete the account in Prosper202 first (the hourly runs would "
                    "compute its rows again), or pass --force")
    if not _confirmed(args, f"Erase every row and file of user {user} from every store the pipeline writes?", str(user)):
        return fail("not confirmed; nothing was erased")
    counts = erase_user(db, settings, user)
    print(f"erased user {user}:")
    for store, n in counts.items():
        print(f"  {store}: {n}")
    if deleted != 1:
        print(f"notice: user {user} is not deleted in Prosper202: the next run over its hours computes its rows again")
    return EXIT_OK


#: What ``--include-source`` deletes besides the pipeline's rows.
_SOURCE_ROWS = ", 202_clicks, 202_clicks_advance and 202_conversion_logs"


def _erase_visitor(args, db: Database, settings: Settings) -> int:
    scope = visitor_scope(db, settings, args.click or [], args.conversion or [])
    refuse_while_source(scope, args.include_source)  # a named error, printed by cli.main
    what = (f"Erase {len(scope.clicks)} click(s) and {len(scope.conversions)} conversion(s) from touchpoints, "
            f"journeys, exports and frames{_SOURCE_ROWS if args.include_source else ''}, "
            f"then rebuild {scope.pairs.height} (user, hour) pair(s)?")
    if not _confirmed(args, what, "erase"):
        return fail("not confirmed; nothing was erased")
    counts = erase_visitor(db, settings, scope, include_source=args.include_source)
    print(f"erased {len(scope.clicks)} click(s), {len(scope.conversions)} conversion(s):")
    for store, n in counts.items():
        print(f"  {store}: {n}")
    return rebuild_pairs(db, settings, scope.pairs)


def rebuild_ranges(hours, gap_hours: int = REBUILD_GAP_HOURS) -> list[tuple[int, int]]:
    """The hours as ranges, neighbours less than ``gap_hours`` apart merged (one run each)."""
    merged: list[list[int]] = []
    for first, last in hour_ranges(hours):
        if merged and first - merged[-1][1] <= gap_hours * HOUR:
            merged[-1][1] = last
        else:
            merged.append([first, last])
    return [(a, b) for a, b in merged]


def rebuild_pairs(db: Database, settings: Settings, pairs) -> int:
    """Rebuild (``full``) the affected users' hours that are complete and partitioned."""
    now_hour = floor_hour(int(time.time()))
    with db.engine().connect() as conn:
        live = set(prosper_reads.active_users(conn, sorted(set(pairs.get_column("user_id").to_list()))))
    rows = pairs.filter(pairs["user_id"].is_in(sorted(live)) & (pairs["date_hour"] >= settings.first_hour)
                        & (pairs["date_hour"] < now_hour))
    if rows.height == 0:
        print("rebuild: no hour of a live user to rebuild")
        return EXIT_OK
    code = EXIT_OK
    for first, last in rebuild_ranges(rows.get_column("date_hour").to_list()):
        users = sorted(set(rows.filter(rows["date_hour"].is_between(first, last)).get_column("user_id").to_list()))
        result, report = run_job(build_definitions(settings), settings, first, last, users=users, full=True,
                                 source="erase")
        outcome = report["outcome"] if report else 1
        print(f"rebuilt {hour_key(first)} .. {hour_key(last)} for user(s) {users}: outcome {outcome}")
        if not result.success or outcome == 1:
            code = EXIT_FATAL
        elif outcome == 2 and code == EXIT_OK:
            code = EXIT_PARTIAL
    return code


def add_subcommands(sub) -> None:
    p = sub.add_parser("retention", help="delete what is older than each user's retention window (D27)")
    db_arg(p)
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    p.set_defaults(func=cmd_retention)

    p = sub.add_parser("erase", help="erase a deleted user, or a visitor's clicks and conversions (D27)")
    db_arg(p)
    p.add_argument("--user", type=int, help="erase everything of this user (202_users.user_deleted must be 1)")
    p.add_argument("--click", type=int, action="extend", nargs="+", help="click ids to erase")
    p.add_argument("--conversion", type=int, action="extend", nargs="+", help="conversion ids to erase")
    p.add_argument("--include-source", action="store_true",
                   help="also delete the clicks and conversions from 202_clicks (and 202_clicks_advance) "
                   "and 202_conversion_logs")
    p.add_argument("--force", action="store_true", help="erase a user that is not deleted in Prosper202")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (scripts)")
    p.set_defaults(func=cmd_erase)
