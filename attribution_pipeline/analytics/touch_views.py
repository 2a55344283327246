"""The DuckDB views by the hour of the **clicks** (the touch hour), over the export views.

* ``credits_by_touch_hour``: the touchpoints (global rows) summed per (user, model, hour of the
  touch's click): ``touches``, ``credited_conversions`` (the sum of the model's credits),
  ``revenue`` and ``cost`` (the sums of ``revenue_share`` / ``cost_share``, so every conversion's
  stored revenue is counted once, split over the hours of its touches' clicks). A touch whose click
  is not in ``202_clicks`` any more has no hour (``date_hour`` null).
* ``accrual``: per (user, model, click hour), that revenue beside the hour's ``clicks`` and
  ``spend`` from ``click_spend`` (every click of the hour, journey or not; the same for every
  model): revenue earned by the hour's clicks set against what they cost, so ROAS by click day is
  one ``GROUP BY``. An hour with spend and no credited touch has revenue 0 under every model of the
  user (the models of the user's global snapshot rows); a user without models has no row.

In these views ``date_hour`` (epoch seconds), ``hour_start``, ``date`` and ``hour`` are the
click's UTC hour, not the conversion's. The revenue of a click hour grows as later conversions
credit its clicks. Model names are the latest exported ones. Both views read the files at query
time like the others (docs/exports.md, *Revenue by click hour*).
"""

_HOUR_COLUMNS = ("CAST(epoch({t}) AS BIGINT) AS date_hour, {t} AS hour_start, CAST({t} AS DATE) AS date, "
                 "CAST(hour({t}) AS INTEGER) AS hour")
_MODEL = ("arg_max(model_name, {h}) AS model_name, arg_max(model_slug, {h}) AS model_slug, "
          "arg_max(model_type, {h}) AS model_type, arg_max(model_active, {h}) AS model_active")

CREDITS_BY_TOUCH_HOUR = f"""
SELECT user_id, model_id, {_MODEL.format(h="conversion_hour")},
       {_HOUR_COLUMNS.format(t="touch_hour")},
       count(*) AS touches, sum(credit) AS credited_conversions,
       sum(revenue_share) AS revenue, sum(cost_share) AS cost
FROM (SELECT user_id, model_id, model_name, model_slug, model_type, model_active, credit, revenue_share,
             cost_share, date_hour AS conversion_hour, date_trunc('hour', click_time) AS touch_hour
      FROM touchpoints)
GROUP BY user_id, model_id, touch_hour
"""

ACCRUAL = f"""
WITH spend AS (
    SELECT user_id, date_hour, sum(clicks) AS clicks, sum(spend) AS spend FROM click_spend GROUP BY ALL
), models AS (
    SELECT user_id, model_id, {_MODEL.format(h="date_hour")} FROM snapshots GROUP BY ALL
), keys AS (
    SELECT user_id, model_id, date_hour FROM credits_by_touch_hour
    UNION
    SELECT s.user_id, m.model_id, s.date_hour FROM spend s JOIN models m ON m.user_id = s.user_id
)
SELECT k.user_id, k.model_id,
       coalesce(m.model_name, c.model_name) AS model_name, coalesce(m.model_slug, c.model_slug) AS model_slug,
       coalesce(m.model_type, c.model_type) AS model_type, coalesce(m.model_active, c.model_active) AS model_active,
       {_HOUR_COLUMNS.format(t="make_timestamp(k.date_hour * 1000000)")},
       coalesce(c.touches, 0) AS touches, coalesce(c.credited_conversions, 0) AS credited_conversions,
       coalesce(c.revenue, 0) AS revenue, coalesce(c.cost, 0) AS cost,
       coalesce(s.clicks, 0) AS clicks, coalesce(s.spend, 0) AS spend
FROM keys k
LEFT JOIN models m ON m.user_id = k.user_id AND m.model_id = k.model_id
LEFT JOIN credits_by_touch_hour c
       ON c.user_id = k.user_id AND c.model_id = k.model_id AND c.date_hour IS NOT DISTINCT FROM k.date_hour
LEFT JOIN spend s ON s.user_id = k.user_id AND s.date_hour = k.date_hour
"""

#: The views by click hour, created after the export views they read (in this order).
TOUCH_VIEWS = {"credits_by_touch_hour": CREDITS_BY_TOUCH_HOUR, "accrual": ACCRUAL}
