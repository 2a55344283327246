"""Seeded synthetic Prosper202 data: every table the attribution engine reads, realistic and odd.

:func:`generate` returns one Polars frame per Prosper202 table (Prosper202 column names and
order, DECIMAL columns as ``pl.Decimal`` with the column's scale, every NOT NULL column filled);
:func:`load` writes them into existing tables (LOAD DATA LOCAL INFILE on MariaDB/MySQL where the
server allows it, batched INSERTs otherwise and on SQLite); :func:`seed` does both.

What is generated, and why
--------------------------
* **Accounts** (``202_users``) with their advertisers (``202_aff_networks``), campaigns
  (``202_aff_campaigns``; several campaigns of an account share a network, the advertiser of
  spec §5.1), traffic sources (``202_ppc_accounts``) and landing pages (``202_landing_pages``).
  Accounts keep Prosper202's default ``user_timezone`` (America/Los_Angeles): the engine must
  ignore it and work in UTC (D17).
* **Clicks** (``202_clicks``): a stream per (account, campaign) over
  ``[start - lookback_days, start + hours)``. Campaign intensities vary widely so journeys (D2:
  the newest 25 clicks of the account on the campaign within 30 days, plus the converting click)
  take every length: *sparse* campaigns have a handful of clicks near the conversion window
  (journeys of 1-6 touches), *light* ones 8-40 clicks in the month, *dense* ones (log-uniform
  weights over two decades) share the rest and fill the 25-touch cap. ``click_id`` increases with
  ``click_time`` (with a few skipped ids, as after purges) and starts above 2**32, so every
  consumer must handle BIGINT UNSIGNED. Converting clicks carry ``click_lead=1,
  click_filtered=0`` as Prosper202's conversion update leaves them; some others are filtered or
  bots (the engine does not exclude them, Q2).
* **Visitors** (``202_clicks_advance``, ``demo/click_visitors.py``): one row per click id, with
  repeat visitors: a visitor (its ``ip_id, platform_id, browser_id, device_id``) clicks about 3
  times (up to a dozen and more) within a week, across the campaigns and traffic sources of one
  account, so visitor-level journeys cross channels. Drawn from streams of their own after
  everything else, so the other tables are the same with or without them.
* **Conversions** (``202_conversion_logs``): each picks a click and a delay (0 for some, mostly
  hours, some days) so that ``conv_time`` is spread over ``[start, start + hours)``;
  ``campaign_id``, ``user_id`` and ``click_time`` are the click's. Edge cases the engine must
  get right: conversions exactly at ``H`` and ``H + 3599`` (D3 hour buckets), conversions whose
  converting click is 30-60 clicks older than the campaign's newest click (not among the newest
  25: 26-touch journeys, D2/Q3), and, for a few conversions, two extra clicks exactly at
  ``conv_time - 30 days`` (inside the inclusive lookback, D2) and one second earlier (outside).
  ``conv_id`` follows insertion order: API/subid conversions (``pixel_type`` 0) are inserted
  late, so ``conv_id`` is not monotonic in ``conv_time``. ``ip`` and ``user_agent`` are personal
  data in a real install; here they are recognisably fake (``203.0.113.*`` / ``2001:db8::*``
  documentation ranges, ``Mozilla/5.0 (SyntheticAgent N)``) so tests can grep logs and exports
  for leaks. ``202_conversion_touchpoints`` stays empty: journeys are built from clicks at run
  time (D13).
* **Models** (``202_attribution_models``): with ``models="all"`` one model of every type per
  account (last_touch as the default, time_decay with several half-lives including ``"12.9"``
  (D10), position_based with several weight pairs, assisted, algorithmic (D7), first_touch and
  linear (D7)) plus one inactive model; with ``invalid_models`` some accounts also get invalid
  rows (half-life 0, weights summing over 1, unknown type ``data_driven``, malformed JSON) that
  the pipeline must skip and report (D6). ``models="main6"`` gives exactly six valid active
  models per account. JSON is stored compactly, as PHP's ``json_encode`` does.
* **Settings** (``202_attribution_settings``): about a third of the accounts switch multi-touch
  off globally, one of them switches it back on for one advertiser, another account switches it
  off for one campaign (D13, spec §5.1: the most specific row wins).
* **Anomalies** (``anomalies=True``): a few exactly duplicated click rows, some of them
  converting clicks (D15: one click, counted once); about 0.5% of conversions whose click id is
  not in ``202_clicks`` (D16: skipped); about 2% soft-deleted conversions (D16: never count); the
  last account is ``user_deleted=1`` yet has campaigns, clicks, conversions and models (D16: not
  processed).

Everything that varies comes from ``config.seed``: small tables from ``random.Random`` seeded
per table, large ones from a SplitMix64 hash of the row number computed with Polars integer
expressions (wrapping UInt64 arithmetic), so the same config gives byte-identical frames and the
output does not depend on Polars' internal hash function. ``start`` is always given by the
caller; nothing reads the clock.
"""

