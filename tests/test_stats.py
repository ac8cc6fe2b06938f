"""dptlib.evaluation.stats: intervals, paired tests, power and the comparison table, against hand-computed values."""

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from dptlib.evaluation import stats


def wilson_by_hand(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval from its formula: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


@pytest.mark.parametrize("successes, n", [(8, 10), (0, 20)])
def test_wilson_interval_matches_the_formula(successes, n):
    low, high = stats.wilson_interval(successes, n)
    expected_low, expected_high = wilson_by_hand(successes, n)
    assert low == pytest.approx(expected_low, abs=1e-6)
    assert high == pytest.approx(expected_high, abs=1e-6)
    if n == 10:  # 8/10: the textbook values
        assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_wilson_interval_of_nothing_is_nan():
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))


def test_mcnemar_p():
    a = np.zeros(30, dtype=bool)
    b = a.copy()
    b[:10] = True  # 10 discordant pairs, all in favour of b
    assert stats.mcnemar_p(a, b) == pytest.approx(2 * 0.5**10)
    assert stats.mcnemar_p(b, b) == 1.0  # no discordant pairs
    c = a.copy()
    c[10:20] = True  # 10 pairs favour b, 10 favour c
    assert stats.mcnemar_p(c, b) == pytest.approx(1.0)


def test_cluster_means_are_sorted_by_label():
    means = stats.cluster_means([1, 0, 1, 1, 0, 0], ["b", "a", "b", "c", "a", "c"])
    np.testing.assert_allclose(means, [0.0, 1.0, 0.5])
    with pytest.raises(ValueError):
        stats.cluster_means([1, 0], ["a"])


def test_bootstrap_interval_contains_the_true_mean():
    values = np.random.default_rng(1).normal(5.0, 2.0, size=2000)
    mean, low, high = stats.bootstrap_interval(values)
    assert mean == pytest.approx(values.mean())
    assert low < 5.0 < high
    assert 0.1 < high - low < 0.25  # about 2 * 1.96 * 2 / sqrt(2000) = 0.175


def test_bootstrap_interval_is_reproducible():
    values = np.random.default_rng(2).normal(size=100)  # continuous: 0/1 means would sit on a 1/100 grid
    assert stats.bootstrap_interval(values, seed=3) == stats.bootstrap_interval(values, seed=3)
    assert stats.bootstrap_interval(values, seed=3) != stats.bootstrap_interval(values, seed=4)


def test_cluster_bootstrap_is_wider_when_seeds_agree():
    # 40 prompts x 3 seeds; all seeds of a prompt share its outcome, so there are only 40 independent values
    prompt_outcome = np.random.default_rng(5).integers(0, 2, size=40)
    values = np.repeat(prompt_outcome, 3)
    clusters = np.repeat([f"prompt {i}" for i in range(40)], 3)
    _, low, high = stats.bootstrap_interval(values)
    mean, cluster_low, cluster_high = stats.bootstrap_interval(values, clusters)
    assert mean == pytest.approx(prompt_outcome.mean())
    assert cluster_high - cluster_low > 1.4 * (high - low)  # about sqrt(3) = 1.73 times wider


def test_bootstrap_interval_of_constant_data():
    assert stats.bootstrap_interval(np.full(12, 0.7)) == pytest.approx((0.7, 0.7, 0.7))
    assert stats.bootstrap_interval(np.ones(6), clusters=[0, 0, 1, 1, 2, 2]) == (1.0, 1.0, 1.0)


def test_paired_difference_of_identical_methods():
    a = np.random.default_rng(6).integers(0, 2, size=200)
    result = stats.paired_difference(a, a)
    assert result["difference"] == 0.0
    assert result["low"] <= 0.0 <= result["high"]
    assert result["p_value"] == 1.0
    assert result["n"] == 200


def test_paired_difference_detects_flipped_items():
    a = np.zeros(200, dtype=int)
    a[100:] = 1
    b = a.copy()
    b[:30] = 1  # 30 items flipped 0 -> 1
    clusters = np.repeat(np.arange(100), 2)  # 100 prompts x 2 seeds
    for groups in (None, clusters):
        result = stats.paired_difference(a, b, groups)
        assert result["difference"] == 0.15
        assert result["low"] > 0
        assert result["p_value"] == pytest.approx(2 * 0.5**30)
        assert result["test"] == "McNemar exact"


