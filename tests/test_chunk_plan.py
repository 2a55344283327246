"""Chunks sized by the work they hold (core/chunk_plan.py): the estimate, the plan, the pieces of an
hour over the budget, and the chunks of frames (explicit, and those the IO manager loads)."""

import polars as pl
import pytest

from attribution_pipeline.core import chunk_plan as cp
from attribution_pipeline.core import frames
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.io_managers import hourly_parquet
from attribution_pipeline.settings import Settings

H = 1_717_200_000  # 2024-06-01 00:00 UTC
HOUR = 3600


def models_frame(per_user: dict[int, int], invalid: dict[int, int] | None = None, hours=(H,)) -> pl.DataFrame:
    """frames.MODELS rows: ``per_user[u]`` valid models of user u (and ``invalid[u]`` invalid ones) in each hour."""
    rows, model_id = [], 1
    for user, count in sorted(per_user.items()):
        for valid in [True] * count + [False] * (invalid or {}).get(user, 0):
            rows += [{"date_hour": h, "model_id": model_id, "user_id": user, "is_valid": valid} for h in hours]
            model_id += 1
    return pl.DataFrame(rows, schema={"date_hour": pl.Int64, "model_id": pl.Int64, "user_id": pl.Int64,
                                      "is_valid": pl.Boolean})


def counts(rows: list[tuple[int, int, int]]) -> pl.DataFrame:
    """``(hour, user, conversions)`` as conversion counts (one campaign per user)."""
    return pl.DataFrame([(h, u, 100 + u, n) for h, u, n in rows],
                        schema={"date_hour": pl.Int64, "user_id": pl.Int64, "campaign_id": pl.Int64,
                                "conversions": pl.Int64}, orient="row")


def test_budget_and_rows_convert_both_ways():
    assert cp.rows_within(cp.FIXED_MIB) == 1  # nothing left for rows: one row, every hour split to the bone
    assert cp.rows_within(cp.budget_mb_for(1000)) == 1000
    assert cp.rows_within(1536) == (1536 - cp.FIXED_MIB) * 2**20 // cp.BYTES_PER_ROW
    assert cp.touches_bound(25) == 26


def test_the_estimate_is_conversions_times_cap_plus_one_times_valid_models():
    per_user = cp.models_per_user(models_frame({1: 3, 2: 0, 3: 2}, invalid={2: 4, 3: 1}, hours=(H, H + HOUR)))
    assert sorted(per_user.rows()) == [(1, 3), (3, 2)]  # invalid models do not count (D6)
    estimate = cp.hour_rows(counts([(H, 1, 10), (H, 2, 4), (H + HOUR, 3, 7)]), per_user, touch_cap=25)
    # hour H: user 1 10 x 26 x 3 = 780, user 2 (no valid model: its journeys still count) 4 x 26 x 1 = 104
    assert estimate == {H: 884, H + HOUR: 7 * 26 * 2}
    assert cp.hour_rows(counts([(H, 1, 10)]), per_user, touch_cap=3) == {H: 10 * 4 * 3}


def test_only_counted_conversions_weigh():
    conv = pl.DataFrame({"date_hour": [H] * 3, "user_id": [1, 1, 1], "conv_id": [1, 2, 3], "click_rows": [1, 0, 2]})
    weights = cp.conversion_weights(conv, pl.DataFrame({"user_id": [1], "models": [2]}), touch_cap=25)
    assert weights.select("conv_id", "weight").rows() == [(1, 52), (3, 52)]  # conv 2's click is missing (D16)


def test_pack_fills_groups_greedily_within_the_limit():
    assert cp.pack([4, 4, 4, 4], 8) == [0, 0, 1, 1]
    assert cp.pack([3, 20, 3, 3, 3], 8) == [0, 1, 2, 2, 3]  # an item over the limit is alone
    assert cp.pack([1, 1, 1, 1, 1], 100, max_items=2) == [0, 0, 1, 1, 2]
    assert cp.pack([1, 1, 1, 1], 100, breaks=[False, False, True, False]) == [0, 0, 1, 1]
    assert cp.pack([], 10) == []


