"""Where the seconds go: ``python -m dptlib.perf.timing profile`` (``make profile``).

Three views, each printed as a table:

1. **Unit costs**, measured here on the toy model (medians of repeated runs): exporting and
   embedding the toy data, a stage-1 step split into its parts (building the batch: text encoding
   and noising; the frozen U-Net up to the probed block; the adapter's forward, backward and
   AdamW), a stage-2 step (LoRA + adapter, gradients through the U-Net), a generated image split
   into the U-Net's denoising steps and the VAE decode (plain, and with self-correction), grading
   an image with the oracle, and answering a query with DPT, DiffusionITM or local denoising.
2. **A trained arm of the seeds batch, estimated** from the unit costs and the arm's counts
   (``papermill_params/ablations/seeds.yaml`` at the toy scale), beside **what its runs took**
   (``metrics.json`` of the finished runs in ``runs/`` or ``results/``), part by part.
3. **The core notebooks' cells**, where executed notebooks exist (``runs/<scale>/notebooks/``,
   written by ``make reproduce``): each section's seconds from papermill's per-cell durations.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dptlib.config import repo_root, runs_dir
from dptlib.data.discrimination import sample_septuple
from dptlib.evaluation.baselines import DenoisingScorer, evenly_spaced_timesteps, local_denoising_boxes
from dptlib.evaluation.metrics import itm_outcomes, itm_test_set, rec_outcomes
from dptlib.experiments import ablations
from dptlib.method.backbone import extract_features, load_backbone, load_pipeline
from dptlib.method.inference import DPTScorer
from dptlib.method.sampling import generate
from dptlib.method.train import (
    DPTModel,
    ProbeConfig,
    TuneConfig,
    add_lora,
    build_adapter,
    cache_latents,
    dpt_losses,
    septuple_batch,
)
from dptlib.toy.data import toy_discrimination_data
from dptlib.toy.evaluation import oracle_scores
from dptlib.toy.prompts import generation_prompts
from dptlib.toy.world import ToyWorldConfig


def median_time(fn, repeats: int = 3) -> float:
    """The median seconds of ``repeats`` calls of ``fn()``, after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unit_costs(n_train: int = 160, n_test: int = 40, prompts: int = 16, steps: int = 15, repeats: int = 3) -> pd.DataFrame:
    """Seconds per unit of each part of DPT's toy runs, measured in this process (see the module
    docstring). Columns: part, unit, seconds."""

    rows = []

    def add(part, unit, seconds):
        rows.append({"part": part, "unit": unit, "seconds": seconds})

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        splits, _ = toy_discrimination_data(Path(folder), {"train": n_train, "test": n_test}, seed=0)
        add("data: export, render, embed, mine negatives", "image", (time.perf_counter() - start) / (n_train + n_test))
    train, test = splits["train"], splits["test"]
    backbone = load_backbone("toy")
    config = ProbeConfig.preset("toy", blocks="up1")
    torch.manual_seed(0)
    adapter, blocks = build_adapter(config, backbone)
    latents = cache_latents(backbone, train.images)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=config.lr)
    rng = np.random.default_rng(0)

    def batch():
        septuples = [sample_septuple(train, rng) for _ in range(config.batch_size)]
        return septuple_batch(backbone, train, latents, septuples, [[0, 0, 0, i] for i in range(config.batch_size)], config.timesteps)

    step = batch()

    def features():
        with torch.no_grad():
            return extract_features(backbone.unet, step.latents, step.timesteps, step.text_hidden, blocks)

    cached = features()

    def adapter_part():
        losses = dpt_losses(adapter, cached, step)
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()

    unit = f"step ({config.batch_size} septuples)"
    add("stage 1: batch (text encoding, noising)", unit, median_time(batch, repeats))
    add("stage 1: U-Net up to up1 (frozen)", unit, median_time(features, repeats))
    add("stage 1: adapter forward, backward, AdamW", unit, median_time(adapter_part, repeats))

    tune_config = TuneConfig.preset("toy", blocks="up1")
    tuned = load_backbone("toy")
    tuned.unet.requires_grad_(False)
    lora = add_lora(tuned.unet, tune_config)
    model = DPTModel(tuned.unet, adapter, blocks)
    trainable = lora + list(adapter.parameters())
    tune_optimizer = torch.optim.AdamW(trainable, lr=tune_config.lr)

    def stage2():
        losses = model(step)
        losses["loss"].backward()
        tune_optimizer.step()
        tune_optimizer.zero_grad()

    add("stage 2: LoRA + adapter step (gradients through the U-Net)", unit, median_time(stage2, repeats))

    pipe = load_pipeline("toy")
    world = ToyWorldConfig(seed=0)
    test_prompts, _ = generation_prompts(world, {"toy-cc (ID)": prompts}, 0, seed=0)
    chosen = test_prompts["toy-cc (ID)"]
    texts = [p.prompt for p in chosen]
    images = generate(pipe, texts, num_inference_steps=steps, progress=False)
    plain = median_time(lambda: generate(pipe, texts, num_inference_steps=steps, progress=False), repeats) / len(texts)
    latent = torch.randn(len(texts), 4, *latents.shape[-2:])

    def decode():
        with torch.no_grad():
            pipe.vae.decode(latent / pipe.vae.config.scaling_factor)

    vae = median_time(decode, repeats) / len(texts)
    corrected = median_time(lambda: generate(pipe, texts, num_inference_steps=steps, progress=False,
                                         self_correct=dict(adapter=adapter, blocks=blocks, eta=0.03)), 1) / len(texts)
    add(f"generation: U-Net, {steps} CFG steps (plain)", "image", plain - vae)
    add("generation: VAE decode", "image", vae)
    add(f"generation: self-correction's extra ({steps} gradient passes)", "image", corrected - plain)
    add("oracle grading", "image", median_time(lambda: oracle_scores(images, [p.spec for p in chosen], world), repeats) / len(texts))

    test_latents = cache_latents(backbone, test.images)
    scorer = DPTScorer(backbone, adapter, blocks, test, test_latents, timestep=250)
    queries = itm_test_set(test, n_negatives=3, seed=0)
    n_itm = len(queries.image_to_text) + len(queries.text_to_image)
    expressions = list(range(min(32, len(test.expressions))))
    add("ITM query, DPT (4 candidates)", "query", median_time(lambda: itm_outcomes(scorer.score_pairs, queries), 1) / n_itm)
    add("REC expression, DPT", "expression", median_time(lambda: rec_outcomes(scorer.predict_boxes, test, expressions), 1) / len(expressions))
    def classifier():  # a fresh one each time: a scorer keeps the errors it has computed
        return DenoisingScorer(backbone, test, test_latents, evenly_spaced_timesteps(10), seed=0)

    few = queries.head(4)
    n_few = len(few.image_to_text) + len(few.text_to_image)
    add("ITM query, DiffusionITM (10 t)", "query", median_time(lambda: itm_outcomes(classifier().normalized().score_pairs, few), 1) / n_few)
    add("REC expression, local denoising (10 t)", "expression",
        median_time(lambda: local_denoising_boxes(classifier(), expressions[:8]), 1) / 8)
    return pd.DataFrame(rows)


