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
# *Exercise version of `notebooks/06_ablation_adapter_layers.py`, written by `make exercises`: do not edit it here. Where a cell says `# Write your code here.`, write the code; the check after it says "not attempted yet" until you do, then whether your answer agrees with the library.*

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
batch = "adapter_layers"  # papermill_params/ablations/<batch>.yaml: 1-3 layers and the 2-layer stage 1
deep_batch = "adapter_layers_deep"  # 4-5 layers and the 2-layer stage 1 at 1e-3 (a second file, to keep each under an hour)
max_variants = None  # the batch's first variants only (None: all)
run = True  # run the variants whose results are missing; False: show the results there are

# %%
import numpy as np
import pandas as pd
from IPython.display import display

from dptlib import ablations, config, report, teaching

params = config.notebook_parameters("06_ablation_adapter_layers", globals())
report.set_theme()
pd.DataFrame({"COCO-NSS1K CLIP": [34.96, 35.83, 35.51, 35.55, 35.91, 35.80],
              "COCO-NSS1K BLIP-ITM": [73.32, 78.58, 77.67, 77.14, 79.41, 78.76],
              "CC-500 BLIP-ITM": [85.45, 90.72, 91.14, 90.55, 92.92, 90.89]},
             index=pd.Index([0, 1, 2, 3, 4, 5], name="paper, Tab. 8: layers"))

# %% tags=["nbval-ignore-output"]
# What decides the rounding of this run's numbers: trained numbers come out again byte for byte only where it matches
config.float_environment()

# %% [markdown]
# ## The batch
#
# One run of `ablation_variant` per layer count (`papermill_params/ablations/adapter_layers.yaml`
# for 1-3 layers, `adapter_layers_deep.yaml` for 4-5: one ablation in two files, each under an
# hour on 2 cores): each trains its own stage-1 adapter (the layers are the adapter's), tunes,
# and is measured, at 1,000 stage-1 steps (the toy preset's 16 queries and cosine rate with 100
# warm-up steps) and 100 stage-2 steps: the other batches' budgets differ, so no stage-1 adapter
# is shared with them. Finished variants are read back, not run again.
#
# **What the toy world changes: the stage-1 learning rate.** Every depth trains stage 1 at 3e-4,
# not the toy preset's 1e-3 (ten times the paper's 1e-4): an earlier run of this batch at 1e-3,
# with a constant rate and no warm-up, left every adapter deeper than one layer at chance, so its
# table measured which depth tolerates that rate, not what depth buys. 3e-4 is the first lower
# rate that was tried, not a rate tuned on this table. Two more variants are that diagnosis, not
# rows of the paper's table: the 2-layer adapter's stage 1 alone (ITM and REC, nothing
# generated) at 3e-4 (the 2-layer row's own stage-1 adapter, reused) and at 1e-3, now with the
# preset's warm-up.