def test_plan_keeps_each_chunk_within_the_budget_and_the_hour_bound():
    hours = [H + i * HOUR for i in range(8)]
    rows = {hours[0]: 400, hours[1]: 500, hours[2]: 200, hours[3]: 2500, hours[5]: 100, hours[6]: 900}
    plan = cp.plan_chunks(hours, rows, budget_mb=cp.budget_mb_for(1000), max_hours=3)
    assert [len(c) for c in plan.chunks] == [2, 1, 1, 3, 1]
    assert plan.chunks[0] == (hours[0], hours[1]) and plan.chunks[2] == (hours[3],)
    assert plan.estimated_rows == (900, 200, 2500, 1000, 0)  # hours 4..6: 0 + 100 + 900, then hour 7 (3 hours at most)
    assert plan.split_hours == [hours[3]] and plan.oversized((hours[3],)) and not plan.oversized(plan.chunks[0])
    assert plan.metadata() == {"plan_chunks": 5, "plan_max_estimated_rows": 2500, "plan_rows_budget": 1000,
                               "plan_split_hours": 1, "memory_budget_mb": round(cp.budget_mb_for(1000))}
    # a budget that holds everything: ATTRIBUTION_CHUNK_HOURS alone cuts
    assert [len(c) for c in cp.plan_chunks(hours, rows, budget_mb=10**6, max_hours=3).chunks] == [3, 3, 2]


def test_the_dense_tenant_of_issue_17_is_cut_into_chunks_of_a_few_hours():
    """200k conversions in 72 hours, 13 active models over 3 users, at the 25-touch cap: 20.4M
    credit rows; one 168-hour chunk peaked at 10.8 GiB. Under the default budget each chunk holds
    at most rows_within(1536) estimated rows."""
    per_user = cp.models_per_user(models_frame({1: 5, 2: 4, 3: 4}))
    per_hour = [(H + i * HOUR, u, 926) for i in range(72) for u in (1, 2, 3)]  # 200,016 conversions
    estimate = cp.hour_rows(counts(per_hour), per_user, touch_cap=25)
    assert set(estimate.values()) == {926 * 26 * 13}  # 312,988 rows an hour, 22.5M for the 72 hours
    plan = cp.plan_chunks(sorted(estimate), estimate, budget_mb=1536, max_hours=168)
    assert cp.rows_within(1536) == 1_463_071  # (1536 - 350) MiB at 850 bytes a row
    assert [len(c) for c in plan.chunks] == [4] * 18  # 1.25M estimated rows a chunk
    assert max(plan.estimated_rows) * cp.BYTES_PER_ROW / 2**20 + cp.FIXED_MIB <= 1536


def test_pieces_cut_by_user_then_by_conversion_range_never_inside_a_conversion():
    weights = pl.DataFrame({"user_id": [7, 7, 3, 5, 5, 5, 5], "conv_id": [71, 70, 30, 50, 51, 52, 53],
                            "weight": [30, 30, 40, 40, 40, 40, 40]})
    got = dict(cp.pieces(weights, 100).rows())
    # users in id order: 3 (40) alone since 3 and 5 are over, 5 (160: over the budget alone) by
    # conversion range, 7 (60) whole
    assert got == {30: 0, 50: 1, 51: 1, 52: 2, 53: 2, 70: 3, 71: 3}
    assert set(dict(cp.pieces(weights, 10**6).rows()).values()) == {0}
    assert dict(cp.pieces(weights, 1).rows()) == {30: 0, 50: 1, 51: 2, 52: 3, 53: 4, 70: 5, 71: 6}
    conv = weights.with_columns(payload=pl.col("conv_id") * 10)
    parts = cp.split_by_piece(conv, cp.pieces(weights, 100))
    assert [p.get_column("conv_id").sort().to_list() for p in parts] == [[30], [50, 51], [52, 53], [70, 71]]
    assert parts[0].columns == conv.columns


def test_conversion_pieces_and_row_pieces():
    conv = pl.DataFrame({"user_id": [1, 1, 1, 2], "conv_id": [1, 2, 3, 4], "click_rows": [1, 1, 1, 1]})
    per_user = pl.DataFrame({"user_id": [1, 2], "models": [2, 1]})
    parts = cp.conversion_pieces(conv, per_user, touch_cap=25, rows_budget=2 * 52)  # two of user 1's at most
    assert [p.get_column("conv_id").to_list() for p in parts] == [[1, 2], [3], [4]]
    credits = pl.DataFrame({"user_id": [1] * 5 + [2] * 2, "conv_id": [1, 1, 1, 2, 2, 4, 4]})
    assert [p.height for p in cp.row_pieces(credits, 4)] == [3, 2, 2]


