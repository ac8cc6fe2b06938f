"""dptlib.experiments.sampler_check: the settings, the comparison table on designed scores, and a smoke run end to end."""

import numpy as np
import pandas as pd
import pytest

from dptlib.experiments import sampler_check


def designed(setting, correct, cells=("toy-cc (ID)",), seeds=(0, 1)):
    """Scores as run_setting returns them: ``correct`` (0/1 per prompt) repeated for each seed."""
    rows = [{"benchmark": cell, "method": setting, "prompt": f"p{i}", "seed": seed, "correct": float(c)}
            for cell in cells for seed in seeds for i, c in enumerate(correct)]
    scores = pd.DataFrame(rows)
    scores.attrs["seconds per image"] = 0.1 * sampler_check.SETTINGS[setting][1] / 15
    return scores


def test_each_setting_keeps_the_models_noise_schedule():
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    from dptlib.method.backbone import load_pipeline

    pipe = load_pipeline("toy")
    betas = pipe.scheduler.betas.clone()
    for setting, (name, steps) in sampler_check.SETTINGS.items():
        assert sampler_check.set_sampler(pipe, setting) == steps
        assert type(pipe.scheduler).__name__ == name
        assert isinstance(pipe.scheduler, (DDIMScheduler, DPMSolverMultistepScheduler))
        assert pipe.scheduler.betas.equal(betas), setting
    assert sampler_check.SETTINGS[sampler_check.REFERENCE] == ("DDIMScheduler", 15)


def test_table_pairs_each_setting_with_the_reference(tmp_path, monkeypatch):
    monkeypatch.setattr(sampler_check, "results_dir", lambda scale: tmp_path)
    key = {"prompts": {"toy-cc (ID)": 40}, "seeds": [0, 1]}
    reference = np.array([1] * 20 + [0] * 20)   # 50 % right
    worse = reference.copy()
    worse[:10] = 0                               # 10 of the 20 right ones lost: 25 %, -25 points
    same = reference.copy()
    same[:1], same[20:21] = 0, 1                 # one lost, one gained: 50 %, 0 points
    sampler_check.save_setting(designed("ddim-15", reference), "ddim-15", key, "toy")
    sampler_check.save_setting(designed("dpm-6", worse), "dpm-6", key, "toy")
    sampler_check.save_setting(designed("ddim-10", same), "ddim-10", key, "toy")
    sampler_check.save_setting(designed("dpm-8", same), "dpm-8", {**key, "seeds": [0]}, "toy")  # other seeds: left out
    table = sampler_check.table(["dpm-6", "ddim-10", "dpm-8"], "toy").set_index("setting")
    assert list(table.index) == ["ddim-15", "dpm-6", "ddim-10"]
    assert table.loc["ddim-15", "exactly right (%)"] == pytest.approx(50.0) and np.isnan(table.loc["ddim-15", "vs ddim-15"])
    assert table.loc["dpm-6", "vs ddim-15"] == pytest.approx(-25.0) and table.loc["dpm-6", "diff high"] < 0
    assert table.loc["ddim-10", "vs ddim-15"] == pytest.approx(0.0)
    assert table.loc["dpm-6", "n"] == 80 and table.loc["dpm-6", "steps"] == 6
    low, high = table.loc["ddim-15", ["low", "high"]]
    assert not low <= 25.0 <= high and not table.loc["dpm-6", "inside"]   # 25 % lies outside 50 %'s interval
    assert table.loc["ddim-10", "inside"] and table.loc["ddim-15", "inside"]
    assert table.loc["dpm-6", "ms per image"] == pytest.approx(40.0) and table.loc["ddim-15", "p"] == ""
    assert float(table.loc["dpm-6", "p"]) < 0.05


def test_saved_scores_are_the_same_bytes_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(sampler_check, "results_dir", lambda scale: tmp_path)
    key = {"prompts": {"toy-cc (ID)": 4}, "seeds": [0, 1]}
    path = sampler_check.save_setting(designed("ddim-15", [1, 0, 1, 1]), "ddim-15", key, "toy")
    first = path.read_bytes()
    sampler_check.save_setting(designed("ddim-15", [1, 0, 1, 1]), "ddim-15", key, "toy")
    assert path.read_bytes() == first
    scores, record = sampler_check.load_setting("ddim-15", "toy")
    assert scores["correct"].tolist() == [1.0, 0.0, 1.0, 1.0] * 2 and record["steps"] == 15 and record["seeds"] == [0, 1]


def test_validation_prompts_are_never_test_prompts():
    from dptlib.config import HEADLINE_CELLS, PRESETS
    from dptlib.toy.prompts import generation_prompts
    from dptlib.toy.world import ToyWorld, ToyWorldConfig

    sizes = PRESETS["02_tuning"]["toy"]["prompts"]
    test, choose = generation_prompts(ToyWorld(ToyWorldConfig(seed=0)).config, sizes, 32, seed=0)
    prompts = sampler_check.validation_prompts(34, "toy")
    longer = sampler_check.validation_prompts(500, "toy")
    for cell in HEADLINE_CELLS:
        drawn = [p.prompt for p in prompts[cell]]
        assert len(drawn) == 34 and not set(drawn) & {p.prompt for p in test[cell]}
        assert [p.prompt for p in longer[cell]][:34] == drawn and len({p.prompt for p in longer[cell]}) == len(longer[cell])
        assert drawn[:32] == [p.prompt for p in choose[cell]]  # the prompts 02 and 03 choose on come first


def test_bad_input_is_one_line(capsys):
    for argv, message in ((["--settings", "ddim-3"], "unknown setting(s) ['ddim-3']"), (["--scale", "big"], "unknown scale(s) ['big']"),
                          (["--prompts", "0"], "--prompts must be at least 1, got 0")):
        with pytest.raises(SystemExit) as exit:
            sampler_check.main(argv)
        assert exit.value.code == 2 and message in capsys.readouterr().err


def test_a_smoke_run_grades_and_resumes(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DPT_RUNS_DIR", str(tmp_path))
    assert sampler_check.main(["--scale", "smoke", "--settings", "dpm-6", "--prompts", "2", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "ddim-15: 4 images" in out and "dpm-6: 4 images" in out
    table = pd.read_csv(tmp_path / "smoke" / "figures" / "sampler_steps.csv")
    assert set(table["setting"]) == {"ddim-15", "dpm-6"} and set(table["n"]) == {2}
    assert sampler_check.main(["--scale", "smoke", "--settings", "dpm-6", "--prompts", "2", "--seeds", "0"]) == 0
    assert "dpm-6: done, skipped" in capsys.readouterr().out
