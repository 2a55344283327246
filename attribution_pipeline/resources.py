"""Dagster resources: the database, the pipeline's knobs, and the scope of one run.

All three are configured from the environment in ``definitions.py``; the database URL goes
through ``EnvVar`` so that credentials never appear in the Dagster UI or run storage.
"""

import os
from pathlib import Path
from typing import Optional

import dagster as dg
from sqlalchemy.engine import Engine

from attribution_pipeline.db import attribution_home, make_engine, resolve_db_url, safe_url

_ENGINES: dict[str, Engine] = {}


class DatabaseResource(dg.ConfigurableResource):
    """Prosper202's database: any SQLAlchemy URL (``ATTRIBUTION_DB_URL``; unset = embedded SQLite)."""

    url: Optional[str] = None

    def resolved_url(self) -> str:
        return resolve_db_url(self.url)

    def engine(self) -> Engine:
        url = self.resolved_url()
        if url not in _ENGINES:
            _ENGINES[url] = make_engine(url)
        return _ENGINES[url]

    def display_url(self) -> str:
        return safe_url(self.resolved_url())


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    return default if not raw else raw in ("1", "true", "yes", "on")


class PipelineSettings(dg.ConfigurableResource):
    """The knobs (README "Knobs"): journey rule, chunking, batching, locking."""

    lookback_days: int = 30  # D2: journey lookback
    touch_cap: int = 25  # D2: newest clicks kept (the converting click may add one)
    chunk_hours: int = 168  # hours computed and committed together (the atomic write unit, D9)
    write_batch_rows: int = 5000  # rows per INSERT batch
    journey_source: str = "clicks"  # D13: "clicks" (built at run time) or "stored" (202_conversion_touchpoints)
    persist_journeys: bool = False  # D13: also write built journeys into 202_conversion_touchpoints
    lock_timeout_seconds: int = 600  # D9: wait for another writer of the same hours
    frames_dir: str = ""  # where intermediate frames live (default $ATTRIBUTION_HOME/frames)

    @classmethod
    def from_env(cls) -> "PipelineSettings":
        return cls(
            lookback_days=_env_int("ATTRIBUTION_LOOKBACK_DAYS", 30),
            touch_cap=_env_int("ATTRIBUTION_TOUCH_CAP", 25),
            chunk_hours=_env_int("ATTRIBUTION_CHUNK_HOURS", 168),
            write_batch_rows=_env_int("ATTRIBUTION_WRITE_BATCH_ROWS", 5000),
            journey_source=os.environ.get("ATTRIBUTION_JOURNEY_SOURCE", "clicks").strip() or "clicks",
            persist_journeys=_env_bool("ATTRIBUTION_PERSIST_JOURNEYS", False),
            lock_timeout_seconds=_env_int("ATTRIBUTION_LOCK_TIMEOUT", 600),
            frames_dir=os.environ.get("ATTRIBUTION_FRAMES_DIR", ""),
        )

    @property
    def lookback_seconds(self) -> int:
        return self.lookback_days * 86400

    def frames_path(self) -> Path:
        return Path(self.frames_dir) if self.frames_dir else attribution_home() / "frames"


class RunScope(dg.ConfigurableResource):
    """What one run covers beyond its hours (CLI ``--user``/``--model``/``--dry-run``).

    Empty lists mean every non-deleted user and every active model. A dry run computes everything,
    compares it with the stored rows and writes nothing (D20).
    """

    users: list[int] = []
    models: list[int] = []
    dry_run: bool = False
    report_path: str = ""  # where a dry run writes its per-(user, model, hour) comparison (JSON)

    @property
    def is_full(self) -> bool:
        return not self.users and not self.models and not self.dry_run
