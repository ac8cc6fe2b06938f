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
# *Exercise version of `notebooks/09_results.py`, written by `make exercises`: do not edit it here.
# Where a cell says `# Write your code here.`, write the code; the check after it says
# "not attempted yet" until you do, then whether your answer agrees with the library.*

# %% [markdown]
# # 09 · Results: the paper's claims, tested at the toy scale
#
# Every notebook that tests a claim of the paper writes its rows (`*claims.csv` in `figures/`):
# `03_self_correction` those of Tab. 1, 3, 4, 10 (one adapter) and 11 and its controls, each
# ablation notebook those of its table. This notebook gathers them into one table, the README's,
# and says which are missing (an ablation not yet run at this scale).
#
# A row: the claim, the paper's number, the toy world's paired difference with its 95 % interval
# and p-value, the number of paired images or queries, and what that interval says **on test
# items**: *holds* (it lies on the claimed side of 0), *contradicted* (on the other side),
# *inconclusive* (it contains 0); a control, or a claim of *no* difference, *no effect* / *effect*.
#
# **These rows are one training run each**: their intervals cover the test items, not the spread
# between training runs, so their **verdict** reads *one run*, never *holds* (Fig. 4b's η, chosen
# on the images that report it, reads *selected on these images*). "family size" is how many
# claims the row's table tests (a multiple-comparison adjustment would divide by it); "size vs
# paper" flags a toy difference more than 3× the paper's or under a third of it. The second part
# of this notebook gives the core claims over several training seeds (the `seeds` batch), with
# verdicts that need the seeds to agree.

# %% tags=["parameters"]
scale = None  # "smoke" | "toy"; None reads $DPT_SCALE (default "toy")
write_readme = True  # at the toy scale, rewrite the claims tables of README.md and docs/results.md (between their markers)

# %%
import math

import pandas as pd
from IPython.display import display

from dptlib import checks, config
from dptlib.experiments import ablation_claims, ablations, report, seed_claims
from dptlib.teaching import checks as teaching

params = checks.notebook_parameters("09_results", globals())
SOURCES = {  # claims file -> the notebook that writes it
    "claims": "03_self_correction", "tab6_blocks_claims": "04_ablation_blocks", "tab7_rank_claims": "05_ablation_lora_rank",
    "tab8_layers_claims": "06_ablation_adapter_layers", "tab10_timesteps_claims": "07_ablation_timesteps",
    "tab9_mse_claims": "08_ablation_mse",
}
found, missing = [], []
for name, notebook in SOURCES.items():
    path = config.figures_dir(params.scale) / f"{name}.csv"
    if path.exists():
        found.append(pd.read_csv(path).assign(notebook=notebook))
    else:
        missing.append(notebook)
claims = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=["claim", "paper", "toy (difference, 95 % interval)",
                                                                                  "n", "verdict", "notebook"])
claims = report.one_run_verdicts(claims)
report.save_table(claims, "results_claims", params.scale)
print(f"{len(claims)} claims from {len(found)} notebooks; not yet run at scale {params.scale!r}: {missing or 'none'}")
claims.groupby("notebook", sort=False)["on test items"].value_counts().unstack(fill_value=0)

# %% tags=["nbval-ignore-output"]
# What decides the rounding of this run's numbers: trained numbers come out again byte for byte only where it matches
config.float_environment()

# %%
display(claims.drop(columns="notebook").set_index("claim"))

# %% [markdown]
# ## The core claims over training seeds
#
# The `seeds` batch (`make seeds`, `papermill_params/ablations/seeds.yaml`) trains every arm of the
# core claims once per training seed (0-4): DPT (stage 1 + stage 2, sampled plainly, self-corrected
# and along random directions of the same step size), LoRA alone, and the shuffled-pairs control,
# beside the untrained base model and the training-free baselines of Tab. 3. The training seed
# changes initialisation, data order and noise; test prompts, generation seeds and queries stay
# fixed, so every comparison is paired by training seed and test item.
#
# For a claim, $d_{rc}$ is the paired difference of run $r$ on test cluster $c$ (a prompt with its
# four generation seeds, or one query). The estimate is the mean over runs and clusters; its 95 %
# interval adds the between-run variance to the test items' (`dptlib.evaluation.stats.crossed_interval`:
# $\widehat{\mathrm{Var}} = v_\text{runs}/R + v_\text{items}/C - v_\text{resid}/RC$, Student's $t$
# with Satterthwaite's degrees of freedom). The verdict **holds** only when that interval clears 0
# on the claimed side, the p-value adjusted by Holm's method within the claim's table stays below
# 0.05, **and** at least 4 of 5 seeds (all of 3) agree in sign; fewer than 3 seeds read
# **one run** / **k runs**. "size vs paper" flags a toy effect more than 3× larger or smaller than
# the paper's: the toy world is not COCO, and its effects are not the paper's.
#
# The finished runs' outcomes are committed (`results/toy/seeds/`), so this table is rebuilt in
# seconds anywhere; `make check-claims` compares a re-run's table with the committed one.

