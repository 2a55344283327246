"""Prosper202's database: engines for any SQLAlchemy URL, and the ``db`` resource object.

``mysql+pymysql://user:pass@host/db`` for a real Prosper202 database, ``sqlite:///path`` for the
embedded demo default. :class:`Database` is what the pipeline passes around (and what Dagster
gets as the ``db`` resource): the URL, its engine (made once) and the retry policy. It has no
config schema, so the URL (and its password) never reaches Dagster's run config or snapshots;
its ``repr`` and :meth:`Database.display_url` mask the password.

Hardening (``docs/configuration.md``, *Connections and TLS*):

* PyMySQL connections are :class:`GuardedConnection` objects (``storage/local_infile.py``):
  ``LOAD DATA LOCAL INFILE`` sends data only under the name :func:`local_file_allowed` allowed for
  the running statement (``bulk_load``'s rows, from memory); any other file a server asks for is
  refused and nothing is sent;
* the URL's TLS parameters become one ``ssl.SSLContext`` used by every PyMySQL connection
  (:func:`tls_connect_args`); connectorx cannot be given one, so ``frame_io`` reads through
  PyMySQL whenever TLS is asked for (:func:`tls_requested`);
* :func:`preflight` connects once, with a short timeout and no retries, and names what is wrong.
"""

import ssl
import zlib
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from attribution_pipeline.errors import (
    DatabaseAccessDenied,
    DatabaseConnectError,
    DatabaseUnreachable,
    DatabaseUrlError,
    TlsConfigError,
    UnknownDatabaseError,
)
from attribution_pipeline.storage.local_infile import (  # noqa: F401 - the guard's names, re-exported
    LOCAL_INFILE_REJECTED,
    GuardedConnection,
    LocalInfileRefusedError,
    local_file_allowed,
)
from attribution_pipeline.storage.retries import RetryPolicy

#: Execution option naming a file that every MySQL read's SQL is appended to (benchmark floor).
RECORD_SQL_OPTION = "attribution_record_sql"
#: Seconds the preflight connection waits for the server (the run itself retries for up to 90 s).
PREFLIGHT_CONNECT_TIMEOUT = 5


def safe_url(url: str) -> str:
    """The URL with its password (and any TLS key password) masked: the only form that may appear
    in logs or metadata."""
    parsed = make_url(url)
    hidden = {k: "***" for k in parsed.query if k.lower() == "ssl_key_password"}
    return (parsed.update_query_dict(hidden) if hidden else parsed).render_as_string(hide_password=True)


