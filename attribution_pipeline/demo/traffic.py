"""The generator's large tables: clicks and conversions, vectorised Polars (what and why: ``demo/generator.py``)."""

import polars as pl

from attribution_pipeline.demo.accounts import Plan, allocate_clicks
from attribution_pipeline.demo.config import (
    CANDIDATE_BACK,
    CLICK_ID_BASE,
    CPC_MAX,
    CPC_MIN,
    DAY,
    DAYS_DELAY_MAX,
    DEEP_DELAY_MAX,
    HOUR,
    HOURS_DELAY_MAX,
    JOURNEY_LOOKBACK_SECONDS,
    SPARSE,
    UNITS,
    GeneratorConfig,
)
from attribution_pipeline.demo.seeded import (
    below,
    decimal_units,
    hash64,
    permutation,
    round_units,
    stream_key,
    table_frame,
    table_schema,
    uniform,
)
from attribution_pipeline.storage import tables


def _campaign_frame(cfg: GeneratorConfig, plan: Plan) -> pl.DataFrame:
    sparse_lo = cfg.start_hour - 2 * DAY
    click_lo = cfg.start_hour - cfg.lookback_days * DAY
    rows = [
        {
            "cidx": c.idx, "campaign_id": c.campaign_id, "user_id": c.user_id, "kind": c.kind,
            "n": c.clicks, "t_lo": sparse_lo if c.kind == SPARSE else click_lo,
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
    cpc = (pl.col("cpc_units").cast(pl.Float64) * (0.7 + 0.6 * uniform(r, stream_key(s, "cpc")))).floor().cast(pl.Int64)
    cpc = round_units(cpc.clip(CPC_MIN, CPC_MAX), pl.col("cpc_q"))
    bot = uniform(r, stream_key(s, "bot")) < 0.01
    return lf.with_columns(
        landing_page_id=pl.col("lp_first") + below(r, stream_key(s, "lp"), pl.col("lp_n")),
        ppc_account_id=pl.when(uniform(r, stream_key(s, "ppc-main")) < 0.8)
        .then(pl.col("ppc_main"))
        .otherwise(pl.col("ppc_first") + below(r, stream_key(s, "ppc"), pl.col("ppc_n"))),
        cpc_units=pl.when(uniform(r, stream_key(s, "organic")) < 0.01).then(0).otherwise(cpc),
        click_bot=bot.cast(pl.Int64),
        click_filtered=(bot | (uniform(r, stream_key(s, "filtered")) < 0.03)).cast(pl.Int64),
    )


def _stream_clicks(cfg: GeneratorConfig, camps: pl.DataFrame) -> pl.DataFrame:
    """The click stream of every campaign: ``r`` (row key 0..S-1), ``cidx``, ``kind``, ``click_time``."""
    s = cfg.seed
    counts = camps.filter(pl.col("n") > 0)
    idx = counts.select(pl.col("cidx").repeat_by("n")).explode("cidx").get_column("cidx")
    base = camps.select(pl.col("cidx", "kind", "t_lo").gather(idx))
    base = base.with_columns(r=pl.int_range(pl.len(), dtype=pl.Int64))
    t = pl.col("t_lo") + below(pl.col("r"), stream_key(s, "click-time"), cfg.end - pl.col("t_lo"))
    # a few bursts: clicks snapped to the minute, so equal click_times (ties) are common
    burst = uniform(pl.col("r"), stream_key(s, "burst")) < 0.03
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
        .then(pl.col("lo") + below(j, stream_key(s, "pick"), pl.col("n").clip(lower_bound=1)))
        .otherwise(below(j, stream_key(s, "pick-any"), pool.height))
    )
    picked = pool.select(pl.all().gather(conv.get_column("idx")))
    conv = pl.concat([conv.drop("lo", "idx"), picked], how="horizontal")
    ct = pl.col("click_time")
    low = pl.max_horizontal(cfg.start_hour - ct, 0)
    high = pl.min_horizontal(cfg.end - 1 - ct, low + HOURS_DELAY_MAX)
    fallback = low + (uniform(j, stream_key(s, "fallback")).pow(2) * (high - low + 1)).floor().cast(pl.Int64)
    return conv.with_columns(
        conv_time=ct + pl.when(pl.col("n") > 0).then(pl.col("d")).otherwise(fallback)
    ).drop("n")


def _conversions(cfg: GeneratorConfig, stream: pl.DataFrame, m: int) -> pl.DataFrame:
    """``m`` conversions: converting click row ``r`` and ``conv_time``, plus per-row flags."""
    s = cfg.seed
    cand = (
        stream.filter(pl.col("click_time") >= cfg.start_hour - CANDIDATE_BACK)
        .select("r", "cidx", "kind", "click_time")
        .sort("click_time", "r")
    )
    if cand.height == 0:
        raise ValueError("no click falls near the conversion window: add clicks")
    sparse_pool = cand.filter(pl.col("kind") == SPARSE).drop("kind")
    other_pool = cand.filter(pl.col("kind") != SPARSE).drop("kind")
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
        sparse=j < m_sparse, cat=permutation(m, stream_key(s, "delay-category"))
    )
    u = uniform(j, stream_key(s, "delay"))
    conv = conv.with_columns(
        d=pl.when(_in_block(pl.col("cat"), cat["zero"])).then(0)
        .when(_in_block(pl.col("cat"), cat["days"])).then((u * (DAYS_DELAY_MAX + 1)).floor().cast(pl.Int64))
        .otherwise((u.pow(2) * (HOURS_DELAY_MAX + 1)).floor().cast(pl.Int64))
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
        back=30 + below(pl.col("j"), stream_key(s, "deep"), 31),
    ).with_columns(target=pl.col("last") - pl.col("back"))
    deep = deep.filter(pl.col("target") >= pl.col("first"))
    moved = ordered.select(r_deep="r", t_deep="click_time").select(pl.all().gather(deep.get_column("target")))
    moved = pl.concat([deep.select("j", "conv_time"), moved], how="horizontal")
    # keep delays to a few days: too sparse a campaign keeps its original click
    moved = moved.filter(pl.col("conv_time") - pl.col("t_deep") <= DEEP_DELAY_MAX).drop("conv_time")
    return (
        conv.join(moved, on="j", how="left", maintain_order="left")
        .with_columns(r=pl.coalesce("r_deep", "r"), click_time=pl.coalesce("t_deep", "click_time"))
        .drop("r_deep", "t_deep")
    )