# %%
runs = seed_claims.load_runs(params.scale)
by_seed = seed_claims.claims_table(runs)
report.save_table(by_seed, seed_claims.TABLE, params.scale)
print(f"{len(by_seed)} claims measured; seeds batch variants not finished at scale {params.scale!r}: {len(runs.missing)}")
by_seed.drop(columns=["difference", "low", "high"]).set_index(["family", "claim"])

# %% [markdown]
# ### Exercise: read a verdict
#
# A row's verdict follows from its interval $[\text{low}, \text{high}]$, its Holm-adjusted p, how
# many of its $n$ training runs have a per-seed difference above 0, and the sign the paper claims
# ($+1$: an improvement). Write the rule of `docs/evidence.md`: *holds* when the interval lies on
# the claimed side of 0, p < 0.05 and at least 4 of 5 seeds (80 %) agree with that side;
# *contradicted* when the same is true of the other side; *inconclusive* otherwise. Then say why
# the Tab. 3 REC row above is not *holds*.

# %%
def verdict(low, high, p_holm, runs_positive, n_runs, expected_sign):
    """'holds', 'contradicted' or 'inconclusive' for a claim of sign expected_sign (+1 or -1), n_runs >= 3."""
    # Write your code here.


# %%
teaching.check_verdict(verdict)

# %% [markdown]
# What each arm scores, over its seeds: generation as the oracle's exact-match rate per prompt
# cell, discrimination as accuracy per task ("ITM overall (stage 1)": the stage-1 adapter; the
# base model's rows are Tab. 3's baselines), each the mean over seeds with the lowest and highest
# seed's value in brackets.

# %%
arms = seed_claims.arm_table(runs)
report.save_table(arms, "seed_arms", params.scale, floatfmt=".1f")
arms

# %% [markdown]
# ## Ablation claims over training seeds
#
# Where an ablation's compared adapters were trained again at other training seeds (batch files
# run on request), its notebook judges its claims by the same rules, with Holm's adjustment over
# its own table, and writes `*_seed_claims.csv`; they are gathered here (`dptlib.experiments.ablation_claims`
# defines them, and `make check-claims` re-derives each from the committed runs). The one-run rows
# of the same claims stay in the table at the top.

# %%
shown_columns = [c for c in ablations.SEEDED_CLAIM_COLUMNS if c not in ("difference", "low", "high")]  # the numbers are in the text
parts = [pd.read_csv(path, dtype=str, keep_default_na=False).reindex(columns=shown_columns).assign(notebook=table.notebook)
         for table in ablation_claims.TABLES.values()  # the tables dptlib.experiments.ablation_claims defines, and who writes each
         if (path := config.figures_dir(params.scale) / f"{table.name}.csv").exists()]
ablation_by_seed = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*shown_columns, "notebook"])
report.save_table(ablation_by_seed, "ablation_seed_claims", params.scale)
ablation_by_seed.set_index("claim")

# %% [markdown]
# ## What each ablation batch cost
#
# The seconds each finished variant's papermill run took (`done.json`), summed per batch: the
# measured time of `make ablations` at this scale, on this machine, with the day(s) it ran. A batch
# with no finished variant here (run on another day, on a machine whose `runs/` is gone) keeps the
# row the table had: what it cost when it ran, marked "earlier run".

# %% tags=["nbval-ignore-output"]
times = ablations.batch_times(params.scale, recorded=config.figures_dir(params.scale) / "ablation_times.csv")
report.save_table(times, "ablation_times", params.scale, floatfmt=".1f")
times

# %% [markdown]
# ## The README's table
#
# At the toy scale four sections of Markdown are these tables: in `docs/results.md`, the
# one-run claims table (between `<!-- claims:begin -->` and `<!-- claims:end -->`), the full
# table over training seeds (`seed_claims`) and the ablation claims over training seeds
# (`ablation_seed_claims`); in the README, a short one over seeds (`seed_summary`:
# the claim, its paired difference with the interval, the seeds agreeing and the verdict).

# %%
SUMMARY_COLUMNS = ["family", "claim", "toy (difference, 95 % interval)", "seeds agreeing", "verdict"]
if params.write_readme and params.scale == "toy":
    results_md = config.repo_root() / "docs" / "results.md"
    report.replace_between_markers(results_md, "claims", report.markdown_table(claims))
    shown = by_seed.drop(columns=["difference", "low", "high"])
    none_yet = "(no seeds run yet)"
    report.replace_between_markers(results_md, "seed_claims", report.markdown_table(shown) if len(shown) else none_yet)
    report.replace_between_markers(results_md, "ablation_seed_claims",
                                   report.markdown_table(ablation_by_seed) if len(ablation_by_seed) else none_yet)
    summary = shown[[c for c in SUMMARY_COLUMNS if c in shown.columns]]
    report.replace_between_markers(config.repo_root() / "README.md", "seed_summary",
                                   report.markdown_table(summary) if len(summary) else none_yet)
    print("docs/results.md (claims, seed_claims, ablation_seed_claims) and README.md (seed_summary) rewritten")