# %% tags=["nbval-ignore-output"]
spec, shallow = ablations.run_and_collect(params.batch, params.scale, params.max_variants, run=params.run)
_, deep = ablations.run_and_collect(params.deep_batch, params.scale, params.max_variants, run=params.run)
results = ablations.combine(shallow, deep)  # one table: the base model once, then every depth
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
# *The outputs in this notebook are still the earlier run's* (600 stage-1 steps of the 40-query,
# constant-rate stage 1 that was the toy preset until 2026-12-04, one batch file); the 1,000-step
# files have not run yet, and the text below describes that run.
#
# **What the toy run found (one run): at a rate every depth trains at, after 600 steps 1-3
# layers discriminate alike (2 and 3 layers over one: ITM +2.8 [-0.2, +5.8] and +2.6 [-0.5, +5.6],
# not significant), 4 and 5 layers worse, and depth changes no generation measurably; the deeper
# adapters are still learning, so the paper's "4 layers are best" is not tested at this budget.**
#
# *Discrimination* (1,000 ITM queries, 500 REC expressions; paired differences to 1 layer).
# ITM overall: 45.9, 48.7, 48.5, 35.5 and 29.5 % for 1-5 layers (chance 25 %); 2 and 3 layers
# +2.8 [-0.2, +5.8] and +2.6 [-0.5, +5.6] over one (not significant), 4 and 5 layers -10.4 and
# -16.4. REC P@1: 40.4 and 44.4 % for 1 and 2 layers (+4.0 [-0.8, +8.8]), while 3-5 layers are
# still on the grounding plateau (10.4, 6.8, 4.6 %). Every depth trains at 3e-4: the matching loss
# falls from chance (2 ln 3 = 2.20) at every depth, to 1.72, 1.66, 1.64, 1.82 and 1.88 over the
# last 100 steps (GIoU loss 0.40, 0.42, 0.44, 0.48, 0.47), and was still falling at step 600: the
# deeper the adapter, the further from converged, so at this budget the table ranks how far each
# depth gets in 600 steps, not what a converged depth buys (one training run per depth: the
# intervals hold the test queries' variation, not the training seed's). How large the training side
# is, measured: the same 1-layer variant on another CPU (a Xeon with AVX-512 and AMX, not the one
# these outputs came from; the code is bit-identical run to run on one CPU) gave ITM 47.2 % and REC
# 34.6 %, and with AVX2 kernels forced 46.8 % and 43.0 %, against 45.9 % and 40.4 % here: REC spans
# 8.4 points, as wide as its 95 % test-query interval, from float rounding alone. On that CPU the
# whole batch kept the 3-5-layer plateau, the lower ITM of 4 and 5 layers and the 1e-3 stall, but 2
# layers grounded +9.0 [+4.0, +14.0] better than one, so the 2-vs-1 ranking is not settled by one
# run (README, "make verify").
#
# *The diagnosis holds* (the last two rows). The same 2-layer stage 1 at the preset's 1e-3 stays at
# chance (ITM 19.8 %, REC 5.2 %; matching loss 2.17 over the last 100 steps), at 3e-4 it reaches
# 46.6 % and 37.8 %: +26.8 [+23.4, +30.3] and +32.6 [+28.2, +36.8] (below). So the earlier run's
# 1e-3 table (2-5 layers at chance) measured the rate, as said above. The adapter is a post-norm
# transformer (as DETR's) trained without warm-up, and post-norm stacks are known to stall at
# large learning rates without warm-up, more so the deeper they are (Xiong et al., 2020).
#
# *Generation* (100 paired images per cell; toy-CC (OOD) 56). No depth moves plain generation
# (every difference to the base model within 5.4 points, every interval reaching 0): stage 2 leaves the
# toy U-Net's sampling as in `02_tuning`. Self-corrected, every depth is 2-4 points above the base
# model on toy-CC (ID) (1 layer +4.0 [-8.0, +16.0]) and -4 to +2 on toy-NSS, no interval clear of 0;
# the 1-layer adapter of the earlier 1e-3 run (this notebook at commit aa6c4e5), a better matcher
# (ITM 65.0 %), gave +9.0 [-1.0, +19.0].
# So the paper's claims below read *inconclusive*: the toy's plain generation does not respond to
# stage 2, and the adapters' matching (46-49 % ITM at best) is too weak a guide for self-correction
# to show a difference at 100 images. Answering Tab. 8 needs every depth trained to convergence
# (~3,000 stage-1 steps each, about 5 h here): a GPU run (raise `probe_steps` in the batch file).
#
# Times (2026-12-01, 2 cores): base 1.8 min, 1-5 layers 8.6, 11.8, 13.9, 14.5 and 17.2 min
# (67.8 min for the table's rows), the two diagnostic variants 1.3 and 7.9 min; 77.0 min in all.

# %%
diagnosis = [ablations.variant_claim(results, f"diagnosis: 2 adapter layers learn more in stage 1 at lr 3e-4 than at 1e-3, {task}",
                                     "(not in the paper)", "adapter_layers=2_lr=1e-3", "adapter_layers=2_stage1", task)
             for task in ("ITM overall", "REC P@1")]
ablations.claims_frame(diagnosis)

# %% [markdown]
# ## The paper's claims, tested

# %%
claims = [
    ablations.variant_claim(results, f"Tab. 8: DPT with {n} adapter layer(s) improves on the base model, toy-nss (ID)",
                            paper, "base", f"adapter_layers={n}", "toy-nss (ID)")
    for n, paper in ((1, "+5.3 BLIP-ITM on COCO-NSS1K (73.3 vs 78.6)"), (2, "+4.4 BLIP-ITM on COCO-NSS1K (73.3 vs 77.7)"),
                     (3, "+3.8 BLIP-ITM on COCO-NSS1K (73.3 vs 77.1)"), (4, "+6.1 BLIP-ITM on COCO-NSS1K (73.3 vs 79.4)"),
                     (5, "+5.4 BLIP-ITM on COCO-NSS1K (73.3 vs 78.8)"))
] + [
    ablations.variant_claim(results, "Tab. 8: 4 layers generate better than 1, toy-nss (ID)", "+0.8 BLIP-ITM on COCO-NSS1K (78.6 vs 79.4)",
                            "adapter_layers=1", "adapter_layers=4", "toy-nss (ID)"),
]
claims = ablations.claims_frame(claims)
report.save_table(claims, "tab8_layers_claims", params.scale)
claims


# %% [markdown]
# ## Exercise: a family of claims, adjusted
#
# The claims above are tested together: with $m$ claims at 5 % each, the chance that at least
# one "holds" by luck grows with $m$. Holm's step-down adjustment keeps that chance at 5 %: sort
# the $m$ p-values, multiply the $k$-th smallest ($k = 0, \dots, m-1$) by $m - k$, carry the
# running maximum (an adjusted p never falls below a smaller p's), cap at 1, and return them in
# the input's order. Write `holm_adjust(p_values)`; the check compares it with `dptlib.stats.holm`
# (which `09_results` uses for the claims table). Then adjust this notebook's family.

# %%
def holm_adjust(p_values):
    """Holm's adjusted p-values (m,), in the order of ``p_values`` (m,)."""
    # Write your code here.


# %%
if teaching.check_holm(holm_adjust) == teaching.CORRECT and not claims.empty:
    family = claims[["claim", "toy (difference, 95 % interval)"]].assign(p=teaching.p_values(claims["toy (difference, 95 % interval)"]))
    display(family.assign(**{"p (Holm)": holm_adjust(family["p"].fillna(1).to_numpy())}))