def test_paired_difference_of_continuous_values():
    rng = np.random.default_rng(7)
    a = rng.normal(0.30, 0.05, size=120)
    b = a + 0.01 + rng.normal(0, 0.002, size=120)
    result = stats.paired_difference(a, b, clusters=np.repeat(np.arange(40), 3))
    assert result["difference"] == pytest.approx(np.mean(b - a))
    assert 0 < result["low"] < result["difference"] < result["high"]
    assert result["p_value"] < 1e-6
    assert result["test"] != "McNemar exact"


def test_paired_difference_refuses_unaligned_inputs():
    with pytest.raises(ValueError):
        stats.paired_difference([0, 1, 1], [0, 1])


def test_minimum_detectable_difference_by_hand():
    z = 1.959964 + 0.841621  # z_{0.975} + z_{0.8}
    paired = stats.minimum_detectable_difference(400, discordant_rate=0.2)
    assert paired == pytest.approx(z * math.sqrt(0.2 / 400), rel=1e-5)  # 0.0627
    unpaired = stats.minimum_detectable_difference(400, p=0.3)
    assert unpaired == pytest.approx(z * math.sqrt(2 * 0.3 * 0.7 / 400), rel=1e-5)  # 0.0908
    assert paired < unpaired


@pytest.mark.parametrize("n, rate", [(400, 0.2), (123, 0.35), (1000, 0.05)])
def test_required_pairs_inverts_the_detectable_difference(n, rate):
    difference = stats.minimum_detectable_difference(n, discordant_rate=rate)
    assert abs(stats.required_pairs(difference, rate) - n) <= 1
    assert stats.required_pairs(difference * 2, rate) == pytest.approx(n / 4, abs=1)


def test_minimum_detectable_difference_needs_exactly_one_design():
    with pytest.raises(ValueError):
        stats.minimum_detectable_difference(100)
    with pytest.raises(ValueError):
        stats.minimum_detectable_difference(100, discordant_rate=0.2, p=0.5)


def small_scores() -> pd.DataFrame:
    """2 methods x 2 prompts x 2 seeds, one benchmark: base gets 1 of 4 right, new gets 3 of 4."""
    return pd.DataFrame({
        "method": ["base"] * 4 + ["new"] * 4,
        "benchmark": ["toy"] * 8,
        "prompt": ["p1", "p1", "p2", "p2"] * 2,
        "seed": [0, 1, 0, 1] * 2,
        "correct": [1, 0, 0, 0, 1, 1, 1, 0],
        "clip": [0.30, 0.20, 0.25, 0.25, 0.32, 0.22, 0.27, 0.29],
    })


def test_compare_to_baseline_by_hand():
    table = stats.compare_to_baseline(small_scores(), "correct", baseline="base")
    assert list(table.index) == [("toy", "base"), ("toy", "new")]
    assert list(table.columns) == ["n", "mean", "low", "high", "diff", "diff_low", "diff_high", "p"]
    base, new = table.loc[("toy", "base")], table.loc[("toy", "new")]
    assert (base["n"], new["n"]) == (4, 4)
    assert base["mean"] == pytest.approx(25.0)  # percent
    assert new["mean"] == pytest.approx(75.0)
    assert base[["diff", "diff_low", "diff_high", "p"]].isna().all()
    assert new["diff"] == pytest.approx(50.0)
    assert new["p"] == pytest.approx(0.5)  # McNemar: 2 pairs favour new, none favour base
    # per-prompt mean differences are 0.5 (p1) and 0.5 (p2): the cluster bootstrap is degenerate
    assert (new["diff_low"], new["diff_high"]) == pytest.approx((50.0, 50.0))
    # per-prompt means of base are 0.5 and 0: resampled means lie in [0, 50] %
    assert 0.0 <= base["low"] <= 25.0 <= base["high"] <= 50.0


