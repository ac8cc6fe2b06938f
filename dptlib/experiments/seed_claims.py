"""The paper's core claims over training seeds: the ``seeds`` batch's runs, compared paired, with
intervals that resample runs and test items, per-seed estimates and verdicts that need the seeds
to agree (:func:`dptlib.evaluation.stats.seed_paired_difference`, :func:`dptlib.evaluation.stats.seed_verdict`).

The ``seeds`` batch (``papermill_params/ablations/seeds.yaml``, ``make seeds``) trains every arm
once per training seed; its finished runs' outcomes are committed under ``results/<scale>/seeds/``,
so this table is rebuilt in seconds on any machine:

    python -m dptlib.experiments.seed_claims [--scale toy]          # print the table from the runs present
    python -m dptlib.experiments.seed_claims check [--scale toy]    # make check-claims: compare with figures/seed_claims.csv,
                                                        # seed_claims_confirm.csv (the seeds_confirm batch, seeds 5-9)
                                                        # and the ablations' tables (dptlib.experiments.ablation_claims)
    python -m dptlib.experiments.seed_claims --batch seeds_q40      # the same claims from the 40-query runs it replaced
    python -m dptlib.experiments.seed_claims images [--scale toy]   # write results/<scale>/query_images.csv.gz (see below)

The verdicts follow the frozen analysis plan (``docs/analysis-plan.md``): Holm's adjustment over
all the paper's claims as **one family** (the adjustment within each paper table stays as a
column, for reading); a control (no effect expected) is not adjusted, reads *no effect* when its t
interval contains 0 and *effect* only when the t interval and the crossed bootstrap's both exclude
0, its raw p is below 0.05 and the seeds agree. ITM and REC queries cluster by their test image
(``query_images.csv.gz``: the image of each query, recovered from the deterministic test split).

``check`` passes when every claim's verdict is the committed one and every point estimate lies
inside the committed interval; it prints the rows that moved and exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dptlib.checks import check_names, check_parameters, cli_errors, command_line
from dptlib.config import figures_dir, repo_root, resolve_scale, runs_dir
from dptlib.evaluation import stats
from dptlib.evaluation.metrics import itm_test_set, query_images
from dptlib.experiments import ablation_claims, ablations
from dptlib.toy.data import toy_discrimination_data

BATCH = "seeds"
TABLE = "seed_claims"  # figures/<TABLE>.csv and .md
IMAGES = "query_images.csv.gz"  # results/<scale>/IMAGES: the test image of each ITM / REC query (task, item, image)
AGAINST_BASE = "against the one untrained base run: the seeds share its images, so their agreement mostly repeats the mean's sign"


@dataclass(frozen=True)
class Claim:
    """One claim, tested as ``method`` against ``baseline`` on ``cell``.

    Generation: ``cell`` is a prompt cell ("toy-cc (ID)"), ``method`` / ``baseline`` an arm with
    its sampling ("dpt", "dpt + SC", "dpt + null"). Discrimination: ``cell`` is the method's task
    ("ITM overall (stage 1)") and ``baseline_cell`` the baseline's (its task on the same queries).
    ``family``: the claims Holm's adjustment is made within (one table of the paper).
    ``paper_effect``: the paper's difference in points (nan: none reported)."""

    family: str
    claim: str
    paper: str
    paper_effect: float
    baseline: str
    method: str
    cell: str
    baseline_cell: str | None = None
    expected_sign: int = +1
    control: bool = False
    selected: bool = False


GENERATION_CELLS = ("toy-cc (ID)", "toy-nss (ID)", "toy-cc (OOD)")