import polars as pl
from sqlalchemy.engine import Engine

from attribution_pipeline.demo.accounts import plan_accounts
from attribution_pipeline.demo.click_visitors import clicks_advance
from attribution_pipeline.demo.config import MODEL_TYPES, GeneratorConfig
from attribution_pipeline.demo.model_rows import model_rows, settings_rows
from attribution_pipeline.demo.seeded import table_frame
from attribution_pipeline.demo.traffic import clicks_and_conversions
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.bulk import bulk_load

__all__ = ["MODEL_TYPES", "GeneratorConfig", "generate", "load", "seed", "source_frames"]


def generate(config: GeneratorConfig) -> dict[str, pl.DataFrame]:
    """Table name -> frame with that table's columns, for every Prosper202 source table."""
    plan = plan_accounts(config)
    clicks, conversions = clicks_and_conversions(config, plan)
    models = model_rows(config, plan)
    return source_frames(plan, clicks, conversions, models, settings_rows(config, plan, models),
                         advance=clicks_advance(config.seed, clicks))


def source_frames(plan, clicks: pl.DataFrame, conversions: pl.DataFrame, models: list[dict],
                  settings: list[dict], advance: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    """Table name -> frame for every Prosper202 source table, from an account plan and its rows
    (``advance``: the ``202_clicks_advance`` rows, none if not given)."""
    return {
        tables.users.name: table_frame(tables.users, plan.users),
        tables.aff_networks.name: table_frame(tables.aff_networks, plan.networks),
        tables.aff_campaigns.name: table_frame(tables.aff_campaigns, plan.campaign_rows),
        tables.ppc_accounts.name: table_frame(tables.ppc_accounts, plan.ppc_accounts),
        tables.landing_pages.name: table_frame(tables.landing_pages, plan.landing_pages),
        tables.clicks.name: clicks,
        tables.clicks_advance.name: advance if advance is not None else table_frame(tables.clicks_advance, []),
        tables.conversion_logs.name: conversions,
        tables.conversion_touchpoints.name: table_frame(tables.conversion_touchpoints, []),
        tables.attribution_models.name: table_frame(tables.attribution_models, models),
        tables.attribution_settings.name: table_frame(tables.attribution_settings, settings),
    }


def load(engine: Engine, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Insert ``frames`` into the existing tables of ``engine`` in one transaction; row counts."""
    unknown = set(frames) - set(tables.metadata.tables)
    if unknown:
        raise ValueError(f"unknown tables: {sorted(unknown)}")
    counts = {}
    with engine.begin() as conn:
        for table in tables.metadata.sorted_tables:
            if table.name in frames:
                counts[table.name] = bulk_load(conn, table, frames[table.name])
    return counts


def seed(engine: Engine, config: GeneratorConfig) -> dict[str, int]:
    """Create the missing Prosper202 tables, generate ``config``'s data and load it."""
    tables.create_missing(engine)
    return load(engine, generate(config))
