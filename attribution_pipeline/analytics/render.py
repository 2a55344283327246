"""The model comparison rendered: a text table, Markdown, and a grouped bar chart (PNG)."""

import math
import os
import textwrap
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from attribution_pipeline.analytics.charts import cents as _cents
from attribution_pipeline.analytics.charts import finish_axis, user_panels
from attribution_pipeline.analytics.charts import money as _money
from attribution_pipeline.analytics.comparison import (
    CURRENCY,
    SCOPE_LABELS,
    Comparison,
    UserComparison,
)
from attribution_pipeline.core.hours import HOUR


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


def _rows(user: UserComparison, by: str = "account") -> tuple[list[str], list[list[str]]]:
    """The printed table. Amounts are shown in cents and the spread is taken between the amounts as
    shown, so a reader's own subtraction gives the printed spread."""
    header = [SCOPE_LABELS[by][0], *[f"{lbl}" for _, lbl in user.models], "spread", "spread %"]
    rows = []
    for rec in user.table.iter_rows(named=True):  # presentation of a small table, not a data path
        shown = [_cents(rec[lbl]) for _, lbl in user.models]
        spread, pct = _spread_of(shown)
        rows.append([rec["name"], *[_money(v) for v in shown], _money(spread), _pct(pct)])
    totals = [_cents(user.totals[i]) for i, _ in user.models]
    spread, pct = _spread_of(totals)
    rows.append(["total", *[_money(t) for t in totals], _money(spread), _pct(pct)])
    return header, rows


def _intro(result: Comparison) -> list[str]:
    label = SCOPE_LABELS[result.by][0]
    return [
        f"Attributed revenue by {label} under each active model",
        f"Window: {_window(result)} "
        f"({result.hours} hour{'s' if result.hours != 1 else ''} of conversions). "
        f"Amounts in {CURRENCY}, rounded to cents.",
        "Each conversion's revenue is split over its journey's touches by the model's credits; a touch counts for "
        f"the {label} of its own click.",
        "spread = highest minus lowest model; spread % = spread / average of the models.",
    ]


def _notes(result: Comparison) -> list[str]:
    notes = []
    for user in result.users:
        off = [f"{lbl} ({_money(user.totals[i])} vs {_money(user.snapshot_totals[i])})"
               for i, lbl in user.models if user.totals[i] != user.snapshot_totals[i]]
        if off:
            notes.append(f"user {user.user_id}: stored snapshot totals without touchpoints, not split by "
                         f"{SCOPE_LABELS[result.by][1]}: "
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
        header, rows = _rows(user, result.by)
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
        header, rows = _rows(user, result.by)
        rows[-1] = [f"**{c}**" for c in rows[-1]]
        lines += ["", f"**User {user.user_id}** ({CURRENCY})", "",
                  "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    notes = _notes(result)
    if notes:
        lines += [""] + [f"* {n}" for n in notes]
    return "\n".join(lines)


def render_chart(result: Comparison, path: str | os.PathLike) -> Path:
    """A grouped bar chart PNG: one panel per user, the values of the compared scope type on the x
    axis, one bar per model, the spread written above each group."""
    most_sources = max((u.table.height for u in result.users), default=1)
    most_models = max((len(u.models) for u in result.users), default=1)
    width = max(9.0, min(32.0, 3.0 + most_sources * (0.6 + 0.25 * most_models)))
    title = (f"Attributed revenue by {SCOPE_LABELS[result.by][0]} under each active model\n"
             f"{_window(result)}, amounts in {CURRENCY}")
    with user_panels(result.users, width, title, "No stored attribution rows in this window", path) as (drawn, colors):
        for ax, user in drawn:
            sources = user.table.get_column("name").to_list()
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
                ax.annotate(f"spread ${_money(spread)}" + (f"\n({_pct(pct)})" if pct is not None else ""),
                            (i, tops[i]), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
            ax.set_xticks(range(len(sources)), [textwrap.fill(name, 18) for name in sources])
            ax.set_xlabel(SCOPE_LABELS[result.by][0].capitalize())
            ax.margins(y=0.18)
            finish_axis(ax, user.user_id, f"Attributed revenue ({CURRENCY})", ",.0f", title="Model", title_fontsize=9)
    return Path(path)
