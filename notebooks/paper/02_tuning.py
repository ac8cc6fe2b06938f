# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (dpt)
#     language: python
#     name: dpt
# ---

# %% [markdown]
# # Paper scale · 02 · Stage 2 on a real Stable Diffusion: Tab. 1 and Tab. 2
#
# The toy notebook `02_tuning` is the lesson: it explains stage 2 and grades every image with an
# exact oracle. This notebook is the same stage 2 on SD-1.4 / SD-2.1 with MS-COCO + RefCOCO/+/g,
# graded as the paper grades it, for a user with a GPU:
#
# 1. the stage-1 adapter of `01_probing` (run it first at the same scale, with the same `data`);
# 2. LoRA (rank 4, cross-attention) + the adapter tuned with the ITM and REC objectives
#    (`dptlib.method.train.tune`, App. B.3.1's settings in the scale's preset), the checkpoint chosen by the
#    CLIP score of images for **validation captions** (COCO val captions, none a benchmark prompt);
# 3. the base model and the tuned one sample every benchmark prompt with the same seeds (every
#    image has a twin), written as PNG under `runs/<scale>/benchmark_images/` with an index, so the
#    graders can run again without sampling again;
# 4. the graders of each column (`dptlib.evaluation.benchmarks.GRADERS_OF`): CLIP, BLIP-M, BLIP-C, the
#    GLIP score, IS / FID for Tab. 1; TIFA and T2I-CompBench's B-VQA, spatial, non-spatial and
#    3-in-1 for Tab. 2. Stand-ins (Grounding DINO for GLIP and UniDet, BLIP VQA for mPLUG) say so
#    in their column names and in the graders table.
#
# Every table gives each method's mean with a 95 % interval and the paired difference to the base
# model with its interval (bootstrap over prompts, each prompt with all its seeds). What the paper
# reports is one run per method without intervals; a single tuning run here is one run too.
#
# At the smoke scale this notebook is a dry run (`tests/test_paper_dry_run.py`): the toy Stable
# Diffusion, the toy data written as COCO / MDETR files, tiny random graders and a few prompts of
# each real benchmark. Its numbers mean nothing.

# %% tags=["parameters"]
scale = None  # "paper-sd21" | "paper-sd14" | "smoke" (a dry run); None reads $DPT_SCALE
model = None  # the Stable Diffusion tuned: a hub id in the local cache or a diffusers folder (None: the scale's)
data = None  # 01_probing's data manifest: per split, COCO captions + MDETR refexp + images
evaluator = None  # the CLIP 01_probing mined negatives with: "open_clip:<arch>:<checkpoint>" (or "toy")
graders = None  # grader -> local path: clip, clip_b32, blip2, vqa, detector, sentence_encoder, inception, tifa_questions, ...
benchmarks = None  # prompt set (or "file:<path>", one's own) -> number of prompts (None: all), e.g. {"cc500": None}
benchmarks_root = None  # the benchmarks' files (None: $DPT_BENCHMARKS_DIR, then the download cache)
fid_reference = None  # a folder of COCO-NSS1K's 943 COCO val2014 images (FID); None: no FID
image_size = None  # training images resized to this square side (None: the first image's size)
steps = None
batch_size = None
lora_rank = 4
validate_every = None
n_validation_prompts = None
n_train_images = None
seeds = None  # generation seeds per prompt
num_inference_steps = None
guidance_scale = 7.5
generation_batch_size = None
vqa_image_size = None  # BLIP VQA's input side: 480 in T2I-CompBench
noun_chunks = None  # T2I-CompBench's prompt reader: "spacy" (the benchmark's en_core_web_sm), "rules" (fallback), "auto"
seed = 0

# %%
import json
import time
from pathlib import Path

import pandas as pd
from IPython.display import display

from dptlib import checks, config
from dptlib.data.embedders import clip_embedder, load_evaluator, open_clip_embedder
from dptlib.data.manifest import manifest_splits
from dptlib.evaluation import benchmarks as benchmark_eval
from dptlib.experiments import report
from dptlib.method.backbone import load_backbone, load_pipeline
from dptlib.method.train import TuneConfig, tune

params = checks.notebook_parameters("paper/02_tuning", globals())
config.set_threads()
config.quiet_libraries()
run_dir = config.runs_dir(params.scale)
checks.check_prerequisites("paper/02_tuning", params.scale)  # 01_probing's adapter at this scale
sampler = dict(num_inference_steps=params.num_inference_steps, guidance_scale=params.guidance_scale,
               batch_size=params.generation_batch_size)
params

# %% tags=["nbval-ignore-output"]
config.float_environment()

# %% [markdown]
# ## Data and prompts
#
# The ITM / REC training split of the manifest (with App. B.1's mined negatives, as in
# `01_probing`), the first caption of each image of its validation split as the prompts that
# choose the checkpoint, and the benchmark prompts. A benchmark with many prompts can be cut to `n` of them, spread evenly over
# the file (COCO-NSS1K and TIFA are ordered by category, so every category stays).

# %%
embed = clip_embedder(*load_evaluator()) if params.evaluator == "toy" else open_clip_embedder(params.evaluator)
train = manifest_splits(params.data, embed, {"train": params.n_train_images}, image_size=params.image_size)["train"]
validation_prompts = benchmark_eval.validation_captions(params.data, params.n_validation_prompts)
items = benchmark_eval.benchmark_items(params.benchmarks, params.benchmarks_root)
print(f"train: {len(train)} images; validation prompts: {len(validation_prompts)}")
items.groupby("benchmark", sort=False).size().rename("prompts").to_frame()

