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

# %%

# %% [markdown]
# # 03 · Self-correction (§3.3)
#
# The tuned model carries a discriminator: the adapter's matching score $s(\mathbf{z}_t, y)$ says
# how well the noisy latent fits the prompt. Self-correction uses it while sampling: before the
# U-Net predicts the noise at step $t$, the latent is moved up the score's gradient,
#
# $$\hat{\mathbf{z}}_t = \mathbf{z}_t + \eta \frac{\partial s(\mathbf{z}_t, y)}{\partial \mathbf{z}_t} \qquad \text{(Eq. 9)}$$
#
# and the noise is predicted from $\hat{\mathbf{z}}_t$. The gradient goes through the U-Net only
# up to the probed block (early exit) and the adapter. The paper's $\eta = 0.5$ fits SD's gradient
# scale; here each sample's gradient is rescaled to unit RMS (`normalize=True`), so $\eta$ is a step
# size in latent units, and $\eta$ is chosen by the sweep below on prompts that are not test prompts.

# %% tags=["parameters"]
scale = None  # "smoke" | "toy"; None reads $DPT_SCALE (default "toy")
etas = None
eta = None  # None: the best eta of the sweep
normalize = True
refresh_every = 1
n_sweep_prompts = None
n_prompts = None
seeds = None
num_inference_steps = None
guidance_scale = 7.5
ablation_steps = None
n_train_images = None
n_validation_prompts = None
seed = 0

# %%
import textwrap
import time

import pandas as pd
import seaborn as sns

from dptlib import config, report
from dptlib.backbone import load_backbone
from dptlib.benchmarks import other_prompts, test_and_validation_prompts
from dptlib.data import toy_discrimination_data
from dptlib.metrics import compare_methods, oracle_scores, tuning_validator
from dptlib.sampling import generate
from dptlib.toymodel import TOY_SD_DIR, load_toy_pipeline
from dptlib.toyworld import ToyWorld, ToyWorldConfig
from dptlib.train import TuneConfig, load_adapter, tune

params = config.notebook_parameters(
    "03_self_correction", scale=scale, etas=etas, eta=eta, normalize=normalize, refresh_every=refresh_every,
    n_sweep_prompts=n_sweep_prompts, n_prompts=n_prompts, seeds=seeds, num_inference_steps=num_inference_steps,
    guidance_scale=guidance_scale, ablation_steps=ablation_steps, n_train_images=n_train_images,
    n_validation_prompts=n_validation_prompts, seed=seed,
)
config.set_threads()
config.quiet_libraries()
report.set_theme()
run_dir = config.runs_dir(params.scale)
tuned_dir = run_dir / "tune" / "best"
if not (tuned_dir / "adapter.safetensors").exists():
    raise FileNotFoundError(f"no tuned model in {tuned_dir}: run 02_tuning at scale {params.scale!r} first")
sampler = dict(num_inference_steps=params.num_inference_steps, guidance_scale=params.guidance_scale)
params

# %% [markdown]
# ## The tuned model and its adapter
#
# The LoRA goes into a stock pipeline with `load_lora_weights`; the adapter and the probed block
# come from the same folder.

# %%
world = ToyWorld(ToyWorldConfig(seed=params.seed))
dpt_pipe = load_toy_pipeline()
dpt_pipe.load_lora_weights(tuned_dir)
adapter, blocks, _ = load_adapter(tuned_dir)


def corrected(eta, refresh_every=params.refresh_every):
    """generate() arguments that switch self-correction on."""
    return dict(self_correct=dict(adapter=adapter, blocks=blocks, eta=eta, normalize=params.normalize, refresh_every=refresh_every))


# %% [markdown]
# ## Fig. 4b analogue: the strength η
#
# toy-CC prompts (half with a held-out colour-shape pair) that are not among the test prompts,
# one seed. Too small an η changes nothing; too large a step pushes the latent off the data the
# U-Net knows. η = 0 (no correction) is the reference; the rows below use the best η > 0 of the
# sweep, whether or not it beats the reference (the table says which).

