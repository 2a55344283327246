"""Seeded synthetic Prosper202 data: every table the attribution engine reads, realistic and odd.

:func:`generate` returns one Polars frame per Prosper202 table (Prosper202 column names and
order, DECIMAL columns as ``pl.Decimal`` with the column's scale, every NOT NULL column filled);
:func:`load` writes them into existing tables (LOAD DATA LOCAL INFILE on MariaDB/MySQL where the
server allows it, batched INSERTs otherwise and on SQLite); :func:`seed` does both.

What is generated, and why
--------------------------
* **Accounts** (``202_users``) with their advertisers (``202_aff_networks``), campaigns
  (``202_aff_campaigns``; several campaigns of an account share a network, the advertiser of
  spec 5.1), traffic sources (``202_ppc_accounts``) and landing pages (``202_landing_pages``).
  Accounts keep Prosper202's default ``user_timezone`` (America/Los_Angeles): the engine must
  ignore it and work in UTC (D17).
* **Clicks** (``202_clicks``): a stream per (account, campaign) over
  ``[start - lookback_days, start + hours)``. Campaign intensities vary widely so journeys (D2:
  the newest 25 clicks of the account on the campaign within 30 days, plus the converting click)
  take every length: *sparse* campaigns have a handful of clicks near the conversion window
  (journeys of 1-6 touches), *light* ones 8-40 clicks in the month, *dense* ones (log-uniform
  weights over two decades) share the rest and fill the 25-touch cap. ``click_id`` increases with
  ``click_time`` (with a few skipped ids, as after purges) and starts above 2**32, so every
  consumer must handle BIGINT UNSIGNED. Converting clicks carry ``click_lead=1,
  click_filtered=0`` as Prosper202's conversion update leaves them; some others are filtered or
  bots (the engine does not exclude them, Q2).
* **Conversions** (``202_conversion_logs``): each picks a click and a delay (0 for some, mostly
  hours, some days) so that ``conv_time`` is spread over ``[start, start + hours)``;
  ``campaign_id``, ``user_id`` and ``click_time`` are the click's. Edge cases the engine must
  get right: conversions exactly at ``H`` and ``H + 3599`` (D3 hour buckets), conversions whose
  converting click is 30-60 clicks older than the campaign's newest click (not among the newest
  25: 26-touch journeys, D2/Q3), and, for a few conversions, two extra clicks exactly at
  ``conv_time - 30 days`` (inside the inclusive lookback, D2) and one second earlier (outside).
  ``conv_id`` follows insertion order: API/subid conversions (``pixel_type`` 0) are inserted
  late, so ``conv_id`` is not monotonic in ``conv_time``. ``ip`` and ``user_agent`` are personal
  data in a real install; here they are recognisably fake (``203.0.113.*`` / ``2001:db8::*``
  documentation ranges, ``Mozilla/5.0 (SyntheticAgent N)``) so tests can grep logs and exports
  for leaks. ``202_conversion_touchpoints`` stays empty: journeys are built from clicks at run
  time (D13).
* **Models** (``202_attribution_models``): with ``models="all"`` one model of every type per
  account (last_touch as the default, time_decay with several half-lives including ``"12.9"``
  (D10), position_based with several weight pairs, assisted, algorithmic (D7), first_touch and
  linear (D7)) plus one inactive model; with ``invalid_models`` some accounts also get invalid
  rows (half-life 0, weights summing over 1, unknown type ``data_driven``, malformed JSON) that
  the pipeline must skip and report (D6). ``models="main6"`` gives exactly six valid active
  models per account. JSON is stored compactly, as PHP's ``json_encode`` does.
* **Settings** (``202_attribution_settings``): about a third of the accounts switch multi-touch
  off globally, one of them switches it back on for one advertiser, another account switches it
  off for one campaign (D13, spec 5.1: the most specific row wins).
* **Anomalies** (``anomalies=True``): a few exactly duplicated click rows, some of them
  converting clicks (D15: one click, counted once); about 0.5% of conversions whose click id is
  not in ``202_clicks`` (D16: skipped); about 2% soft-deleted conversions (D16: never count); the
  last account is ``user_deleted=1`` yet has campaigns, clicks, conversions and models (D16: not
  processed).

Everything that varies comes from ``config.seed``: small tables from ``random.Random`` seeded
per table, large ones from a SplitMix64 hash of the row number computed with Polars integer
expressions (wrapping UInt64 arithmetic), so the same config gives byte-identical frames and the
output does not depend on Polars' internal hash function. ``start`` is always given by the
caller; nothing reads the clock.
"""

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from decimal import Decimal

import polars as pl
from sqlalchemy import Table
from sqlalchemy.engine import Engine
from sqlalchemy.types import Numeric, String

from attribution_pipeline import db, schema

