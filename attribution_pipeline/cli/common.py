"""What every command shares: exit codes, error printing, the ``--db-url``/``--db-url-file`` options."""

import sys

EXIT_OK, EXIT_FATAL, EXIT_PARTIAL = 0, 1, 2


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FATAL


def db_arg(parser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--db-url", help="SQLAlchemy URL (default: $ATTRIBUTION_DB_URL or the file named by "
                       "$ATTRIBUTION_DB_URL_FILE, else the embedded SQLite database under $ATTRIBUTION_HOME or "
                       "./.attribution); it shows in the process list: prefer --db-url-file for a password")
    group.add_argument("--db-url-file", metavar="PATH", help="a file holding the SQLAlchemy URL (a Docker or "
                       "Kubernetes secret, say), so the password never appears on the command line")