# %%
every_test, validation_prompts = test_and_validation_prompts(world.config, params.n_prompts, params.n_validation_prompts)
test_prompts = {name: every_test[name] for name in ("toy-nss", "toy-cc")}
sweep_prompts = other_prompts("toy-cc", world.config, params.n_sweep_prompts, [p for ps in every_test.values() for p in ps],
                              seed=2)
start = time.time()
sweep, _ = compare_methods({f"{e:g}": (dpt_pipe, corrected(e)) for e in params.etas}, {"toy-cc": sweep_prompts}, [params.seed],
                           config=world.config, progress=False, **sampler)
print(f"{len(sweep)} images in {time.time() - start:.0f} s")
sweep["eta"] = sweep["method"].astype(float)
fig4b = sweep.groupby(["eta", "distribution"])[["binding", "correct"]].mean().mul(100).unstack("distribution")
by_eta = sweep.groupby("eta")["correct"].mean()
chosen_eta = params.eta if params.eta is not None else float(by_eta[by_eta.index > 0].idxmax())
table = fig4b.round(1).set_axis([f"{m} {d}" for m, d in fig4b.columns], axis=1)
report.save_table(table.set_axis([f"{e:g}" for e in table.index]).rename_axis("eta"), "fig4b_eta_sweep", params.scale, floatfmt=".1f")
plot = sweep.melt(id_vars=["eta", "distribution"], value_vars=["binding", "correct"], var_name="oracle")
plot["value"] *= 100
grid = sns.relplot(data=plot, x="eta", y="value", hue="distribution", col="oracle", kind="line", marker="o", errorbar=None,
                   height=2.6)
grid.set(xscale="symlog", xlabel="η", ylabel="%")
report.save_figure(grid.figure, "fig4b_eta_sweep", params.scale)
print(f"eta used below: {chosen_eta:g}")

# %% [markdown]
# Refreshing the gradient only every 2nd step (and reusing it in between) halves the extra cost;
# on the same sweep prompts, at the chosen η, does it keep the gain?

# %%
refresh, _ = compare_methods({"every step": (dpt_pipe, corrected(chosen_eta, 1)), "every 2nd step": (dpt_pipe, corrected(chosen_eta, 2))},
                             {"toy-cc": sweep_prompts}, [params.seed], config=world.config, progress=False, **sampler)
refresh.groupby("method")[["binding", "correct"]].mean().mul(100).round(1)

# %% [markdown]
# ## Tab. 4 analogue: which objective, and self-correction on top
#
# Two more stage-2 runs from the same stage-1 adapter, with only the global matching (GM) or only
# the local grounding (LG) objective, `ablation_steps` steps (300 at the toy scale, half of
# `02_tuning`'s run, to fit the CPU budget) and the same checkpoint selection and validation
# prompts as `02_tuning`'s GM + LG model. All rows: toy-NSS (ID) and toy-CC (ID / OOD), exactly right (%),
# mean ± std over seeds. The base model's row is the untuned U-Net.

# %%
train, _, embed = toy_discrimination_data(run_dir / "toyworld", params.n_train_images, 0, seed=params.seed)
variants = {}
for objective, label in (("matching", "GM"), ("grounding", "LG")):
    backbone = load_backbone(str(TOY_SD_DIR))
    variant_config = TuneConfig.preset(params.scale if params.scale in TuneConfig.PRESETS else "toy", objectives=objective,
                                       steps=params.ablation_steps, seed=params.seed)
    out_dir = run_dir / f"tune-{objective}"
    start = time.time()
    result = tune(variant_config, train, run_dir / "probe", out_dir, backbone=backbone, progress=False,
                  validate=tuning_validator(backbone.pipe, validation_prompts, embed, params.num_inference_steps, config=world.config))
    print(f"{label}: {variant_config.steps} steps in {time.time() - start:.0f} s, best at step {result['best']['step']}")
    variants[label] = load_toy_pipeline()
    variants[label].load_lora_weights(out_dir / "best")

