"""The paper's core claims over training seeds: the ``seeds`` batch's runs, compared paired, with
intervals that resample runs and test items, per-seed estimates and verdicts that need the seeds
to agree (:func:`dptlib.evaluation.stats.seed_paired_difference`, :func:`dptlib.evaluation.stats.seed_verdict`).

The ``seeds`` batch (``papermill_params/ablations/seeds.yaml``, ``make seeds``) trains every arm
once per training seed; its finished runs' outcomes are committed under ``results/<scale>/seeds/``,
so this table is rebuilt in seconds on any machine:

    python -m dptlib.experiments.seed_claims [--scale toy]          # print the table from the runs present
    python -m dptlib.experiments.seed_claims check [--scale toy]    # make check-claims: compare with figures/seed_claims.csv
                                                        # and the ablations' tables (dptlib.experiments.ablation_claims)
    python -m dptlib.experiments.seed_claims --batch seeds_q40      # the same claims from the 40-query runs it replaced

``check`` passes when every claim's verdict is the committed one and every point estimate lies
inside the committed interval; it prints the rows that moved and exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import pandas as pd

from dptlib.checks import check_names, cli_errors, command_line
from dptlib.config import figures_dir, repo_root, resolve_scale
from dptlib.evaluation import stats
from dptlib.experiments import ablation_claims, ablations

BATCH = "seeds"
TABLE = "seed_claims"  # figures/<TABLE>.csv and .md


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
    return Runs(generation, discrimination, results.missing)


def _rows(runs: Runs, arm_method: str, cell: str, discrimination: bool) -> pd.DataFrame:
    """The rows of one side of a comparison: ``run``, the item columns and ``correct``."""
    if discrimination:
        frame = runs.discrimination
        if frame.empty:
            return frame
        return frame[(frame["arm"] == arm_method) & (frame["task"] == cell)][["run", "item", "correct"]]
    frame = runs.generation
    if frame.empty:
        return frame
    return frame[(frame["method"] == arm_method) & (frame["cell"] == cell)][["run", "prompt", "seed", "correct"]]


def measure(claim: Claim, runs: Runs) -> dict | None:
    """:func:`dptlib.evaluation.stats.seed_paired_difference` of one claim, in points (None: not measured)."""
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
    options = dict(item_cols=("item",), cluster_col=None) if discrimination else dict(item_cols=("prompt", "seed"), cluster_col="prompt")
    found = stats.seed_paired_difference(base, own.astype({"correct": float}), "correct", **options)
    for key in ("difference", "low", "high", "se"):
        found[key] *= 100
    found["per_run"] = [100 * v for v in found["per_run"]]
    return found


def control_verdict(found: dict, p_adjusted: float) -> str:
    """A control must show nothing: "no effect" (the interval contains 0), "effect" (it does not,
    the adjusted p is below 0.05 and the seeds agree in sign), else "inconclusive"; fewer than
    :data:`dptlib.evaluation.stats.MIN_RUNS` runs say so."""
    if found["n_runs"] < stats.MIN_RUNS:
        return "one run" if found["n_runs"] == 1 else f"{found['n_runs']} runs"
    if found["low"] <= 0 <= found["high"]:
        return "no effect"
    sign = +1 if found["difference"] > 0 else -1
    return "effect" if stats.seed_verdict(found, sign, p_adjusted) == "holds" else "inconclusive"


COLUMNS = ["family", "claim", "paper", "toy (difference, 95 % interval)", "per seed", "seeds agreeing", "p (Holm)", "size vs paper",
           "n", "verdict", "difference", "low", "high"]


def claims_table(runs: Runs, claims: list[Claim] | None = None) -> pd.DataFrame:
    """One row per measured claim (:data:`COLUMNS`): the paired difference over seeds and items
    with its 95 % interval, each seed's own difference, how many seeds agree with the verdict's
    sign, the Holm-adjusted p within the claim's family, whether the toy's effect differs from
    the paper's by more than 3x, pairs, verdict; ``difference``, ``low``, ``high`` as numbers
    (what ``check`` compares)."""
    claims = core_claims() if claims is None else claims
    measured = [(claim, found) for claim in claims if (found := measure(claim, runs)) is not None]
    adjusted = {i: f["p_value"] for i, (c, f) in enumerate(measured) if c.control}  # a control is not adjusted: a failing one must show
    for family in dict.fromkeys(c.family for c, _ in measured if not c.control):
        members = [(i, f) for i, (c, f) in enumerate(measured) if c.family == family and not c.control]
        for (i, _), p in zip(members, stats.holm([f["p_value"] for _, f in members])):
            adjusted[i] = p
    rows = []
    for i, (claim, found) in enumerate(measured):
        if claim.control:
            verdict = control_verdict(found, adjusted[i])
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
            "per seed": ", ".join(f"{v:+.1f}" for v in found["per_run"]),
            "seeds agreeing": f"{agree} of {found['n_runs']}",
            "p (Holm)": f"{adjusted[i]:.3f}" if adjusted[i] >= 0.001 else "< 0.001",
            "size vs paper": "differs > 3x" if differs else ("" if math.isnan(claim.paper_effect) else "within 3x"),
            "n": found["n"], "verdict": verdict,
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
    parser.add_argument("command", nargs="?", default="show", choices=["show", "check"])
    parser.add_argument("--scale", default=None, help="toy (default: $DPT_SCALE or toy) or smoke")
    parser.add_argument("--batch", default=BATCH, choices=list(ablations.SEEDS_BATCHES), help=f"the seeds batch read (default: {BATCH})")
    argv, debug = command_line(argv)
    args = parser.parse_args([a for a in argv if a != "--debug"])
    with cli_errors(debug, "dptlib.experiments.seed_claims"):  # a bad scale or a damaged outcome file: one line
        scale = resolve_scale(args.scale)
        check_names("scale", [scale], ("smoke", "toy"))
        runs = load_runs(scale, args.batch)
        ablation_runs = {name: ablation_claims.load(ablation, scale) for name, ablation in ablation_claims.TABLES.items()
                         if args.command == "check" and (figures_dir(scale) / f"{ablation.name}.csv").exists()}
    table = claims_table(runs)
    with pd.option_context("display.width", 250, "display.max_colwidth", 80, "display.max_rows", 200):
        print(table.drop(columns=["difference", "low", "high"]).to_string(index=False) if len(table) else "no claims measured")
    print(f"runs missing: {runs.missing or 'none'}")
    if args.command == "show":
        return 0
    ok = _matches_committed(table, figures_dir(scale) / f"{TABLE}.csv", "the core claims")
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
    committed = pd.read_csv(path, keep_default_na=False, dtype={"p (Holm)": str})
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
