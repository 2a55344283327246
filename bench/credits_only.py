"""Child process of the benchmark, (d): the credit computation alone, without I/O.

Reads the journeys, conversions and models frames a range run stored (every chunk, before any
timing), then times, over all chunks:

* ``compute_credits``: the credits stage as the pipeline runs it (every strategy, the conversion
  lookups, revenue and cost, the stored decimals);
* ``credit_all``: the strategies alone (every model's credit for every touch).

Each is run ``--passes`` times over all chunks. The first pass is reported on its own (it pays
for starting Polars' thread pool and for the allocator's first pages); throughput is the median
of the other passes, the steady state a long backfill runs in. A "journey touch" is one row of
the journeys frame; each is credited under every model of its user (6 in the default data; first
and last touch credit one touch per conversion, assisted all but the last), so credits/s is about
four times journey touches/s there.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import polars as pl

from attribution_pipeline.core.crediting import compute_credits, valid_models
from attribution_pipeline.core.hours import chunk_hours
from attribution_pipeline.io_managers.hourly_parquet import read_hours
from attribution_pipeline.strategies import credit_all
from bench.peak import own_peak_mib


def timed_passes(passes: int, run) -> tuple[list[float], object]:
    """Wall seconds of each of ``passes`` calls of ``run``, and what the last call returned."""
    seconds, result = [], None
    for _ in range(passes):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    return seconds, result

def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", required=True)
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--last", type=int, required=True)
    p.add_argument("--chunk-hours", type=int, default=168)
    p.add_argument("--passes", type=int, default=6)
    args = p.parse_args()
    if args.passes < 2:
        p.error("--passes must be at least 2 (the first pass is reported apart from the steady state)")
    root = Path(args.frames)
    hours = list(range(args.first, args.last + 1, 3600))
    chunks = [
        (read_hours(root, "journeys", c), read_hours(root, "conversions", c), read_hours(root, "attribution_models", c))
        for c in chunk_hours(hours, args.chunk_hours)
    ]
    touches = sum(j.height for j, _, _ in chunks)

    def full() -> int:
        return sum(compute_credits(j, c, m).height for j, c, m in chunks)

    def strategies() -> None:
        for j, _, m in chunks:
            credit_all(j.lazy(), valid_models(m).lazy()).collect(engine="in-memory")  # as the credits stage runs it

    full_s, credits = timed_passes(args.passes, full)
    strategies_s, _ = timed_passes(args.passes, strategies)
    steady = statistics.median(full_s[1:])
    steady_strategies = statistics.median(strategies_s[1:])
    print(json.dumps({
        "seconds": round(steady, 3),
        "first_pass_s": round(full_s[0], 3),
        "passes_s": [round(s, 3) for s in full_s],
        "strategies_only_s": round(steady_strategies, 3),
        "strategies_first_pass_s": round(strategies_s[0], 3),
        "journey_touches": touches,
        "credits": credits,
        "journey_touches_per_s": round(touches / steady),
        "credits_per_s": round(credits / steady),
        "first_pass_journey_touches_per_s": round(touches / full_s[0]),
        "strategies_journey_touches_per_s": round(touches / steady_strategies),
        "strategies_credits_per_s": round(credits / steady_strategies),
        "threads": pl.thread_pool_size(),
        "vmhwm_mib": own_peak_mib(),
    }))


if __name__ == "__main__":
    main()
