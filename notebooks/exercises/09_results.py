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

# %% [markdown]
# **In this lesson you will**
# - gather every claim the notebooks test into one table, and see which are missing at this scale;
# - read the core claims over five training seeds, with verdicts that need the seeds to agree;
# - set the exploratory runs (seeds 0-4) beside the confirmatory ones (seeds 5-9), made under a
#   plan frozen before they ran;
# - write the verdict rule, and read why one row's verdict is what it is (the exercise);
# - see what each ablation batch cost to run.
#
# *Prerequisites:* `03_self_correction` and the ablation notebooks 04-08 (whose tables this one
# gathers); `docs/evidence.md` for the rules. *Time on 2 CPU cores:* about 15 s (it reads the
# committed tables and runs).

# %% tags=["parameters"]
scale = None  # "smoke" | "toy"; None reads $DPT_SCALE (default "toy")
write_readme = True  # at the toy scale, rewrite the claims tables of README.md and docs/results.md (between their markers)

# %%
# The libraries, the parameters and the plotting style (which also shows tables whole)
import math
import re

import pandas as pd
from IPython.display import display

from dptlib import checks, config
from dptlib.experiments import ablation_claims, ablations, report, seed_claims
from dptlib.teaching import checks as teaching

params = checks.notebook_parameters("09_results", globals())
report.set_theme()

# %% tags=["nbval-ignore-output"]
# The run's settings and what decides the rounding of its numbers (trained numbers come out again byte for byte only where it matches)
print(config.run_summary(params))

# %% [markdown]
# ## The one-run claims
#
# Each notebook's claims file, read where it exists:

# %%
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

# %%
# One table, its verdicts read as one run's, and how many rows each notebook gives per reading
claims = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=["claim", "paper", "toy (difference, 95 % interval)",
                                                                                  "n", "verdict", "notebook"])
claims = report.one_run_verdicts(claims)
report.save_table(claims, "results_claims", params.scale)
print(f"{len(claims)} claims from {len(found)} notebooks; not yet run at scale {params.scale!r}: {missing or 'none'}")
claims.groupby("notebook", sort=False)["on test items"].value_counts().unstack(fill_value=0)

# %%
# Every row
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
# with Satterthwaite's degrees of freedom); ITM and REC queries cluster by their test image (the
# queries on one image share it). The verdict **holds** only when that interval clears 0 on the
# claimed side, the p-value adjusted by Holm's method over **all the paper's claims as one family**
# stays below 0.05 (the adjustment within each paper table is a column, for reading), **and** at
# least 4 of 5 seeds (all of 3) agree in sign; a control reads *effect* only when the crossed
# bootstrap's interval agrees with the t interval (both shown). Fewer than 3 seeds read
# **one run** / **k runs**. "size vs paper" flags a toy effect more than 3× larger or smaller than
# the paper's: the toy world is not COCO, and its effects are not the paper's.
#
# The finished runs' outcomes are committed (`results/toy/seeds/`), so this table is rebuilt in
# seconds anywhere; `make check-claims` compares a re-run's table with the committed one.

# %%
# Every core claim over the seeds that have run
runs = seed_claims.load_runs(params.scale)
by_seed = seed_claims.claims_table(runs)
report.save_table(by_seed, seed_claims.TABLE, params.scale)
print(f"{len(by_seed)} claims measured; seeds batch variants not finished at scale {params.scale!r}: {len(runs.missing)}")
by_seed.drop(columns=["difference", "low", "high"]).set_index(["family", "claim"])

# %% [markdown]
# ## Exploratory and confirmatory runs
#
# The rules above were frozen in `docs/analysis-plan.md` (plan 1) before the **confirmatory**
# batch (`seeds_confirm`: training seeds 5-9, nothing tuned on them) started; the `seeds` batch
# (seeds 0-4) is **exploratory**: choices were made after its test tables were seen (the plan lists
# them). Each run records the plan it was made under:

# %%
# Which runs were made under which plan (the sha256 each run's done.json records)
plans = seed_claims.plan_of_runs(params.scale)
plans.groupby(["batch", "analysis plan", "finished"]).size().rename("runs").to_frame()

# %% [markdown]
# The same claims from each batch, side by side, and over all ten seeds (descriptive: no verdict
# is read from it). The README's table uses the confirmatory verdicts once all five seeds have run.

# %%
# Exploratory (0-4), confirmatory (5-9) and all ten seeds
confirm_runs = seed_claims.load_runs(params.scale, seed_claims.CONFIRMATORY)
confirmatory = seed_claims.claims_table(confirm_runs)
report.save_table(confirmatory, f"{seed_claims.TABLE}_confirm", params.scale)
together = seed_claims.claims_table(seed_claims.combine_runs(runs, confirm_runs))
both = seed_claims.side_by_side(by_seed, confirmatory, together)
report.save_table(both, f"{seed_claims.TABLE}_side_by_side", params.scale)
confirm_done = 5 - sum(name.startswith("dpt-") for name in confirm_runs.missing)
print(f"confirmatory dpt runs finished: {confirm_done} of 5")
both.set_index(["family", "claim"])

# %% [markdown]
# ### Exercise: read a verdict
#
# A row's verdict follows from its interval $[\text{low}, \text{high}]$, its Holm-adjusted p, how
# many of its $n$ training runs have a per-seed difference above 0, and the sign the paper claims
# ($+1$: an improvement). Write the rule of `docs/evidence.md`: *holds* when the interval lies on
# the claimed side of 0, p < 0.05 and at least 4 of 5 seeds (80 %) agree with that side;
# *contradicted* when the same is true of the other side; *inconclusive* otherwise. Then read the
# row printed below (picked from the committed table, `figures/seed_claims.csv`: an
# *inconclusive* row whose interval nonetheless excludes 0, where there is one) and say why it is
# neither *holds* nor *contradicted*.

