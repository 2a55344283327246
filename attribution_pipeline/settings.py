"""Every setting of the pipeline, read from the environment in one place, once.

:meth:`Settings.from_env` is the only code in the package that reads ``os.environ``. It is
called when the Dagster definitions are built (``definitions.defs``) and once by the
``attribution`` command line; the resulting object is passed down to everything else (as the
``settings`` resource inside Dagster). Tests build their own with :meth:`Settings.replace`.

Two values are secrets: the database URLs (the primary's and the replica's,
``ATTRIBUTION_DB_READ_URL``: they may carry a password) and the alert webhook URL (it may carry a
token). They never enter Dagster's run config, job snapshots or metadata: the
database and the alert sender are plain Python resources built from this object, with no config
schema, and their ``repr`` masks the secret (see ``docs/configuration.md``).
"""

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_HOME = ".attribution"
DEFAULT_SQLITE_NAME = "attribution.sqlite"
DEFAULT_PARTITIONS_START = "2023-01-01-00:00"
KEY_FORMAT = "%Y-%m-%d-%H:%M"


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use (named in the message)."""


def _text(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def _int(env: Mapping[str, str], name: str, default: int, minimum: int | None = None) -> int:
    raw = _text(env, name)
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, positive: bool = True) -> float:
    raw = _text(env, name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = default
    return value if (value > 0 or not positive) else default


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _text(env, name).lower()
    return default if not raw else raw in ("1", "true", "yes", "on")


def _hour_key(raw: str) -> str:
    """A date, a Dagster hour key or ISO-8601 (UTC without an offset), as the hour key it falls in."""
    text = raw.strip()
    for fmt in (KEY_FORMAT, "%Y-%m-%d"):
        try:
            moment = datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
            break
        except ValueError:
            moment = None
    if moment is None:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise SettingsError(f"ATTRIBUTION_PARTITIONS_START={raw!r} is not a date, an hour key or ISO-8601") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % 3600, tz=timezone.utc).strftime(KEY_FORMAT)


#: The shortest retention window: the hourly schedule rewrites the trailing 24 hours (D27).
MIN_RETENTION_DAYS = 2


#: The scope types scoped snapshots can be written for (D31), in Prosper202's scope enum's names.
SCOPE_TYPES = ("campaign", "advertiser", "account", "traffic_source", "landing_page")


def _scope_types(env: Mapping[str, str]) -> tuple[str, ...]:
    """ATTRIBUTION_SCOPE_TYPES: a comma list of :data:`SCOPE_TYPES`, kept in their order (unset or
    empty: all five, the default; ``none``: only the global rows; D31)."""
    text = _text(env, "ATTRIBUTION_SCOPE_TYPES")
    if not text.strip():
        return SCOPE_TYPES
    raw = {t.strip().lower() for t in text.split(",") if t.strip()} - {"none"}
    unknown = sorted(raw - set(SCOPE_TYPES))
    if unknown:
        raise SettingsError(f"ATTRIBUTION_SCOPE_TYPES: unknown scope type(s) {unknown}; use {', '.join(SCOPE_TYPES)} or none")
    return tuple(t for t in SCOPE_TYPES if t in raw)


#: The ``202_clicks_advance`` columns a visitor key may be made of (every column but click_id), and
#: the default key: Prosper202's address, platform, browser and device of the click.
VISITOR_KEY_COLUMNS = ("text_ad_id", "keyword_id", "ip_id", "country_id", "region_id", "city_id", "platform_id",
                       "browser_id", "device_id", "isp_id")
DEFAULT_VISITOR_KEY = ("ip_id", "platform_id", "browser_id", "device_id")


def visitor_key(text: str, name: str = "ATTRIBUTION_VISITOR_KEY") -> tuple[str, ...]:
    """A visitor key recipe: a comma list of :data:`VISITOR_KEY_COLUMNS` (order kept, repeats
    dropped; blank: the default). ``SettingsError`` naming ``name`` for an unknown column or a
    list of none."""
    if not text.strip():
        return DEFAULT_VISITOR_KEY
    columns = tuple(dict.fromkeys(c.strip().lower() for c in text.split(",") if c.strip()))
    unknown = [c for c in columns if c not in VISITOR_KEY_COLUMNS]
    if unknown:
        raise SettingsError(f"{name}: unknown 202_clicks_advance column(s) {unknown}; use a comma list of "
                            f"{', '.join(VISITOR_KEY_COLUMNS)}")
    if not columns:
        raise SettingsError(f"{name}={text!r} names no column: use a comma list of {', '.join(VISITOR_KEY_COLUMNS)}")
    return columns


def _retention_days(env: Mapping[str, str]) -> int | None:
    """ATTRIBUTION_RETENTION_DAYS: unset or empty = retention off (nothing is ever deleted)."""
    if not _text(env, "ATTRIBUTION_RETENTION_DAYS"):
        return None
    return _int(env, "ATTRIBUTION_RETENTION_DAYS", 0, minimum=MIN_RETENTION_DAYS)


def read_url_file(path: str | Path, name: str = "ATTRIBUTION_DB_URL_FILE") -> str:
    """The URL held by the file ``path`` (a Docker/Kubernetes secret): its text without surrounding
    blanks. A missing, unreadable or empty file is a ``SettingsError`` naming ``name`` and the
    path, never the file's content."""
    try:
        url = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{name}={str(path)!r} cannot be read: {type(exc).__name__}") from None
    if not url:
        raise SettingsError(f"{name}={str(path)!r} is empty: it must hold the database URL")
    if "\n" in url:
        raise SettingsError(f"{name}={str(path)!r} holds more than one line: it must hold only the database URL")
    return url


