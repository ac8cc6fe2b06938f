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
# # 04 · Ablation: which block to probe (Fig. 3, Tab. 6)
#
# **The paper's question.** The adapter reads one feature map of the U-Net (Eq. 1). Which block
# should it be? The paper probes each of seven blocks of SD-2.1, tunes the whole model on it and
# reports both sides (Fig. 3); Tab. 6 adds fused maps (added after resizing).
#
# **The paper's finding.** Generation improves as the probed block moves from the bottom of the
# U-Net to the top ("the T2I performance gets continuously improved with the probed block shifting
# from bottom to up", §4.4); up3 is best in Tab. 6; fusing blocks does not beat the best single
# block. Some of the paper's numbers (SD-2.1, App. Tab. 6):

# %% tags=["parameters"]
scale = None  # "smoke" | "toy"; None reads $DPT_SCALE (default "toy")
batch = "blocks"  # papermill_params/ablations/<batch>.yaml: the single blocks (Fig. 3)
fused_batch = "blocks_fused"  # the fused maps of Tab. 6 (a second file, to keep each batch under an hour)
diagnosis_batch = "blocks_diagnosis"  # why up0 / up2 did not learn (run on request only; shown where finished)
norm_batch = "blocks_norm"  # the diagnosis's second file: the map standardised per channel (run on request only)
whiten_batch = "blocks_whiten"  # its third file: the map whitened (run on request only)
seeds_batches = ["blocks_diagnosis", "blocks_whiten", "blocks_seeds"]  # Fig. 3's up2 and down0 at training seeds 1-4 (on request)
max_variants = None  # the batch's first variants only (None: all)
map_scenes = 64  # validation scenes whose maps the diagnosis measures (the statistics of each block's map)
run = True  # run the variants whose results are missing; False: show the results there are

# %%
import pandas as pd

from dptlib import checks, config
from dptlib.experiments import ablation_claims, ablations, report
from dptlib.method.backbone import block_modules, load_backbone
from dptlib.teaching import checks as teaching
from dptlib.toy.diagnostics import block_map_table
from dptlib.toy.world import ToyWorld, ToyWorldConfig

params = checks.notebook_parameters("04_ablation_blocks", globals())
report.set_theme()
pd.DataFrame({"COCO-NSS1K CLIP": [34.96, 34.76, 35.03, 35.69, 35.90, 35.83, 35.85, 35.91, 35.65, 35.91, 35.77, 35.84],
              "CC-500 BLIP-M": [85.45, 84.68, 87.08, 90.33, 90.66, 90.72, 92.72, 94.52, 90.42, 91.98, 93.72, 91.22]},
             index=["SD-2.1", "bottom1", "bottom2", "bottom3", "middle", "up1", "up2", "up3", "middle + bottom3 + up1",
                    "bottom2 + up2", "bottom1 + up3", "all (8x8)"]).rename_axis("paper, Tab. 6")

# %% tags=["nbval-ignore-output"]
# What decides the rounding of this run's numbers: trained numbers come out again byte for byte only where it matches
config.float_environment()

# %% [markdown]
# ## The batch
#
# One run of `ablation_variant` per block (`papermill_params/ablations/blocks.yaml`; the fused maps
# are `blocks_fused.yaml`, the same budget in a second file): stage 1 on the block, then
# discrimination (ITM overall on true negatives, REC P@1) and generation (oracle exact match per
# cell). Shrunk for the toy budget (each file under an hour on 2 cores): 1,000 stage-1 steps
# (the preset's 3,000 converge for `up1`; a third of them is what fits), 150 prompts, and no
# stage 2 — the paper tunes on each block, but the toy's stage 2 leaves plain generation
# unchanged (`02_tuning`), so each block is judged on generation through self-correction with its
# adapter, against the base model's plain images. Block names are diffusers' order; the paper's
# are bottom1-3 = `down0-2`, middle = `mid`, up1-3 = `up0-2`. The toy U-Net's maps are 8×8
# (down0, up0), 4×4 (down1, down2, mid) and 16×16 (up1, up2); maps above 8×8 are resized to 8×8
# before the adapter. Finished variants are read back, not run again.