def is_sqlite(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "sqlite"


# ------------------------------------------------------------------------------------------
# TLS: the URL's parameters, one SSLContext for every PyMySQL connection
# ------------------------------------------------------------------------------------------

_TLS_FLAGS = ("ssl", "ssl_disabled", "ssl_verify_cert", "ssl_verify_identity", "ssl_check_hostname")
_TLS_VALUES = ("ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_key_password", "ssl_cipher")


def tls_params(url: str | URL) -> dict[str, str]:
    """The TLS parameters of the URL's query string (every key that starts with ``ssl``/``tls``)."""
    query = (make_url(url) if isinstance(url, str) else url).query
    return {k: str(v[-1] if isinstance(v, tuple) else v) for k, v in query.items()
            if k.lower().startswith(("ssl", "tls"))}


def _flag(params: Mapping[str, str], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise TlsConfigError(f"{name}={raw!r} in the database URL: use true or false")


def tls_requested(params: Mapping[str, str]) -> bool:
    """Whether the TLS parameters ask for TLS: any of them does, unless ``ssl=false`` or
    ``ssl_disabled=true``. Unknown ``ssl*``/``tls*`` keys, and disabling TLS while naming
    certificates, are errors."""
    unknown = sorted(k for k in params if k not in _TLS_FLAGS + _TLS_VALUES)
    if unknown:
        raise TlsConfigError(f"unknown TLS parameter(s) {unknown} in the database URL; known: "
                             f"{', '.join(_TLS_FLAGS + _TLS_VALUES)}")
    disabled = _flag(params, "ssl_disabled", False) or not _flag(params, "ssl", True)
    if disabled and any(k in params for k in _TLS_VALUES + _TLS_FLAGS[2:]):
        raise TlsConfigError("the database URL disables TLS (ssl=false or ssl_disabled=true) and configures it")
    return bool(params) and not disabled


def tls_connect_args(params: Mapping[str, str]) -> dict:
    """PyMySQL keyword arguments for the TLS parameters: ``{}`` without any (PyMySQL's default),
    ``{"ssl_disabled": True}`` when they disable TLS, else ``{"ssl": SSLContext}``: TLS required,
    the server certificate verified against ``ssl_ca``/``ssl_capath`` (else the system's CAs) and
    its host name checked, unless ``ssl_verify_cert=false`` / ``ssl_verify_identity=false``."""
    if not params:
        return {}
    if not tls_requested(params):
        return {"ssl_disabled": True}
    verify = _flag(params, "ssl_verify_cert", True)
    identity = _flag(params, "ssl_verify_identity", _flag(params, "ssl_check_hostname", verify))
    if identity and not verify:
        raise TlsConfigError("ssl_verify_identity needs ssl_verify_cert (a host name is only checked on a "
                             "verified certificate)")
    if "ssl_key" in params and "ssl_cert" not in params:
        raise TlsConfigError("ssl_key needs ssl_cert (the client certificate it belongs to)")
    try:
        ctx = ssl.create_default_context(cafile=params.get("ssl_ca"), capath=params.get("ssl_capath"))
        ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)  # MySQL's generated certificates
        ctx.check_hostname = identity
        ctx.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
        if "ssl_cert" in params:
            ctx.load_cert_chain(params["ssl_cert"], keyfile=params.get("ssl_key"),
                                password=params.get("ssl_key_password"))
        if "ssl_cipher" in params:
            ctx.set_ciphers(params["ssl_cipher"])
    except (OSError, ssl.SSLError, ValueError) as exc:
        detail = str(exc).replace(params.get("ssl_key_password") or "\0", "***")
        files = ", ".join(f"{k}={params[k]}" for k in ("ssl_ca", "ssl_capath", "ssl_cert", "ssl_key") if k in params)
        raise TlsConfigError(f"the TLS settings of the database URL cannot be used ({files or 'system CAs'}): "
                             f"{type(exc).__name__}: {detail}") from None
    return {"ssl": ctx}


# ------------------------------------------------------------------------------------------
# Engines
# ------------------------------------------------------------------------------------------


def _crc32(text):
    return None if text is None else zlib.crc32(str(text).encode())


def _sqlite_engine(url: str, parsed: URL, pool: dict) -> Engine:
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 60}, **pool)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event drive it
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()
        # MySQL's CRC32(), which the source fingerprints use (storage/source_state.py)
        dbapi_connection.create_function("crc32", 1, _crc32, deterministic=True)

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_engine(url: str, *, record_sql: str | None = None, connect_timeout: int | None = None,
                single_use: bool = False) -> Engine:
    """An engine for ``url``. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions
    (the embedded equivalent of the MySQL named lock: writers never interleave). ``record_sql``
    (benchmark only) names a file every MySQL read's SQL is appended to; ``connect_timeout``
    (MySQL, seconds) bounds the wait for the server; ``single_use`` pools nothing (the preflight).

    With PyMySQL, connections are :class:`GuardedConnection` objects (local infile enabled, but
    only for the file :func:`local_file_allowed` names) and carry the URL's TLS settings as one
    ``ssl.SSLContext`` (:func:`tls_connect_args`; SQLAlchemy's own translation of the ``ssl_*``
    keys is replaced, as it drops some and passes others as strings). Other MySQL drivers get
    neither local infile nor the translation. Unusable TLS parameters raise ``TlsConfigError``.
    """
    parsed = make_url(url)
    pool = {"poolclass": NullPool} if single_use else {}
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed, pool)
    connect_args: dict = {}
    mysql = parsed.get_backend_name() in ("mysql", "mariadb")
    guarded = mysql and parsed.get_driver_name() == "pymysql"
    if mysql:
        connect_args = {"charset": "utf8mb4", **({"local_infile": True} if guarded else {})}
        if connect_timeout:
            connect_args["connect_timeout"] = int(connect_timeout)
    tls = tls_connect_args(tls_params(parsed)) if guarded else {}
    options = {} if single_use else {"pool_pre_ping": True, "pool_recycle": 3600}
    engine = create_engine(url, connect_args=connect_args, **options, **pool)
    if guarded:
        @event.listens_for(engine, "do_connect")
        def _guarded_connect(_dialect, _record, cargs, cparams):
            for key in [k for k in cparams if k.lower().startswith(("ssl", "tls"))]:
                del cparams[key]
            cparams.update(tls)
            return GuardedConnection(*cargs, **cparams)

    return engine.execution_options(**{RECORD_SQL_OPTION: record_sql}) if record_sql else engine


