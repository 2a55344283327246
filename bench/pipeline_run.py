"""Child process of the benchmark: one Dagster run over [first, last] through the real job.

Prints one JSON line with the run's timings (wall, per step, per write-back stage, per journey
stage) so the parent can report where time goes, and its own peak RSS (VmHWM).
"""

import argparse
import json
import os
import sys
import time
import warnings

from bench.peak import RssSampler, own_peak_mib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--last", type=int, required=True)
    parser.add_argument("--chunk-hours", type=int, help="default: ATTRIBUTION_CHUNK_HOURS, else the pipeline's default")
    parser.add_argument("--report", required=True)
    args = parser.parse_args()

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    started = time.perf_counter()
    from attribution_pipeline.cli.jobrun import run_job
    from attribution_pipeline.definitions import build_definitions
    from attribution_pipeline.settings import Settings

    imported = time.perf_counter() - started
    settings = Settings.from_env().replace(db_url=args.db_url)
    if args.chunk_hours:
        settings = settings.replace(chunk_hours=args.chunk_hours)
    instance = dg.DagsterInstance.ephemeral()  # kept open: its step stats say when each step ran
    with RssSampler() as sampler:
        result, report = run_job(build_definitions(settings), settings, args.first, args.last, report_path=args.report,
                                 source="bench", instance=instance)
    if os.environ.get("BENCH_RSS_SAMPLES"):  # the whole timeline, to see where a step's peak comes from
        stats = [(s.step_key, s.start_time, s.end_time) for s in instance.get_run_step_stats(result.run_id)]
        with open(os.environ["BENCH_RSS_SAMPLES"], "w") as fh:
            json.dump({"steps": stats, "samples": sampler.samples}, fh)
    step_peaks = {s.step_key: sampler.peak_between(s.start_time, s.end_time)
                  for s in instance.get_run_step_stats(result.run_id) if s.start_time and s.end_time}
    steps = {
        e.step_key: round(e.event_specific_data.duration_ms / 1000, 3)
        for e in result.all_events if e.event_type_value == "STEP_SUCCESS"
    }
    journeys = next(iter(result.asset_materializations_for_node("journeys")), None)
    journey_meta = {k: v.value for k, v in journeys.metadata.items()} if journeys else {}
    print(json.dumps({
        "success": result.success,
        "wall_s": round(time.perf_counter() - started, 3),
        "chunk_hours": settings.chunk_hours,
        "memory_budget_mb": getattr(settings, "memory_budget_mb", None),
        "import_s": round(imported, 3),
        "steps_s": steps,
        "writeback_stages_s": (report or {}).get("stage_seconds", {}),
        "journeys": {k: v for k, v in journey_meta.items() if isinstance(v, (int, float))},
        "conversions": (report or {}).get("conversions"),
        "snapshots_written": (report or {}).get("snapshots_written"),
        "touchpoints_written": (report or {}).get("touchpoints_written"),
        "outcome": (report or {}).get("outcome"),
        "vmhwm_mib": own_peak_mib(),
        "step_peak_rss_mib": step_peaks,
    }))
    sys.exit(0 if result.success else 1)


if __name__ == "__main__":
    main()
