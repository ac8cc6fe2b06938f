"""dptlib.experiments.seed_claims: the core claims over training seeds, from synthetic runs whose effects are known."""

import numpy as np
import pandas as pd
import pytest

from dptlib.experiments import seed_claims
from dptlib.experiments.seed_claims import Claim, Runs

CELL = "toy-cc (ID)"


def generation_runs(effects: dict[int, float], prompts: int = 40, seeds=(0, 1), base_rate: float = 0.4, seed: int = 0) -> Runs:
    """The base model (one run) and a "dpt" arm per training seed whose images are right with
    probability base_rate + effects[k], plus its self-corrected and random-direction images."""
    rng = np.random.default_rng(seed)
    items = [(f"p{p}", s) for p in range(prompts) for s in seeds]
    difficulty = {p: rng.normal(0, 0.1) for p in range(prompts)}

    def draw(rate):
        return [float(rng.random() < np.clip(rate + difficulty[int(p[1:])], 0, 1)) for p, _ in items]

    rows = [pd.DataFrame({"arm": "base", "run": np.nan, "method": "base", "cell": CELL, "prompt": [p for p, _ in items],
                          "seed": [s for _, s in items], "correct": draw(base_rate)})]
    for k, effect in effects.items():
        for method, extra in (("dpt", 0.0), ("dpt + SC", 0.1), ("dpt + null", 0.0)):
            rows.append(pd.DataFrame({"arm": "dpt", "run": float(k), "method": method, "cell": CELL, "prompt": [p for p, _ in items],
                                      "seed": [s for _, s in items], "correct": draw(base_rate + effect + extra)}))
    return Runs(pd.concat(rows, ignore_index=True), pd.DataFrame(), [])


def test_a_claim_is_paired_by_seed_and_item_and_judged_over_seeds():
    runs = generation_runs({k: 0.3 for k in range(5)})
    claims = [Claim("Tab. 1", "DPT improves", "+5.3", 5.3, "base", "dpt", CELL),
              Claim("Tab. 4", "SC beats the null", "(not reported)", float("nan"), "dpt + null", "dpt + SC", CELL)]
    table = seed_claims.claims_table(runs, claims).set_index("claim")
    row = table.loc["DPT improves"]
    assert row["verdict"] == "holds" and row["seeds agreeing"] == "5 of 5" and row["n"] == 5 * 80
    assert len(row["per seed"].split(", ")) == 5 and 20 < row["difference"] < 40
    assert row["size vs paper"] == "differs > 3x"  # +30 points against the paper's +5.3
    assert table.loc["SC beats the null", "size vs paper"] == ""


def test_seeds_that_disagree_make_a_claim_inconclusive_and_one_run_says_so():
    runs = generation_runs({0: 0.3, 1: 0.3, 2: -0.3, 3: 0.3, 4: -0.3})
    claim = [Claim("Tab. 1", "DPT improves", "+5.3", 5.3, "base", "dpt", CELL)]
    assert seed_claims.claims_table(runs, claim)["verdict"].item() == "inconclusive"
    one = generation_runs({0: 0.3})
    assert seed_claims.claims_table(one, claim)["verdict"].item() == "one run"


def test_a_control_reads_no_effect_or_effect():
    runs = generation_runs({k: 0.0 for k in range(5)}, prompts=60)
    null = Claim("controls", "a random step changes nothing", "(none)", float("nan"), "dpt", "dpt + null", CELL, control=True)
    sc = Claim("controls", "SC changes nothing", "(none)", float("nan"), "dpt", "dpt + SC", CELL, control=True)
    table = seed_claims.claims_table(runs, [null, sc]).set_index("claim")
    assert table.loc["a random step changes nothing", "verdict"] == "no effect"
    assert table.loc["SC changes nothing", "verdict"] in ("effect", "inconclusive")  # +10 points on 600 pairs


def to_float(text: str) -> float:
    return 0.0 if text.startswith("<") else float(text)