def core_claims() -> list[Claim]:
    """The claims of ``03_self_correction``'s table that the seeds batch tests, and the two
    self-correction controls (shuffled-pairs adapter, random direction)."""
    nan = math.nan
    claims = [
        Claim("Tab. 3", "stage-1 DPT matches images and texts better than DiffusionITM (ITM overall)", "+6.3 (38.5 vs 32.2)", 6.3,
              "base", "dpt", "ITM overall (stage 1)", "ITM overall (DiffusionITM)"),
        Claim("Tab. 3", "stage-1 DPT grounds expressions better than local denoising (REC P@1)", "+25.0 (RefCOCO val 48.8 vs 23.8)",
              25.0, "base", "dpt", "REC P@1 (stage 1)", "REC P@1 (local denoising)"),
        Claim("Tab. 10", "t = 250 discriminates better than t = 0 (ITM overall, one adapter)", "+0.5 (39.7 vs 39.2)", 0.5,
              "dpt", "dpt", "ITM overall (stage 1)", "ITM overall (stage 1) (t = 0)"),
        Claim("Tab. 10", "t = 250 grounds better than t = 0 (REC P@1, one adapter)", "+2.5 (54.3 vs 51.8, mean of test sets)", 2.5,
              "dpt", "dpt", "REC P@1 (stage 1)", "REC P@1 (stage 1) (t = 0)"),
        Claim("Tab. 10", "heavy noise (t = 999) hurts ITM (one adapter)", "-8.2 (31.5 vs 39.7)", -8.2,
              "dpt", "dpt", "ITM overall (stage 1) (t = 999)", "ITM overall (stage 1)", expected_sign=-1),
        Claim("Tab. 11", "tuning the adapter with LoRA grounds better than LoRA alone (REC P@1)", "(not reported)", nan,
              "lora", "dpt", "REC P@1", "REC P@1"),
    ]
    for cell in GENERATION_CELLS:
        claims.append(Claim("Tab. 1", f"DPT (stage 2) improves on the base model, {cell}", "+5.3 BLIP-M (COCO-NSS1K, CC-500)", 5.3,
                            "base", "dpt", cell))
    for cell in GENERATION_CELLS[:2]:
        claims += [
            Claim("Tab. 4", f"self-correction improves on DPT, {cell}", "+0.6 BLIP-M on COCO-NSS1K (78.6 vs 79.2)", 0.6,
                  "dpt", "dpt + SC", cell),
            Claim("Tab. 4", f"self-correction beats a random step of the same size, {cell}", "(not reported)", nan,
                  "dpt + null", "dpt + SC", cell),
            Claim("Tab. 11", f"tuning the adapter with LoRA beats LoRA alone, {cell}", "+2.1 BLIP-M on COCO-NSS1K (76.5 vs 78.6)", 2.1,
                  "lora", "dpt", cell),
            Claim("Tab. 11", f"... and self-corrected with each, {cell}", "+2.1 BLIP-M on COCO-NSS1K (76.5 vs 78.6)", 2.1,
                  "lora + SC", "dpt + SC", cell),
            Claim("controls", f"a random step of the same size changes nothing, {cell}", "(no effect expected)", nan,
                  "dpt", "dpt + null", cell, control=True),
            Claim("controls", f"tuning with the shuffled-pairs adapter changes nothing, {cell}", "(no effect expected)", nan,
                  "base", "shuffled", cell, control=True),
            Claim("controls", f"self-correction with the shuffled-pairs adapter changes nothing, {cell}", "(no effect expected)", nan,
                  "shuffled", "shuffled + SC", cell, control=True),
        ]
    return claims


@dataclass
class Runs:
    """The seeds batch's finished runs, long format: ``generation`` one row per image (arm,
    ``run`` = training seed or NaN for the untrained base, ``method`` = arm and sampling, cell,
    prompt, seed, correct) and ``discrimination`` one row per query (arm, run, task, item,
    correct); ``missing``: the variants not (yet) finished."""

    generation: pd.DataFrame
    discrimination: pd.DataFrame
    missing: list[str]


def query_image_table(scale: str, batch: str = BATCH) -> pd.DataFrame:
    """The test image of each discrimination query of a seeds batch, one row per (task, item):
    the test split, ITM set and REC expressions rebuilt exactly as ``ablation_variant`` builds
    them (the toy world's ``seed`` fixes them), then :func:`dptlib.evaluation.metrics.query_images`."""
    at_scale = ablations.load_batch(repo_root() / "papermill_params" / "ablations" / f"{batch}.yaml").at_scale.get(scale, {})
    params = check_parameters("ablation_variant", {"scale": scale, **{k: v for k, v in at_scale.items() if k == "n_rec_expressions"}})
    splits, _ = toy_discrimination_data(runs_dir(scale) / "ablations" / "shared" / "toyworld",
                                        {"train": params.n_train_images, "test": params.n_test_images}, seed=params.seed)
    test = splits["test"]
    rec = np.linspace(0, len(test.expressions) - 1, min(len(test.expressions), params.n_rec_expressions)).round().astype(int)
    found = query_images(test, itm_test_set(test, n_negatives=3, seed=params.seed), rec)
    return pd.concat([pd.DataFrame({"task": task, "item": np.arange(len(images)), "image": images}) for task, images in found.items()],
                     ignore_index=True)


