"""Fingerprints of what each (user, hour) is computed from, and what a run must recompute (D22).

A group's rows (one user's models in one conversion hour) are a function of:

* the hour's conversions of the user, soft-deleted ones included, with their converting click
  (payout, cost, campaign, account, landing page, times, ids, the click's user: spec §2.1, D15,
  D16, D21);
* the user's clicks that a journey of the hour can reach: every click of the user with
  ``start <= click hour <= H``, where ``start`` is ``floor_hour(H - lookback)`` (D2: a conversion
  at ``t`` in hour ``H`` uses clicks in ``[t - lookback, t]``) or, when the hour's campaigns have
  ``cap`` clicks in the day before it, the hour of the newest ``cap``-th (D38,
  ``core/click_reach.py``), with those clicks' older copies;
* the user's model rows, multi-touch settings rows and campaigns' advertisers (spec §3.6, §5.1);
* the pipeline's own rules (lookback, touch cap, journey source, this module's version).

The database sums, per (user, hour) and per (user, click hour), the count of rows and two CRC32s of
each row's text (``storage/source_state.py``); the user-level parts are hashed here. A change of any
input changes the count or, but for a collision of both 32-bit sums and the 64-bit hashes
combined, the sums. Sums are additive, so the click part of an hour is a difference of
running totals over click hours: one pass over the clicks, whatever the number of hours.

The fingerprint of the stored rows of a (user, hour) covers its snapshot rows of the owned models
(ids, windows, values, ``created_at``): a row someone else wrote, edited, duplicated or deleted
changes it (D20). Everything here is pure Polars.
"""

import hashlib
import json
from itertools import groupby
from operator import itemgetter

import polars as pl

from attribution_pipeline.core.click_reach import STARTS, window_sums

#: Bump when the rows a given input produces change (a fix of a rule): every (user, hour) is then
#: recomputed once.
VERSION = "2"

#: Counts and sums of the database's row texts, per (user, hour) or (user, click hour).
PARTS = {"user_id": pl.Int64, "date_hour": pl.Int64, "rows": pl.Int64, "sum_a": pl.Int64, "sum_b": pl.Int64}

#: What a run decides per (user, hour) of its range.
CHANGES = {
    "date_hour": pl.Int64,
    "user_id": pl.Int64,
    "source_fp": pl.String,
    "recompute": pl.Boolean,
    "reason": pl.String,
    "stored_groups": pl.Int64,  # snapshot rows stored for it when the run started
}

#: What is recorded per (user, hour) (``attribution_source_state``).
RECORDED = {"user_id": pl.Int64, "date_hour": pl.Int64, "source_fp": pl.String, "stored_fp": pl.String}

UNCHANGED, NEW, INPUTS, STORED, FULL = ("unchanged", "not recorded", "inputs changed",
                                        "stored rows changed", "full rewrite")


