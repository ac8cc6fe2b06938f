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
# # One ablation variant: probe, tune, measure
#
# The ablation notebooks (`04_ablation_blocks` … `08_ablation_mse`) run this notebook once per
# variant with papermill (`dptlib.experiments.ablations`), each run changing one thing. It is DPT end to end
# at a reduced budget, in four steps:
#
# 1. **Stage 1** (§3.1): the adapter on the frozen U-Net, probing `blocks` (several blocks, joined
#    with `+`, are fused by adding their resized maps, Tab. 6), with `adapter_layers` encoder and
#    decoder layers (Tab. 8), at $t \sim U[$`train_timesteps`$)$ (Tab. 10 trains at one $t$).
#    Variants that share every stage-1 setting share one stage-1 adapter (kept in `shared_dir`).
# 2. **Stage 2** (§3.2): LoRA of rank `lora_rank` (Tab. 7) + the adapter (or LoRA alone, Tab. 11),
#    with the objectives and the denoising term's weight `mse_coef` (Tab. 5, 9), for `tune_steps`
#    steps. Deviation: the last step is kept, not the best on validation prompts (the paper's
#    selection), so that every variant gets the same budget.
# 3. **Discrimination**: ITM overall (true negatives, the HN-MSCOCO protocol) and REC P@1 on the
#    test split, asked at `eval_timestep`.
# 4. **Generation**: test prompts of toy-CC (ID), toy-CC (OOD) and toy-NSS, graded by the oracle,
#    with the evaluator's CLIP score and the Fréchet distance of its image features to real
#    renders; sampled plainly and with self-correction (Eq. 9) at η = `eta`.
#
# `training_seed` changes what training draws (initialisation, data order, noise and timesteps)
# and nothing else: the test prompts, generation seeds and test queries come from `seed`, so the
# images and queries of every training seed stay paired (the `seeds` batch, `make seeds`).
# `shuffle_pairs` trains both stages on shuffled image-text pairs (the negative control);
# `null_control` also samples with the random-direction null of self-correction (a unit-RMS step
# of the same η along a random direction fixed per image).
#
# `probe_steps = 0` is the untuned base model (no adapter: generation only), the reference row
# of the paper's tables. Everything goes to `metrics.json` and per-query / per-image CSVs in the
# runs folder, which the ablation notebooks compare, paired, across variants.

# %% tags=["parameters"]
scale = None  # "smoke" | "toy"; None reads $DPT_SCALE (default "toy")
model = "toy"  # the Stable Diffusion probed and tuned
blocks = "up1"  # probed block(s); "mid+down2+up0" fuses several (Tab. 6)
adapter_layers = 1  # encoder layers, and as many decoder layers, of the adapter (Tab. 8)
adapter_input_norm = "none"  # "batch": standardise each channel of the probed map before the adapter; "whiten": decorrelate too (diagnostics, 04)
train_timesteps = [0, 1000]  # t drawn from [lo, hi) in both stages; [250, 251]: t 250 only (Tab. 10)
eval_timestep = 250  # the t at which ITM / REC are asked
probe_steps = None  # 0: the base model, no adapter
probe_lr = None  # stage-1 learning rate; None: the scale's preset (toy: 1e-3)
probe_schedule = None  # stage-1 learning-rate schedule: "constant", "cosine" or "linear"; None: the preset's (toy: cosine)
probe_warmup = None  # stage-1 warm-up steps; None: the preset's (toy: 100)
probe_queries = None  # adapter queries, matching ones included; None: the preset's (toy: 16, 8 of them matching)
tune_steps = None  # 0: stage 1 only
lora_rank = 4
trainable = "adapter+lora"  # or "lora" (Tab. 11)
objectives = "both"  # "matching" (GM), "grounding" (LG) or "both"
mse_coef = 0.0  # weight of the denoising loss in stage 2 (Tab. 5, 9)
batch_size = None
n_train_images = None
n_test_images = None
n_rec_expressions = None
prompts = None  # test prompts per generation cell
seeds = None
num_inference_steps = None
guidance_scale = 7.5
generate = True  # False: discrimination only (Tab. 10)
eta = 0.03  # self-correction strength: the η 03_self_correction chose on validation prompts
n_real_images = None  # real renders the Fréchet distance compares with
shared_dir = None  # stage-1 adapters and the exported toy data shared by variants; None: the runs folder
seed = 0  # the data, test prompts, generation seeds and test queries
training_seed = None  # what training draws (init, data order, noise); None: seed
shuffle_pairs = False  # True: both stages on shuffled image-text pairs (the negative control)
null_control = False  # True: also sample with the random-direction null of self-correction
stage1_eval = False  # True: also ask the stage-1 adapter (Tab. 3 and 10 are about stage 1), as well as the tuned one
extra_eval_timesteps = []  # more t at which the stage-1 adapter (with stage1_eval) is asked ITM / REC (Tab. 10), e.g. [0, 999]
baselines = False  # True: the training-free baselines of Tab. 3 on the same queries (DiffusionITM; local denoising for REC)
denoising_timesteps = 10  # timesteps the baselines average over

