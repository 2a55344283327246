"""The whole-history gap scan's findings, from what MySQL and the export folder hold (pure)."""

from collections.abc import Mapping, Sequence

import polars as pl


def hours_without_snapshots(conversions: pl.DataFrame, snapshots: pl.DataFrame) -> pl.DataFrame:
    """(user_id, date_hour, conversions) with credited conversions but no global snapshot row:
    the dashboard shows nothing for them. ``conversions``: user_id, date_hour, conversions;
    ``snapshots``: user_id, date_hour."""
    return conversions.join(snapshots, on=["user_id", "date_hour"], how="anti").sort("date_hour", "user_id")


def hours_without_exports(snapshot_hours: Sequence[int], exported: Mapping[str, Sequence[int]]) -> pl.DataFrame:
    """(date_hour, missing) for hours with snapshots in MySQL that lack a Parquet file of some
    export table (``exported``: table -> hours with a file); ``missing`` names the tables."""
    rows = []
    have = {table: set(hours) for table, hours in exported.items()}
    for hour in sorted(set(snapshot_hours)):
        missing = sorted(t for t, hours in have.items() if hour not in hours)
        if missing:
            rows.append((hour, ",".join(missing)))
    return pl.DataFrame(rows, orient="row", schema={"date_hour": pl.Int64, "missing": pl.String})


def hours_to_catch_up(snapshot_hours: Sequence[int], exported: Mapping[str, Sequence[int]], exclude: Sequence[int],
                      limit: int) -> tuple[list[int], int]:
    """Hours with snapshots but without every export file, other than ``exclude`` (the run's own
    hours), the newest ``limit`` of them (ascending), and how many more remain for later runs."""
    missing = hours_without_exports(snapshot_hours, exported).get_column("date_hour").to_list()
    skip = set(exclude)
    todo = [h for h in missing if h not in skip]
    chosen = sorted(todo[-limit:]) if limit > 0 else []
    return chosen, len(todo) - len(chosen)
