"""dptlib.evaluation.stats over several training runs: the crossed interval by hand, its coverage by simulation,
the verdict rules, Holm's adjustment and the pairing of runs and items."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from dptlib.evaluation import stats


def test_crossed_interval_matches_the_two_way_formula():
    cells = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 5.0]])  # 2 runs x 3 clusters
    got = stats.crossed_interval(cells)
    # by hand: run means 2, 3 -> variance 0.5, /2 = 0.25; cluster means 1.5, 2, 4 -> variance 1.75, /3
    # residual: cells - run mean - cluster mean + 2.5 = [[0, .5, -.5], [0, -.5, .5]]; SS = 1, / (1*2) / 6
    v_runs, v_items, v_resid = 0.25, 1.75 / 3, 1 / 2 / 6
    assert (got["v_runs"], got["v_items"], got["v_resid"]) == pytest.approx((v_runs, v_items, v_resid))
    variance = v_runs + v_items - v_resid
    df = variance**2 / (v_runs**2 / 1 + v_items**2 / 2 + v_resid**2 / 2)
    q = scipy_stats.t.ppf(0.975, df)
    assert got["mean"] == pytest.approx(2.5)
    assert got["se"] == pytest.approx(math.sqrt(variance))
    assert (got["low"], got["high"]) == pytest.approx((2.5 - q * math.sqrt(variance), 2.5 + q * math.sqrt(variance)))
    assert got["p_value"] == pytest.approx(2 * scipy_stats.t.sf(2.5 / math.sqrt(variance), df))


def test_one_run_leaves_the_run_part_out():
    cells = np.array([[0.0, 1.0, 1.0, 0.0]])
    got = stats.crossed_interval(cells)
    assert got["v_runs"] == 0 and got["v_resid"] == 0
    assert got["df"] == pytest.approx(3)
    assert got["se"] == pytest.approx(np.std([0, 1, 1, 0], ddof=1) / 2)


def simulate(rng, runs, clusters, per_cluster, run_sd, cluster_sd=0.15, effect=0.05):
    """Paired 0/1 outcomes of two methods: the method's success rate moves by ``effect`` plus a
    run effect (sd ``run_sd``), both methods share each cluster's difficulty. Returns the (R, C)
    cell means of the differences and the true mean difference."""
    run_effect = rng.normal(0, run_sd, runs)[:, None, None]
    difficulty = rng.normal(0, cluster_sd, clusters)[None, :, None]
    base = rng.random((runs, clusters, per_cluster)) < 0.5 + difficulty - effect / 2
    own = rng.random((runs, clusters, per_cluster)) < 0.5 + difficulty + effect / 2 + run_effect
    return (own.astype(float) - base).mean(axis=2), effect


def coverage(run_sd, repeats=400, runs=5, clusters=100, per_cluster=2, seed=0):
    """How often each interval covers the true difference: the crossed t interval, the crossed
    bootstrap's percentile interval, and the cluster bootstrap of test items alone (runs pooled)."""
    rng = np.random.default_rng(seed)
    hits = {"crossed": 0, "bootstrap": 0, "items only": 0}
    for k in range(repeats):
        cells, truth = simulate(rng, runs, clusters, per_cluster, run_sd)
        got = stats.crossed_interval(cells)
        hits["crossed"] += got["low"] <= truth <= got["high"]
        low, high = stats.crossed_bootstrap(cells, n_resamples=1000, seed=k)
        hits["bootstrap"] += low <= truth <= high
        pooled = cells.mean(axis=0)  # the items-only interval: what a single-run analysis reports
        means = rng.multinomial(clusters, np.full(clusters, 1 / clusters), size=1000) @ pooled / clusters
        low, high = np.quantile(means, [0.025, 0.975])
        hits["items only"] += low <= truth <= high
    return {name: count / repeats for name, count in hits.items()}


def test_the_seed_aware_interval_covers_95_percent_where_items_only_falls_short():
    # runs differ (sd 0.08 of the success rate, about what a training seed moved REC here): the
    # crossed interval covers about 95 %, the test-items-only interval far less
    found = coverage(run_sd=0.08)
    assert 0.92 <= found["crossed"] <= 0.985, found
    assert found["items only"] < 0.75, found
    # runs do not differ: the crossed interval stays honest (conservative, not anti-conservative)
    found = coverage(run_sd=0.0, repeats=200)
    assert 0.93 <= found["crossed"] <= 1.0, found
    assert found["items only"] >= 0.9, found


