"""D38: a (user, hour)'s click window starts where its journeys can reach, found from the data.

The pure maths on a worked example, then MariaDB runs on a tenant whose conversions are all on a
busy campaign (every hour's window reach-limited): a change before the reach recomputes nothing
and changes no row, a change inside it (a deleted touch, an older copy of a touch) recomputes its
hours, and the rows equal a full rewrite each time."""

import polars as pl
import pytest
from sqlalchemy import func, insert, select, update

from attribution_pipeline.core.click_reach import click_starts, window_sums
from attribution_pipeline.storage import tables
from pipeline import HOUR
from test_incremental import HOURS, incremental_then_full, run, seed

H0 = 100 * HOUR
DAYS_30 = 30 * 86400
conv, clk, touch = tables.conversion_logs, tables.clicks, tables.attribution_touchpoints


def counts(rows: list[tuple[int, int, int, int]]) -> pl.DataFrame:
    """(user, campaign, click hour, clicks) -> CAMPAIGN_PARTS (sums are not used by the reach)."""
    return pl.DataFrame([(u, k, h, n, 0, 0) for u, k, h, n in rows], orient="row",
                        schema=["user_id", "campaign_id", "date_hour", "rows", "sum_a", "sum_b"])


def starts_of(lookback: int = DAYS_30, full_users=()) -> dict:
    grid = pl.DataFrame({"user_id": [1] * 5 + [2], "date_hour": [H0 + i * HOUR for i in range(5)] + [H0]})
    clicks = counts([(1, 10, H0 - 5 * HOUR, 2), (1, 10, H0 - 3 * HOUR, 1), (1, 10, H0 - HOUR, 1), (1, 10, H0, 4),
                     (1, 11, H0 - 2 * HOUR, 1), (1, 12, H0 - 30 * HOUR, 5), (2, 10, H0 - HOUR, 50)])
    campaigns = pl.DataFrame({"user_id": [1, 1, 1, 1, 1, 2], "campaign_id": [10, 10, 10, 11, 12, 10],
                              "date_hour": [H0, H0 + HOUR, H0 + 2 * HOUR, H0 + 2 * HOUR, H0 + 4 * HOUR, H0]})
    got = click_starts(grid, clicks, campaigns, cap=3, lookback_seconds=lookback, full_users=list(full_users))
    return {(u, (h - H0) // HOUR): ((s - H0) // HOUR, limited) for u, h, s, limited in got.iter_rows()}


def test_the_window_starts_at_the_hour_of_each_campaigns_cap_th_newest_click():
    """cap 3. Campaign 10 has 2, 1 and 1 clicks in hours -5, -3, -1 and 4 in hour 0.
    Hour 0: its 3rd newest click before the hour is in hour -5 (ranks 1-2 there, 3 in -3, 4 in -1:
    rank 4 - 3 + 1 = 2). Hour 1: 8 before it, rank 6 is in hour 0. Hour 2 also has a conversion on
    campaign 11 (1 click in the day before): the whole lookback. Hour 3 has no conversion: its own
    hour. Hour 4's campaign 12 has its clicks 34 hours back, outside the day searched: the whole
    lookback. User 2 has a model on visitor journeys: the whole lookback."""
    lookback = -DAYS_30 // HOUR  # hours from the hour to its lookback start
    assert starts_of(full_users=[2]) == {
        (1, 0): (-5, True), (1, 1): (0, True), (1, 2): (2 + lookback, False), (1, 3): (3, False),
        (1, 4): (4 + lookback, False), (2, 0): (lookback, False)}
    # a lookback shorter than the reach bounds the window; user 2's 50 clicks give hour -1
    short = starts_of(lookback=2 * HOUR)
    assert short[(1, 0)] == (-2, True) and short[(2, 0)] == (-1, True)


def test_window_sums_add_the_click_hours_from_start_through_the_hour():
    parts = pl.DataFrame({"user_id": [1, 1, 1, 2], "date_hour": [H0 - 2 * HOUR, H0 - HOUR, H0, H0],
                          "rows": [1, 2, 4, 8], "sum_a": [10, 20, 40, 80], "sum_b": [1, 1, 1, 1]})
    starts = pl.DataFrame({"user_id": [1, 1, 2, 3], "date_hour": [H0, H0 + HOUR, H0, H0],
                           "start": [H0 - HOUR, H0, H0 - 9 * HOUR, H0]})
    got = window_sums(parts, starts, "c").sort("user_id", "date_hour")
    assert got.select("user_id", "c_rows", "c_a", "c_b").rows() == [(1, 6, 60, 2), (1, 4, 40, 1), (2, 8, 80, 1),
                                                                   (3, 0, 0, 0)]


def busy_tenant(url):
    """The incremental tests' data with every conversion moved onto the user's busiest campaign."""
    engine = seed(url)
    with engine.begin() as conn:
        busiest = conn.execute(select(clk.c.aff_campaign_id).group_by(clk.c.aff_campaign_id)
                               .order_by(func.count().desc()).limit(1)).scalar()
        conn.execute(update(conv).values(campaign_id=busiest))
    return engine


CAP = 5


def journey_click(engine, hour_index: int, before: int) -> dict:
    """A click before ``before`` that is a touch of a conversion of hour ``hour_index``, not its
    converting click (its row as stored)."""
    lo = HOURS[hour_index]
    with engine.connect() as conn:
        click_id = conn.execute(
            select(touch.c.click_id).join(conv, conv.c.conv_id == touch.c.conv_id)
            .join(clk, clk.c.click_id == touch.c.click_id)
            .where(conv.c.conv_time.between(lo, lo + HOUR - 1), touch.c.click_id != conv.c.click_id,
                   clk.c.click_time < before)
            .order_by(touch.c.touchpoint_id).limit(1)).scalar()
        return dict(conn.execute(select(clk).where(clk.c.click_id == click_id)).one()._mapping)


def old_click_edit(engine):
    """A click two days before the first hour gets another cost and account: outside every window."""
    with engine.begin() as conn:
        click_id = conn.execute(select(clk.c.click_id).where(clk.c.click_time < HOURS[0] - 2 * 86400)
                                .order_by(clk.c.click_time.desc()).limit(1)).scalar()
        conn.execute(update(clk).where(clk.c.click_id == click_id).values(click_cpc=clk.c.click_cpc + 3))
    return 0


def touch_deleted(engine):
    """A touch of hour 2 deleted: its journeys reach one click further back."""
    click = journey_click(engine, 2, HOURS[3])
    with engine.begin() as conn:
        conn.execute(clk.delete().where(clk.c.click_id == click["click_id"]))
    return 1


def older_copy(engine):
    """A copy of a touch of hour 0 from before the hour, three days older (D15: the click now counts
    at that time)."""
    click = journey_click(engine, 0, HOURS[0])
    with engine.begin() as conn:
        conn.execute(insert(clk).values({**click, "click_time": click["click_time"] - 3 * 86400}))
    return 1


@pytest.mark.parametrize("change", [old_click_edit, touch_deleted, older_copy])
def test_changes_before_and_inside_the_reach(mysql_url, change):
    """Every hour with conversions is reach-limited here. A change before the reach recomputes
    nothing and changes no row; a change inside it recomputes at least its hour; the rows equal a
    full rewrite each time."""
    from attribution_pipeline.assets.source_changes import source_parts
    from attribution_pipeline.settings import Settings
    from attribution_pipeline.storage.database import Database

    engine = busy_tenant(mysql_url)
    run(mysql_url, HOURS[0], HOURS[-1], touch_cap=CAP)
    before = incremental_then_full(mysql_url, engine, touch_cap=CAP)[2]
    with engine.connect() as conn:
        users = [r[0] for r in conn.execute(select(clk.c.user_id).distinct())]
    _, clicks, starts, _ = source_parts(Database(mysql_url), users, HOURS, Settings(home=None, db_url=mysql_url,
                                                                                     touch_cap=CAP), [])
    assert starts.get_column("reach_limited").all() and starts.get_column("start").min() >= HOURS[0] - 2 * HOUR, starts
    assert clicks.get_column("date_hour").min() >= HOURS[0] - 24 * HOUR  # the older clicks are not read
    recomputed = change(engine)
    report, after, full = incremental_then_full(mysql_url, engine, touch_cap=CAP)
    assert after == full
    if recomputed:
        assert report["user_hours_recomputed"] >= recomputed and after != before
    else:
        assert report["user_hours_recomputed"] == 0 and after == before
