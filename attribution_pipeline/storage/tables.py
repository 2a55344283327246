"""SQLAlchemy Core tables for every Prosper202 table the engine reads or writes.

Names, columns, types, keys and indexes follow Prosper202's canonical fresh-install DDL
(`202-config/Database/Tables/*.php`, spec §1). MySQL/MariaDB get the exact types
(unsigned ints, DECIMAL, TEXT variants, InnoDB utf8mb4); SQLite, the embedded demo default, gets
the nearest portable types (every auto-increment key becomes ``INTEGER PRIMARY KEY``).

The pipeline never alters or drops an existing table: :func:`create_missing` only creates the
tables that are absent (``checkfirst``), so it is safe on a live Prosper202 database whose
``202_clicks`` may be partitioned.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateIndex

metadata = MetaData()


@compiles(CreateIndex, "sqlite")
def _sqlite_index_name(element, compiler, **kw):
    """SQLite index names are global to the database, Prosper202's are per table: prefix them."""
    index = element.element
    original = index.name
    index.name = f"{index.table.name}__{original}"
    try:
        return compiler.visit_create_index(element, **kw)
    finally:
        index.name = original

_MYSQL = ("mysql", "mariadb")
_TABLE_OPTS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_general_ci",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
    "mariadb_collate": "utf8mb4_general_ci",
}


def _v(portable, mysql_type):
    """A portable type with its exact MySQL/MariaDB variant."""
    return portable.with_variant(mysql_type, *_MYSQL)


def _pk(mysql_type):
    """Auto-increment primary key: exact MySQL type, ``INTEGER PRIMARY KEY`` on SQLite."""
    return Integer().with_variant(mysql_type, *_MYSQL)


def u_bigint():
    return _v(BigInteger(), mysql.BIGINT(20, unsigned=True))


def u_int():
    return _v(BigInteger(), mysql.INTEGER(10, unsigned=True))


def s_int():
    return _v(Integer(), mysql.INTEGER(10))


def u_int11():
    return _v(BigInteger(), mysql.INTEGER(11, unsigned=True))


def u_mediumint():
    return _v(Integer(), mysql.MEDIUMINT(8, unsigned=True))


def u_smallint():
    return _v(SmallInteger(), mysql.SMALLINT(5, unsigned=True))


def tinyint(width=4, unsigned=False):
    return _v(SmallInteger(), mysql.TINYINT(width, unsigned=unsigned))


def decimal(p, s):
    return _v(Numeric(p, s, asdecimal=True), mysql.DECIMAL(p, s))


def longtext():
    return _v(Text(), mysql.LONGTEXT())


def text():
    return _v(Text(), mysql.TEXT())


# --------------------------------------------------------------------------------------------
# 1.1 source tables
# --------------------------------------------------------------------------------------------

users = Table(
    "202_users",
    metadata,
    Column("user_id", _pk(mysql.MEDIUMINT(8, unsigned=True)), primary_key=True, autoincrement=True),
    Column("user_name", String(50), nullable=False, server_default=""),
    Column("user_active", _v(Integer(), mysql.INTEGER(1)), nullable=False, server_default="1"),
    Column("user_deleted", _v(Integer(), mysql.INTEGER(1)), nullable=False, server_default="0"),
    Column("user_timezone", String(50), nullable=False, server_default="America/Los_Angeles"),
    **_TABLE_OPTS,
)

aff_networks = Table(
    "202_aff_networks",
    metadata,
    Column("aff_network_id", _pk(mysql.MEDIUMINT(8, unsigned=True)), primary_key=True, autoincrement=True),
    Column("dni_network_id", u_int(), nullable=True),
    Column("user_id", u_mediumint(), nullable=False),
    Column("aff_network_name", String(50), nullable=False, server_default=""),
    Column("aff_network_deleted", tinyint(1), nullable=False, server_default="0"),
    Column("aff_network_time", u_int(), nullable=False, server_default="0"),
    Index("user_id", "user_id"),
    **_TABLE_OPTS,
)

