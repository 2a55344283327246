"""The Markov removal-effect maths (docs/markov.md): the worked example as fractions, the removal
effects against DP6's reference implementation (``marketing-attribution-models``, import ``mam``),
order 2 against an independent construction, the credit split against a plain-Python split."""

import ast
import random
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mam.models.markov import MarkovModel

from attribution_pipeline.core import markov_chain, markov_credit
from attribution_pipeline.core.markov_chain import CONVERSION, NULL, OTHER, START, fit_markov
from attribution_pipeline.core.markov_credit import credit_shares, split_credit

REPO = Path(__file__).resolve().parents[1]


def paths_frame(paths: list[tuple[list[int], bool]], weights: list[int] | None = None) -> pl.DataFrame:
    """One row per (path, step) of ``paths`` (channels, converted)."""
    rows = [{"path_id": i, "step": s, "channel": c, "converted": conv, "weight": (weights or [1] * len(paths))[i]}
            for i, (channels, conv) in enumerate(paths) for s, c in enumerate(channels)]
    return pl.DataFrame(rows, schema={"path_id": pl.Int64, "step": pl.Int64, "channel": pl.Int64,
                                      "converted": pl.Boolean, "weight": pl.Int64})


EXAMPLE = [([1, 2], True), ([1], False), ([2, 2, 1], True), ([3], False)]


def by_channel(fit, column: str) -> dict[int, float]:
    return dict(zip(fit.channels["channel"], fit.channels[column]))


def assert_fractions(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k] == pytest.approx(float(v), abs=1e-12), k


# ------------------------------------------------------------------------------------------
# The worked example of docs/markov.md
# ------------------------------------------------------------------------------------------


def test_worked_example_order_1_has_the_numbers_of_the_docs():
    fit = fit_markov(paths_frame(EXAMPLE).drop("weight"))
    counts = {(r["from_channel"], r["to_channel"]): r["count"] for r in fit.transitions.iter_rows(named=True)}
    assert counts == {(START, 1): 2, (START, 2): 1, (START, 3): 1, (1, 2): 1, (1, CONVERSION): 1, (1, NULL): 1,
                      (2, 1): 1, (2, CONVERSION): 1, (3, NULL): 1}
    assert fit.transitions["from_prev"].null_count() == fit.transitions.height
    out = {}
    for (i, j), n in counts.items():
        out.setdefault(i, {})[j] = n
    probabilities = {(i, j): F(int(n)) / int(sum(row.values())) for i, row in out.items() for j, n in row.items()}
    assert probabilities[(START, 1)] == F(1, 2) and probabilities[(START, 2)] == F(1, 4)
    assert probabilities[(1, 2)] == probabilities[(1, CONVERSION)] == probabilities[(1, NULL)] == F(1, 3)
    assert probabilities[(2, 1)] == probabilities[(2, CONVERSION)] == F(1, 2) and probabilities[(3, NULL)] == 1
    assert fit.conversion_probability == pytest.approx(0.5, abs=1e-12)
    assert_fractions(by_channel(fit, "removal_effect"), {1: F(3, 4), 2: F(2, 3), 3: 0})
    assert_fractions(by_channel(fit, "share"), {1: F(9, 17), 2: F(8, 17), 3: 0})
    assert (fit.paths_used, fit.conversions_used) == (4.0, 2.0)
    assert by_channel(fit, "touches") == {1: 3.0, 2: 3.0, 3: 1.0}

    touches = pl.DataFrame({"conv_id": [3, 3, 3, 9, 9], "position": [0, 1, 2, 0, 1], "channel": [2, 2, 1, 3, 3]})
    split = split_credit(touches, credit_shares(fit))
    credits = split.credits["credit"].to_list()
    for got, expected in zip(credits, [F(4, 17), F(4, 17), F(9, 17), F(1, 2), F(1, 2)]):
        assert got == pytest.approx(float(expected), abs=1e-12)
    assert (split.fallback_conversions, split.unknown_touches) == (1, 0)