# %% tags=["nbval-ignore-output"]
spec, singles = ablations.run_and_collect(params.batch, params.scale, params.max_variants, run=params.run)
_, fused = ablations.run_and_collect(params.fused_batch, params.scale, params.max_variants, run=params.run)
results = ablations.combine(singles, fused)  # one table: the base model once, then every block
results.metrics.round(1)

# %% [markdown]
# ## Fig. 3 and Tab. 6 analogues
#
# Each cell: the mean with its 95 % interval (bootstrap over prompts for generation, over queries
# for discrimination). The second table: each variant's paired difference to the base model for
# generation (same prompts, same seeds) and to the `up1` adapter (the default) for
# discrimination, with McNemar's p.

# %%
generation, discrimination = ablations.compare_variants(results, spec.reference, discrimination_reference="up1")
tab6, tab6_differences = report.save_variant_tables(generation, discrimination, "tab6_blocks", "probed block", params.scale)
tab6

# %%
tab6_differences

# %% tags=["nbval-ignore-output"]
ablations.save_batch_figure(generation, discrimination, list(tab6.index), "fig3_blocks", params.scale)

# %% [markdown]
# **What the toy run found (one run per block, 1,000 stage-1 steps, no stage 2): the adapter on
# `up1` (the preset's block; the paper's up2) matches images to captions far better than any
# other single block; grounding is learned about as well from the blocks below it; `up0` and
# `up2` did not learn (two seeds, and `up2` not in twice the steps either): `up0`'s map is small
# and offset, `up2`'s mostly the U-Net's noise estimate, and standardising (`up0`) or whitening
# (`up2`) the map lifts each to the bottom blocks' level (three seeds each, the diagnosis below);
# and no block's self-correction
# moves generation measurably at 60 images.** So the paper's "up is better" is seen for matching
# up to `up1` only, and its up3 (our `up2`) cannot be ranked from this run.
#
# *Discrimination* (1,000 ITM queries, 500 REC expressions; paired differences to `up1`, McNemar).
# ITM overall: `up1` 67.5 %; the bottom and middle blocks 34.3-39.3 % (`down0` 34.3, `down1` 37.0,
# `down2` 35.9, `mid` 39.3: 28-33 points below `up1`, every interval below 0); `up0` 25.8 % and
# `up2` 21.8 % (chance 25 %). REC P@1: `up1` 66.2 %, and `down1`, `down2` and `mid` level with it
# (−3.6 to +0.2, every interval reaching 0), `down0` 57.0 % (−9.2 [−14.0, −4.4]), `up0` 11.4 % and
# `up2` 4.4 % (still on the grounding plateau). The fused maps (Tab. 6): `all` 63.4 / 64.8 % (ITM
# −4.1 [−7.2, −1.0] against `up1`, REC −1.4 [−6.2, +3.4]), `down1+up1` 51.1 / 69.2 %,
# `mid+down2+up0` 46.1 / 72.0 % (the best REC, +5.8 [+1.2, +10.6] over `up1`), `down0+up2` 34.1 /
# 51.0 % (no better than `down0` alone: REC −6.0 [−11.0, −1.0]). Adding blocks to `up1` cost
# matching here (`down1+up1` −16.4, `all` −4.1): at an equal step budget, a fused adapter has more
# input to learn from, not a head start. One training run per block: the intervals hold the test
# queries' variation, not the training seed's.
#
# *Why `up0` and `up2` did not learn* (the diagnosis below has the numbers). Their maps hold the attributes:
# `01_probing`'s linear probes read colour, shape and size from `up2` at 96-98 % and from `up0` at
# 80-98 % (t = 250, `figures/probe_features.md`). Their
# stage-1 losses fell slowly: the matching loss over the five fifths of training 2.25, 2.13, 2.07,
# 1.99, 2.01 (`up0`) and 2.24, 2.20, 2.16, 2.09, 2.08 (`up2`), against 2.16 → 1.13 for `up1` and
# 2.14 → 1.59 for `down0` (`runs/toy/ablations/shared/stage1/*/log.json`). Fused with other
# blocks, `up2` does not stop an adapter from learning (`all` 63.4 %). The diagnosis below rules
# out one run's luck: at training seed 1 both stay near chance again (`up2` 23.4 / 6.4 %, `up0`
# 25.6 / 20.2 %; matching loss 2.32 → 2.13 and 2.26 → 2.05 over the fifths), while `up1` learns
# again (64.3 / 80.8 %; 2.22 → 1.17). Nor is it the budget: `up2` with twice the steps (2,000, the
# cosine rate stretched over them) ends at 24.5 / 5.4 %, its matching loss 2.22, 2.14, 2.08, 2.05,
# 2.07 over the fifths, flat in the last two. What differs is what the adapter is handed (the
# diagnosis below): `up0`'s map is small and offset, and standardising it lifts its adapter off
# chance at all three seeds, to the bottom blocks' level; `up2`'s map is mostly the U-Net's noise
# estimate, standardising changes nothing there, and whitening lifts it likewise.
# The claims rows that compare `up2` carry a flag and say nothing about what the block holds.
#
# *Generation* (60 paired images on toy-CC (ID) and toy-NSS, 30 on toy-CC (OOD);
# each adapter self-corrects the base model, against the base model's plain images). `up1`:
# +13.3 [−1.7, +28.3] on toy-CC (ID) (50.0 vs 36.7 %), −8.3 [−18.3, +1.7] on toy-NSS. Of the 33
# self-corrected cells, two intervals exclude 0, in opposite directions: `all` +16.7 [+1.7, +31.7]
# and `down1+up1` −15.0 [−28.3, −1.7], both on toy-CC (ID) (McNemar p = 0.05 and 0.06): about what
# chance gives in 33 cells. Self-correction with 34-67 % matchers moves no cell measurably at 60
# images; the headline self-correction gain (`03_self_correction`, 600 images) needs the converged
# 3,000-step adapter.
#
# Times (2026-12-05, 2 AVX-512 cores): `blocks` 46.2 min (base 1.1, `down0` 5.6, `down1` 4.9,
# `down2` 4.7, `mid` 4.9, `up0` 6.3, `up1` 7.9, `up2` 10.9 min), `blocks_fused` 35.1 min (base 1.0,
# `mid+down2+up0` 5.3, `down1+up1` 6.4, `down0+up2` 10.9, `all` 11.5 min). The earlier runs
# (300 steps of the 40-query, constant-rate stage 1, one file, 2026-11-27 / 12-02) left nine of
# eleven adapters at chance on ITM and every one on the REC plateau: that table could not rank the
# blocks. A converged adapter per block (3,000 steps, about 5 h for both files here) is a GPU run
# (`probe_steps` raised in both batch files).

