"""Where each exported hour's journeys come from (journeys are not stored in MySQL, D13).

The export asset declares the ``journeys`` asset as its input: the frames its run just wrote (a
scoped run's hold only the selected users, an incremental run's only the (user, hour) pairs it
recomputed, D22). ``recompute(hours, users)`` builds journeys from
MySQL with the same builder the ``journeys`` asset uses (``storage.journey_source``), for hours the
input lacks; ``users`` None means every user.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core.frames import HourlyFrame
from attribution_pipeline.exports.columns import JOURNEYS_EXPORT
from attribution_pipeline.exports.layout import read_part

#: ``recompute(hours, users)``: frames.JOURNEYS of ``hours`` for ``users`` (None: every user).
Recompute = Callable[[Sequence[int], Sequence[int] | None], pl.DataFrame]


@dataclass
class JourneyPlan:
    """An hour chunk's journeys: ``fresh`` rows (frames.JOURNEYS) and ``kept`` rows of the hours'
    existing export files (export schema), with where each came from."""

    fresh: pl.DataFrame
    kept: pl.DataFrame
    hours_from_frames: int = 0
    hours_from_exports: int = 0
    hours_recomputed: int = 0
    users_recomputed: int = 0


def plan_journeys(hours: Sequence[int], *, root: Path, journeys: HourlyFrame, users: Sequence[int] | None,
                  recompute: Recompute, skipped: pl.DataFrame | None = None) -> JourneyPlan:
    """Where each hour's journeys come from.

    Full run (``users`` None, nothing ``skipped``): the ``journeys`` input; an hour it lacks
    (``journeys.missing``: its frame is gone) is recomputed for every user. Otherwise the input
    holds the journeys of some (user, hour) pairs only: those of the selected ``users`` (a scoped
    run) that the run recomputed (``skipped``: ``user_id, date_hour`` pairs an incremental run left
    alone, D22). Their rows come from the input (recomputed where the input lacks the hour) and
    every other user's rows are kept from the hour's existing export file; an hour without an
    export file is recomputed for every user. Never fewer users than were there.
    """
    hours = sorted(hours)
    absent = set(journeys.missing)
    framed = [h for h in hours if h not in absent]
    from_input = journeys.read(framed) if framed else frames.empty(frames.JOURNEYS)
    skipped = None if skipped is None else skipped.select("user_id", "date_hour").filter(
        pl.col("date_hour").is_in(hours)).unique()
    if users is None and (skipped is None or skipped.height == 0):
        missing = [h for h in hours if h in absent]
        fresh = [from_input, recompute(missing, None)] if missing else [from_input]
        return JourneyPlan(fresh=pl.concat([frames.conform(f, frames.JOURNEYS) for f in fresh]),
                           kept=frames.empty(JOURNEYS_EXPORT), hours_from_frames=len(framed),
                           hours_recomputed=len(missing))
    existing = {h: read_part(root, "journeys", h) for h in hours}
    from_exports = [h for h in hours if existing[h] is not None]
    from_scratch = [h for h in hours if existing[h] is None]
    unframed = [h for h in from_exports if h in absent]
    kept = [_covered(frames.conform(existing[h], JOURNEYS_EXPORT, "journeys export"), users, skipped, keep=False)
            for h in from_exports]
    fresh = [
        _covered(from_input.filter(pl.col("date_hour").is_in(from_exports)), users, skipped),
        _covered(recompute(unframed, users), users, skipped) if unframed else frames.empty(frames.JOURNEYS),
        recompute(from_scratch, None),
    ]
    return JourneyPlan(
        fresh=pl.concat([frames.conform(f, frames.JOURNEYS) for f in fresh]),
        kept=pl.concat([frames.empty(JOURNEYS_EXPORT), *kept]),
        hours_from_frames=len(from_exports) - len(unframed),
        hours_from_exports=len(from_exports),
        hours_recomputed=len(from_scratch) + len(unframed),
        users_recomputed=len(users) if users is not None else 0,
    )


def _covered(df: pl.DataFrame, users: Sequence[int] | None, skipped: pl.DataFrame | None, *,
             keep: bool = True) -> pl.DataFrame:
    """The rows of ``df`` whose (user, hour) the run recomputed (``keep``), or the others: a user
    among ``users`` (None: every user) and a pair not ``skipped``."""
    selected = pl.lit(True) if users is None else pl.col("user_id").is_in(list(users))
    if skipped is not None and skipped.height:
        flagged = df.join(skipped.with_columns(_skipped=pl.lit(True)), on=["user_id", "date_hour"], how="left")
        selected = selected & pl.col("_skipped").is_null()
        return flagged.filter(selected if keep else ~selected).drop("_skipped")
    return df.filter(selected if keep else ~selected)