def test_worked_example_with_self_loops_and_in_order_2():
    looped = fit_markov(paths_frame(EXAMPLE), self_loops=True)
    assert looped.transitions.filter((pl.col("from_channel") == 2) & (pl.col("to_channel") == 2))["count"].to_list() == [1]
    assert_fractions(by_channel(looped, "share"), {1: F(9, 17), 2: F(8, 17), 3: 0})
    order2 = fit_markov(paths_frame(EXAMPLE), order=2)
    states = set(order2.transitions.select("from_prev", "from_channel").iter_rows())
    assert states == {(None, START), (START, 1), (START, 2), (START, 3), (1, 2), (2, 1)}
    assert order2.conversion_probability == pytest.approx(0.5, abs=1e-12)
    assert_fractions(by_channel(order2, "removal_effect"), {1: 1, 2: 1, 3: 0})
    assert_fractions(by_channel(order2, "share"), {1: F(1, 2), 2: F(1, 2), 3: 0})


def test_the_docs_show_the_numbers_the_tests_check():
    text = (REPO / "docs" / "markov.md").read_text()
    example = text[text.index("## Worked example"):text.index("## The reference")]
    for number in ("**3/4**", "**2/3**", "**9/17**", "**8/17**", "**4/17**", "**1/2**", "x1 = 3/5", "x2 = 4/5"):
        assert number in example, number


# ------------------------------------------------------------------------------------------
# Against DP6's reference implementation
# ------------------------------------------------------------------------------------------


def reference_journeys(paths: list[tuple[list[str], bool]], weights: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"channels": [c for c, _ in paths], "has_conversion": [v for _, v in paths],
                         "weight": weights, "journey_id": list(range(len(paths))),
                         "conversion_value": [1.0] * len(paths)})


def reference_fit(paths, weights, self_loops: bool) -> tuple[float, dict[str, float], dict[str, float]]:
    """P(conversion), removal effects and shares of DP6's MarkovModel (channel names as str)."""
    journeys = reference_journeys([([str(c) for c in chs], v) for chs, v in paths], weights)
    model = MarkovModel(transition_to_same_state=self_loops)
    shares = model._compute_markov(journeys)
    matrix, _, _ = model._build_transition_matrix(journeys)
    removal = dict(zip(model.removal_effect_df.index, model.removal_effect_df["removal_effect"]))
    return model._calc_total_conversion(matrix), removal, shares


def random_paths(seed: int, n: int, channels: int, longest: int = 7) -> tuple[list, list[int]]:
    rng = random.Random(seed)
    paths = [([rng.randrange(channels) for _ in range(rng.randint(1, longest))], rng.random() < 0.35) for _ in range(n)]
    return paths, [rng.randint(1, 3) for _ in range(n)]


PATH_SETS = {
    # loops: repeated channels, consecutive and not
    "loops": ([([1, 1, 2], True), ([2, 1, 2, 1], False), ([3, 3, 3], True), ([1, 3, 1, 1], True), ([2, 2], False),
               ([3, 1, 2, 3], True), ([1], False)], [1, 2, 1, 1, 3, 1, 2]),
    # 7 and 8 are only on paths that did not convert; 7 leads only to (null), 8 into 2, which converts
    "non_converting_channel": ([([1, 7], False), ([2, 7, 7], False), ([1, 2], True), ([2], True), ([7], False),
                                ([2, 1, 1], True), ([8, 2], False)], [1] * 7),
    "random": random_paths(1, 300, 6),
    "random_many_channels": random_paths(2, 500, 12, longest=10),
}


@pytest.mark.parametrize("self_loops", [False, True])
@pytest.mark.parametrize("name", sorted(PATH_SETS))
def test_removal_effects_equal_the_reference(name, self_loops):
    paths, weights = PATH_SETS[name]
    fit = fit_markov(paths_frame(paths, weights), self_loops=self_loops)
    p_conv, removal, shares = reference_fit(paths, weights, self_loops)
    assert fit.conversion_probability == pytest.approx(p_conv, rel=1e-12, abs=1e-15)
    assert {str(k): v for k, v in by_channel(fit, "removal_effect").items()} == pytest.approx(removal, abs=1e-12)
    assert {str(k): v for k, v in by_channel(fit, "share").items()} == pytest.approx(shares, abs=1e-12)
    if name == "non_converting_channel":
        assert by_channel(fit, "removal_effect")[7] == 0.0 < by_channel(fit, "removal_effect")[8]


def collapsed(channels: list[int]) -> list[int]:
    return [c for i, c in enumerate(channels) if i == 0 or c != channels[i - 1]]