# %% [markdown]
# ## A diagnosis: why two blocks' adapters did not learn
#
# Two batch files, stage 1 only, on the same test queries as the blocks batch, run on request
# (not part of `make ablations`). `blocks_diagnosis.yaml` asks whether it was that run's luck
# (another training seed, for `up0`, `up1` and `up2`) or the budget (`up2` with 2,000 steps):
# `python -m dptlib.experiments.ablations blocks_diagnosis --scale toy`, 43.4 min here. Finished (2026-12-05):
# `up2-s1` (10.8 min) and `up0-s1` (5.8 min), both near chance again; `up1-s1` (the positive
# control, 7.5 min) learns again (64.3 / 80.8 %); `up2-2000` (19.4 min) stays at chance (24.5 /
# 5.4 %). Neither luck nor budget, then.

# %% tags=["nbval-ignore-output"]
_, diagnosis = ablations.run_and_collect(params.diagnosis_batch, params.scale, run=False)  # run on request only
tasks = ["ITM overall", "REC P@1"]
seed0 = results.metrics.reindex(index=[b for b in ("up0", "up1", "up2") if b in results.metrics.index], columns=tasks)
pd.concat([seed0.rename(index=lambda b: f"{b} (blocks batch: seed 0, 1,000 steps)"), diagnosis.metrics.reindex(columns=tasks)]).round(1)

# %% [markdown]
# **What the adapter's input projection is handed.** The linear probes standardise every feature
# before they fit; the adapter's 1×1 projection takes the raw map. For each block's map $F$
# ($N$ images × $C$ channels × $h$ × $w$, at t = 250, each scene under its first caption), with
# $m_{nc}$ image $n$'s channel-$c$ mean over positions:
#
# $$\text{offset} = \operatorname{median}_c \lvert \bar F_{c} \rvert,\quad
# \text{spread} = \operatorname{median}_c \operatorname{std}_{n,y,x} F_{c},\quad
# \text{within} = \overline{\operatorname{var}_{y,x} F},\quad
# \text{between} = \overline{\operatorname{var}_n m_{nc}},\quad
# \text{image share} = \tfrac{\text{between}}{\text{between} + \text{within}}$$
#
# and two held-out $R^2$ of a per-position linear read-out from the map's channels: of the noise
# $\epsilon$ that made $z_t$ ("noise R2") and of the clean latent $z_0$ ("z0 R2"), both resized to
# the map's side, fit on half of the images and scored on the rest
# (`dptlib.evaluation.feature_probe.map_statistics`; "largest offset" is the maximum over channels; an
# $R^2 \le 0$ means no linear read-out).

