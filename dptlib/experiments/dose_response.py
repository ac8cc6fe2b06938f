"""Stage 2's dose-response: what tuning does to generation and discrimination from 0 to 3,000 steps.

The toy's stage 2 (300 steps, the last kept) did not improve generation (Tab. 1); the paper tunes
6k steps and keeps the checkpoint with the best validation CLIP score, step 700 in its Fig. 7.
This module asks whether the toy's answer is about DPT or about that budget. Each run (a learning
rate and a training seed) tunes 3,000 steps from the stage-1 adapter of its training seed (the
toy preset's stage 1, as `01_probing` and the seeds batch train it) and, at each dose in
``DOSES`` (and at step 0, the untuned reference), measures on **validation** data only:

- generation: images of ``n_validation`` validation prompts per headline cell (one generation
  seed), graded by the oracle (% exactly right) and the evaluator CLIP score;
- discrimination: ITM overall and REC P@1 of the tuned model on the validation split (Fig. 7's
  other curve);
- where the change goes: ‖ΔW‖ / ‖W‖ of every LoRA-adapted projection (ΔW = (α / r) B A), the
  relative change of the ``up1`` features of a fixed noisy batch, and the change of the final
  images (RMS pixel difference to the step-0 image of the same prompt and noise, and the share of
  images whose oracle verdict flipped).

The checkpoint is then chosen twice on those validation scores, by the paper's rule (validation
CLIP score) and by the oracle, among the tuned doses (not step 0; ties go to the fewer steps), and
only the chosen checkpoints generate the **test** prompts of the headline cells (every test prompt
with every generation seed of Tab. 1, paired with the base model's images, which are generated
once per scale and kept beside the runs).

    python -m dptlib.experiments.dose_response [--scale toy] [--lrs 1e-4 1e-3] [--seeds 0 1 2] [--table]

Each run writes ``results/<scale>/dose_response/<run>/`` (``curve.json``, ``test_scores.csv.gz``)
atomically when it finishes; a finished run is skipped, so a killed batch resumes at the next run
(and a killed run within its stage 1 or stage 2, from their resume states in ``runs/``). The
paper's stage-2 learning rate (1e-4, App. B.3.1) is also the toy preset's; the second rate,
1e-3, is the toy's stage-1 rate, ten times larger: a budget in step size as well as in steps.
The analysis is exploratory (`docs/analysis-plan.md` names no dose-response claim).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dptlib.checks import check_names, cli_errors, command_line
from dptlib.config import HEADLINE_CELLS, device, float_environment, repo_root, runs_dir
from dptlib.evaluation.metrics import clip_features_and_scores, itm_accuracy, itm_test_set, rec_precision
from dptlib.evaluation.stats import holm, seed_paired_difference, seed_verdict
from dptlib.experiments import report
from dptlib.method.backbone import Backbone, add_noise, encode_text, extract_features, image_noise, load_backbone, load_pipeline
from dptlib.method.checkpoint import atomic_write_text, load_adapter, save_tuned
from dptlib.method.inference import DPTScorer
from dptlib.method.sampling import generate
from dptlib.method.train import ProbeConfig, TuneConfig, cache_latents, probe, tune
from dptlib.toy.data import toy_discrimination_data
from dptlib.toy.evaluation import compare_methods, oracle_scores
from dptlib.toy.prompts import generation_prompts
from dptlib.toy.world import ToyWorld, ToyWorldConfig

LOGGER = logging.getLogger(__name__)

DOSES = {"smoke": (1, 2), "toy": (150, 300, 700, 1500, 3000)}
LEARNING_RATES = ("1e-4", "1e-3")  # the paper's (= the toy preset's) stage-2 rate, and ten times it
RATE_LABELS = {"1e-4": "1e-4 (the paper's)", "1e-3": "1e-3 (10x)"}
SELECTIONS = {"CLIP": "clip_score", "oracle": "correct"}  # the paper's rule, and the toy world's exact judge
VALIDATION_SEED = 1234  # the generation seed of the validation images (02's tuning validator's)
FEATURE_TIMESTEP = 250  # the t of the fixed noisy batch whose up1 features are compared
SIZES = {  # what a run measures; the test set is the seeds batch's (Tab. 1's headline cells, 4 generation seeds)
    "smoke": dict(n_train_images=24, n_val_images=12, n_validation=2, n_itm=4, n_rec=4, n_feature_images=4,
                  test_prompts=dict.fromkeys(HEADLINE_CELLS, 2), seeds=[0], num_inference_steps=3),
    "toy": dict(n_train_images=4000, n_val_images=500, n_validation=100, n_itm=250, n_rec=250, n_feature_images=32,  # toy-CC (ID): 36
                test_prompts=dict.fromkeys(HEADLINE_CELLS, 150), seeds=[0, 1, 2, 3], num_inference_steps=15),
}
GUIDANCE_SCALE = 7.5
CURVE_METRICS = ("clip_score", "correct", "ITM overall", "REC P@1")
CHANGE_METRICS = ("feature change (up1)", "image change (RMS)", "verdicts flipped (%)")


def results_dir(scale: str) -> Path:
    """``results/<scale>/dose_response`` (committed), or under ``$DPT_RESULTS_DIR``; at the smoke
    scale under ``runs/smoke`` (as the ablation batches' exports)."""
    if scale == "smoke":
        return runs_dir(scale) / "results" / "dose_response"
    return Path(os.environ.get("DPT_RESULTS_DIR") or repo_root() / "results") / scale / "dose_response"


def run_name(lr: str, training_seed: int) -> str:
    """``lr1e-4-s0``: a run's folder name."""
    return f"lr{lr}-s{training_seed}"


# --------------------------------------------------------------------------------------------
# Where the change goes
# --------------------------------------------------------------------------------------------
def lora_change(unet) -> pd.DataFrame:
    """One row per LoRA-adapted linear layer of ``unet``: its name, the projection it adapts
    (``to_q``, ``to_k``, ``to_v``, ``to_out``) and ``ratio`` = ‖ΔW‖_F / ‖W‖_F, with ΔW = (α / r) B A
    (peft's ``get_delta_weight``) and W the frozen weight."""
    from peft.tuners.lora import LoraLayer  # deferred: heavy

    rows = []
    for name, module in unet.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            with torch.no_grad():
                delta = module.get_delta_weight("default")
                weight = module.get_base_layer().weight
            projection = next(p for p in ("to_q", "to_k", "to_v", "to_out") if p in name)
            rows.append({"layer": name, "projection": projection, "ratio": float(delta.norm() / weight.norm())})
    return pd.DataFrame(rows, columns=["layer", "projection", "ratio"])


def relative_change(reference: torch.Tensor | np.ndarray, current: torch.Tensor | np.ndarray) -> float:
    """‖current − reference‖ / ‖reference‖ over all entries (0 when they are equal).

    >>> relative_change(np.array([3.0, 4.0]), np.array([3.0, 4.0 + 5.0]))
    1.0
    """
    reference, current = (np.asarray(x, dtype=np.float64) for x in (reference, current))
    return float(np.linalg.norm(current - reference) / np.linalg.norm(reference))


def image_change(reference: np.ndarray, images: np.ndarray) -> float:
    """Mean over images of the RMS pixel difference, on a 0-1 scale: uint8 (N, H, W, 3) each.

    >>> image_change(np.zeros((2, 1, 1, 3), np.uint8), np.full((2, 1, 1, 3), 255, np.uint8))
    1.0
    """
    difference = (images.astype(np.float64) - reference.astype(np.float64)) / 255.0
    return float(np.sqrt((difference**2).reshape(len(images), -1).mean(axis=1)).mean())


def chosen_step(curve: pd.DataFrame, metric: str) -> int:
    """The tuned dose (step > 0) with the highest validation ``metric``; ties go to the fewer steps.

    >>> chosen_step(pd.DataFrame({"step": [0, 150, 300, 700], "correct": [50.0, 40.0, 45.0, 45.0]}), "correct")
    300
    """
    tuned = curve[curve["step"] > 0].sort_values("step")
    return int(tuned.loc[tuned[metric].idxmax(), "step"])


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------
@dataclass
class Validation:
    """What every dose is measured on: validation prompts, the validation split's ITM / REC items,
    a fixed noisy batch for the feature change, and the step-0 references the changes compare with."""

    pipe: object
    prompts: list  # BenchmarkPrompt s of the headline cells' validation prompts
    embed: object
    world_config: ToyWorldConfig
    data: object  # the validation split (DiscriminationData)
    latents: torch.Tensor  # its VAE latents (N, 4, h, w)
    itm: object  # ITM test set on the validation split
    rec: list[int]  # REC expressions asked
    noisy: torch.Tensor  # (B, 4, h, w) fixed noisy latents at FEATURE_TIMESTEP
    text_hidden: torch.Tensor  # (B, L, D) their captions' text states
    num_inference_steps: int
    reference_images: np.ndarray | None = None  # (P, H, W, 3) step 0's images
    reference_correct: np.ndarray | None = None  # (P,) step 0's oracle verdicts
    reference_features: torch.Tensor | None = None  # step 0's up1 features of the fixed batch

    def images(self) -> tuple[np.ndarray, pd.DataFrame]:
        """The validation prompts' images from the pipeline's current U-Net, graded: (images, scores)."""
        texts = [p.prompt for p in self.prompts]
        images = generate(self.pipe, texts, seed=VALIDATION_SEED, num_inference_steps=self.num_inference_steps,
                          guidance_scale=GUIDANCE_SCALE, progress=False)
        scores = oracle_scores(images, [p.spec for p in self.prompts], self.world_config)
        scores["clip_score"] = clip_features_and_scores(self.embed, images, texts)[1]
        return images, scores

    @torch.no_grad()
    def features(self) -> torch.Tensor:
        """The current U-Net's up1 features of the fixed noisy batch: (B, C, h, w)."""
        timesteps = torch.full((len(self.noisy),), FEATURE_TIMESTEP)
        return extract_features(self.pipe.unet, self.noisy, timesteps, self.text_hidden, ["up1"])[0].cpu()

    def set_reference(self) -> None:
        """Step 0's images, verdicts and features (the untuned U-Net): what each dose is compared with."""
        self.reference_images, scores = self.images()
        self.reference_correct = scores["correct"].to_numpy()
        self.reference_features = self.features()

    def measure(self, step: int, model) -> dict:
        """A ``validate(step, model)`` for :func:`dptlib.method.train.tune`: every curve and change metric."""
        images, scores = self.images()
        scorer = DPTScorer(Backbone(self.pipe), model.adapter, model.blocks, self.data, self.latents)
        by_kind = lora_change(self.pipe.unet).groupby("projection")["ratio"].median()
        result = {"clip_score": float(scores["clip_score"].mean()), "correct": 100 * float(scores["correct"].mean()),
                  "ITM overall": itm_accuracy(scorer.score_pairs, self.itm)["overall"],
                  "REC P@1": rec_precision(scorer.predict_boxes, self.data, self.rec),
                  "feature change (up1)": relative_change(self.reference_features, self.features()),
                  "image change (RMS)": image_change(self.reference_images, images),
                  "verdicts flipped (%)": 100 * float((scores["correct"].to_numpy() != self.reference_correct).mean()),
                  **{f"|dW|/|W| {kind} (median)": float(v) for kind, v in by_kind.items()}}
        result["score"] = result["clip_score"]  # tune() keeps its own best by the paper's rule in out_dir/best
        return result


def validation_prompts(scale: str, world: ToyWorld, seed: int = 0) -> dict:
    """Up to ``n_validation`` validation prompts per headline cell (fewer where the cell has fewer:
    toy-CC (ID) has 36 beyond its 150 test prompts); none of them a test prompt. Raises where a
    cell has none, which :func:`main` checks before any work."""
    sizes = SIZES[scale]
    _, validation = generation_prompts(world.config, sizes["test_prompts"], sizes["n_validation"], seed=seed)
    empty = [cell for cell, prompts in validation.items() if not prompts]
    if empty:
        raise ValueError(f"no validation prompts left beside the test prompts of {empty} at scale {scale!r}")
    return validation


def validation_set(scale: str, backbone: Backbone, val, embed, world: ToyWorld, seed: int = 0) -> Validation:
    """The :class:`Validation` of a scale: its sizes (``SIZES``), items drawn with ``seed``."""
    sizes = SIZES[scale]
    validation = validation_prompts(scale, world, seed)
    latents = cache_latents(backbone, val.images)
    n = min(sizes["n_feature_images"], val.n_captioned or len(val.images))
    first_caption = {}  # each image's first own caption
    for c, image in enumerate(val.caption_image.tolist()):
        first_caption.setdefault(image, c)
    captions = [val.captions[first_caption[i]] for i in range(n)]
    noise = image_noise(tuple(latents.shape[1:]), seed, range(n))
    noisy = add_noise(backbone, latents[:n], torch.full((n,), FEATURE_TIMESTEP), noise)
    rec = np.linspace(0, len(val.expressions) - 1, min(len(val.expressions), sizes["n_rec"])).round().astype(int).tolist()
    return Validation(pipe=backbone.pipe, prompts=[p for c in sizes["test_prompts"] for p in validation[c]], embed=embed,
                      world_config=world.config, data=val, latents=latents, itm=itm_test_set(val, n_negatives=3, seed=seed).head(sizes["n_itm"]),
                      rec=rec, noisy=noisy, text_hidden=encode_text(backbone, captions)[0], num_inference_steps=sizes["num_inference_steps"])


def stage1(scale: str, training_seed: int, train, backbone: Backbone, work: Path, progress: bool) -> Path:
    """The toy preset's stage-1 adapter of ``training_seed`` (block ``up1``), trained once per scale
    and seed into ``work/stage1-s<k>`` (resumed where a killed run left it); its folder."""
    preset = scale if scale in ProbeConfig.PRESETS else "toy"
    out = work / f"stage1-s{training_seed}"
    if not (out / "adapter.safetensors").exists() or (out / "probe.state.safetensors").exists():
        probe(ProbeConfig.preset(preset, blocks="up1", seed=training_seed), train, out, backbone=backbone, progress=progress)
    return out


def test_prompts(scale: str, world: ToyWorld, seed: int = 0) -> dict:
    """Tab. 1's headline cells' test prompts (the seeds batch's, drawn with ``seed``)."""
    return generation_prompts(world.config, SIZES[scale]["test_prompts"], 0, seed=seed)[0]


def generate_test(pipe, scale: str, world: ToyWorld, embed) -> pd.DataFrame:
    """Every test prompt with every generation seed, graded: one row per (cell, prompt, seed)."""
    sizes = SIZES[scale]
    scores, _ = compare_methods({"plain": (pipe, None)}, test_prompts(scale, world), sizes["seeds"], embed=embed, config=world.config,
                                progress=False, num_inference_steps=sizes["num_inference_steps"], guidance_scale=GUIDANCE_SCALE)
    return scores.rename(columns={"benchmark": "cell"}).drop(columns="method")


def base_scores(scale: str, model: str = "toy") -> pd.DataFrame:
    """The base model's test images, graded (``results/<scale>/dose_response/base_test_scores.csv.gz``;
    generated once per scale, and with the same prompts, seeds and sampler as the seeds batch's
    ``base`` run: where that run is there, its scores must be these)."""
    path = results_dir(scale) / "base_test_scores.csv.gz"
    if path.exists():
        return pd.read_csv(path)
    world = ToyWorld(ToyWorldConfig(seed=0))
    _, embed = toy_discrimination_data(runs_dir(scale) / "dose_response" / "toyworld", {"val": SIZES[scale]["n_val_images"]}, seed=0)
    scores = generate_test(load_pipeline(model, device=device()), scale, world, embed)
    path.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(path, index=False)
    return scores


def run(lr: str, training_seed: int, scale: str = "toy", model: str = "toy", progress: bool = True) -> dict:
    """One run: stage 1 of ``training_seed``, then 3,000 steps of stage 2 at ``lr`` with every dose
    measured; the checkpoints chosen by CLIP and by the oracle then generate the test prompts.
    Writes ``results/<scale>/dose_response/<run>/`` and returns its record."""
    started, name = time.time(), run_name(lr, training_seed)
    preset, sizes, doses = scale if scale in TuneConfig.PRESETS else "toy", SIZES[scale], DOSES[scale]
    work = runs_dir(scale) / "dose_response"
    world = ToyWorld(ToyWorldConfig(seed=0))
    splits, embed = toy_discrimination_data(work / "toyworld", {"train": sizes["n_train_images"], "val": sizes["n_val_images"]}, seed=0)
    backbone = load_backbone(model, device=device())
    probe_dir = stage1(scale, training_seed, splits["train"], backbone, work, progress)
    seconds = {"stage 1": time.time() - started}
    validation = validation_set(scale, backbone, splits["val"], embed, world)
    validation.set_reference()  # before stage 2 puts its LoRA into the U-Net
    config = TuneConfig.preset(preset, model=model, steps=max(doses), lr=float(lr), validate_every=0, validate_at=doses, seed=training_seed)
    _, _, meta = load_adapter(probe_dir)
    out_dir = work / name

    def measure_and_keep(step: int, model_) -> dict:
        result = validation.measure(step, model_)
        if step > 0:  # every dose's checkpoint, so that either rule's choice can generate the test prompts
            save_tuned(model_.unet, model_.adapter, config, model_.blocks, out_dir / f"step-{step}", meta)
        LOGGER.info(f"{name} step {step}: " + ", ".join(f"{k} {v:.3g}" for k, v in result.items()))
        return result

    tuned = tune(config, splits["train"], probe_dir, out_dir, backbone=backbone, progress=progress, validate=measure_and_keep)
    seconds["stage 2 + validation"] = time.time() - started - seconds["stage 1"]
    curve = pd.DataFrame(tuned["validation"]).drop(columns="score")
    chosen = {rule: chosen_step(curve, metric) for rule, metric in SELECTIONS.items()}
    tests = []
    for step in sorted(set(chosen.values())):
        pipe = load_pipeline(model, device=device(), lora=out_dir / f"step-{step}")
        tests.append(generate_test(pipe, scale, world, embed).assign(step=step))
    seconds["test"] = time.time() - started - sum(seconds.values())
    record = {"run": name, "lr": lr, "training_seed": training_seed, "doses": list(doses), "chosen": chosen,
              "validation": curve.to_dict("records"), "lora_layers": lora_change(backbone.unet).to_dict("records"),
              "items": {"validation images": len(validation.prompts), "REC expressions": len(validation.rec),
                        "ITM queries": len(validation.itm.image_to_text) + len(validation.itm.text_to_image)},
              "seconds": {k: round(v, 1) for k, v in seconds.items()}, "float environment": float_environment()}
    folder = results_dir(scale) / name
    folder.mkdir(parents=True, exist_ok=True)
    pd.concat(tests, ignore_index=True).to_csv(folder / "test_scores.csv.gz", index=False)
    atomic_write_text(json.dumps(record, indent=1), folder / "curve.json")  # last: its presence marks the run finished
    return record


# --------------------------------------------------------------------------------------------
# Tables and figures over the finished runs
# --------------------------------------------------------------------------------------------
def finished_runs(scale: str = "toy") -> list[dict]:
    """The records of the finished runs (``curve.json``), sorted by learning rate and seed."""
    return [json.loads(p.read_text()) for p in sorted(results_dir(scale).glob("*/curve.json"))]


def curves(scale: str = "toy") -> pd.DataFrame:
    """Long table of every validation point: lr, training seed, step, metric, value."""
    rows = []
    for record in finished_runs(scale):
        for point in record["validation"]:
            rows += [{"lr": record["lr"], "training seed": record["training_seed"], "step": point["step"], "metric": m, "value": v}
                     for m, v in point.items() if m != "step"]
    return pd.DataFrame(rows, columns=["lr", "training seed", "step", "metric", "value"])


def curve_summary(long: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (lr, step, metric): the mean over training seeds, its t interval over seeds (NaN with one
    seed) and the number of seeds."""
    from scipy import stats  # deferred: heavy

    def summary(values: pd.Series) -> pd.Series:
        n, mean = len(values), float(values.mean())
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        return pd.Series({"mean": mean, "low": mean - half, "high": mean + half, "seeds": n})

    return long.groupby(["lr", "step", "metric"])["value"].apply(summary).unstack().reset_index()


def test_table(scale: str = "toy") -> pd.DataFrame:
    """Per (lr, selection rule, headline cell): the chosen steps per seed and the paired difference
    in % exactly right against the base model (crossed over training seeds and test prompts, 95 %
    interval), its Holm p over the table's rows and the verdict of the analysis plan's rule
    (expected sign +: stage 2 helps)."""
    base = base_scores(scale).assign(correct=lambda f: 100 * f["correct"])
    runs, rows = finished_runs(scale), []
    for lr in sorted({r["lr"] for r in runs}):
        records = [r for r in runs if r["lr"] == lr]
        for rule in SELECTIONS:
            own = []
            for record in records:
                scores = pd.read_csv(results_dir(scale) / record["run"] / "test_scores.csv.gz")
                own.append(scores[scores["step"] == record["chosen"][rule]].assign(run=record["training_seed"]))
            own = pd.concat(own, ignore_index=True).assign(correct=lambda f: 100 * f["correct"])
            for cell in SIZES[scale]["test_prompts"]:
                found = seed_paired_difference(base[base["cell"] == cell], own[own["cell"] == cell], "correct")
                rows.append({"learning rate": RATE_LABELS.get(lr, lr), "selected by": rule, "cell": cell,
                             "steps chosen (per seed)": ", ".join(str(r["chosen"][rule]) for r in records),
                             "difference": found["difference"], "low": found["low"], "high": found["high"],
                             "p": found["p_value"], "seeds +/-": f"{found['runs_positive']}/{found['runs_negative']}", "_found": found})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p (Holm)"] = holm(table["p"].to_numpy())
    table["verdict"] = [seed_verdict(f, +1, p) for f, p in zip(table["_found"], table["p (Holm)"])]
    return table.drop(columns="_found")


def conclusion(table: pd.DataFrame) -> str:
    """"helps at some budget", "hurts" or "does not help at any budget tried", from the test table's
    verdicts (the plan's rule); "no verdict yet" while a row has fewer than three training seeds."""
    if (~table["verdict"].isin(["holds", "contradicted", "inconclusive"])).any():
        return "has no verdict yet (fewer than three training seeds per learning rate)"
    if (table["verdict"] == "holds").any():
        return "helps at some budget"
    if (table["verdict"] == "contradicted").any():
        return "hurts"
    return "does not help at any budget tried"


def by_rate(table: pd.DataFrame) -> list[str]:
    """One line per learning rate of the test table: each cell's difference to the base model with its
    interval, per selection rule, the cell's verdicts, and how many (seed, rule, cell) differences are
    below zero; e.g. "1e-4 (the paper's): toy-cc (ID) -1.9 [-4.7, +0.8] (CLIP), ... *inconclusive*; ..."."""
    lines = []
    for lr, part in table.groupby("learning rate", sort=False):
        cells = []
        for cell, rows in part.groupby("cell", sort=False):
            values = ", ".join(f"{r['difference']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}] ({r['selected by']})" for _, r in rows.iterrows())
            cells.append(f"{cell} {values}: *{' / '.join(dict.fromkeys(rows['verdict']))}*")
        below = sum(int(s.split("/")[1]) for s in part["seeds +/-"])
        total = sum(int(a) + int(b) for a, b in (s.split("/") for s in part["seeds +/-"]))
        lines.append(f"{lr}: {'; '.join(cells)}; {below} of {total} per-seed differences below zero")
    return lines


def figure(scale: str = "toy"):
    """Fig. 7's layout: tuning steps on x (the doses, evenly spaced), each validation metric on its
    own axis, one colour per learning rate (the mean over training seeds, 95 % t intervals over
    seeds); then where the change goes: the up1 feature change, the image change, the verdicts
    flipped, and the median ‖ΔW‖ / ‖W‖ of each adapted projection (one line style each)."""
    import matplotlib.pyplot as plt  # deferred: heavy

    summary = curve_summary(curves(scale))
    steps = sorted(summary["step"].unique())
    position = {step: i for i, step in enumerate(steps)}  # 0, 150, ..., 3,000 evenly spaced: the early doses stay visible
    colours = dict(zip(LEARNING_RATES, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    titles = {"clip_score": "CLIP score (validation)", "correct": "exactly right (%, validation)",
              "ITM overall": "ITM overall (%, validation)", "REC P@1": "REC P@1 (%, validation)"}
    fig, axes = plt.subplots(2, 4, figsize=(13.5, 5.8), layout="constrained")
    lines = [(m, m, "-") for m in (*CURVE_METRICS, *CHANGE_METRICS)]
    projections = sorted(m for m in summary["metric"].unique() if m.startswith("|dW|"))
    lines += [("|dW| / |W| (median per projection)", m, style) for m, style in zip(projections, ["-", "--", ":", "-."])]
    for ax, panel in zip(axes.flat, dict.fromkeys(title for title, _, _ in lines)):
        for _, metric, style in [line for line in lines if line[0] == panel]:
            for lr, part in summary[summary["metric"] == metric].groupby("lr"):
                part = part.sort_values("step")
                label = f"lr {lr}" + (f", {metric.split()[1]}" if metric in projections else "")
                ax.errorbar(part["step"].map(position), part["mean"], yerr=[part["mean"] - part["low"], part["high"] - part["mean"]],
                            marker="o", capsize=3, linestyle=style, color=colours.get(lr), label=label)
        ax.set_xticks(range(len(steps)), [f"{s:,}" for s in steps], fontsize=8)
        ax.set(xlabel="tuning step", title=titles.get(panel, panel))
        ax.title.set_fontsize(9)
    axes.flat[0].legend(fontsize=8)
    axes.flat[-1].legend(fontsize=7, ncol=2)
    return fig


def save(scale: str = "toy") -> pd.DataFrame:
    """figures/fig4a_dose_response.png, figures/stage2_dose_curves.{csv,md} and
    figures/stage2_dose_test.{csv,md} from the finished runs; returns the test table."""
    if not finished_runs(scale):
        return pd.DataFrame()
    report.set_theme()
    summary = curve_summary(curves(scale)).astype({"seeds": int})
    summary.insert(0, "learning rate", summary.pop("lr").map(lambda lr: RATE_LABELS.get(lr, lr)))  # a label: "1e-4" is no number to format
    report.save_table(summary, "stage2_dose_curves", scale, floatfmt=".3g")
    table = test_table(scale)
    report.save_table(table, "stage2_dose_test", scale, floatfmt=".3g")
    report.save_figure(figure(scale), "fig4a_dose_response", scale)
    return table


def main(argv=None) -> int:
    argv, _ = command_line(argv)  # the environment checked, the library's messages shown
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="toy")
    parser.add_argument("--lrs", nargs="+", default=list(LEARNING_RATES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--table", action="store_true", help="draw the finished runs' tables and figure, and exit")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    args = parser.parse_args(argv)
    with cli_errors(args.debug, "dptlib.experiments.dose_response"):
        check_names("scale", [args.scale], tuple(SIZES))
        check_names("lr", args.lrs, LEARNING_RATES)
        if any(k < 0 for k in args.seeds):
            raise ValueError(f"--seeds must be >= 0; got {args.seeds}")
        validation_prompts(args.scale, ToyWorld(ToyWorldConfig(seed=0)))  # before any work
    if not args.table:
        base_scores(args.scale)
        for k in args.seeds:  # a seed's stage 1 serves both rates
            for lr in args.lrs:
                if (results_dir(args.scale) / run_name(lr, k) / "curve.json").exists():
                    LOGGER.info(f"{run_name(lr, k)}: done, skipped")
                    continue
                record = run(lr, k, args.scale, progress=not os.environ.get("CI"))
                LOGGER.info(f"{record['run']}: chosen {record['chosen']} in {sum(record['seconds'].values()) / 60:.1f} min")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(save(args.scale).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