# %%
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display

from dptlib import checks, config
from dptlib.data.discrimination import shuffled_pairs
from dptlib.evaluation.baselines import DenoisingScorer, evenly_spaced_timesteps, local_denoising_boxes
from dptlib.evaluation.metrics import frechet_distance, image_features, itm_outcomes, itm_test_set, rec_outcomes
from dptlib.method.backbone import Backbone, load_backbone, load_pipeline
from dptlib.method.checkpoint import atomic_write_text, exclusive, load_adapter
from dptlib.method.inference import DPTScorer
from dptlib.method.train import ProbeConfig, TuneConfig, cache_latents, probe, tune
from dptlib.toy.data import toy_discrimination_data
from dptlib.toy.evaluation import compare_methods
from dptlib.toy.prompts import generation_prompts
from dptlib.toy.world import ToyWorld, ToyWorldConfig

params = checks.notebook_parameters("ablation_variant", globals())
config.set_threads()
config.quiet_libraries()
run_dir = config.runs_dir(params.scale)  # a batch gives each variant its own ($DPT_RUNS_DIR)
if "DPT_RUNS_DIR" not in os.environ:  # opened by hand: keep clear of the core notebooks' runs (02's tune/, 01's outcomes)
    run_dir = run_dir / "ablations" / "by-hand"
run_dir.mkdir(parents=True, exist_ok=True)
shared = Path(params.shared_dir) if params.shared_dir else run_dir
preset = params.scale if params.scale in ProbeConfig.PRESETS else "toy"
training_seed = params.seed if params.training_seed is None else params.training_seed
seconds = {}
params

# %% [markdown]
# ## Data
#
# The toy world's ITM / REC splits (exported in the COCO / RefCOCO formats, negatives false by
# the oracle) and the generation test prompts, as in `01_probing` and `02_tuning`.

# %%
start = time.time()
world = ToyWorld(ToyWorldConfig(seed=params.seed))
splits, embed = toy_discrimination_data(shared / "toyworld", {"train": params.n_train_images, "test": params.n_test_images},
                                        seed=params.seed)
train, test = splits["train"], splits["test"]
if params.shuffle_pairs:  # the negative control: no image shown with a text it belongs to
    train = shuffled_pairs(train, training_seed)
test_prompts, _ = generation_prompts(world.config, params.prompts, 0, seed=params.seed)
seconds["data"] = time.time() - start
{"train images": train.n_captioned, "test images": test.n_captioned, "test prompts": {c: len(p) for c, p in test_prompts.items()}}

# %% [markdown]
# ## Stage 1: probing
#
# The stage-1 adapter is named by a hash of what it depends on; a variant that changes only
# stage 2 finds it already trained by an earlier variant (or resumes it where a killed run left it).

# %%
def stage1_config() -> ProbeConfig:
    base = ProbeConfig.preset(preset)
    adapter = {**vars(base.adapter), "encoder_layers": params.adapter_layers, "decoder_layers": params.adapter_layers}
    if params.probe_queries is not None:
        adapter["num_queries"] = params.probe_queries
    adapter["input_norm"] = params.adapter_input_norm
    return ProbeConfig.preset(preset, model=params.model, blocks=params.blocks, steps=params.probe_steps, batch_size=params.batch_size,
                              lr=params.probe_lr, lr_schedule=params.probe_schedule, warmup_steps=params.probe_warmup,
                              timesteps=tuple(params.train_timesteps), adapter=adapter, seed=training_seed)