# %% tags=["nbval-ignore-output"]
backbone = load_backbone("toy")
world = ToyWorld(ToyWorldConfig(seed=0))
maps = block_map_table(backbone, world, world.scenes("val", params.map_scenes), list(block_modules(backbone.unet)), timestep=250)
report.save_table(maps, "block_maps", params.scale, floatfmt=".3f")
maps.astype(float).round(3)

# %% [markdown]
# What the toy's 64 validation scenes gave (`figures/block_maps.md`): `up0`'s map is small and
# offset: its channels vary with a spread of 0.18 (`up1` 0.51), around constant offsets up to 2.47,
# fourteen times that spread. `up2`'s map is as large as `up1`'s (spread 0.53) but is mostly the
# U-Net's noise estimate: a linear read-out of $\epsilon$ explains 89 % of its held-out variance
# (`up1` 4 %, every other block ≤ 27 %), and the part that differs between images is 0.8 % of its
# variance (`up1` 7.6 %). Its $z_0$ read-out (62 %) says the content is there too, under the noise.
#
# `blocks_norm.yaml` (`python -m dptlib.experiments.ablations blocks_norm --scale toy`, 50.3 min here) asks
# whether standardising each channel of the map before the projection (`adapter_input_norm =
# "batch"`, a BatchNorm without affine parameters; not in the paper) lets them learn: `up0` raw
# against standardised at training seeds 0-2, `up1` (the control) at seeds 0-1, `up2` at seed 0.
# Per-channel standardisation leaves a few dominant directions across channels as they are, so
# `blocks_whiten.yaml` (57.1 min) whitens the channels instead (`adapter_input_norm = "whiten"`:
# mean 0 and covariance I, running ZCA statistics; not in the paper either): `up2` raw against
# whitened at seeds 0-2, `up1` whitened at seeds 0-1.

# %% tags=["nbval-ignore-output"]
_, standardised_runs = ablations.run_and_collect(params.norm_batch, params.scale, run=False)  # run on request only
_, whitened_runs = ablations.run_and_collect(params.whiten_batch, params.scale, run=False)
pd.concat([standardised_runs.metrics, whitened_runs.metrics]).reindex(columns=tasks).round(1)

# %% [markdown]
# The standardised map against the raw one, paired by training seed on the same test queries
# (seed 0 of the raw arms is the blocks batch's run, seed 1 the diagnosis's): the difference over
# seeds and queries with its seed-aware interval (`dptlib.experiments.ablations.seeded_difference`), each
# seed's own difference, Holm's adjustment over the rows with ≥ 3 seeds, and the verdict by the
# claims table's rules (fewer than 3 seeds: "k runs", no verdict).

# %% tags=["nbval-ignore-output"]
outcomes = pd.concat([results.discrimination, diagnosis.discrimination, standardised_runs.discrimination, whitened_runs.discrimination])
raw = {"up0": {0: "up0", 1: "up0-s1", 2: "up0-s2"}, "up1": {0: "up1", 1: "up1-s1"}, "up2": {0: "up2", 1: "up2-s1", 2: "up2-s2"}}
treated = {("up0", "standardised"): {0: "up0-norm", 1: "up0-norm-s1", 2: "up0-norm-s2"},
           ("up1", "standardised"): {0: "up1-norm", 1: "up1-norm-s1"},
           ("up2", "standardised"): {0: "up2-norm"},
           ("up2", "whitened"): {0: "up2-whiten", 1: "up2-whiten-s1", 2: "up2-whiten-s2"},
           ("up1", "whitened"): {0: "up1-whiten", 1: "up1-whiten-s1"}}
