"""The export schema: every column and type of the Parquet tables (pinned by tests)."""

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core.precision import CREDIT_DTYPE, MONEY_DTYPE

#: The tables of the conversions' hours: an hour's ``date_hour`` is its conversions' hour.
TABLES = ("snapshots", "touchpoints", "journeys")
#: Every table an exported hour has a file of: the conversions' tables and ``click_spend``, whose
#: hour is its clicks' (every click of the hour in ``202_clicks``: the spend side of ``accrual``).
EXPORT_TABLES = (*TABLES, "click_spend")

TIMESTAMP = pl.Datetime("us")  # UTC wall time (D17), no zone: DuckDB TIMESTAMP
PAYOUT_DTYPE = pl.Decimal(11, 5)  # 202_conversion_logs.click_payout
CPC_DTYPE = pl.Decimal(7, 5)  # 202_clicks.click_cpc
SHARE_DTYPE = pl.Decimal(18, 4)  # revenue_share / cost_share
SHARE_SCALE = 4
SPEND_DTYPE = pl.Decimal(18, 5)  # SUM(202_clicks.click_cpc), exact
SPEND_SCALE = 5

_HOUR = {"date_hour": pl.Int64, "hour_start": TIMESTAMP}
_MODEL = {
    "model_id": pl.Int64,
    "model_name": pl.String,
    "model_slug": pl.String,
    "model_type": pl.String,
    "model_active": pl.Boolean,
}
#: A click's campaign, ppc account and landing page, with their names.
_CLICK_DIMENSIONS = {
    "campaign_id": pl.Int64,
    "campaign_name": pl.String,
    "ppc_account_id": pl.Int64,
    "ppc_account_name": pl.String,
    "landing_page_id": pl.Int64,
    "landing_page_name": pl.String,
}
_TOUCH_DIMENSIONS = {**_CLICK_DIMENSIONS, "touch_cpc": CPC_DTYPE}

#: The scope of a snapshot row (D31): ``global`` (``scope_id`` null) or one of the scope types
#: (``campaign``, ``advertiser``, ``account``, ``traffic_source``, ``landing_page``) and its id.
SCOPE_COLUMNS = {"scope_type": pl.String, "scope_id": pl.Int64}

SNAPSHOTS_EXPORT = {
    **_HOUR,
    "snapshot_id": pl.Int64,
    "user_id": pl.Int64,
    **SCOPE_COLUMNS,
    **_MODEL,
    "attributed_clicks": pl.Int64,
    "attributed_conversions": pl.Int64,
    "attributed_revenue": MONEY_DTYPE,
    "attributed_cost": MONEY_DTYPE,
}

TOUCHPOINTS_EXPORT = {
    **_HOUR,
    "snapshot_id": pl.Int64,
    "user_id": pl.Int64,
    **_MODEL,
    "conv_id": pl.Int64,
    "conv_time": TIMESTAMP,
    "conversion_payout": PAYOUT_DTYPE,
    "converting_cpc": CPC_DTYPE,
    "click_id": frames.CLICK_ID,
    "click_time": TIMESTAMP,
    "position": pl.Int32,
    "journey_position": pl.Int32,
    "journey_length": pl.Int32,
    "is_converting": pl.Boolean,
    "credit": CREDIT_DTYPE,
    "revenue_share": SHARE_DTYPE,
    "cost_share": SHARE_DTYPE,
    **_TOUCH_DIMENSIONS,
}

JOURNEYS_EXPORT = {
    **_HOUR,
    "user_id": pl.Int64,
    "conv_id": pl.Int64,
    "conv_time": TIMESTAMP,
    "position": pl.Int32,
    "journey_length": pl.Int32,
    "click_id": frames.CLICK_ID,
    "click_time": TIMESTAMP,
    "is_converting": pl.Boolean,
    "multi_touch": pl.Boolean,
    **_TOUCH_DIMENSIONS,
}

#: One row per (user, click hour, campaign, ppc account, landing page) of every click in
#: ``202_clicks`` (journey clicks or not), a click id stored twice in a user's hour counted once.
CLICK_SPEND_EXPORT = {
    **_HOUR,
    "user_id": pl.Int64,
    **_CLICK_DIMENSIONS,
    "clicks": pl.Int64,
    "spend": SPEND_DTYPE,
}

SCHEMAS = {"snapshots": SNAPSHOTS_EXPORT, "touchpoints": TOUCHPOINTS_EXPORT, "journeys": JOURNEYS_EXPORT,
           "click_spend": CLICK_SPEND_EXPORT}
SORT_KEYS = {
    "snapshots": ["date_hour", "user_id", "model_id", "snapshot_id"],  # the global row first: lowest id
    "touchpoints": ["date_hour", "user_id", "model_id", "snapshot_id", "conv_id", "position"],
    "journeys": ["date_hour", "user_id", "conv_id", "position"],
    "click_spend": ["date_hour", "user_id", "campaign_id", "ppc_account_id", "landing_page_id"],
}
