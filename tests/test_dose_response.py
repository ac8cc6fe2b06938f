"""dptlib.experiments.dose_response: where the change goes, the checkpoint choice, the test table
and its verdicts on made-up runs, and one smoke run end to end."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from dptlib.experiments import dose_response


class TwoProjections(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.to_q = torch.nn.Linear(2, 2, bias=False)
        self.to_v = torch.nn.Linear(2, 2, bias=False)


def test_lora_change_is_the_norm_of_scaled_BA_over_the_norm_of_W():
    from peft import LoraConfig, inject_adapter_in_model

    model = inject_adapter_in_model(LoraConfig(r=1, lora_alpha=2, target_modules=["to_q", "to_v"]), TwoProjections())
    with torch.no_grad():
        for layer in (model.to_q, model.to_v):
            layer.base_layer.weight.copy_(torch.eye(2))  # ||W|| = sqrt(2)
            layer.lora_A["default"].weight.copy_(torch.tensor([[1.0, 0.0]]))
        model.to_q.lora_B["default"].weight.copy_(torch.tensor([[1.0], [0.0]]))  # BA = [[1, 0], [0, 0]]
        model.to_v.lora_B["default"].weight.zero_()  # B = 0: the untuned model
    change = dose_response.lora_change(model).set_index("projection")["ratio"]
    # alpha / r = 2, so ||dW|| = 2 ||BA|| = 2 and the ratio is 2 / sqrt(2)
    assert change["to_q"] == pytest.approx(2 / math.sqrt(2))
    assert change["to_v"] == 0.0


def test_changes_are_zero_for_equal_inputs_and_scale_with_the_difference():
    reference = np.array([[3.0, 4.0]])
    assert dose_response.relative_change(reference, reference) == 0.0
    assert dose_response.relative_change(reference, 2 * reference) == pytest.approx(1.0)
    black = np.zeros((2, 2, 2, 3), np.uint8)
    assert dose_response.image_change(black, black) == 0.0
    half = black.copy()
    half[0] = 255  # the first image all white, the second unchanged: RMS 1 and 0, mean 0.5
    assert dose_response.image_change(black, half) == pytest.approx(0.5)


def test_every_scale_sets_every_size_and_has_validation_prompts():
    from dptlib.toy.world import ToyWorld, ToyWorldConfig

    assert dose_response.SIZES["toy"].keys() == dose_response.SIZES["smoke"].keys()
    for scale in dose_response.SIZES:
        found = dose_response.validation_prompts(scale, ToyWorld(ToyWorldConfig(seed=0)))
        assert set(found) == set(dose_response.SIZES[scale]["test_prompts"]) and all(found.values())
    assert list(dose_response.DOSES["toy"]) == [150, 300, 700, 1500, 3000]  # the plan's doses


def test_the_chosen_step_is_a_tuned_dose_and_ties_go_to_fewer_steps():
    curve = pd.DataFrame({"step": [0, 150, 300, 700], "clip_score": [90.0, 61.0, 62.0, 62.0], "correct": [99.0, 40.0, 20.0, 40.0]})
    assert dose_response.chosen_step(curve, "clip_score") == 300  # step 0 is higher, but it is not a candidate
    assert dose_response.chosen_step(curve, "correct") == 150


def made_up_runs(folder, effect: float, seeds=(0, 1, 2)):
    """Finished smoke-scale runs of lr 1e-4 whose chosen checkpoints are right on a share `effect`
    more of the test images than the base model (which is right on half of them)."""
    rng = np.random.default_rng(0)
    items = [(cell, f"{cell} prompt {i}", s) for cell in dose_response.SIZES["smoke"]["test_prompts"] for i in range(40) for s in (0, 1)]
    base = pd.DataFrame(items, columns=["cell", "prompt", "seed"]).assign(correct=lambda f: (np.arange(len(f)) % 2).astype(float))
    folder.mkdir(parents=True)
    base.to_csv(folder / "base_test_scores.csv.gz", index=False)
    for k in seeds:
        own = base.copy()
        flip = (own["correct"] == 0) & (rng.random(len(own)) < 2 * effect)  # wrong base images made right
        own.loc[flip, "correct"] = 1.0
        record = {"run": f"lr1e-4-s{k}", "lr": "1e-4", "training_seed": k, "chosen": {"CLIP": 2, "oracle": 1},
                  "validation": [{"step": s, "clip_score": 60.0 + s, "correct": 50.0} for s in (0, 1, 2)]}
        (folder / record["run"]).mkdir()
        pd.concat([own.assign(step=2), base.assign(step=1)]).to_csv(folder / record["run"] / "test_scores.csv.gz", index=False)
        (folder / record["run"] / "curve.json").write_text(json.dumps(record))


def test_the_test_table_finds_a_real_effect_and_no_effect_where_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(dose_response, "results_dir", lambda scale: tmp_path / "results")
    made_up_runs(tmp_path / "results", effect=0.4)
    table = dose_response.test_table("smoke").set_index(["selected by", "cell"])
    by_clip = table.loc[("CLIP", "toy-cc (ID)")]
    # the CLIP-chosen step 2 is the improved one: about +40 points, every seed positive
    assert by_clip["difference"] > 25 and by_clip["low"] > 0 and by_clip["seeds +/-"] == "3/0"
    assert by_clip["verdict"] == "holds"
    # the oracle-chosen step 1 is the base model's images again: no difference, no verdict for it
    by_oracle = table.loc[("oracle", "toy-cc (ID)")]
    assert by_oracle["difference"] == 0 and by_oracle["verdict"] == "inconclusive"
    assert table["p (Holm)"].ge(table["p"]).all()
    assert dose_response.conclusion(table.reset_index()) == "helps at some budget"
    assert dose_response.conclusion(table.reset_index().assign(verdict="2 runs")).startswith("has no verdict yet")
    assert dose_response.conclusion(table.reset_index().assign(verdict="inconclusive")) == "does not help at any budget tried"
    # the per-rate line: one rate, each cell's two rules with their intervals, the verdicts, no seed below zero
    (line,) = dose_response.by_rate(table.reset_index())
    assert line.startswith("1e-4 (the paper's): toy-cc (ID) +") and line.count("(CLIP)") == line.count("(oracle)") == 2
    assert f"{by_clip['difference']:+.1f} [{by_clip['low']:+.1f}, {by_clip['high']:+.1f}] (CLIP)" in line
    assert "*holds / inconclusive*" in line and line.endswith("0 of 6 per-seed differences below zero")


def test_a_smoke_run_measures_every_dose_and_tests_the_chosen_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dose_response, "results_dir", lambda scale: tmp_path / "results")
    monkeypatch.setenv("DPT_RUNS_DIR", str(tmp_path / "runs"))
    record = dose_response.run("1e-4", 0, "smoke", progress=False)
    curve = pd.DataFrame(record["validation"]).set_index("step")
    assert list(curve.index) == [0, *dose_response.DOSES["smoke"]]
    # step 0 is the untuned model: LoRA's B starts at zero, so nothing has changed yet (a control of the measures)
    changes = [*dose_response.CHANGE_METRICS, *[c for c in curve if c.startswith("|dW|")]]
    assert (curve.loc[0, changes] == 0).all()
    assert (curve.loc[2, [c for c in curve if c.startswith("|dW|")]] > curve.loc[1, [c for c in curve if c.startswith("|dW|")]]).all()
    assert curve.loc[2, "feature change (up1)"] > 0
    assert set(record["chosen"].values()) <= set(dose_response.DOSES["smoke"])
    tests = pd.read_csv(tmp_path / "results" / "lr1e-4-s0" / "test_scores.csv.gz")
    n_items = sum(dose_response.SIZES["smoke"]["test_prompts"].values()) * len(dose_response.SIZES["smoke"]["seeds"])
    assert len(tests) == n_items * len(set(record["chosen"].values()))
    assert dose_response.main(["--scale", "smoke", "--lrs", "1e-4", "--seeds", "0"]) == 0
    assert "lr1e-4-s0: done, skipped" in capsys.readouterr().out


def test_an_unknown_learning_rate_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit:
        dose_response.main(["--lrs", "3e-4"])
    assert exit.value.code == 2
    assert "3e-4" in capsys.readouterr().err