backbone = load_backbone(params.model, device=config.device())
probe_dir = None
if params.probe_steps > 0:
    probe_config = stage1_config()
    key = {"config": repr(probe_config), "n_train_images": params.n_train_images}
    if params.shuffle_pairs:  # (a key without it is an unshuffled adapter's: earlier runs' keys stay valid)
        key["shuffle_pairs"] = True
    if params.adapter_input_norm != "none":  # (likewise; the config's repr leaves it out)
        key["input_norm"] = params.adapter_input_norm
    probe_dir = shared / "stage1" / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    start = time.time()
    with exclusive(shared / "locks" / f"stage1-{probe_dir.name}.lock"):  # an arm run at once with the same stage 1 waits for it
        if (probe_dir / "adapter.safetensors").exists() and not (probe_dir / "probe.state.safetensors").exists():
            print(f"stage 1: reusing {probe_dir.name}")
        else:
            probe(probe_config, train, probe_dir, backbone=backbone, progress=False)
            atomic_write_text(json.dumps(key, indent=1), probe_dir / "key.json")
    seconds["stage 1"] = time.time() - start
    print(f"stage 1 ({params.blocks}, {params.adapter_layers} layer(s), t in {params.train_timesteps}): {seconds['stage 1']:.0f} s")

# %% [markdown]
# ## Stage 2: tuning
#
# LoRA on the cross-attention projections, $W = W_0 + \tfrac{\alpha}{r} BA$ with $\alpha = r$,
# trained with $\mathcal{L}^{match} + \mathcal{L}^{ground}$ (+ `mse_coef` × the denoising loss).

# %%
adapter_dir = probe_dir
if probe_dir is not None and params.tune_steps > 0:
    tune_config = TuneConfig.preset(preset, model=params.model, steps=params.tune_steps, batch_size=params.batch_size,
                                    lora_rank=params.lora_rank, trainable=params.trainable, objectives=params.objectives,
                                    mse_coef=params.mse_coef, timesteps=tuple(params.train_timesteps), validate_every=0,
                                    seed=training_seed)
    start = time.time()
    tune(tune_config, train, probe_dir, run_dir / "tune", backbone=backbone, progress=False)
    seconds["stage 2"] = time.time() - start
    adapter_dir = run_dir / "tune"
    print(f"stage 2 (rank {params.lora_rank}, {params.trainable}, mse {params.mse_coef}): {seconds['stage 2']:.0f} s")
pipe = load_pipeline(params.model, device=config.device(), lora=adapter_dir if adapter_dir == run_dir / "tune" else None)

# %% [markdown]
# ## Discrimination: ITM and REC on the test split
#
# The adapter at `eval_timestep` (tasks "ITM overall", "REC P@1"); with `stage1_eval` the
# stage-1 adapter too ("ITM overall (stage 1)", ...), also at each of `extra_eval_timesteps`
# ("ITM overall (stage 1) (t = 0)", ...). With `baselines`, the training-free
# baselines of Tab. 3 answer the same queries ("ITM overall (DiffusionITM)", "REC P@1 (local
# denoising)"): the queries are fixed by `seed`, so every variant's outcomes pair with theirs.

# %%
def ask(score_pairs, predict_boxes, suffix: str = "") -> dict[str, np.ndarray]:
    """Per-query outcomes of one scorer: ITM overall (both directions) and REC P@1, as available."""
    outcomes = {}
    if score_pairs is not None:
        itm = itm_outcomes(score_pairs, itm_test_set(test, n_negatives=3, seed=params.seed))
        outcomes[f"ITM overall{suffix}"] = np.concatenate([itm["I->T"], itm["T->I"]])
    if predict_boxes is not None:
        outcomes[f"REC P@1{suffix}"] = rec_outcomes(predict_boxes, test, rec_items)
    return outcomes


metrics = {"parameters": {k: v for k, v in vars(params).items() if k != "shared_dir"}}
rec_items = np.linspace(0, len(test.expressions) - 1, min(len(test.expressions), params.n_rec_expressions)).round().astype(int)
outcomes = {}
if adapter_dir is not None or params.baselines:
    start = time.time()
    tuned = Backbone(pipe)  # the saved model, loaded back: what is measured is what was written
    test_latents = cache_latents(tuned, test.images)
if adapter_dir is not None:
    adapter, probed, _ = load_adapter(adapter_dir)
    scorer = DPTScorer(tuned, adapter, probed, test, test_latents, timestep=params.eval_timestep, seed=params.seed)
    outcomes.update(ask(scorer.score_pairs, scorer.predict_boxes))
