"""The generator's small tables: accounts, advertisers, campaigns, traffic sources, landing pages."""

import math
from dataclasses import dataclass, field
from decimal import Decimal

from attribution_pipeline.demo.config import DAY, DENSE, LIGHT, SPARSE, GeneratorConfig
from attribution_pipeline.demo.seeded import seeded_rng


@dataclass
class Campaign:
    idx: int
    campaign_id: int
    user_id: int
    network_id: int
    kind: int
    cpc_units: int
    cpc_q: int
    payout_cents: int
    lp_first: int
    lp_n: int
    ppc_first: int
    ppc_n: int
    ppc_main: int
    weight: float
    clicks: int = 0


@dataclass
class Plan:
    users: list = field(default_factory=list)
    networks: list = field(default_factory=list)
    campaigns: list = field(default_factory=list)  # Campaign
    campaign_rows: list = field(default_factory=list)
    ppc_accounts: list = field(default_factory=list)
    landing_pages: list = field(default_factory=list)
    deleted_user: int | None = None


def plan_accounts(cfg: GeneratorConfig) -> Plan:
    rng = seeded_rng(cfg.seed, "dimensions")
    plan = Plan()
    t0 = cfg.start_hour - cfg.lookback_days * DAY - 120 * DAY
    n_users = cfg.n_users
    if cfg.anomalies and n_users >= 2:
        plan.deleted_user = n_users
    lp_id = ppc_id = net_id = camp_id = 0
    cpu = cfg.campaigns_per_user
    for u in range(1, n_users + 1):
        plan.users.append({
            "user_id": u, "user_name": f"synthetic{u:04d}", "user_active": 1,
            "user_deleted": int(u == plan.deleted_user), "user_timezone": "America/Los_Angeles",
        })
        user_time = t0 + u * 3_600
        nets = []
        for _ in range(max(1, min(3, cpu // 2))):
            net_id += 1
            nets.append(net_id)
            plan.networks.append({
                "aff_network_id": net_id, "dni_network_id": None, "user_id": u,
                "aff_network_name": f"Synthetic Advertiser {net_id}", "aff_network_deleted": 0,
                "aff_network_time": user_time + 60 * len(nets),
            })
        ppcs = []
        for k in range(rng.randint(2, 4)):
            ppc_id += 1
            ppcs.append(ppc_id)
            plan.ppc_accounts.append({
                "ppc_account_id": ppc_id, "user_id": u, "ppc_network_id": rng.randint(1, 6),
                "ppc_account_name": f"Synthetic Source {ppc_id}", "ppc_account_deleted": 0,
                "ppc_account_time": user_time + 600 + 60 * k, "ppc_account_default": int(k == 0),
            })
        kinds = [SPARSE, DENSE] if cpu >= 2 else [DENSE]
        if cpu >= 3:
            kinds.append(LIGHT)
        kinds += rng.choices([SPARSE, LIGHT, DENSE], weights=[2, 2, 6], k=cpu - len(kinds))
        rng.shuffle(kinds)
        net_of = [nets[i % len(nets)] for i in range(cpu)]
        rng.shuffle(net_of)
        for i in range(cpu):
            camp_id += 1
            payout_cents = rng.randint(100, 15_000)
            created = user_time + 1_200 + 60 * i
            plan.campaign_rows.append({
                "aff_campaign_id": camp_id, "aff_campaign_id_public": rng.randint(10**8, 4 * 10**9),
                "user_id": u, "aff_network_id": net_of[i], "aff_campaign_deleted": 0,
                "aff_campaign_name": f"Synthetic Offer {camp_id}",
                "aff_campaign_url": f"https://offers.example.com/o/{camp_id}?subid=[[subid]]",
                "aff_campaign_url_2": None, "aff_campaign_url_3": None, "aff_campaign_url_4": None,
                "aff_campaign_url_5": None,
                "aff_campaign_payout": Decimal(payout_cents).scaleb(-2),
                "aff_campaign_cloaking": 0, "aff_campaign_time": created, "aff_campaign_rotate": 0,
                "aff_campaign_currency": "USD",
                "aff_campaign_foreign_payout": Decimal(payout_cents).scaleb(-2),
                "attribution_model_id": None,
            })
            lp_n = rng.randint(1, 2)
            for k in range(lp_n):
                plan.landing_pages.append({
                    "landing_page_id": lp_id + 1 + k, "user_id": u,
                    "landing_page_id_public": rng.randint(10**8, 4 * 10**9), "aff_campaign_id": camp_id,
                    "landing_page_nickname": f"Synthetic LP {lp_id + 1 + k}",
                    "landing_page_url": f"https://lp.example.org/{camp_id}/{k + 1}",
                    "leave_behind_page_url": None, "landing_page_deleted": 0,
                    "landing_page_time": created + 30 + k, "landing_page_type": 0,
                })
            decimals = rng.choice([2, 2, 3, 4, 5])
            plan.campaigns.append(Campaign(
                idx=len(plan.campaigns), campaign_id=camp_id, user_id=u, network_id=net_of[i],
                kind=kinds[i], cpc_units=rng.randint(5_000, 250_000), cpc_q=10 ** (5 - decimals),
                payout_cents=payout_cents, lp_first=lp_id + 1, lp_n=lp_n, ppc_first=ppcs[0],
                ppc_n=len(ppcs), ppc_main=rng.choice(ppcs),
                weight=math.exp(rng.uniform(0.0, math.log(100.0))),
            ))
            lp_id += lp_n
    return plan


def allocate_clicks(cfg: GeneratorConfig, plan: Plan, stream: int) -> None:
    """Set each campaign's click count; the counts sum to ``stream``."""
    if stream == 0:
        return
    rng = seeded_rng(cfg.seed, "click-counts")
    fixed = [c for c in plan.campaigns if c.kind != DENSE]
    dense = [c for c in plan.campaigns if c.kind == DENSE]
    for c in fixed:
        c.clicks = rng.randint(1, 6) if c.kind == SPARSE else rng.randint(8, 40)
    total = sum(c.clicks for c in fixed)
    budget = stream // 2
    if total > budget:
        for c in fixed:
            c.clicks = max(1, c.clicks * budget // total)
    rest = stream - sum(c.clicks for c in fixed)
    if rest < len(dense):
        raise ValueError(f"{cfg.n_clicks} clicks are too few for {len(plan.campaigns)} campaigns")
    weight = sum(c.weight for c in dense)
    quotas = [rest * c.weight / weight for c in dense]
    counts = [int(q) for q in quotas]
    order = sorted(range(len(dense)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: rest - sum(counts)]:
        counts[i] += 1
    for c, n in zip(dense, counts):
        c.clicks = n
    # every dense campaign keeps at least one click
    for c in dense:
        if c.clicks == 0:
            donor = max(dense, key=lambda d: (d.clicks, -d.idx))
            donor.clicks -= 1
            c.clicks = 1