def images_path(scale: str) -> object:
    return ablations.results_dir(scale) / IMAGES


def attach_images(discrimination: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """``discrimination`` with each query's test ``image``: a task "ITM overall (stage 1) (t = 0)"
    or "REC P@1 (local denoising)" asks the queries of "ITM overall" / "REC P@1" in the same order."""
    task = discrimination["task"].str.extract(r"^(ITM overall|REC P@1)")[0]
    found = discrimination.assign(_task=task).merge(images.rename(columns={"task": "_task"}), on=["_task", "item"], how="left")
    if found["image"].isna().any():
        raise ValueError(f"{found['image'].isna().sum()} queries have no test image in {IMAGES}: rebuild it "
                         "(python -m dptlib.experiments.seed_claims images)")
    return found.drop(columns="_task").astype({"image": int})


def load_runs(scale: str | None = None, batch: str = BATCH) -> Runs:
    """Read a seeds batch's finished variants (``runs/`` or the committed ``results/``): ``batch``
    names its file in ``papermill_params/ablations`` (one of :data:`dptlib.experiments.ablations.SEEDS_BATCHES`)."""
    scale = resolve_scale(scale)
    if batch not in ablations.SEEDS_BATCHES:
        raise ValueError(f"unknown seeds batch {batch!r}; seeds batches: {list(ablations.SEEDS_BATCHES)}")
    batch = ablations.load_batch(repo_root() / "papermill_params" / "ablations" / f"{batch}.yaml")
    results = ablations.collect(batch, scale)

    def label(frame: pd.DataFrame) -> pd.DataFrame:
        split = frame["variant"].map(ablations.split_seed)
        return frame.assign(arm=split.str[0], run=split.str[1].astype(float))

    generation, discrimination = results.generation, results.discrimination
    if not generation.empty:
        generation = label(generation)
        generation["method"] = generation["arm"] + generation["method"].map(ablations.METHOD_SUFFIX)
    if not discrimination.empty:
        discrimination = label(discrimination)
        if images_path(scale).exists():  # cluster ITM / REC queries by their test image
            discrimination = attach_images(discrimination, ablations.read_outcome_csv(images_path(scale)))
    return Runs(generation, discrimination, results.missing)


def _rows(runs: Runs, arm_method: str, cell: str, discrimination: bool) -> pd.DataFrame:
    """The rows of one side of a comparison: ``run``, the item columns and ``correct``."""
    if discrimination:
        frame = runs.discrimination
        if frame.empty:
            return frame
        columns = ["run", "item", "correct"] + (["image"] if "image" in frame else [])
        return frame[(frame["arm"] == arm_method) & (frame["task"] == cell)][columns]
    frame = runs.generation
    if frame.empty:
        return frame
    return frame[(frame["method"] == arm_method) & (frame["cell"] == cell)][["run", "prompt", "seed", "correct"]]


def measure(claim: Claim, runs: Runs, interval: str = "t") -> dict | None:
    """:func:`dptlib.evaluation.stats.seed_paired_difference` of one claim, in points (None: not
    measured); ITM / REC queries cluster by test image where the runs carry it."""
    discrimination = claim.baseline_cell is not None
    base = _rows(runs, claim.baseline, claim.baseline_cell or claim.cell, discrimination)
    own = _rows(runs, claim.method, claim.cell, discrimination)
    if base.empty or own.empty:
        return None
    if base["run"].isna().all():  # the untrained base: one run, paired with every seed
        base = base.drop(columns="run")
    elif set(base["run"]) != set(own["run"]):  # paired by training seed: the seeds both arms finished
        common = sorted(set(base["run"]) & set(own["run"]))
        base, own = base[base["run"].isin(common)], own[own["run"].isin(common)]
        if own.empty:
            return None
    if discrimination:
        options = dict(item_cols=("item",), cluster_col="image" if "image" in base else None)
        own = own.drop(columns="image", errors="ignore")
    else:
        options = dict(item_cols=("prompt", "seed"), cluster_col="prompt")
    found = stats.seed_paired_difference(base, own.astype({"correct": float}), "correct", interval=interval, **options)
    for key in ("difference", "low", "high", "se"):
        found[key] *= 100
    found["per_run"] = [100 * v for v in found["per_run"]]
    return found


def control_verdict(found: dict, bootstrap: dict) -> str:
    """A control must show nothing (analysis plan 1): "no effect" when its t interval contains 0;
    "effect" only when the t interval and the crossed bootstrap's (``bootstrap``, shared draws)
    both exclude 0 on one side, the raw p is below 0.05 and the seeds agree in sign; else
    "inconclusive". Fewer than :data:`dptlib.evaluation.stats.MIN_RUNS` runs say so."""
    if found["n_runs"] < stats.MIN_RUNS:
        return "one run" if found["n_runs"] == 1 else f"{found['n_runs']} runs"
    if found["low"] <= 0 <= found["high"]:
        return "no effect"
    sign = +1 if found["difference"] > 0 else -1
    both = bootstrap["low"] > 0 if sign > 0 else bootstrap["high"] < 0
    return "effect" if both and stats.seed_verdict(found, sign) == "holds" else "inconclusive"


COLUMNS = ["family", "claim", "paper", "toy (difference, 95 % interval)", "bootstrap interval", "per seed", "seeds agreeing", "p (Holm)",
           "p (Holm, per table)", "size vs paper", "n", "verdict", "note", "difference", "low", "high"]


def _p_text(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "< 0.001"


def holm_adjusted(measured: list[tuple[Claim, dict]]) -> tuple[dict[int, float], dict[int, float]]:
    """Holm-adjusted p of each non-control claim: over all of them as one family (the verdict's),
    and within its paper table (a column); a control keeps its raw p in both."""
    one, per_table = {}, {}
    for i, (claim, found) in enumerate(measured):
        if claim.control:
            one[i] = per_table[i] = found["p_value"]
    paper = [i for i, (c, _) in enumerate(measured) if not c.control]
    one.update(zip(paper, stats.holm([measured[i][1]["p_value"] for i in paper])))
    for family in dict.fromkeys(measured[i][0].family for i in paper):
        members = [i for i in paper if measured[i][0].family == family]
        per_table.update(zip(members, stats.holm([measured[i][1]["p_value"] for i in members])))
    return one, per_table


def claims_table(runs: Runs, claims: list[Claim] | None = None) -> pd.DataFrame:
    """One row per measured claim (:data:`COLUMNS`): the paired difference over seeds and items
    with its 95 % t interval (and, for a control, the crossed bootstrap's), each seed's own
    difference, how many seeds agree with the verdict's sign, Holm's p over all paper claims as one
    family (the verdict's) and within the paper table, whether the toy's effect differs from the
    paper's by more than 3x, pairs, verdict, a note on claims against the one untrained base run;
    ``difference``, ``low``, ``high`` as numbers (what ``check`` compares)."""
    claims = core_claims() if claims is None else claims
    measured = [(claim, found) for claim in claims if (found := measure(claim, runs)) is not None]
    adjusted, per_table = holm_adjusted(measured)
    rows = []
    for i, (claim, found) in enumerate(measured):
        bootstrap = measure(claim, runs, interval="bootstrap") if claim.control else None
        if claim.control:
            verdict = control_verdict(found, bootstrap)
        else:
            verdict = stats.seed_verdict(found, claim.expected_sign, adjusted[i], selected=claim.selected)
        sign = claim.expected_sign if verdict != "contradicted" else -claim.expected_sign
        agree = found["runs_positive"] if sign > 0 else found["runs_negative"]
        if claim.control:
            agree = max(found["runs_positive"], found["runs_negative"])
        differs = stats.sizes_differ(found["difference"], claim.paper_effect)
        rows.append({
            "family": claim.family, "claim": claim.claim, "paper": claim.paper,
            "toy (difference, 95 % interval)": stats.format_difference(found["difference"], found["low"], found["high"], found["p_value"]),
            "bootstrap interval": f"[{bootstrap['low']:+.1f}, {bootstrap['high']:+.1f}]" if bootstrap else "",
            "per seed": ", ".join(f"{v:+.1f}" for v in found["per_run"]),
            "seeds agreeing": f"{agree} of {found['n_runs']}",
            "p (Holm)": _p_text(adjusted[i]), "p (Holm, per table)": _p_text(per_table[i]),
            "size vs paper": "differs > 3x" if differs else ("" if math.isnan(claim.paper_effect) else "within 3x"),
            "n": found["n"], "verdict": verdict, "note": AGAINST_BASE if claim.baseline == "base" else "",
            "difference": round(found["difference"], 3), "low": round(found["low"], 3), "high": round(found["high"], 3),
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    families = {family: i for i, family in enumerate(dict.fromkeys(table["family"]))}
    return table.sort_values("family", key=lambda f: f.map(families), kind="stable").reset_index(drop=True)


def arm_table(runs: Runs) -> pd.DataFrame:
    """Each arm's score per cell (generation: exact-match %, per prompt cell) and task
    (discrimination: accuracy %), as "mean (lowest-highest seed)" over its runs, with the number
    of runs; an arm that trains nothing has one run. Rows: arm and sampling; columns: cells, tasks."""
    parts = []
    for frame, column, row in ((runs.generation, "cell", "method"), (runs.discrimination, "task", "arm")):
        if frame.empty:
            continue
        per_run = frame.assign(run=frame["run"].fillna(-1)).groupby([row, column, "run"])["correct"].mean().mul(100)
        summary = per_run.groupby(level=[0, 1]).agg(["mean", "min", "max", "count"])
        text = summary.apply(lambda r: f"{r['mean']:.1f}" + (f" ({r['min']:.1f}-{r['max']:.1f})" if r["count"] > 1 else ""), axis=1)
        table = text.unstack(column)
        table.insert(0, "runs", summary["count"].groupby(level=0).max())
        parts.append(table.rename_axis("arm"))
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts).groupby(level=0, sort=False).first().fillna("")


EXPLORATORY, CONFIRMATORY = "seeds", "seeds_confirm"  # analysis plan 1: training seeds 0-4, then 5-9


def combine_runs(first: Runs, second: Runs) -> Runs:
    """The runs of two seeds batches as one (all ten training seeds): the untrained ``base`` is
    kept from ``first`` only (the confirmatory batch re-runs it as a check; its outcomes are the same)."""
    def join(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
        if a.empty or b.empty:
            return a if b.empty else b
        return pd.concat([a, b[b["arm"] != "base"]], ignore_index=True)

    return Runs(join(first.generation, second.generation), join(first.discrimination, second.discrimination),
                first.missing + second.missing)


def side_by_side(exploratory: pd.DataFrame, confirmatory: pd.DataFrame, together: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: the exploratory verdict (training seeds 0-4), the confirmatory verdict
    (5-9, under the frozen plan) and the estimate over all ten seeds (descriptive, no verdict)."""
    def short(table: pd.DataFrame, columns: dict) -> pd.DataFrame:
        if table.empty:
            return pd.DataFrame(columns=["family", "claim", *columns.values()])
        return table[["family", "claim", *columns]].rename(columns=columns)

    found = short(exploratory, {"toy (difference, 95 % interval)": "seeds 0-4 (exploratory)", "seeds agreeing": "agreeing (0-4)",
                                "verdict": "verdict (0-4)"})
    for table, columns in ((confirmatory, {"toy (difference, 95 % interval)": "seeds 5-9 (confirmatory)",
                                           "seeds agreeing": "agreeing (5-9)", "verdict": "verdict (5-9)"}),
                           (together, {"toy (difference, 95 % interval)": "all ten seeds (descriptive)"})):
        found = found.merge(short(table, columns), on=["family", "claim"], how="outer", sort=False)
    undecided = lambda v: pd.isna(v) or str(v).endswith(("run", "runs"))  # noqa: E731 (fewer than MIN_RUNS: no verdict yet)
    found["same verdict"] = ["" if undecided(a) or undecided(b) else ("yes" if a == b else "no")
                             for a, b in zip(found["verdict (0-4)"], found["verdict (5-9)"])]
    order = {claim: i for i, claim in enumerate([*exploratory.get("claim", []), *confirmatory.get("claim", [])][::-1])}
    order = {claim: len(order) - i for claim, i in order.items()}  # the first table's order, then the second's
    return found.sort_values("claim", key=lambda c: c.map(order), kind="stable").reset_index(drop=True).fillna("")


def readme_summary(both: pd.DataFrame, confirmatory_runs: int, needed: int = 5) -> tuple[pd.DataFrame, str]:
    """The README's short table from ``side_by_side``'s and the sentence under it.

    Until ``needed`` confirmatory ``dpt`` runs have finished, the estimate shown is the exploratory
    one (seeds 0-4) and the confirmatory verdict an interim column; once they have, the table leads
    with the confirmatory estimate and verdict (docs/analysis-plan.md: the README uses them) and
    the sentence names every claim whose two verdicts differ. A claim the confirmatory batch does
    not run (the shuffled-pairs controls) reads "not run" there."""
    both = both.copy()
    both["verdict (5-9)"] = both["verdict (5-9)"].replace("", "not run")
    if confirmatory_runs < needed:
        table = both[["family", "claim", "seeds 0-4 (exploratory)", "verdict (0-4)", "verdict (5-9)"]]
        return table, (f"Confirmatory runs finished: {confirmatory_runs} of {needed}; their verdict column is interim.")
    table = both[["family", "claim", "seeds 5-9 (confirmatory)", "verdict (5-9)", "verdict (0-4)"]]
    differ = both[both["same verdict"] == "no"]
    if differ.empty:
        compared = (both["same verdict"] != "").sum()
        return table, f"The confirmatory and exploratory verdicts agree on all {compared} claims that both batches test."
    names = "; ".join(f"{r.family}: {r.claim} ({r['verdict (0-4)']} → {r['verdict (5-9)']})" for _, r in differ.iterrows())
    return table, f"The confirmatory verdict differs from the exploratory one on {len(differ)} claim(s): {names}."


def confirmatory_finding(both: pd.DataFrame, confirmatory: pd.DataFrame, confirmatory_runs: int, needed: int = 5) -> str:
    """09's finding on the confirmatory batch: with all ``needed`` runs, its verdict counts and
    :func:`readme_summary`'s sentence; with three or more, how many interim verdicts agree with the
    exploratory ones; with fewer, that there are too few for a verdict."""
    same = both["same verdict"]
    if confirmatory_runs >= needed:
        counts = ", ".join(f"{n} *{v}*" for v, n in confirmatory["verdict"].value_counts().items())
        return f"Their {len(confirmatory)} claims read {counts}. " + readme_summary(both, confirmatory_runs, needed)[1]
    if confirmatory_runs >= 3:
        return f"their interim verdicts agree with the exploratory ones on {(same == 'yes').sum()} of {(same != '').sum()} claims."
    return "too few for a verdict yet (three needed)."


def plan_of_runs(scale: str) -> pd.DataFrame:
    """Each finished run of the two batches with the analysis plan it was made under (the sha256 its
    ``done.json`` records; runs made before the plan existed record none)."""
    current = ablations.analysis_plan_hash()
    rows = []
    for name in (EXPLORATORY, CONFIRMATORY):
        batch = ablations.load_batch(repo_root() / "papermill_params" / "ablations" / f"{name}.yaml").for_scale(scale)
        for variant, parameters in batch.variants.items():
            where = ablations.outcomes_dir(batch, variant, scale,
                                           ablations.run_hash(batch.notebook, {**parameters, "scale": scale}, scale))
            if where is None:
                rows.append({"batch": name, "variant": variant, "finished": "not yet", "analysis plan": ""})
                continue
            done = ablations.read_outcome_json(where / "done.json")
            plan = done.get("analysis_plan")
            rows.append({"batch": name, "variant": variant, "finished": done.get("finished", "yes"),
                         "analysis plan": "none (made before the plan)" if not plan else
                         f"plan 1 ({plan[:12]})" + ("" if plan == current else ", not the plan as it is now")})
    return pd.DataFrame(rows)


def moved_rows(committed: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """The claims whose verdict changed, or whose point estimate left the committed interval, or
    that one table has and the other lacks: columns claim, committed, now, why."""
    merged = committed.merge(current, on=["family", "claim"], how="outer", suffixes=(" committed", " now"), indicator=True)
    rows = []
    for _, row in merged.iterrows():
        name = f"{row['family']}: {row['claim']}"
        if row["_merge"] != "both":
            rows.append({"claim": name, "why": "only in the committed table" if row["_merge"] == "left_only" else "new"})
            continue
        reasons = []
        if row["verdict committed"] != row["verdict now"]:
            reasons.append(f"verdict {row['verdict committed']} -> {row['verdict now']}")
        if not row["low committed"] <= row["difference now"] <= row["high committed"]:
            reasons.append(f"estimate {row['difference now']:+.1f} outside [{row['low committed']:+.1f}, {row['high committed']:+.1f}]")
        if reasons:
            rows.append({"claim": name, "why": "; ".join(reasons)})
    return pd.DataFrame(rows, columns=["claim", "why"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="show", choices=["show", "check", "images"])
    parser.add_argument("--scale", default=None, help="toy (default: $DPT_SCALE or toy) or smoke")
    parser.add_argument("--batch", default=BATCH, choices=list(ablations.SEEDS_BATCHES), help=f"the seeds batch read (default: {BATCH})")
    argv, debug = command_line(argv)
    args = parser.parse_args([a for a in argv if a != "--debug"])
    with cli_errors(debug, "dptlib.experiments.seed_claims"):  # a bad scale or a damaged outcome file: one line
        scale = resolve_scale(args.scale)
        check_names("scale", [scale], ("smoke", "toy"))
        if args.command == "images":
            images_path(scale).parent.mkdir(parents=True, exist_ok=True)
            table = query_image_table(scale, args.batch)
            partial = images_path(scale).with_suffix(".partial")
            partial.write_bytes(gzip.compress(table.to_csv(index=False).encode(), mtime=0))
            os.replace(partial, images_path(scale))  # atomic: a killed run leaves the old file or the new one
            print(f"{images_path(scale)}: {len(table)} queries on {table['image'].nunique()} test images")
            return 0
        runs = load_runs(scale, args.batch)
        ablation_runs = {name: ablation_claims.load(ablation, scale) for name, ablation in ablation_claims.TABLES.items()
                         if args.command == "check" and (figures_dir(scale) / f"{ablation.name}.csv").exists()}
        confirm_path = figures_dir(scale) / f"{TABLE}_confirm.csv"  # 09's confirmatory table (seeds 5-9), where it exists
        confirm_runs = (load_runs(scale, CONFIRMATORY)
                        if args.command == "check" and args.batch == EXPLORATORY and confirm_path.exists() else None)
    table = claims_table(runs)
    with pd.option_context("display.width", 250, "display.max_colwidth", 80, "display.max_rows", 200):
        print(table.drop(columns=["difference", "low", "high"]).to_string(index=False) if len(table) else "no claims measured")
    print(f"runs missing: {runs.missing or 'none'}")
    if args.command == "show":
        return 0
    ok = _matches_committed(table, figures_dir(scale) / f"{TABLE}.csv", "the core claims")
    if confirm_runs is not None:
        ok &= _matches_committed(claims_table(confirm_runs), confirm_path, "the core claims, confirmatory seeds 5-9")
    for name, loaded in ablation_runs.items():  # the ablations' claims over seeds (04, 06, 07), from their committed runs
        ablation = ablation_claims.TABLES[name]
        found = ablation_claims.measure(ablation, *loaded).assign(family=ablation.name)
        ok &= _matches_committed(found, figures_dir(scale) / f"{ablation.name}.csv", f"{ablation.name} ({ablation.notebook})")
    return 0 if ok else 1


def _matches_committed(table: pd.DataFrame, path, what: str) -> bool:
    """Compare ``table`` with the committed one at ``path`` (:func:`moved_rows`), print the outcome."""
    if not path.exists():
        print(f"no committed table {path}: run 09_results first")
        return False
    committed = pd.read_csv(path, keep_default_na=False, dtype={"p (Holm)": str, "p (Holm, per table)": str})
    if "family" not in committed:
        committed = committed.assign(family=path.stem)
    if not {"difference", "low", "high"} <= set(committed.columns):
        print(f"check-claims: {what}: {path} has no numeric difference, low, high columns: re-run the notebook that writes it")
        return False
    moved = moved_rows(committed, table)
    if moved.empty:
        print(f"check-claims: {what}: all {len(table)} claims reproduce (same verdicts, estimates inside the committed intervals)")
        return True
    print(f"check-claims: {what}: {len(moved)} of {len(table)} claims moved:")
    print(moved.to_string(index=False))
    return False


if __name__ == "__main__":
    sys.exit(main())
