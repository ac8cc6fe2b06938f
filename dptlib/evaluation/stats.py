"""Statistics for comparing generation methods: means, paired differences, intervals, power.

Design
------
*Paired.* Every method is run on the same prompts with the same seeds (the same initial noise), so
an item (prompt, seed) is graded once per method. Comparing two methods item by item removes the
variation between items (some prompts are easy for every method), which makes a paired comparison
much more sensitive than comparing two independent means.

*Clusters.* The seeds of one prompt are not independent draws: a prompt that is hard is hard for
all of its seeds. The unit that was sampled is the prompt, so intervals come from a *cluster
bootstrap*: resample prompts (with all their seeds) rather than single images. With ``k`` seeds per
prompt this is the bootstrap of the per-prompt means; it assumes roughly equal cluster sizes, which
holds here because every prompt is run with the same seeds. Treating images as independent would
give intervals that are too narrow.

*What is reported.* For each benchmark ("cell") and method: the mean with a 95 % percentile
bootstrap interval; for each method the paired difference to a baseline, its paired 95 % bootstrap
interval and a p-value (exact McNemar test for 0/1 outcomes, a t-test on per-prompt mean
differences otherwise); and, for planning, the smallest difference a sample size can detect.

The percentile bootstrap (not BCa) is used: it is the easiest to explain (the 2.5th and 97.5th
percentiles of the resampled means), and it never fails on nearly constant 0/1 data, where the
jackknife that BCa needs degenerates. With tens of prompts or more the two agree closely.

Low-level functions keep the units they are given (fractions for proportions);
``compare_to_baseline`` reports 0/1 metrics in percent.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95  # level of every interval
N_RESAMPLES = 10_000  # bootstrap resamples: the interval ends vary by well under 0.5 % between seeds
SEED = 0  # fixed default seed, so that every table is reproducible
ALPHA = 0.05  # two-sided significance level for power calculations
POWER = 0.8  # probability of detecting a true difference of the stated size


def is_binary(values) -> bool:
    """True when ``values`` (any array-like) are bools or contain only 0 and 1."""
    values = np.asarray(values)
    return values.dtype == bool or bool(np.isin(values, (0, 1)).all())


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval (low, high) of the proportion ``successes / n``, as fractions.

    Returns (nan, nan) when ``n`` is 0.
    """
    if n == 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def cluster_means(values, clusters) -> np.ndarray:
    """Mean of ``values`` within each cluster, shape (number of clusters,).

    ``values`` and ``clusters`` have shape (n,); ``clusters`` holds labels (e.g. prompt strings).
    The means are ordered by sorted cluster label, so the result does not depend on row order.
    """
    values, clusters = np.asarray(values, dtype=float), np.asarray(clusters)
    if values.shape != clusters.shape:
        raise ValueError(f"values {values.shape} and clusters {clusters.shape} differ in shape")
    return pd.Series(values).groupby(clusters, sort=True).mean().to_numpy()


