"""Parquet exports for analysts: what the pipeline stored, one file per table and UTC hour.

Layout (hive-partitioned, one dataset folder per table; DuckDB reads each table with
``read_parquet('<root>/<table>/**/*.parquet', hive_partitioning = true)``)::

    $ATTRIBUTION_EXPORT_DIR/            (default $ATTRIBUTION_HOME/exports)
        snapshots/date=2025-03-01/hour=09/part.parquet
        touchpoints/date=2025-03-01/hour=09/part.parquet
        journeys/date=2025-03-01/hour=09/part.parquet

``date``/``hour`` are the UTC hour of the *conversions* (Prosper202's ``date_hour``, D17). Every
exported hour has exactly one file per table (an hour without rows has an empty file), written to
a temporary name and renamed into place, so a reader never sees a partial file or two versions of
an hour, and a crash leaves the previous file (plus, at worst, an ignored ``.tmp``).

What an hour holds (column meanings in README, "Exports for analysts"):

* ``snapshots``: every global row of ``202_attribution_snapshots`` stored for the hour *after the
  write-back committed*: all users and all models, including rows of inactive models and of users a
  ``--user`` run did not select (those rows are still in MySQL, so they are still exported). The
  money columns are the stored DECIMAL(12,4) values, so DuckDB totals equal MySQL totals exactly.
* ``touchpoints``: every ``202_attribution_touchpoints`` row of those snapshots, with the model,
  the conversion (time, payout), the touch click (time, campaign, traffic source, landing page,
  its own cpc; ``202_clicks`` deduplicated by click id as in D15) and two extra measures (D5):
  ``revenue_share`` and ``cost_share``, the snapshot's stored revenue and cost split over its
  touches in proportion to ``payout x credit`` and ``converting cpc x credit`` and rounded to
  4 decimals by largest remainder (:func:`allocate`), so that they sum *exactly* to the stored
  snapshot totals. (``conversion_payout * credit`` summed over a snapshot differs from the stored
  total by the rounding of the stored credits, about ``payout x touches x 0.000005`` at most.)
  ``position`` is the stored one (PHP records last-touch credit at position 0, Q11);
  ``journey_position``/``journey_length`` place each touch in its journey.
* ``journeys``: one row per touch of every conversion's journey (credited or not), with the
  journey length. Journeys are not stored in MySQL (D13), so they come from the pipeline: after a
  full run, the ``journeys`` frames the run just wrote; after a scoped run (``--user``/``--model``)
  the selected users' journeys are recomputed with the pipeline's own rules and replace only their
  rows in the hour's existing file, so a scoped run never truncates the hour. An hour with neither
  an export nor a frame is recomputed for every user.

Writers of one export folder take turns (an ``flock`` on ``.export.lock`` around read + write; a
run's export step holds it for all its chunks, reading the next chunk while it writes this one), so
the last file written for an hour holds the latest committed state. No personal data: ``ip``, ``user_agent`` and referer-like columns are never selected. Reads are
SQLAlchemy Core with bound parameters (``db.read_frame``); frames are built with Polars
expressions.
"""

import fcntl
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from attribution_pipeline import extract, frames, schema
from attribution_pipeline import journeys as journey_rules
from attribution_pipeline.db import attribution_home, chunked, read_by_ids, read_frame
from attribution_pipeline.io_managers.hourly_parquet import hour_file, read_hour_files
from attribution_pipeline.precision import CREDIT_DTYPE, MONEY_DTYPE, stored_decimal

EXPORT_DIR_ENV = "ATTRIBUTION_EXPORT_DIR"
TABLES = ("snapshots", "touchpoints", "journeys")
PART = "part.parquet"
LOCK_FILE = ".export.lock"
_IN_LIST = 5000
_STALE_TMP_SECONDS = 3600

# ------------------------------------------------------------------------------------------
# The export schema (pinned by tests/test_exports.py; documented in README)
# ------------------------------------------------------------------------------------------

TIMESTAMP = pl.Datetime("us")  # UTC wall time (D17), no zone: DuckDB TIMESTAMP
PAYOUT_DTYPE = pl.Decimal(11, 5)  # 202_conversion_logs.click_payout
CPC_DTYPE = pl.Decimal(7, 5)  # 202_clicks.click_cpc
SHARE_DTYPE = pl.Decimal(18, 4)  # revenue_share / cost_share
SHARE_SCALE = 4

_HOUR = {"date_hour": pl.Int64, "hour_start": TIMESTAMP}
_MODEL = {
    "model_id": pl.Int64,
    "model_name": pl.String,
    "model_slug": pl.String,
    "model_type": pl.String,
    "model_active": pl.Boolean,
}
_TOUCH_DIMENSIONS = {
    "campaign_id": pl.Int64,
    "campaign_name": pl.String,
    "ppc_account_id": pl.Int64,
    "ppc_account_name": pl.String,
    "landing_page_id": pl.Int64,
    "landing_page_name": pl.String,
    "touch_cpc": CPC_DTYPE,
}