aff_campaigns = Table(
    "202_aff_campaigns",
    metadata,
    Column("aff_campaign_id", _pk(mysql.MEDIUMINT(8, unsigned=True)), primary_key=True, autoincrement=True),
    Column("aff_campaign_id_public", u_int(), nullable=True),
    Column("user_id", u_mediumint(), nullable=False),
    Column("aff_network_id", u_mediumint(), nullable=False),
    Column("aff_campaign_deleted", tinyint(1), nullable=False, server_default="0"),
    Column("aff_campaign_name", String(50), nullable=False),
    Column("aff_campaign_url", text(), nullable=False),
    Column("aff_campaign_url_2", text(), nullable=True),
    Column("aff_campaign_url_3", text(), nullable=True),
    Column("aff_campaign_url_4", text(), nullable=True),
    Column("aff_campaign_url_5", text(), nullable=True),
    Column("aff_campaign_payout", decimal(8, 2), nullable=False),
    Column("aff_campaign_cloaking", tinyint(1), nullable=False, server_default="0"),
    Column("aff_campaign_time", u_int(), nullable=False),
    Column("aff_campaign_rotate", tinyint(1), nullable=False, server_default="0"),
    Column("aff_campaign_currency", _v(String(3), mysql.CHAR(3)), nullable=False, server_default="USD"),
    Column("aff_campaign_foreign_payout", decimal(8, 2), nullable=False),
    Column("attribution_model_id", _v(Integer(), mysql.INTEGER(11)), nullable=True),
    Index("aff_network_id", "aff_network_id"),
    Index("aff_campaign_deleted", "aff_campaign_deleted"),
    Index("user_id", "user_id"),
    Index("aff_campaign_name", "aff_campaign_name", mysql_length={"aff_campaign_name": 5}),
    Index("aff_campaign_id_public", "aff_campaign_id_public"),
    Index("aff_campaign_id", "aff_campaign_id", "aff_campaign_name", mysql_length={"aff_campaign_name": 5}),
    Index("idx_attribution_model", "attribution_model_id"),
    **_TABLE_OPTS,
)

ppc_accounts = Table(
    "202_ppc_accounts",
    metadata,
    Column("ppc_account_id", _pk(mysql.MEDIUMINT(8, unsigned=True)), primary_key=True, autoincrement=True),
    Column("user_id", u_mediumint(), nullable=False),
    Column("ppc_network_id", u_mediumint(), nullable=False),
    Column("ppc_account_name", String(50), nullable=False),
    Column("ppc_account_deleted", tinyint(1), nullable=False, server_default="0"),
    Column("ppc_account_time", u_int(), nullable=False),
    Column("ppc_account_default", tinyint(1), nullable=False, server_default="0"),
    Index("user_id", "user_id"),
    Index("ppc_network_id", "ppc_network_id"),
    **_TABLE_OPTS,
)

landing_pages = Table(
    "202_landing_pages",
    metadata,
    Column("landing_page_id", _pk(mysql.MEDIUMINT(8, unsigned=True)), primary_key=True, autoincrement=True),
    Column("user_id", u_mediumint(), nullable=False),
    Column("landing_page_id_public", u_int(), nullable=True),
    Column("aff_campaign_id", u_mediumint(), nullable=False),
    Column("landing_page_nickname", String(255), nullable=False, server_default=""),
    Column("landing_page_url", text(), nullable=False),
    Column("leave_behind_page_url", text(), nullable=True),
    Column("landing_page_deleted", tinyint(1), nullable=False, server_default="0"),
    Column("landing_page_time", u_int(), nullable=False),
    Column("landing_page_type", tinyint(1), nullable=False, server_default="0"),
    Index("user_id", "user_id"),
    Index("aff_campaign_id", "aff_campaign_id"),
    **_TABLE_OPTS,
)

