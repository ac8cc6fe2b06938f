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
# # 05 · Ablation: the LoRA rank of stage 2 (Tab. 7)
#
# **The paper's question.** Stage 2 tunes the U-Net through LoRA, $W = W_0 + \tfrac{\alpha}{r}BA$.
# The rank $r$ sets how many parameters stage 2 adds. How large should it be?
#
# **The paper's finding.** Rank 4 is best on most metrics; more ranks bring no further gain, "which
# may be attributable to the scale of tuning data" (App. A.5). Every rank beats the untuned model
# (rank 0) on alignment.

# %% [markdown]
# **In this lesson you will**
# - read Tab. 7's toy analogue: stage 2 at LoRA ranks 1-64, all from one stage-1 adapter, as
#   paired differences with 95 % intervals;
# - read Tab. 11's: whether stage 2 should tune the adapter with LoRA or LoRA alone;
# - test the paper's claims for both tables, and see what one training run per variant can say;
# - count what a LoRA rank adds to a layer (the exercise).
#
# *Prerequisites:* `02_tuning` (stage 2 and LoRA), `03_self_correction`. *Time on 2 CPU cores:*
# about 15 s (it reads the committed runs); running the `lora_rank` batch takes about 55 min,
# `trainable` about 9 min.

# %% tags=["parameters"]
scale = None  # "smoke" | "toy"; None reads $DPT_SCALE (default "toy")
batch = "lora_rank"  # papermill_params/ablations/<batch>.yaml
trainable_batch = "trainable"  # Tab. 11's batch
max_variants = None  # the batch's first variants only (None: all)
run = True  # run the variants whose results are missing; False: show the results there are

# %%
# The libraries, the parameters and the plotting style (which also shows tables whole)
import pandas as pd
from IPython.display import display

from dptlib import checks, config
from dptlib.experiments import ablations, report
from dptlib.teaching import checks as teaching

params = checks.notebook_parameters("05_ablation_lora_rank", globals())
report.set_theme()

# %% tags=["nbval-ignore-output"]
# The run's settings and what decides the rounding of its numbers (trained numbers come out again byte for byte only where it matches)
print(config.run_summary(params))

# %% [markdown]
# The paper's numbers (SD-2.1, App. Tab. 7):

# %%
pd.DataFrame({"COCO-NSS1K CLIP": [34.96, 35.83, 35.47, 35.59, 35.55, 35.67, 35.66],
              "COCO-NSS1K BLIP-ITM": [73.32, 78.58, 76.89, 77.33, 76.68, 77.05, 77.11],
              "CC-500 BLIP-ITM": [85.45, 90.72, 90.04, 89.45, 89.82, 90.99, 89.99]},
             index=pd.Index([0, 4, 8, 16, 32, 64, 128], name="paper, Tab. 7: rank"))

# %% [markdown]
# ## The batch
#
# One run of `ablation_variant` per rank (`papermill_params/ablations/lora_rank.yaml`), every
# one tuned from the **same** stage-1 adapter (trained by the first variant that needs it and
# found by the others under `runs/<scale>/ablations/shared/stage1/`). The toy U-Net's
# cross-attention projections are 32 to 64 wide, so 64 is the largest rank that means anything
# here (the paper goes to 128 on 320-1280). Finished variants are read back, not run again.

# %% tags=["nbval-ignore-output"]
# Run the missing variants (none, once committed), then read every rank
spec, results = ablations.run_and_collect(params.batch, params.scale, params.max_variants, run=params.run)
results.metrics.round(1)

# %% [markdown]
# ## Tab. 7 analogue
#
# Each cell: the mean with its 95 % interval; the second table: each variant's paired difference
# to the base model (generation: same prompts and seeds) and to rank 4 (discrimination: the same
# queries), with McNemar's p.

# %%
generation, discrimination = ablations.compare_variants(results, spec.reference, discrimination_reference="lora_rank=4")
tab7, tab7_differences = report.save_variant_tables(generation, discrimination, "tab7_rank", "LoRA rank", params.scale)
tab7

# %%
# Each variant's paired difference to its reference
tab7_differences

# %% tags=["nbval-ignore-output"]
# The table as a figure: every rank's means, generation beside discrimination
ablations.save_batch_figure(generation, discrimination, list(tab7.index), "tab7_rank", params.scale)

# %% [markdown]
# ## What the toy run found (Tab. 7)
#
# One training run per rank; the paragraphs below are written from the tables above. First, a
# helper that writes a paired difference with its interval, and one that writes a range.

