"""The comparison of attribution models per scope value (D31), from the stored rows.

:func:`compare` reads the stored rows of a window from the database (not from the exports: the
database is the source of truth, holds every hour whether or not it was exported, and has the
current names) through the same functions the exports use, so its numbers are the exports'
numbers: each conversion's stored revenue split over the touches of its journey by the model's
stored credits (``revenue_share``), summed per value of the scope type ``by`` of each touch's own
click: ``account`` (the default: its ppc account), ``traffic_source`` (that account's ppc
network), ``campaign``, ``advertiser`` (the campaign's affiliate network) or ``landing_page``, as
the scoped snapshots define them (a value 0, or a campaign or account no longer found, is *none*,
shown as one row). Every model distributes the same conversions, so the models' totals agree (they
equal the stored global snapshot totals); the spread shows how differently they credit each value.
It works whether or not the scoped snapshots are written. :mod:`.render` prints it as a table,
Markdown or a PNG chart.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import polars as pl
from sqlalchemy import select
from sqlalchemy.engine import Engine

from attribution_pipeline.core import frames
from attribution_pipeline.core.hours import HOUR, chunk_hours, floor_hour, hours_between
from attribution_pipeline.errors import InvalidWindowError
from attribution_pipeline.exports.build import read_stored, touchpoints_export
from attribution_pipeline.settings import SCOPE_TYPES
from attribution_pipeline.storage import source_state, tables
from attribution_pipeline.storage.frame_io import chunked, read_frame

CURRENCY = "USD"
#: Scope type -> (its column header, the name of a value without a display name).
SCOPE_LABELS = {"campaign": ("campaign", "campaign"), "advertiser": ("advertiser (affiliate network)", "advertiser"),
                "account": ("account (ppc account)", "account"),
                "traffic_source": ("traffic source (ppc network)", "ppc network"),
                "landing_page": ("landing page", "landing page")}
NONE = 0  # the scope value of touches without one
_DIMENSIONS = ["campaign_id", "ppc_account_id", "landing_page_id"]


@dataclass
class UserComparison:
    """One user's scope values x active models."""

    user_id: int
    models: list[tuple[int, str]]  # (model_id, column label), in model id order
    table: pl.DataFrame  # scope_id (0: none), name, one Decimal column per model label, spread, spread_pct
    totals: dict[int, Decimal]  # model_id -> sum over the sources
    snapshot_totals: dict[int, Decimal]  # model_id -> sum of the stored snapshots' attributed_revenue


@dataclass
class Comparison:
    first_hour: int
    last_hour: int
    users: list[UserComparison]
    without_rows: list[dict] = field(default_factory=list)  # active models with no stored rows in the window
    inactive_with_rows: list[dict] = field(default_factory=list)  # inactive models that still have rows
    other_currencies: list[str] = field(default_factory=list)
    by: str = "account"  # the scope type compared

    @property
    def hours(self) -> int:
        return (self.last_hour - self.first_hour) // HOUR + 1

    @property
    def model_count(self) -> int:
        return sum(len(u.models) for u in self.users)

    @property
    def source_count(self) -> int:
        return sum(u.table.height for u in self.users)

    @property
    def grand_total(self) -> Decimal:
        return sum((sum(u.snapshot_totals.values(), Decimal(0)) for u in self.users), Decimal(0))

    @property
    def max_spread(self) -> Decimal:
        spreads = [s for u in self.users for s in u.table.get_column("spread").to_list() if s is not None]
        return max(spreads, default=Decimal(0))


def window_hours(start: int, end: int) -> list[int]:
    """The UTC hours overlapping ``[start, end)`` (stored rows only: incomplete hours are fine)."""
    if start >= end:
        raise InvalidWindowError(f"start ({start}) must be earlier than end ({end}); the window is [start, end)")
    return hours_between(floor_hour(start), floor_hour(end - 1))


MODEL_READ = {"model_id": pl.Int64, "user_id": pl.Int64, "model_name": pl.String, "model_slug": pl.String,
               "is_active": pl.Int64}


def model_rows(engine: Engine, users: Sequence[int]) -> pl.DataFrame:
    m = tables.attribution_models
    parts = [frames.empty(MODEL_READ)]
    with engine.connect() as conn:
        for part in chunked(sorted(set(users)), 5000):
            stmt = select(*[m.c[c] for c in MODEL_READ]).where(m.c.user_id.in_(list(part)))
            parts.append(read_frame(conn, stmt, MODEL_READ))
    return pl.concat(parts)