clicks = Table(
    "202_clicks",
    metadata,
    Column("click_id", u_bigint(), nullable=False),
    Column("user_id", u_mediumint(), nullable=False),
    Column("aff_campaign_id", u_mediumint(), nullable=False, server_default="0"),
    Column("landing_page_id", u_mediumint(), nullable=False, server_default="0"),
    Column("ppc_account_id", u_mediumint(), nullable=False),
    Column("click_cpc", decimal(7, 5), nullable=False),
    Column("click_payout", decimal(11, 5), nullable=False, server_default="0.00000"),
    Column("click_lead", tinyint(1), nullable=False, server_default="0"),
    Column("click_filtered", tinyint(1), nullable=False, server_default="0"),
    Column("click_bot", tinyint(1), nullable=False, server_default="0"),
    Column("click_alp", tinyint(1), nullable=False, server_default="0"),
    Column("click_time", u_int(), nullable=False),
    Column("rotator_id", u_int(), nullable=False, server_default="0"),
    Column("rule_id", u_int(), nullable=False, server_default="0"),
    Index("aff_campaign_id", "aff_campaign_id"),
    Index("ppc_account_id", "ppc_account_id"),
    Index("click_lead", "click_lead"),
    Index("click_filtered", "click_filtered"),
    Index("click_id", "click_id"),
    Index("overview_index", "user_id", "click_filtered", "aff_campaign_id", "ppc_account_id"),
    Index("user_id", "user_id", "click_lead"),
    Index("click_alp", "click_alp"),
    Index("landing_page_id", "landing_page_id"),
    Index("overview_index2", "user_id", "click_filtered", "landing_page_id", "aff_campaign_id"),
    Index("rotator_id", "rotator_id"),
    Index("user_click_time", "user_id", "click_time"),
    **_TABLE_OPTS,
)

#: Per-click visitor details (``ClickTables::clicksAdvance``): ids into Prosper202's lookup tables
#: (``202_ips``, ``202_platforms``, ``202_browsers``, ``202_device_models``, locations, ISPs).
#: PERSONAL DATA: read only for visitor-level journeys, where the columns of the visitor key
#: (ATTRIBUTION_VISITOR_KEY) are reduced to an opaque in-memory integer as they are read
#: (``storage/visitor_clicks.py``); never exported, logged or stored by the pipeline.
clicks_advance = Table(
    "202_clicks_advance",
    metadata,
    Column("click_id", u_bigint(), primary_key=True, autoincrement=False),
    Column("text_ad_id", u_mediumint(), nullable=False, server_default="0"),
    Column("keyword_id", u_bigint(), nullable=False, server_default="0"),
    Column("ip_id", u_bigint(), nullable=False),
    Column("country_id", u_bigint(), nullable=False),
    Column("region_id", u_bigint(), nullable=False),
    Column("city_id", u_bigint(), nullable=False),
    Column("platform_id", u_bigint(), nullable=False),
    Column("browser_id", u_bigint(), nullable=False),
    Column("device_id", u_bigint(), nullable=False),
    Column("isp_id", u_bigint(), nullable=False, server_default="0"),
    Index("text_ad_id", "text_ad_id"),
    Index("keyword_id", "keyword_id"),
    Index("ip_id", "ip_id"),
    **_TABLE_OPTS,
)

conversion_logs = Table(
    "202_conversion_logs",
    metadata,
    Column("conv_id", _pk(mysql.INTEGER(11, unsigned=True)), primary_key=True, autoincrement=True),
    Column("click_id", u_bigint(), nullable=False),
    Column("transaction_id", String(255), nullable=True),
    Column("campaign_id", u_mediumint(), nullable=False),
    Column("click_payout", decimal(11, 5), nullable=False),
    Column("user_id", u_mediumint(), nullable=False),
    Column("click_time", s_int(), nullable=False),
    Column("conv_time", s_int(), nullable=False),
    Column("time_difference", text(), nullable=False),
    Column("ip", String(45), nullable=False, server_default=""),
    Column("pixel_type", u_int11(), nullable=False),
    Column("user_agent", text(), nullable=False),
    Column("deleted", tinyint(4), nullable=False, server_default="0"),
    UniqueConstraint("click_id", "transaction_id", name="uniq_click_transaction"),
    Index("user_id", "user_id"),
    Index("campaign_id", "campaign_id"),
    **_TABLE_OPTS,
)

conversion_touchpoints = Table(
    "202_conversion_touchpoints",
    metadata,
    Column("touchpoint_id", _pk(mysql.BIGINT(20, unsigned=True)), primary_key=True, autoincrement=True),
    Column("conv_id", u_int11(), nullable=False),
    Column("click_id", u_bigint(), nullable=False),
    Column("click_time", u_int(), nullable=False),
    Column("position", u_smallint(), nullable=False, server_default="0"),
    Column("created_at", u_int(), nullable=False),
    Index("conv_id", "conv_id"),
    Index("click_lookup", "click_id"),
    **_TABLE_OPTS,
)

