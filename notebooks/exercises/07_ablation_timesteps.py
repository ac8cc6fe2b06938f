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
# *Exercise version of `notebooks/07_ablation_timesteps.py`, written by `make exercises`: do not edit it here.
# Where a cell says `# Write your code here.`, write the code; the check after it says
# "not attempted yet" until you do, then whether your answer agrees with the library.*

# %% [markdown]
# # 07 · Ablation: the timestep of discrimination (Tab. 10)
#
# **The paper's question.** The adapter sees the U-Net's features of a *noisy* latent $z_t$. At
# which noise level do they discriminate best?
#
# **The paper's finding.** $t = 250$ is best for both ITM and REC; $t = 0$ is a little worse
# ("it is helpful to improve the discriminative abilities by introducing appropriate levels of
# noise", App. A.8), and heavy noise ($t = 750, 999$) hurts, REC most. The protocol: an adapter
# trained **and** tested at each $t$.

# %% [markdown]
# **In this lesson you will**
# - read Tab. 10's toy analogue: one stage-1 adapter trained and tested at each $t$, as paired
#   differences to $t = 250$;
# - test the paper's claims on one run, then over five training seeds, and see a one-run *holds*
#   turn *inconclusive*;
# - compare the paper's protocol with the cheaper one-adapter protocol of `01_probing`;
# - compute how much of the image is left at each $t$ (the exercise).
#
# *Prerequisites:* `01_probing` (the adapter and its Tab. 10 with one adapter), `09_results`'
# verdict rules. *Time on 2 CPU cores:* about 15 s (it reads the committed runs); running the batch
# takes about 42 min, each seeds file about 45 min.

# %% tags=["parameters"]
scale = None  # "smoke" | "toy"; None reads $DPT_SCALE (default "toy")
batch = "timesteps"  # papermill_params/ablations/<batch>.yaml
seeds_batches = ["timesteps_seeds", "timesteps_more_seeds"]  # the claims' arms at training seeds 1-2 and 3-4 (run on request only)
max_variants = None  # the batch's first variants only (None: all)
run = True  # run the variants whose results are missing; False: show the results there are

# %%
# The libraries, the parameters and the plotting style (which also shows tables whole)
import pandas as pd
import torch
from IPython.display import display

from dptlib import checks, config
from dptlib.experiments import ablation_claims, ablations, report
from dptlib.teaching import checks as teaching
from dptlib.toy.model import build_scheduler

params = checks.notebook_parameters("07_ablation_timesteps", globals())
report.set_theme()

# %% tags=["nbval-ignore-output"]
# The run's settings and what decides the rounding of its numbers (trained numbers come out again byte for byte only where it matches)
print(config.run_summary(params))

# %% [markdown]
# The paper's numbers (App. Tab. 10):

# %%
pd.DataFrame({"MSCOCO-HN overall": [39.19, 39.72, 38.52, 35.11, 31.52], "REC average": [51.83, 54.32, 48.11, 28.34, 13.24]},
             index=pd.Index([0, 250, 500, 750, 999], name="paper, Tab. 10: t"))

# %% [markdown]
# ## The batch
#
# One stage-1 adapter per $t$, trained on $z_t$ at that $t$ only and asked at it
# (`papermill_params/ablations/timesteps.yaml`; no stage 2, no generation: the table is about
# discrimination), with the 16-query, cosine stage 1 for 1,000 steps. `01_probing` ran the cheaper
# variant: one adapter trained on $t \sim U[0, 1000)$, asked at each $t$ (its
# `tab10_timesteps_one_adapter`). Finished variants are read back, not run again.

# %% tags=["nbval-ignore-output"]
# Run the missing variants (none, once committed), then read every t
spec, results = ablations.run_and_collect(params.batch, params.scale, params.max_variants, run=params.run)
results.metrics.round(1)

# %% [markdown]
# ## Tab. 10 analogue
#
# Accuracy with its 95 % interval (bootstrap over queries), then each $t$'s paired difference to
# $t = 250$ on the same queries (McNemar's p).