def grouped_by_hand(paths, weights, limit: int) -> dict[int, int]:
    touches: dict[int, int] = {}
    for (channels, _), w in zip(paths, weights):
        for c in channels:
            touches[c] = touches.get(c, 0) + w
    ranked = sorted(touches, key=lambda c: (-touches[c], c))
    return {c: (c if len(ranked) <= limit or i < limit - 1 else OTHER) for i, c in enumerate(ranked)}


def reference_order_2(paths, weights, self_loops: bool, limit: int) -> tuple[float, dict[int, float]]:
    """Order 2 by hand: the pair states as channel names, DP6's matrix of them, and each channel
    removed by redirecting the columns of every pair that contains it to (null)."""
    model_channel = grouped_by_hand(paths, weights, limit)
    pair_paths = []
    for channels, converted in paths:
        channels = [model_channel[c] for c in channels]
        channels = channels if self_loops else collapsed(channels)
        previous = ["start"] + [str(c) for c in channels[:-1]]
        pair_paths.append(([f"{p}>{c}" for p, c in zip(previous, channels)], converted))
    model = MarkovModel(transition_to_same_state=self_loops)
    matrix, _, names = model._build_transition_matrix(reference_journeys(pair_paths, weights))
    p_conv = model._calc_total_conversion(matrix)
    removal = {}
    for channel in set(model_channel.values()):
        columns = [i for i, name in enumerate(names) if str(channel) in name.split(">")]
        removed = matrix.copy()
        removed[:, -2] += removed[:, columns].sum(axis=1)
        removed[:, columns] = 0.0
        removal[channel] = 1.0 - model._calc_total_conversion(removed) / p_conv
    return p_conv, removal


@pytest.mark.parametrize("limit", [50, 4])
@pytest.mark.parametrize("self_loops", [False, True])
@pytest.mark.parametrize("name", sorted(PATH_SETS))
def test_order_2_equals_the_pair_states_fed_to_the_reference(name, self_loops, limit):
    paths, weights = PATH_SETS[name]
    fit = fit_markov(paths_frame(paths, weights), order=2, self_loops=self_loops, max_channels=limit)
    p_conv, removal = reference_order_2(paths, weights, self_loops, limit)
    assert fit.conversion_probability == pytest.approx(p_conv, rel=1e-12)
    assert by_channel(fit, "removal_effect") == pytest.approx(removal, abs=1e-12)
    total = sum(removal.values())
    assert by_channel(fit, "share") == pytest.approx({c: v / total for c, v in removal.items()}, abs=1e-12)
    assert dict(fit.channel_map.iter_rows()) == grouped_by_hand(paths, weights, limit)


# ------------------------------------------------------------------------------------------
# Edge cases of the fit
# ------------------------------------------------------------------------------------------


def test_other_keeps_the_most_touched_channels_and_breaks_ties_by_the_smaller_id():
    paths = [([5, 5, 5], True), ([4, 4], False), ([3, 3], True), ([2], False), ([1], True), ([6, 1], False)]
    fit = fit_markov(paths_frame(paths), order=2, max_channels=3)
    # touches: 5 x3, 4 x2, 3 x2, 1 x2, 2 x1, 6 x1: keep 5 and the smallest of the ties, 1
    assert dict(fit.channel_map.iter_rows()) == {1: 1, 2: OTHER, 3: OTHER, 4: OTHER, 5: 5, 6: OTHER}
    assert fit.channels["channel"].to_list() == [OTHER, 1, 5]
    assert by_channel(fit, "touches") == {OTHER: 6.0, 1: 2.0, 5: 3.0}
    # order 1 groups only when asked; 60 channels in order 2 become 49 + OTHER
    assert fit_markov(paths_frame(paths)).channels.height == 6
    many = [([c, (c + 1) % 60], c % 3 == 0) for c in range(60)]
    assert fit_markov(paths_frame(many), order=2).channels.height == 50


def test_no_conversion_gives_zero_effects_and_shares():
    fit = fit_markov(paths_frame([([1, 2], False), ([2], False)]))
    assert fit.conversion_probability == 0.0
    assert fit.channels["removal_effect"].to_list() == [0.0, 0.0] == fit.channels["share"].to_list()
    single = fit_markov(paths_frame([([4, 4], True), ([4], False)]), order=2)
    assert by_channel(single, "removal_effect") == {4: 1.0} and by_channel(single, "share") == {4: 1.0}


