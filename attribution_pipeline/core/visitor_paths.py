"""Visitor-level journeys and training paths: the clicks of one visitor across every campaign,
account and traffic source of a Prosper202 user (issue 22).

A *visitor* is an opaque UInt64 (``visitor``) that ``storage/visitor_clicks.py`` derives in
memory from the visitor key (ATTRIBUTION_VISITOR_KEY: columns of ``202_clicks_advance``) and the
user id as it reads the clicks. It is personal data: it is compared here, never returned; no frame
this module returns has a ``visitor`` column. Its value is meaningful only within the process that
read it, so nothing here depends on it except through equality (path ids come from click ids).

:func:`visitor_journeys` applies the journey rule of D2 with the visitor in place of the
(account, campaign): for a conversion at ``t`` whose converting click belongs to visitor ``v`` of
user ``u``,

1. candidates = the clicks of ``(u, v)`` (any campaign, any traffic source) with
   ``max(0, t - lookback) <= click_time <= t``, the newest ``cap`` of them by
   ``(click_time DESC, click_id DESC)``; a click id read several times is one click (D15);
2. the converting click is added, with 202_conversion_logs.click_time and the conversion's click
   attributes, when it is not among them (so a journey can have ``cap + 1`` touches);
3. touches are sorted by ``(click_time, click_id)`` and numbered 0..n-1.

A conversion with ``multi_touch`` false (if the frame has the column; true otherwise), or whose
converting click is not among ``clicks`` or belongs to another user (D21), gets the converting
click alone. The result is ``frames.JOURNEYS``, so the strategies and crediting take it as it is.

:func:`training_paths` cuts each visitor's clicks of a training window into paths at its
conversions, for fitting path models (Markov chains): a path ends at a click that converted (the
converting click of a conversion of the window); the clicks after the visitor's last conversion
form a last path that ends in no conversion. Repeated channels are kept (collapsing them is the
model's choice).

Vectorised (sorts, joins, as-of joins and window expressions; no loop over conversions or
visitors). Cost: O(clicks log clicks + conversions x cap).
"""

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core.journey_rules import completed_journeys, dedupe_clicks, newest_in_window

#: The opaque in-memory visitor (a hash of the visitor key and the user id).
VISITOR = pl.UInt64

#: The clicks visitor journeys and paths are built from (``storage/visitor_clicks.py`` reads them):
#: 202_clicks rows (duplicated click ids included until D15 collapses them) with their visitor and
#: their traffic source (the account's ``202_ppc_accounts.ppc_network_id``, null if unknown).
VISITOR_CLICKS = {
    "click_id": frames.CLICK_ID,
    "user_id": pl.Int64,
    "visitor": VISITOR,
    "click_time": pl.Int64,
    "aff_campaign_id": pl.Int64,
    "ppc_account_id": pl.Int64,
    "landing_page_id": pl.Int64,
    "click_cpc": pl.Float64,
    "ppc_network_id": pl.Int64,
}

#: One row per step of each training path, steps 0..n-1 in click order.
TRAINING_PATHS = {
    "user_id": pl.Int64,  # the Prosper202 user (account owner) the path's visitor belongs to
    "path_id": pl.Int64,  # 0..P-1, paths ordered by their first click (click_time, click_id)
    "step": pl.Int32,
    "channel": pl.Int64,  # the step's channel id; 0 = none or unknown
    "converted": pl.Boolean,  # the path ends in a conversion (the same on every step of a path)
}

#: Path channels: the click column each one reads.
CHANNELS = {"account": "ppc_account_id", "traffic_source": "ppc_network_id", "landing_page": "landing_page_id"}

_KEY = ["user_id", "visitor"]


def _counted(conversions: pl.DataFrame) -> pl.DataFrame:
    """The conversions that count (their click row was found, D16, when the frame says so), with
    ``multi_touch`` (true when the frame has no such column)."""
    convs = conversions.filter(pl.col("click_rows") > 0) if "click_rows" in conversions.columns else conversions
    return convs if "multi_touch" in convs.columns else convs.with_columns(multi_touch=pl.lit(True))