# %%
_, discrimination = ablations.compare_variants(results, spec.reference)
tab10 = pd.concat({"accuracy (%)": report.interval_table(discrimination, "task"),
                   "difference to t = 250": report.difference_table(discrimination, "task")}, axis=1)
report.save_table(tab10.rename_axis("trained and tested at"), "tab10_timesteps", params.scale)
tab10

# %% tags=["nbval-ignore-output"]
# The table as a figure
grid = report.interval_plot(discrimination, x="variant", col="task", order=sorted(tab10.index, key=lambda v: int(v[2:])))
report.save_figure(grid.figure, "tab10_timesteps", params.scale)

# %% [markdown]
# **What the toy run found**, written from the table above (one run per $t$). First, a helper that
# writes a paired difference with its interval.

# %%
def ci(task, variant, sign=+1):
    """'-3.1 [-5.9, -0.3]': ``variant``'s paired difference to t = 250 on ``task``, with its 95 % interval
    (``sign=-1``: t = 250's difference to ``variant``)."""
    row = discrimination.loc[(task, variant)]
    low, high = sorted((sign * row["diff_low"], sign * row["diff_high"]))
    return f"{sign * row['diff']:+.1f} [{low:+.1f}, {high:+.1f}]"


acc = results.metrics
signal = build_scheduler().alphas_cumprod[999].sqrt().item()  # how much of z_0 is left in z_999, by amplitude

# %%
# Where the adapters stand: off the grounding plateau at t <= 500
with report.toy_rows(params.scale):  # at the smoke scale a batch runs its first variants only
    low_t = [v for v in ("t=0", "t=250", "t=500") if v in acc.index]
    display(report.prose(f"Both columns come from adapters that have left the grounding plateau (REC "
                         f"{acc.loc[low_t, 'REC P@1'].min():.1f}-{acc.loc[low_t, 'REC P@1'].max():.1f} % at $t \\le 500$)."))

# %%
# The ordering, and what heavy noise does
with report.toy_rows(params.scale):  # at the smoke scale a batch runs its first variants only
    p = lambda task, v: discrimination.loc[(task, v), "p"]
    display(report.prose(
        f"- *The paper's ordering is seen.* $t = 250$ matches and grounds better than $t = 0$: ITM {acc.at['t=250', 'ITM overall']:.1f} "
        f"against {acc.at['t=0', 'ITM overall']:.1f} %, {ci('ITM overall', 't=0', -1)} (p = {p('ITM overall', 't=0'):.2f}), REC "
        f"{acc.at['t=250', 'REC P@1']:.1f} against {acc.at['t=0', 'REC P@1']:.1f} %, {ci('REC P@1', 't=0', -1)} (p = {p('REC P@1', 't=0'):.3f}). "
        f"$t = 500$ is level with $t = 250$ (ITM {ci('ITM overall', 't=500')}, REC {ci('REC P@1', 't=500')}).\n"
        f"- *Heavy noise removes the signal*: ITM {acc.at['t=750', 'ITM overall']:.1f} % at $t = 750$ and {acc.at['t=999', 'ITM overall']:.1f} % "
        f"at $t = 999$ (chance 25 %), REC {acc.at['t=750', 'REC P@1']:.1f} % and {acc.at['t=999', 'REC P@1']:.1f} %. The paper's drop at "
        f"$t = 999$ is smaller (ITM −8.2, REC −41.1 against {discrimination.loc[('ITM overall', 't=999'), 'diff']:.1f} and "
        f"{discrimination.loc[('REC P@1', 't=999'), 'diff']:.1f} here), with the same noise schedule in both worlds ($z_{{999}}$ keeps "
        f"{100 * signal:.0f} % of the clean latent by amplitude: the exercise below); why the toy loses more is not measured."))