def test_holm_is_one_family_over_the_paper_claims_with_the_per_table_p_beside_it():
    runs = generation_runs({k: 0.05 for k in range(5)})
    one = Claim("A", "alone", "+1", 1.0, "base", "dpt", CELL)
    family = [Claim("B", f"copy {i}", "+1", 1.0, "base", "dpt", CELL) for i in range(4)]
    control = Claim("controls", "a control", "(none)", float("nan"), "base", "dpt", CELL, control=True)
    table = seed_claims.claims_table(runs, [one, *family, control]).set_index("claim")
    raw = to_float(table.loc["alone", "p (Holm, per table)"])  # alone in its table: its raw p
    for claim in ["alone", "copy 0"]:  # five paper claims with one p: Holm multiplies it by 5 for every one
        assert to_float(table.loc[claim, "p (Holm)"]) == pytest.approx(min(1.0, 5 * raw), abs=6e-3)
    assert to_float(table.loc["copy 0", "p (Holm, per table)"]) == pytest.approx(min(1.0, 4 * raw), abs=5e-3)
    assert to_float(table.loc["a control", "p (Holm)"]) == pytest.approx(raw, abs=1e-3)  # a control is not adjusted
    assert table.loc["alone", "note"].startswith("against the one untrained base run")


def test_a_control_reads_effect_only_when_the_bootstrap_agrees(monkeypatch):
    runs = generation_runs({k: 0.1 for k in range(5)}, prompts=60)
    control = Claim("controls", "tuning changes nothing", "(none)", float("nan"), "base", "dpt", CELL, control=True)
    row = seed_claims.claims_table(runs, [control]).iloc[0]
    assert row["verdict"] == "effect" and row["bootstrap interval"].startswith("[+")
    real = seed_claims.measure

    def wide_bootstrap(claim, runs, interval="t"):  # the same data, a bootstrap interval that reaches 0
        found = real(claim, runs, interval)
        return {**found, "low": -1.0} if interval == "bootstrap" else found

    monkeypatch.setattr(seed_claims, "measure", wide_bootstrap)
    assert seed_claims.claims_table(runs, [control])["verdict"].item() == "inconclusive"


def test_queries_cluster_by_their_test_image():
    """Two queries per image that share the image's difficulty: clustering by image widens the interval."""
    rng = np.random.default_rng(0)
    images = np.repeat(np.arange(100), 2)
    hard = rng.random(100)[images] < 0.5
    rows = []
    for run in range(5):
        base = (~hard) & (rng.random(200) < 0.9)
        own = np.where(hard, rng.random(200) < 0.25, base | (rng.random(200) < 0.2))
        rows += [pd.DataFrame({"arm": arm, "run": float(run), "task": "ITM overall", "item": np.arange(200), "correct": hits.astype(float)})
                 for arm, hits in (("base", base), ("dpt", own))]
    discrimination = pd.concat(rows, ignore_index=True)
    claim = [Claim("Tab. 3", "DPT matches", "+6.3", 6.3, "base", "dpt", "ITM overall", "ITM overall")]
    alone = seed_claims.claims_table(Runs(pd.DataFrame(), discrimination, []), claim).iloc[0]
    mapping = pd.DataFrame({"task": "ITM overall", "item": np.arange(200), "image": images})
    clustered = seed_claims.claims_table(Runs(pd.DataFrame(), seed_claims.attach_images(discrimination, mapping), []), claim).iloc[0]
    assert clustered["difference"] == pytest.approx(alone["difference"])
    assert clustered["high"] - clustered["low"] > alone["high"] - alone["low"]
    with pytest.raises(ValueError, match="no test image"):
        seed_claims.attach_images(discrimination, mapping.iloc[:10])


def test_query_images_follow_the_order_of_the_outcomes():
    from dptlib.evaluation.metrics import ITMTest, query_images

    class Data:
        expression_image = __import__("torch").tensor([3, 3, 5, 7])

    itm = ITMTest(image_to_text=[(0, [10, 11]), (2, [12, 13])], text_to_image=[(10, [0, 4]), (12, [2, 6])])
    found = query_images(Data(), itm, [1, 3])
    assert found["ITM overall"].tolist() == [0, 2, 0, 2] and found["REC P@1"].tolist() == [3, 7]


def test_check_reports_moved_verdicts_and_estimates():
    runs = generation_runs({k: 0.3 for k in range(5)})
    claims = [Claim("Tab. 1", "DPT improves", "+5.3", 5.3, "base", "dpt", CELL)]
    committed = seed_claims.claims_table(runs, claims)
    assert seed_claims.moved_rows(committed, committed).empty
    moved = committed.assign(verdict="inconclusive", low=committed["high"] + 1, high=committed["high"] + 2)
    why = seed_claims.moved_rows(moved, committed)["why"].item()
    assert "verdict inconclusive -> holds" in why and "outside" in why
    assert seed_claims.moved_rows(committed, committed.iloc[:0])["why"].item() == "only in the committed table"