# %%
def span(values):
    """'83.6-84.3', or '93.2' where every value is the same (one decimal)."""
    low, high = f"{values.min():.1f}", f"{values.max():.1f}"
    return low if low == high else f"{low}-{high}"


def ci(frame, *key):
    """'+1.0 [+0.0, +3.0]': the paired difference in row ``key`` of a comparison frame, with its 95 % interval."""
    row = frame.loc[key]
    return f"{row['diff']:+.1f} [{row['diff_low']:+.1f}, {row['diff_high']:+.1f}]"


# %%
# The rows the paragraphs read: the ranks, plain and self-corrected images, each REC answer
rank_variants = [v for v in results.metrics.index if str(v).startswith("lora_rank=")]
methods = generation.index.get_level_values("method")
plain, corrected = generation[methods.isin(rank_variants)], generation[methods.str.endswith(" + SC")]
rec_answers = results.discrimination.query("task == 'REC P@1'").pivot(index="item", columns="variant", values="correct")

# %%
# Discrimination against rank 4, on the same test queries
itm = discrimination.loc["ITM overall"].drop(index="lora_rank=4")
clear = itm[itm["diff_low"] > 0]
changed = rec_answers.ne(rec_answers["lora_rank=4"], axis=0).sum().drop("lora_rank=4")
rec = results.metrics.loc[rank_variants, "REC P@1"]
report.prose(
    f"- *Discrimination does not depend on the rank.* ITM overall is {span(results.metrics.loc[rank_variants, 'ITM overall'])} % "
    f"for every rank, each within {itm['diff'].abs().max():+.1f} points of "
    "rank 4 (" + ", ".join(f"`{v}` {r['diff']:+.1f} with p = {r.p:.2f}" for v, r in clear.iterrows())
    + f" before any adjustment for {len(itm)} comparisons: under a point, from one training run each). REC P@1 is "
    f"{span(rec)} % for every rank; right or wrong, a rank's answers differ from rank 4's on "
    + (", ".join(f"{n} (`{v}`)" for v, n in changed[changed > 0].items()) or "none") + f" of the {len(rec_answers)} expressions "
    f"({'every other rank' if (changed == 0).any() else 'no rank'}'s on none): 100 stage-2 steps barely change a grounding "
    "answer of the converged stage-1 adapter.")

# %%
# Generation against the base model's images, plain and self-corrected
with report.toy_rows(params.scale):  # at the smoke scale a batch runs its first variants only
    ood = generation.loc["toy-cc (OOD)"]
    paired = lambda res, base, own, cell: ablations.variant_claim(res, "", "", base, own, cell)["toy (difference, 95 % interval)"].split(" (")[0]
    display(report.prose(
        f"- *Plain generation does not move with any rank.* Every tuned rank is within {plain['diff'].min():+.0f} to "
        f"{plain['diff'].max():+.0f} points of the base model on each cell, "
        + ("every interval reaching 0" if ((plain["diff_low"] <= 0) & (plain["diff_high"] >= 0)).all() else "not every interval reaching 0")
        + f", as in `02_tuning`: the paper's \"every rank beats rank 0\" is not seen in plain sampling here (toy-CC (OOD) is near "
        f"its floor: {span(ood.loc[rank_variants, 'mean'] * ood['n'].iloc[0] / 100).replace('.0', '')} "
        f"of {int(ood['n'].iloc[0])} images right)."))

# %%
# Self-corrected generation against the base model's plain images
with report.toy_rows(params.scale):  # at the smoke scale a batch runs its first variants only
    display(report.prose(
        "- *Self-corrected, every rank sits above the base model's plain images on toy-CC (ID)*: "
        f"{corrected.loc['toy-cc (ID)', 'diff'].min():+.0f} to {corrected.loc['toy-cc (ID)', 'diff'].max():+.0f} points "
        f"({int(corrected.loc['toy-cc (ID)', 'n'].iloc[0])} images), and {corrected.loc['toy-nss (ID)', 'diff'].min():+.0f} to "
        f"{corrected.loc['toy-nss (ID)', 'diff'].max():+.0f} on toy-NSS; no rank above another. Larger ranks bring no further gain "
        f"(rank 64 against 4, toy-NSS plain: {paired(results, 'lora_rank=4', 'lora_rank=64', 'toy-nss (ID)')}, a control that "
        "comes out as expected)."))