HOUR = 3600
DAY = 86400
#: The engine's default journey window and touch cap (D2); boundary clicks use the window.
JOURNEY_LOOKBACK_SECONDS = 30 * DAY
JOURNEY_TOUCH_CAP = 25
#: First click id: above 2**32 so every consumer must carry click ids as 64-bit integers.
CLICK_ID_BASE = 2**32 + 1_000_001

MODEL_TYPES = ("last_touch", "time_decay", "position_based", "assisted", "algorithmic", "first_touch", "linear")

_SPARSE, _LIGHT, _DENSE = 0, 1, 2
_CANDIDATE_BACK = 3 * DAY  # converting clicks lie at most this long before `start`
_HOURS_DELAY_MAX = 8 * HOUR
_DAYS_DELAY_MAX = 3 * DAY - 1
_DEEP_DELAY_MAX = 7 * DAY
_UNITS = 100_000  # DECIMAL(_, 5) units
_CPC_MIN, _CPC_MAX = 5_000, 250_000  # 0.05 .. 2.5


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig:
    """What to generate. Counts scale with ``scale`` unless given explicitly."""

    seed: int = 202
    start: int  # epoch seconds, first hour of conversions (floored to the hour)
    hours: int = 72  # conversions fall in [start, start + hours*3600)
    lookback_days: int = 30  # clicks start lookback_days before `start` so journeys are full
    scale: float = 1.0  # multiplies users/campaigns/clicks/conversions counts below
    users: int = 4
    campaigns_per_user: int = 5
    clicks: int | None = None  # total 202_clicks rows; default round(20_000 * scale)
    conversions: int | None = None  # total 202_conversion_logs rows; default round(1_000 * scale)
    models: str = "all"  # "all" | "main6" | "none"
    invalid_models: bool = True  # with models="all": a few invalid model rows (D6)
    settings: bool = True  # 202_attribution_settings rows (spec 5.1)
    anomalies: bool = True  # D15 duplicates, D16 orphans / soft deletes / a deleted user

    def __post_init__(self):
        if self.hours < 1:
            raise ValueError("hours must be >= 1")
        if self.lookback_days < 0:
            raise ValueError("lookback_days must be >= 0")
        if not self.scale > 0:
            raise ValueError("scale must be > 0")
        if self.users < 1 or self.campaigns_per_user < 1:
            raise ValueError("users and campaigns_per_user must be >= 1")
        if self.models not in ("all", "main6", "none"):
            raise ValueError(f"models must be 'all', 'main6' or 'none', not {self.models!r}")
        if self.clicks is not None and self.clicks < 0 or self.conversions is not None and self.conversions < 0:
            raise ValueError("clicks and conversions must be >= 0")
        earliest = self.start_hour - max(self.lookback_days * DAY, JOURNEY_LOOKBACK_SECONDS + _CANDIDATE_BACK + 1)
        if earliest < 0:
            raise ValueError("start is too early: clicks before it would have negative times")
        if self.n_conversions > 0 and self.n_clicks < 100:
            raise ValueError("at least 100 clicks are needed to generate conversions")

    @property
    def start_hour(self) -> int:
        return self.start // HOUR * HOUR

    @property
    def end(self) -> int:
        """End (exclusive) of the conversion window."""
        return self.start_hour + self.hours * HOUR

    @property
    def n_users(self) -> int:
        return max(1, round(self.users * self.scale))

    @property
    def n_clicks(self) -> int:
        return self.clicks if self.clicks is not None else round(20_000 * self.scale)

    @property
    def n_conversions(self) -> int:
        return self.conversions if self.conversions is not None else round(1_000 * self.scale)


# ------------------------------------------------------------------------------------------
# Randomness
# ------------------------------------------------------------------------------------------

