"""dptlib.experiments.ablation_claims: the ablations' claims over training seeds, defined once and re-derived
by ``make check-claims`` from the committed runs."""

import ast

import pandas as pd
import papermill
import pytest

from dptlib.config import figures_dir, repo_root
from dptlib.experiments import ablation_claims, ablations, seed_claims

TABLES = list(ablation_claims.TABLES.values())


def batch_variants(names) -> set[str]:
    return {v for name in names for v in ablations.load_batch(repo_root() / "papermill_params" / "ablations" / f"{name}.yaml").variants}


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_every_claim_names_variants_its_batch_files_define(table):
    """Seed 0 of each arm is in the one-run batches; seeds 1-4 in the seeds batches, except for an
    untrained base (one run serves every seed)."""
    one_run, seeded = batch_variants(table.batches), batch_variants(table.seeds_batches)
    for claim in table.claims:
        assert {claim.base, claim.own} <= one_run, claim.claim
        arms = [claim.own] + ([] if claim.untrained_base else [claim.base])
        for arm in arms:
            assert set(ablations.seed_arm(arm, seeded)) == {0, 1, 2, 3, 4}, (claim.claim, arm)
    assert ablation_claims.claims_frame(table).index.tolist() == [c.claim for c in table.claims]


def toy_variants(names) -> dict[str, dict]:
    folder = repo_root() / "papermill_params" / "ablations"
    return {v: values for name in names for v, values in ablations.load_batch(folder / f"{name}.yaml").for_scale("toy").variants.items()}


GENERATION_ONLY = {"generate", "prompts"}  # what a discrimination claim's runs may differ in


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_a_claims_seeded_runs_repeat_its_seed0_run_but_for_the_training_seed(table):
    """A seeded run is the same experiment as its arm's seed-0 run: the same parameters plus its
    training seed (a discrimination claim's runs may skip generation)."""
    seed0, seeded = toy_variants(table.batches), toy_variants(table.seeds_batches)
    for claim in table.claims:
        discrimination = claim.task in ("ITM overall", "REC P@1")
        for arm in [claim.own] + ([] if claim.untrained_base else [claim.base]):
            for k, run in ablations.seed_arm(arm, seeded).items():
                if k == 0:
                    continue
                mine = {key: v for key, v in seeded[run].items() if key != "training_seed"}
                theirs = dict(seed0[arm])
                if discrimination:
                    mine, theirs = ({key: v for key, v in d.items() if key not in GENERATION_ONLY} for d in (mine, theirs))
                assert seeded[run]["training_seed"] == k and mine == theirs, (claim.claim, run)


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_the_notebooks_defaults_read_the_tables_batches(table):
    """The notebook that writes a table reads, by default, the seeds batches it is checked against."""
    found = papermill.inspect_notebook(str(repo_root() / "notebooks" / f"{table.notebook}.ipynb"))
    assert ast.literal_eval(found["seeds_batches"]["default"]) == list(table.seeds_batches)
    assert ast.literal_eval(found["batch"]["default"]) == table.batches[0]


def discrimination(rights: dict[str, int], task: str, queries: int = 40) -> pd.DataFrame:
    """Variant v answers its first rights[v] of ``queries`` queries right."""
    return pd.DataFrame([{"variant": v, "task": task, "item": i, "correct": i < right}
                         for v, right in rights.items() for i in range(queries)])


def test_measure_pairs_each_claim_by_training_seed_in_its_direction():
    """Tab. 10 on designed queries: t = 250 right on 30 of 40 ITM queries at every seed, t = 0 on
    20-22, t = 999 on 4: "t = 250 beats t = 0" and "t = 999 hurts" hold; REC, equal at every
    seed, is inconclusive. Seed 0 comes from the one-run batch, seeds 1-2 from the seeds batch."""
    itm0 = {"t=0": 20, "t=250": 30, "t=999": 4}
    itm = {f"{v}-s{k}": right + (k if v == "t=0" else 0) for k in (1, 2) for v, right in itm0.items()}
    rec = dict.fromkeys([*itm0, *itm], 25)
    one_run = ablations.Results(pd.DataFrame(index=list(itm0)), pd.DataFrame(),
                                pd.concat([discrimination(itm0, "ITM overall"), discrimination({v: rec[v] for v in itm0}, "REC P@1")]), [])
    seeded = ablations.Results(pd.DataFrame(index=list(itm)), pd.DataFrame(),
                               pd.concat([discrimination(itm, "ITM overall"), discrimination({v: rec[v] for v in itm}, "REC P@1")]), [])
    table = ablation_claims.measure(ablation_claims.TAB10, one_run, seeded).set_index("claim")
    assert list(table.columns) == ablations.SEEDED_CLAIM_COLUMNS[1:]
    better, grounds, hurts_itm, hurts_rec = (c.claim for c in ablation_claims.TAB10.claims)
    assert table.loc[better, "per seed"] == "+25.0, +22.5, +20.0" and table.loc[better, "verdict"] == "holds"
    assert table.loc[hurts_itm, "per seed"] == "-65.0, -65.0, -65.0" and table.loc[hurts_itm, "verdict"] == "holds"
    assert table.loc[grounds, "verdict"] == table.loc[hurts_rec, "verdict"] == "inconclusive"
    assert table.loc[better, "difference"] == pytest.approx(22.5) and table.loc[better, "low"] > 0
    empty = ablations.Results(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), [])
    assert ablation_claims.measure(ablation_claims.TAB10, one_run, empty).empty  # no seeded run: no table


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_the_committed_tables_reproduce_from_the_committed_runs(table, capsys):
    """What `make check-claims` does for the ablations: every committed verdict and estimate comes
    out again from the committed results/ (pandas and numpy only: the same on every machine). A
    table whose seeds batch has not run is committed empty, and stays so."""
    path = figures_dir("toy") / f"{table.name}.csv"
    found = ablation_claims.measure(table, *ablation_claims.load(table, "toy"))
    assert len(found) == len(pd.read_csv(path))
    assert seed_claims._matches_committed(found.assign(family=table.name), path, table.name), capsys.readouterr().out


def test_check_prints_an_ablation_claim_that_moved(tmp_path, capsys):
    table = ablation_claims.TAB10
    found = ablation_claims.measure(table, *ablation_claims.load(table, "toy")).assign(family=table.name)
    committed = found.drop(columns="family").copy()
    committed.loc[0, "verdict"] = "holds"
    committed.loc[1, ["low", "high"]] = [50.0, 60.0]
    committed.to_csv(tmp_path / f"{table.name}.csv", index=False)
    assert not seed_claims._matches_committed(found, tmp_path / f"{table.name}.csv", table.name)
    out = capsys.readouterr().out
    assert "2 of 4 claims moved" in out and "verdict holds -> inconclusive" in out and "outside [+50.0, +60.0]" in out
    found.drop(columns=["difference", "low", "high"]).to_csv(tmp_path / "old.csv", index=False)
    assert not seed_claims._matches_committed(found, tmp_path / "old.csv", table.name)
    assert "no numeric difference" in capsys.readouterr().out
