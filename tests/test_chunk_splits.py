"""Chunks sized by the memory budget, end to end (real Dagster job, MariaDB): a run cut into one-hour
chunks, an hour computed in pieces of whole users, and a user-hour computed in pieces of conversion
ranges all store exactly the rows of an unsplit run (202_attribution_snapshots and
202_attribution_touchpoints), each hour still written in one transaction (D9)."""

import polars as pl
import pytest

from attribution_pipeline.core import chunk_plan as cp
from attribution_pipeline.demo.generator import GeneratorConfig, generate, load
from attribution_pipeline.io_managers.hourly_parquet import stored_frame
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import database, tables
from oracle import php_engine
from pipeline import HOUR, run, settings

START = 1735689600  # 2025-01-01 00:00 UTC
#: Scope types a run writes by default (D31): the chunk plan counts their memory.
DEFAULT_SCOPES = len(Settings.from_env({}).scope_types)
HOURS = [START + i * HOUR for i in range(4)]


def stored(url):
    with database.make_engine(url).connect() as conn:
        rows = php_engine.stored_rows(conn)
    return sorted(rows.snapshots), sorted(rows.touchpoints)


def clear(url):
    with database.make_engine(url).begin() as conn:
        conn.execute(tables.attribution_touchpoints.delete())
        conn.execute(tables.attribution_snapshots.delete())


def metadata(result, node: str) -> dict:
    materialization = result.asset_materializations_for_node(node)[0]  # one per hour, the same metadata
    return {k: v.value for k, v in materialization.metadata.items()}


def estimates() -> pl.DataFrame:
    """Estimated rows per (hour, user) of the run just made, from its published frames."""
    root = settings().frames_path
    counts = cp.conversion_counts(stored_frame(root, "conversions", HOURS))
    per_user = cp.models_per_user(stored_frame(root, "attribution_models", HOURS).collect())
    weighted = cp.conversion_weights(counts, per_user, touch_cap=25)
    return weighted.group_by("date_hour", "user_id").agg(pl.col("weight").sum(), pl.col("conversions").sum())


@pytest.fixture
def generated(mysql_url):
    engine = database.make_engine(mysql_url)
    load(engine, generate(GeneratorConfig(seed=31, start=START, hours=len(HOURS), scale=0.2, users=20)))
    return mysql_url


def test_runs_split_by_hour_by_user_and_by_conversion_range_store_the_rows_of_an_unsplit_run(generated):
    url = generated
    result, report = run(url, HOURS[0], HOURS[-1])  # the default budget: one chunk
    assert metadata(result, "credits")["plan_chunks"] == 1 and report["chunks_committed"] == 1
    whole = stored(url)
    assert len(whole[1]) > 1000
    per_user_hour = estimates()
    per_hour = per_user_hour.group_by("date_hour").agg(pl.col("weight").sum())
    largest_hour, largest_user_hour = per_hour["weight"].max(), per_user_hour["weight"].max()
    assert per_user_hour.height > len(HOURS) and largest_hour > largest_user_hour  # hours with several users

    splits = {
        # every hour fits alone, no two hours together: one-hour chunks, nothing in pieces
        "hour": (cp.budget_mb_for(largest_hour, DEFAULT_SCOPES), lambda m: m["plan_chunks"] == len(HOURS) and "pieces" not in m),
        # every user-hour fits, the largest hour does not: that hour in pieces of whole users
        # (the snapshots cut the credit rows themselves, fewer than estimated: fewer pieces)
        "user": (cp.budget_mb_for(largest_user_hour, DEFAULT_SCOPES),
                 lambda m: m["plan_split_hours"] >= 1 and m["pieces"] >= m["plan_split_hours"]),
        # two conversions at most: users' hours cut by conversion range
        "conversion range": (cp.budget_mb_for(2 * 26 * int(cp.models_per_user(
            stored_frame(settings().frames_path, "attribution_models", HOURS).collect())["models"].max()), DEFAULT_SCOPES),
            lambda m: m["plan_split_hours"] == len(HOURS) and m["pieces"] >= per_user_hour.height),
    }
    for kind, (budget, expected) in splits.items():
        clear(url)
        result, report = run(url, HOURS[0], HOURS[-1], full=True, memory_budget_mb=budget)
        for node in ("journeys", "credits", "snapshots"):
            assert expected(metadata(result, node)), (kind, node, metadata(result, node))
        credits = metadata(result, "credits")
        if kind == "user":
            assert credits["pieces"] >= 2 * credits["plan_split_hours"]
        if kind == "conversion range":  # a user-hour over the budget: in pieces of at most the budget
            over = per_user_hour.filter(pl.col("weight") > credits["plan_rows_budget"])
            at_least = over.select((pl.col("weight") / credits["plan_rows_budget"]).ceil().sum()).item()
            assert over.height >= per_user_hour.height / 2 and credits["pieces"] >= at_least > 2 * over.height
        assert report["chunks_committed"] == metadata(result, "credits")["plan_chunks"], kind
        assert stored(url) == whole, f"split by {kind}: the stored rows differ from the unsplit run's"


def test_the_budget_is_read_from_the_environment_and_bounded():
    from attribution_pipeline.settings import SettingsError

    assert Settings.from_env({}).memory_budget_mb == 1536
    assert Settings.from_env({"ATTRIBUTION_MEMORY_BUDGET_MB": "4096"}).memory_budget_mb == 4096
    with pytest.raises(SettingsError, match="ATTRIBUTION_MEMORY_BUDGET_MB=10 must be at least 64"):
        Settings.from_env({"ATTRIBUTION_MEMORY_BUDGET_MB": "10"})
