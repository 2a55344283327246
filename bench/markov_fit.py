"""The Markov model's maths at the default size (docs/markov.md): the fit and the credit split.

Synthetic visitor paths stand for 30 days of a user's traffic: ``--paths`` paths over about
``--clicks`` clicks (path lengths geometric, at most 50), ``--conversions`` of them converting,
``--channels`` channels with Zipf-like popularity and a visitor returning through the channel of
their previous click with probability 0.3 (so loops occur). Times:

* ``fit_markov`` in order 1 and order 2, with and without self loops (order 2 has up to
  51 x 50 pair states: with the default 50 channels most of them occur);
* ``split_credit``: ``--credit-touches`` touches of converting journeys under two models (an
  order-1 and an order-2 fit: the ``model_id`` key), laid out in journey order (each model's
  conversions one after the other, each conversion's touches adjacent, positions 0..n-1), with
  the two models interleaved (each touch followed by its other model's row, as a join of the
  touches with several models per user lays them out) and shuffled; the last two take the
  general path (a window numbers the conversions).

Each timing is the median of ``--passes`` calls after one warm-up call, in wall seconds, and the
CPU seconds of all threads (Polars and BLAS use both cores). Run as
``.venv/bin/python -m bench.markov_fit``; the load average is printed along (a busy machine
slows everything).
"""

import argparse
import os
import statistics
import time

import numpy as np
import polars as pl

from attribution_pipeline.core.markov_chain import fit_markov
from attribution_pipeline.core.markov_credit import credit_shares, split_credit


def synthetic_paths(paths: int, clicks: int, conversions: int, channels: int, seed: int = 7) -> pl.DataFrame:
    """One row per (path_id, step): ``channel`` (0..channels-1) and ``converted``."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(min(1.0, paths / clicks), size=paths), 50)
    path_id = np.repeat(np.arange(paths), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    step = np.arange(path_id.size) - starts
    popularity = 1.0 / np.arange(1, channels + 1) ** 0.8
    fresh = rng.choice(channels, size=path_id.size, p=popularity / popularity.sum())
    # a touch repeats the path's previous channel with probability 0.3 (never the first touch)
    own = (step == 0) | (rng.random(path_id.size) >= 0.3)
    channel = fresh[np.maximum.accumulate(np.where(own, np.arange(path_id.size), 0))]
    quality = rng.normal(0.0, 0.5, channels)
    score = np.exp(np.bincount(path_id, weights=quality[channel], minlength=paths) / lengths)
    converting = rng.choice(paths, size=min(conversions, paths), replace=False, p=score / score.sum())
    converted = np.zeros(paths, dtype=bool)
    converted[converting] = True
    return pl.DataFrame({"path_id": path_id, "step": step, "channel": channel, "converted": converted[path_id]})


def credit_touches(paths: pl.DataFrame, fits: dict[int, object], touches: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """About ``touches`` touches of converting journeys, each model's touches in journey order,
    and the shares of every model (the ``model_id`` key)."""
    journeys = paths.filter(pl.col("converted")).select(
        conv_id="path_id", position="step", channel="channel")
    copies = max(1, round(touches / len(fits) / journeys.height))
    span = int(journeys.get_column("conv_id").max()) + 1
    one_model = pl.concat([journeys.with_columns(conv_id=pl.col("conv_id") + k * span) for k in range(copies)])
    frame = pl.concat([one_model.with_columns(model_id=pl.lit(m, pl.Int64)) for m in fits])
    shares = pl.concat([credit_shares(fit).with_columns(model_id=pl.lit(m, pl.Int64)) for m, fit in fits.items()])
    return frame.select("model_id", "conv_id", "position", "channel"), shares


def timed(passes: int, run) -> tuple[float, float, object]:
    """The median wall and CPU seconds (all threads) of ``passes`` calls of ``run`` after a warm-up
    call, and its result."""
    result, wall, cpu = run(), [], []
    for _ in range(passes):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = run()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return statistics.median(wall), statistics.median(cpu), result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--paths", type=int, default=400_000)
    p.add_argument("--clicks", type=int, default=2_000_000)
    p.add_argument("--conversions", type=int, default=100_000)
    p.add_argument("--channels", type=int, default=50)
    p.add_argument("--credit-touches", type=int, default=5_000_000)
    p.add_argument("--passes", type=int, default=3)
    args = p.parse_args()
    paths = synthetic_paths(args.paths, args.clicks, args.conversions, args.channels)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"paths: {paths.get_column('path_id').n_unique():,} paths, {paths.height:,} clicks, "
          f"{paths.filter(pl.col('step') == 0).get_column('converted').sum():,} conversions, "
          f"{paths.get_column('channel').n_unique()} channels")
    fits = {}
    for order in (1, 2):
        for self_loops in (False, True):
            seconds, cpu, fit = timed(args.passes, lambda: fit_markov(paths, order=order, self_loops=self_loops))
            states = fit.transitions.select("from_prev", "from_channel").unique().height
            print(f"fit order {order} self_loops={self_loops}: {seconds:.2f} s, CPU {cpu:.2f} s ({states:,} transient states, "
                  f"{fit.transitions.height:,} transitions, P(conversion) {fit.conversion_probability:.4f})")
            fits.setdefault(order, fit)
    touches, shares = credit_touches(paths, fits, args.credit_touches)
    layouts = {"journey order": touches,
               "models interleaved": touches.sort("conv_id", "position", "model_id"),
               "shuffled": touches.sample(fraction=1.0, shuffle=True, seed=1)}
    for label, frame in layouts.items():
        seconds, cpu, split = timed(args.passes, lambda: split_credit(frame, shares, key=["model_id"]))
        print(f"split_credit, {label}: {frame.height:,} touches in {seconds:.2f} s (CPU {cpu:.2f} s) = "
              f"{frame.height / seconds / 1e6:.1f} M touches/s ({split.fallback_conversions:,} conversions split equally)")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
