"""The ablations' claims over training seeds, defined once.

An ablation notebook (04, 06, 07) judges a few of its claims again over training seeds: its own batch
is training seed 0, a seeds batch (``adapter_layers_seeds.yaml``, ``timesteps_seeds.yaml``, ...)
trains the compared arms at seeds 1-4, and :func:`dptlib.experiments.ablations.seeded_claims` pairs them by
seed on the same test items. The claims live here, not in the notebooks, so that the notebook that
writes a table, ``09_results`` that gathers them and ``make check-claims`` that re-derives them
from the committed ``results/`` all read one definition:

    python -m dptlib.experiments.seed_claims check --scale toy     # the core table and every table below
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dptlib.config import resolve_scale
from dptlib.experiments import ablations


@dataclass(frozen=True)
class SeededClaim:
    """``own`` against ``base`` on ``task`` (a discrimination task or a generation cell), over seeds.

    ``base`` / ``own``: the seed-0 variant of each arm (its seeded runs are ``<variant>-s<k>``,
    :func:`dptlib.experiments.ablations.seed_arm`); ``untrained_base``: ``base`` trains nothing, so its one run
    pairs with every seed of ``own``. ``paper``: text whose leading number is the paper's effect."""

    claim: str
    paper: str
    base: str
    own: str
    task: str
    expected_sign: int = +1
    untrained_base: bool = False


@dataclass(frozen=True)
class SeededTable:
    """One ablation's seeded claims: ``figures/<name>.csv``, written by ``notebook`` from its
    one-run ``batches`` (seed 0, and the untrained base) and its ``seeds_batches``."""

    name: str
    notebook: str
    batches: tuple[str, ...]
    seeds_batches: tuple[str, ...]
    claims: tuple[SeededClaim, ...]


# the paper's Tab. 8 (BLIP-ITM on COCO-NSS1K; the base model 73.3): DPT with n adapter layers, and 4 against 1
# (06 tests every depth once; the seeded table below, 1 and 4)
TAB8_PAPER = {1: "+5.3 BLIP-ITM on COCO-NSS1K (73.3 vs 78.6)", 2: "+4.4 BLIP-ITM on COCO-NSS1K (73.3 vs 77.7)",
              3: "+3.8 BLIP-ITM on COCO-NSS1K (73.3 vs 77.1)", 4: "+6.1 BLIP-ITM on COCO-NSS1K (73.3 vs 79.4)",
              5: "+5.4 BLIP-ITM on COCO-NSS1K (73.3 vs 78.8)"}
TAB8_4_VS_1 = ("Tab. 8: 4 layers generate better than 1, toy-nss (ID)", "+0.8 BLIP-ITM on COCO-NSS1K (78.6 vs 79.4)")


def tab8_base_claim(layers: int) -> str:
    """The claim's text for DPT with ``layers`` adapter layers against the base model."""
    return f"Tab. 8: DPT with {layers} adapter layer(s) improves on the base model, toy-nss (ID)"


TAB8 = SeededTable(
    "tab8_layers_seed_claims", "06_ablation_adapter_layers", ("adapter_layers", "adapter_layers_deep"),
    ("adapter_layers_seeds", "adapter_layers_more_seeds"), (
        SeededClaim(*TAB8_4_VS_1, "adapter_layers=1", "adapter_layers=4", "toy-nss (ID)"),
        *(SeededClaim(tab8_base_claim(n), TAB8_PAPER[n], "base", f"adapter_layers={n}", "toy-nss (ID)", untrained_base=True)
          for n in (1, 4)),
    ))

TAB10 = SeededTable(
    "tab10_timesteps_seed_claims", "07_ablation_timesteps", ("timesteps",), ("timesteps_seeds", "timesteps_more_seeds"), (
        SeededClaim("Tab. 10 (trained and tested at t): t = 250 discriminates better than t = 0 (ITM overall)",
                    "+0.5 (39.7 vs 39.2)", "t=0", "t=250", "ITM overall"),
        SeededClaim("Tab. 10 (trained and tested at t): t = 250 grounds better than t = 0 (REC P@1)",
                    "+2.5 (54.3 vs 51.8, mean of test sets)", "t=0", "t=250", "REC P@1"),
        SeededClaim("Tab. 10 (trained and tested at t): heavy noise (t = 999) hurts ITM", "-8.2 (31.5 vs 39.7)",
                    "t=250", "t=999", "ITM overall", expected_sign=-1),
        SeededClaim("Tab. 10 (trained and tested at t): heavy noise (t = 999) hurts REC", "-41.1 (13.2 vs 54.3)",
                    "t=250", "t=999", "REC P@1", expected_sign=-1),
    ))

FIG3 = SeededTable(
    "fig3_blocks_seed_claims", "04_ablation_blocks", ("blocks",), ("blocks_diagnosis", "blocks_whiten", "blocks_seeds"), (
        SeededClaim("Fig. 3: probing up the U-Net beats the bottom for discrimination (up2 vs down0, ITM overall)",
                    "(Fig. 3, ITM rises from bottom to up)", "down0", "up2", "ITM overall"),
        SeededClaim("Fig. 3: probing up the U-Net beats the bottom for grounding (up2 vs down0, REC P@1)",
                    "(Fig. 3, REC rises from bottom to up)", "down0", "up2", "REC P@1"),
    ))

TABLES = {table.name: table for table in (FIG3, TAB8, TAB10)}


def claims_frame(table: SeededTable) -> pd.DataFrame:
    """The table's claims as a frame (one row per claim: what is compared, where, which way)."""
    return pd.DataFrame([vars(c) for c in table.claims]).set_index("claim")


def load(table: SeededTable, scale: str | None = None,
         seeds_batches: tuple[str, ...] | list[str] | None = None) -> tuple[ablations.Results, ablations.Results]:
    """The finished runs of ``table``'s one-run batches and of its seeds batches (``runs/`` or the
    committed ``results/``; nothing is run): ``(one_run, seeded)``."""
    scale = resolve_scale(scale)
    return (ablations.read_finished(table.batches, scale),
            ablations.read_finished(table.seeds_batches if seeds_batches is None else seeds_batches, scale))


def measure(table: SeededTable, one_run: ablations.Results, seeded: ablations.Results) -> pd.DataFrame:
    """``table``'s claims judged over training seeds and test items
    (:func:`dptlib.experiments.ablations.seeded_claims`; columns :data:`dptlib.experiments.ablations.SEEDED_CLAIM_COLUMNS`).
    With no seeded run yet, an empty table, not the one-run rows again."""
    if not len(seeded.metrics):  # no seeded run finished
        return ablations.seeded_claims(pd.DataFrame(), [])
    outcomes = pd.concat([ablations.seeded_outcomes(one_run), ablations.seeded_outcomes(seeded)], ignore_index=True)
    names = list(seeded.metrics.index)
    asked = [dict(claim=c.claim, paper=c.paper, task=c.task, expected_sign=c.expected_sign,
                  base=c.base if c.untrained_base else ablations.seed_arm(c.base, names), own=ablations.seed_arm(c.own, names))
             for c in table.claims]
    return ablations.seeded_claims(outcomes, asked)