_U64 = pl.UInt64
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _key(seed: int, name: str) -> int:
    """A 64-bit stream key for (seed, purpose)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest(), "little")


def _rng(seed: int, name: str) -> random.Random:
    return random.Random(_key(seed, name))


def _hash(x: pl.Expr, key: int) -> pl.Expr:
    """SplitMix64 of ``x * golden + key`` in wrapping UInt64 arithmetic (stable across versions)."""
    z = x.cast(_U64) * pl.lit(_GOLDEN, _U64) + pl.lit(key, _U64)
    z = z.xor(z // pl.lit(1 << 30, _U64)) * pl.lit(_MIX1, _U64)
    z = z.xor(z // pl.lit(1 << 27, _U64)) * pl.lit(_MIX2, _U64)
    return z.xor(z // pl.lit(1 << 31, _U64))


def _uniform(x: pl.Expr, key: int) -> pl.Expr:
    """A double uniform in [0, 1) per row, from the top 53 bits of :func:`_hash`."""
    return (_hash(x, key) // pl.lit(1 << 11, _U64)).cast(pl.Float64) * (1.0 / (1 << 53))


def _below(x: pl.Expr, key: int, n) -> pl.Expr:
    """An integer uniform in [0, n) per row (``n`` an int or an integer expression > 0)."""
    return (_uniform(x, key) * n).floor().cast(pl.Int64)


def _permutation(n: int, key: int) -> pl.Series:
    """A seeded permutation of 0..n-1 (position -> rank), for exact-size random subsets."""
    return pl.select((_hash(pl.int_range(n), key).rank("ordinal") - 1).cast(pl.Int64)).to_series()


def _decimal(units: pl.Expr, precision: int, scale: int = 5) -> pl.Expr:
    """Integer 1e-5 units as ``pl.Decimal(precision, scale)``."""
    return (units.cast(pl.Decimal(38, 5)) / _UNITS).cast(pl.Decimal(precision, scale))


def _round_units(units: pl.Expr, q: pl.Expr) -> pl.Expr:
    """Round integer units to a multiple of ``q`` (half up; units are non-negative)."""
    return (units + q // 2) // q * q


# ------------------------------------------------------------------------------------------
# Frame shapes
# ------------------------------------------------------------------------------------------

_CLICK_ID_COLUMNS = {("202_clicks", "click_id"), ("202_conversion_logs", "click_id"),
                     ("202_conversion_touchpoints", "click_id")}


def table_schema(table: Table) -> dict[str, pl.DataType]:
    """The Polars dtypes of a generated frame for ``table`` (columns in table order)."""
    out = {}
    for col in table.columns:
        if (table.name, col.name) in _CLICK_ID_COLUMNS:
            out[col.name] = pl.UInt64
        elif isinstance(col.type, Numeric) and col.type.scale is not None and col.type.asdecimal:
            out[col.name] = pl.Decimal(col.type.precision, col.type.scale)
        elif isinstance(col.type, String):
            out[col.name] = pl.String
        else:
            out[col.name] = pl.Int64
    return out


def _frame(table: Table, data) -> pl.DataFrame:
    """``data`` (a frame, or a list of row dicts) as exactly ``table``'s columns and dtypes."""
    dtypes = table_schema(table)
    if isinstance(data, list) and not data:
        data = pl.DataFrame(schema=dtypes)
    elif isinstance(data, list):
        data = pl.DataFrame([pl.Series(name, [row[name] for row in data], dtype=dtype) for name, dtype in dtypes.items()])
    missing = [c for c in dtypes if c not in data.columns]
    if missing:
        raise ValueError(f"{table.name}: generated frame lacks {missing}")
    df = data.select([pl.col(c).cast(t) for c, t in dtypes.items()])
    for col in table.columns:
        if not col.nullable and df.height and df.get_column(col.name).null_count():
            raise ValueError(f"{table.name}.{col.name} is NOT NULL but the generated frame has nulls")
    return df


# ------------------------------------------------------------------------------------------
# Small tables (Python, random.Random)
# ------------------------------------------------------------------------------------------


@dataclass
class _Campaign:
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
class _Plan:
    users: list = field(default_factory=list)
    networks: list = field(default_factory=list)
    campaigns: list = field(default_factory=list)  # _Campaign
    campaign_rows: list = field(default_factory=list)
    ppc_accounts: list = field(default_factory=list)
    landing_pages: list = field(default_factory=list)
    deleted_user: int | None = None


def _plan(cfg: GeneratorConfig) -> _Plan:
    rng = _rng(cfg.seed, "dimensions")
    plan = _Plan()
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
        kinds = [_SPARSE, _DENSE] if cpu >= 2 else [_DENSE]
        if cpu >= 3:
            kinds.append(_LIGHT)
        kinds += rng.choices([_SPARSE, _LIGHT, _DENSE], weights=[2, 2, 6], k=cpu - len(kinds))
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
            plan.campaigns.append(_Campaign(
                idx=len(plan.campaigns), campaign_id=camp_id, user_id=u, network_id=net_of[i],
                kind=kinds[i], cpc_units=rng.randint(5_000, 250_000), cpc_q=10 ** (5 - decimals),
                payout_cents=payout_cents, lp_first=lp_id + 1, lp_n=lp_n, ppc_first=ppcs[0],
                ppc_n=len(ppcs), ppc_main=rng.choice(ppcs),
                weight=math.exp(rng.uniform(0.0, math.log(100.0))),
            ))
            lp_id += lp_n
    return plan


def _allocate_clicks(cfg: GeneratorConfig, plan: _Plan, stream: int) -> None:
    """Set each campaign's click count; the counts sum to ``stream``."""
    if stream == 0:
        return
    rng = _rng(cfg.seed, "click-counts")
    fixed = [c for c in plan.campaigns if c.kind != _DENSE]
    dense = [c for c in plan.campaigns if c.kind == _DENSE]
    for c in fixed:
        c.clicks = rng.randint(1, 6) if c.kind == _SPARSE else rng.randint(8, 40)
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