attribution_models = Table(
    "202_attribution_models",
    metadata,
    Column("model_id", _pk(mysql.BIGINT(20, unsigned=True)), primary_key=True, autoincrement=True),
    Column("user_id", u_mediumint(), nullable=False),
    Column("model_name", String(255), nullable=False),
    Column("model_slug", String(191), nullable=False),
    Column("model_type", String(50), nullable=False),
    Column("weighting_config", longtext(), nullable=True),
    Column("is_active", tinyint(1), nullable=False, server_default="1"),
    Column("is_default", tinyint(1), nullable=False, server_default="0"),
    Column("created_at", u_int(), nullable=False),
    Column("updated_at", u_int(), nullable=False),
    UniqueConstraint("user_id", "model_slug", name="model_slug_user"),
    Index("user_default", "user_id", "is_default"),
    **_TABLE_OPTS,
)

attribution_settings = Table(
    "202_attribution_settings",
    metadata,
    Column("setting_id", _pk(mysql.BIGINT(20, unsigned=True)), primary_key=True, autoincrement=True),
    Column("user_id", u_mediumint(), nullable=False),
    Column("scope_type", String(50), nullable=False),
    Column("scope_id", u_bigint(), nullable=True),
    Column("model_id", u_bigint(), nullable=False),
    Column("multi_touch_enabled", tinyint(1, unsigned=True), nullable=False, server_default="1"),
    Column("multi_touch_enabled_at", u_int(), nullable=True),
    Column("multi_touch_disabled_at", u_int(), nullable=True),
    Column("effective_at", u_int(), nullable=False),
    Column("created_at", u_int(), nullable=False),
    Column("updated_at", u_int(), nullable=False),
    UniqueConstraint("user_id", "scope_type", "scope_id", name="user_scope"),
    UniqueConstraint("user_id", "scope_type", "scope_id", "model_id", name="user_scope_model"),
    UniqueConstraint("user_id", "scope_type", "scope_id", "multi_touch_enabled", name="user_scope_multi_touch"),
    Index("model_lookup", "model_id"),
    **_TABLE_OPTS,
)

# --------------------------------------------------------------------------------------------
# 1.2 output tables
# --------------------------------------------------------------------------------------------

attribution_snapshots = Table(
    "202_attribution_snapshots",
    metadata,
    Column("snapshot_id", _pk(mysql.BIGINT(20, unsigned=True)), primary_key=True, autoincrement=True),
    Column("model_id", u_bigint(), nullable=False),
    Column("user_id", u_mediumint(), nullable=False),
    Column("scope_type", String(50), nullable=False),
    Column("scope_id", u_bigint(), nullable=True),
    Column("date_hour", u_int(), nullable=False),
    Column("lookback_start", u_int(), nullable=False),
    Column("lookback_end", u_int(), nullable=False),
    Column("attributed_clicks", u_int(), nullable=False, server_default="0"),
    Column("attributed_conversions", u_int(), nullable=False, server_default="0"),
    Column("attributed_revenue", decimal(12, 4), nullable=False, server_default="0.0000"),
    Column("attributed_cost", decimal(12, 4), nullable=False, server_default="0.0000"),
    Column("created_at", u_int(), nullable=False),
    Index("model_hour_scope", "model_id", "date_hour", "scope_type", "scope_id"),
    Index("user_hour", "user_id", "date_hour"),
    **_TABLE_OPTS,
)

attribution_touchpoints = Table(
    "202_attribution_touchpoints",
    metadata,
    Column("touchpoint_id", _pk(mysql.BIGINT(20, unsigned=True)), primary_key=True, autoincrement=True),
    Column("snapshot_id", u_bigint(), nullable=False),
    Column("conv_id", u_int11(), nullable=False),
    Column("click_id", u_bigint(), nullable=False),
    Column("position", u_smallint(), nullable=False, server_default="0"),
    Column("credit", decimal(10, 5), nullable=False, server_default="0.00000"),
    Column("weight", decimal(10, 5), nullable=False, server_default="0.00000"),
    Column("created_at", u_int(), nullable=False),
    Index("snapshot_conv", "snapshot_id", "conv_id"),
    Index("click_lookup", "click_id"),
    **_TABLE_OPTS,
)