# %% [markdown]
# Each $t$ here is one training run, and its intervals cover the test queries, not a training
# seed: the rows read *holds* on test items only. 1,000 steps is a third of what converges at
# $t \sim U[0, 1000)$; an adapter trained at one $t$ sees one noise level only, so how far each
# is from converged may differ with $t$.
#
# ## The paper's claims, tested
#
# The claims are defined once, in `dptlib.experiments.ablation_claims` (this table, the one over training
# seeds below, `09_results` and `make check-claims` read the same list): each compares the
# `own` adapter's $t$ with the `base` one's on a task, in the claimed direction.

# %%
TAB10 = ablation_claims.TAB10
ablation_claims.claims_frame(TAB10)

# %%
# Each claim on this batch's one run
claims = ablations.claims_frame([ablations.variant_claim(results, c.claim, c.paper, c.base, c.own, c.task, expected_sign=c.expected_sign)
                                 for c in TAB10.claims])
report.save_table(claims, "tab10_timesteps_claims", params.scale)
claims

# %% [markdown]
# ## The claims over training seeds
#
# The rows above are one training run per $t$: their intervals cover the test queries, not what
# another run would give. `timesteps_seeds.yaml` and `timesteps_more_seeds.yaml` train the
# adapters these claims compare ($t$ = 250, 0 and 999) again at training seeds 1-2 and 3-4 (run
# on request: `python -m dptlib.experiments.ablations timesteps_seeds --scale toy`); with this
# batch's seed 0, each claim has up to five runs, paired by training seed on the same test
# queries. Each claim is judged by the core claims' rules (`09_results`): the difference over
# seeds and queries with its seed-aware interval, each seed's own difference, Holm's adjustment
# over this table's claims that have at least three runs, and *holds* only when the interval and
# the adjusted p exclude 0 on the claimed side and at least 4 of 5 seeds (all of 3) agree
# (`dptlib.experiments.ablations.seeded_claims`). Fewer than three runs read "k runs".

# %% tags=["nbval-ignore-output"]
# The seeded runs (run on request only: what has finished)
seeded = ablations.read_finished(params.seeds_batches, params.scale)
seeded.metrics.reindex(columns=["ITM overall", "REC P@1", "seconds"]).round(1)

# %%
# Each claim over the seeds (no seeded run yet: an empty table, which 09_results then reports)
by_seed = ablation_claims.measure(TAB10, results, seeded)
report.save_table(by_seed, TAB10.name, params.scale)
by_seed.drop(columns=["difference", "low", "high"]).set_index("claim")

# %% [markdown]
# **What the seeds say**, read from the tables above (seed 0 is this batch's run) and, for the
# one-adapter protocol, from `09_results`' table (`figures/seed_claims.csv`):

# %%
# Each t's accuracy over its seeds: mean (lowest-highest)
with report.toy_rows(params.scale):  # at the smoke scale a batch runs its first variants only
    runs = pd.concat([acc[["ITM overall", "REC P@1"]], seeded.metrics[["ITM overall", "REC P@1"]]])
    arm = runs.groupby(runs.index.str.split("-").str[0])
    spread = lambda t, task: f"{arm[task].mean()[t]:.1f} % ({arm[task].min()[t]:.1f}-{arm[task].max()[t]:.1f})"
    display(report.prose(
        "Accuracy over the seeds, mean (lowest-highest): ITM " + ", ".join(f"$t = {t[2:]}$ {spread(t, 'ITM overall')}"
                                                                           for t in ("t=250", "t=0", "t=999"))
        + "; REC " + ", ".join(f"{spread(t, 'REC P@1')}" for t in ("t=250", "t=0", "t=999")) + ".\n\n"
        + "\n".join(f"- {r.claim.split(': ', 1)[1]}: **{r['toy (difference, 95 % interval)']}**, per seed {r['per seed']} "
                    f"({r['seeds agreeing']} agreeing), Holm p {r['p (Holm)']} → *{r.verdict}*" for _, r in by_seed.iterrows())))