treatments = ablations.treatment_table(outcomes, raw, treated, tasks)
if not treatments.empty:
    report.save_table(treatments.set_index(["block", "map", "task"]), "blocks_input_norm", params.scale)
treatments

# %% [markdown]
# **What the runs say** (every adapter here stops at 1,000 steps, its loss still falling: these are
# verdicts about leaving chance at this budget, not about converged adapters). Standardising
# `up0`'s map lifts its adapter off chance at every seed:
# ITM 41.1 / 34.7 / 39.2 % against 25.8 / 25.6 / 23.9 %, REC 44.6 / 46.2 / 43.0 % against
# 11.4 / 20.2 / 24.0 % (seeds 0-2), **+13.2 [+5.5, +21.0] ITM and +26.1 [+9.8, +42.4] REC, holds**
# (3 of 3 seeds, Holm p 0.043 over the four rows with three seeds). That brings `up0` to the
# bottom blocks' level (ITM 34-39 %), not to `up1`'s 67 %: the offset and scale were why it stayed
# at chance, not why it is weaker than `up1`. For `up2` standardising changes nothing (23.1 /
# 6.0 %, one run), as its statistics predicted; **whitening does what standardising did for `up0`**:
# ITM 33.8 / 32.8 / 32.4 % against 21.8 / 23.4 / 22.3 %, REC 37.8 / 49.6 / 27.8 % against
# 4.4 / 6.4 / 4.4 %, **+10.5 [+7.7, +13.3] ITM and +33.3 [+9.6, +57.0] REC, holds** (3 of 3 seeds).
# So the noise estimate's few directions, which per-channel scaling leaves dominant, are what kept
# `up2`'s adapter at chance; with them levelled it learns to the bottom blocks' level too (the
# probes pool over a box, which also averages the noise away). Neither treatment is a free
# improvement: on `up1`, standardising gives +6.7 and +6.0 ITM at two seeds with REC split (−13.0,
# +2.4), and whitening +6.1 and +13.8 ITM but REC −47.8 and −50.4 at two seeds (18.4 and 30.4 %
# against 66.2 and 80.8 %: its grounding stays on the plateau at 1,000 steps, at both seeds).
# The paper's projection takes the raw map, as the toy preset does; a real SD's blocks have other
# statistics (its last up block has 320 channels, of which the noise
# estimate is a far smaller part than of the toy's 32), which `map_statistics` measures on any
# diffusers U-Net.

# %% [markdown]
# ## The paper's claims, tested

# %%
# An adapter whose ITM stays below twice chance (4 captions: 25 %) can neither rank the blocks nor
# guide self-correction: a row that compares one names it, so that its verdict is not read as the paper's.
def weak(*variants):
    """' [...]' naming the compared adapters whose ITM overall is below 50 %, or ''."""
    itm = results.metrics["ITM overall"] if "ITM overall" in results.metrics else pd.Series(dtype=float)
    below = [v for v in variants if v in itm.index and itm[v] < 50]
    return f" [{', '.join(below)}: ITM below twice chance at this budget]" if below else ""


claims = [
    ablations.variant_claim(results, "Fig. 3: probing up the U-Net beats the bottom for generation (up2 vs down0, DPT + SC), toy-cc (ID)"
                            + weak("down0", "up2"),
                            "+9.8 BLIP-M on CC-500 (up3 94.5 vs bottom1 84.7)", "down0 + SC", "up2 + SC", "toy-cc (ID)"),
    ablations.variant_claim(results, "Fig. 3: probing up the U-Net beats the bottom for discrimination (up2 vs down0, ITM overall)"
                            + weak("down0", "up2"),
                            "(Fig. 3, ITM rises from bottom to up)", "down0", "up2", "ITM overall"),
    # the toy batch has no stage 2 (see above): each adapter acts on generation through self-correction
    ablations.variant_claim(results, "Tab. 6: DPT probing up3 (our up2) improves on the base model (self-corrected), toy-nss (ID)" + weak("up2"),
                            "+7.1 BLIP-M on COCO-NSS1K (73.3 vs 80.4)", "base", "up2 + SC", "toy-nss (ID)"),
    ablations.variant_claim(results, "Tab. 6: fusing all blocks does not beat the best single block "
                            "(all vs up2, self-corrected), toy-nss (ID)" + weak("up2", "all"),
                            "-1.2 BLIP-M on COCO-NSS1K (79.2 vs 80.4)", "up2 + SC", "all + SC", "toy-nss (ID)", control=True),
]
claims = ablations.claims_frame(claims)
report.save_table(claims, "tab6_blocks_claims", params.scale)
claims