def test_compare_to_baseline_keeps_continuous_units():
    table = stats.compare_to_baseline(small_scores(), "clip", baseline="base")
    assert table.loc[("toy", "base"), "mean"] == pytest.approx(0.25)
    assert table.loc[("toy", "new"), "diff"] == pytest.approx(0.025)  # (0.02 + 0.02 + 0.02 + 0.04) / 4


def test_compare_to_baseline_aligns_by_item_not_by_row_order():
    scores = small_scores()
    shuffled = scores.sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert not shuffled[["method", "prompt", "seed"]].equals(scores[["method", "prompt", "seed"]])
    for metric in ("correct", "clip"):
        expected = stats.compare_to_baseline(scores, metric, "base", methods=["base", "new"])
        pd.testing.assert_frame_equal(stats.compare_to_baseline(shuffled, metric, "base", methods=["base", "new"]),
                                      expected)


def test_compare_to_baseline_refuses_missing_and_duplicate_items():
    scores = small_scores()
    with pytest.raises(ValueError, match="lacks"):
        stats.compare_to_baseline(scores.drop(index=7), "correct", "base")
    with pytest.raises(ValueError, match="duplicate"):
        stats.compare_to_baseline(pd.concat([scores, scores.iloc[[5]]]), "correct", "base")


def test_formatting():
    assert stats.format_interval(32.24, 28.1, 36.44) == "32.2 [28.1, 36.4]"
    assert stats.format_difference(3.1, -0.4, 6.5, 0.0912) == "+3.1 [-0.4, +6.5] (p = 0.09)"
    assert stats.format_difference(3.1, 1.0, 6.5, 0.0004) == "+3.1 [+1.0, +6.5] (p < 0.001)"
    assert stats.format_difference(math.nan, math.nan, math.nan, math.nan) == "—"


def test_verdict():
    assert stats.verdict(0.5, 2.0) == "holds"
    assert stats.verdict(-2.0, -0.5) == "contradicted"
    assert stats.verdict(-0.5, 2.0) == "inconclusive"
    assert stats.verdict(-2.0, -0.5, expected_sign=-1) == "holds"
    assert stats.verdict(0.5, 2.0, expected_sign=-1) == "contradicted"


def test_compare_to_baseline_on_a_subset_of_the_baselines_items():
    """subsets=True: a method run on fewer items is paired with the baseline on those items only."""
    scores = small_scores().drop(index=[6, 7])  # "new" lacks prompt p2
    table = stats.compare_to_baseline(scores, "correct", "base", subsets=True)
    new = table.loc[("toy", "new")]
    assert new["n"] == 2 and new["mean"] == pytest.approx(100.0)
    assert new["diff"] == pytest.approx(50.0)  # base on p1: 1 of 2 right
    assert table.attrs["methods"] == ["base", "new"]


def test_tables_of_intervals_and_differences():
    from dptlib.experiments import report

    scores = pd.concat([small_scores(), small_scores().assign(benchmark="other")], ignore_index=True)
    table = stats.compare_to_baseline(scores, "correct", "base", methods=["new", "base"])
    means = report.interval_table(table, "benchmark")
    assert list(means.index) == ["new", "base"] and list(means.columns) == ["toy", "other"]
    assert means.loc["new", "toy"] == stats.format_interval(*table.loc[("toy", "new"), ["mean", "low", "high"]])
    differences = report.difference_table(table, "benchmark")
    assert differences.loc["base", "toy"] == "—" and differences.loc["new", "other"].startswith("+50.0")


def test_compare_pair_is_the_row_of_the_two_method_table():
    scores = small_scores()
    cell = scores["benchmark"].iloc[0]
    method = next(m for m in scores["method"].unique() if m != "base")
    row = stats.compare_pair(scores, "correct", "base", method, ("benchmark",), cell)
    chosen = scores[scores["method"].isin(["base", method]) & (scores["benchmark"] == cell)]
    expected = stats.compare_to_baseline(chosen, "correct", "base", methods=["base", method]).loc[(cell, method)]
    pd.testing.assert_series_equal(row, expected)
    assert row["diff"] == pytest.approx(expected["diff"]) and not math.isnan(row["diff"])