# ------------------------------------------------------------------------------------------
# Clicks and conversions (vectorised Polars)
# ------------------------------------------------------------------------------------------


def _campaign_frame(cfg: GeneratorConfig, plan: _Plan) -> pl.DataFrame:
    sparse_lo = cfg.start_hour - 2 * DAY
    click_lo = cfg.start_hour - cfg.lookback_days * DAY
    rows = [
        {
            "cidx": c.idx, "campaign_id": c.campaign_id, "user_id": c.user_id, "kind": c.kind,
            "n": c.clicks, "t_lo": sparse_lo if c.kind == _SPARSE else click_lo,
            "cpc_units": c.cpc_units, "cpc_q": c.cpc_q, "payout_units": c.payout_cents * 1_000,
            "lp_first": c.lp_first, "lp_n": c.lp_n, "ppc_first": c.ppc_first, "ppc_n": c.ppc_n,
            "ppc_main": c.ppc_main,
        }
        for c in plan.campaigns
    ]
    return pl.DataFrame(rows, schema={k: pl.Int64 for k in rows[0]})


def _click_attributes(clicks: pl.DataFrame, camps: pl.DataFrame, cfg: GeneratorConfig) -> pl.LazyFrame:
    """Campaign, landing page, traffic source, cost, payout and flags of clicks keyed by ``r``
    (a function of ``r`` and the campaign only, whatever the row order)."""
    s, r = cfg.seed, pl.col("r")
    attrs = camps.select(pl.all().exclude("cidx", "kind", "n", "t_lo").gather(clicks.get_column("cidx")))
    lf = pl.concat([clicks, attrs], how="horizontal").lazy()
    # the campaign's bid +-30%, kept in 0.05-2.5 and rounded to the campaign's 2-5 decimals
    cpc = (pl.col("cpc_units").cast(pl.Float64) * (0.7 + 0.6 * _uniform(r, _key(s, "cpc")))).floor().cast(pl.Int64)
    cpc = _round_units(cpc.clip(_CPC_MIN, _CPC_MAX), pl.col("cpc_q"))
    bot = _uniform(r, _key(s, "bot")) < 0.01
    return lf.with_columns(
        landing_page_id=pl.col("lp_first") + _below(r, _key(s, "lp"), pl.col("lp_n")),
        ppc_account_id=pl.when(_uniform(r, _key(s, "ppc-main")) < 0.8)
        .then(pl.col("ppc_main"))
        .otherwise(pl.col("ppc_first") + _below(r, _key(s, "ppc"), pl.col("ppc_n"))),
        cpc_units=pl.when(_uniform(r, _key(s, "organic")) < 0.01).then(0).otherwise(cpc),
        click_bot=bot.cast(pl.Int64),
        click_filtered=(bot | (_uniform(r, _key(s, "filtered")) < 0.03)).cast(pl.Int64),
    )


def _stream_clicks(cfg: GeneratorConfig, camps: pl.DataFrame) -> pl.DataFrame:
    """The click stream of every campaign: ``r`` (row key 0..S-1), ``cidx``, ``kind``, ``click_time``."""
    s = cfg.seed
    counts = camps.filter(pl.col("n") > 0)
    idx = counts.select(pl.col("cidx").repeat_by("n")).explode("cidx").get_column("cidx")
    base = camps.select(pl.col("cidx", "kind", "t_lo").gather(idx))
    base = base.with_columns(r=pl.int_range(pl.len(), dtype=pl.Int64))
    t = pl.col("t_lo") + _below(pl.col("r"), _key(s, "click-time"), cfg.end - pl.col("t_lo"))
    # a few bursts: clicks snapped to the minute, so equal click_times (ties) are common
    burst = _uniform(pl.col("r"), _key(s, "burst")) < 0.03
    t_burst = pl.max_horizontal(pl.col("click_time") - pl.col("click_time") % 60, pl.col("t_lo"))
    return (
        base.lazy()
        .with_columns(click_time=t)
        .with_columns(click_time=pl.when(burst).then(t_burst).otherwise(pl.col("click_time")))
        .select("r", "cidx", "kind", "click_time")
        .collect()
    )


def _block_sizes(m: int, fractions: list[tuple[str, float]]) -> dict[str, tuple[int, int]]:
    """Consecutive [lo, hi) rank ranges of at least one row each (while rows last)."""
    out, lo = {}, 0
    for name, frac in fractions:
        n = min(max(1, round(m * frac)) if frac > 0 else 0, max(0, m - lo))
        out[name] = (lo, lo + n)
        lo += n
    return out


def _in_block(col: pl.Expr, block: tuple[int, int]) -> pl.Expr:
    return (col >= block[0]) & (col < block[1])


