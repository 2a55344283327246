"""The generator's ``202_clicks_advance`` rows: who clicked, with repeat visitors (what and why:
``demo/generator.py``).

Every distinct click id of ``202_clicks`` gets one row (the table's key is ``click_id``). Clicks
are grouped into *visitors* within one account: an account's clicks are cut into weeks (at an
offset per account) and each click of a week goes to one of ``ceil(clicks / CLICKS_PER_VISITOR)``
visitors of that week, drawn from its click id (so a visitor has about 3 clicks, Poisson-like:
one to a dozen). The clicks of a week were spread over every campaign and traffic source of the
account, so a visitor's clicks cross campaigns, accounts and traffic sources, days apart: visitor
paths with several touches. Each visitor has one ``(ip_id, platform_id, browser_id, device_id)``
(Prosper202's default visitor key); ip ids are drawn from a pool smaller than the visitors, so
some visitors share an address (as behind a NAT) and differ by platform, browser or device only;
country, region, city and ISP follow the visitor; text ad and keyword are drawn per click.

Everything is drawn from its own streams (``stream_key(seed, "visitors/...")``: hashes of the
click id and of the visitor; one sort, by click id) after the clicks are made, so
the other tables are exactly what they are without these rows.
"""

import polars as pl

from attribution_pipeline.demo.config import DAY
from attribution_pipeline.demo.seeded import hash64, stream_key, table_frame
from attribution_pipeline.storage import tables

#: The span visitors are cut from: a visitor's clicks lie within one week of its account.
VISIT_SPAN = 7 * DAY
#: Mean clicks per visitor.
CLICKS_PER_VISITOR = 2.9
#: Visitors per distinct ip id (a NAT: several visitors behind one address).
VISITORS_PER_IP = 1.25
_U64 = pl.UInt64


def _digit(h: pl.Expr, below_: int, n: int) -> pl.Expr:
    """An integer in [0, n) from the bits of a hash ``h`` (``below_``: the product of the ranges
    already taken from it), as Int64."""
    return (h // pl.lit(below_, _U64) % pl.lit(n, _U64)).cast(pl.Int64)


def clicks_advance(seed: int, clicks: pl.DataFrame) -> pl.DataFrame:
    """``202_clicks_advance`` rows for every distinct ``click_id`` of ``clicks`` (a ``202_clicks`` frame)."""
    if clicks.height == 0:
        return table_frame(tables.clicks_advance, [])

    def key(name: str) -> int:
        return stream_key(seed, f"visitors/{name}")

    c = pl.col("click_id")
    base = clicks.select("click_id", "user_id", "click_time").sort("click_id").filter(c != c.shift(1, fill_value=0))
    n_ips = max(1, int(base.height / CLICKS_PER_VISITOR / VISITORS_PER_IP))
    user = pl.col("user_id").cast(_U64)
    offset = (user * pl.lit(key("week-offset") | 1, _U64)) % pl.lit(VISIT_SPAN, _U64)
    week = ((pl.col("click_time").cast(_U64) + offset) // pl.lit(VISIT_SPAN, _U64))
    visitors_of_week = (pl.len().over("user_id", "week") / CLICKS_PER_VISITOR).ceil().cast(_U64)
    per_click = pl.col("per_click")
    # the visitor: (account, week, one of the week's visitors drawn from the click id's hash)
    visitor = (user * pl.lit(1 << 40, _U64) + (pl.col("week") % pl.lit(1 << 20, _U64)) * pl.lit(1 << 20, _U64)
               + (per_click // pl.lit(1 << 32, _U64)) % pl.col("visitors") % pl.lit(1 << 20, _U64))
    where, who = hash64(pl.col("visitor"), key("where")), hash64(pl.col("visitor"), key("who"))
    rows = (
        base.lazy()
        .with_columns(week=week, per_click=hash64(c, key("click")))
        .with_columns(visitors=visitors_of_week)
        .with_columns(visitor=visitor)
        .select(
            "click_id",
            text_ad_id=pl.when(_digit(per_click, 1, 5) == 0).then(1 + _digit(per_click, 5, 50)).otherwise(0),
            keyword_id=pl.when(_digit(per_click, 250, 10) < 7).then(1 + _digit(per_click, 2500, 5000)).otherwise(0),
            ip_id=1 + _digit(where, 1, n_ips),
            country_id=1 + _digit(who, 1, 60),
            region_id=1 + _digit(who, 60, 1_200),
            city_id=1 + _digit(who, 72_000, 20_000),
            platform_id=1 + _digit(who, 1_440_000_000, 6),
            browser_id=1 + _digit(who, 8_640_000_000, 12),
            device_id=1 + _digit(who, 103_680_000_000, 40),
            isp_id=pl.when(_digit(who, 4_147_200_000_000, 10) < 9)
            .then(1 + _digit(who, 41_472_000_000_000, 800)).otherwise(0),
        )
        .collect()
    )
    return table_frame(tables.clicks_advance, rows)
