"""Analytics over what the pipeline computes: DuckDB views over the Parquet exports, and the
comparison of attribution models per traffic source (table, Markdown and PNG chart).

DuckDB
    :func:`connect` opens DuckDB (in memory, or a database file) with three views, ``snapshots``,
    ``touchpoints`` and ``journeys``, each ``SELECT *`` over
    ``read_parquet('<export dir>/<table>/**/*.parquet', hive_partitioning = true)`` with the
    partition columns typed (``date`` DATE, ``hour`` INTEGER). Views read the files at query
    time, so a database file keeps seeing new hours. A table without any file yet gets an empty
    view with the documented columns, so every query still binds.

Model comparison
    :func:`compare` reads the stored rows of a window from the database (not from the exports: the
    database is the source of truth, holds every hour whether or not it was exported, and has the
    current names of the traffic sources) through the same functions the exports use, so its
    numbers are the exports' numbers: each conversion's stored revenue split over the touches of
    its journey by the model's stored credits (``revenue_share``), summed per traffic source (the
    ppc account of each touch's own click). Every model distributes the same conversions, so the
    models' totals agree (they equal the stored snapshot totals); the spread shows how differently
    they credit each traffic source.
"""

import math
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import polars as pl
from sqlalchemy import select
from sqlalchemy.engine import Engine

from attribution_pipeline import exports, frames, schema
from attribution_pipeline.db import chunked, read_frame
from attribution_pipeline.errors import AttributionError, InvalidWindowError
from attribution_pipeline.frames import chunk_hours
from attribution_pipeline.partitions import HOUR, floor_hour, hours_between

CURRENCY = "USD"


class ExportsNotFound(AttributionError):
    """The export folder holds no exported hour yet."""


# ------------------------------------------------------------------------------------------
# DuckDB views
# ------------------------------------------------------------------------------------------

HIVE_OPTIONS = "hive_partitioning = true, hive_types = {'date': DATE, 'hour': INTEGER}"


def duckdb_type(dtype: pl.DataType) -> str:
    """The DuckDB type a Polars dtype of the export schema is stored as in Parquet."""
    if isinstance(dtype, pl.Decimal):
        return f"DECIMAL({dtype.precision},{dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP"
    return {pl.Int64: "BIGINT", pl.Int32: "INTEGER", pl.UInt64: "UBIGINT", pl.String: "VARCHAR",
            pl.Boolean: "BOOLEAN"}[dtype.base_type()]


