"""Journeys: the ordered touches of each conversion (spec §2.2-§2.4; D2, D13, D15).

For a conversion of account ``u`` on campaign ``k`` at ``t`` (D2, mirroring PHP's
``fetchCandidateTouches`` + ``persistJourney``):

1. candidates = the clicks of ``u`` on ``k`` with ``max(0, t - lookback) <= click_time <= t``,
   the newest ``cap`` of them by ``(click_time DESC, click_id DESC)``; a click id present several
   times in 202_clicks is one click (D15);
2. the converting click is added, with 202_conversion_logs.click_time, when it is not among them
   (so a journey can have ``cap + 1`` touches);
3. touches are sorted by ``(click_time, click_id)`` and numbered 0..n-1.

Where multi-touch is disabled for the conversion (spec §5.1 precedence, D13) the journey is the
converting click alone.

Vectorised (no loop over conversions): clicks are sorted by ``(user, campaign, click_time,
click_id)`` and numbered; for each conversion two as-of joins find the index range of its
(user, campaign) clicks inside ``[t - lookback, t]``; the newest ``cap`` indexes of that range are
exploded and gathered. Cost is O(clicks log clicks + conversions x cap).
"""

import polars as pl

from attribution_pipeline.core import frames

_TOUCH_ATTRS = {
    "touch_campaign_id": pl.Int64,
    "touch_ppc_account_id": pl.Int64,
    "touch_landing_page_id": pl.Int64,
    "touch_cpc": pl.Float64,
}


def dedupe_clicks(clicks: pl.DataFrame) -> pl.DataFrame:
    """D15: one row per click id (the smallest click_time, then cpc, then ppc account)."""
    return (
        clicks.sort(["click_id", "click_time", "click_cpc", "ppc_account_id"])
        .unique(subset="click_id", keep="first", maintain_order=True)
    )


def duplicated_click_ids(clicks: pl.DataFrame) -> pl.DataFrame:
    """Click ids present more than once in a click slice, with how many rows (D15 check)."""
    return clicks.group_by("click_id").agg(rows=pl.len()).filter(pl.col("rows") > 1).sort("click_id")


def multi_touch_flags(
    conversions: pl.DataFrame, settings: pl.DataFrame, campaign_networks: pl.DataFrame
) -> pl.DataFrame:
    """``conversions`` with ``multi_touch``: PHP's ``isMultiTouchEnabled`` (spec §5.1, D13).

    On by default; then the user's global row, then the advertiser row (the campaign's
    ``aff_network_id``), then the campaign row: the most specific existing row wins. Several rows
    for one scope (possible: NULL never collides in the UNIQUE keys) resolve to the newest
    ``setting_id``. Scope types compare case-insensitively, like MySQL's ``_ci`` collation.
    """
    latest = (
        settings.with_columns(scope=pl.col("scope_type").str.to_lowercase())
        .sort("setting_id")
        .group_by(["user_id", "scope", "scope_id"], maintain_order=True)
        .agg(enabled=pl.col("multi_touch_enabled").last() != 0)
    )
    global_rows = latest.filter((pl.col("scope") == "global") & pl.col("scope_id").is_null()).select(
        "user_id", global_on="enabled"
    )
    advertiser_rows = latest.filter(pl.col("scope") == "advertiser").select(
        "user_id", aff_network_id="scope_id", advertiser_on="enabled"
    )
    campaign_rows = latest.filter(pl.col("scope") == "campaign").select(
        "user_id", campaign_id="scope_id", campaign_on="enabled"
    )
    networks = campaign_networks.unique(subset="campaign_id", keep="first")
    return (
        conversions.join(networks, on="campaign_id", how="left")
        .join(global_rows, on="user_id", how="left")
        .join(advertiser_rows, on=["user_id", "aff_network_id"], how="left")
        .join(campaign_rows, on=["user_id", "campaign_id"], how="left")
        .with_columns(
            multi_touch=pl.coalesce("campaign_on", "advertiser_on", "global_on", pl.lit(True))
        )
        .drop("aff_network_id", "global_on", "advertiser_on", "campaign_on")
    )


def build_journeys(
    conversions: pl.DataFrame, clicks: pl.DataFrame, *, lookback_seconds: int, touch_cap: int
) -> pl.DataFrame:
    """frames.JOURNEYS for ``conversions`` (with ``multi_touch``) from a deduplicated click slice.

    ``clicks`` must hold every click of the conversions' (user, campaign) pairs with
    ``click_time`` in ``[min(conv_time) - lookback, max(conv_time)]``.
    """
    convs = conversions.filter(pl.col("click_rows") > 0)
    candidates = _candidate_touches(convs.filter(pl.col("multi_touch")), clicks, lookback_seconds, touch_cap)
    return completed_journeys(convs, candidates, "journeys")


def touch_columns(click_id, click_time, campaign, ppc, landing, cpc) -> list[pl.Expr]:
    """The touch columns of frames.JOURNEYS from the click's id, time, campaign, account, landing page and cpc."""
    return [
        click_id.cast(frames.CLICK_ID).alias("click_id"),
        click_time.cast(pl.Int64).alias("click_time"),
        campaign.cast(pl.Int64).alias("touch_campaign_id"),
        ppc.cast(pl.Int64).alias("touch_ppc_account_id"),
        landing.cast(pl.Int64).alias("touch_landing_page_id"),
        cpc.cast(pl.Float64).alias("touch_cpc"),
    ]


def _candidate_touches(convs: pl.DataFrame, clicks: pl.DataFrame, lookback: int, cap: int) -> pl.DataFrame:
    """The newest ``cap`` clicks of each conversion's (user, campaign) in its lookback window."""
    keyed = convs.select("conv_id", "user_id", "conv_time", aff_campaign_id="campaign_id")
    return newest_in_window(keyed, clicks, ["user_id", "aff_campaign_id"], lookback, cap)