if probe_dir is not None and params.stage1_eval:  # the stage-1 adapter on the untuned U-Net
    stage1_adapter, stage1_blocks, _ = load_adapter(probe_dir)
    untuned = load_backbone(params.model, device=config.device())  # (stage 2 put its LoRA into `backbone`)
    stage1_latents = cache_latents(untuned, test.images)
    for t in [params.eval_timestep, *params.extra_eval_timesteps]:
        scorer = DPTScorer(untuned, stage1_adapter, stage1_blocks, test, stage1_latents, timestep=t, seed=params.seed)
        outcomes.update(ask(scorer.score_pairs, scorer.predict_boxes, " (stage 1)" + ("" if t == params.eval_timestep else f" (t = {t})")))
if params.baselines:
    classifier = DenoisingScorer(tuned, test, test_latents, evenly_spaced_timesteps(params.denoising_timesteps), seed=params.seed)
    outcomes.update(ask(classifier.normalized().score_pairs, None, " (DiffusionITM)"))
    outcomes.update(ask(None, lambda e: local_denoising_boxes(classifier, e), " (local denoising)"))
if outcomes:
    pd.concat([pd.DataFrame({"task": task, "item": np.arange(len(hits)), "correct": hits.astype(bool)}) for task, hits in outcomes.items()]
              ).to_csv(run_dir / "discrimination_outcomes.csv", index=False)
    metrics["discrimination"] = {task: 100 * float(hits.mean()) for task, hits in outcomes.items()}
    seconds["discrimination"] = time.time() - start
    display(pd.Series(metrics["discrimination"]).round(1))

# %% [markdown]
# ## Generation
#
# Every test prompt once per seed, the same seeds (so the same initial noise) in every variant:
# the ablation notebooks compare variants image by image. With an adapter, the same prompts are
# sampled again with self-correction (Eq. 9, the paper's variant, η = `eta`), and with
# `null_control` along random directions of the same size. A variant without stage 2 samples
# only with self-correction: its plain images would be the base model's.

# %%
def generation_metrics(scores: pd.DataFrame, features: dict) -> dict:
    """Per sampling method: each cell's oracle exact-match and binding rates (%) and CLIP score,
    and the Fréchet distance of all its images' features to real renders."""
    real = image_features(embed, np.stack([world.render(s) for s in world.scenes("test", params.n_real_images)]))
    return {method: {**{cell: {"correct": 100 * g["correct"].mean(), "binding": 100 * g["binding"].mean(),
                               "clip_score": float(g["clip_score"].mean())} for cell, g in frame.groupby("cell")},
                     "frechet": frechet_distance(features[method], real)}
            for method, frame in scores.groupby("method")}


methods = {}
if params.generate:
    if adapter_dir is None or adapter_dir != probe_dir:  # untuned, the plain images are the base model's: not sampled again
        methods["plain"] = (pipe, None)
    if adapter_dir is not None:
        methods["self-corrected"] = (pipe, dict(self_correct=dict(adapter=adapter, blocks=probed, eta=params.eta)))
        if params.null_control:
            methods["random direction"] = (pipe, dict(self_correct=dict(adapter=adapter, blocks=probed, eta=params.eta,
                                                                        direction="random")))
if methods:
    start = time.time()
    scores, features = compare_methods(methods, test_prompts, params.seeds, embed=embed, config=world.config, progress=False,
                                       num_inference_steps=params.num_inference_steps, guidance_scale=params.guidance_scale)
    scores = scores.rename(columns={"benchmark": "cell"})
    scores.to_csv(run_dir / "generation_scores.csv", index=False)
    metrics["generation"] = generation_metrics(scores, features)
    seconds["generation"] = time.time() - start
    print(f"{len(scores)} images in {seconds['generation']:.0f} s")
    display(scores.groupby(["method", "cell"])[["correct", "binding", "clip_score"]].mean().mul([100, 100, 1]).round(1))

# %% [markdown]
# ## Results
#
# `metrics.json` holds the parameters, the headline numbers and the seconds each part took.

# %%
metrics["seconds"] = {part: round(s, 1) for part, s in seconds.items()}
metrics["machine"] = config.machine()
metrics["float environment"] = config.float_environment()  # what decides the rounding of these numbers
metrics["stage1"] = None if probe_dir is None else probe_dir.name
atomic_write_text(json.dumps(metrics, indent=1), run_dir / "metrics.json")
metrics["seconds"]