# %%
base_pipe = load_toy_pipeline()
methods = {
    "SD (base)": (base_pipe, None),
    **{label: (pipe, None) for label, pipe in variants.items()},
    "GM + LG (DPT)": (dpt_pipe, None),
    "GM + LG + SC (DPT + SC)": (dpt_pipe, corrected(chosen_eta)),
}
start = time.time()
scores, _ = compare_methods(methods, test_prompts, params.seeds, config=world.config, **sampler)
print(f"{len(scores)} images in {time.time() - start:.0f} s")
scores.to_csv(run_dir / "self_correction_scores.csv", index=False)
scores["split"] = scores["benchmark"] + " (" + scores["distribution"] + ")"
tab4 = report.method_table(scores, "split", methods=methods)
report.save_table(tab4.rename_axis("method"), "tab4_objectives", params.scale)
tab4

# %% [markdown]
# ## Fig. 6 analogue: per category
#
# toy-NSS's categories (counting, spatial relations, counting + relation, attributes), for the
# base model, DPT and DPT + SC; bars are means over seeds, whiskers the spread of per-seed means.

# %%
nss = scores[(scores["benchmark"] == "toy-nss") & scores["method"].isin(["SD (base)", "GM + LG (DPT)", "GM + LG + SC (DPT + SC)"])]
per_seed = nss.groupby(["method", "category", "seed"])["correct"].mean().mul(100).reset_index()
axes = sns.catplot(data=per_seed, x="category", y="correct", hue="method", kind="bar", errorbar="sd", height=3, aspect=2)
axes.set(ylabel="exactly right (%)")
report.save_figure(axes.figure, "fig6_categories", params.scale)

# %% [markdown]
# ## Fig. 5 analogue: the same prompts and seeds, three ways
#
# Columns: base SD, DPT, DPT + SC. ✓ / ✗: the oracle's verdict on the whole prompt.

# %%
shown = [ps[i] for ps in test_prompts.values() for i in range(0, len(ps), max(1, len(ps) // 4))][:8]
grid_images, titles = [], []
columns = {"SD": (base_pipe, {}), "DPT": (dpt_pipe, {}), "DPT+SC": (dpt_pipe, corrected(chosen_eta))}
rows = {name: generate(pipe, [p.prompt for p in shown], seed=params.seed, progress=False, **sampler, **extra)
        for name, (pipe, extra) in columns.items()}
verdicts = {name: oracle_scores(images, [p.spec for p in shown], world.config)["correct"] for name, images in rows.items()}
for k, p in enumerate(shown):
    for name in columns:
        grid_images.append(rows[name][k])
        titles.append(f"{name} {'✓' if verdicts[name][k] else '✗'}\n" + textwrap.fill(p.prompt, 26))
figure = report.image_grid(grid_images, titles, ncols=6, cell_inches=1.5, title_size=5)
report.save_figure(figure, "fig5_samples", params.scale)

# %% [markdown]
# ## What a corrected step costs
#
# Time to sample 32 images with 25 steps, plainly and with self-correction (every step, and with
# the gradient refreshed every 2nd step), on this machine. `python -m dptlib.bench sample` times
# one step at the SD-2.1 U-Net's size.

# %%
timing_prompts = [p.prompt for p in test_prompts["toy-cc"]][:32]
times = {}
for label, extra in (("plain", {}), ("SC", corrected(chosen_eta, 1)), ("SC, refresh every 2", corrected(chosen_eta, 2))):
    runs = []
    for _ in range(3):
        start = time.time()
        generate(dpt_pipe, timing_prompts, seed=0, num_inference_steps=25, progress=False, **extra)
        runs.append(time.time() - start)
    times[label] = sorted(runs)[1]
pd.DataFrame({"median seconds": times, "x plain": {k: v / times["plain"] for k, v in times.items()}}).round(2)