def test_every_core_claim_names_arms_and_cells_the_seeds_batch_makes():
    arms = {"base", "dpt", "lora", "shuffled"}
    for claim in seed_claims.core_claims():
        for side in (claim.baseline, claim.method):
            assert side.split(" + ")[0] in arms and (" + " not in side or side.split(" + ")[1] in ("SC", "null"))
        assert claim.expected_sign in (+1, -1)


def test_single_run_claims_read_one_run_and_a_selected_setting_says_so():
    from dptlib.experiments import report

    claims = pd.DataFrame({
        "claim": ["Tab. 3: DPT beats X", "Tab. 3: DPT beats Y", "Tab. 10: noise hurts", "Fig. 4b: SC helps at eta 0.03", "control: nothing"],
        "paper": ["+6.3 (38.5 vs 32.2)", "+25.0 (48.8 vs 23.8)", "-8.2 (31.5 vs 39.7)", "helps for eta in (0.05, 1)", "(no effect expected)"],
        "toy (difference, 95 % interval)": ["+4.1 [+0.8, +7.4] (p = 0.02)", "+8.0 [+4.4, +11.5] (p < 0.001)", "-55.3 [-58.6, -51.9] (p < 0.001)",
                                            "+22.7 [+12.5, +32.8] (p < 0.001)", "-7.7 [-12.3, -2.8] (p < 0.001)"],
        "n": [1000, 1000, 1000, 128, 600], "verdict": ["holds", "holds", "holds", "holds", "effect"], "notebook": "03"})
    table = report.one_run_verdicts(claims)
    assert list(table["verdict"]) == ["one run", "one run", "one run", "selected on these images", "one run"]
    assert list(table["on test items"]) == ["holds", "holds", "holds", "holds", "effect"]
    assert list(table["family size"]) == [2, 2, 1, 1, 1]
    assert list(table["size vs paper"]) == ["within 3x", "differs > 3x", "differs > 3x", "", ""]


def test_the_seeds_batch_at_the_smoke_scale_gives_every_core_claim_over_three_seeds(tmp_path, monkeypatch):
    """The real worker notebook: the base model and three dpt seeds, then the claims table built
    from their exported outcomes. Each seed trains another adapter (the training seed reaches
    training) while the test items stay paired; every dpt claim is measured over 3 runs."""
    pytest.importorskip("papermill")
    from dptlib.experiments import ablations

    monkeypatch.setenv("DPT_RUNS_DIR", str(tmp_path / "runs"))
    batch = ablations.load_batch(ablations.repo_root() / "papermill_params" / "ablations" / "seeds.yaml")
    chosen = ["base", "dpt-s0", "dpt-s1", "dpt-s2"]
    assert set(ablations.run_batch(batch, "smoke", only=chosen, progress=False).values()) == {"done"}
    stage1 = sorted((ablations.shared_dir("smoke") / "stage1").iterdir())
    assert len(stage1) == 3  # one stage-1 adapter per training seed
    runs = seed_claims.load_runs("smoke")
    assert sorted(set(runs.generation["method"])) == ["base", "dpt", "dpt + SC", "dpt + null"]
    table = seed_claims.claims_table(runs).set_index("claim")
    dpt_claims = [c.claim for c in seed_claims.core_claims() if "lora" not in (c.baseline + c.method) and "shuffled" not in c.method]
    assert set(dpt_claims) <= set(table.index)
    assert all(text.endswith("of 3") for text in table.loc[dpt_claims, "seeds agreeing"])
    for name in ("ITM overall (stage 1) (t = 999)", "REC P@1 (local denoising)"):  # the tasks the claims read were written
        assert name in set(runs.discrimination["task"])
    # the same images and queries in every seed: each seed's generation rows match the base model's items
    items = runs.generation.groupby("method")[["prompt", "seed"]].apply(lambda f: sorted(map(tuple, f.values)))
    assert items["dpt"] == sorted(items["base"] * 3)


def test_the_arm_table_gives_each_arms_mean_and_its_seed_range():
    runs = generation_runs({0: 0.1, 1: 0.2, 2: 0.0})
    queries = pd.DataFrame({"arm": ["dpt"] * 4 + ["base"] * 2, "run": [0.0, 0.0, 1.0, 1.0, np.nan, np.nan], "task": "ITM overall",
                            "item": [0, 1, 0, 1, 0, 1], "correct": [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]})
    table = seed_claims.arm_table(Runs(runs.generation, queries, []))
    assert table.loc["dpt", "ITM overall"] == "75.0 (50.0-100.0)" and table.loc["base", "ITM overall"] == "50.0"
    assert table.loc["dpt + SC", "runs"] == 3 and table.loc["base", "runs"] == 1
    per_run = runs.generation[runs.generation["method"] == "dpt"].groupby("run")["correct"].mean() * 100
    assert table.loc["dpt", CELL] == f"{per_run.mean():.1f} ({per_run.min():.1f}-{per_run.max():.1f})"


