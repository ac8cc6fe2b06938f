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
# # 06 · Ablation: layers of the discriminative adapter (Tab. 8)
#
# **The paper's question.** The adapter's transformer has as many encoder as decoder layers. How
# many does DPT need?
#
# **The paper's finding.** Four layers give the best generation, and every layer count beats the
# untuned SD-2.1 (the "0 layers" row): "the alignment performance is always better than SD-v2.1"
# (App. A.6). The paper's numbers (App. Tab. 8):

# %% tags=["parameters"]
scale = None  # "smoke" | "toy"; None reads $DPT_SCALE (default "toy")
batch = "adapter_layers"  # papermill_params/ablations/<batch>.yaml
max_variants = None  # the batch's first variants only (None: all)
run = True  # run the variants whose results are missing; False: show the results there are

# %%
import pandas as pd

from dptlib import ablations, config, report

params = config.notebook_parameters("06_ablation_adapter_layers", globals())
report.set_theme()
pd.DataFrame({"COCO-NSS1K CLIP": [34.96, 35.83, 35.51, 35.55, 35.91, 35.80],
              "COCO-NSS1K BLIP-ITM": [73.32, 78.58, 77.67, 77.14, 79.41, 78.76],
              "CC-500 BLIP-ITM": [85.45, 90.72, 91.14, 90.55, 92.92, 90.89]},
             index=pd.Index([0, 1, 2, 3, 4, 5], name="paper, Tab. 8: layers"))

# %% [markdown]
# ## The batch
#
# One run of `ablation_variant` per layer count (`papermill_params/ablations/adapter_layers.yaml`):
# each trains its own stage-1 adapter (the layers are the adapter's), tunes, and is measured, at
# the worker's toy preset (600 stage-1 and 100 stage-2 steps: the other batches' budgets differ,
# so no stage-1 adapter is shared with them). Finished variants are read back, not run again.
#
# Two more variants are a diagnosis, not rows of the paper's table: they train 1 and 2 layers at a
# stage-1 learning rate of 3e-4 instead of the toy preset's 1e-3 (stage 1 only; ITM and REC
# measured, nothing generated). Why they are here is told after the table.

# %% tags=["nbval-ignore-output"]
spec, results = ablations.run_and_collect(params.batch, params.scale, params.max_variants, run=params.run)
results.metrics.round(1)

# %% [markdown]
# ## Tab. 8 analogue
#
# The mean with its 95 % interval per cell; then the paired difference to the base model
# (generation) and to the 1-layer adapter (discrimination).

# %%
generation, discrimination = ablations.compare_variants(results, spec.reference, discrimination_reference="adapter_layers=1")
tab8, tab8_differences = report.save_variant_tables(generation, discrimination, "tab8_layers", "adapter layers", params.scale)
tab8

# %%
tab8_differences

# %% tags=["nbval-ignore-output"]
ablations.save_batch_figure(generation, discrimination, list(tab8.index), "tab8_layers", params.scale)

# %% [markdown]
# **What the toy run found: at the toy preset's learning rate, no adapter deeper than one layer
# learns, and the learning rate, not the depth, is why.** At 600 stage-1 steps and lr 1e-3 the
# 1-layer adapter matches at 65.0 % ITM overall; the 2- to 5-layer ones are at chance (20.5-22.5 %,
# chance 25 %; 42.5-44.5 points below one layer). Their matching losses over the last 100 steps
# (2.15-2.18) sit at chance, 2 ln 3 = 2.20, where the 1-layer one fell to 1.41. Every adapter is on
# the REC plateau (3.8-7.0 %).
#
# *Why.* The adapter is a post-norm transformer (as DETR's) trained without warm-up, and the toy
# preset's 1e-3 is ten times the paper's 1e-4: post-norm stacks are known to stall at large
# learning rates without warm-up, more so the deeper they are (Xiong et al., 2020). At 3e-4 the same 600 steps train
# both depths (the last two rows): 2 layers reach 46.6 % ITM and 37.8 % REC, 1 layer 44.2 % and
# 31.4 % (paired, below: ITM +2.4 [-0.7, +5.5], REC +6.4 [+1.8, +11.2]; one training run each, so
# the intervals hold the test queries' variation, not the training seed's). A lower rate buys grounding at this
# budget (REC +25 to +32 points over the 1-layer adapter at 1e-3) at the cost of matching (-18 to
# -21). So the table's lr 1e-3 rows measure which depth tolerates that rate, not what depth buys.
# A fair Tab. 8 trains every depth at a rate that suits it (3e-4, or warm-up) to convergence: each
# depth's 600 stage-1 steps take 5.5-14 min here (10-20 min a variant), so that is left to a later run; `02_tuning`'s 1-layer
# adapter, trained 3,000 steps at 1e-3, is not affected.
#
# No adapter moves plain generation (tuning leaves it as in `02_tuning`); self-corrected, the
# 1-layer adapter gives toy-CC (ID) +9.0 [-1.0, +19.0] over the base model, and the at-chance deeper
# ones move nothing measurably up (4 layers: -13.0 [-25.0, -1.0]; 5 layers on toy-NSS: -10.0
# [-18.0, -2.0]: steering along the gradient of an untrained matcher can only add noise).
# Times: base 2.7 min, 1-5 layers 9.7, 12.8, 16.1, 14.0 and 20.3 min (1-3 on 2026-11-27, 4-5 on
# 11-28), the two diagnostic variants 7.0 and 8.6 min.

# %%
diagnosis = [ablations.variant_claim(results, f"diagnosis: at lr 3e-4, 2 adapter layers beat 1, {task}", "(not in the paper)",
                                     "adapter_layers=1_lr=3e-4", "adapter_layers=2_lr=3e-4", task)
             for task in ("ITM overall", "REC P@1")]
ablations.claims_frame(diagnosis)

# %% [markdown]
# ## The paper's claims, tested

# %%
claims = [
    ablations.variant_claim(results, f"Tab. 8: DPT with {n} adapter layer(s) improves on the base model, toy-nss (ID)",
                            paper, "base", f"adapter_layers={n}", "toy-nss (ID)")
    for n, paper in ((1, "+5.3 BLIP-ITM on COCO-NSS1K (73.3 vs 78.6)"), (4, "+6.1 BLIP-ITM on COCO-NSS1K (73.3 vs 79.4)"))
] + [
    ablations.variant_claim(results, "Tab. 8: 4 layers generate better than 1, toy-nss (ID)", "+0.8 BLIP-ITM on COCO-NSS1K (78.6 vs 79.4)",
                            "adapter_layers=1", "adapter_layers=4", "toy-nss (ID)"),
]
claims = ablations.claims_frame(claims)
report.save_table(claims, "tab8_layers_claims", params.scale)
claims
