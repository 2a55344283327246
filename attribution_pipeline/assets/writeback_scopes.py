"""The scoped rows of a write-back chunk (D31): computed, checked, and the ``scoped_totals`` check.

Per chunk, from the chunk's credits and journeys and the users' campaigns (advertiser) and ppc
accounts (network), read once per run: ``core/scope_credit.py`` gives the rows of every enabled
scope type and the remainder (touches with no value of the type). A (model, user, hour) whose
rows and remainder do not add up to its global row, for some type, is held like any group failing
an invariant (D19); the ``scoped_totals`` check lists each (model, hour, scope type).
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import dagster as dg
import polars as pl

from attribution_pipeline.core import invariants, scope_credit
from attribution_pipeline.core.hours import hour_key
from attribution_pipeline.core.invariants import GROUP
from attribution_pipeline.settings import Settings
from attribution_pipeline.storage import source_state
from attribution_pipeline.storage.database import Database

CHECK = dg.AssetCheckSpec(
    "scoped_totals",
    asset="attribution_writeback",
    description="ERROR: for every (model, hour, scope type) written, the scoped rows plus the touches "
    "without a value of the type (no landing page, ...) add up to the global row: clicks and conversions "
    "exactly, revenue and cost within 0.0001 a summed row (D31). A group that does not is held.",
)


@dataclass
class ScopedPlan:
    rows: pl.DataFrame  # scope_credit.SCOPED rows to write (remainder excluded)
    credits: pl.DataFrame | None  # scope_credit.SCOPED_CREDITS, None without scoped touchpoints
    held: pl.DataFrame  # invariants.HELD: groups whose scoped rows do not add up
    unbalanced: pl.DataFrame  # scope_credit.UNBALANCED


class ScopePlanner:
    """The scoped rows of each chunk of one run (see the module docstring)."""

    def __init__(self, db: Database, settings: Settings, logger=None):
        self.db, self.types, self.logger = db, tuple(settings.scope_types), logger
        self.with_touchpoints = settings.scoped_touchpoints
        self._lookups: dict[tuple[int, ...], tuple[pl.DataFrame, pl.DataFrame]] = {}
        self.unbalanced: list[pl.DataFrame] = []
        self._pool: ThreadPoolExecutor | None = None

    def lookups(self, users: list[int]) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Campaign -> advertiser and ppc account -> network of ``users`` (read once per set of users)."""
        key = tuple(sorted(users))
        if key not in self._lookups:
            def read():
                with self.db.engine().connect() as conn:
                    return source_state.campaign_rows(conn, key), source_state.account_rows(conn, key)

            campaigns, accounts = self.db.retry.run(read, what="scope lookups", logger=self.logger)
            self._lookups[key] = (
                pl.DataFrame([(r["aff_campaign_id"], r["aff_network_id"]) for r in campaigns],
                             schema=scope_credit.CAMPAIGNS, orient="row"),
                pl.DataFrame([(r["ppc_account_id"], r["ppc_network_id"]) for r in accounts],
                             schema=scope_credit.ACCOUNTS, orient="row"))
        return self._lookups[key]

    def plan(self, credits: pl.DataFrame, journeys: pl.DataFrame, snapshots: pl.DataFrame,
             held: pl.DataFrame) -> ScopedPlan:
        """The chunk's scoped rows for the groups not ``held``, and the groups whose rows do not
        add up to their global row (to hold)."""
        plan = self.plan_later(credits, journeys, snapshots, held, background=False)()
        self.unbalanced.append(plan.unbalanced)
        return plan

    def plan_later(self, credits: pl.DataFrame, journeys: pl.DataFrame, snapshots: pl.DataFrame,
                   held: pl.DataFrame, *, background: bool = True) -> Callable[[], ScopedPlan]:
        """:meth:`plan`, computed in a background thread (one at a time) while the caller writes the
        chunk's global rows: the lookups are read here, the thread only runs Polars. The returned
        function waits for the result (the same result however often it is called); its
        unbalanced rows are not added to the check's: a chunk whose scoped rows hold groups is
        planned again, with :meth:`plan`."""
        keys = held.select(GROUP).unique()
        credits = invariants.without_groups(credits, keys)
        if not self.types or credits.height == 0:
            empty = ScopedPlan(pl.DataFrame(schema=scope_credit.SCOPED),
                               pl.DataFrame(schema=scope_credit.SCOPED_CREDITS) if self.with_touchpoints else None,
                               pl.DataFrame(schema=invariants.HELD), pl.DataFrame(schema=scope_credit.UNBALANCED))
            return lambda: empty
        campaigns, accounts = self.lookups(credits.get_column("user_id").unique().to_list())
        work = partial(_scoped_plan, credits, journeys, invariants.without_groups(snapshots, keys),
                       campaigns, accounts, self.types, self.with_touchpoints)
        if not background:
            return work
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoped-rows")
        return self._pool.submit(work).result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def check_result(self) -> dg.AssetCheckResult:
        """``scoped_totals``: passed when every (model, hour, scope type) of the run added up."""
        found = pl.concat([pl.DataFrame(schema=scope_credit.UNBALANCED), *self.unbalanced])
        listed = [{**r, "hour": hour_key(r["date_hour"])} for r in found.head(100).iter_rows(named=True)]
        return dg.AssetCheckResult(
            check_name=CHECK.name, passed=found.height == 0, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"scope_types": ", ".join(self.types) or "none", "unbalanced": found.height,
                      "failing": dg.MetadataValue.json(listed)})


def _scoped_plan(credits: pl.DataFrame, journeys: pl.DataFrame, snapshots: pl.DataFrame, campaigns: pl.DataFrame,
                 accounts: pl.DataFrame, types: tuple[str, ...], with_touchpoints: bool) -> ScopedPlan:
    """The scoped rows of ``credits`` (held groups already out), checked against ``snapshots``."""
    values = scope_credit.scope_values(journeys, campaigns, accounts, types)
    rows = scope_credit.scoped_rows(credits, values)
    unbalanced = scope_credit.unbalanced(rows, snapshots)
    bad = unbalanced.group_by(GROUP).agg(
        reason=pl.lit("scoped rows do not add up to the global row: ") + pl.col("scope_type").str.join(", "))
    keep = lambda frame: frame.join(bad, on=GROUP, how="anti")  # noqa: E731
    return ScopedPlan(
        rows=keep(scope_credit.written(rows)),
        credits=keep(scope_credit.touchpoints(credits, values)) if with_touchpoints else None,
        held=bad.select(list(invariants.HELD)).cast(invariants.HELD), unbalanced=unbalanced)