attribution_audit = Table(
    "202_attribution_audit",
    metadata,
    Column("audit_id", _pk(mysql.BIGINT(20, unsigned=True)), primary_key=True, autoincrement=True),
    Column("user_id", u_mediumint(), nullable=False),
    Column("model_id", u_bigint(), nullable=True),
    Column("action", String(50), nullable=False),
    Column("metadata", longtext(), nullable=True),
    Column("created_at", u_int(), nullable=False),
    Index("user_lookup", "user_id"),
    Index("model_lookup", "model_id"),
    Index("action_lookup", "action"),
    **_TABLE_OPTS,
)

#: Prosper202's export queue, canonical schema (spec §1; the alternative schema of the 1.9.59
#: upgrade is detected from the columns by ``export_queue/queue_schema.py``, D23). Prosper202's
#: dashboard and API insert the rows; the export queue (not the hourly pipeline) updates them.
attribution_exports = Table(
    "202_attribution_exports",
    metadata,
    Column("export_id", _pk(mysql.BIGINT(20, unsigned=True)), primary_key=True, autoincrement=True),
    Column("user_id", u_mediumint(), nullable=False),
    Column("model_id", u_int11(), nullable=False),
    Column("scope_type", String(32), nullable=False),
    Column("scope_id", u_bigint(), nullable=True),
    Column("start_hour", u_int(), nullable=False),
    Column("end_hour", u_int(), nullable=False),
    Column("requested_format", String(16), nullable=False, server_default="csv"),
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("options", longtext(), nullable=True),
    Column("webhook_url", String(500), nullable=True),
    Column("webhook_secret", String(255), nullable=True),
    Column("webhook_headers", text(), nullable=True),
    Column("file_path", String(500), nullable=True),
    Column("rows_exported", u_int(), nullable=True),
    Column("queued_at", u_int(), nullable=False),
    Column("started_at", u_int(), nullable=True),
    Column("completed_at", u_int(), nullable=True),
    Column("failed_at", u_int(), nullable=True),
    Column("last_error", text(), nullable=True),
    Column("webhook_attempted_at", u_int(), nullable=True),
    Column("webhook_status_code", _v(Integer(), mysql.INTEGER(11)), nullable=True),
    Column("webhook_response_body", _v(Text(), mysql.MEDIUMTEXT()), nullable=True),
    Column("created_at", u_int(), nullable=False),
    Column("updated_at", u_int(), nullable=False),
    Index("model_status", "model_id", "status"),
    Index("user_status", "user_id", "status"),
    Index("queued_at", "queued_at"),
    **_TABLE_OPTS,
)

cronjobs = Table(
    "202_cronjobs",
    metadata,
    Column("cronjob_type", String(5), nullable=False),
    Column("cronjob_time", _v(Integer(), mysql.INTEGER(11)), nullable=False),
    Index("cronjob_type", "cronjob_type", "cronjob_time"),
    **_TABLE_OPTS,
)

cronjob_logs = Table(
    "202_cronjob_logs",
    metadata,
    Column("id", _pk(mysql.INTEGER(10, unsigned=True)), primary_key=True, autoincrement=True),
    Column("last_execution_time", u_int(), nullable=False),
    **_TABLE_OPTS,
)

# --------------------------------------------------------------------------------------------
# the pipeline's own table (not Prosper202's): what each (user, hour) was last computed from
# --------------------------------------------------------------------------------------------

#: One row per (user, hour) the pipeline wrote: the fingerprint of the inputs its rows were
#: computed from, of its stored snapshot rows as written, and the write's token and the token the
#: Parquet export last published (D22: incremental runs).
source_state = Table(
    "attribution_source_state",
    metadata,
    Column("user_id", u_mediumint(), primary_key=True, autoincrement=False),
    Column("date_hour", u_int(), primary_key=True, autoincrement=False),
    Column("source_fp", String(48), nullable=False),
    Column("stored_fp", String(48), nullable=False),
    Column("write_token", String(64), nullable=False),
    Column("export_token", String(64), nullable=True),
    Column("written_at", u_int(), nullable=False),
    Index("hour_lookup", "date_hour"),
    **_TABLE_OPTS,
)