# ------------------------------------------------------------------------------------------
# Preflight: one attempt, no retries, a named error without the password
# ------------------------------------------------------------------------------------------


def _connect_error(parsed: URL, error: BaseException) -> DatabaseConnectError:
    """The named error for a failed first connection; never contains the password."""
    orig = getattr(error, "orig", None) or error
    args = getattr(orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    detail = str(args[1] if len(args) > 1 else orig)
    if parsed.password:
        detail = detail.replace(str(parsed.password), "***")
    if parsed.get_backend_name() == "sqlite":
        return DatabaseConnectError(f"cannot open the SQLite database {parsed.database}: {detail}")
    user, db = parsed.username or "", parsed.database or ""
    where = f"{parsed.host or 'localhost'}:{parsed.port or 3306}"
    if code == 1045:
        return DatabaseAccessDenied(f"access denied for user {user!r} on {where} "
                                    "(check the user name and the password)")
    if code == 1044:
        return DatabaseAccessDenied(f"user {user!r} may not use database {db!r} on {where} (check the user's grants)")
    if code == 1049:
        return UnknownDatabaseError(f"unknown database {db!r} on {where} (create it, or check the URL's database name)")
    if code in (2002, 2003, 2005, 2013):
        return DatabaseUnreachable(f"cannot reach {where}: {detail}")
    if code == 2026:
        return DatabaseConnectError(f"TLS to {where} failed: {detail}")
    label = f"MySQL error {code}" if code is not None else type(orig).__name__
    return DatabaseConnectError(f"cannot connect to {where} as {user!r}: {label}: {detail}")


def preflight(db, *, timeout: int = PREFLIGHT_CONNECT_TIMEOUT) -> None:
    """Connect once (``timeout`` seconds at most, no retries) and run ``SELECT 1``. Raises a named
    :class:`~attribution_pipeline.errors.DatabaseConnectError` (``DatabaseAccessDenied``,
    ``UnknownDatabaseError``, ``DatabaseUnreachable``) or ``DatabaseUrlError``; messages never
    contain the password. ``db`` is a :class:`Database` or a URL."""
    url = str(getattr(db, "url", db))
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - SQLAlchemy's messages may quote the URL: replaced
        raise DatabaseUrlError("the database URL is not a valid SQLAlchemy URL (mysql+pymysql://user:password@"
                               "host:3306/database, or sqlite:///path)") from None
    try:
        engine = make_engine(url, connect_timeout=timeout, single_use=True)
    except DatabaseUrlError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unknown driver or argument: named, without the URL
        raise DatabaseUrlError(f"the database URL cannot be used ({parsed.drivername}): {type(exc).__name__}") from None
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - every failure of the first connection is named
        raise _connect_error(parsed, exc) from None
    finally:
        engine.dispose()


class Database:
    """The database a run reads and writes: URL, engine (made on first use) and retry policy."""

    def __init__(self, url: str, *, retry: RetryPolicy | None = None, record_sql: str | None = None,
                 read_url: str | None = None, replica_max_wait: float = 30.0):
        self.url = url
        self.retry = retry or RetryPolicy()
        self._record_sql = record_sql
        self._engine: Engine | None = None
        self.read_url = read_url  # ATTRIBUTION_DB_READ_URL: the replica (storage/read_replica.py, D30)
        self.replica_max_wait = replica_max_wait
        self._replica: Database | None = None

    @classmethod
    def from_settings(cls, settings) -> "Database":
        """The database of a :class:`~attribution_pipeline.settings.Settings`."""
        policy = RetryPolicy(settings.db_retries, settings.db_retry_delay_seconds, settings.db_retry_budget_seconds)
        return cls(settings.db_url, retry=policy, record_sql=settings.record_sql_path,
                   read_url=settings.db_read_url, replica_max_wait=settings.replica_max_wait_seconds)

    def replica(self) -> "Database | None":
        """The read replica's own handle (same retry policy), or None without a read URL. Only
        ``read_replica.choose_reader`` hands it out, after the replication-lag guard (D30)."""
        if self.read_url and self._replica is None:
            self._replica = Database(self.read_url, retry=self.retry, record_sql=self._record_sql)
        return self._replica

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url, record_sql=self._record_sql)
        return self._engine

    def display_url(self) -> str:
        return safe_url(self.url)

    def __repr__(self) -> str:
        read = f", read={safe_url(self.read_url)!r}" if self.read_url else ""
        return f"Database({self.display_url()!r}{read})"
