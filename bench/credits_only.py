"""Child process of the benchmark, (d): the credit computation alone, without I/O.

Reads the journeys, conversions and models frames a range run stored, chunk by chunk, and times
only ``compute_credits`` (every strategy, revenue and cost, stored decimals) and, separately, the
strategies alone (``credit_all``).
"""

import argparse
import json
import time
from pathlib import Path

import polars as pl

from attribution_pipeline.credits import compute_credits, valid_models
from attribution_pipeline.frames import chunk_hours
from attribution_pipeline.io_managers.hourly_parquet import read_hours
from attribution_pipeline.strategies import credit_all
from bench.peak import own_peak_mib



def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", required=True)
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--last", type=int, required=True)
    p.add_argument("--chunk-hours", type=int, default=168)
    args = p.parse_args()
    root = Path(args.frames)
    hours = list(range(args.first, args.last + 1, 3600))
    full = strategies_only = 0.0
    touches = credits = 0
    for chunk in chunk_hours(hours, args.chunk_hours):
        journeys = read_hours(root, "journeys", chunk)
        conversions = read_hours(root, "conversions", chunk)
        models = read_hours(root, "attribution_models", chunk)
        started = time.perf_counter()
        out = compute_credits(journeys, conversions, models)
        full += time.perf_counter() - started
        started = time.perf_counter()
        credit_all(journeys.lazy(), valid_models(models).lazy()).collect()
        strategies_only += time.perf_counter() - started
        touches += journeys.height
        credits += out.height
    print(json.dumps({
        "seconds": round(full, 3),
        "strategies_only_s": round(strategies_only, 3),
        "journey_touches": touches,
        "credits": credits,
        "journey_touches_per_s": round(touches / full),
        "credits_per_s": round(credits / full),
        "strategies_journey_touches_per_s": round(touches / strategies_only),
        "threads": pl.thread_pool_size(),
        "vmhwm_mib": own_peak_mib(),
    }))


if __name__ == "__main__":
    main()
