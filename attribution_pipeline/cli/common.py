"""What every command shares: exit codes, error printing, the ``--db-url``/``--db-url-file`` options,
the ``--start``/``--end`` window and ``--user``."""

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


def window_args(parser, users: bool = True) -> None:
    """``--start`` (inclusive) and ``--end`` (exclusive), and ``--user`` unless ``users`` is False."""
    parser.add_argument("--start", required=True, help="epoch seconds or ISO-8601 (UTC when no offset); inclusive")
    parser.add_argument("--end", required=True, help="epoch seconds or ISO-8601; exclusive")
    if users:
        parser.add_argument("--user", type=int, action="extend", nargs="+", help="only these users (repeatable)")