def test_the_fit_is_deterministic_whatever_the_row_order():
    paths, weights = PATH_SETS["random"]
    frame = paths_frame(paths, weights)
    for order in (1, 2):
        fits = [fit_markov(f, order=order) for f in (frame, frame.sample(fraction=1.0, shuffle=True, seed=3))]
        for name in ("channels", "channel_map", "transitions"):
            assert getattr(fits[0], name).equals(getattr(fits[1], name)), name
        assert fits[0].channels.schema == pl.Schema(markov_chain.CHANNELS_SCHEMA)
        assert fits[0].transitions.schema == pl.Schema(markov_chain.TRANSITIONS_SCHEMA)
        assert fits[0].conversion_probability == fits[1].conversion_probability


def test_empty_paths_and_bad_input():
    empty = fit_markov(paths_frame([]))
    assert empty.channels.height == 0 and empty.conversion_probability == 0.0 and empty.paths_used == 0.0
    good = paths_frame(EXAMPLE)
    for bad, message in [
        (good.with_columns(channel=pl.lit(-1, pl.Int64)), "channels >= 0"),
        (good.with_columns(channel=pl.lit(None, pl.Int64)), "channels >= 0"),
        (good.with_columns(weight=pl.lit(0)), "weights > 0"),
        (good.drop("converted"), "lack the columns"),
        (good.with_columns(channel=pl.col("channel").cast(pl.Utf8)), "integer id"),
    ]:
        with pytest.raises(ValueError, match=message):
            fit_markov(bad)
    with pytest.raises(ValueError, match="order"):
        fit_markov(good, order=3)


# ------------------------------------------------------------------------------------------
# The credit split
# ------------------------------------------------------------------------------------------


def split_by_hand(touches: list[dict], shares: dict) -> list[float]:
    """Each touch's credit, by the formula of docs/markov.md, one conversion at a time."""
    journeys: dict[tuple, list[dict]] = {}
    for t in touches:
        journeys.setdefault((t["model_id"], t["conv_id"]), []).append(t)
    credits = []
    for t in touches:
        journey = journeys[(t["model_id"], t["conv_id"])]
        model = {u["channel"]: shares.get((t["model_id"], u["channel"]), (u["channel"], 0.0)) for u in journey}
        total = sum(dict(model.values()).values())
        if total == 0:
            credits.append(1 / len(journey))
            continue
        mine, share = model[t["channel"]]
        n_c = sum(1 for u in journey if model[u["channel"]][0] == mine)
        credits.append(share / n_c / total)
    return credits


def test_the_split_equals_a_split_by_hand_in_every_row_order():
    rng = random.Random(5)
    rows = []
    for model_id in (1, 2):
        for conv_id in range(300):
            rows += [{"model_id": model_id, "conv_id": conv_id, "position": p, "channel": rng.randrange(9),
                      "click_id": rng.randrange(10**6)} for p in range(rng.randint(1, 8))]
    touches = pl.DataFrame(rows)
    # model 1: channels 0-5 (5 and 4 grouped into OTHER, 3 with share 0); 6-8 unknown; model 2: 0 and 1 only
    share_rows = [(1, 0, 0, 0.3), (1, 1, 1, 0.2), (1, 2, 2, 0.1), (1, 3, 3, 0.0), (1, 4, OTHER, 0.4),
                  (1, 5, OTHER, 0.4), (2, 0, 0, 0.0), (2, 1, 1, 1.0)]
    shares = pl.DataFrame(share_rows, schema=["model_id", "channel", "model_channel", "share"], orient="row")
    expected = split_by_hand(rows, {(m, c): (mc, s) for m, c, mc, s in share_rows})
    layouts = {"journey order": touches, "models interleaved": touches.sort("conv_id", "position", "model_id"),
               "shuffled": touches.sample(fraction=1.0, shuffle=True, seed=2)}
    for layout, frame in layouts.items():
        # the three ways of numbering the conversions: one pass, sorted by key first, a window
        order, _ = markov_credit._numbered(frame, ["model_id"])
        assert (order is not None) == (layout == "models interleaved")
        split = split_credit(frame, shares, key=["model_id"])
        assert split.credits.select(frame.columns).equals(frame)  # input order and columns kept
        got = split.credits.join(touches.with_columns(expected=pl.Series(expected)), on=touches.columns)
        assert got.height == touches.height
        assert np.allclose(got["credit"].to_numpy(), got["expected"].to_numpy(), rtol=0, atol=1e-12)
        sums = split.credits.group_by("model_id", "conv_id").agg(pl.col("credit").sum())["credit"]
        assert np.allclose(sums.to_numpy(), 1.0, rtol=0, atol=1e-12)
        unknown = touches.filter((pl.col("model_id") == 1) & (pl.col("channel") >= 6)).height \
            + touches.filter((pl.col("model_id") == 2) & (pl.col("channel") >= 2)).height
        assert split.unknown_touches == unknown
        journeys: dict[tuple[int, int], float] = {}
        for r in rows:
            share = {(m, c): s for m, c, _, s in share_rows}.get((r["model_id"], r["channel"]), 0.0)
            journeys[(r["model_id"], r["conv_id"])] = journeys.get((r["model_id"], r["conv_id"]), 0.0) + share
        zero = sum(1 for total in journeys.values() if total == 0)
        assert split.fallback_conversions == zero > 0


