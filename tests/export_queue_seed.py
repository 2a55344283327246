"""Seed helpers of the export queue tests: users, models, snapshot rows and export requests,
inserted with raw SQL as Prosper202's dashboard and API insert them."""

import time

from sqlalchemy import text

from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import database

H0 = 1717200000  # 2024-06-01 00:00 UTC
NOW = 1717300000

#: The alternative schema of Prosper202's 1.9.58 -> 1.9.59 upgrade step (no options, secret,
#: queued_at, started_at, failed_at or rows_exported; format, download_token, webhook_method,
#: last_attempted_at, error_message instead).
ALTERNATIVE_DDL = """
CREATE TABLE `202_attribution_exports` (
  `export_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `user_id` mediumint(8) unsigned NOT NULL,
  `model_id` bigint(20) unsigned NOT NULL,
  `scope_type` varchar(32) NOT NULL DEFAULT 'global',
  `scope_id` bigint(20) unsigned DEFAULT NULL,
  `start_hour` int(10) unsigned NOT NULL,
  `end_hour` int(10) unsigned NOT NULL,
  `format` varchar(10) NOT NULL DEFAULT 'csv',
  `status` varchar(20) NOT NULL DEFAULT 'pending',
  `file_path` varchar(500) DEFAULT NULL,
  `download_token` varchar(64) DEFAULT NULL,
  `webhook_url` varchar(500) DEFAULT NULL,
  `webhook_method` varchar(10) DEFAULT 'POST',
  `webhook_headers` text DEFAULT NULL,
  `last_attempted_at` int(10) unsigned DEFAULT NULL,
  `completed_at` int(10) unsigned DEFAULT NULL,
  `error_message` text DEFAULT NULL,
  `created_at` int(10) unsigned NOT NULL,
  `updated_at` int(10) unsigned NOT NULL,
  PRIMARY KEY (`export_id`),
  KEY `user_status` (`user_id`, `status`),
  KEY `model_status` (`model_id`, `status`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
"""


def engine_for(url):
    return database.make_engine(url)


def queue_settings(url, tmp_path, **changes) -> Settings:
    return Settings(home=tmp_path / "home", db_url=url, export_files_dir=tmp_path / "files").replace(**changes)


def add_user(conn, user_id, *, deleted=0):
    conn.execute(text("INSERT INTO 202_users (user_id, user_name, user_deleted) VALUES (:u, :n, :d)"),
                 {"u": user_id, "n": f"user{user_id}", "d": deleted})


def add_model(conn, model_id, user_id):
    conn.execute(text("INSERT INTO 202_attribution_models (model_id, user_id, model_name, model_slug, model_type, "
                      "weighting_config, is_active, is_default, created_at, updated_at) VALUES "
                      "(:m, :u, :n, :n, 'last_touch', '{}', 1, 0, 1, 1)"), {"m": model_id, "u": user_id, "n": f"m{model_id}"})


def add_snapshot(conn, snapshot_id, model_id, date_hour, *, scope_type="global", scope_id=None, clicks=0,
                 conversions=0, revenue="0", cost="0", user_id=1):
    conn.execute(text(
        "INSERT INTO 202_attribution_snapshots (snapshot_id, model_id, user_id, scope_type, scope_id, date_hour, "
        "lookback_start, lookback_end, attributed_clicks, attributed_conversions, attributed_revenue, "
        "attributed_cost, created_at) VALUES (:id, :m, :u, :st, :si, :dh, :ls, :le, :c, :v, :r, :k, :ca)"),
        {"id": snapshot_id, "m": model_id, "u": user_id, "st": scope_type, "si": scope_id, "dh": date_hour,
         "ls": date_hour - 3600, "le": date_hour + 3599, "c": clicks, "v": conversions, "r": revenue, "k": cost,
         "ca": date_hour + 7200})


def add_export(conn, *, user_id=1, model_id=1, scope_type="global", scope_id=0, start=H0, end=H0 + 7200,
               fmt="csv", status="pending", queued_at=None, webhook_url=None, secret=None, headers=None,
               alternative=False) -> int:
    queued_at = int(time.time()) if queued_at is None else queued_at
    if alternative:
        sql = ("INSERT INTO 202_attribution_exports (user_id, model_id, scope_type, scope_id, start_hour, end_hour, "
               "format, status, webhook_url, webhook_headers, created_at, updated_at) VALUES "
               "(:u, :m, :st, :si, :s, :e, :f, :status, :url, :h, :q, :q)")
    else:
        sql = ("INSERT INTO 202_attribution_exports (user_id, model_id, scope_type, scope_id, start_hour, end_hour, "
               "requested_format, status, options, webhook_url, webhook_secret, webhook_headers, queued_at, "
               "created_at, updated_at) VALUES (:u, :m, :st, :si, :s, :e, :f, :status, "
               ":options, :url, :secret, :h, :q, :q, :q)")
    result = conn.execute(text(sql), {"u": user_id, "m": model_id, "st": scope_type, "si": scope_id, "s": start,
                                      "e": end, "f": fmt, "status": status, "url": webhook_url, "secret": secret,
                                      "h": headers, "q": queued_at,
                                      "options": '{"requested_by":1,"created_via":"api"}'})
    return int(result.lastrowid)


def export_row(conn, export_id) -> dict:
    return dict(conn.execute(text("SELECT * FROM 202_attribution_exports WHERE export_id = :i"),
                             {"i": export_id}).mappings().one())


def seed_owners(conn):
    """Users 1 and 2 (active), 3 (deleted); model 1 and 5 of user 1, model 2 of user 2, 3 of user 3."""
    for user_id, deleted in ((1, 0), (2, 0), (3, 1)):
        add_user(conn, user_id, deleted=deleted)
    for model_id, user_id in ((1, 1), (2, 2), (3, 3), (5, 1)):
        add_model(conn, model_id, user_id)