# %% [markdown]
# ## Tuning (§3.2)
#
# LoRA on the U-Net's cross-attention projections and the adapter, from `01_probing`'s adapter,
# with $\mathcal{L}^{match}_t + \mathcal{L}^{ground}_t$. Every `validate_every` steps one image per
# validation caption is generated and scored by the evaluation CLIP (the paper's selection); the
# best checkpoint is kept in `runs/<scale>/tune/best` in the diffusers LoRA format.

# %%
suite = benchmark_eval.EvaluatorSuite.from_paths(params.graders, device=config.device(), vqa_image_size=params.vqa_image_size,
                                                 benchmarks_root=params.benchmarks_root, noun_chunks=params.noun_chunks)
backbone = load_backbone(params.model)
tune_config = TuneConfig.preset(params.scale if params.scale in TuneConfig.PRESETS else "smoke", model=params.model,
                                steps=params.steps, batch_size=params.batch_size, lora_rank=params.lora_rank,
                                validate_every=params.validate_every, seed=params.seed)
validate = benchmark_eval.clip_validator(backbone.pipe, validation_prompts, suite.clip, **sampler)
start = time.time()
result = tune(tune_config, train, run_dir / "probe", run_dir / "tune", backbone=backbone, validate=validate, progress=False)
print(f"{tune_config.steps} steps in {time.time() - start:.0f} s; best validation CLIP score "
      f"{result['best']['score']:.2f} at step {result['best']['step']}")
pd.DataFrame(result["validation"]).round(2)

# %% [markdown]
# ## Images: the base model and DPT on every benchmark prompt
#
# The same DDIM sampler, steps, guidance and seeds for both; image $k$ of seed $s$ starts from the
# same noise in both methods. DPT is the stock pipeline with the tuned LoRA loaded
# (`load_lora_weights`). A killed run keeps the chunks it finished.

# %%
folder = run_dir / "benchmark_images"
methods = {"SD (base)": load_pipeline(params.model), "DPT": load_pipeline(params.model, lora=run_dir / "tune" / "best")}
start = time.time()
index = pd.concat([benchmark_eval.generate_images(pipe, items, params.seeds, folder, name, progress=False, **sampler)
                   for name, pipe in methods.items()], ignore_index=True)
index.to_csv(run_dir / "benchmark_index.csv", index=False)
(run_dir / "benchmark_sampler.json").write_text(json.dumps({"seeds": params.seeds, **sampler}))  # paper/03 samples the same way
print(f"{len(index)} images in {time.time() - start:.0f} s")

# %% [markdown]
# ## Grading
#
# One row per image, with the pairing columns (method, benchmark, prompt id, seed) and each
# column's grader. Benchmarks whose grader is not given are listed and left out.

# %%
start = time.time()
scores = suite.grade(index, progress=False)
scores.drop(columns=["path"]).to_csv(run_dir / "benchmark_scores.csv", index=False)
print(f"graded {len(scores)} images in {time.time() - start:.0f} s; not graded (no grader given): {suite.missing or 'none'}")
graders = benchmark_eval.graders_used(scores)
report.save_table(graders.rename_axis("column"), "paper_graders", params.scale)
graders

# %% [markdown]
# ## Tab. 1 and Tab. 2
#
# One row per benchmark and column: each method's mean [95 % interval], then DPT's paired
# difference to the base model. CLIP is 100 · cos; BLIP-M and BLIP-C are × 100; GLIP is the % of images with both
# objects detected; B-VQA, spatial, non-spatial, 3-in-1 and TIFA are × 100, as the paper prints them
# (the benchmarks' own code writes them in [0, 1]). A T2I-CompBench column whose name says
# "fallback" read its prompts without spaCy's model (`docs/paper-scale.md`, D5).

# %%
comparison = benchmark_eval.paired_comparison(scores, "SD (base)", list(methods))
comparison.round(3).to_csv(run_dir / "benchmark_comparison.csv")
names = comparison.index.get_level_values("benchmark")
others = [b for b in pd.unique(names) if b not in benchmark_eval.TABLE_1 + benchmark_eval.TABLE_2]  # prompt files of one's own
for name, benchmarks in (("tab1_generation", benchmark_eval.TABLE_1), ("tab2_generation", benchmark_eval.TABLE_2),
                         ("other_generation", others)):
    part = comparison[names.isin(benchmarks)]
    if not part.empty:
        table = benchmark_eval.paper_table(part, "SD (base)")
        report.save_table(table, f"paper_{name}", params.scale)
        display(table)

# %% [markdown]
# IS (and FID on COCO-NSS1K where `fid_reference` names the 943 COCO val2014 images), per method
# and set, with the set sizes: FID on 943 images is biased high and IS on a few hundred images is
# noisy, so the sizes go with the numbers.

# %%
real = None
if params.fid_reference:
    real = {"coco_nss1k": benchmark_eval.load_images(sorted(str(p) for p in Path(params.fid_reference).glob("*.jpg")))}
quality = suite.set_metrics(index, real)
if not quality.empty:
    report.save_table(quality.set_index(["benchmark", "method"]), "paper_tab1_quality", params.scale)
quality
