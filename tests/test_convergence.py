"""dptlib.experiments.convergence: the converged rule, the arms' settings, and one smoke arm end to end."""

import json

import pandas as pd
import pytest

from dptlib.experiments import convergence


def curve(itm, rec, steps=(0, 200, 400, 600, 800, 1000)):
    return pd.DataFrame({"step": list(steps), "ITM overall": itm, "REC P@1": rec})


def test_converged_reads_the_last_fifth():
    # moved 0.5 (ITM) and 0.9 (REC) between step 800 and 1000: converged
    assert convergence.convergence(curve([0, 50, 60, 70, 79.5, 80.0], [0, 10, 20, 40, 59.1, 60.0])) == \
        {"ITM overall": 0.5, "REC P@1": 0.9, "converged": True}
    # REC still climbing by 2.5 points: not converged (earlier gains do not matter)
    assert convergence.convergence(curve([0, 80, 80, 80, 80, 80], [0, 60, 60, 60, 57.5, 60.0]))["converged"] is False
    # a fall counts as movement too
    assert convergence.convergence(curve([0, 80, 80, 80, 80, 78.5], [0, 60, 60, 60, 60, 60]))["ITM overall"] == -1.5


def test_every_arm_is_a_valid_stage1_config():
    from dptlib.method.train import ProbeConfig

    for name in convergence.ARMS:
        config = convergence.probe_config(name, "toy")
        assert isinstance(config, ProbeConfig) and config.blocks == "up1"
        assert config.steps % 5 == 0, name  # 80 % of the steps is a validation step
        assert convergence.checkpoints(config.steps)[-2] == 0.8 * config.steps


def test_unknown_arm_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit:
        convergence.main(["--arms", "cosine-9"])
    assert exit.value.code == 2
    assert "unknown arm(s) ['cosine-9']" in capsys.readouterr().err


def test_a_smoke_arm_writes_its_curve_and_is_skipped_after(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(convergence, "results_dir", lambda scale: tmp_path / "results")
    monkeypatch.setenv("DPT_RUNS_DIR", str(tmp_path / "runs"))
    record = convergence.run_arm("cosine-1000", 0, "smoke", progress=False)
    steps = [v["step"] for v in record["validation"]]
    assert steps == convergence.checkpoints(convergence.arm_settings("cosine-1000", "smoke")["steps"])
    assert all(0 <= v[m] <= 100 for v in record["validation"] for m in convergence.METRICS)
    saved = json.loads((tmp_path / "results" / "cosine-1000-s0.json").read_text())
    assert saved["validation"] == record["validation"] and "converged" in saved
    assert convergence.main(["--scale", "smoke", "--arms", "cosine-1000"]) == 0
    assert "cosine-1000-s0: done, skipped" in capsys.readouterr().out


def test_an_arm_changes_only_the_adapter_entries_it_names():
    from dptlib.method.train import ProbeConfig

    preset = ProbeConfig.preset("toy").adapter
    changed = convergence.probe_config("cosine-1500", "toy").adapter  # an arm of the 40-query stage 1 the preset replaced
    assert changed.num_queries == 40 and preset.num_queries == 16
    assert convergence.probe_config("cosine-1500-q16", "toy").adapter.num_queries == 16
    reference = convergence.probe_config("constant-3000", "toy")
    assert (reference.lr_schedule, reference.warmup_steps, reference.adapter.num_queries) == ("constant", 0, 40)
    assert (changed.d_model, changed.num_matching_queries, changed.max_side) == (preset.d_model, preset.num_matching_queries, preset.max_side)
