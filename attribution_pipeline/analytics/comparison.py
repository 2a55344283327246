"""The comparison of attribution models per traffic source, from the stored rows.

:func:`compare` reads the stored rows of a window from the database (not from the exports: the
database is the source of truth, holds every hour whether or not it was exported, and has the
current names of the traffic sources) through the same functions the exports use, so its numbers
are the exports' numbers: each conversion's stored revenue split over the touches of its journey by
the model's stored credits (``revenue_share``), summed per traffic source (the ppc account of each
touch's own click). Every model distributes the same conversions, so the models' totals agree (they
equal the stored snapshot totals); the spread shows how differently they credit each traffic
source. :mod:`.render` prints it as a table, Markdown or a PNG chart.
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
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.frame_io import chunked, read_frame

CURRENCY = "USD"


@dataclass
class UserComparison:
    """One account's traffic sources x active models."""

    user_id: int
    models: list[tuple[int, str]]  # (model_id, column label), in model id order
    table: pl.DataFrame  # ppc_account_id, source, one Decimal column per model label, spread, spread_pct
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


_MODEL_READ = {"model_id": pl.Int64, "user_id": pl.Int64, "model_name": pl.String, "model_slug": pl.String,
               "is_active": pl.Int64}


def _model_rows(engine: Engine, users: Sequence[int]) -> pl.DataFrame:
    m = tables.attribution_models
    parts = [frames.empty(_MODEL_READ)]
    with engine.connect() as conn:
        for part in chunked(sorted(set(users)), 5000):
            stmt = select(*[m.c[c] for c in _MODEL_READ]).where(m.c.user_id.in_(list(part)))
            parts.append(read_frame(conn, stmt, _MODEL_READ))
    return pl.concat(parts)


def _currencies(engine: Engine, campaign_ids: Sequence[int]) -> list[str]:
    c = tables.aff_campaigns
    found: set[str] = set()
    with engine.connect() as conn:
        for part in chunked(sorted(set(campaign_ids)), 5000):
            stmt = select(c.c.aff_campaign_currency).where(c.c.aff_campaign_id.in_(list(part))).distinct()
            found |= {str(r[0]).strip().upper() for r in conn.execute(stmt) if r[0]}
    return sorted(found - {CURRENCY})


def compare(engine: Engine, start: int, end: int, users: Sequence[int] | None = None,
            chunk_size: int = 168) -> Comparison:
    """Attributed revenue per (user, active model, traffic source) over the hours of ``[start, end)``."""
    hours = window_hours(start, end)
    by_source, by_snapshot, campaigns, names = [], [], [], []
    for chunk in chunk_hours(hours, chunk_size):
        snaps, touch, chunk_names = read_stored(engine, chunk)
        if users:
            snaps = snaps.filter(pl.col("user_id").is_in(list(users)))
            touch = touch.filter(pl.col("user_id").is_in(list(users)))
        shares = touchpoints_export(touch, chunk_names)
        by_source.append(shares.group_by("user_id", "model_id", "ppc_account_id")
                         .agg(revenue=pl.col("revenue_share").sum()))
        by_snapshot.append(snaps.group_by("user_id", "model_id").agg(revenue=pl.col("attributed_revenue").sum()))
        campaigns.append(shares.get_column("campaign_id").drop_nulls().unique())
        names.append(chunk_names.ppc_accounts)
    long = (pl.concat(by_source).group_by("user_id", "model_id", "ppc_account_id").agg(pl.col("revenue").sum())
            if by_source else pl.DataFrame(schema={"user_id": pl.Int64, "model_id": pl.Int64,
                                                   "ppc_account_id": pl.Int64, "revenue": pl.Decimal(38, 4)}))
    snap_totals = pl.concat(by_snapshot).group_by("user_id", "model_id").agg(pl.col("revenue").sum())
    source_names = pl.concat(names).unique("id")
    wanted_users = sorted(set(users) if users else set(snap_totals.get_column("user_id").to_list()))
    models = _model_rows(engine, wanted_users) if wanted_users else frames.empty(_MODEL_READ)
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
    )
    for user_id in compared.get_column("user_id").unique().sort().to_list():
        user_models = compared.filter(pl.col("user_id") == user_id)
        result.users.append(_user_table(user_id, user_models, long.filter(pl.col("user_id") == user_id),
                                        snap_totals.filter(pl.col("user_id") == user_id), source_names))
    return result


def _labels(models: pl.DataFrame) -> list[tuple[int, str]]:
    names = models.get_column("model_name").fill_null("").to_list()
    ids = models.get_column("model_id").to_list()
    return [(i, f"{n} [{i}]" if names.count(n) > 1 or not n else n) for i, n in zip(ids, names)]


def _user_table(user_id: int, models: pl.DataFrame, long: pl.DataFrame, snap_totals: pl.DataFrame,
                source_names: pl.DataFrame) -> UserComparison:
    labels = _labels(models)
    label_of = pl.DataFrame({"model_id": [i for i, _ in labels], "label": [lbl for _, lbl in labels]})
    cells = (
        long.select("ppc_account_id").unique()
        .join(label_of, how="cross")
        .join(long.select("ppc_account_id", "model_id", "revenue"), on=["ppc_account_id", "model_id"], how="left")
        .with_columns(pl.col("revenue").fill_null(Decimal(0)).cast(pl.Decimal(38, 4)))
    )
    spread = cells.group_by("ppc_account_id").agg(
        spread=pl.col("revenue").max() - pl.col("revenue").min(),
        mean=pl.col("revenue").cast(pl.Float64).mean(),
    )
    wide = (
        cells.pivot(on="label", index="ppc_account_id", values="revenue")
        .join(spread, on="ppc_account_id")
        .join(source_names.rename({"id": "ppc_account_id", "name": "source"}), on="ppc_account_id", how="left")
        .with_columns(
            source=pl.format("{} (#{})", pl.col("source").fill_null("unknown source"), pl.col("ppc_account_id")),
            spread_pct=pl.when(pl.col("mean") != 0)
            .then(pl.col("spread").cast(pl.Float64) / pl.col("mean").abs() * 100),
        )
        .sort("ppc_account_id")
        .select("ppc_account_id", "source", *[lbl for _, lbl in labels], "spread", "spread_pct")
    )
    totals = {i: sum(wide.get_column(lbl).to_list(), Decimal(0)) for i, lbl in labels}
    stored = dict(zip(snap_totals.get_column("model_id").to_list(), snap_totals.get_column("revenue").to_list()))
    return UserComparison(user_id=user_id, models=labels, table=wide, totals=totals,
                          snapshot_totals={i: stored.get(i, Decimal(0)) for i, _ in labels})