def newest_in_window(keyed: pl.DataFrame, clicks: pl.DataFrame, by: list[str], lookback: int, cap: int) -> pl.DataFrame:
    """The newest ``cap`` clicks sharing each conversion's ``by`` key inside ``[t - lookback, t]``
    (``keyed``: ``conv_id``, ``conv_time`` and the ``by`` columns), as ``conv_id`` and
    :func:`touch_columns`: the index range of the key's clicks inside the window by two as-of
    joins (the first click at or after its start, the index after the last click at or before
    ``t``), its last ``cap`` indexes gathered. No per-conversion loop: one sort, two joins, one
    gather."""
    indexed = clicks.sort([*by, "click_time", "click_id"]).with_row_index("gidx")
    # one row per distinct (key, click_time): first index at that time, index after it
    at_time = (
        indexed.group_by([*by, "click_time"])
        .agg(first=pl.col("gidx").min().cast(pl.Int64), after=pl.col("gidx").max().cast(pl.Int64) + 1)
        .sort("click_time")
    )
    ranges = (
        keyed.with_columns(window_start=(pl.col("conv_time") - lookback).clip(lower_bound=0))
        .sort("conv_time")
        .join_asof(at_time.select(*by, "click_time", "after"), left_on="conv_time", right_on="click_time",
                   by=by, strategy="backward", check_sortedness=False)
        .drop("click_time")
        .sort("window_start")
        .join_asof(at_time.select(*by, "click_time", "first"), left_on="window_start", right_on="click_time",
                   by=by, strategy="forward", check_sortedness=False)
        .filter(pl.col("after").is_not_null() & pl.col("first").is_not_null() & (pl.col("first") < pl.col("after")))
        .select("conv_id", start=pl.max_horizontal("first", pl.col("after") - cap), end="after")
    )
    picked = ranges.select("conv_id", gidx=pl.int_ranges("start", "end", dtype=pl.Int64)).explode("gidx")
    gathered = indexed.select(pl.all().gather(picked.get_column("gidx")))
    return pl.concat(
        [
            picked.select("conv_id"),
            gathered.select(
                touch_columns(pl.col("click_id"), pl.col("click_time"), pl.col("aff_campaign_id"),
                               pl.col("ppc_account_id"), pl.col("landing_page_id"), pl.col("click_cpc"))
            ),
        ],
        how="horizontal",
    )


def completed_journeys(convs: pl.DataFrame, candidates: pl.DataFrame, name: str) -> pl.DataFrame:
    """frames.JOURNEYS from each conversion's candidate touches (``conv_id`` and
    :func:`touch_columns`): its converting click added when absent (D2 step 2), the touches
    sorted by ``(click_time, click_id)`` and numbered 0..n-1, the conversion's columns joined."""
    touches = pl.concat([candidates, _missing_converting_clicks(convs, candidates)], how="vertical")
    journeys = touches.sort(["conv_id", "click_time", "click_id"]).with_columns(
        position=pl.int_range(pl.len(), dtype=pl.Int32).over("conv_id"),
        n=pl.len().over("conv_id").cast(pl.Int32),
    )
    return frames.conform(
        journeys.join(
            convs.select("conv_id", "date_hour", "user_id", "conv_time", "multi_touch", conv_click_id="click_id"),
            on="conv_id",
        ).with_columns(is_converting=pl.col("click_id") == pl.col("conv_click_id")),
        frames.JOURNEYS,
        name,
    )


def _missing_converting_clicks(convs: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """The converting click of every conversion whose candidates do not include it (step 2)."""
    present = candidates.join(convs.select("conv_id", "click_id"), on=["conv_id", "click_id"], how="semi")
    return convs.join(present.select("conv_id"), on="conv_id", how="anti").select(
        "conv_id",
        *touch_columns(pl.col("click_id"), pl.col("click_time"), pl.col("click_campaign_id"),
                        pl.col("ppc_account_id"), pl.col("landing_page_id"), pl.col("cpc")),
    )


def stored_journeys(conversions: pl.DataFrame, stored: pl.DataFrame, clicks: pl.DataFrame) -> pl.DataFrame:
    """PHP rebuild semantics (D13 setting): touches from 202_conversion_touchpoints.

    Stored touches are used as they are (no de-duplication, as PHP); the converting click is
    appended when absent; sorted by ``(click_time, click_id)``; multi-touch settings are not
    consulted (PHP does not at rebuild time). ``clicks`` (deduplicated) supplies the touches'
    campaign, traffic source, landing page and cpc when known.
    """
    convs = conversions.filter(pl.col("click_rows") > 0).with_columns(multi_touch=pl.lit(True))
    attrs = clicks.select(
        "click_id",
        touch_campaign_id="aff_campaign_id",
        touch_ppc_account_id="ppc_account_id",
        touch_landing_page_id="landing_page_id",
        touch_cpc="click_cpc",
    )
    touches = (
        stored.join(convs.select("conv_id"), on="conv_id", how="semi")
        .select("conv_id", pl.col("click_id").cast(frames.CLICK_ID), pl.col("click_time").cast(pl.Int64))
        .join(attrs, on="click_id", how="left")
        .select("conv_id", *touch_columns(pl.col("click_id"), pl.col("click_time"), pl.col("touch_campaign_id"),
                                           pl.col("touch_ppc_account_id"), pl.col("touch_landing_page_id"),
                                           pl.col("touch_cpc")))
    )
    return completed_journeys(convs, touches, "journeys")