def _anomaly_blocks(cfg: GeneratorConfig, m: int, n_dup: int) -> dict[str, tuple[int, int]]:
    if not cfg.anomalies:
        return {"orphan": (0, 0), "deleted": (0, 0), "dup": (0, 0)}
    return _block_sizes(m, [("orphan", 0.005), ("deleted", 0.02), ("dup", (n_dup // 2) / m if m else 0)])


def _boundary_clicks(cfg: GeneratorConfig, conv: pl.DataFrame, camps: pl.DataFrame, n_stream: int,
                     n_bnd_conv: int) -> pl.DataFrame:
    """Clicks exactly at ``conv_time - 30 days`` (inside the inclusive lookback) and one second
    earlier (outside), for a few counted conversions (D2)."""
    chosen = (
        conv.filter(~pl.col("orphan") & (pl.col("deleted") == 0))
        .with_columns(order=hash64(pl.col("j"), stream_key(cfg.seed, "boundary")))
        .sort(~pl.col("sparse"), "order")
        .head(n_bnd_conv)
        .select("cidx", "conv_time")
    )
    bnd = pl.concat([
        chosen.with_columns(click_time=pl.col("conv_time") - JOURNEY_LOOKBACK_SECONDS),
        chosen.with_columns(click_time=pl.col("conv_time") - JOURNEY_LOOKBACK_SECONDS - 1),
    ])
    return bnd.select(
        r=n_stream + pl.int_range(pl.len(), dtype=pl.Int64),
        cidx=pl.col("cidx"), kind=pl.lit(camps.get_column("kind")).gather(pl.col("cidx")),
        click_time=pl.col("click_time"),
    )


def _with_duplicates(cfg: GeneratorConfig, clicks: pl.DataFrame, conv: pl.DataFrame | None, row_of: pl.Series,
                     n_dup: int, n_stream: int) -> pl.DataFrame:
    """``clicks`` plus exact copies of a few rows (D15), some of them converting clicks."""
    if conv is not None:
        dup_r = conv.filter(pl.col("dup") & ~pl.col("orphan")).sort("j").get_column("r").head(n_dup // 2)
    else:
        dup_r = pl.Series("r", [], pl.Int64)
    rand = pl.select(below(pl.int_range(n_dup - dup_r.len()), stream_key(cfg.seed, "dup-rows"), n_stream)).to_series()
    dup_rows = row_of.gather(pl.concat([dup_r, rand.alias("r")]).cast(pl.Int64))
    return pl.concat([clicks, clicks.select(pl.all().gather(dup_rows))])


def clicks_and_conversions(cfg: GeneratorConfig, plan: Plan) -> tuple[pl.DataFrame, pl.DataFrame]:
    s = cfg.seed
    n_clicks, m = cfg.n_clicks, cfg.n_conversions
    n_dup = min(200, max(4, n_clicks // 5_000)) if cfg.anomalies and n_clicks >= 100 else 0
    n_bnd_conv = 3 if m >= 20 else 0
    n_stream = n_clicks - n_dup - 2 * n_bnd_conv
    allocate_clicks(cfg, plan, n_stream)
    camps = _campaign_frame(cfg, plan)
    stream = _stream_clicks(cfg, camps) if n_stream else None

    # --- conversions: converting click row r, conv_time
    if m:
        conv = _conversions(cfg, stream, m)
        blocks = _anomaly_blocks(cfg, m, n_dup)
        conv = conv.with_columns(
            anomaly=permutation(m, stream_key(s, "anomaly")),
            zero_payout=permutation(m, stream_key(s, "zero-payout")) < max(1, m // 100),
        )
        conv = conv.with_columns(
            orphan=_in_block(pl.col("anomaly"), blocks["orphan"]),
            deleted=_in_block(pl.col("anomaly"), blocks["deleted"]).cast(pl.Int64),
            dup=_in_block(pl.col("anomaly"), blocks["dup"]),
        )
    else:
        conv = None

    parts = [stream] if stream is not None else []
    if n_bnd_conv:
        parts.append(_boundary_clicks(cfg, conv, camps, n_stream, n_bnd_conv))
    if not parts:
        return table_frame(tables.clicks, []), table_frame(tables.conversion_logs, [])
    clicks = pl.concat(parts, how="vertical").sort("click_time", "r")
    row_of = clicks.select(pl.col("r").arg_sort()).to_series()  # r -> row (r is a permutation)

    # --- click ids: increasing with click_time, a few skipped (purged) ids
    gap = (uniform(pl.col("r"), stream_key(s, "id-gap")) < 0.01) & (pl.int_range(pl.len()) > 0)
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
            click_cpc=decimal_units(pl.col("cpc_units"), 7),
            click_payout=decimal_units(pl.col("payout_units"), 11),
            click_alp=pl.lit(0, pl.Int64), rotator_id=pl.lit(0, pl.Int64), rule_id=pl.lit(0, pl.Int64),
        )
        .select(list(table_schema(tables.clicks)))
        .collect()
    )

    if n_dup:
        clicks = _with_duplicates(cfg, clicks, conv, row_of, n_dup, n_stream)

    clicks_frame = table_frame(tables.clicks, clicks)
    if conv is None:
        return clicks_frame, table_frame(tables.conversion_logs, [])
    return clicks_frame, _conversion_frame(cfg, conv, camps)


def _conversion_frame(cfg: GeneratorConfig, conv: pl.DataFrame, camps: pl.DataFrame) -> pl.DataFrame:
    s, j = cfg.seed, pl.col("j")
    conv = conv.with_columns(
        campaign_id=pl.lit(camps.get_column("campaign_id")).gather(pl.col("cidx")),
        user_id=pl.lit(camps.get_column("user_id")).gather(pl.col("cidx")),
    )
    u_px = uniform(j, stream_key(s, "pixel"))
    pixel = pl.when(u_px < 0.40).then(1).when(u_px < 0.65).then(2).when(u_px < 0.85).then(3).otherwise(0)
    # insertion order (conv_id): API / subid uploads (pixel 0) arrive up to 6 hours late
    lag = pl.when(pl.col("pixel_type") == 0).then(below(j, stream_key(s, "upload-lag"), 6 * HOUR)).otherwise(0)

    # revenue: 1.00000-150.00000 with 0, 2, 3 or 5 decimals; a few 0 (DECIMAL(11,5))
    decimals = pl.Series([0, 2, 2, 2, 3, 5], dtype=pl.Int64)
    q = pl.lit(10, pl.Int64).pow(5 - pl.lit(decimals).gather(below(j, stream_key(s, "payout-decimals"), 6)))
    payout = UNITS + (uniform(j, stream_key(s, "payout")).pow(2) * 14_900_000).floor().cast(pl.Int64)
    payout = pl.when(pl.col("zero_payout")).then(0).otherwise(pl.min_horizontal(round_units(payout, q), 150 * UNITS))

    delta = pl.col("conv_time") - pl.col("click_time")
    human = pl.format(
        "{} days, {} hours, {} minutes, {} seconds",
        delta // DAY, delta % DAY // HOUR, delta % HOUR // 60, delta % 60,
    )
    # personal data in a real install: documentation address ranges and a marked user agent
    hexes = pl.Series([f"{i:x}" for i in range(1, 4097)])
    ip = (
        pl.when(uniform(j, stream_key(s, "ipv6")) < 0.15)
        .then(pl.lit("2001:db8::") + pl.lit(hexes).gather(below(j, stream_key(s, "ip6"), 4096)))
        .otherwise(pl.lit("203.0.113.") + (1 + below(j, stream_key(s, "ip4"), 254)).cast(pl.String))
    )
    txn = uniform(j, stream_key(s, "txn")) < 0.3
    frame = (
        conv.lazy()
        .with_columns(pixel_type=pixel.cast(pl.Int64))
        .with_columns(insert_at=pl.col("conv_time") + lag)
        .sort("insert_at", "j")
        .with_columns(conv_id=pl.int_range(1, pl.len() + 1, dtype=pl.Int64))
        .with_columns(
            transaction_id=pl.when(txn).then(pl.format("SYN-{}-{}", pl.lit(s), pl.col("conv_id"))).otherwise(None),
            click_payout=decimal_units(payout, 11),
            time_difference=pl.when(pl.col("pixel_type") == 0).then(delta.cast(pl.String)).otherwise(human),
            ip=ip,
            user_agent=pl.format("Mozilla/5.0 (SyntheticAgent {})", 1 + below(j, stream_key(s, "ua"), 500)),
        )
        .collect()
    )
    return table_frame(tables.conversion_logs, frame)