def runs_frame(values: dict[int, list[float]], prompts_per_run: int = 3, seeds=(0, 1)) -> pd.DataFrame:
    """Rows (run, prompt, seed, score) from per-run lists of length prompts x seeds."""
    rows = []
    for run, scores in values.items():
        items = [(p, s) for p in range(prompts_per_run) for s in seeds]
        rows += [{"run": run, "prompt": f"p{p}", "seed": s, "score": v} for (p, s), v in zip(items, scores)]
    return pd.DataFrame(rows)


def test_seed_paired_difference_pairs_runs_and_items_and_reports_each_run():
    base = runs_frame({0: [0, 0, 1, 1, 0, 0], 1: [0, 1, 1, 1, 0, 0]})
    own = runs_frame({0: [1, 0, 1, 1, 1, 0], 1: [0, 1, 1, 0, 0, 0]})
    got = stats.seed_paired_difference(base, own, "score")
    assert got["per_run"] == pytest.approx([2 / 6, -1 / 6])
    assert got["difference"] == pytest.approx(1 / 12)
    assert (got["runs_positive"], got["runs_negative"], got["n_runs"], got["n_clusters"], got["n"]) == (1, 1, 2, 3, 12)
    # the rows' order does not matter
    shuffled = stats.seed_paired_difference(base.sample(frac=1, random_state=1), own.sample(frac=1, random_state=2), "score")
    assert shuffled["low"] == pytest.approx(got["low"]) and shuffled["high"] == pytest.approx(got["high"])


def test_an_untrained_baseline_pairs_with_every_run():
    base = runs_frame({0: [0, 0, 1, 1, 0, 0]}).drop(columns="run")
    own = runs_frame({3: [1, 0, 1, 1, 1, 0], 4: [0, 1, 1, 1, 0, 0]})
    got = stats.seed_paired_difference(base, own, "score")
    assert got["runs"] == [3, 4]
    assert got["per_run"] == pytest.approx([2 / 6, 1 / 6])


def test_seed_paired_difference_refuses_unpaired_data():
    base = runs_frame({0: [0] * 6, 1: [0] * 6})
    own = runs_frame({0: [1] * 6, 2: [1] * 6})
    with pytest.raises(ValueError, match="lacks"):
        stats.seed_paired_difference(base, own, "score")
    with pytest.raises(ValueError, match="interval"):
        stats.seed_paired_difference(base, base, "score", interval="percentile")


def result(low, high, positive, negative, runs=5, p=0.01):
    return dict(low=low, high=high, runs_positive=positive, runs_negative=negative, n_runs=runs, p_value=p)


@pytest.mark.parametrize("found, sign, expected", [
    (result(1, 5, 4, 1), +1, "holds"),
    (result(1, 5, 3, 2), +1, "inconclusive"),  # the interval clears 0 but only 3 of 5 seeds agree
    (result(-5, -1, 0, 5), +1, "contradicted"),
    (result(-5, -1, 0, 5), -1, "holds"),
    (result(-1, 5, 4, 1), +1, "inconclusive"),
    (result(1, 5, 1, 0, runs=1), +1, "one run"),
    (result(1, 5, 2, 0, runs=2), +1, "2 runs"),
    (result(1, 5, 3, 0, runs=3), +1, "holds"),
    (result(1, 5, 2, 1, runs=3), +1, "inconclusive"),  # 3 runs: all must agree
])
def test_seed_verdict_rules(found, sign, expected):
    assert stats.seed_verdict(found, sign) == expected


def test_seed_verdict_with_an_adjusted_p_and_a_selected_setting():
    found = result(1, 5, 5, 0, p=0.02)
    assert stats.seed_verdict(found, +1) == "holds"
    assert stats.seed_verdict(found, +1, p_adjusted=0.06) == "inconclusive"
    assert stats.seed_verdict(found, +1, selected=True) == "selected on these images"


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> non-decreasing 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([0.2]) == pytest.approx([0.2])


@pytest.mark.parametrize("toy, paper, differ", [(5.0, 5.3, False), (-55.3, -8.2, True), (0.5, 5.3, True), (-2.0, 4.0, True),
                                                (2.0, 5.0, False)])
def test_sizes_differ(toy, paper, differ):
    assert stats.sizes_differ(toy, paper) is differ


def test_equal_margins_with_differing_cells_do_not_give_a_zero_width_interval():
    cells = np.array([[1.0, -1.0], [-1.0, 1.0]])  # every run mean and cluster mean is 0, the cells are not
    got = stats.crossed_interval(cells)
    assert got["se"] > 0 and got["low"] < 0 < got["high"]


def test_a_trained_baseline_of_one_labelled_run_pairs_only_with_that_run():
    base = runs_frame({0: [0] * 6})
    own = runs_frame({0: [1] * 6, 1: [1] * 6})
    with pytest.raises(ValueError, match="lacks"):
        stats.seed_paired_difference(base, own, "score")
