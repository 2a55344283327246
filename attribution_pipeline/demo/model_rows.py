"""The generator's models (every type, some invalid on purpose) and multi-touch settings."""

import json

from attribution_pipeline.demo.accounts import Plan
from attribution_pipeline.demo.config import DAY, DENSE, GeneratorConfig
from attribution_pipeline.demo.seeded import seeded_rng


def _json(value) -> str:
    """Compact JSON, as PHP's json_encode stores it."""
    return json.dumps(value, separators=(",", ":"))


_HALF_LIFE_VARIANTS = ("12.9", 1, 24)
_POSITION_VARIANTS = ((0.3, 0.4), (0.2, 0.6), (0, 0), (0.5, 0.5))


def _pct(x) -> str:
    return str(round(x * 100))


def _model_specs(cfg: GeneratorConfig, plan: Plan) -> list[dict]:
    """(user, name, slug, type, config, active, default) in creation order."""
    rng = seeded_rng(cfg.seed, "models")
    off_hl, off_pos = rng.randrange(len(_HALF_LIFE_VARIANTS)), rng.randrange(len(_POSITION_VARIANTS))
    specs = []
    for n, user in enumerate(plan.users):
        u = user["user_id"]

        def add(name, slug, mtype, config, active=1, default=0):
            specs.append({"user_id": u, "model_name": name, "model_slug": slug, "model_type": mtype,
                          "weighting_config": config, "is_active": active, "is_default": default})

        hl, pos = 48, (0.4, 0.4)
        if cfg.models == "all" and n % 2 == 1:
            hl = _HALF_LIFE_VARIANTS[(off_hl + n // 2) % len(_HALF_LIFE_VARIANTS)]
            pos = _POSITION_VARIANTS[(off_pos + n // 2) % len(_POSITION_VARIANTS)]
        hl_text = str(hl).replace(".", "-")
        add("Last Touch", "last-touch", "last_touch", None, default=1)
        add(f"Time Decay {hl}h", f"time-decay-{hl_text}h", "time_decay", _json({"half_life_hours": hl}))
        add(f"Position Based {_pct(pos[0])}/{_pct(pos[1])}", f"position-based-{_pct(pos[0])}-{_pct(pos[1])}",
            "position_based", _json({"first_touch_weight": pos[0], "last_touch_weight": pos[1]}))
        add("Assisted", "assisted", "assisted", None)
        if cfg.models == "all":
            add("Algorithmic", "algorithmic", "algorithmic", _json({"config": "synthetic"}))
        add("First Touch", "first-touch", "first_touch", "{}")
        add("Linear", "linear", "linear", None)
        if cfg.models == "all":
            add("Time Decay 24h (retired)", "time-decay-24h-retired", "time_decay",
                _json({"half_life_hours": 24}), active=0)
            if cfg.invalid_models and n % 3 == 1:
                add("Broken Time Decay", "broken-time-decay", "time_decay", _json({"half_life_hours": 0}))
                add("Broken Position Based", "broken-position-based", "position_based",
                    _json({"first_touch_weight": 0.8, "last_touch_weight": 0.5}))
                add("Data Driven", "data-driven", "data_driven", None)
                add("Broken Last Touch", "broken-last-touch", "last_touch", "{bad json")
    return specs


def model_rows(cfg: GeneratorConfig, plan: Plan) -> list[dict]:
    if cfg.models == "none":
        return []
    base = cfg.start_hour - cfg.lookback_days * DAY - 60 * DAY
    rows = []
    for i, spec in enumerate(_model_specs(cfg, plan)):
        created = base + 600 * i
        rows.append({"model_id": i + 1, **spec, "created_at": created, "updated_at": created + 60})
    return rows


def settings_rows(cfg: GeneratorConfig, plan: Plan, models: list[dict]) -> list[dict]:
    if not cfg.settings:
        return []
    rng = seeded_rng(cfg.seed, "settings")
    default_model = {m["user_id"]: m["model_id"] for m in models if m["is_default"]}
    live = [u["user_id"] for u in plan.users if u["user_id"] != plan.deleted_user]
    if not live:
        return []
    off = sorted(rng.sample(live, max(1, round(len(live) / 3))))
    rows = []
    t = cfg.start_hour - cfg.lookback_days * DAY - 30 * DAY

    def add(user, scope_type, scope_id, enabled):
        nonlocal t
        t += 3_600
        rows.append({
            "setting_id": len(rows) + 1, "user_id": user, "scope_type": scope_type, "scope_id": scope_id,
            "model_id": default_model.get(user, 0), "multi_touch_enabled": enabled,
            "multi_touch_enabled_at": t if enabled else None,
            "multi_touch_disabled_at": None if enabled else t,
            "effective_at": t, "created_at": t, "updated_at": t,
        })

    for user in off:
        add(user, "global", None, 0)
    # one of them turns multi-touch back on for one advertiser (a network with a busy campaign)
    busy = [c for c in plan.campaigns if c.user_id == off[0] and c.kind == DENSE]
    network = (busy or [c for c in plan.campaigns if c.user_id == off[0]])[0].network_id
    add(off[0], "advertiser", network, 1)
    # another account turns it off for one campaign
    others = [u for u in live if u not in off] or [u for u in live if u != off[0]]
    if others:
        user = rng.choice(others)
        camps = [c for c in plan.campaigns if c.user_id == user]
        camp = max(camps, key=lambda c: (c.clicks, -c.idx))
        add(user, "campaign", camp.campaign_id, 0)
    return rows
