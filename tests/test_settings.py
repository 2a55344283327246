"""The settings: every variable read once from an environment mapping, named errors for bad values,
secrets masked wherever the object is shown."""

import re
from pathlib import Path

import pytest

from attribution_pipeline.automation.alerts import Alerter
from attribution_pipeline.settings import Settings, SettingsError
from attribution_pipeline.storage.database import Database


def test_defaults_from_an_empty_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.home == tmp_path / ".attribution"
    assert s.db_url == f"sqlite:///{tmp_path / '.attribution' / 'attribution.sqlite'}" == s.default_db_url
    assert (s.partitions_start, s.first_hour) == ("2023-01-01-00:00", 1672531200)
    assert (s.lookback_days, s.lookback_seconds, s.touch_cap, s.chunk_hours) == (30, 30 * 86400, 25, 168)
    assert (s.write_batch_rows, s.journey_source, s.persist_journeys, s.lock_timeout_seconds) == (5000, "clicks", False, 600)
    assert (s.frames_path, s.export_path, s.reports_path) == (
        s.home / "frames", s.home / "exports", s.home / "reports")
    assert (s.alert_webhook_url, s.alert_timeout_seconds, s.db_retries, s.db_retry_delay_seconds) == (None, 5.0, 60, 0.5)
    assert s.db_retry_budget_seconds == 90.0  # a 60 s server restart fits
    assert (s.duckdb_cli, s.record_sql_path, s.dagster_home) == (None, None, None)


def test_every_variable_is_read(tmp_path):
    env = {
        "ATTRIBUTION_HOME": str(tmp_path / "h"), "ATTRIBUTION_DB_URL": "mysql+pymysql://u:pw@db/p",
        "ATTRIBUTION_PARTITIONS_START": "2024-06-01T09:30:00Z", "ATTRIBUTION_LOOKBACK_DAYS": "7",
        "ATTRIBUTION_TOUCH_CAP": " 10 ", "ATTRIBUTION_CHUNK_HOURS": "24", "ATTRIBUTION_WRITE_BATCH_ROWS": "100",
        "ATTRIBUTION_JOURNEY_SOURCE": "stored", "ATTRIBUTION_PERSIST_JOURNEYS": "yes",
        "ATTRIBUTION_LOCK_TIMEOUT": "0", "ATTRIBUTION_FRAMES_DIR": str(tmp_path / "f"),
        "ATTRIBUTION_EXPORT_DIR": str(tmp_path / "e"), "ATTRIBUTION_ALERT_WEBHOOK_URL": "https://hook/x?token=t",
        "ATTRIBUTION_ALERT_TIMEOUT": "0.5", "ATTRIBUTION_DB_RETRIES": "2", "ATTRIBUTION_DB_RETRY_DELAY": "0",
        "ATTRIBUTION_DB_RETRY_BUDGET": "12.5",
        "ATTRIBUTION_DUCKDB_CLI": "/opt/duckdb", "ATTRIBUTION_RECORD_SQL": "/tmp/r.sql",
        "DAGSTER_HOME": str(tmp_path / "d"),
    }
    s = Settings.from_env(env)
    assert s.home == tmp_path / "h" and s.db_url == "mysql+pymysql://u:pw@db/p"
    assert s.partitions_start == "2024-06-01-09:00"  # floored to its hour
    assert (s.lookback_days, s.touch_cap, s.chunk_hours, s.write_batch_rows) == (7, 10, 24, 100)
    assert (s.journey_source, s.persist_journeys, s.lock_timeout_seconds) == ("stored", True, 0)
    assert (s.frames_path, s.export_path, s.dagster_home) == (tmp_path / "f", tmp_path / "e", tmp_path / "d")
    assert (s.alert_webhook_url, s.alert_timeout_seconds) == ("https://hook/x?token=t", 0.5)
    assert (s.db_retries, s.db_retry_delay_seconds, s.duckdb_cli, s.record_sql_path) == (2, 0.0, "/opt/duckdb", "/tmp/r.sql")
    assert s.db_retry_budget_seconds == 12.5
    assert Settings.from_env({"ATTRIBUTION_PARTITIONS_START": "2024-06-01"}).partitions_start == "2024-06-01-00:00"
    assert Settings.from_env({"ATTRIBUTION_PARTITIONS_START": "2024-06-01-05:00"}).partitions_start == "2024-06-01-05:00"


@pytest.mark.parametrize("name, value, message", [
    ("ATTRIBUTION_CHUNK_HOURS", "a week", "ATTRIBUTION_CHUNK_HOURS='a week' is not an integer"),
    ("ATTRIBUTION_CHUNK_HOURS", "0", "ATTRIBUTION_CHUNK_HOURS=0 must be at least 1"),
    ("ATTRIBUTION_LOOKBACK_DAYS", "-1", "ATTRIBUTION_LOOKBACK_DAYS=-1 must be at least 0"),
    ("ATTRIBUTION_JOURNEY_SOURCE", "visitor", "ATTRIBUTION_JOURNEY_SOURCE='visitor': use 'clicks' or 'stored'"),
    ("ATTRIBUTION_PARTITIONS_START", "yesterday", "ATTRIBUTION_PARTITIONS_START='yesterday' is not a date"),
])
def test_a_bad_value_is_a_named_error(name, value, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({name: value})


def test_a_bad_alert_timeout_falls_back_to_its_default():
    assert Settings.from_env({"ATTRIBUTION_ALERT_TIMEOUT": "soon"}).alert_timeout_seconds == 5.0
    assert Settings.from_env({"ATTRIBUTION_ALERT_TIMEOUT": "-3"}).alert_timeout_seconds == 5.0


def test_secrets_are_masked_wherever_the_objects_are_shown(tmp_path):
    s = Settings.from_env({"ATTRIBUTION_HOME": str(tmp_path), "ATTRIBUTION_DB_URL": "mysql+pymysql://app:s3cr3t@db:3306/p",
                           "ATTRIBUTION_ALERT_WEBHOOK_URL": "https://hooks.example/x?token=t0ken"})
    for shown in (repr(s), str(s), repr(Database.from_settings(s)), repr(Alerter.from_settings(s)),
                  Database.from_settings(s).display_url()):
        assert "s3cr3t" not in shown and "t0ken" not in shown, shown
    assert "app:***@db" in repr(s) and "chunk_hours=168" in repr(s)
    changed = s.replace(db_url="sqlite:///x.sqlite", chunk_hours=24)
    assert (changed.db_url, changed.chunk_hours, s.chunk_hours) == ("sqlite:///x.sqlite", 24, 168)
    assert isinstance(changed.home, Path)
