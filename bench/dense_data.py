"""The dense profile's data: few users, few campaigns, journeys at the 25-touch cap, 13 models.

The demo generator (``attribution_pipeline/demo/``) makes the clicks and conversions; its
parameters alone cannot give this shape, so the profile builds it from the generator's pieces:

* ``plan_accounts`` with ``users=3``, ``campaigns_per_user=2`` (default), no anomalies (with
  anomalies the last account is ``user_deleted=1`` and never processed), no settings rows (a third
  of the accounts would switch multi-touch off), no models;
* every campaign made *dense* with the same weight: each user gets the same share of the clicks,
  all on its few campaigns, so a journey (the newest 25 clicks of the user on the conversion's
  campaign within 30 days, plus the converting click) is nearly always at the cap: ~380k clicks
  per campaign over the 33 days of clicks at full size, ~480 an hour (~10 an hour at
  ``--scale 0.02``, still far above 25 in 30 days);
* ``clicks_and_conversions`` then spreads the clicks and picks the conversions as the demo does
  (5% of them with a converting click 30-60 clicks back: 26-touch journeys);
* :data:`MODELS`: 13 valid active models over the 3 users (5, 4 and 4) instead of the demo's 6 or
  7 per user. Eleven of them credit every touch (linear, time decay, position based, assisted:
  ~25 touchpoint rows per conversion each), two credit one touch (last touch, first touch), so a
  conversion has ~92 touchpoint rows on average (101, 99 and 75 for the three users): ~18M for
  200k conversions. User 1 has two time
  decay models (the strategies' join path, ``strategies/per_model.py``). Configurations are stored
  as PHP's ``json_encode`` stores them (``demo/model_rows.py``).
"""

import json

import polars as pl

from attribution_pipeline.demo.accounts import plan_accounts
from attribution_pipeline.demo.config import DAY, DENSE, GeneratorConfig
from attribution_pipeline.demo.generator import source_frames
from attribution_pipeline.demo.traffic import clicks_and_conversions

def _json(value) -> str:
    """Compact JSON, as PHP's json_encode stores it."""
    return json.dumps(value, separators=(",", ":"))


#: (user index, slug, type, weighting_config, default): 5 + 4 + 4 active, valid models.
MODELS = (
    (0, "last-touch", "last_touch", None, 1),
    (0, "linear", "linear", None, 0),
    (0, "time-decay-48h", "time_decay", _json({"half_life_hours": 48}), 0),
    (0, "time-decay-12-9h", "time_decay", _json({"half_life_hours": "12.9"}), 0),
    (0, "position-based-40-40", "position_based", _json({"first_touch_weight": 0.4, "last_touch_weight": 0.4}), 0),
    (1, "time-decay-24h", "time_decay", _json({"half_life_hours": 24}), 1),
    (1, "linear", "linear", None, 0),
    (1, "position-based-30-40", "position_based", _json({"first_touch_weight": 0.3, "last_touch_weight": 0.4}), 0),
    (1, "assisted", "assisted", None, 0),
    (2, "first-touch", "first_touch", "{}", 1),
    (2, "linear", "linear", None, 0),
    (2, "position-based-20-60", "position_based", _json({"first_touch_weight": 0.2, "last_touch_weight": 0.6}), 0),
    (2, "assisted", "assisted", None, 0),
)


def dense_config(*, seed: int, start: int, hours: int, clicks: int, conversions: int, users: int = 3,
                 campaigns_per_user: int = 2) -> GeneratorConfig:
    return GeneratorConfig(seed=seed, start=start, hours=hours, clicks=clicks, conversions=conversions, users=users,
                           campaigns_per_user=campaigns_per_user, models="none", settings=False, anomalies=False)


def model_rows(cfg: GeneratorConfig, user_ids: list[int]) -> list[dict]:
    """:data:`MODELS` for ``user_ids`` (cycled when there are more than three users)."""
    created = cfg.start_hour - cfg.lookback_days * DAY - 60 * DAY
    rows = []
    for n, user in enumerate(user_ids):
        for i, (_, slug, mtype, config, default) in enumerate(m for m in MODELS if m[0] == n % 3):
            t = created + 600 * len(rows)
            rows.append({"model_id": len(rows) + 1, "user_id": user, "model_name": slug.replace("-", " ").title(),
                         "model_slug": slug, "model_type": mtype, "weighting_config": config, "is_active": 1,
                         "is_default": default, "created_at": t, "updated_at": t + 60})
    return rows


def generate_dense(cfg: GeneratorConfig) -> dict[str, pl.DataFrame]:
    """Table name -> frame for every Prosper202 source table, as ``demo.generator.generate``."""
    plan = plan_accounts(cfg)
    for campaign in plan.campaigns:  # every campaign dense, all equally busy
        campaign.kind, campaign.weight = DENSE, 1.0
    clicks, conversions = clicks_and_conversions(cfg, plan)
    models = model_rows(cfg, [u["user_id"] for u in plan.users])
    return source_frames(plan, clicks, conversions, models, [])