# what one trained arm of the seeds batch does at the toy scale (papermill_params/ablations/seeds.yaml):
# (part of unit_costs, how many, the part of metrics.json "seconds" it belongs to)
SEEDS_DPT_ARM = [
    ("data: export, render, embed, mine negatives", 5000, "data"),
    ("stage 1: batch (text encoding, noising)", 3000, "stage 1"),
    ("stage 1: U-Net up to up1 (frozen)", 3000, "stage 1"),
    ("stage 1: adapter forward, backward, AdamW", 3000, "stage 1"),
    ("stage 2: LoRA + adapter step (gradients through the U-Net)", 300, "stage 2"),
    ("ITM query, DPT (4 candidates)", 1000 * 4, "discrimination"),
    ("REC expression, DPT", 1000 * 4, "discrimination"),
    ("generation: U-Net, 15 CFG steps (plain)", 1424 * 3, "generation"),
    ("generation: VAE decode", 1424 * 3, "generation"),
    ("generation: self-correction's extra (15 gradient passes)", 1424, "generation"),
    ("oracle grading", 1424 * 3, "generation"),
]


def arm_estimate(costs: pd.DataFrame, counts=SEEDS_DPT_ARM) -> pd.DataFrame:
    """Seconds of one arm, part by part: unit cost x count. Columns: part, count, seconds, share (%), stage."""
    per_unit = costs.set_index("part")["seconds"]
    frame = pd.DataFrame([{"part": part, "count": n, "seconds": per_unit[part] * n, "stage": stage} for part, n, stage in counts])
    frame["share (%)"] = 100 * frame["seconds"] / frame["seconds"].sum()
    return frame