def test_the_record_batch_differs_from_seeds_in_stage1_only_and_shares_the_untrained_base():
    """seeds_q40 (the 40-query, constant-rate runs seeds replaced) changes stage 1 only: its trained
    arms are other runs (different hashes) with the same parameters but the stage-1 settings each side
    names; the base model trains nothing, so both batches hold the same base run."""
    from dptlib.experiments import ablations

    folder = ablations.repo_root() / "papermill_params" / "ablations"
    old, new = (ablations.load_batch(folder / f"{name}.yaml").for_scale("toy") for name in ("seeds_q40", "seeds"))
    assert list(old.variants) == list(new.variants)

    def digest(batch, name):
        return ablations.run_hash(batch.notebook, {**batch.variants[name], "scale": "toy"}, "toy")

    def without_stage1(values):
        return {k: v for k, v in values.items() if k not in ("probe_queries", "probe_schedule", "probe_warmup")}

    assert without_stage1(old.variants["base"]) == without_stage1(new.variants["base"])
    exported = ablations.repo_root() / "results" / "toy"
    for table in ("metrics.json", "generation_scores.csv.gz", "discrimination_outcomes.csv.gz"):
        assert (exported / "seeds" / "base" / table).read_bytes() == (exported / "seeds_q40" / "base" / table).read_bytes()
    for name in (v for v in old.variants if v != "base"):
        assert digest(old, name) != digest(new, name)
        assert without_stage1(new.variants[name]) == without_stage1(old.variants[name])
        assert (old.variants[name]["probe_queries"], old.variants[name]["probe_schedule"], old.variants[name]["probe_warmup"]) == (40, "constant", 0)
    runs = seed_claims.load_runs("toy", "seeds_q40")
    assert set(runs.generation["arm"]) >= {"base", "dpt", "lora", "shuffled"} and not runs.missing
    with pytest.raises(ValueError, match="seeds_q40"):
        seed_claims.load_runs("toy", "blocks")
    for on_request in ("blocks_norm", "timesteps_seeds"):  # run on request, but not a seeds batch of the core claims
        with pytest.raises(ValueError, match="unknown seeds batch"):
            seed_claims.load_runs("toy", on_request)


def test_every_batch_that_trains_names_the_toy_presets_stage1_settings():
    """A finished variant is recognised by its batch-file parameters, not by the preset values they
    fall back to: a batch that left the stage-1 settings to the preset would look finished after the
    preset changed. So each trained variant names them, equal to the toy preset (seeds_q40: its own)."""
    from dptlib.experiments import ablations
    from dptlib.method.train import ProbeConfig

    preset = ProbeConfig.preset("toy")
    expected = {"probe_queries": preset.adapter.num_queries, "probe_schedule": preset.lr_schedule, "probe_warmup": preset.warmup_steps}
    folder = ablations.repo_root() / "papermill_params" / "ablations"
    for path in sorted(folder.glob("*.yaml")):
        batch = ablations.load_batch(path).for_scale("toy")
        for name, values in batch.variants.items():
            if values.get("probe_steps") == 0:
                continue  # the base model: no stage 1
            named = {k: values.get(k) for k in expected}
            if path.stem == "seeds_q40":
                assert named == {"probe_queries": 40, "probe_schedule": "constant", "probe_warmup": 0}, (path.stem, name)
            else:
                assert named == expected, (path.stem, name)


def test_the_confirmatory_batch_is_the_seeds_recipe_on_fresh_training_seeds():
    """seeds_confirm (docs/analysis-plan.md) runs dpt and lora as seeds does, on training seeds 5-9
    that the exploratory runs never used; its base is the seeds batch's base run (same parameters)."""
    from dptlib.experiments import ablations

    folder = ablations.repo_root() / "papermill_params" / "ablations"
    seeds, confirm = (ablations.load_batch(folder / f"{name}.yaml").for_scale("toy") for name in ("seeds", "seeds_confirm"))
    assert confirm.variants["base"] == seeds.variants["base"]
    assert list(confirm.variants) == ["base"] + [f"{arm}-s{k}" for k in range(5, 10) for arm in ("dpt", "lora")]
    for k in range(5, 10):
        for arm in ("dpt", "lora"):
            assert confirm.variants[f"{arm}-s{k}"] == {**seeds.variants[f"{arm}-s0"], "training_seed": k}
    assert "seeds_confirm" in ablations.SEEDS_BATCHES and "seeds_confirm" in ablations.ON_REQUEST


