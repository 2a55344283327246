"""The touchpoints a run just wrote, taken from its own frames instead of re-read from MySQL.

The write-back reads back every row it writes inside its chunk's transaction and compares it with
what was computed before it commits (``storage/hour_rewrite.py``): after the commit, the
touchpoints of a (model, user, hour) group the run wrote are exactly its ``credits`` rows
(``credit_stored`` is what both ``credit`` and ``weight`` hold) under the group's snapshot id. So
the export of the run's hours reads from MySQL only the cheap snapshot rows (ids, windows,
values) and takes the touchpoints of the groups the run wrote from its ``credits`` frame; the
touchpoints of every other stored snapshot of the hour (other users, inactive or invalid models,
held groups, rows someone rewrote since) are read from MySQL by snapshot id (indexed).

A stored snapshot row is taken as the run's own only if all of these hold (:func:`written_snapshots`):

* its hour was committed by this run's write-back (not by a parent run it resumed);
* its (model, user, hour) has exactly one stored row, with this run's window
  (``lookback_start``/``lookback_end``) and the clicks, conversions, revenue and cost the run
  computed for the group (its ``snapshots`` frame, which the write-back wrote and read back);
* the run did not hold the group (its stored row is then an older one);
* when the run recorded what it wrote in ``attribution_source_state`` (D22), the (user, hour) still
  carries the run's write token: another run that rewrote it since replaced the token;
* the run's credits of the group number its stored ``attributed_clicks``.

Anything else, and every hour whose frames are gone, is read from MySQL, as before.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.core.precision import CREDIT_DTYPE

GROUP = ["model_id", "user_id", "date_hour"]
VALUES = ["attributed_clicks", "attributed_conversions", "attributed_revenue", "attributed_cost"]

#: A stored touchpoint row as the exports need it (before its conversion's fields are joined).
TOUCH_ROW = {
    "snapshot_id": pl.Int64,
    "conv_id": pl.Int64,
    "click_id": frames.CLICK_ID,
    "position": pl.Int32,
    "credit": CREDIT_DTYPE,
    "date_hour": pl.Int64,
}
#: ``user_id, date_hour, write_token`` of ``attribution_source_state`` (D22).
TOKENS = {"user_id": pl.Int64, "date_hour": pl.Int64, "write_token": pl.String}
_WRITTEN = {"snapshot_id": pl.Int64, **{c: pl.Int64 for c in GROUP}, "attributed_clicks": pl.Int64}


@dataclass(frozen=True)
class RunWrites:
    """What this run's write-back wrote: its ``credits`` and ``snapshots`` frames (the export
    asset's inputs), the hours it committed itself, the window every snapshot row it wrote carries,
    the groups it held (``GROUP`` columns) and, when it recorded them (D22), its write token."""

    credits: HourlyFrame
    snapshots: HourlyFrame
    hours: frozenset[int]
    window: tuple[int, int]
    held: pl.DataFrame
    token: str | None = None

    def usable_hours(self, hours: Sequence[int]) -> list[int]:
        """The hours of ``hours`` this run wrote and whose frames are all there."""
        gone = set(self.credits.missing) | set(self.snapshots.missing)
        return [h for h in sorted(hours) if h in self.hours and h not in gone]

    def touches(self, hours: Sequence[int], stored: pl.DataFrame,
                tokens: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The touchpoints of the stored snapshots of ``hours`` (``stored``, with their windows)
        that this run wrote, from its credits frame (:data:`TOUCH_ROW`), and the ``snapshot_id``
        of every snapshot they cover (one the run wrote without touchpoints too)."""
        mine = self.usable_hours(hours)
        if not mine:
            return frames.empty(TOUCH_ROW), frames.empty({"snapshot_id": pl.Int64})
        written = written_snapshots(stored, self.snapshots.read(mine), hours=mine, window=self.window,
                                    held=self.held, tokens=tokens, token=self.token)
        return run_touches(self.credits.read(mine), written)


def written_snapshots(stored: pl.DataFrame, computed: pl.DataFrame, *, hours: Collection[int],
                      window: tuple[int, int], held: pl.DataFrame, tokens: pl.DataFrame | None = None,
                      token: str | None = None) -> pl.DataFrame:
    """``snapshot_id``, ``GROUP`` and ``attributed_clicks`` of the ``stored`` snapshot rows that are
    rows this run wrote and nobody rewrote since (module docstring); ``computed``: frames.SNAPSHOTS."""
    lo, hi = window
    run_values = computed.select(*GROUP, *[pl.col(c).alias(f"{c}_run") for c in VALUES])
    same = pl.all_horizontal([pl.col(c) == pl.col(f"{c}_run") for c in VALUES])
    mine = (
        stored.filter(pl.len().over(GROUP) == 1)
        .filter(pl.col("date_hour").is_in(list(hours)) & (pl.col("lookback_start") == lo)
                & (pl.col("lookback_end") == hi))
        .join(run_values, on=GROUP, how="inner")
        .filter(same.fill_null(False))
        .join(held.select(GROUP).unique(), on=GROUP, how="anti")
    )
    if token is not None:
        ours = (tokens if tokens is not None else frames.empty(TOKENS)).filter(pl.col("write_token") == token)
        mine = mine.join(ours.select("user_id", "date_hour").unique(), on=["user_id", "date_hour"], how="semi")
    return frames.conform(mine, _WRITTEN, "snapshots written by the run")


def run_touches(credits: pl.DataFrame, written: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The touchpoints of the ``written`` snapshots from the run's ``credits`` (frames.CREDITS),
    as :data:`TOUCH_ROW`, and the ``snapshot_id`` of the snapshots they cover: those whose credits
    number their ``attributed_clicks`` (a snapshot written without touchpoints is covered with none;
    any other is left to MySQL)."""
    joined = credits.join(written.select("snapshot_id", *GROUP), on=GROUP, how="inner")
    counts = joined.group_by("snapshot_id").agg(touches=pl.len().cast(pl.Int64))
    complete = (
        written.join(counts, on="snapshot_id", how="left")
        .filter(pl.col("touches").fill_null(0) == pl.col("attributed_clicks"))
        .select("snapshot_id")
    )
    touches = joined.join(complete, on="snapshot_id", how="semi").with_columns(credit=pl.col("credit_stored"))
    return frames.conform(touches, TOUCH_ROW, "touchpoints from the run's credits"), complete