def _currencies(engine: Engine, campaign_ids: Sequence[int]) -> list[str]:
    c = tables.aff_campaigns
    found: set[str] = set()
    with engine.connect() as conn:
        for part in chunked(sorted(set(campaign_ids)), 5000):
            stmt = select(c.c.aff_campaign_currency).where(c.c.aff_campaign_id.in_(list(part))).distinct()
            found |= {str(r[0]).strip().upper() for r in conn.execute(stmt) if r[0]}
    return sorted(found - {CURRENCY})


def _known(col: str) -> pl.Expr:
    return pl.when(pl.col(col).fill_null(0) != 0).then(pl.col(col)).otherwise(NONE).cast(pl.Int64)


def _scope_ids(engine: Engine, touches: pl.DataFrame, by: str) -> pl.DataFrame:
    """``touches`` (``user_id``, :data:`_DIMENSIONS`) with ``scope_id``: the value of scope type
    ``by`` of each touch's click (:data:`NONE` without one), as ``core/scope_credit.py`` has it."""
    own = {"campaign": "campaign_id", "account": "ppc_account_id", "landing_page": "landing_page_id"}
    if by in own:
        return touches.with_columns(scope_id=_known(own[by]))
    users = touches.get_column("user_id").unique().to_list()
    with engine.connect() as conn:
        if by == "advertiser":
            col, rows = "campaign_id", [(r["aff_campaign_id"], r["aff_network_id"])
                                        for r in source_state.campaign_rows(conn, users)]
        else:
            col, rows = "ppc_account_id", [(r["ppc_account_id"], r["ppc_network_id"])
                                           for r in source_state.account_rows(conn, users)]
    lookup = pl.DataFrame(rows, schema={col: pl.Int64, "value": pl.Int64}, orient="row").unique(col)
    return touches.join(lookup, on=col, how="left").with_columns(scope_id=_known("value"))


_NAMES = {"id": pl.Int64, "name": pl.String}


def _scope_names(engine: Engine, by: str, names: list, ids: Sequence[int]) -> pl.DataFrame:
    """``id``, ``name`` of the values ``ids`` of ``by`` (``names``: the chunks' ``Names``; a
    ppc network has no name table here: its rows are named by id)."""
    parts = [frames.empty(_NAMES)]
    if by == "advertiser":
        a = tables.aff_networks
        with engine.connect() as conn:
            for part in chunked(sorted(set(ids)), 5000):
                parts.append(read_frame(conn, select(a.c.aff_network_id.label("id"), a.c.aff_network_name.label("name"))
                                        .where(a.c.aff_network_id.in_(list(part))), _NAMES))
    attr = {"campaign": "campaigns", "account": "ppc_accounts", "landing_page": "landing_pages"}.get(by)
    parts += [getattr(n, attr) for n in names] if attr else []
    return pl.concat(parts).unique("id")