def test_exploratory_and_confirmatory_verdicts_stand_side_by_side():
    first = generation_runs({k: 0.3 for k in range(5)})
    second = generation_runs({k: -0.3 for k in range(5, 10)}, seed=1)
    claim = [Claim("Tab. 1", "DPT improves", "+5.3", 5.3, "base", "dpt", CELL)]
    together = seed_claims.combine_runs(first, second)
    assert set(together.generation.loc[together.generation["arm"] == "dpt", "run"]) == set(map(float, range(10)))
    assert (together.generation["arm"] == "base").sum() == (first.generation["arm"] == "base").sum()  # base once, from the first
    row = seed_claims.side_by_side(seed_claims.claims_table(first, claim), seed_claims.claims_table(second, claim),
                                   seed_claims.claims_table(together, claim)).iloc[0]
    assert (row["verdict (0-4)"], row["verdict (5-9)"], row["same verdict"]) == ("holds", "contradicted", "no")
    one = seed_claims.claims_table(generation_runs({5: 0.3}), claim)
    assert seed_claims.side_by_side(seed_claims.claims_table(first, claim), one, one).iloc[0]["same verdict"] == ""


def test_each_run_names_the_plan_it_was_made_under():
    plans = seed_claims.plan_of_runs("toy").set_index(["batch", "variant"])["analysis plan"]
    assert plans[("seeds", "dpt-s0")].startswith("none")
    assert plans[("seeds_confirm", "dpt-s5")].startswith("plan 1 (") and "not the plan" not in plans[("seeds_confirm", "dpt-s5")]


def test_the_readme_leads_with_the_confirmatory_verdicts_once_all_five_seeds_have_run():
    both = pd.DataFrame({"family": ["Tab. 1", "Tab. 3", "controls"], "claim": ["a", "b", "c"],
                         "seeds 0-4 (exploratory)": ["+1.0 [+0.5, +1.5]", "+2.0 [+1.0, +3.0]", "-1.0 [-2.0, +0.1]"],
                         "verdict (0-4)": ["holds", "holds", "no effect"],
                         "seeds 5-9 (confirmatory)": ["+0.2 [-0.5, +0.9]", "+2.1 [+1.1, +3.1]", ""],
                         "verdict (5-9)": ["inconclusive", "holds", ""], "same verdict": ["no", "yes", ""]})
    interim, sentence = seed_claims.readme_summary(both, 3)
    assert list(interim.columns)[2:] == ["seeds 0-4 (exploratory)", "verdict (0-4)", "verdict (5-9)"]
    assert "3 of 5" in sentence and "interim" in sentence
    final, sentence = seed_claims.readme_summary(both, 5)
    assert list(final.columns)[2:] == ["seeds 5-9 (confirmatory)", "verdict (5-9)", "verdict (0-4)"]
    assert final["verdict (5-9)"].tolist() == ["inconclusive", "holds", "not run"]
    assert sentence == "The confirmatory verdict differs from the exploratory one on 1 claim(s): Tab. 1: a (holds → inconclusive)."
    agreeing = both.assign(**{"verdict (5-9)": ["holds", "holds", ""], "same verdict": ["yes", "yes", ""]})
    assert seed_claims.readme_summary(agreeing, 5)[1].endswith("agree on all 2 claims that both batches test.")


def test_the_confirmatory_finding_counts_verdicts_only_once_every_seed_has_run():
    both = pd.DataFrame({"family": ["Tab. 1", "Tab. 3"], "claim": ["a", "b"], "seeds 0-4 (exploratory)": ["+1.0", "+2.0"],
                         "verdict (0-4)": ["holds", "holds"], "seeds 5-9 (confirmatory)": ["+0.2", "+2.1"],
                         "verdict (5-9)": ["inconclusive", "holds"], "same verdict": ["no", "yes"]})
    confirmatory = pd.DataFrame({"verdict": ["inconclusive", "holds"]})
    assert seed_claims.confirmatory_finding(both, confirmatory, 2) == "too few for a verdict yet (three needed)."
    assert seed_claims.confirmatory_finding(both, confirmatory, 3).endswith("agree with the exploratory ones on 1 of 2 claims.")
    final = seed_claims.confirmatory_finding(both, confirmatory, 5)
    assert final.startswith("Their 2 claims read 1 *inconclusive*, 1 *holds*. ") and "on 1 claim(s): Tab. 1: a" in final