def test_a_run_plan_from_frames_equals_the_plan_from_counts():
    hours = [H, H + HOUR, H + 2 * HOUR]
    conv = pl.DataFrame({
        "date_hour": [H, H, H + HOUR, H + 2 * HOUR, H + 2 * HOUR],
        "conv_id": [1, 2, 3, 4, 5], "user_id": [1, 1, 2, 1, 2], "campaign_id": [10, 11, 20, 10, 20],
        "click_rows": [1, 1, 1, 0, 1],
    })
    conversions = HourlyFrame.from_frame(conv.with_columns(
        [pl.lit(None).cast(t).alias(c) for c, t in frames.CONVERSIONS.items() if c not in conv.columns]),
        hours, frames.CONVERSIONS, chunk_size=1)
    models = models_frame({1: 2, 2: 1}, hours=hours)
    models = HourlyFrame.from_frame(models.with_columns(
        [pl.lit(None).cast(t).alias(c) for c, t in frames.MODELS.items() if c not in models.columns]),
        hours, frames.MODELS)
    got = cp.conversion_counts(conversions).sort("date_hour", "user_id", "campaign_id")
    assert got.rows() == [(H, 1, 10, 1), (H, 1, 11, 1), (H + HOUR, 2, 20, 1), (H + 2 * HOUR, 2, 20, 1)]
    settings = Settings(home=".", db_url="sqlite://", memory_budget_mb=cp.budget_mb_for(120), chunk_hours=168)
    plan = HourlyFrame.planned(hours, conversions, models, settings)
    # hour H: 2 x 26 x 2 = 104; H+1: 26; H+2: 26 (conversion 4's click is missing)
    assert plan.chunks == ((H,), (H + HOUR, H + 2 * HOUR)) and plan.estimated_rows == (104, 52)
    # a budget for 180 estimated rows holds the three hours (156) with global rows only; with the
    # five scope types (D31) each row counts 1 + 5 x 0.1 = 1.5 times, so 120 rows fit and H + 1 moves on
    roomy = settings.replace(memory_budget_mb=cp.budget_mb_for(180))
    assert HourlyFrame.planned(hours, conversions, models, roomy).chunks == ((H, H + HOUR, H + 2 * HOUR),)
    scoped = roomy.replace(scope_types=("campaign", "advertiser", "account", "traffic_source", "landing_page"))
    assert cp.SCOPE_ROW_SHARE == 0.1
    assert cp.compute_budget_mb(scoped) == pytest.approx(cp.FIXED_MIB + (cp.budget_mb_for(180) - cp.FIXED_MIB) / 1.5)
    assert HourlyFrame.planned(hours, conversions, models, scoped).chunks == ((H,), (H + HOUR, H + 2 * HOUR))


def test_hourly_frames_take_explicit_chunks_or_a_function_giving_them():
    hours = [H, H + HOUR, H + 2 * HOUR]
    df = pl.DataFrame({"date_hour": hours, "x": [1, 2, 3]})
    explicit = HourlyFrame.from_frame(df, hours, {"date_hour": pl.Int64, "x": pl.Int64},
                                      chunks=[(H,), (H + HOUR, H + 2 * HOUR)])
    assert [(c, d.height) for c, d in explicit.chunks()] == [((H,), 1), ((H + HOUR, H + 2 * HOUR), 2)]
    assert explicit.stats.chunks == 2 and explicit.stats.rows == 3
    lazy = HourlyFrame.from_frame(df, hours, {"date_hour": pl.Int64, "x": pl.Int64}, chunks=lambda: [tuple(hours)])
    assert lazy.chunk_list() == [tuple(hours)]
    sized = HourlyFrame.from_frame(df, hours, {"date_hour": pl.Int64, "x": pl.Int64}, chunk_size=2)
    assert sized.chunk_list() == [(H, H + HOUR), (H + 2 * HOUR,)]  # chunk_size still works
    wrong = HourlyFrame.from_frame(df, hours, {"date_hour": pl.Int64, "x": pl.Int64}, chunks=[(H + HOUR,), (H,)])
    with pytest.raises(ValueError, match="do not cover"):
        wrong.chunk_list()


def test_loaded_frames_chunk_by_their_stored_rows(tmp_path):
    hours = [H + i * HOUR for i in range(5)]
    for hour, n in zip(hours, [300, 300, 900, 0, 200]):
        hourly_parquet.write_hour(tmp_path, "credits", hour, pl.DataFrame(
            {"date_hour": [hour] * n, "x": list(range(n))}, schema={"date_hour": pl.Int64, "x": pl.Int64}))
    assert hourly_parquet.stored_rows(tmp_path, "credits", hours) == dict(zip(hours, [300, 300, 900, 0, 200]))
    budget = cp.budget_mb_for(700 * cp.STORED_ROW_WEIGHT)  # a stored row weighs STORED_ROW_WEIGHT rows
    frame = hourly_parquet.stored_frame(tmp_path, "credits", hours, max_hours=24, budget_mb=budget)
    assert frame.chunk_list() == [(hours[0], hours[1]), (hours[2],), (hours[3], hours[4])]
    assert [d.height for _, d in frame.chunks()] == [600, 900, 200]
    by_hours = hourly_parquet.stored_frame(tmp_path, "credits", hours, max_hours=2)
    assert by_hours.chunk_list() == [tuple(hours[:2]), tuple(hours[2:4]), (hours[4],)]