def measured_arms(scale: str = "toy", batch_name: str = "seeds") -> pd.DataFrame:
    """The seconds each finished run of a batch took, part by part (``metrics.json``), with its
    machine. Empty when none has finished here or in ``results/``."""

    batch = ablations.load_batch(repo_root() / "papermill_params" / "ablations" / f"{batch_name}.yaml")
    rows = []
    for name, parameters in batch.for_scale(scale).variants.items():
        where = ablations.outcomes_dir(batch, name, scale, ablations.run_hash(batch.notebook, {**parameters, "scale": scale}, scale))
        if where is None:
            continue
        found = json.loads(ablations._outcome_file(where, scale, "metrics.json").read_text())
        total = json.loads((where / "done.json").read_text())["seconds"]
        rows.append({"variant": name, **found.get("seconds", {}), "total": total,
                     "cpu": found.get("float environment", {}).get("cpu", found.get("machine", ""))})
    return pd.DataFrame(rows)


def notebook_sections(path: Path) -> pd.DataFrame:
    """An executed notebook's seconds per section (its "## " headings), from papermill's per-cell
    durations. Columns: section, seconds."""
    cells = json.loads(Path(path).read_text())["cells"]
    section, rows = "(start)", []
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            headings = [line[3:].strip() for line in source.splitlines() if line.startswith("## ")]
            section = headings[-1] if headings else section
        elif cell.get("metadata", {}).get("papermill", {}).get("duration") is not None:
            rows.append({"section": section, "seconds": cell["metadata"]["papermill"]["duration"]})
    frame = pd.DataFrame(rows, columns=["section", "seconds"])
    return frame.groupby("section", sort=False)["seconds"].sum().reset_index()


def profile(scale: str = "toy", measure: bool = True) -> None:
    """Print the three views of the module docstring."""
    pd.set_option("display.width", 200)
    if measure:
        costs = unit_costs()
        print(f"## Unit costs on this machine ({torch.get_num_threads()} threads, toy model)\n")
        print(costs.assign(seconds=costs["seconds"].map(lambda s: f"{s:.4f}")).to_string(index=False))
        estimate = arm_estimate(costs)
        print("\n## One trained arm of the seeds batch (dpt-s<k>, toy scale): estimated from the unit costs\n")
        print(estimate.round(1).to_string(index=False))
        print(f"\n   total {estimate['seconds'].sum() / 60:.1f} min; by stage: "
              + ", ".join(f"{stage} {s / 60:.1f} min" for stage, s in estimate.groupby("stage", sort=False)["seconds"].sum().items()))
    measured = measured_arms(scale)
    print("\n## The seeds batch's finished runs: seconds by part (metrics.json)\n")
    print(measured.round(0).to_string(index=False) if len(measured) else "   none finished yet")
    folder = runs_dir(scale) / "notebooks"
    executed = sorted(folder.glob("0[0-3]*.ipynb")) if folder.exists() else []
    print("\n## The core notebooks' sections (papermill's cell durations)\n")
    if not executed:
        print(f"   no executed notebooks in {folder}: `make reproduce` writes them")
    for path in executed:
        sections = notebook_sections(path)
        print(f"{path.stem}: {sections['seconds'].sum() / 60:.1f} min")
        print(sections.round(0).to_string(index=False))