#: Per-user retention windows (D27): a user's row overrides ATTRIBUTION_RETENTION_DAYS; ``days = 0``
#: keeps that user's rows for ever. Only the retention job reads it; operators write it.
retention_windows = Table(
    "attribution_retention",
    metadata,
    Column("user_id", u_mediumint(), primary_key=True, autoincrement=False),
    Column("days", u_int(), nullable=False),
    Column("updated_at", u_int(), nullable=False, server_default="0"),
    **_TABLE_OPTS,
)

#: The Markov chains of the data-driven model (D32): one row per fit, a (model, training window,
#: config) the credits of that window's next day use. ``transitions`` holds the transition counts
#: as JSON (channel ids, never a visitor attribute).
markov_fits = Table(
    "attribution_markov_fits",
    metadata,
    Column("fit_id", _pk(mysql.BIGINT(20, unsigned=True)), primary_key=True, autoincrement=True),
    Column("model_id", u_bigint(), nullable=False),
    Column("user_id", u_mediumint(), nullable=False),
    Column("window_start", u_int(), nullable=False),
    Column("window_end", u_int(), nullable=False),
    Column("config_hash", String(32), nullable=False),
    Column("paths", u_int(), nullable=False),
    Column("converting_paths", u_int(), nullable=False),
    Column("conversion_probability", Double(), nullable=False),
    Column("transitions", longtext(), nullable=False),
    Column("fitted_at", u_int(), nullable=False),
    Index("fit_key", "model_id", "window_end", "config_hash", unique=True),
    **_TABLE_OPTS,
)

#: Each channel of a fit's paths: its chain channel, that channel's removal effect and share (D32).
markov_effects = Table(
    "attribution_markov_effects",
    metadata,
    Column("fit_id", u_bigint(), primary_key=True, autoincrement=False),
    Column("channel_id", BigInteger(), primary_key=True, autoincrement=False),  # a channel of the paths
    Column("model_channel", BigInteger(), nullable=False),  # itself, or -1: "other" (grouped, order 2)
    Column("removal_effect", Double(), nullable=False),
    Column("share", Double(), nullable=False),
    **_TABLE_OPTS,
)

#: Tables the pipeline reads (never written, except conversion touchpoints when journey
#: persistence is switched on).
SOURCE_TABLES = (
    users, aff_networks, aff_campaigns, ppc_accounts, landing_pages, clicks, clicks_advance, conversion_logs,
    conversion_touchpoints, attribution_models, attribution_settings,
)
#: Tables the pipeline writes.
OUTPUT_TABLES = (attribution_snapshots, attribution_touchpoints, attribution_audit, cronjob_logs)
#: Prosper202's export queue: its rows are requests Prosper202 inserts, which the export queue
#: works through (never truncated, never rewritten by the hourly pipeline).
QUEUE_TABLES = (attribution_exports,)
#: The pipeline's own tables (created by ``init-db``; Prosper202 knows nothing of them).
PIPELINE_TABLES = (source_state, retention_windows, markov_fits, markov_effects)

#: Cron log row Prosper202's System Checks page reads for the attribution rebuild.
CRONJOB_LOG_ID_ATTRIBUTION = 2
#: Cron log row Prosper202's System Checks page reads for the export worker (stamped on every poll).
CRONJOB_LOG_ID_EXPORT = 3


def create_missing(engine: Engine) -> list[str]:
    """Create every table of :data:`metadata` that does not exist yet; return the names created.

    Existing tables are left exactly as they are (no ALTER, no DROP), whatever their shape.
    """
    from sqlalchemy import inspect

    existing = set(inspect(engine).get_table_names())
    missing = [t for t in metadata.sorted_tables if t.name not in existing]
    with engine.begin() as conn:
        for table in missing:
            table.create(conn, checkfirst=True)
    return [t.name for t in missing]