def test_credit_shares_give_grouped_channels_the_share_of_other():
    paths = [([5, 5, 5], True), ([4, 4], False), ([3, 3], True), ([2], False), ([1], True), ([6, 1], False)]
    fit = fit_markov(paths_frame(paths), order=2, max_channels=3)
    shares = credit_shares(fit)
    assert shares.schema == pl.Schema(markov_credit.SHARES_SCHEMA)
    other = by_channel(fit, "share")[OTHER]
    assert shares.filter(pl.col("model_channel") == OTHER)["share"].to_list() == [other] * 4
    touches = pl.DataFrame({"conv_id": [1, 1, 1], "position": [0, 1, 2], "channel": [3, 4, 1]})
    credits = split_credit(touches, shares).credits["credit"].to_list()
    total = other + by_channel(fit, "share")[1]
    assert credits == pytest.approx([other / 2 / total, other / 2 / total, by_channel(fit, "share")[1] / total])


def test_split_edge_cases():
    shares = pl.DataFrame({"channel": [1, 2], "share": [0.5, 0.5]})
    empty = split_credit(pl.DataFrame(schema={"conv_id": pl.Int64, "position": pl.Int64, "channel": pl.Int64}), shares)
    assert empty.credits.height == 0 and empty.credits.schema["credit"] == pl.Float64
    no_fit = split_credit(pl.DataFrame({"conv_id": [1, 1], "position": [0, 1], "channel": [1, 2]}),
                          shares.clear())
    assert no_fit.credits["credit"].to_list() == [0.5, 0.5] and no_fit.fallback_conversions == 1
    with pytest.raises(ValueError, match="more than one row"):
        split_credit(pl.DataFrame({"conv_id": [1], "position": [0], "channel": [1]}), pl.concat([shares, shares]))
    with pytest.raises(ValueError, match=">= 0"):
        split_credit(pl.DataFrame({"conv_id": [1], "position": [0], "channel": [1]}),
                     shares.with_columns(share=pl.lit(-0.1)))
    with pytest.raises(ValueError, match="lack the columns"):
        split_credit(pl.DataFrame({"conv_id": [1], "channel": [1]}), shares)


# ------------------------------------------------------------------------------------------
# Pure, whole-frame code
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [markov_chain, markov_credit])
def test_the_markov_modules_have_no_python_loops_over_rows(module):
    """No loop statement nor comprehension; the only bridge out of Polars is ``to_numpy`` (to NumPy's
    linear algebra and bincounts)."""
    tree = ast.parse(Path(module.__file__).read_text())
    loops = (ast.For, ast.While, ast.AsyncFor, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
    row_wise = {"map_elements", "map_rows", "iter_rows", "to_dicts", "rows", "row", "apply", "to_pandas",
                "iter_slices", "to_list", "item"}
    offenders = [f"{n.lineno}: {type(n).__name__}" for n in ast.walk(tree) if isinstance(n, loops)]
    offenders += [f"{n.lineno}: .{n.attr}" for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in row_wise]
    assert offenders == []