def visitor_journeys(conversions: pl.DataFrame, clicks: pl.DataFrame, lookback_seconds: int, cap: int) -> pl.DataFrame:
    """frames.JOURNEYS of ``conversions`` (frames.CONVERSIONS, optionally with ``multi_touch``)
    from ``clicks`` (VISITOR_CLICKS), across every campaign and account of each visitor (module
    docstring). ``clicks`` must hold every click of the conversions' users with ``click_time`` in
    ``[min(conv_time) - lookback, max(conv_time)]``, and the converting clicks."""
    convs = _counted(conversions)
    multi = convs.filter(pl.col("multi_touch"))
    owners = (  # the converting clicks' visitors (a click id has one visitor: its advance row's)
        clicks.filter(pl.col("click_id").is_in(multi.get_column("click_id").implode()))
        .select("click_id", "visitor", click_user="user_id").unique(subset="click_id")
    )
    keyed = (
        multi.join(owners, on="click_id", how="inner")
        .filter(pl.col("click_user") == pl.col("user_id"))  # D21: another user's click has no visitor of this user
        .select("conv_id", "user_id", "visitor", "conv_time")
    )
    theirs = clicks.filter(pl.col("visitor").is_in(keyed.get_column("visitor").unique().implode()))
    seen = dedupe_clicks(theirs.select(list(VISITOR_CLICKS)).join(keyed.select(_KEY).unique(), on=_KEY, how="semi"))
    candidates = newest_in_window(keyed, seen, _KEY, int(lookback_seconds), int(cap))
    return completed_journeys(convs, candidates, "visitor journeys")


def training_paths(clicks: pl.DataFrame, conversions: pl.DataFrame, channel: str, start: int, end: int) -> pl.DataFrame:
    """TRAINING_PATHS of the visitors' clicks with ``start <= click_time <= end`` (``clicks``:
    VISITOR_CLICKS; bounds inclusive, as the reads' and D2's), cut at the converting clicks of
    ``conversions`` (frames.CONVERSIONS; those that count, with ``conv_time <= end``, on a click of
    their own user: a conversion after the window is not known at its end) and labelled by
    ``channel`` (a key of :data:`CHANNELS`; a null channel id is 0, like Prosper202's 0 for "none":
    a direct link has landing page 0, an unknown account traffic source 0). Rows are sorted by
    ``(path_id, step)``.

    A path ends at a click that converted (however many conversions it had), or is the visitor's
    last clicks of the window, after its last conversion, and did not convert."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown path channel {channel!r}: use one of {', '.join(CHANNELS)}")
    seen = _deduplicated(clicks.filter(pl.col("click_time").is_between(start, end)))
    converting = (
        _counted(conversions).filter(pl.col("conv_time") <= end).select("click_id", "user_id").unique()
        .join(seen.select("click_id", "user_id"), on=["click_id", "user_id"], how="semi")  # D21
        .get_column("click_id")
    )
    ordered = (  # stable single-key sorts: (user, visitor, click_time, click_id), cheaper than one sort by four
        seen.select("user_id", "visitor", "click_time", "click_id", channel=pl.col(CHANNELS[channel]).fill_null(0))
        .sort("click_time", maintain_order=True).sort("visitor", maintain_order=True)
        .sort("user_id", maintain_order=True)
        .with_columns(conv=pl.col("click_id").is_in(converting.implode()), idx=pl.int_range(pl.len(), dtype=pl.Int64))
    )
    # a path begins at a visitor's first click and after each converting click; paths are contiguous
    begins = ((pl.col("user_id") != pl.col("user_id").shift(1)) | (pl.col("visitor") != pl.col("visitor").shift(1))
              | pl.col("conv").shift(1)).fill_null(True)
    steps = ordered.with_columns(begins=begins).with_columns(
        step=(pl.col("idx") - pl.when("begins").then(pl.col("idx")).forward_fill()).cast(pl.Int32),
        converted=pl.when(pl.col("begins").shift(-1).fill_null(True)).then(pl.col("conv")).backward_fill(),
    )
    firsts = (  # path ids: the paths ordered by their first click (click_time, click_id)
        steps.filter(pl.col("begins")).select("idx", "click_time", "click_id").sort("click_time", "click_id")
        .select("idx", path_id=pl.int_range(pl.len(), dtype=pl.Int64))
    )
    path_id = pl.repeat(None, steps.height, dtype=pl.Int64, eager=True).scatter(
        firsts.get_column("idx"), firsts.get_column("path_id"))
    return frames.conform(
        steps.with_columns(path_id=path_id.forward_fill()).sort("path_id", maintain_order=True),
        TRAINING_PATHS, "training paths",
    )


def _deduplicated(clicks: pl.DataFrame) -> pl.DataFrame:
    """``clicks`` (VISITOR_CLICKS) with one row per click id (D15), sorted by click id; the
    duplicates' rule (a sort by four keys) is applied to the duplicated ids only."""
    by_id = clicks.select(list(VISITOR_CLICKS)).sort("click_id")
    copied = (pl.col("click_id") == pl.col("click_id").shift(1)) | (pl.col("click_id") == pl.col("click_id").shift(-1))
    flagged = by_id.with_columns(copied=copied.fill_null(False))
    copies = flagged.filter(pl.col("copied")).drop("copied")
    if copies.height == 0:
        return by_id
    return pl.concat([flagged.filter(~pl.col("copied")).drop("copied"), dedupe_clicks(copies)]).sort("click_id")