def bootstrap_interval(values, clusters=None, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                       seed: int = SEED) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` (shape (n,)) and its percentile bootstrap interval.

    With ``clusters`` (labels, shape (n,)) this is the cluster bootstrap: whole clusters are
    resampled, i.e. the per-cluster means are bootstrapped (valid for roughly equal cluster sizes).
    Without, single observations are resampled. Constant data give (mean, mean, mean).
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    sample = values if clusters is None else cluster_means(values, clusters)
    if np.ptp(sample) == 0:  # nothing varies between resamples
        return mean, float(sample[0]), float(sample[0])
    result = stats.bootstrap((sample,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def mcnemar_p(a, b) -> float:
    """Exact two-sided McNemar p-value for two aligned 0/1 arrays of shape (n,).

    Under "no difference" each discordant pair (one method right, the other wrong) is equally
    likely to go either way, so the count of "b only" pairs is Binomial(discordant, 1/2).
    Returns 1.0 when there are no discordant pairs.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    b_only, a_only = int((b & ~a).sum()), int((a & ~b).sum())
    if a_only + b_only == 0:
        return 1.0
    return float(stats.binomtest(b_only, a_only + b_only, 0.5).pvalue)


def _paired_t_p(differences: np.ndarray) -> float:
    """Two-sided one-sample t-test p-value of mean(differences) = 0 (1 or 0 when they are constant;
    NaN from a single difference, which tests nothing)."""
    if len(differences) < 2:
        return float("nan")
    if np.ptp(differences) == 0:
        return 1.0 if differences[0] == 0 else 0.0
    return float(stats.ttest_1samp(differences, 0.0).pvalue)


def paired_difference(a, b, clusters=None, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      seed: int = SEED) -> dict:
    """Paired comparison of method b with method a on the same items (arrays of shape (n,), aligned).

    Returns a dict with ``difference`` = mean(b - a); ``low``, ``high``: the bootstrap interval of
    the per-item differences (cluster bootstrap when ``clusters`` is given); ``p_value``; ``n``
    (pairs) and ``test``. For 0/1 outcomes the p-value is McNemar's exact test, which treats items
    as independent (it ignores the clusters; the interval does not). For other values it is a
    t-test on the per-cluster mean differences (per item without clusters), i.e. it tests the
    reported mean difference and respects the clustering.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"a {a.shape} and b {b.shape} are not aligned: they must have the same length")
    differences = b.astype(float) - a.astype(float)
    difference, low, high = bootstrap_interval(differences, clusters, confidence, n_resamples, seed)
    if is_binary(a) and is_binary(b):
        p_value, test = mcnemar_p(a, b), "McNemar exact"
    else:
        per_cluster = differences if clusters is None else cluster_means(differences, clusters)
        p_value, test = _paired_t_p(per_cluster), "paired t-test on cluster means"
    return {"difference": difference, "low": low, "high": high, "p_value": p_value, "n": int(a.size), "test": test}


def _z_sum(alpha: float, power: float) -> float:
    """z_{1-alpha/2} + z_{power}: the distance, in standard errors, a detectable difference needs."""
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def minimum_detectable_difference(n: int, discordant_rate: float | None = None, p: float | None = None,
                                  alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true difference (a fraction) a two-sided level-``alpha`` test detects with ``power``.

    Give exactly one of: ``discordant_rate`` (paired design, McNemar with the normal approximation:
    the fraction of items on which the two methods disagree; ``n`` = pairs), or ``p`` (two
    independent groups of ``n`` each, both with success rate about ``p``).
    """
    if (discordant_rate is None) == (p is None):
        raise ValueError("give exactly one of discordant_rate (paired) or p (unpaired)")
    variance = discordant_rate if p is None else 2 * p * (1 - p)
    return _z_sum(alpha, power) * math.sqrt(variance / n)


def required_pairs(difference: float, discordant_rate: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Number of pairs needed to detect ``difference`` (paired, McNemar): the inverse, rounded up."""
    return math.ceil((_z_sum(alpha, power) / difference) ** 2 * discordant_rate)


def compare_to_baseline(scores: pd.DataFrame, metric: str, baseline: str, method_col: str = "method",
                        cell_cols=("benchmark",), item_cols=("prompt", "seed"), cluster_col: str | None = "prompt",
                        methods=None, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                        seed: int = SEED, subsets: bool = False) -> pd.DataFrame:
    """The comparison table: per cell and method, the mean and the paired difference to ``baseline``.

    ``scores`` has one row per (method, cell, item) and a column ``metric``. Output is indexed by
    (*cell_cols, method) with columns ``n, mean, low, high, diff, diff_low, diff_high, p``:
    ``low, high`` is the cluster bootstrap interval over ``cluster_col`` (the observation bootstrap
    when it is None), also for 0/1 metrics (the Wilson interval would ignore the clustering).
    ``diff`` is the paired difference on the baseline's items (rows aligned by ``item_cols``, not
    by row order); baseline rows have NaN there. A 0/1 metric is reported in percent (not ``p``).
    Methods are in ``methods`` order or as they first appear; cells as they first appear.
    Raises ValueError for duplicate items or a method lacking an item the baseline has, unless
    ``subsets=True``: then a method run on part of the baseline's items (e.g. a costly baseline on
    fewer prompts) is compared on those items only (``n`` says how many).
    """
    keys, cell_cols, item_cols = [method_col, *cell_cols], list(cell_cols), list(item_cols)
    if scores.duplicated(keys + item_cols).any():
        raise ValueError(f"duplicate rows for the same {keys + item_cols}")
    scale = 100.0 if is_binary(scores[metric]) else 1.0
    methods = list(pd.unique(scores[method_col])) if methods is None else list(methods)
    options = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
    item_info = list(dict.fromkeys(item_cols + ([cluster_col] if cluster_col else [])))
    rows = []
    for cell, frame in (scores.groupby(cell_cols, sort=False) if cell_cols else [((), scores)]):
        frame = frame.sort_values(item_cols, kind="stable")  # row order must not change the resamples
        base = frame[frame[method_col] == baseline]
        if base.empty:
            raise ValueError(f"baseline {baseline!r} has no rows in cell {cell}")
        for method in methods:
            own = frame[frame[method_col] == method]
            if own.empty:
                continue
            clusters = own[cluster_col] if cluster_col else None
            mean, low, high = bootstrap_interval(own[metric], clusters, **options)
            row = dict(zip(cell_cols, cell), method=method, n=len(own), mean=mean * scale, low=low * scale,
                       high=high * scale, diff=math.nan, diff_low=math.nan, diff_high=math.nan, p=math.nan)
            if method != baseline:
                pairs = base[item_info + [metric]].merge(own[item_cols + [metric]].rename(columns={metric: "_b"}),
                                                         on=item_cols, how="left", indicator=True)
                if (pairs["_merge"] != "both").any():
                    if not subsets:
                        raise ValueError(f"method {method!r} lacks items the baseline has in cell {cell}")
                    pairs = pairs[pairs["_merge"] == "both"]
                clusters = pairs[cluster_col] if cluster_col else None
                d = paired_difference(pairs[metric].to_numpy(), pairs["_b"].to_numpy(), clusters, **options)
                row.update(diff=d["difference"] * scale, diff_low=d["low"] * scale, diff_high=d["high"] * scale,
                           p=d["p_value"])
            rows.append(row)
    table = pd.DataFrame(rows).rename(columns={"method": method_col}).set_index(cell_cols + [method_col])
    table.attrs["methods"] = methods  # the row order for tables made from it
    return table


def compare_pair(scores: pd.DataFrame, metric: str, baseline: str, method: str, cell_cols=("benchmark",), cell=None,
                 method_col: str = "method", **options) -> pd.Series:
    """One row of :func:`compare_to_baseline`: ``method`` against ``baseline`` in the cell whose
    first ``cell_cols`` value is ``cell``, computed on those two methods' rows only (what a claim
    of the paper compares). ``options`` go to :func:`compare_to_baseline`."""
    chosen = scores[scores[method_col].isin([baseline, method]) & (scores[cell_cols[0]] == cell)]
    table = compare_to_baseline(chosen, metric, baseline, method_col=method_col, cell_cols=cell_cols,
                                methods=[baseline, method], **options)
    return table.loc[(cell, method)]


def _format_p(p: float) -> str:
    """p-values as 'p = 0.09', 'p = 0.004' or 'p < 0.001' ('one item' for NaN: no test)."""
    if math.isnan(p):
        return "one item: no test"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}"


def format_interval(mean: float, low: float, high: float, digits: int = 1) -> str:
    """'32.2 [28.1, 36.4]': a mean and its interval."""
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def format_difference(diff: float, low: float, high: float, p: float, digits: int = 1) -> str:
    """'+3.1 [-0.4, +6.5] (p = 0.09)': a signed difference, its interval and p-value ('—' when NaN)."""
    if math.isnan(diff):
        return "—"
    return f"{diff:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}] ({_format_p(p)})"


def verdict(low: float, high: float, expected_sign: int = +1) -> str:
    """'holds', 'contradicted' or 'inconclusive' for a claim that a difference has ``expected_sign``.

    'holds': the interval [low, high] excludes 0 on the expected side; 'contradicted': it excludes 0
    on the other side; 'inconclusive': it contains 0.
    """
    if expected_sign not in (+1, -1):
        raise ValueError("expected_sign must be +1 or -1")
    if low > 0 or high < 0:
        return "holds" if (low > 0) == (expected_sign > 0) else "contradicted"
    return "inconclusive"


# --------------------------------------------------------------------------------------------
# Comparisons over several training runs (training seeds)
# --------------------------------------------------------------------------------------------
# One training run is not evidence: two separately trained models differ by their training seed
# (and by the CPU's float rounding) as well as by what is being compared. When every arm is
# trained with several seeds, a comparison has two sources of variation, *crossed*: every run
# answers the same test items (prompts with their generation seeds, or queries). Write the paired
# difference of run r on cluster c (a prompt's images, or one query) as
#
#     d_rc = mu + a_r + b_c + e_rc        (a: the run, b: the test item, e: their interaction + noise)
#
# and the estimate is the mean of d over runs and clusters. Its variance is
#
#     Var = s2_a / R + s2_b / C + s2_e / (R C),
#
# estimated without bias from the cell means M (R x C) by  v_runs / R + v_items / C - v_resid / (R C),
# with v_runs the variance of the run means, v_items of the cluster means and v_resid the residual
# mean square of M after both (the classic two-way random-effects estimator). The interval is
# estimate +- t_df * SE with Welch-Satterthwaite degrees of freedom, which fall towards R - 1 when
# the runs dominate: with 5 runs a run-dominated interval uses t_4 = 2.78, not 1.96.
#
# Why not a percentile bootstrap (Agarwal et al. 2021; Bouthillier et al. 2021 resample runs): with
# five runs the percentile bootstrap over runs covers about 85 % (its variance is (R-1)/R of the
# truth and its quantiles are the normal's), and the crossed ("pigeonhole") bootstrap that resamples
# runs and clusters independently counts the interaction twice, which makes it too wide when runs
# barely differ. tests/test_stats_seeds.py measures both by simulation; ``interval="bootstrap"`` gives the
# crossed bootstrap's percentile interval for comparison. The share of runs in which the method
# beats the baseline (Bouthillier et al.'s P(A > B) over paired runs) is reported beside it.

SEED_AGREEMENT = 0.8  # share of runs whose own difference must have the verdict's sign (4 of 5)
MIN_RUNS = 3  # fewer training runs than this cannot make a verdict "holds"
SIZE_RATIO = 3.0  # the toy's and the paper's effects "differ in size" beyond this ratio


def crossed_cells(values, runs, clusters) -> tuple[np.ndarray, list, list]:
    """The (R, C) matrix of per-(run, cluster) means of ``values`` (arrays of shape (n,)), with the
    run and cluster labels in sorted order. Every run must have every cluster (the crossed design)."""
    frame = pd.DataFrame({"value": np.asarray(values, dtype=float), "run": np.asarray(runs), "cluster": np.asarray(clusters)})
    cells = frame.groupby(["run", "cluster"], sort=True)["value"].mean().unstack("cluster")
    if cells.isna().any().any():
        missing = cells.isna().sum(axis=1)
        raise ValueError(f"not every run has every cluster (missing per run: {missing[missing > 0].to_dict()}): "
                         f"runs must answer the same test items")
    return cells.to_numpy(), list(cells.index), list(cells.columns)


def crossed_interval(cells: np.ndarray, confidence: float = CONFIDENCE) -> dict:
    """Mean of an (R, C) matrix of cell means and its interval under the two-way random-effects
    model above: ``mean, low, high, se, df, p_value`` (two-sided t-test of mean = 0) and the three
    variance parts ``v_runs, v_items, v_resid`` (already divided by R, C and R C). One run (R = 1)
    leaves the run part out (it cannot be estimated); one cluster leaves the item part out."""
    cells = np.asarray(cells, dtype=float)
    r, c = cells.shape
    mean = float(cells.mean())
    v_runs = cells.mean(axis=1).var(ddof=1) / r if r > 1 else 0.0
    v_items = cells.mean(axis=0).var(ddof=1) / c if c > 1 else 0.0
    v_resid = 0.0
    if r > 1 and c > 1:
        residual = cells - cells.mean(axis=1, keepdims=True) - cells.mean(axis=0, keepdims=True) + mean
        v_resid = float((residual**2).sum() / ((r - 1) * (c - 1)) / (r * c))
    variance = max(v_runs + v_items - v_resid, v_runs, v_items, v_resid)  # never below any one part
    parts = [(v_runs, r - 1), (v_items, c - 1), (v_resid, (r - 1) * (c - 1))]
    denominator = sum(v**2 / df for v, df in parts if df > 0 and v > 0)
    df = variance**2 / denominator if denominator > 0 else math.inf
    se = math.sqrt(variance)
    if se == 0:
        return dict(mean=mean, low=mean, high=mean, se=0.0, df=df, p_value=1.0 if mean == 0 else 0.0,
                    v_runs=v_runs, v_items=v_items, v_resid=v_resid)
    q = float(stats.t.ppf(0.5 + confidence / 2, df))
    p_value = float(2 * stats.t.sf(abs(mean) / se, df))
    return dict(mean=mean, low=mean - q * se, high=mean + q * se, se=se, df=df, p_value=p_value,
                v_runs=v_runs, v_items=v_items, v_resid=v_resid)


def crossed_bootstrap(cells: np.ndarray, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      seed: int = SEED) -> tuple[float, float]:
    """Percentile interval (low, high) of the crossed ("pigeonhole") bootstrap of an (R, C) matrix
    of cell means: runs and clusters resampled independently, each resample's mean of the chosen
    cells (with their multiplicities). Kept for comparison: see the section's note."""
    cells = np.asarray(cells, dtype=float)
    r, c = cells.shape
    rng = np.random.default_rng(seed)
    run_counts = rng.multinomial(r, np.full(r, 1 / r), size=n_resamples)  # (B, R)
    cluster_counts = rng.multinomial(c, np.full(c, 1 / c), size=n_resamples)  # (B, C)
    means = np.einsum("br,rc,bc->b", run_counts, cells, cluster_counts) / (r * c)
    low, high = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(low), float(high)


def seed_paired_difference(base: pd.DataFrame, own: pd.DataFrame, metric: str, item_cols=("prompt", "seed"),
                           cluster_col: str | None = "prompt", run_col: str = "run", confidence: float = CONFIDENCE,
                           interval: str = "t", n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict:
    """Paired difference ``own - base`` of ``metric`` over training runs and test items.

    ``base`` and ``own`` have one row per (run, item): columns ``run_col``, ``item_cols`` and
    ``metric``. Rows pair on (run, item); a baseline that trains nothing (``run_col`` missing or
    NaN) pairs with every run of ``own``. Items are grouped into clusters by
    ``cluster_col`` (a prompt with all its generation seeds; None: each item alone).

    Returns ``difference`` (mean over runs and clusters), ``low``/``high`` (``interval="t"``: the
    two-way random-effects interval of :func:`crossed_interval`; ``"bootstrap"``: the crossed
    bootstrap's), ``p_value``, ``se``, ``df``, ``runs`` (labels), ``per_run`` (each run's own mean
    difference), ``runs_positive`` / ``runs_negative`` (how many per-run differences are > 0 / < 0),
    ``n_runs``, ``n_clusters``, ``n`` (pairs). A 0/1 metric stays in fractions here.
    """
    if interval not in ("t", "bootstrap"):
        raise ValueError(f"unknown interval {interval!r}; intervals: ['t', 'bootstrap']")
    item_cols = list(item_cols)
    base, own = base.copy(), own.copy()
    for frame in (base, own):
        if run_col not in frame:
            frame[run_col] = np.nan
    if own[run_col].isna().any():
        raise ValueError(f"every row of the compared method needs its {run_col!r}")
    if base[run_col].isna().all():  # a baseline that trains nothing: it pairs with every run
        base = base.drop(columns=run_col).merge(pd.DataFrame({run_col: own[run_col].unique()}), how="cross")
    for name, frame in (("baseline", base), ("method", own)):
        if frame.duplicated([run_col, *item_cols]).any():
            raise ValueError(f"the {name} has duplicate rows for the same {[run_col, *item_cols]}")
    keep = list(dict.fromkeys([run_col, *item_cols] + ([cluster_col] if cluster_col else [])))
    pairs = base[keep + [metric]].merge(own[[run_col, *item_cols, metric]].rename(columns={metric: "_own"}),
                                        on=[run_col, *item_cols], how="inner")
    if len(pairs) != len(own):
        raise ValueError(f"the baseline lacks {len(own) - len(pairs)} of the method's (run, item) rows")
    differences = pairs["_own"].astype(float) - pairs[metric].astype(float)
    clusters = pairs[cluster_col] if cluster_col else pairs[item_cols].astype(str).agg("|".join, axis=1)
    cells, runs, _ = crossed_cells(differences, pairs[run_col], clusters)
    result = crossed_interval(cells, confidence)
    if interval == "bootstrap":
        result["low"], result["high"] = crossed_bootstrap(cells, confidence, n_resamples, seed)
    per_run = cells.mean(axis=1)
    return dict(difference=result["mean"], low=result["low"], high=result["high"], p_value=result["p_value"], se=result["se"],
                df=result["df"], runs=runs, per_run=[float(v) for v in per_run], runs_positive=int((per_run > 0).sum()),
                runs_negative=int((per_run < 0).sum()), n_runs=len(runs), n_clusters=cells.shape[1], n=len(pairs))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (shape (m,)), in their given order:
    the k-th smallest is multiplied by (m - k + 1), then made non-decreasing, capped at 1."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order]).clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def seed_verdict(difference: dict, expected_sign: int = +1, p_adjusted: float | None = None, alpha: float = ALPHA,
                 min_runs: int = MIN_RUNS, agreement: float = SEED_AGREEMENT, selected: bool = False) -> str:
    """The verdict of a claim that a difference has ``expected_sign``, from
    :func:`seed_paired_difference`'s result:

    - "holds": the interval excludes 0 on the expected side, the (Holm-adjusted, where given)
      p-value is below ``alpha``, and at least ``agreement`` of the runs (4 of 5) have a per-run
      difference of that sign; "contradicted": the same on the other side;
    - "one run" / "k runs": fewer than ``min_runs`` runs (no verdict either way);
    - "selected on these images": the setting was chosen on the data that measure it;
    - "inconclusive": anything else.
    """
    if expected_sign not in (+1, -1):
        raise ValueError("expected_sign must be +1 or -1")
    if selected:
        return "selected on these images"
    n = difference["n_runs"]
    if n < min_runs:
        return "one run" if n == 1 else f"{n} runs"
    p = difference["p_value"] if p_adjusted is None else p_adjusted
    needed = math.ceil(agreement * n - 1e-9)
    for sign, name in ((expected_sign, "holds"), (-expected_sign, "contradicted")):
        side = difference["low"] > 0 if sign > 0 else difference["high"] < 0
        agree = difference["runs_positive"] if sign > 0 else difference["runs_negative"]
        if side and p < alpha and agree >= needed:
            return name
    return "inconclusive"


def size_ratio(toy: float, paper: float) -> float:
    """|toy| / |paper| (inf when the paper's effect is 0, nan when either is nan)."""
    if math.isnan(toy) or math.isnan(paper):
        return math.nan
    return math.inf if paper == 0 else abs(toy) / abs(paper)


def sizes_differ(toy: float, paper: float, ratio: float = SIZE_RATIO) -> bool:
    """Whether the toy's effect and the paper's differ in size by more than ``ratio`` either way,
    or in sign."""
    r = size_ratio(toy, paper)
    if math.isnan(r):
        return False
    return r > ratio or r < 1 / ratio or (toy * paper < 0)