def _db_url(env: Mapping[str, str], home: Path) -> tuple[str, Path | None]:
    """ATTRIBUTION_DB_URL, or the content of ATTRIBUTION_DB_URL_FILE (not both), else SQLite."""
    url, url_file = _text(env, "ATTRIBUTION_DB_URL"), _text(env, "ATTRIBUTION_DB_URL_FILE")
    if url and url_file:
        raise SettingsError("ATTRIBUTION_DB_URL and ATTRIBUTION_DB_URL_FILE are both set: set only one")
    if url_file:
        path = Path(url_file).resolve()
        return read_url_file(path), path
    return url or f"sqlite:///{home / DEFAULT_SQLITE_NAME}", None


def mask_url(url: str | None) -> str:
    """``url`` with any password replaced by ``***`` (for repr and messages)."""
    if not url or "://" not in url:
        return url or ""
    scheme, rest = url.split("://", 1)
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


INSTANCE_SQLITE_SYNC = ("off", "normal", "full")


def _instance_sqlite_sync(env: Mapping[str, str]) -> str:
    level = (_text(env, "ATTRIBUTION_INSTANCE_SQLITE_SYNC") or "off").lower()
    if level not in INSTANCE_SQLITE_SYNC:
        raise SettingsError(f"ATTRIBUTION_INSTANCE_SQLITE_SYNC={level!r}: use one of {', '.join(INSTANCE_SQLITE_SYNC)}")
    return level


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The pipeline's settings (``docs/configuration.md`` lists each variable)."""

    home: Path  # ATTRIBUTION_HOME: the demo database, frames, exports, reports
    db_url: str = dataclasses.field(repr=False)  # ATTRIBUTION_DB_URL, or read from ATTRIBUTION_DB_URL_FILE (secret)
    db_url_file: Path | None = None  # ATTRIBUTION_DB_URL_FILE: the file the URL was read from, if any
    db_read_url: str | None = dataclasses.field(default=None, repr=False)  # ATTRIBUTION_DB_READ_URL: replica (secret, D30)
    replica_max_wait_seconds: float = 30.0  # D30: how long a step waits for the replica before reading the primary
    partitions_start: str = DEFAULT_PARTITIONS_START  # first hourly partition (hour key)
    lookback_days: int = 30  # D2: journey lookback
    touch_cap: int = 25  # D2: newest clicks kept (the converting click may add one)
    chunk_hours: int = 168  # the most hours a chunk (the atomic write unit, D9) holds; sized by the budget
    memory_budget_mb: float = 1536  # peak RSS a run's chunks are sized for (core/chunk_plan.py)
    write_batch_rows: int = 5000  # rows per INSERT batch where LOAD DATA is refused
    journey_source: str = "clicks"  # D13: "clicks" (built at run time) or "stored"
    persist_journeys: bool = False  # D13: also write built journeys into 202_conversion_touchpoints
    export_during_writeback: bool = True  # D35: a full run exports each committed chunk while the next is written
    lock_timeout_seconds: int = 600  # D9: wait for another writer of the same hours
    scope_types: tuple[str, ...] = ()  # D31: scoped snapshot rows written beside the global ones (default none)
    scoped_touchpoints: bool = False  # D31: scoped snapshot rows get their own touchpoint rows (bench/RESULTS.md)
    visitor_key: tuple[str, ...] = DEFAULT_VISITOR_KEY  # 202_clicks_advance columns that make a visitor (per user)
    frames_dir: Path | None = None  # intermediate frames (default home/frames)
    export_dir: Path | None = None  # Parquet exports (default home/exports)
    alert_webhook_url: str | None = dataclasses.field(default=None, repr=False)  # secret
    alert_timeout_seconds: float = 5.0
    db_retries: int = 60  # at most this many attempts of a read or a chunk write on a transient error
    db_retry_delay_seconds: float = 0.5  # first backoff delay, doubled per attempt (at most 5 s)
    db_retry_budget_seconds: float = 90.0  # give up retrying once this long has passed (a 60 s restart fits)
    duckdb_cli: str | None = None  # the duckdb shell for `attribution duckdb` (default: on PATH)
    record_sql_path: str | None = None  # benchmark only: append every MySQL read's SQL here
    export_files_dir: Path | None = None  # export queue files (default home/exports-files)
    webhook_allow_hosts: tuple[str, ...] = ()  # hosts or CIDRs a webhook may reach besides public addresses
    webhook_attempts: int = 4  # at most this many POSTs of one export's webhook (timeouts and 5xx retried)
    webhook_retry_delay_seconds: float = 2.0  # first backoff delay between webhook attempts, doubled per attempt
    tracking_domain: str | None = None  # Prosper202's tracking domain, for webhooks' download_url
    tracking_base_path: str = ""  # the folder Prosper202 is installed under on that domain ("" = root)
    model_change_quiet_seconds: int = 60  # D26: a model or settings change waits this long without another
    model_change_lookback_days: int = 30  # D26: days a model or settings change rewrites (0: the schedule only)
    retention_days: int | None = None  # ATTRIBUTION_RETENTION_DAYS: global retention window (None = off, D27)
    backfill_hours_per_run: int = 0  # D29: hours per run of a backfill (0: one run for any range)
    mysql_write_runs: int = 2  # D29: runs writing to one MySQL at once (the attribution_mysql_writes pool's limit)
    dagster_url: str = "http://127.0.0.1:3000"  # D29: the Dagster webserver `attribution backfill` submits to
    dagster_home: Path | None = None  # DAGSTER_HOME, Dagster's own variable
    instance_sqlite_sync: str = "off"  # D34: PRAGMA synchronous of a SQLite Dagster instance's files (off|normal|full)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """The settings the environment gives (``os.environ`` unless ``env`` is passed)."""
        env = os.environ if env is None else env
        home = Path(_text(env, "ATTRIBUTION_HOME") or DEFAULT_HOME).resolve()
        source = _text(env, "ATTRIBUTION_JOURNEY_SOURCE") or "clicks"
        if source not in ("clicks", "stored"):
            raise SettingsError(f"ATTRIBUTION_JOURNEY_SOURCE={source!r}: use 'clicks' or 'stored'")
        optional_path = lambda name: Path(_text(env, name)).resolve() if _text(env, name) else None  # noqa: E731
        db_url, db_url_file = _db_url(env, home)
        return cls(
            home=home,
            db_url=db_url,
            db_url_file=db_url_file,
            db_read_url=_text(env, "ATTRIBUTION_DB_READ_URL") or None,
            replica_max_wait_seconds=max(0.0, _float(env, "ATTRIBUTION_REPLICA_MAX_WAIT_SECONDS", 30.0, positive=False)),
            partitions_start=_hour_key(_text(env, "ATTRIBUTION_PARTITIONS_START") or DEFAULT_PARTITIONS_START),
            lookback_days=_int(env, "ATTRIBUTION_LOOKBACK_DAYS", 30, minimum=0),
            touch_cap=_int(env, "ATTRIBUTION_TOUCH_CAP", 25, minimum=1),
            chunk_hours=_int(env, "ATTRIBUTION_CHUNK_HOURS", 168, minimum=1),
            memory_budget_mb=_int(env, "ATTRIBUTION_MEMORY_BUDGET_MB", 1536, minimum=64),
            write_batch_rows=_int(env, "ATTRIBUTION_WRITE_BATCH_ROWS", 5000, minimum=1),
            journey_source=source,
            persist_journeys=_bool(env, "ATTRIBUTION_PERSIST_JOURNEYS", False),
            export_during_writeback=_bool(env, "ATTRIBUTION_EXPORT_DURING_WRITEBACK", True),
            lock_timeout_seconds=_int(env, "ATTRIBUTION_LOCK_TIMEOUT", 600, minimum=0),
            scope_types=_scope_types(env),
            scoped_touchpoints=_bool(env, "ATTRIBUTION_SCOPED_TOUCHPOINTS", False),
            visitor_key=visitor_key(_text(env, "ATTRIBUTION_VISITOR_KEY")),
            frames_dir=optional_path("ATTRIBUTION_FRAMES_DIR"),
            export_dir=optional_path("ATTRIBUTION_EXPORT_DIR"),
            alert_webhook_url=_text(env, "ATTRIBUTION_ALERT_WEBHOOK_URL") or None,
            alert_timeout_seconds=_float(env, "ATTRIBUTION_ALERT_TIMEOUT", 5.0),
            db_retries=_int(env, "ATTRIBUTION_DB_RETRIES", 60, minimum=1),
            db_retry_delay_seconds=_float(env, "ATTRIBUTION_DB_RETRY_DELAY", 0.5, positive=False),
            db_retry_budget_seconds=_float(env, "ATTRIBUTION_DB_RETRY_BUDGET", 90.0, positive=False),
            duckdb_cli=_text(env, "ATTRIBUTION_DUCKDB_CLI") or None,
            record_sql_path=_text(env, "ATTRIBUTION_RECORD_SQL") or None,
            export_files_dir=optional_path("ATTRIBUTION_EXPORT_FILES_DIR"),
            webhook_allow_hosts=tuple(h.strip() for h in _text(env, "ATTRIBUTION_WEBHOOK_ALLOW_HOSTS").split(",") if h.strip()),
            webhook_attempts=_int(env, "ATTRIBUTION_WEBHOOK_ATTEMPTS", 4, minimum=1),
            webhook_retry_delay_seconds=_float(env, "ATTRIBUTION_WEBHOOK_RETRY_DELAY", 2.0, positive=False),
            tracking_domain=_text(env, "ATTRIBUTION_TRACKING_DOMAIN") or None,
            tracking_base_path=_text(env, "ATTRIBUTION_TRACKING_BASE_PATH").strip("/"),
            model_change_quiet_seconds=_int(env, "ATTRIBUTION_MODEL_CHANGE_QUIET_SECONDS", 60, minimum=0),
            model_change_lookback_days=_int(env, "ATTRIBUTION_MODEL_CHANGE_LOOKBACK_DAYS", 30, minimum=0),
            retention_days=_retention_days(env),
            backfill_hours_per_run=_int(env, "ATTRIBUTION_BACKFILL_HOURS_PER_RUN", 0, minimum=0),
            mysql_write_runs=_int(env, "ATTRIBUTION_MYSQL_WRITE_RUNS", 2, minimum=1),
            dagster_url=(_text(env, "ATTRIBUTION_DAGSTER_URL") or "http://127.0.0.1:3000").rstrip("/"),
            dagster_home=optional_path("DAGSTER_HOME"),
            instance_sqlite_sync=_instance_sqlite_sync(env),
        )

    def replace(self, **changes) -> "Settings":
        """A copy with ``changes`` (tests, ``--db-url``)."""
        return dataclasses.replace(self, **changes)

    @property
    def frames_path(self) -> Path:
        return self.frames_dir or self.home / "frames"

    @property
    def export_path(self) -> Path:
        return self.export_dir or self.home / "exports"

    @property
    def export_files_path(self) -> Path:
        return self.export_files_dir or self.home / "exports-files"

    @property
    def reports_path(self) -> Path:
        return self.home / "reports"

    @property
    def default_db_url(self) -> str:
        return f"sqlite:///{self.home / DEFAULT_SQLITE_NAME}"

    @property
    def lookback_seconds(self) -> int:
        return self.lookback_days * 86400

    @property
    def first_hour(self) -> int:
        """The first partition's hour (epoch seconds)."""
        return int(datetime.strptime(self.partitions_start, KEY_FORMAT).replace(tzinfo=timezone.utc).timestamp())

    def __repr__(self) -> str:  # the secrets never appear, not even masked in part
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        read = f"db_read_url={mask_url(self.db_read_url)!r}, " if self.db_read_url else ""
        return f"Settings(db_url={mask_url(self.db_url)!r}, " + read + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"
