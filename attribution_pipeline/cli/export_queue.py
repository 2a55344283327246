"""``attribution exports run --once`` and ``attribution exports list``: the export queue by hand.

``run --once`` does what one poll of the Dagster sensor launches (docs/export-queue.md): it stamps
``202_cronjob_logs`` id 3 and processes every pending export of ``202_attribution_exports``,
oldest first, each claimed atomically (a PHP cron or a sensor run processing the same queue never
gets the same export). Exit 0: every export it processed completed (or there were none); 2: some
failed (their reasons are printed and stored in the row); 1: it could not run.

``list`` prints the newest exports and their states, never the webhook's URL, secret or headers,
nor the download token.
"""

from datetime import datetime, timezone

from attribution_pipeline.cli.common import EXIT_OK, EXIT_PARTIAL, db_arg, fail
from attribution_pipeline.errors import AttributionError
from attribution_pipeline.export_queue.claim import recent_exports
from attribution_pipeline.export_queue.queue_schema import detect_schema
from attribution_pipeline.export_queue.worker import COMPLETED, FAILED, SKIPPED, process_pending
from attribution_pipeline.logs import stdlib_logger
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage.database import Database, preflight


def _when(epoch) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def cmd_run(args, settings: Settings) -> int:
    db = Database.from_settings(settings)
    try:
        preflight(db)
        print(f"database: {db.display_url()}")
        results = process_pending(db, settings, log=stdlib_logger)
    except AttributionError as exc:
        return fail(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a database error: named, no traceback
        return fail(f"{type(exc).__name__}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0][:300]}")
    for r in results:
        if r.outcome == COMPLETED:
            hook = f", webhook delivered in {r.webhook_attempts} attempt(s)" if r.webhook_attempts else ""
            print(f"export {r.export_id}: completed, {r.rows_exported} row(s) -> {r.file_path}{hook}")
        else:
            print(f"export {r.export_id}: {r.outcome}: {r.reason}")
    counts = {k: sum(1 for r in results if r.outcome == k) for k in (COMPLETED, FAILED, SKIPPED)}
    print(f"{len(results)} pending export(s): {counts[COMPLETED]} completed, {counts[FAILED]} failed, "
          f"{counts[SKIPPED]} skipped (claimed by another worker)")
    return EXIT_PARTIAL if counts[FAILED] else EXIT_OK


def cmd_list(args, settings: Settings) -> int:
    db = Database.from_settings(settings)
    try:
        preflight(db)
        with db.engine().connect() as conn:
            schema = detect_schema(conn)
            rows = recent_exports(conn, schema, max(1, args.limit))
    except AttributionError as exc:
        return fail(f"{type(exc).__name__}: {exc}")
    print(f"database: {db.display_url()} ({schema.kind} export schema)")
    print(f"{'id':>6}  {'status':<10} {'user':>5} {'model':>6} {'format':<6} {'scope':<16} {'hours (UTC)':<35} "
          f"{'rows':>8}  {'queued':<19}  {'webhook':<7}  detail")
    for row in rows:
        scope = row.get("scope_type") or ""
        if row.get("scope_id"):
            scope = f"{scope}:{row['scope_id']}"
        hours = f"{_when(row.get('start_hour'))[:16]} .. {_when(row.get('end_hour'))[:16]}"
        rows_exported = row.get(schema.rows) if schema.rows else None
        detail = (row.get(schema.error) if schema.error else None) or row.get("file_path") or ""
        print(f"{row['export_id']:>6}  {str(row.get('status')):<10} {row.get('user_id')!s:>5} {row.get('model_id')!s:>6} "
              f"{str(row.get(schema.format)):<6} {scope:<16} {hours:<35} "
              f"{'-' if rows_exported is None else rows_exported:>8}  {_when(row.get(schema.queued)):<19}  "
              f"{'yes' if row.get('webhook_url') else 'no':<7}  {str(detail).splitlines()[0] if detail else ''}")
    if not rows:
        print("no exports")
    return EXIT_OK


def add_subcommands(sub) -> None:
    p = sub.add_parser("exports", help="the snapshot export queue (202_attribution_exports): run it, list it")
    commands = p.add_subparsers(dest="exports_command", required=True)
    run = commands.add_parser("run", help="process every pending export, then exit (like attribution-export.php)")
    db_arg(run)
    run.add_argument("--once", action="store_true", required=True,
                     help="process the pending exports once and exit (the Dagster sensor polls continuously)")
    run.set_defaults(func=cmd_run)
    listing = commands.add_parser("list", help="the newest exports and their states (no secrets)")
    db_arg(listing)
    listing.add_argument("--limit", type=int, default=20, help="how many exports (newest first; default 20)")
    listing.set_defaults(func=cmd_list)