def _pick_clicks(cfg: GeneratorConfig, pool: pl.DataFrame, conv: pl.DataFrame) -> pl.DataFrame:
    """For each conversion (``j``, delay ``d``), a click of ``pool`` with ``click_time + d`` in the
    window, uniformly among those; ``conv_time = click_time + d``. Where none fits, any pool
    click with a delay that lands inside the window."""
    s = cfg.seed
    t = pool.get_column("click_time")
    lo = t.search_sorted(cfg.start_hour - conv.get_column("d"), side="left").cast(pl.Int64)
    hi = t.search_sorted(cfg.end - conv.get_column("d"), side="left").cast(pl.Int64)
    j = pl.col("j")
    conv = conv.with_columns(lo=lo, n=hi - lo).with_columns(
        idx=pl.when(pl.col("n") > 0)
        .then(pl.col("lo") + _below(j, _key(s, "pick"), pl.col("n").clip(lower_bound=1)))
        .otherwise(_below(j, _key(s, "pick-any"), pool.height))
    )
    picked = pool.select(pl.all().gather(conv.get_column("idx")))
    conv = pl.concat([conv.drop("lo", "idx"), picked], how="horizontal")
    ct = pl.col("click_time")
    low = pl.max_horizontal(cfg.start_hour - ct, 0)
    high = pl.min_horizontal(cfg.end - 1 - ct, low + _HOURS_DELAY_MAX)
    fallback = low + (_uniform(j, _key(s, "fallback")).pow(2) * (high - low + 1)).floor().cast(pl.Int64)
    return conv.with_columns(
        conv_time=ct + pl.when(pl.col("n") > 0).then(pl.col("d")).otherwise(fallback)
    ).drop("n")


def _conversions(cfg: GeneratorConfig, stream: pl.DataFrame, m: int) -> pl.DataFrame:
    """``m`` conversions: converting click row ``r`` and ``conv_time``, plus per-row flags."""
    s = cfg.seed
    cand = (
        stream.filter(pl.col("click_time") >= cfg.start_hour - _CANDIDATE_BACK)
        .select("r", "cidx", "kind", "click_time")
        .sort("click_time", "r")
    )
    if cand.height == 0:
        raise ValueError("no click falls near the conversion window: add clicks")
    sparse_pool = cand.filter(pl.col("kind") == _SPARSE).drop("kind")
    other_pool = cand.filter(pl.col("kind") != _SPARSE).drop("kind")
    if other_pool.height == 0:
        m_sparse = m
    elif sparse_pool.height == 0:
        m_sparse = 0
    else:
        # at most about two conversions per sparse click: their journeys stay short
        m_sparse = min(round(m * 0.1), 2 * sparse_pool.height)
    j = pl.col("j")
    cat = _block_sizes(m, [("hour_start", 0.01), ("hour_end", 0.01), ("zero", 0.04), ("deep", 0.05), ("days", 0.15)])
    conv = pl.DataFrame({"j": pl.int_range(m, dtype=pl.Int64, eager=True)}).with_columns(
        sparse=j < m_sparse, cat=_permutation(m, _key(s, "delay-category"))
    )
    u = _uniform(j, _key(s, "delay"))
    conv = conv.with_columns(
        d=pl.when(_in_block(pl.col("cat"), cat["zero"])).then(0)
        .when(_in_block(pl.col("cat"), cat["days"])).then((u * (_DAYS_DELAY_MAX + 1)).floor().cast(pl.Int64))
        .otherwise((u.pow(2) * (_HOURS_DELAY_MAX + 1)).floor().cast(pl.Int64))
    )
    parts = []
    if m_sparse:
        parts.append(_pick_clicks(cfg, sparse_pool, conv.filter(pl.col("sparse"))))
    if m - m_sparse:
        parts.append(_pick_clicks(cfg, other_pool, conv.filter(~pl.col("sparse"))))
    conv = pl.concat(parts).sort("j")

    # exact hour boundaries (D3): H, or H + 3599 when H would precede the click
    ct, cv = pl.col("click_time"), pl.col("conv_time")
    hour = cv // HOUR * HOUR
    conv = conv.with_columns(
        conv_time=pl.when(_in_block(pl.col("cat"), cat["hour_start"]))
        .then(pl.when(hour >= ct).then(hour).otherwise(hour + HOUR - 1))
        .when(_in_block(pl.col("cat"), cat["hour_end"])).then(hour + HOUR - 1)
        .otherwise(cv)
    )
    return _deepen(cfg, stream, conv, cat["deep"])