# %% [markdown]
# Rank 4 here and Tab. 11's "DA + LoRA" below have the same parameters and the same stage-1
# adapter; the two batches ran it separately. The committed outcomes are in `results/toy/lora_rank/`.
#
# ## Tab. 11 analogue: what stage 2 trains
#
# The paper's App. A.9: tuning LoRA with the stage-1 adapter frozen, against tuning both (DPT's
# default, "DA + LoRA"). Both tune from the same stage-1 adapter, with rank 4
# (`papermill_params/ablations/trainable.yaml`).

# %% tags=["nbval-ignore-output"]
# Run the missing variants (none, once committed), then read them
trainable_spec, trainable_results = ablations.run_and_collect(params.trainable_batch, params.scale, params.max_variants, run=params.run)
trainable_results.metrics.round(1)

# %%
# Whether the two batches' rank-4 runs gave the same numbers (the runs are deterministic on one CPU kind)
columns = ["ITM overall", "REC P@1", "Fréchet (plain)", "Fréchet (self-corrected)"]
same = results.metrics.loc["lora_rank=4", columns].equals(trainable_results.metrics.loc["DA + LoRA", columns])
print("rank 4 and DA + LoRA:", "identical numbers" if same else "different numbers")

# %%
# Tab. 11's table: each variant's paired difference to DA + LoRA
trainable_generation, trainable_discrimination = ablations.compare_variants(trainable_results, trainable_spec.reference, "DA + LoRA")
tab11 = report.variant_table(trainable_generation, trainable_discrimination, differences=True)
report.save_table(tab11.rename_axis("trainable in stage 2"), "tab11_trainable", params.scale)
tab11

# %% [markdown]
# **What the toy run found (Tab. 11)**, from the table above and, over five training seeds, from
# `09_results`' table (`figures/seed_claims.csv`):

# %%
# One run here; five seeds in 09_results
with report.toy_rows(params.scale):  # at the smoke scale a batch runs its first variants only
    tm, seeds = trainable_results.metrics, pd.read_csv(config.figures_dir(params.scale) / "seed_claims.csv")
    tab11_seeds = seeds[seeds["family"] == "Tab. 11"].set_index("claim")["toy (difference, 95 % interval)"].str.split(" \\(").str[0]
    display(report.prose(
        f"With the converged 16-query stage 1, tuning the adapter with LoRA, rather than LoRA alone, no longer grounds better: REC P@1 "
        f"{tm.at['DA + LoRA', 'REC P@1']:.1f} against {tm.at['LoRA', 'REC P@1']:.1f} %, {paired(trainable_results, 'LoRA', 'DA + LoRA', 'REC P@1')} "
        f"on {int(trainable_discrimination.loc[('REC P@1', 'LoRA'), 'n'])} expressions, and ITM overall {tm.at['DA + LoRA', 'ITM overall']:.1f} "
        f"against {tm.at['LoRA', 'ITM overall']:.1f} %. Used for self-correction, the two adapters are close (toy-CC (ID) "
        f"{paired(trainable_results, 'LoRA + SC', 'DA + LoRA + SC', 'toy-cc (ID)')}, "
        f"toy-NSS {paired(trainable_results, 'LoRA + SC', 'DA + LoRA + SC', 'toy-nss (ID)')}, "
        f"{int(trainable_generation.loc[('toy-cc (ID)', 'LoRA + SC'), 'n'])} paired images). Over five training seeds "
        + "; ".join(f"{claim}: {value}" for claim, value in tab11_seeds.items()) + ": "
        + ", ".join(sorted(set(seeds.loc[seeds["family"] == "Tab. 11", "verdict"]))) + "."))

# %% [markdown]
# With the earlier 40-query stage 1, which stopped on its grounding plateau, this table read a
# REC gain of several points for tuning the adapter, and it held over five seeds: that gain was
# stage 2 finishing what stage 1 had not, and it is gone once stage 1 converges
# (`docs/ablations.md`). With one seed per prompt a cell of 100 images detects about 10 points:
# the toy budget of these batches (said in their batch files) is smaller than that of
# `02_tuning`'s headline cells.
#
# ## The paper's claims, tested

# %%
# Tab. 7's claims (the paper's numbers from its App. Tab. 7)
claims = [
    ablations.variant_claim(results, "Tab. 7: DPT with rank 4 improves on the base model, toy-nss (ID)",
                            "+5.3 BLIP-ITM on COCO-NSS1K (73.3 vs 78.6)", "base", "lora_rank=4", "toy-nss (ID)"),
    ablations.variant_claim(results, "Tab. 7: DPT with rank 4 improves on the base model, toy-cc (OOD)",
                            "+5.3 BLIP-ITM on CC-500 (85.5 vs 90.7)", "base", "lora_rank=4", "toy-cc (OOD)"),
    ablations.variant_claim(results, "Tab. 7: a larger rank brings no further gain (64 vs 4), toy-nss (ID)",
                            "-1.5 BLIP-ITM on COCO-NSS1K (77.1 vs 78.6)", "lora_rank=4", "lora_rank=64", "toy-nss (ID)", control=True),
]