# %%
# The one-adapter protocol's rows of the same claims, over five seeds (09_results)
with report.toy_rows(params.scale):  # at the smoke scale a batch runs its first variants only
    seeds = pd.read_csv(config.figures_dir(params.scale) / "seed_claims.csv")
    one_adapter = seeds[seeds["claim"].str.contains("t = 250") & seeds["claim"].str.contains("one adapter")]
    display(report.prose(
        "The seeds batch's one-adapter protocol (one adapter trained on every $t$ and asked at each) reads "
        + " and ".join(f"{r['toy (difference, 95 % interval)'].split(' (')[0]} ({r.claim.split('(')[1].split(',')[0]}, *{r.verdict}*)"
                       for _, r in one_adapter.iterrows())
        + ": there both $t$ are asked of the same adapter, so the comparison does not carry two adapters' training noise. In the "
        f"paper's protocol the adapters differ, and at 1,000 steps their spread between seeds (ITM at $t = 250$: "
        f"{arm['ITM overall'].min()['t=250']:.1f}-{arm['ITM overall'].max()['t=250']:.1f} %) is larger than the effect."))


# %% [markdown]
# ## Exercise: how much image is left at $t$?
#
# The forward process mixes a clean latent with noise, $z_t = \sqrt{\bar\alpha_t}\, z_0 +
# \sqrt{1 - \bar\alpha_t}\, \epsilon$, so its signal-to-noise ratio is
# $\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)$. Write `snr(alphas_cumprod, timesteps)`
# (`alphas_cumprod`: the scheduler's $\bar\alpha$, shape (1000,); `timesteps`: (k,)); the check
# reads the ratio off the scheduler's own `add_noise`, for SD's schedule and a linear one. The
# table then gives it at the batch's timesteps: what can an adapter probing $t = 999$ see?

# %%
def snr(alphas_cumprod, timesteps):
    """abar_t / (1 - abar_t) at ``timesteps`` (k,)."""
    # Write your code here.


# %%
# The check against the scheduler's add_noise, then the SNR at the batch's timesteps
if teaching.check_snr(snr) == teaching.CORRECT:
    steps = torch.tensor([0, 250, 500, 750, 999])
    ratio = snr(build_scheduler().alphas_cumprod, steps)
    display(pd.DataFrame({"SNR": ratio.numpy(), "signal share of z_t": (ratio / (1 + ratio)).sqrt().numpy()},
                         index=pd.Index(steps.tolist(), name="t")).round(4))

# %% [markdown]
# ## What we learned
#
# Written from this notebook's tables:

# %%
# The findings, each number read from the tables above
with report.toy_rows(params.scale):  # at the smoke scale a batch runs its first variants only
    verdict = by_seed.set_index("claim")["verdict"] if len(by_seed) else pd.Series(dtype=str)
    one_run = claims.set_index("claim")["verdict"]
    display(report.prose(
        f"- **Heavy noise removes what the adapter reads**: at $t = 999$ ITM {acc.at['t=999', 'ITM overall']:.1f} % (chance 25 %) and "
        f"REC {acc.at['t=999', 'REC P@1']:.1f} %, and over seeds: " + ", ".join(f"*{v}*" for c, v in verdict.items() if "999" in c) + " (ITM, REC).\n"
        "- **$t = 250$ over $t = 0$** reads " + ", ".join(f"*{v}*" for c, v in one_run.items() if "t = 0" in c)
        + " on seed 0's test items, but " + ", ".join(f"*{v}*" for c, v in verdict.items() if "t = 0" in c)
        + " over five seeds (ITM, REC): a verdict from one training run cannot tell an effect from that run's luck.\n"
        "- **The protocol matters**: asking one adapter at every $t$ (`01_probing`, `09_results`) removes the between-adapter "
        "spread and narrows the interval (ITM " + " against ".join(
            f"{t['toy (difference, 95 % interval)'].split(' (')[0]}" for t in (one_adapter.iloc[0], by_seed.iloc[0])) + " in the paper's "
        "protocol); over five seeds it reads " + ", ".join(f"*{v}*" for v in one_adapter["verdict"]) + " (ITM, REC).\n"
        f"- At $t = 999$ the latent keeps {100 * signal:.0f} % of the image by amplitude (the exercise): little is left to match or ground."))