def _deepen(cfg: GeneratorConfig, stream: pl.DataFrame, conv: pl.DataFrame, block: tuple[int, int]) -> pl.DataFrame:
    """Move the converting click of the "deep" conversions 30-60 clicks back in its campaign, so
    it is not among the newest 25 (a 26-touch journey, D2/Q3)."""
    s = cfg.seed
    shift = 1 << 33
    ordered = stream.select("r", "cidx", "click_time").sort("cidx", "click_time", "r")
    keys = ordered.select(pl.col("cidx") * shift + pl.col("click_time")).to_series()
    deep = conv.filter(~pl.col("sparse") & _in_block(pl.col("cat"), block))
    if deep.height == 0:
        return conv
    last = keys.search_sorted(deep.select(pl.col("cidx") * shift + pl.col("conv_time")).to_series(), side="right")
    first = keys.search_sorted(deep.select(pl.col("cidx") * shift).to_series(), side="left")
    deep = deep.select("j", "conv_time").with_columns(
        last=last.cast(pl.Int64) - 1, first=first.cast(pl.Int64),
        back=30 + _below(pl.col("j"), _key(s, "deep"), 31),
    ).with_columns(target=pl.col("last") - pl.col("back"))
    deep = deep.filter(pl.col("target") >= pl.col("first"))
    moved = ordered.select(r_deep="r", t_deep="click_time").select(pl.all().gather(deep.get_column("target")))
    moved = pl.concat([deep.select("j", "conv_time"), moved], how="horizontal")
    # keep delays to a few days: too sparse a campaign keeps its original click
    moved = moved.filter(pl.col("conv_time") - pl.col("t_deep") <= _DEEP_DELAY_MAX).drop("conv_time")
    return (
        conv.join(moved, on="j", how="left", maintain_order="left")
        .with_columns(r=pl.coalesce("r_deep", "r"), click_time=pl.coalesce("t_deep", "click_time"))
        .drop("r_deep", "t_deep")
    )


