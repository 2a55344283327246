"""Revenue by click hour or day against spend (``compare --axis touch``): a text table and a PNG chart."""

import os
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from attribution_pipeline.analytics.accrual import Accrual, UserAccrual
from attribution_pipeline.analytics.charts import cents as _cents
from attribution_pipeline.analytics.charts import finish_axis, user_panels
from attribution_pipeline.analytics.charts import money as _money
from attribution_pipeline.analytics.comparison import CURRENCY
from attribution_pipeline.core.hours import HOUR


def _when(epoch: int, per: str = "hour") -> str:
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d" if per == "day" else "%Y-%m-%d %H:%M")


def roas(revenue: Decimal, spend: Decimal) -> str:
    """Revenue per unit of spend, ``-`` without spend."""
    return "-" if not spend else f"{Decimal(revenue) / Decimal(spend):.2f}x"


def _intro(result: Accrual) -> list[str]:
    n = result.hours
    return [
        f"Attributed revenue by click {result.per} under each active model, against the spend of those clicks",
        f"Clicks: {_when(result.first_hour)} to {_when(result.last_hour + HOUR)} UTC ({n} hour{'s' if n != 1 else ''}); "
        f"conversions up to {_when(result.last_conversion_hour + HOUR)} UTC. Amounts in {CURRENCY}, rounded to cents.",
        "Each conversion's revenue is split over its journey's touches by the model's credits; a touch counts in the "
        f"{result.per} of its own click.",
        "spend = every click of the period in 202_clicks (its cpc), whether or not it reached a journey; "
        "ROAS = model revenue / spend.",
    ]


def rows(user: UserAccrual, per: str) -> tuple[list[str], list[list[str]]]:
    """The printed table: one row per period, the total, and the ROAS of each model."""
    header = [f"click {per}", "clicks", "spend", *[lbl for _, lbl in user.models]]
    out = [[_when(rec["period"], per), str(rec["clicks"]), _money(rec["spend"]),
            *[_money(rec[lbl]) for _, lbl in user.models]] for rec in user.table.iter_rows(named=True)]
    out.append(["total", str(user.clicks), _money(user.spend), *[_money(user.totals[i]) for i, _ in user.models]])
    out.append(["ROAS", "", "", *[roas(_cents(user.totals[i]), _cents(user.spend)) for i, _ in user.models]])
    return header, out


def render_text(result: Accrual) -> str:
    lines = _intro(result)
    if not result.users:
        lines += ["", "No stored attribution rows for these clicks."]
    for user in result.users:
        header, body = rows(user, result.per)
        widths = [max(len(r[k]) for r in [header, *body]) for k in range(len(header))]
        fmt = lambda r: "  ".join(  # noqa: E731
            (c.ljust(w) if k == 0 else c.rjust(w)) for k, (c, w) in enumerate(zip(r, widths)))
        rule = "  ".join("-" * w for w in widths)
        lines += ["", f"User {user.user_id} (amounts in {CURRENCY})", fmt(header), rule,
                  *[fmt(r) for r in body[:-2]], rule, *[fmt(r) for r in body[-2:]]]
    if result.without_rows:
        lines += ["", "* Active models without stored rows for these conversions (invalid, or never run), not shown: "
                  + ", ".join(f"{m['model_name']} (#{m['model_id']}, user {m['user_id']})" for m in result.without_rows)]
    return "\n".join(lines)


def render_chart(result: Accrual, path: str | os.PathLike) -> Path:
    """One panel per user: per period, a bar per model's revenue and the spend as a line."""
    periods = max((u.table.height for u in result.users), default=1)
    width = max(9.0, min(32.0, 3.0 + periods * 0.9))
    title = (f"Attributed revenue by click {result.per} under each active model, and the clicks' spend\n"
             f"{_when(result.first_hour)} to {_when(result.last_hour + HOUR)} UTC, amounts in {CURRENCY}")
    with user_panels(result.users, width, title, "No stored attribution rows for these clicks", path) as (drawn, colors):
        for ax, user in drawn:
            labels = [_when(p, result.per) for p in user.table.get_column("period").to_list()]
            bar = 0.8 / max(len(user.models), 1)
            for k, (model_id, label) in enumerate(user.models):
                xs = [i - 0.4 + bar * (k + 0.5) for i in range(len(labels))]
                ax.bar(xs, [float(v) for v in user.table.get_column(label).to_list()], width=bar,
                       label=f"{label}  (ROAS {roas(_cents(user.totals[model_id]), _cents(user.spend))})",
                       color=colors[k % len(colors)])
            ax.plot(range(len(labels)), [float(v) for v in user.table.get_column("spend").to_list()], color="black",
                    marker="o", label=f"spend (total ${_money(user.spend)})")
            ax.set_xticks(range(len(labels)), labels, rotation=30 if result.per == "hour" else 0, ha="right")
            ax.set_xlabel(f"Click {result.per} (UTC)")
            finish_axis(ax, user.user_id, CURRENCY, ",.2f")
    return Path(path)