# %%
# Tab. 11's claims: the adapter acts on generation through self-correction, so both samplings are claims of its row
claims += [
    ablations.variant_claim(trainable_results, f"Tab. 11: tuning the adapter with LoRA beats LoRA alone{sc}, {cell}",
                            "+2.1 BLIP-M on COCO-NSS1K (76.5 vs 78.6)", f"LoRA{suffix}", f"DA + LoRA{suffix}", cell)
    for suffix, sc in (("", ""), (" + SC", " (self-corrected)")) for cell in ("toy-cc (ID)", "toy-nss (ID)")
] + [
    ablations.variant_claim(trainable_results, "Tab. 11: tuning the adapter with LoRA grounds better than LoRA alone (REC P@1)",
                            "(not reported)", "LoRA", "DA + LoRA", "REC P@1"),
]
claims = ablations.claims_frame(claims)
report.save_table(claims, "tab7_rank_claims", params.scale)
claims


# %% [markdown]
# ## Exercise: what a LoRA rank costs
#
# LoRA keeps a linear layer's weight $W$ ($d_{out} \times d_{in}$) frozen and trains a low-rank
# update beside it: $W x + \tfrac{\alpha}{r} B A x$ with $A$ ($r \times d_{in}$) and $B$
# ($d_{out} \times r$, zero at the start, so that tuning starts from the U-Net as it is).
# Write `lora_parameters(d_in, d_out, rank)`, the number of weights LoRA adds to one layer; the
# check counts what `peft` adds to a `Linear` for four shapes. The table below then compares
# the update with $W$ itself at the toy U-Net's width (64 channels) and at SD-2.1's widest
# (1,280): what does rank 64 mean at each width?

# %%
def lora_parameters(d_in, d_out, rank):
    """The trainable weights of LoRA's A (rank, d_in) and B (d_out, rank)."""
    # solution
    return rank * (d_in + d_out)


# %%
# The check against peft, then each rank's share of a square layer at two widths
if teaching.check_lora_parameters(lora_parameters) == teaching.CORRECT:
    ranks = [1, 2, 4, 8, 16, 32, 64]
    display(pd.DataFrame({f"share of W, {d}x{d}": [lora_parameters(d, d, r) / d**2 for r in ranks] for d in (64, 1280)},
                         index=pd.Index(ranks, name="LoRA rank")).round(3))

# %% [markdown] tags=["solution"]
# *Reading it:* a rank-$r$ update of a $d \times d$ layer has $2rd$ weights, a share $2r/d$ of the
# layer. At SD-2.1's width rank 64 is a 10 % update; at the toy's width rank 32 already has as
# many weights as $W$ and rank 64 twice as many, so the toy's sweep runs from a small update to
# more than a full one. The paper's "rank barely matters" and the toy's flat Tab. 7 are about
# different regimes.


# %% [markdown]
# ## What we learned
#
# Written from this notebook's tables:

# %%
# The findings, each number read from the tables above
verdicts = claims["verdict"].value_counts()
report.prose(
    f"- **The rank does not matter here.** ITM {span(results.metrics.loc[rank_variants, 'ITM overall'])} % "
    f"and REC {span(rec)} % for ranks 1-64; plain "
    f"generation within {plain['diff'].min():+.0f} to {plain['diff'].max():+.0f} points of the base model for every rank.\n"
    f"- **Self-correction, not stage 2, is what lifts generation here**: every rank's adapter adds to toy-CC (ID) "
    f"{corrected.loc['toy-cc (ID)', 'diff'].min():+.0f} to {corrected.loc['toy-cc (ID)', 'diff'].max():+.0f} points (intervals "
    "reaching 0 at 100 images).\n"
    "- **Tuning the adapter with LoRA no longer beats LoRA alone** once stage 1 has converged (Tab. 11), over five training "
    "seeds too.\n"
    "- The claims table reads " + ", ".join(f"{n} *{v}*" for v, n in verdicts.items()) + " (one run each). At the toy width "
    "a rank of 32 is already a full-size update (the exercise): the paper's \"rank barely matters\" and the toy's flat Tab. 7 "
    "are about different regimes.")