def _anomaly_blocks(cfg: GeneratorConfig, m: int, n_dup: int) -> dict[str, tuple[int, int]]:
    if not cfg.anomalies:
        return {"orphan": (0, 0), "deleted": (0, 0), "dup": (0, 0)}
    return _block_sizes(m, [("orphan", 0.005), ("deleted", 0.02), ("dup", (n_dup // 2) / m if m else 0)])


def _clicks_and_conversions(cfg: GeneratorConfig, plan: _Plan) -> tuple[pl.DataFrame, pl.DataFrame]:
    s = cfg.seed
    n_clicks, m = cfg.n_clicks, cfg.n_conversions
    n_dup = min(200, max(4, n_clicks // 5_000)) if cfg.anomalies and n_clicks >= 100 else 0
    n_bnd_conv = 3 if m >= 20 else 0
    n_stream = n_clicks - n_dup - 2 * n_bnd_conv
    _allocate_clicks(cfg, plan, n_stream)
    camps = _campaign_frame(cfg, plan)
    stream = _stream_clicks(cfg, camps) if n_stream else None

    # --- conversions: converting click row r, conv_time
    if m:
        conv = _conversions(cfg, stream, m)
        blocks = _anomaly_blocks(cfg, m, n_dup)
        conv = conv.with_columns(
            anomaly=_permutation(m, _key(s, "anomaly")),
            zero_payout=_permutation(m, _key(s, "zero-payout")) < max(1, m // 100),
        )
        conv = conv.with_columns(
            orphan=_in_block(pl.col("anomaly"), blocks["orphan"]),
            deleted=_in_block(pl.col("anomaly"), blocks["deleted"]).cast(pl.Int64),
            dup=_in_block(pl.col("anomaly"), blocks["dup"]),
        )
    else:
        conv = None

    # --- clicks exactly at conv_time - 30 days (inside) and one second earlier (outside), D2
    parts = [stream] if stream is not None else []
    if n_bnd_conv:
        chosen = (
            conv.filter(~pl.col("orphan") & (pl.col("deleted") == 0))
            .with_columns(order=_hash(pl.col("j"), _key(s, "boundary")))
            .sort(~pl.col("sparse"), "order")
            .head(n_bnd_conv)
            .select("cidx", "conv_time")
        )
        bnd = pl.concat([
            chosen.with_columns(click_time=pl.col("conv_time") - JOURNEY_LOOKBACK_SECONDS),
            chosen.with_columns(click_time=pl.col("conv_time") - JOURNEY_LOOKBACK_SECONDS - 1),
        ])
        parts.append(bnd.select(
            r=n_stream + pl.int_range(pl.len(), dtype=pl.Int64),
            cidx=pl.col("cidx"), kind=pl.lit(camps.get_column("kind")).gather(pl.col("cidx")),
            click_time=pl.col("click_time"),
        ))
    if not parts:
        return _frame(schema.clicks, []), _frame(schema.conversion_logs, [])
    clicks = pl.concat(parts, how="vertical").sort("click_time", "r")
    row_of = clicks.select(pl.col("r").arg_sort()).to_series()  # r -> row (r is a permutation)

    # --- click ids: increasing with click_time, a few skipped (purged) ids
    gap = (_uniform(pl.col("r"), _key(s, "id-gap")) < 0.01) & (pl.int_range(pl.len()) > 0)
    clicks = clicks.lazy().with_columns(gap=gap).with_columns(
        click_id=pl.lit(CLICK_ID_BASE) + pl.int_range(pl.len(), dtype=pl.Int64) + pl.col("gap").cast(pl.Int64).cum_sum()
    ).with_columns(gap_id=pl.when(pl.col("gap")).then(pl.col("click_id") - 1).otherwise(None).forward_fill()).collect()
    max_id = clicks.get_column("click_id").max()

    lead = pl.Series("click_lead", [0], pl.Int64).new_from_index(0, clicks.height)
    if conv is not None:
        rows = row_of.gather(conv.get_column("r"))
        conv = conv.with_columns(
            click_id=clicks.get_column("click_id").gather(rows), gap_id=clicks.get_column("gap_id").gather(rows)
        ).with_columns(
            click_id=pl.when(pl.col("orphan"))
            .then(pl.coalesce("gap_id", max_id + 1 + pl.col("j")))
            .otherwise(pl.col("click_id"))
        )
        lead = lead.scatter(row_of.gather(conv.filter(~pl.col("orphan")).get_column("r")), 1)

    clicks = (
        _click_attributes(clicks.drop("gap", "gap_id").with_columns(lead), camps, cfg)
        .with_columns(
            aff_campaign_id=pl.col("campaign_id"),
            click_filtered=pl.when(pl.col("click_lead") == 1).then(0).otherwise(pl.col("click_filtered")),
            click_cpc=_decimal(pl.col("cpc_units"), 7),
            click_payout=_decimal(pl.col("payout_units"), 11),
            click_alp=pl.lit(0, pl.Int64), rotator_id=pl.lit(0, pl.Int64), rule_id=pl.lit(0, pl.Int64),
        )
        .select(list(table_schema(schema.clicks)))
        .collect()
    )

    # --- exact duplicates of a few click rows (D15), some of them converting clicks
    if n_dup:
        if conv is not None:
            dup_r = conv.filter(pl.col("dup") & ~pl.col("orphan")).sort("j").get_column("r").head(n_dup // 2)
        else:
            dup_r = pl.Series("r", [], pl.Int64)
        rand = pl.select(_below(pl.int_range(n_dup - dup_r.len()), _key(s, "dup-rows"), n_stream)).to_series()
        dup_rows = row_of.gather(pl.concat([dup_r, rand.alias("r")]).cast(pl.Int64))
        clicks = pl.concat([clicks, clicks.select(pl.all().gather(dup_rows))])

    clicks_frame = _frame(schema.clicks, clicks)
    if conv is None:
        return clicks_frame, _frame(schema.conversion_logs, [])
    return clicks_frame, _conversion_frame(cfg, conv, camps)


def _conversion_frame(cfg: GeneratorConfig, conv: pl.DataFrame, camps: pl.DataFrame) -> pl.DataFrame:
    s, j = cfg.seed, pl.col("j")
    conv = conv.with_columns(
        campaign_id=pl.lit(camps.get_column("campaign_id")).gather(pl.col("cidx")),
        user_id=pl.lit(camps.get_column("user_id")).gather(pl.col("cidx")),
    )
    u_px = _uniform(j, _key(s, "pixel"))
    pixel = pl.when(u_px < 0.40).then(1).when(u_px < 0.65).then(2).when(u_px < 0.85).then(3).otherwise(0)
    # insertion order (conv_id): API / subid uploads (pixel 0) arrive up to 6 hours late
    lag = pl.when(pl.col("pixel_type") == 0).then(_below(j, _key(s, "upload-lag"), 6 * HOUR)).otherwise(0)

    # revenue: 1.00000-150.00000 with 0, 2, 3 or 5 decimals; a few 0 (DECIMAL(11,5))
    decimals = pl.Series([0, 2, 2, 2, 3, 5], dtype=pl.Int64)
    q = pl.lit(10, pl.Int64).pow(5 - pl.lit(decimals).gather(_below(j, _key(s, "payout-decimals"), 6)))
    payout = _UNITS + (_uniform(j, _key(s, "payout")).pow(2) * 14_900_000).floor().cast(pl.Int64)
    payout = pl.when(pl.col("zero_payout")).then(0).otherwise(pl.min_horizontal(_round_units(payout, q), 150 * _UNITS))

    delta = pl.col("conv_time") - pl.col("click_time")
    human = pl.format(
        "{} days, {} hours, {} minutes, {} seconds",
        delta // DAY, delta % DAY // HOUR, delta % HOUR // 60, delta % 60,
    )
    # personal data in a real install: documentation address ranges and a marked user agent
    hexes = pl.Series([f"{i:x}" for i in range(1, 4097)])
    ip = (
        pl.when(_uniform(j, _key(s, "ipv6")) < 0.15)
        .then(pl.lit("2001:db8::") + pl.lit(hexes).gather(_below(j, _key(s, "ip6"), 4096)))
        .otherwise(pl.lit("203.0.113.") + (1 + _below(j, _key(s, "ip4"), 254)).cast(pl.String))
    )
    txn = _uniform(j, _key(s, "txn")) < 0.3
    frame = (
        conv.lazy()
        .with_columns(pixel_type=pixel.cast(pl.Int64))
        .with_columns(insert_at=pl.col("conv_time") + lag)
        .sort("insert_at", "j")
        .with_columns(conv_id=pl.int_range(1, pl.len() + 1, dtype=pl.Int64))
        .with_columns(
            transaction_id=pl.when(txn).then(pl.format("SYN-{}-{}", pl.lit(s), pl.col("conv_id"))).otherwise(None),
            click_payout=_decimal(payout, 11),
            time_difference=pl.when(pl.col("pixel_type") == 0).then(delta.cast(pl.String)).otherwise(human),
            ip=ip,
            user_agent=pl.format("Mozilla/5.0 (SyntheticAgent {})", 1 + _below(j, _key(s, "ua"), 500)),
        )
        .collect()
    )
    return _frame(schema.conversion_logs, frame)


# ------------------------------------------------------------------------------------------
# Models and settings
# ------------------------------------------------------------------------------------------


def _json(value) -> str:
    """Compact JSON, as PHP's json_encode stores it."""
    return json.dumps(value, separators=(",", ":"))


_HALF_LIFE_VARIANTS = ("12.9", 1, 24)
_POSITION_VARIANTS = ((0.3, 0.4), (0.2, 0.6), (0, 0), (0.5, 0.5))


def _pct(x) -> str:
    return str(round(x * 100))


def _model_specs(cfg: GeneratorConfig, plan: _Plan) -> list[dict]:
    """(user, name, slug, type, config, active, default) in creation order."""
    rng = _rng(cfg.seed, "models")
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


def _models(cfg: GeneratorConfig, plan: _Plan) -> list[dict]:
    if cfg.models == "none":
        return []
    base = cfg.start_hour - cfg.lookback_days * DAY - 60 * DAY
    rows = []
    for i, spec in enumerate(_model_specs(cfg, plan)):
        created = base + 600 * i
        rows.append({"model_id": i + 1, **spec, "created_at": created, "updated_at": created + 60})
    return rows


def _settings(cfg: GeneratorConfig, plan: _Plan, models: list[dict]) -> list[dict]:
    if not cfg.settings:
        return []
    rng = _rng(cfg.seed, "settings")
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
    busy = [c for c in plan.campaigns if c.user_id == off[0] and c.kind == _DENSE]
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


# ------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------


def generate(config: GeneratorConfig) -> dict[str, pl.DataFrame]:
    """Table name -> frame with that table's columns, for every Prosper202 source table."""
    plan = _plan(config)
    clicks, conversions = _clicks_and_conversions(config, plan)
    models = _models(config, plan)
    settings = _settings(config, plan, models)
    return {
        schema.users.name: _frame(schema.users, plan.users),
        schema.aff_networks.name: _frame(schema.aff_networks, plan.networks),
        schema.aff_campaigns.name: _frame(schema.aff_campaigns, plan.campaign_rows),
        schema.ppc_accounts.name: _frame(schema.ppc_accounts, plan.ppc_accounts),
        schema.landing_pages.name: _frame(schema.landing_pages, plan.landing_pages),
        schema.clicks.name: clicks,
        schema.conversion_logs.name: conversions,
        schema.conversion_touchpoints.name: _frame(schema.conversion_touchpoints, []),
        schema.attribution_models.name: _frame(schema.attribution_models, models),
        schema.attribution_settings.name: _frame(schema.attribution_settings, settings),
    }


def load(engine: Engine, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Insert ``frames`` into the existing tables of ``engine`` in one transaction; row counts."""
    unknown = set(frames) - set(schema.metadata.tables)
    if unknown:
        raise ValueError(f"unknown tables: {sorted(unknown)}")
    counts = {}
    with engine.begin() as conn:
        for table in schema.metadata.sorted_tables:
            if table.name in frames:
                counts[table.name] = db.bulk_load(conn, table, frames[table.name])
    return counts


def seed(engine: Engine, config: GeneratorConfig) -> dict[str, int]:
    """Create the missing Prosper202 tables, generate ``config``'s data and load it."""
    schema.create_missing(engine)
    return load(engine, generate(config))
