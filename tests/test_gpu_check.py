"""``make gpu-check``'s script: the same code on a tiny U-Net on the CPU, and a clean exit
where there is no CUDA."""

import json

import pytest
import torch

from dptlib.perf import gpu_check


def test_the_check_runs_end_to_end_on_a_tiny_unet(tmp_path):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--skip-tests", "--out", str(out), "--blocks", "mid,up1"]) == 0
    report = json.loads(out.read_text())
    assert [r["block"] for r in report["stage1"]] == ["mid", "up1"]
    for result in report["stage1"]:
        assert [b["septuples"] for b in result["batches"]] == [1, 2]
        assert result["best"]["samples_per_s"] > 0 and result["best"]["flops_per_step"] > 0
    # a pass to up1 runs more of the U-Net than one to mid: more FLOPs per sample (the best batch,
    # chosen by measured speed, may differ between the two blocks)
    per_sample = [r["best"]["flops_per_step"] / r["best"]["septuples"] for r in report["stage1"]]
    assert per_sample[1] > per_sample[0]
    assert report["stage2"]["dpt+mse"]["flops_per_step"] > report["stage2"]["dpt"]["flops_per_step"]
    assert report["stage2"]["lora_parameters"] > 0
    assert report["self_correction"]["ratio"] > 0  # a timing: measured, not asserted (the CPU may be shared)
    # the corrected step is the gradient pass plus the plain CFG step, and its bound is that FLOP ratio
    flops = report["self_correction"]["flops"]
    assert flops["corrected"] == pytest.approx(flops["gradient"] + flops["plain"], rel=1e-6)
    assert report["self_correction"]["counted_bound"] == pytest.approx(flops["corrected"] / flops["plain"])
    assert report["sampling"]["plain_images_per_s"] > 0 and report["sampling"]["corrected_images_per_s"] > 0
    assert report["evaluator"]["images_per_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA runs the real check")
def test_without_cuda_the_check_says_so_and_exits_zero(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "x.json")]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert not (tmp_path / "x.json").exists()
