"""What every command shares: exit codes, error printing, the ``--db-url`` option."""

import sys

EXIT_OK, EXIT_FATAL, EXIT_PARTIAL = 0, 1, 2


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FATAL


def db_arg(parser) -> None:
    parser.add_argument("--db-url", help="SQLAlchemy URL (default: $ATTRIBUTION_DB_URL, else the embedded SQLite "
                        "database under $ATTRIBUTION_HOME or ./.attribution)")
