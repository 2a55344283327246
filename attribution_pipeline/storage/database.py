"""Prosper202's database: engines for any SQLAlchemy URL, and the ``db`` resource object.

``mysql+pymysql://user:pass@host/db`` for a real Prosper202 database, ``sqlite:///path`` for the
embedded demo default. :class:`Database` is what the pipeline passes around (and what Dagster
gets as the ``db`` resource): the URL, its engine (made once) and the retry policy. It has no
config schema, so the URL (and its password) never reaches Dagster's run config or snapshots;
its ``repr`` and :meth:`Database.display_url` mask the password.
"""

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url

from attribution_pipeline.storage.retries import RetryPolicy

#: Execution option naming a file that every MySQL read's SQL is appended to (benchmark floor).
RECORD_SQL_OPTION = "attribution_record_sql"


def safe_url(url: str) -> str:
    """The URL with its password masked: the only form that may appear in logs or metadata."""
    return make_url(url).render_as_string(hide_password=True)


def is_sqlite(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "sqlite"


def make_engine(url: str, *, record_sql: str | None = None) -> Engine:
    """An engine for ``url``. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions
    (the embedded equivalent of the MySQL named lock: writers never interleave). ``record_sql``
    (benchmark only) names a file every MySQL read's SQL is appended to."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event drive it
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args = {}
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        connect_args = {"charset": "utf8mb4", "local_infile": True}
    engine = create_engine(url, pool_pre_ping=True, pool_recycle=3600, connect_args=connect_args)
    return engine.execution_options(**{RECORD_SQL_OPTION: record_sql}) if record_sql else engine


class Database:
    """The database a run reads and writes: URL, engine (made on first use) and retry policy."""

    def __init__(self, url: str, *, retry: RetryPolicy | None = None, record_sql: str | None = None):
        self.url = url
        self.retry = retry or RetryPolicy()
        self._record_sql = record_sql
        self._engine: Engine | None = None

    @classmethod
    def from_settings(cls, settings) -> "Database":
        """The database of a :class:`~attribution_pipeline.settings.Settings`."""
        policy = RetryPolicy(settings.db_retries, settings.db_retry_delay_seconds, settings.db_retry_budget_seconds)
        return cls(settings.db_url, retry=policy, record_sql=settings.record_sql_path)

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url, record_sql=self._record_sql)
        return self._engine

    def display_url(self) -> str:
        return safe_url(self.url)

    def __repr__(self) -> str:
        return f"Database({self.display_url()!r})"