def digest(value) -> str:
    """A stable hex digest of a JSON-able value (sorted keys; decimals and bytes as text)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def user_fingerprints(users: list[int], model_rows: list[dict], settings_rows: list[dict],
                      campaign_rows: list[dict], rules: dict) -> pl.DataFrame:
    """``user_id, user_fp``: the user's active model rows (``updated_at`` aside), multi-touch
    settings rows and campaigns' advertisers, and the pipeline's ``rules``."""
    def by_user(rows):
        texts = sorted((int(r["user_id"]), json.dumps({k: v for k, v in r.items() if k != "updated_at"},
                                                      sort_keys=True, default=str)) for r in rows)
        return {u: [t for _, t in group] for u, group in groupby(texts, key=itemgetter(0))}

    models, settings, campaigns = by_user(model_rows), by_user(settings_rows), by_user(campaign_rows)
    return pl.DataFrame(
        {"user_id": users,
         "user_fp": [digest([VERSION, rules, models.get(u, []), settings.get(u, []), campaigns.get(u, [])])
                     for u in users]},
        schema={"user_id": pl.Int64, "user_fp": pl.String},
    )


def _hashed(text: pl.Expr) -> pl.Expr:
    """Two 64-bit hashes of ``text``, as one string."""
    return pl.concat_str([text.hash(seed=11).cast(pl.String), text.hash(seed=29).cast(pl.String)], separator=":")


def source_fingerprints(user_fp: pl.DataFrame, conv_parts: pl.DataFrame, click_parts: pl.DataFrame,
                        starts: pl.DataFrame, copies: pl.DataFrame) -> pl.DataFrame:
    """``date_hour, user_id, source_fp`` for every (user, hour) of ``starts`` (the run's users and
    hours with their click windows, ``core/click_reach.py``, D38): the user's part, the hour's
    conversion part, and the click parts (and, in a reach-limited window, the clicks' older copies)
    summed over the hour's click window."""
    windows = starts.cast(STARTS)
    clicks = window_sums(click_parts.cast(PARTS), windows, "click")
    copied = window_sums(copies.cast(PARTS), windows.filter(pl.col("reach_limited")), "copy")
    conv = conv_parts.cast(PARTS)
    numbers = [pl.col(c).fill_null(0).cast(pl.String) for c in
               ("rows", "sum_a", "sum_b", "click_rows", "click_a", "click_b", "copy_rows", "copy_a", "copy_b")]
    return (
        windows.join(user_fp, on="user_id")
        .join(conv, on=["user_id", "date_hour"], how="left")
        .join(clicks, on=["user_id", "date_hour"], how="left")
        .join(copied, on=["user_id", "date_hour"], how="left")
        .select("date_hour", "user_id",
                source_fp=_hashed(pl.concat_str([pl.col("user_fp"), pl.col("start").cast(pl.String), *numbers],
                                                separator="|")))
    )


def stored_fingerprints(snapshots: pl.DataFrame) -> pl.DataFrame:
    """``user_id, date_hour, stored_fp`` of stored snapshot rows (``stored_rows.STORED_SNAPSHOTS``,
    or ``STORED_SCOPED`` with the scoped rows, D31): every row of the (user, hour), in id order,
    ids, windows, values and ``created_at``; a scoped row adds ``,scope_type,scope_id``.
    ``stored_groups`` counts the global rows."""
    columns = ("snapshot_id", "model_id", "lookback_start", "lookback_end", "attributed_clicks",
               "attributed_conversions", "attributed_revenue", "attributed_cost", "created_at")
    text = pl.concat_str([pl.col(c).cast(pl.String) for c in columns], separator=",")
    is_global = pl.lit(True)
    if "scope_type" in snapshots.columns:
        is_global = pl.col("scope_type") == "global"
        scope = pl.concat_str([pl.lit(","), pl.col("scope_type"), pl.lit(","), pl.col("scope_id").cast(pl.String)])
        text = text + pl.when(is_global).then(pl.lit("")).otherwise(scope)
    return (
        snapshots.sort("snapshot_id")
        .group_by("user_id", "date_hour", maintain_order=True)
        .agg(text=text.str.join(";"), stored_groups=is_global.sum().cast(pl.Int64))
        .select("user_id", "date_hour", "stored_groups", stored_fp=_hashed(pl.col("text")))
    )


def empty_stored_fp() -> str:
    """The stored fingerprint of a (user, hour) without rows."""
    return pl.select(_hashed(pl.lit(""))).item()


def decide(current: pl.DataFrame, recorded: pl.DataFrame, stored: pl.DataFrame, *, full_reason: str | None) -> pl.DataFrame:
    """:data:`CHANGES`: recompute a (user, hour) unless its record holds the same source
    fingerprint and the same stored fingerprint as now; ``full_reason`` recomputes every one."""
    if full_reason is not None:
        return current.with_columns(recompute=pl.lit(True), reason=pl.lit(full_reason),
                                    stored_groups=pl.lit(None, pl.Int64)).select(list(CHANGES))
    now = stored.rename({"stored_fp": "stored_now"})
    joined = (
        current.join(recorded.cast(RECORDED).rename({"source_fp": "recorded_fp"}), on=["user_id", "date_hour"],
                     how="left")
        .join(now, on=["user_id", "date_hour"], how="left")
        .with_columns(pl.col("stored_now").fill_null(empty_stored_fp()), pl.col("stored_groups").fill_null(0))
    )
    reason = (
        pl.when(pl.col("recorded_fp").is_null()).then(pl.lit(NEW))
        .when(pl.col("recorded_fp") != pl.col("source_fp")).then(pl.lit(INPUTS))
        .when(pl.col("stored_fp") != pl.col("stored_now")).then(pl.lit(STORED))
        .otherwise(pl.lit(UNCHANGED))
    )
    return joined.with_columns(reason=reason).with_columns(
        recompute=pl.col("reason") != UNCHANGED).select(list(CHANGES))