def compare(engine: Engine, start: int, end: int, users: Sequence[int] | None = None,
            chunk_size: int = 168, by: str = "account") -> Comparison:
    """Attributed revenue per (user, active model, value of the scope type ``by``) over the hours
    of ``[start, end)``."""
    if by not in SCOPE_TYPES:
        raise ValueError(f"unknown scope type {by!r}; use one of {', '.join(SCOPE_TYPES)}")
    hours = window_hours(start, end)
    by_touch, by_snapshot, campaigns, names = [], [], [], []
    for chunk in chunk_hours(hours, chunk_size):
        snaps, touch, chunk_names = read_stored(engine, chunk)
        if users:
            snaps = snaps.filter(pl.col("user_id").is_in(list(users)))
            touch = touch.filter(pl.col("user_id").is_in(list(users)))
        shares = touchpoints_export(touch, chunk_names)
        by_touch.append(shares.group_by("user_id", "model_id", *_DIMENSIONS).agg(revenue=pl.col("revenue_share").sum()))
        by_snapshot.append(snaps.group_by("user_id", "model_id").agg(revenue=pl.col("attributed_revenue").sum()))
        campaigns.append(shares.get_column("campaign_id").drop_nulls().unique())
        names.append(chunk_names)
    touches = pl.concat([pl.DataFrame(schema={"user_id": pl.Int64, "model_id": pl.Int64,
                                              **{d: pl.Int64 for d in _DIMENSIONS}, "revenue": pl.Decimal(38, 4)}),
                         *[t.cast({"revenue": pl.Decimal(38, 4)}) for t in by_touch]])
    long = _scope_ids(engine, touches, by).group_by("user_id", "model_id", "scope_id").agg(pl.col("revenue").sum())
    snap_totals = pl.concat(by_snapshot).group_by("user_id", "model_id").agg(pl.col("revenue").sum())
    source_names = _scope_names(engine, by, names, long.get_column("scope_id").unique().to_list())
    wanted_users = sorted(set(users) if users else set(snap_totals.get_column("user_id").to_list()))
    models = model_rows(engine, wanted_users) if wanted_users else frames.empty(MODEL_READ)
    with_rows = set(snap_totals.get_column("model_id").to_list())
    active = models.filter(pl.col("is_active") == 1)
    compared = active.filter(pl.col("model_id").is_in(list(with_rows))).sort("model_id")
    result = Comparison(
        first_hour=hours[0],
        last_hour=hours[-1],
        users=[],
        without_rows=active.filter(~pl.col("model_id").is_in(list(with_rows))).sort("model_id").to_dicts(),
        inactive_with_rows=models.filter((pl.col("is_active") != 1) & pl.col("model_id").is_in(list(with_rows)))
        .sort("model_id").to_dicts(),
        other_currencies=_currencies(engine, pl.concat(campaigns).unique().to_list()) if campaigns else [],
        by=by,
    )
    for user_id in compared.get_column("user_id").unique().sort().to_list():
        user_models = compared.filter(pl.col("user_id") == user_id)
        result.users.append(_user_table(user_id, user_models, long.filter(pl.col("user_id") == user_id),
                                        snap_totals.filter(pl.col("user_id") == user_id), source_names,
                                        SCOPE_LABELS[by][1]))
    return result


def model_labels(models: pl.DataFrame) -> list[tuple[int, str]]:
    names = models.get_column("model_name").fill_null("").to_list()
    ids = models.get_column("model_id").to_list()
    return [(i, f"{n} [{i}]" if names.count(n) > 1 or not n else n) for i, n in zip(ids, names)]


def _user_table(user_id: int, models: pl.DataFrame, long: pl.DataFrame, snap_totals: pl.DataFrame,
                source_names: pl.DataFrame, unnamed: str = "account") -> UserComparison:
    labels = model_labels(models)
    label_of = pl.DataFrame({"model_id": [i for i, _ in labels], "label": [lbl for _, lbl in labels]})
    cells = (
        long.select("scope_id").unique()
        .join(label_of, how="cross")
        .join(long.select("scope_id", "model_id", "revenue"), on=["scope_id", "model_id"], how="left")
        .with_columns(pl.col("revenue").fill_null(Decimal(0)).cast(pl.Decimal(38, 4)))
    )
    spread = cells.group_by("scope_id").agg(
        spread=pl.col("revenue").max() - pl.col("revenue").min(),
        mean=pl.col("revenue").cast(pl.Float64).mean(),
    )
    wide = (
        cells.pivot(on="label", index="scope_id", values="revenue")
        .join(spread, on="scope_id")
        .join(source_names.rename({"id": "scope_id"}), on="scope_id", how="left")
        .with_columns(
            name=pl.when(pl.col("scope_id") == NONE).then(pl.lit(f"(no {unnamed})"))
            .otherwise(pl.format("{} (#{})", pl.col("name").fill_null(f"unknown {unnamed}"), pl.col("scope_id"))),
            spread_pct=pl.when(pl.col("mean") != 0)
            .then(pl.col("spread").cast(pl.Float64) / pl.col("mean").abs() * 100),
        )
        .sort(pl.col("scope_id") == NONE, "scope_id")
        .select("scope_id", "name", *[lbl for _, lbl in labels], "spread", "spread_pct")
    )
    totals = {i: sum(wide.get_column(lbl).to_list(), Decimal(0)) for i, lbl in labels}
    stored = dict(zip(snap_totals.get_column("model_id").to_list(), snap_totals.get_column("revenue").to_list()))
    return UserComparison(user_id=user_id, models=labels, table=wide, totals=totals,
                          snapshot_totals={i: stored.get(i, Decimal(0)) for i, _ in labels})
