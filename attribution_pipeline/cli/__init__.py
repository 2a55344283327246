"""The ``attribution`` command line, for Prosper202 operators and analysts.

``attribution rebuild`` replaces ``php 202-cronjobs/attribution-rebuild.php``: it runs the job the
schedule runs, in-process, as ONE run over the selected hours (recorded in the Dagster instance
when ``DAGSTER_HOME`` is set, so it shows in the UI). Commands by family: :mod:`.rebuild`
(``rebuild``), :mod:`.setup_cmds` (``init-db``, ``seed``, ``demo``), :mod:`.analyst` (``query``,
``duckdb``, ``compare``), :mod:`.export_queue` (``exports run --once``, ``exports list``), :mod:`.journeys_cmd` (``journeys backfill``,
``journeys purge``), :mod:`.doctor_cmd` (``doctor``). The
settings are read from the environment once, in :func:`main`, and passed to the command
(``--db-url`` or ``--db-url-file`` replaces the database URL in them, never in ``os.environ``).
A named error (``AttributionError``, ``SettingsError``) that a command does not handle itself
ends as one ``error: <Name>: <message>`` line on stderr and exit code 1, never a traceback.

Exit codes (D19): 0 everything selected was written and every check passed; 2 the run committed
but some models were skipped or some (user, model, hour) groups were held back; 1 nothing was
committed (a named error is printed).
"""

import argparse
import sys
import warnings
from pathlib import Path

from attribution_pipeline.cli import (analyst, backfill_cmd, doctor_cmd, export_queue, journeys_cmd, lifecycle_cmds,
                                      rebuild, setup_cmds)
from attribution_pipeline.cli.common import fail
from attribution_pipeline.errors import AttributionError
from attribution_pipeline.settings import Settings, SettingsError, read_url_file


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attribution", description="Prosper202 attribution pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    rebuild.add_subcommands(sub)
    setup_cmds.add_subcommands(sub)
    analyst.add_subcommands(sub)
    export_queue.add_subcommands(sub)
    journeys_cmd.add_subcommands(sub)
    doctor_cmd.add_subcommands(sub)
    lifecycle_cmds.add_subcommands(sub)
    backfill_cmd.add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import dagster as dg

    # BackfillPolicy and partitioned checks are Dagster beta/preview features we use on purpose.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if getattr(args, "db_url", None):
            settings = settings.replace(db_url=args.db_url, db_url_file=None)
        elif getattr(args, "db_url_file", None):
            path = Path(args.db_url_file).resolve()
            settings = settings.replace(db_url=read_url_file(path, "--db-url-file"), db_url_file=path)
        return args.func(args, settings)
    except (AttributionError, SettingsError) as exc:
        return fail(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
