"""Revenue by the hour of the **clicks** under each model, against those clicks' spend
(``attribution compare --axis touch``), from the stored rows.

The window ``[start, end)`` selects click hours. Each conversion's stored revenue is split over its
journey's touches by the model's stored credits (``revenue_share``, as in the exports) and each
share counts in the hour of its touch's own click: the conversions read are those of the hours from
the window's first hour to the lookback (``ATTRIBUTION_LOOKBACK_DAYS``) after its end, and no
later than now (a journey never reaches back further; only a converting click older than the
lookback could be credited later). The spend of an hour is every click of it in ``202_clicks``,
journey or not (``exports/spend.py``), the same for every model. So the numbers are the
``accrual`` view's (docs/exports.md, *Revenue by click hour*) for those conversions.
:mod:`.accrual_render` prints and plots it.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import polars as pl
from sqlalchemy.engine import Engine

from attribution_pipeline.analytics.comparison import MODEL_READ, model_labels, model_rows, window_hours
from attribution_pipeline.core import frames
from attribution_pipeline.core.hours import HOUR, chunk_hours, floor_hour, hours_between
from attribution_pipeline.exports.build import read_stored, touchpoints_export
from attribution_pipeline.exports.columns import SPEND_DTYPE, SPEND_SCALE
from attribution_pipeline.exports.spend import read_spend_totals

DAY = 86400
#: Windows up to this long are shown hour by hour, longer ones day by day.
HOURLY_UP_TO = 48 * HOUR
_MONEY = pl.Decimal(38, 4)
_CREDITS = {"user_id": pl.Int64, "model_id": pl.Int64, "date_hour": pl.Int64, "revenue": _MONEY}


@dataclass
class UserAccrual:
    """One user's periods (click hours or days) x active models."""

    user_id: int
    models: list[tuple[int, str]]  # (model_id, column label), in model id order
    table: pl.DataFrame  # period (epoch), clicks, spend, one Decimal revenue column per model label
    totals: dict[int, Decimal]  # model_id -> revenue credited to the window's clicks
    clicks: int
    spend: Decimal


@dataclass
class Accrual:
    first_hour: int
    last_hour: int
    last_conversion_hour: int  # the last hour whose conversions were read
    per: str  # "hour" or "day"
    users: list[UserAccrual]
    without_rows: list[dict] = field(default_factory=list)  # active models with no stored rows read

    @property
    def hours(self) -> int:
        return (self.last_hour - self.first_hour) // HOUR + 1


def _credits(engine: Engine, hours: list[int], conversion_hours: list[int], users: Sequence[int] | None,
             chunk_size: int) -> tuple[pl.DataFrame, set[int]]:
    """Revenue shares per (user, model, click hour of the window), and the models with stored rows."""
    parts, with_rows = [frames.empty(_CREDITS)], set()
    for chunk in chunk_hours(conversion_hours, chunk_size):
        snaps, touch, names = read_stored(engine, chunk)
        if users:
            snaps = snaps.filter(pl.col("user_id").is_in(list(users)))
            touch = touch.filter(pl.col("user_id").is_in(list(users)))
        with_rows |= set(snaps.get_column("model_id").to_list())
        shares = touchpoints_export(touch, names).with_columns(
            date_hour=pl.col("click_time").dt.truncate("1h").dt.epoch("s"))
        parts.append(shares.filter(pl.col("date_hour").is_between(hours[0], hours[-1]))
                     .group_by("user_id", "model_id", "date_hour").agg(revenue=pl.col("revenue_share").sum())
                     .cast({"revenue": _MONEY}))
    return pl.concat(parts).group_by("user_id", "model_id", "date_hour").agg(pl.col("revenue").sum()), with_rows


def compare_touch(engine: Engine, start: int, end: int, *, lookback_seconds: int, now: int,
                  users: Sequence[int] | None = None, chunk_size: int = 168) -> Accrual:
    """Revenue per (user, active model, click hour or day of ``[start, end)``) and the spend of
    those hours (module docstring)."""
    hours = window_hours(start, end)
    last_conversion = max(hours[-1], min(floor_hour(now), floor_hour(hours[-1] + HOUR - 1 + lookback_seconds)))
    credits, with_rows = _credits(engine, hours, hours_between(hours[0], last_conversion), users, chunk_size)
    with engine.connect() as conn:
        spend = read_spend_totals(conn, hours, users)
    wanted = sorted(set(users) if users else set(credits.get_column("user_id").to_list())
                    | set(spend.get_column("user_id").to_list()))
    models = model_rows(engine, wanted) if wanted else frames.empty(MODEL_READ)
    active = models.filter(pl.col("is_active") == 1).sort("model_id")
    compared = active.filter(pl.col("model_id").is_in(list(with_rows)))
    per = "hour" if hours[-1] + HOUR - hours[0] <= HOURLY_UP_TO else "day"
    result = Accrual(first_hour=hours[0], last_hour=hours[-1], last_conversion_hour=last_conversion, per=per,
                     users=[], without_rows=active.filter(~pl.col("model_id").is_in(list(with_rows))).to_dicts())
    for user_id in compared.get_column("user_id").unique().sort().to_list():
        mine = pl.col("user_id") == user_id
        result.users.append(_user_table(user_id, compared.filter(mine), credits.filter(mine), spend.filter(mine),
                                        hours, per))
    return result


def _period(per: str) -> pl.Expr:
    return pl.col("date_hour") - pl.col("date_hour") % (HOUR if per == "hour" else DAY)


def _user_table(user_id: int, models: pl.DataFrame, credits: pl.DataFrame, spend: pl.DataFrame,
                hours: list[int], per: str) -> UserAccrual:
    labels = model_labels(models)
    periods = pl.DataFrame({"date_hour": hours}, schema={"date_hour": pl.Int64}).select(
        period=_period(per)).unique().sort("period")
    money = (pl.col("spend_units").cast(pl.Decimal(38, SPEND_SCALE)) / 10**SPEND_SCALE).cast(SPEND_DTYPE)
    spent = spend.with_columns(period=_period(per)).group_by("period").agg(
        clicks=pl.col("clicks").sum(), spend=money.sum())
    table = periods.join(spent, on="period", how="left").with_columns(
        clicks=pl.col("clicks").fill_null(0), spend=pl.col("spend").fill_null(Decimal(0)).cast(pl.Decimal(38, 5)))
    earned = credits.with_columns(period=_period(per))
    for model_id, label in labels:
        revenue = (earned.filter(pl.col("model_id") == model_id).group_by("period")
                   .agg(pl.col("revenue").sum().alias(label)))
        table = table.join(revenue, on="period", how="left").with_columns(
            pl.col(label).fill_null(Decimal(0)).cast(_MONEY))
    totals = {i: table.get_column(lbl).sum() for i, lbl in labels}
    return UserAccrual(user_id=user_id, models=labels, table=table, totals=totals,
                       clicks=int(table.get_column("clicks").sum()), spend=table.get_column("spend").sum())