# %%
# The row to read, picked from the committed table by code, and the sign its claim expects
table = pd.read_csv(config.figures_dir(params.scale) / f"{seed_claims.TABLE}.csv", keep_default_na=False)
signs = {c.claim: c.expected_sign for c in seed_claims.core_claims() if not c.control}
candidates = table[table["claim"].isin(signs) & (table["verdict"] == "inconclusive")]
clear_of_zero = candidates[(candidates["low"] > 0) | (candidates["high"] < 0)]
row = (clear_of_zero if len(clear_of_zero) else candidates).iloc[0] if len(candidates) else None
if row is not None:
    per_seed = [float(v) for v in row["per seed"].split(", ")]
    p_holm = float(re.search(r"[\d.]+", row["p (Holm)"]).group())
    print(f"{row.family}: {row.claim}\n  difference {row.difference:+.1f} [{row.low:+.1f}, {row.high:+.1f}], Holm-adjusted p "
          f"{row['p (Holm)']}, unadjusted {row['toy (difference, 95 % interval)'].split('(')[-1].rstrip(')')}\n  per seed "
          f"{row['per seed']} ({sum(v > 0 for v in per_seed)} of {len(per_seed)} above 0); claimed sign {signs[row.claim]:+d}; "
          f"verdict: {row.verdict}")

# %% [markdown]
# The rule, as a function of a row's numbers:

# %%
def verdict(low, high, p_holm, runs_positive, n_runs, expected_sign):
    """'holds', 'contradicted' or 'inconclusive' for a claim of sign expected_sign (+1 or -1), n_runs >= 3."""
    # Write your code here.


# %%
# The check: the rule against dptlib.evaluation.stats.seed_verdict on many cases
teaching.check_verdict(verdict)

# %% [markdown]
# What each arm scores, over its seeds: generation as the oracle's exact-match rate per prompt
# cell, discrimination as accuracy per task ("ITM overall (stage 1)": the stage-1 adapter; the
# base model's rows are Tab. 3's baselines), each the mean over seeds with the lowest and highest
# seed's value in brackets.

# %%
# Each arm over its seeds
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
# The ablation notebooks' tables over seeds, gathered
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
# Each batch's measured minutes (finished variants' done.json)
times = ablations.batch_times(params.scale, recorded=config.figures_dir(params.scale) / "ablation_times.csv")
report.save_table(times, "ablation_times", params.scale, floatfmt=".1f")
times

# %% [markdown]
# ## The README's table
#
# At the toy scale six sections of Markdown are these tables: in `docs/results.md`, the
# one-run claims table (between `<!-- claims:begin -->` and `<!-- claims:end -->`), the full
# tables over the exploratory and the confirmatory training seeds (`seed_claims`,
# `seed_claims_confirm`), the two side by side (`seed_claims_side_by_side`) and the ablation
# claims over training seeds (`ablation_seed_claims`); in the README, a short one over seeds (`seed_summary`: the claim,
# its paired difference with the interval and both verdicts, the confirmatory estimate once all
# five confirmatory seeds have run, and a sentence naming any claim whose two verdicts differ).

# %%
# Rewrite the six sections (toy scale only)
if params.write_readme and params.scale == "toy":
    results_md, none_yet = config.repo_root() / "docs" / "results.md", "(no seeds run yet)"
    report.replace_between_markers(results_md, "claims", report.markdown_table(claims))
    for name, table in (("seed_claims", by_seed), ("seed_claims_confirm", confirmatory), ("seed_claims_side_by_side", both),
                        ("ablation_seed_claims", ablation_by_seed)):
        shown = table.drop(columns=["difference", "low", "high"], errors="ignore")
        report.replace_between_markers(results_md, name, report.markdown_table(shown) if len(shown) else none_yet)
    summary, under = seed_claims.readme_summary(both, confirm_done)
    report.replace_between_markers(config.repo_root() / "README.md", "seed_summary",
                                   report.markdown_table(summary) + "\n" + under if len(summary) else none_yet)
    print("docs/results.md (claims, seed_claims, seed_claims_confirm, seed_claims_side_by_side, ablation_seed_claims) "
          "and README.md (seed_summary) rewritten")


# %% [markdown]
# ## What we learned
#
# Written from the tables above:

# %%
# The findings, each count read from the tables above
core = by_seed["verdict"].value_counts() if len(by_seed) else pd.Series(dtype=int)
ablation = ablation_by_seed["verdict"].value_counts() if len(ablation_by_seed) else pd.Series(dtype=int)
held = by_seed.loc[by_seed["verdict"] == "holds", "family"].unique() if len(by_seed) else []
report.prose(
    f"- **{len(claims)} one-run claims** from {len(found)} notebooks read *one run* on their verdict: their intervals cover "
    "the test items, not the spread between training runs.\n"
    f"- **Over training seeds 0-4 (exploratory), the {len(by_seed)} core claims** read "
    + ", ".join(f"{n} *{v}*" for v, n in core.items())
    + "; the ones that hold are in " + (", ".join(held) or "no family") + ".\n"
    "- **The ablation claims over seeds** read " + (", ".join(f"{n} *{v}*" for v, n in ablation.items()) or "nothing yet") + ".\n"
    "- A verdict needs the interval, the Holm-adjusted p and the seeds to agree (the exercise): a row can have an interval "
    "clear of 0 and every seed on one side, and still be *inconclusive*.\n"
    f"- **The confirmatory runs** (seeds 5-9, plan 1): {confirm_done} of 5 `dpt` runs finished. "
    + seed_claims.confirmatory_finding(both, confirmatory, confirm_done))