def view_columns(table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a view: the file's columns, then the hive partitions."""
    return [(name, duckdb_type(dtype)) for name, dtype in exports.SCHEMAS[table].items()] + [
        ("date", "DATE"), ("hour", "INTEGER")]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(root: Path, table: str) -> str:
    """``CREATE OR REPLACE VIEW`` for ``table`` over the export folder (or empty, typed, if no file)."""
    if table not in exports.TABLES:
        raise ValueError(f"unknown export table {table!r}")
    if any((Path(root) / table).glob(f"date=*/hour=*/{exports.PART}")):
        body = f"SELECT * FROM read_parquet({_literal(exports.table_glob(root, table))}, {HIVE_OPTIONS})"
    else:
        cols = ", ".join(f"CAST(NULL AS {t}) AS {name}" for name, t in view_columns(table))
        body = f"SELECT {cols} WHERE false"
    return f"CREATE OR REPLACE VIEW {table} AS {body}"


def connect(root: str | os.PathLike | None = None, database: str = ":memory:"):
    """DuckDB with the ``snapshots``, ``touchpoints`` and ``journeys`` views over ``root``."""
    import duckdb

    root = exports.export_root(root)
    if not exports.exported_hours(root):
        raise ExportsNotFound(
            f"no exports under {root}: materialise some hours first (attribution demo, attribution rebuild, "
            f"or the hourly job), or point --export-dir / ATTRIBUTION_EXPORT_DIR at the export folder"
        )
    con = duckdb.connect(database)
    try:
        con.execute("SET TimeZone = 'UTC'")  # D17: every time in the exports is UTC
    except duckdb.Error:  # pragma: no cover - ICU is built into the Python package
        pass
    for table in exports.TABLES:
        con.execute(view_sql(root, table))
    return con


def run_sql(con, sql: str):
    """Run one or more statements; the last one's result (a relation) or None."""
    return con.sql(sql)


def print_result(rel, *, fmt: str = "table", max_rows: int = 100, out=None) -> None:
    """Print a DuckDB relation as a boxed table (numbers right-aligned, types under the names),
    CSV or JSON (decimals as exact strings)."""
    out = out or sys.stdout
    if rel is None:
        print("ok", file=out)
        return
    if fmt == "csv":
        out.write(rel.pl().write_csv())
        return
    if fmt == "json":
        out.write(rel.pl().write_json() + "\n")
        return
    width = shutil.get_terminal_size((10_000, 40)).columns if out.isatty() else 10_000
    old, sys.stdout = sys.stdout, out
    try:
        rel.show(max_rows=max_rows, max_width=width)
    finally:
        sys.stdout = old


# ------------------------------------------------------------------------------------------
# Model comparison
# ------------------------------------------------------------------------------------------


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
    m = schema.attribution_models
    parts = [frames.empty(_MODEL_READ)]
    with engine.connect() as conn:
        for part in chunked(sorted(set(users)), 5000):
            stmt = select(*[m.c[c] for c in _MODEL_READ]).where(m.c.user_id.in_(list(part)))
            parts.append(read_frame(conn, stmt, _MODEL_READ))
    return pl.concat(parts)


def _currencies(engine: Engine, campaign_ids: Sequence[int]) -> list[str]:
    c = schema.aff_campaigns
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
        snaps, touch, chunk_names = exports.read_stored(engine, chunk)
        if users:
            snaps = snaps.filter(pl.col("user_id").is_in(list(users)))
            touch = touch.filter(pl.col("user_id").is_in(list(users)))
        shares = exports.touchpoints_export(touch, chunk_names)
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


def _cents(value) -> Decimal:
    return Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _money(value) -> str:
    return "-" if value is None else f"{_cents(value):,.2f}"


def _when(hour: int) -> str:
    return datetime.fromtimestamp(hour, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _window(result: "Comparison") -> str:
    return f"{_when(result.first_hour)} to {_when(result.last_hour + HOUR)} UTC"


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}%"


def _spread_of(values: list[Decimal]) -> tuple[Decimal, float | None]:
    spread = max(values) - min(values) if values else Decimal(0)
    mean = float(sum(values, Decimal(0))) / len(values) if values else 0.0
    return spread, (float(spread) / abs(mean) * 100 if mean else None)


def _rows(user: UserComparison) -> tuple[list[str], list[list[str]]]:
    """The printed table. Amounts are shown in cents and the spread is taken between the amounts as
    shown, so a reader's own subtraction gives the printed spread."""
    header = ["traffic source (ppc account)", *[f"{lbl}" for _, lbl in user.models], "spread", "spread %"]
    rows = []
    for rec in user.table.iter_rows(named=True):  # presentation of a small table, not a data path
        shown = [_cents(rec[lbl]) for _, lbl in user.models]
        spread, pct = _spread_of(shown)
        rows.append([rec["source"], *[_money(v) for v in shown], _money(spread), _pct(pct)])
    totals = [_cents(user.totals[i]) for i, _ in user.models]
    spread, pct = _spread_of(totals)
    rows.append(["total", *[_money(t) for t in totals], _money(spread), _pct(pct)])
    return header, rows


def _intro(result: Comparison) -> list[str]:
    return [
        "Attributed revenue by traffic source under each active model",
        f"Window: {_window(result)} "
        f"({result.hours} hour{'s' if result.hours != 1 else ''} of conversions). "
        f"Amounts in {CURRENCY}, rounded to cents.",
        "Each conversion's revenue is split over its journey's touches by the model's credits; a touch counts for "
        "the traffic source (ppc account) of its own click.",
        "spread = highest minus lowest model; spread % = spread / average of the models.",
    ]


def _notes(result: Comparison) -> list[str]:
    notes = []
    for user in result.users:
        off = [f"{lbl} ({_money(user.totals[i])} vs {_money(user.snapshot_totals[i])})"
               for i, lbl in user.models if user.totals[i] != user.snapshot_totals[i]]
        if off:
            notes.append(f"user {user.user_id}: stored snapshot totals without touchpoints, not split by source: "
                         + "; ".join(off))
    if result.users and not any("snapshot totals" in n for n in notes):
        notes.append("Model totals equal the stored totals of 202_attribution_snapshots for the window.")
    if result.without_rows:
        notes.append("Active models without stored rows in the window (invalid, or never run), not shown: "
                     + ", ".join(f"{m['model_name']} (#{m['model_id']}, user {m['user_id']})" for m in result.without_rows))
    if result.inactive_with_rows:
        notes.append("Inactive models that still have stored rows, not compared: "
                     + ", ".join(f"{m['model_name']} (#{m['model_id']}, user {m['user_id']})"
                                 for m in result.inactive_with_rows))
    if result.other_currencies:
        notes.append(f"Some campaigns are set to {', '.join(result.other_currencies)} (aff_campaign_currency); "
                     f"revenue is shown as Prosper202 stored it (202_conversion_logs.click_payout, {CURRENCY}).")
    return notes


def render_text(result: Comparison) -> str:
    lines = _intro(result)
    if not result.users:
        lines += ["", "No stored attribution rows in this window."]
    for user in result.users:
        header, rows = _rows(user)
        widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
        fmt = lambda r: "  ".join(  # noqa: E731
            (c.ljust(w) if k == 0 else c.rjust(w)) for k, (c, w) in enumerate(zip(r, widths)))
        lines += ["", f"User {user.user_id} (amounts in {CURRENCY})", fmt(header), "  ".join("-" * w for w in widths)]
        lines += [fmt(r) for r in rows[:-1]]
        lines += ["  ".join("-" * w for w in widths), fmt(rows[-1])]
    notes = _notes(result)
    if notes:
        lines += [""] + [f"* {n}" for n in notes]
    return "\n".join(lines)


def render_markdown(result: Comparison) -> str:
    lines = ["**" + _intro(result)[0] + "**", "", *_intro(result)[1:]]
    if not result.users:
        lines += ["", "No stored attribution rows in this window."]
    for user in result.users:
        header, rows = _rows(user)
        rows[-1] = [f"**{c}**" for c in rows[-1]]
        lines += ["", f"**User {user.user_id}** ({CURRENCY})", "",
                  "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    notes = _notes(result)
    if notes:
        lines += [""] + [f"* {n}" for n in notes]
    return "\n".join(lines)


def render_chart(result: Comparison, path: str | os.PathLike) -> Path:
    """A grouped bar chart PNG: one panel per account, traffic sources on the x axis, one bar per
    model, the spread written above each group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panels = result.users or [None]
    most_sources = max((u.table.height for u in result.users), default=1)
    most_models = max((len(u.models) for u in result.users), default=1)
    width = max(9.0, min(32.0, 3.0 + most_sources * (0.6 + 0.25 * most_models)))
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 4.6 * len(panels)), squeeze=False)
    fig.suptitle(f"Attributed revenue by traffic source under each active model\n"
                 f"{_window(result)}, amounts in {CURRENCY}",
                 fontsize=13)
    colors = plt.get_cmap("tab10").colors
    for ax, user in zip(axes[:, 0], panels):
        if user is None:
            ax.text(0.5, 0.5, "No stored attribution rows in this window", ha="center", va="center")
            ax.set_axis_off()
            continue
        sources = user.table.get_column("source").to_list()
        ticks = [textwrap.fill(name, 18) for name in sources]
        n = len(user.models)
        bar = 0.8 / max(n, 1)
        for k, (model_id, label) in enumerate(user.models):
            values = [float(v) for v in user.table.get_column(label).to_list()]
            xs = [i - 0.4 + bar * (k + 0.5) for i in range(len(sources))]
            ax.bar(xs, values, width=bar, label=f"{label}  (total ${_money(user.totals[model_id])})",
                   color=colors[k % len(colors)])
        tops = [max(float(v) for v in row[2:2 + n]) if n else 0.0 for row in user.table.iter_rows()]
        for i, rec in enumerate(user.table.iter_rows(named=True)):
            spread, pct = _spread_of([_cents(rec[lbl]) for _, lbl in user.models])
            top = tops[i]
            ax.annotate(f"spread ${_money(spread)}" + (f"\n({_pct(pct)})" if pct is not None else ""),
                        (i, top), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
        ax.set_title(f"User {user.user_id}", loc="left", fontsize=11)
        ax.set_xticks(range(len(sources)), ticks)
        ax.set_xlabel("Traffic source (ppc account)")
        ax.set_ylabel(f"Attributed revenue ({CURRENCY})")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.0f}"))
        ax.margins(y=0.18)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.legend(title="Model", fontsize=8, title_fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