SNAPSHOTS_EXPORT = {
    **_HOUR,
    "snapshot_id": pl.Int64,
    "user_id": pl.Int64,
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

SCHEMAS = {"snapshots": SNAPSHOTS_EXPORT, "touchpoints": TOUCHPOINTS_EXPORT, "journeys": JOURNEYS_EXPORT}
SORT_KEYS = {
    "snapshots": ["date_hour", "user_id", "model_id", "snapshot_id"],
    "touchpoints": ["date_hour", "user_id", "model_id", "snapshot_id", "conv_id", "position"],
    "journeys": ["date_hour", "user_id", "conv_id", "position"],
}


# ------------------------------------------------------------------------------------------
# Paths and atomic files
# ------------------------------------------------------------------------------------------


def export_root(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit``, else ``$ATTRIBUTION_EXPORT_DIR``, else ``$ATTRIBUTION_HOME/exports``."""
    raw = str(explicit) if explicit else os.environ.get(EXPORT_DIR_ENV, "").strip()
    return Path(raw).resolve() if raw else attribution_home() / "exports"


def hour_dir(root: Path, table: str, hour: int) -> Path:
    moment = datetime.fromtimestamp(hour, tz=timezone.utc)
    return Path(root) / table / f"date={moment:%Y-%m-%d}" / f"hour={moment:%H}"


def part_path(root: Path, table: str, hour: int) -> Path:
    return hour_dir(root, table, hour) / PART


def table_glob(root: Path, table: str) -> str:
    """The glob DuckDB reads a table with (hive partitions ``date``/``hour`` from the path)."""
    return str(Path(root) / table / "**" / "*.parquet")


def write_part(root: Path, table: str, hour: int, df: pl.DataFrame) -> Path:
    """Replace the hour's file of ``table`` atomically: temporary file, fsync, rename."""
    final = part_path(root, table, hour)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(final.parent)
    tmp = final.with_name(f".{PART}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            df.write_parquet(fh, compression="zstd", statistics=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _remove_stale_tmp(folder: Path) -> None:
    """Temporary files left by a crashed writer (older than an hour; a live writer's are newer)."""
    cutoff = time.time() - _STALE_TMP_SECONDS
    for leftover in folder.glob(f".{PART}.*.tmp"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def export_lock(root: Path) -> Iterator[None]:
    """One exporter at a time per export folder (read from MySQL + write files), so the last
    writer of an hour always wrote the latest committed state."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / LOCK_FILE, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_part(root: Path, table: str, hour: int) -> pl.DataFrame | None:
    path = part_path(root, table, hour)
    return pl.read_parquet(path) if path.exists() else None


# ------------------------------------------------------------------------------------------
# Largest-remainder allocation of stored totals over touches
# ------------------------------------------------------------------------------------------


def _units(expr: pl.Expr, scale: int) -> pl.Expr:
    """A decimal expression as exact integer units of 10**-scale (Int128)."""
    return (expr * (10**scale)).cast(pl.Int128)


def allocate(df: pl.DataFrame, *, total: str, weight: pl.Expr, group: str, order: Sequence[str], name: str,
             scale: int = SHARE_SCALE) -> pl.DataFrame:
    """``df`` sorted by ``group`` then ``order``, with ``name``: ``total`` (a decimal equal on every
    row of a ``group``) split over the group's rows in proportion to ``weight`` (an exact Int128
    expression), in units of 10**-scale, so that the group's shares sum *exactly* to ``total``.

    Each row gets ``floor(total x w / W)`` units; the units left over (fewer than the group's rows)
    go one each to the largest remainders, ties to the first rows by ``order``. Integer arithmetic
    throughout (Int128), so no float ever decides a cent. A group whose weights sum to zero is split
    evenly. Negative totals and weights are handled (floor division on a positive denominator).
    A frame already sorted by ``group`` and ``order`` is not sorted again (Polars checks).
    """
    i128 = pl.Int128
    out = df.sort([group, *order]).with_columns(_w=weight.fill_null(0).cast(i128),
                                                _r=_units(pl.col(total), scale).fill_null(0))
    out = out.with_columns(_w=pl.when(pl.col("_w").sum().over(group) == 0).then(pl.lit(1, i128))
                           .otherwise(pl.col("_w")))
    out = out.with_columns(_den=pl.col("_w").sum().over(group))
    out = out.with_columns(_sign=pl.when(pl.col("_den") < 0).then(pl.lit(-1, i128)).otherwise(pl.lit(1, i128)))
    out = out.with_columns(_num=pl.col("_r") * pl.col("_w") * pl.col("_sign"), _den=pl.col("_den") * pl.col("_sign"))
    out = out.with_columns(_floor=pl.col("_num") // pl.col("_den"))
    out = out.with_columns(_frac=pl.col("_num") - pl.col("_floor") * pl.col("_den"),
                           _left=pl.col("_r") - pl.col("_floor").sum().over(group))
    # rank 0.. by remainder, largest first; "ordinal" breaks ties by row order, i.e. by ``order``
    out = out.with_columns(_rank=pl.col("_frac").rank("ordinal", descending=True).over(group) - 1)
    out = out.with_columns(_units=pl.col("_floor") + (pl.col("_rank") < pl.col("_left")).cast(i128))
    step = pl.lit(Decimal(1).scaleb(-scale), pl.Decimal(38, scale))
    return out.with_columns(
        (pl.col("_units").cast(pl.Decimal(38, 0)) * step).cast(pl.Decimal(38, scale)).alias(name)
    ).drop("_w", "_r", "_sign", "_num", "_den", "_floor", "_frac", "_left", "_rank", "_units")


# ------------------------------------------------------------------------------------------
# Reading what is stored
# ------------------------------------------------------------------------------------------

_snap = schema.attribution_snapshots
_touch = schema.attribution_touchpoints
_models = schema.attribution_models
_conv = schema.conversion_logs
_clk = schema.clicks

_SNAPSHOT_READ = {
    "snapshot_id": pl.Int64,
    "date_hour": pl.Int64,
    "model_id": pl.Int64,
    "user_id": pl.Int64,
    "attributed_clicks": pl.Int64,
    "attributed_conversions": pl.Int64,
    "attributed_revenue": MONEY_DTYPE,
    "attributed_cost": MONEY_DTYPE,
    "model_name": pl.String,
    "model_slug": pl.String,
    "model_type": pl.String,
    "is_active": pl.Int64,
}
_TOUCH_ROW = {
    "snapshot_id": pl.Int64,
    "conv_id": pl.Int64,
    "click_id": frames.CLICK_ID,
    "position": pl.Int32,
    "credit": CREDIT_DTYPE,
}
_CONVERSION_READ = {
    "conv_id": pl.Int64,
    "conv_time": pl.Int64,
    "conv_click_id": frames.CLICK_ID,
    "conv_click_time": pl.Int64,
    "conversion_payout": PAYOUT_DTYPE,
}
_TOUCH_READ_ROW = {**_TOUCH_ROW, "date_hour": pl.Int64}
_TOUCH_READ = {**_TOUCH_READ_ROW, **{k: v for k, v in _CONVERSION_READ.items() if k != "conv_id"}}
_CLICK_READ = {
    "click_id": frames.CLICK_ID,
    "click_time": pl.Int64,
    "aff_campaign_id": pl.Int64,
    "ppc_account_id": pl.Int64,
    "landing_page_id": pl.Int64,
    "click_cpc": CPC_DTYPE,
}


def _global_hours(lo: int, hi: int):
    return (_snap.c.scope_type == "global", _snap.c.scope_id.is_(None), _snap.c.date_hour.between(lo, hi))


def read_snapshots(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """Every global snapshot row stored for ``hours``, with its model's name, slug, type, active flag."""
    if not hours:
        return frames.empty(_SNAPSHOT_READ)
    stmt = (
        select(_snap.c.snapshot_id, _snap.c.date_hour, _snap.c.model_id, _snap.c.user_id, _snap.c.attributed_clicks,
               _snap.c.attributed_conversions, _snap.c.attributed_revenue, _snap.c.attributed_cost,
               _models.c.model_name, _models.c.model_slug, _models.c.model_type, _models.c.is_active)
        .select_from(_snap.outerjoin(_models, _models.c.model_id == _snap.c.model_id))
        .where(*_global_hours(min(hours), max(hours)))
    )
    return read_frame(conn, stmt, _SNAPSHOT_READ).filter(pl.col("date_hour").is_in(list(hours)))


def read_touches(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """Every touchpoint row of the global snapshots of ``hours``, with its hour, its conversion's time,
    converting click and payout (never ip or user agent). The conversions are read apart, by
    primary key, and joined here: one lookup per conversion instead of one per touch."""
    if not hours:
        return frames.empty(_TOUCH_READ)
    stmt = (
        select(_touch.c.snapshot_id, _touch.c.conv_id, _touch.c.click_id, _touch.c.position, _touch.c.credit,
               _snap.c.date_hour)
        .select_from(_touch.join(_snap, _snap.c.snapshot_id == _touch.c.snapshot_id))
        .where(*_global_hours(min(hours), max(hours)))
    )
    touches = read_frame(conn, stmt, _TOUCH_READ_ROW).filter(pl.col("date_hour").is_in(list(hours)))
    conversions = read_conversions(conn, touches.get_column("conv_id").unique().to_list())
    return frames.conform(touches.join(conversions, on="conv_id", how="left"), _TOUCH_READ, "touchpoints read")


def read_conversions(conn: Connection, conv_ids: Sequence[int]) -> pl.DataFrame:
    """Time, converting click and payout of ``conv_ids`` (202_conversion_logs' primary key)."""
    return read_by_ids(conn, _conv.c.conv_id, conv_ids, lambda where: select(
        _conv.c.conv_id, _conv.c.conv_time, _conv.c.click_id.label("conv_click_id"),
        _conv.c.click_time.label("conv_click_time"), _conv.c.click_payout.label("conversion_payout"),
    ).where(where), _CONVERSION_READ, in_list=_IN_LIST)


def read_clicks(conn: Connection, click_ids: Sequence[int]) -> pl.DataFrame:
    """One row per click id (D15: the smallest click_time, then cpc, then ppc account)."""
    return journey_rules.dedupe_clicks(read_by_ids(
        conn, _clk.c.click_id, click_ids, lambda where: select(*[_clk.c[c] for c in _CLICK_READ]).where(where),
        _CLICK_READ, in_list=_IN_LIST,
    ))


NAMES = {"id": pl.Int64, "name": pl.String}


@dataclass
class Names:
    """Display names of the campaigns, traffic sources (ppc accounts) and landing pages."""

    campaigns: pl.DataFrame
    ppc_accounts: pl.DataFrame
    landing_pages: pl.DataFrame


def _names(conn: Connection, id_col, name_col, ids: Sequence[int]) -> pl.DataFrame:
    wanted = sorted({int(i) for i in ids if i is not None})
    parts = [frames.empty(NAMES)]
    for part in chunked(wanted, _IN_LIST):
        stmt = select(id_col.label("id"), name_col.label("name")).where(id_col.in_(list(part)))
        parts.append(read_frame(conn, stmt, NAMES))
    return pl.concat(parts).unique("id", keep="first")


def read_names(conn: Connection, touches: Sequence[pl.DataFrame]) -> Names:
    """Names of every campaign, ppc account and landing page referenced by ``touches`` frames
    (columns ``campaign_id``, ``ppc_account_id``, ``landing_page_id``)."""
    def ids(col: str) -> list[int]:
        found = [t.get_column(col).drop_nulls().unique() for t in touches if t.height]
        return pl.concat(found).unique().to_list() if found else []

    return Names(
        campaigns=_names(conn, schema.aff_campaigns.c.aff_campaign_id, schema.aff_campaigns.c.aff_campaign_name,
                         ids("campaign_id")),
        ppc_accounts=_names(conn, schema.ppc_accounts.c.ppc_account_id, schema.ppc_accounts.c.ppc_account_name,
                            ids("ppc_account_id")),
        landing_pages=_names(conn, schema.landing_pages.c.landing_page_id,
                             schema.landing_pages.c.landing_page_nickname, ids("landing_page_id")),
    )


def _with_names(df: pl.DataFrame, names: Names) -> pl.DataFrame:
    for key, table in (("campaign", names.campaigns), ("ppc_account", names.ppc_accounts),
                       ("landing_page", names.landing_pages)):
        df = df.join(table.rename({"id": f"{key}_id", "name": f"{key}_name"}), on=f"{key}_id", how="left")
    return df


# ------------------------------------------------------------------------------------------
# Building the three export frames
# ------------------------------------------------------------------------------------------


def _epoch_to_timestamp(col: str) -> pl.Expr:
    return pl.from_epoch(pl.col(col), time_unit="s").cast(TIMESTAMP)


def snapshots_export(snaps: pl.DataFrame) -> pl.DataFrame:
    return frames.conform(
        snaps.with_columns(hour_start=_epoch_to_timestamp("date_hour"), model_active=pl.col("is_active") == 1),
        SNAPSHOTS_EXPORT,
        "snapshots export",
    ).sort(SORT_KEYS["snapshots"])


def touch_frame(touches: pl.DataFrame, snaps: pl.DataFrame, clicks: pl.DataFrame) -> pl.DataFrame:
    """Touchpoints joined with their snapshot (hour, user, model, stored totals) and their clicks,
    before names and shares (the columns :func:`touchpoints_export` needs)."""
    touch_clicks = clicks.select(
        "click_id", touch_click_time="click_time", campaign_id="aff_campaign_id", ppc_account_id="ppc_account_id",
        landing_page_id="landing_page_id", touch_cpc="click_cpc",
    )
    converting = clicks.select(conv_click_id="click_id", converting_cpc="click_cpc")
    return (
        touches.drop("date_hour", strict=False)
        .join(snaps.drop("attributed_clicks", "attributed_conversions"), on="snapshot_id", how="inner")
        .join(touch_clicks, on="click_id", how="left")
        .join(converting, on="conv_click_id", how="left")
        .with_columns(
            is_converting=(pl.col("click_id") == pl.col("conv_click_id")).fill_null(False),
        )
        .with_columns(
            click_time=pl.coalesce(
                pl.col("touch_click_time"),
                pl.when(pl.col("is_converting")).then(pl.col("conv_click_time")),
            )
        )
    )


JOURNEY_INDEX = {"conv_id": pl.Int64, "click_id": frames.CLICK_ID, "position": pl.Int32, "journey_length": pl.Int32}


def journey_index(journeys: pl.DataFrame) -> pl.DataFrame:
    """(conv_id, click_id, position, journey_length) of export-schema journeys."""
    return frames.conform(journeys, JOURNEY_INDEX, "journey index")


def _journey_positions(touch: pl.DataFrame, index: pl.DataFrame | None) -> pl.DataFrame:
    """``journey_position``/``journey_length`` of each touch: its click's place in the conversion's
    journey. The stored ``position`` is not always that: PHP records last-touch (and algorithmic)
    credit at position 0 (spec 3.1, Q11). A touch whose click appears twice in a stored journey
    (D13 stored mode) takes the occurrence at its stored position, else the first."""
    if index is None or index.height == 0:
        return touch.with_columns(journey_position=pl.lit(None, pl.Int32), journey_length=pl.lit(None, pl.Int32))
    exact = index.select("conv_id", "click_id", "position", exact_position="position", exact_length="journey_length")
    first = (index.sort("position").unique(subset=["conv_id", "click_id"], keep="first")
             .select("conv_id", "click_id", first_position="position", first_length="journey_length"))
    return (
        touch.join(exact, on=["conv_id", "click_id", "position"], how="left")
        .join(first, on=["conv_id", "click_id"], how="left")
        .with_columns(journey_position=pl.coalesce("exact_position", "first_position"),
                      journey_length=pl.coalesce("exact_length", "first_length"))
        .drop("exact_position", "exact_length", "first_position", "first_length")
    )


def touchpoints_export(touch: pl.DataFrame, names: Names, journeys: pl.DataFrame | None = None) -> pl.DataFrame:
    """The touchpoints export: :func:`touch_frame` rows with names, reconciled shares and, given
    the hours' journeys (:func:`journey_index`), each touch's place in its journey."""
    order = ["conv_id", "position", "click_id"]
    shared = allocate(
        touch.sort(["snapshot_id", *order]),  # one sort: both allocations find the frame in their order
        total="attributed_revenue",
        weight=_units(pl.col("conversion_payout"), 5) * _units(pl.col("credit"), 5),
        group="snapshot_id",
        order=order,
        name="revenue_share",
    )
    shared = allocate(
        shared,
        total="attributed_cost",
        weight=_units(pl.col("converting_cpc"), 5) * _units(pl.col("credit"), 5),
        group="snapshot_id",
        order=order,
        name="cost_share",
    )
    return frames.conform(
        _with_names(_journey_positions(shared, journeys), names).with_columns(
            hour_start=_epoch_to_timestamp("date_hour"),
            model_active=pl.col("is_active") == 1,
            conv_time=_epoch_to_timestamp("conv_time"),
            click_time=_epoch_to_timestamp("click_time"),
        ),
        TOUCHPOINTS_EXPORT,
        "touchpoints export",
    ).sort(SORT_KEYS["touchpoints"])


def journeys_export(journeys: pl.DataFrame, names: Names) -> pl.DataFrame:
    """frames.JOURNEYS rows as the journeys export (touch cpc back to its exact DECIMAL(7,5))."""
    renamed = journeys.select(
        "date_hour", "user_id", "conv_id", "position", "click_id", "is_converting", "multi_touch",
        journey_length="n",
        conv_time=_epoch_to_timestamp("conv_time"),
        click_time=_epoch_to_timestamp("click_time"),
        hour_start=_epoch_to_timestamp("date_hour"),
        campaign_id="touch_campaign_id",
        ppc_account_id="touch_ppc_account_id",
        landing_page_id="touch_landing_page_id",
        touch_cpc=stored_decimal(pl.col("touch_cpc"), CPC_DTYPE),
    )
    return frames.conform(_with_names(renamed, names), JOURNEYS_EXPORT, "journeys export").sort(SORT_KEYS["journeys"])


# ------------------------------------------------------------------------------------------
# Journeys: the pipeline's frames, or recomputed with the pipeline's rules
# ------------------------------------------------------------------------------------------


def shared_journeys(frames_root: Path, hours: Sequence[int]) -> tuple[pl.DataFrame, list[int]]:
    """The complete ``journeys`` frames of ``hours`` (written by full runs) and the hours without one."""
    present = [h for h in hours if hour_file(Path(frames_root), "journeys", h).exists()]
    found = set(present)
    missing = [h for h in hours if h not in found]
    if not present:
        return frames.empty(frames.JOURNEYS), missing
    df = read_hour_files(Path(frames_root), "journeys", present)
    return frames.conform(df, frames.JOURNEYS, "journeys"), missing


def compute_journeys(engine: Engine, hours: Sequence[int], users: Sequence[int] | None, *, journey_source: str,
                     lookback_seconds: int, touch_cap: int) -> pl.DataFrame:
    """frames.JOURNEYS for ``hours`` and ``users`` (None: every user), built from MySQL with the
    pipeline's own functions (D2, D13, D15), as the ``journeys`` asset builds them."""
    if not hours or users == []:
        return frames.empty(frames.JOURNEYS)
    with engine.connect() as conn:
        conv = extract.conversions(conn, sorted(hours), users).filter(
            (pl.col("click_rows") > 0) & pl.col("date_hour").is_in(list(hours))
        )
        if conv.height == 0:
            return frames.empty(frames.JOURNEYS)
        if journey_source == "stored":
            stored = extract.stored_touchpoints(conn, conv.get_column("conv_id").to_list())
            clicks = extract.clicks_by_id(conn, stored.get_column("click_id").unique().to_list())
            return journey_rules.stored_journeys(conv, stored, journey_rules.dedupe_clicks(clicks))
        pairs = conv.select("user_id", "campaign_id").unique()
        settings = extract.multi_touch_settings(conn, pairs.get_column("user_id").unique().to_list())
        networks = extract.campaign_networks(conn, pairs.get_column("campaign_id").unique().to_list())
        flagged = journey_rules.multi_touch_flags(conv, settings, networks)
        multi = flagged.filter(pl.col("multi_touch"))
        clicks = (
            extract.clicks(conn, multi.get_column("user_id").unique().to_list(),
                           multi.get_column("campaign_id").unique().to_list(),
                           int(multi["conv_time"].min()) - lookback_seconds, int(multi["conv_time"].max()))
            if multi.height else frames.empty(extract.CLICKS)
        )
    return journey_rules.build_journeys(flagged, journey_rules.dedupe_clicks(clicks),
                                        lookback_seconds=lookback_seconds, touch_cap=touch_cap)


@dataclass
class JourneyPlan:
    """An hour chunk's journeys: ``fresh`` rows (frames.JOURNEYS) and ``kept`` rows of the hours'
    existing export files (export schema), with where each came from."""

    fresh: pl.DataFrame
    kept: pl.DataFrame
    hours_from_frames: int = 0
    hours_from_exports: int = 0
    hours_recomputed: int = 0
    users_recomputed: int = 0


def plan_journeys(hours: Sequence[int], *, root: Path, frames_root: Path, users: Sequence[int] | None,
                  recompute: Callable[[Sequence[int], Sequence[int] | None], pl.DataFrame]) -> JourneyPlan:
    """Where each hour's journeys come from.

    Full run (``users`` None): the complete frames the run just wrote; an hour without one is
    recomputed for every user. Scoped run: the hour's existing export file (else its complete
    frame) without the selected users' rows, plus the selected users' journeys recomputed now;
    an hour with neither is recomputed for every user. Never fewer users than were there.
    """
    hours = sorted(hours)
    shared, missing = shared_journeys(frames_root, hours)
    if users is None:
        fresh = [shared, recompute(missing, None)] if missing else [shared]
        return JourneyPlan(fresh=pl.concat(fresh), kept=frames.empty(JOURNEYS_EXPORT),
                           hours_from_frames=len(hours) - len(missing), hours_recomputed=len(missing))
    selected = pl.col("user_id").is_in(list(users))
    existing = {h: read_part(root, "journeys", h) for h in hours}
    from_exports = [h for h in hours if existing[h] is not None]
    not_framed = set(missing)
    from_frames = [h for h in hours if existing[h] is None and h not in not_framed]
    from_scratch = [h for h in hours if existing[h] is None and h in not_framed]
    kept = [frames.conform(existing[h], JOURNEYS_EXPORT, "journeys export").filter(~selected) for h in from_exports]
    scratch = set(from_scratch)
    fresh = [
        shared.filter(pl.col("date_hour").is_in(from_frames) & ~selected),
        recompute([h for h in hours if h not in scratch], users),
        recompute(from_scratch, None),
    ]
    return JourneyPlan(
        fresh=pl.concat([frames.conform(f, frames.JOURNEYS) for f in fresh]),
        kept=pl.concat([frames.empty(JOURNEYS_EXPORT), *kept]),
        hours_from_frames=len(from_frames),
        hours_from_exports=len(from_exports),
        hours_recomputed=len(from_scratch),
        users_recomputed=len(users),
    )


# ------------------------------------------------------------------------------------------
# One chunk of hours, end to end
# ------------------------------------------------------------------------------------------


@dataclass
class ExportStats:
    hours: int = 0
    files: int = 0
    rows: dict[str, int] = field(default_factory=lambda: {t: 0 for t in TABLES})
    unreconciled_snapshots: int = 0  # stored snapshots with revenue or cost but no touchpoints
    journeys: dict[str, int] = field(default_factory=dict)

    def add(self, other: "ExportStats") -> None:
        self.hours += other.hours
        self.files += other.files
        for t in TABLES:
            self.rows[t] += other.rows[t]
        self.unreconciled_snapshots += other.unreconciled_snapshots
        for k, v in other.journeys.items():
            self.journeys[k] = self.journeys.get(k, 0) + v


@dataclass
class HourExports:
    """The three export frames of a chunk of hours."""

    snapshots: pl.DataFrame
    touchpoints: pl.DataFrame
    journeys: pl.DataFrame


@dataclass
class StoredRows:
    """What MySQL stores for a chunk of hours (committed rows): the global snapshots, their
    touchpoint rows (with ``date_hour`` and their conversion's fields), those touches' and
    converting clicks (D15) and the display names they or the journeys reference."""

    snapshots: pl.DataFrame
    touches: pl.DataFrame
    clicks: pl.DataFrame
    names: Names


def read_stored_rows(engine: Engine, hours: Sequence[int], extra_touches: Sequence[pl.DataFrame] = ()) -> StoredRows:
    """Set-based reads of everything the exports of ``hours`` need from MySQL; names of every
    campaign, traffic source and landing page the clicks or ``extra_touches`` reference."""
    with engine.connect() as conn:
        snaps = read_snapshots(conn, hours)
        touches = read_touches(conn, hours)
        clicks = read_clicks(conn, pl.concat([touches.get_column("click_id"),
                                              touches.get_column("conv_click_id").drop_nulls()]).to_list())
        referenced = clicks.select(campaign_id="aff_campaign_id", ppc_account_id="ppc_account_id",
                                   landing_page_id="landing_page_id")
        names = read_names(conn, [referenced, *extra_touches])
    return StoredRows(snaps, touches, clicks, names)


def read_stored(engine: Engine, hours: Sequence[int], extra_touches: Sequence[pl.DataFrame] = ()) -> tuple[
        pl.DataFrame, pl.DataFrame, Names]:
    """Stored snapshots of ``hours``, their touchpoints joined (:func:`touch_frame`) and the names."""
    rows = read_stored_rows(engine, hours, extra_touches)
    return rows.snapshots, touch_frame(rows.touches, rows.snapshots, rows.clicks), rows.names


#: The export frames of a chunk are built and written a few hours at a time: the MySQL reads stay
#: one set per chunk, while the wide joined frames (names, shares: the step's peak memory) only
#: ever hold at most a day and at most about BUILD_ROWS touchpoints (an hour with more is built
#: alone; 10M clicks, 24-hour chunks: 1.35 instead of 3.2 GiB, bench/RESULTS.md).
BUILD_HOURS = 24
BUILD_ROWS = 500_000


def build_parts(hours: Sequence[int], touches: pl.DataFrame, *, max_hours: int | None = None,
                max_rows: int | None = None) -> list[tuple[int, ...]]:
    """Consecutive groups of ``hours`` to build together: at most ``max_hours`` hours and, unless
    one hour alone has more, at most ``max_rows`` of the ``touches`` rows (by ``date_hour``)."""
    max_hours = BUILD_HOURS if max_hours is None else max(1, int(max_hours))
    max_rows = BUILD_ROWS if max_rows is None else max(1, int(max_rows))
    counts = dict(touches.group_by("date_hour").len().iter_rows()) if touches.height else {}
    parts: list[tuple[int, ...]] = []
    part: list[int] = []
    rows = 0
    for hour in sorted(hours):
        n = counts.get(hour, 0)
        if part and (len(part) >= max_hours or rows + n > max_rows):
            parts.append(tuple(part))
            part, rows = [], 0
        part.append(hour)
        rows += n
    if part:
        parts.append(tuple(part))
    return parts


def _fresh_ids(plan: JourneyPlan) -> pl.DataFrame:
    return plan.fresh.select(campaign_id="touch_campaign_id", ppc_account_id="touch_ppc_account_id",
                             landing_page_id="touch_landing_page_id")


def build_exports(stored: StoredRows, journeys: pl.DataFrame, hours: Sequence[int]) -> HourExports:
    """The three export frames of ``hours`` (contiguous) from a chunk's stored rows and its
    export-schema ``journeys``."""
    within = pl.col("date_hour").is_between(min(hours), max(hours))
    snaps = stored.snapshots.filter(within)
    touch = touch_frame(stored.touches.filter(within), snaps, stored.clicks)
    days_journeys = journeys.filter(within)
    return HourExports(snapshots_export(snaps), touchpoints_export(touch, stored.names, journey_index(days_journeys)),
                       days_journeys)


def write_exports(root: Path, hours: Sequence[int], exports: HourExports) -> ExportStats:
    """One file per table and hour (an empty file for an hour without rows), each atomic."""
    stats = ExportStats(hours=len(hours))
    for table in TABLES:
        df: pl.DataFrame = getattr(exports, table)
        by_hour = df.partition_by("date_hour", as_dict=True, maintain_order=True)
        for hour in hours:
            write_part(root, table, hour, by_hour.get((hour,), df.clear()))
            stats.files += 1
        stats.rows[table] += df.height
    covered = exports.touchpoints.select("snapshot_id").unique()
    stats.unreconciled_snapshots = exports.snapshots.filter(
        (pl.col("attributed_revenue") != 0) | (pl.col("attributed_cost") != 0)
    ).join(covered, on="snapshot_id", how="anti").height
    return stats


@dataclass
class ChunkRead:
    """What the export of one chunk of hours needs, read under the export lock: where its journeys
    come from and what MySQL stores for its hours."""

    hours: tuple[int, ...]
    plan: JourneyPlan
    stored: StoredRows


def read_chunk(engine: Engine, hours: Sequence[int], *, root: Path, frames_root: Path,
               users: Sequence[int] | None,
               recompute: Callable[[Sequence[int], Sequence[int] | None], pl.DataFrame]) -> ChunkRead:
    """Plan the journeys of ``hours`` and read what is stored for them (hold the export lock)."""
    plan = plan_journeys(hours, root=root, frames_root=frames_root, users=users, recompute=recompute)
    return ChunkRead(tuple(hours), plan, read_stored_rows(engine, hours, [_fresh_ids(plan)]))


def write_chunk(root: Path, chunk: ChunkRead) -> ExportStats:
    """Build and write every file of a chunk read by :func:`read_chunk` (hold the export lock)."""
    stats = ExportStats()
    plan, stored = chunk.plan, chunk.stored
    journeys = pl.concat([journeys_export(plan.fresh, stored.names), plan.kept]).sort(SORT_KEYS["journeys"])
    for part in build_parts(chunk.hours, stored.touches):
        stats.add(write_exports(root, part, build_exports(stored, journeys, part)))
    stats.journeys = {"journey_hours_from_frames": plan.hours_from_frames,
                      "journey_hours_from_exports": plan.hours_from_exports,
                      "journey_hours_recomputed": plan.hours_recomputed}
    return stats


def export_chunk(engine: Engine, hours: Sequence[int], *, root: Path, frames_root: Path,
                 users: Sequence[int] | None,
                 recompute: Callable[[Sequence[int], Sequence[int] | None], pl.DataFrame]) -> ExportStats:
    """Export whole ``hours``: under the export lock, read what is stored, plan the journeys,
    write every file. ``users`` None for a full run, else the users a scoped run rewrote."""
    with export_lock(root):
        return write_chunk(root, read_chunk(engine, hours, root=root, frames_root=frames_root, users=users,
                                            recompute=recompute))


def export_chunks(chunks: Sequence[Sequence[int]], *, root: Path,
                  read: Callable[[Sequence[int]], ChunkRead]) -> Iterator[tuple[tuple[int, ...], ExportStats]]:
    """Export every chunk of hours in order, under one hold of the export lock, yielding each
    chunk's hours and stats once its files are written. ``read`` is :func:`read_chunk` for a chunk
    (with the caller's retries). The next chunk is read in a background thread while this one's
    files are built and written: the reads wait on MySQL, the build on the CPU (default size,
    four 168-hour chunks: 15.7 s instead of 20.8 s, bench/RESULTS.md). At most two chunks'
    stored rows are in memory."""
    chunks = [tuple(c) for c in chunks]
    if not chunks:
        return
    with export_lock(root), ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-read") as pool:
        pending = pool.submit(read, chunks[0])
        for i, hours in enumerate(chunks):
            current = pending.result()
            if i + 1 < len(chunks):
                pending = pool.submit(read, chunks[i + 1])
            stats = write_chunk(root, current)
            del current  # only the next chunk's rows stay in memory while the caller logs
            yield hours, stats


def exported_hours(root: Path, table: str = "snapshots") -> list[int]:
    """The hours that have a file of ``table`` (epoch seconds, ascending)."""
    found = []
    for path in (Path(root) / table).glob(f"date=*/hour=*/{PART}"):
        day = path.parent.parent.name.split("=", 1)[1]
        hh = path.parent.name.split("=", 1)[1]
        found.append(int(datetime.strptime(f"{day} {hh}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc).timestamp()))
    return sorted(found)



# ------------------------------------------------------------------------------------------
# Reconciliation: the files on disk against MySQL, per hour (the export_reconciliation check)
# ------------------------------------------------------------------------------------------

_RECONCILE = {"date_hour": pl.Int64, "rows": pl.Int64, "revenue_units": pl.Int64, "cost_units": pl.Int64}


def _mysql_hour_totals(conn: Connection, hours: Sequence[int]) -> pl.DataFrame:
    """Per hour: global snapshot rows and their revenue and cost in exact 1e-4 units."""
    from sqlalchemy import BigInteger, cast, func

    units = lambda col: cast(func.round(func.sum(col) * 10**SHARE_SCALE), BigInteger)  # noqa: E731
    stmt = (
        select(_snap.c.date_hour, func.count().label("rows"), units(_snap.c.attributed_revenue).label("revenue_units"),
               units(_snap.c.attributed_cost).label("cost_units"))
        .where(*_global_hours(min(hours), max(hours)))
        .group_by(_snap.c.date_hour)
    )
    return read_frame(conn, stmt, _RECONCILE).filter(pl.col("date_hour").is_in(list(hours)))


def _sum_by_hour(paths: list[Path], revenue: str, cost: str) -> pl.DataFrame:
    """Rows and exact revenue/cost units per ``date_hour`` of the Parquet files ``paths``."""
    return (
        pl.scan_parquet(paths)
        .group_by("date_hour")
        .agg(rows=pl.len().cast(pl.Int64), revenue_units=_units(pl.col(revenue).sum(), SHARE_SCALE),
             cost_units=_units(pl.col(cost).sum(), SHARE_SCALE))
        .collect()
    )


def _file_hour_totals(root: Path, hours: Sequence[int]) -> tuple[pl.DataFrame, pl.DataFrame, list[int]]:
    """Per hour, read back from the Parquet files: snapshot rows and totals, touchpoint share
    totals; and the hours missing one of their three files."""
    missing = sorted({h for h in hours for t in TABLES if not part_path(root, t, h).exists()})
    absent = set(missing)
    present = [h for h in hours if h not in absent]
    if not present:
        return frames.empty(_RECONCILE), frames.empty(_RECONCILE), missing
    snaps = _sum_by_hour([part_path(root, "snapshots", h) for h in present], "attributed_revenue", "attributed_cost")
    shares = _sum_by_hour([part_path(root, "touchpoints", h) for h in present], "revenue_share", "cost_share")
    return snaps.cast(_RECONCILE), shares.cast(_RECONCILE), missing


def reconcile(engine: Engine, root: Path, hours: Sequence[int]) -> pl.DataFrame:
    """One row per hour of ``hours`` whose exported files disagree with MySQL, with the reason.

    An hour reconciles when its three files exist, its ``snapshots`` file has exactly the rows,
    revenue and cost (exact DECIMAL(12,4) units) of the global snapshots MySQL stores for it, and
    its ``touchpoints`` shares sum to the same revenue and cost (every snapshot with money has
    touchpoints). Empty frame: every hour agrees."""
    reasons = pl.DataFrame(schema={"date_hour": pl.Int64, "reason": pl.String})
    if not hours:
        return reasons
    with engine.connect() as conn:
        stored = _mysql_hour_totals(conn, hours)
    snaps, shares, missing = _file_hour_totals(root, hours)
    absent = set(missing)
    every = pl.DataFrame({"date_hour": [h for h in hours if h not in absent]}, schema={"date_hour": pl.Int64})
    zero = {"rows": 0, "revenue_units": 0, "cost_units": 0}
    joined = (
        every.join(stored, on="date_hour", how="left")
        .join(snaps, on="date_hour", how="left", suffix="_file")
        .join(shares.drop("rows"), on="date_hour", how="left", suffix="_shares")
        .with_columns(pl.col(c).fill_null(0) for c in [*zero, *(f"{c}_file" for c in zero),
                                                         "revenue_units_shares", "cost_units_shares"])
    )
    wrong = joined.with_columns(
        reason=pl.concat_str(
            pl.when(pl.col("rows") != pl.col("rows_file")).then(
                pl.format("snapshots file has {} rows, MySQL {}; ", "rows_file", "rows")),
            pl.when((pl.col("revenue_units") != pl.col("revenue_units_file"))
                    | (pl.col("cost_units") != pl.col("cost_units_file"))).then(
                pl.lit("snapshots file revenue/cost differ from MySQL; ")),
            pl.when((pl.col("revenue_units_shares") != pl.col("revenue_units"))
                    | (pl.col("cost_units_shares") != pl.col("cost_units"))).then(
                pl.lit("touchpoint shares do not sum to the stored revenue/cost; ")),
            ignore_nulls=True,
        ).str.strip_chars_end("; ")
    ).filter(pl.col("reason") != "").select("date_hour", "reason")
    gone = pl.DataFrame({"date_hour": missing, "reason": ["a table's file is missing"] * len(missing)},
                        schema=reasons.schema)
    return pl.concat([wrong, gone]).sort("date_hour")