# %% [markdown]
# ## Fig. 3's discrimination over training seeds
#
# The rows above are one training run per block: their intervals cover the test queries, not what
# another run would give. `blocks_seeds.yaml` trains the two blocks Fig. 3's discrimination claim
# compares again, `down0` at training seeds 1-4 and `up2` at 3-4 (`up2` ran at seeds 1 and 2 in the
# diagnosis files above; run on request: `python -m dptlib.experiments.ablations blocks_seeds --scale toy`),
# stage 1 only, on the same test queries. Each claim below (as `dptlib.experiments.ablation_claims` defines
# it: `own` against `base`) is judged by the core claims' rules (`09_results`): the difference
# over seeds and queries with its seed-aware interval, each seed's own difference, Holm's
# adjustment over these two claims, and *holds* (or *contradicted*) only when the interval and the
# adjusted p exclude 0 and at least 4 of 5 seeds (all of 3) agree. Fewer than three runs read "k runs".

# %% tags=["nbval-ignore-output"]
seeded = ablations.read_finished(params.seeds_batches, params.scale)  # run on request only: what has finished
seeded.metrics.reindex(columns=tasks).round(1)

# %%
FIG3 = ablation_claims.FIG3
ablation_claims.claims_frame(FIG3)

# %%
by_seed = ablation_claims.measure(FIG3, results, seeded)  # no seeded run yet: an empty table (09_results then says so)
report.save_table(by_seed, FIG3.name, params.scale)
by_seed.drop(columns=["difference", "low", "high"]).set_index("claim")

# %% [markdown]
# **What the seeds say** (2026-12-05, training seeds 0-4; `blocks_seeds.yaml` took 43.0 min on 2
# cores: `down0` 311-320 s, `up2` 645-669 s per run). ITM overall, `down0` 34.3, 34.0, 32.9, 31.1,
# 32.2 % against `up2` 21.8, 23.4, 22.3, 23.9, 22.4 % (chance 25 %); REC P@1 57.0, 32.6, 24.8,
# 59.6, 51.6 % against 4.4, 6.4, 4.4, 6.8, 3.4 %.
#
# - "Probing up beats the bottom", ITM: **−10.1 [−12.8, −7.4]**, every seed below 0 (−12.5 to
#   −7.2) → *contradicted*; REC: **−40.0 [−59.2, −20.9]**, every seed below 0 → *contradicted*.
#
# So the one-run reading repeats at every seed: at 1,000 steps the raw `up2` map leaves its
# adapter at chance whatever the seed, while `down0`'s learns a little (its REC varies from 25 to
# 60 % between seeds: the grounding plateau is left at a step that varies between runs). This is
# a statement about what a 1,000-step adapter reads from the raw top map of this toy U-Net, which
# is mostly its noise estimate (above), not about where the paper's SD keeps its semantics:
# whitening the map lifts `up2` to the bottom blocks' level, and `up1`, the toy's top block that
# learns, beats `down0` by 33 ITM points in the one-run table.


# %% [markdown]
# ## Exercise: what an early exit saves
#
# The adapter reads the feature map of block $l$ (Eq. 1), so a training step needs the U-Net only
# up to block $l$: `dptlib.method.backbone.extract_features` stops the forward pass there (a hook raises
# right after the last probed block). That is why this ablation's adapters cost 4.7-11.5 minutes
# each: the higher the probed block, the more of the U-Net every step runs, and a fused probe
# costs what its highest block costs. Write `blocks_run(blocks)`: given the probed blocks in
# execution order, return the blocks the U-Net runs, in order. The check runs a toy U-Net with a
# hook on every block and compares, for five probes.

# %%
EXECUTION_ORDER = ["down0", "down1", "down2", "mid", "up0", "up1", "up2"]  # diffusers' names: down the U-Net, then up


def blocks_run(blocks):
    """The U-Net blocks that run, in order, to read ``blocks`` (a list in execution order)."""
    # solution
    return EXECUTION_ORDER[: EXECUTION_ORDER.index(blocks[-1]) + 1]


# %%
teaching.check_blocks_run(blocks_run)
