"""The data-driven model's steps on generated data at the default size (D32), in memory.

The generator's default benchmark data (``--clicks`` 2,000,000 clicks and ``--conversions``
100,000 conversions over ``--hours`` 720 hours, its ``202_clicks_advance`` rows with repeat
visitors) is laid out as the pipeline's frames (the visitor clicks as ``storage/visitor_clicks.py``
returns them: the key hashed, the traffic source joined), then each step is timed:

* ``visitor_journeys`` of every conversion (the pipeline cuts them into chunks of hours);
* per user, ``training_paths`` of the last 30 days and ``fit_markov`` on them (order 1 by
  account, order 2 by traffic source, order 1 by landing page): what the daily fit asset does per
  model, without the MySQL read (timed on MariaDB in bench/RESULTS.md);
* ``markov_credits`` of every visitor touch under ``--models`` Markov models per user (touches/s;
  model ``k`` credits by the ``k % 3``-th channel type, so past 3 a user has several models of a type).

Wall seconds of one pass (after a warm-up of the credit step), the load average printed along.
Run as ``.venv/bin/python -m bench.markov_pipeline``.
"""

import argparse
import os
import time

import polars as pl

from attribution_pipeline.core.markov_chain import fit_markov
from attribution_pipeline.core.markov_credit import credit_shares
from attribution_pipeline.core.visitor_crediting import markov_credits
from attribution_pipeline.core.visitor_paths import VISITOR_CLICKS, training_paths, visitor_journeys
from attribution_pipeline.demo.generator import GeneratorConfig, generate
from attribution_pipeline.demo.seeded import hash64
from attribution_pipeline.storage import tables

START = 1735689600  # 2025-01-01 00:00 UTC, as bench/run.py
DAY = 86400
CHANNELS = (("account", 1), ("traffic_source", 2), ("landing_page", 1))


def frames_of(data: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(visitor clicks as VISITOR_CLICKS, conversions as the credits step sees them)."""
    clicks = data[tables.clicks.name]
    advance = data[tables.clicks_advance.name]
    accounts = data[tables.ppc_accounts.name].select("ppc_account_id", "ppc_network_id")
    key = pl.col("user_id")
    for column in ("ip_id", "platform_id", "browser_id", "device_id"):
        key = hash64(key.cast(pl.UInt64) ^ pl.col(column).cast(pl.UInt64), 7)
    visits = (clicks.join(advance, on="click_id", how="left").join(accounts, on="ppc_account_id", how="left")
              .with_columns(visitor=key).select(list(VISITOR_CLICKS)).cast(VISITOR_CLICKS))
    first = clicks.unique(subset="click_id", keep="first")
    conv = (data[tables.conversion_logs.name].filter(pl.col("deleted") == 0)
            .join(first.select("click_id", click_user="user_id", click_cpc="click_cpc", ppc_account_id="ppc_account_id",
                               landing_page_id="landing_page_id", click_campaign_id="aff_campaign_id"),
                  on="click_id", how="inner")
            .filter(pl.col("click_user") == pl.col("user_id"))
            .select("conv_id", "user_id", "campaign_id", "click_id", "conv_time", "click_time",
                    date_hour=pl.col("conv_time") - pl.col("conv_time") % 3600,
                    payout=pl.col("click_payout").cast(pl.Float64), cpc=pl.col("click_cpc").cast(pl.Float64),
                    ppc_account_id="ppc_account_id", landing_page_id="landing_page_id",
                    click_campaign_id="click_campaign_id", click_rows=pl.lit(1, pl.UInt32)))
    return visits, conv


def timed(work):
    started = time.perf_counter()
    out = work()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=2_000_000)
    parser.add_argument("--conversions", type=int, default=100_000)
    parser.add_argument("--hours", type=int, default=720)
    parser.add_argument("--models", type=int, default=3, help="Markov models per user in the credit step")
    args = parser.parse_args()
    data, secs = timed(lambda: generate(GeneratorConfig(start=START, hours=args.hours, clicks=args.clicks,
                                                        conversions=args.conversions)))
    visits, conv = frames_of(data)
    print(f"generated in {secs:.1f} s: {visits.height:,} clicks, {conv.height:,} conversions, "
          f"{visits.get_column('visitor').n_unique():,} visitors; load {os.getloadavg()[0]:.1f}")
    journeys, secs = timed(lambda: visitor_journeys(conv, visits, 30 * DAY, 25))
    print(f"visitor_journeys: {journeys.height:,} touches of {conv.height:,} conversions in {secs:.2f} s "
          f"({journeys.height / secs / 1e6:.2f} M touches/s); mean length {journeys.height / conv.height:.2f}")
    end = START + args.hours * 3600
    users = sorted(conv.get_column("user_id").unique().to_list())
    shares = []
    for user in users:
        mine = visits.filter(pl.col("user_id") == user)
        for n, (channel, order) in enumerate(CHANNELS):
            paths, p_secs = timed(lambda: training_paths(mine, conv, channel, end - 30 * DAY, end - 1))
            fit, f_secs = timed(lambda: fit_markov(paths, order=order))
            print(f"user {user} {channel} order {order}: {paths.get_column('path_id').n_unique():,} paths "
                  f"({paths.height:,} steps), {fit.channels.height} channels; paths {p_secs:.2f} s, fit {f_secs:.2f} s")
            # model k of the user credits by channel type k % 3 (several models of one type past 3)
            shares += [credit_shares(fit).with_columns(model_id=pl.lit(user * 100 + k), window_end=pl.lit(0))
                       for k in range(n, args.models, len(CHANNELS))]
    models = pl.DataFrame([{"model_id": u * 100 + k, "user_id": u, "strategy": "markov",
                            "markov_channel": CHANNELS[k % len(CHANNELS)][0]} for u in users for k in range(args.models)])
    touches = journeys.join(conv.select("conv_id", "payout", "cpc"), on="conv_id").with_columns(date_hour=pl.lit(0))
    table = pl.concat(shares).select("model_id", "window_end", "channel", "model_channel", "share")
    networks = data[tables.ppc_accounts.name].select(account_id="ppc_account_id", network_id="ppc_network_id")
    markov_credits(touches.head(100_000), models, table, networks)  # warm-up
    (out, fallback), secs = timed(lambda: markov_credits(touches, models, table, networks))
    laid = touches.height * args.models
    print(f"markov_credits: {laid:,} touches ({args.models} models per user) in {secs:.2f} s = "
          f"{laid / secs / 1e6:.2f} M touches/s; {out.height:,} credited, {fallback:,} equal splits; "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
