"""Bad input to the command lines (dptlib.experiments.reproduce, dptlib.experiments.ablations, dptlib.method.train) and to the
notebooks' parameters: one line naming the bad value and the allowed ones, exit status 2, and
nothing started (papermill, training) before the error."""

import numpy as np
import pytest
from safetensors.numpy import save_file

from dptlib import checks
from dptlib.experiments import ablations, reproduce
from dptlib.method import train
from dptlib.method.adapter import INPUT_NORMS
from dptlib.method.train import LORA_TARGETS, LR_SCHEDULES, TuneConfig


class Started(Exception):
    """Raised by the stand-ins of papermill and of training: work began."""


@pytest.fixture(autouse=True)
def nothing_runs(monkeypatch, tmp_path):
    import papermill

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(papermill, "execute_notebook", started)
    monkeypatch.setattr(train, "probe", started)
    monkeypatch.setattr(train, "manifest_splits", started)
    monkeypatch.setattr(train, "open_clip_embedder", started)
    monkeypatch.setenv("DPT_RUNS_DIR", str(tmp_path / "runs"))  # no earlier runs: prerequisites are missing


@pytest.fixture
def manifest(tmp_path):
    """A manifest whose files exist (empty: only their presence is checked before a run)."""
    for name in ("captions.json", "refexp.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "images").mkdir()
    path = tmp_path / "manifest.yaml"
    path.write_text("train: {captions: captions.json, refexp: refexp.json, images: images}\n")
    return path


def error_line(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


REPRODUCE = [
    (["--only", "99_nothing"], ["'99_nothing'", "01_probing"]),
    (["--only", "core", "99_nothing"], ["'99_nothing'", "notebooks:"]),
    (["--only"], ["--only", "core"]),
    (["--scale", "huge"], ["'huge'", "paper-sd21"]),
    (["--set", "foo=1", "--only", "00_toy_world"], ["'foo'", "n_oracle_scenes"]),
    (["--set", "steps=many", "--only", "01_probing"], ["'steps'", "'many'", "int"]),
    (["--set", "steps", "--only", "01_probing"], ["NAME=VALUE", "'steps'"]),
    (["--set", "blocks=up9", "--only", "01_probing"], ["'up9'", "up1", "mid"]),
    (["--set", "candidate_blocks=[mid, up7]", "--only", "01_probing"], ["'up7'", "down0"]),
    (["--set", "objectives=all", "--only", "02_tuning"], ["'all'", "grounding"]),
    (["--set", "lora_targets=everything", "--only", "02_tuning"], ["'everything'", "cross-attention"]),
    (["--set", "selection=best", "--only", "02_tuning"], ["'best'", "oracle"]),
    (["--set", "scheduler=euler", "--only", "02_tuning"], ["'euler'", "dpm++"]),
    (["--set", "scheduler=euler", "--only", "core"], ["'euler'", "dpm++"]),
    (["--set", "scheduler=dpm++", "--only", "01_probing"], ["'scheduler'", "01_probing", "eval_timestep"]),
    (["--set", "seeds=[]", "--only", "02_tuning"], ["seeds=[]", "at least one"]),
    (["--set", "num_inference_steps=0", "--only", "02_tuning"], ["num_inference_steps=0", ">= 1"]),
    (["--set", "eta=-1", "--only", "03_self_correction"], ["eta=-1", ">= 0"]),
    (["--set", "eval_timestep=1000", "--only", "01_probing"], ["eval_timestep=1000", "[0, 999]"]),
    (["--set", "model=/nowhere/sd", "--only", "01_probing"], ["'/nowhere/sd'", "Hugging Face cache"]),
    (["--set", "data=/nowhere/manifest.yaml", "--only", "01_probing"], ["/nowhere/manifest.yaml", "captions"]),
    (["--set", "evaluator=clip", "--only", "01_probing"], ["'clip'", "open_clip:<architecture>:<checkpoint>"]),
    (["--set", "evaluator=open_clip:ViT-B-32:/nowhere/clip.bin", "--only", "01_probing"], ["/nowhere/clip.bin"]),
    (["--only", "02_tuning", "--scale", "smoke"], ["01_probing", "--only 01_probing"]),
    (["--only", "03_self_correction", "--scale", "smoke"], ["02_tuning", "--only 02_tuning"]),
    (["--variant", "x"], ["--variant", "--ablation"]),
    (["--params", "nowhere"], ["nowhere"]),
    (["--ablation", "nothing"], ["'nothing'", "lora_rank", "seeds"]),
    (["--ablation", "seeds", "--variant", "dpt-s9"], ["'dpt-s9'", "dpt-s4"]),
    (["--ablation", "seeds", "--scale", "huge"], ["'huge'", "toy"]),
    (["--ablation", "blocks", "--variant"], ["--variant", "at least one"]),
    (["--set", "fused_batch=blocks_nothing", "--only", "04_ablation_blocks"], ["fused_batch='blocks_nothing'", "blocks_fused"]),
    (["--set", "deep_batch=deep", "--only", "06_ablation_adapter_layers"], ["deep_batch='deep'", "adapter_layers_deep"]),
    (["--set", "seeds_batches=[timesteps_seeds, nope]", "--only", "07_ablation_timesteps"], ["'nope'", "nope.yaml", "timesteps_more_seeds"]),
    (["--rerun"], ["--rerun", "--ablation"]),
    (["--ablation", "seeds", "--rerun"], ["--rerun", "--variant"]),
]


@pytest.mark.parametrize("argv, named", REPRODUCE, ids=[" ".join(a) for a, _ in REPRODUCE])
def test_reproduce_refuses_bad_input_in_one_line(capsys, argv, named):
    line = error_line(capsys, reproduce.main, argv)
    for text in named:
        assert text in line, line


def test_a_manifest_naming_missing_files_is_refused(capsys, manifest):
    manifest.write_text(manifest.read_text().replace("images}", "images}\ntest: {captions: gone.json, refexp: refexp.json, "
                                                                       "images: images}"))
    line = error_line(capsys, reproduce.main, ["--set", f"data={manifest}", "--only", "01_probing"])
    assert "gone.json" in line and "'test'" in line


def test_good_input_reaches_papermill_and_a_prerequisite_may_run_first(manifest):
    with pytest.raises(Started):  # both checked, then the first run starts
        reproduce.main(["--scale", "smoke", "--only", "01_probing", "02_tuning"])
    with pytest.raises(Started):
        reproduce.main(["--scale", "smoke", "--only", "01_probing", "--set", f"data={manifest}"])


def test_debug_shows_the_traceback():
    with pytest.raises(ValueError, match="'up9'"):
        reproduce.main(["--set", "blocks=up9", "--only", "01_probing", "--debug"])


TRAIN = [
    (["--blocks", "up9"], ["'up9'", "mid"]),
    (["--steps", "0"], ["--steps=0", ">= 1"]),
    (["--evaluator", "open_clip:ViT-B-32:/nowhere/clip.bin"], ["/nowhere/clip.bin"]),
    (["--data", "/nowhere/manifest.yaml"], ["/nowhere/manifest.yaml"]),
    (["--model", "/nowhere/sd"], ["'/nowhere/sd'"]),
]


@pytest.mark.parametrize("extra, named", TRAIN, ids=[" ".join(a) for a, _ in TRAIN])
def test_train_refuses_bad_input_before_loading_anything(capsys, manifest, tmp_path, extra, named):
    argv = ["probe", "--scale", "smoke", "--model", "toy", "--data", str(manifest), "--evaluator", "open_clip:ViT-B-32:laion2b_s34b_b79k",
            "--out", str(tmp_path / "out"), *extra]
    line = error_line(capsys, train.main, argv)
    for text in named:
        assert text in line, line


def test_train_with_good_input_goes_on_to_read_the_data(manifest, tmp_path):
    with pytest.raises(Started):
        train.main(["probe", "--scale", "smoke", "--model", "toy", "--data", str(manifest), "--evaluator", "open_clip:ViT-B-32:x",
                    "--out", str(tmp_path / "out"), "--blocks", "mid+up1"])


def test_ablations_alone_refuse_an_unknown_batch(capsys):
    line = error_line(capsys, ablations.main, ["nothing", "--list"])
    assert "'nothing'" in line and "adapter_layers" in line


def test_ablations_refuse_fewer_than_one_job(capsys):
    line = error_line(capsys, ablations.main, ["lora_rank", "--jobs", "0"])
    assert "--jobs 0" in line and "1 or more" in line


def test_ablations_say_when_more_jobs_than_usable_cores_are_asked_for_on_a_gpu(capsys, monkeypatch):
    monkeypatch.setattr(ablations, "device", lambda: "cuda")
    monkeypatch.setattr(ablations.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert ablations.main(["lora_rank", "--scale", "smoke", "--jobs", "4", "--list"]) == 0
    assert "--jobs 4 but this process may use 1 CPU core(s)" in capsys.readouterr().err
    assert ablations.main(["lora_rank", "--scale", "smoke", "--jobs", "1", "--list"]) == 0
    assert "CPU core" not in capsys.readouterr().err


def test_the_choices_are_the_trainers_own():
    assert list(checks.CHOICES["lora_targets"]) == list(LORA_TARGETS)
    assert list(checks.CHOICES["probe_schedule"]) == list(LR_SCHEDULES)
    assert list(checks.CHOICES["adapter_input_norm"]) == list(INPUT_NORMS)
    for name in ("objectives", "trainable", "lora_targets"):
        for value in checks.CHOICES[name]:
            TuneConfig(**{name: value, **({"mse_coef": 1.0} if value == "none" else {})})
        with pytest.raises(ValueError):
            TuneConfig(**{name: "nothing"})


def test_an_error_after_the_checks_keeps_its_traceback(monkeypatch):
    """Only bad input is one line: a ValueError raised by the work itself is not the user's."""
    import papermill

    def fails(*args, **kwargs):
        raise ValueError("a bug inside a notebook run")

    monkeypatch.setattr(papermill, "execute_notebook", fails)
    with pytest.raises(ValueError, match="a bug inside"):
        reproduce.main(["--scale", "smoke", "--only", "00_toy_world"])


def test_a_notebook_runs_its_missing_prerequisites_first_at_the_smoke_scale_only(tmp_path):
    from dptlib.config import runs_dir

    made = {"01_probing": checks.PREREQUISITES["02_tuning"][1], "02_tuning": checks.PREREQUISITES["03_self_correction"][1]}
    ran = []

    def run(notebook, scale):  # stands in for papermill: writes the files the notebook makes
        ran.append((notebook, scale))
        for name in made[notebook]:
            (runs_dir(scale) / name).parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(".safetensors"):
                save_file({"w": np.zeros(4, np.float32)}, runs_dir(scale) / name)
            else:
                (runs_dir(scale) / name).write_text("{}")

    with pytest.raises(checks.UserInputError, match="--only 02_tuning"):  # toy: say what to run, run nothing
        checks.ensure_prerequisites("03_self_correction", "toy", run)
    assert ran == []
    assert checks.ensure_prerequisites("03_self_correction", "smoke", run) == ["01_probing", "02_tuning"]
    assert ran == [("01_probing", "smoke"), ("02_tuning", "smoke")]
    assert checks.ensure_prerequisites("03_self_correction", "smoke", run) == []  # present now: nothing runs
    assert checks.ensure_prerequisites("01_probing", "smoke", run) == [] and len(ran) == 2
    lora = runs_dir("smoke") / "tune/best/pytorch_lora_weights.safetensors"
    lora.write_bytes(lora.read_bytes()[:-3])  # truncated: named before 03 starts, and 02 is not run again over it
    with pytest.raises(ValueError, match="pytorch_lora_weights.safetensors: not a whole safetensors file"):
        checks.ensure_prerequisites("03_self_correction", "smoke", run)
    assert len(ran) == 2


@pytest.mark.parametrize("values, named", [
    ({"probe_schedule": "warm"}, ["'warm'", "cosine"]),
    ({"probe_queries": 8}, ["probe_queries=8", "8 matching"]),
    ({"probe_warmup": -1}, ["probe_warmup=-1", ">= 0"]),
    ({"adapter_input_norm": "layer"}, ["'layer'", "batch"]),
])
def test_a_bad_stage1_recipe_of_a_variant_is_refused_before_it_runs(values, named):
    with pytest.raises(checks.UserInputError) as error:
        checks.check_parameters("ablation_variant", {"scale": "toy", **values})
    for text in named:
        assert text in str(error.value)
    assert checks.check_parameters("ablation_variant", {"scale": "toy", "probe_schedule": "cosine", "probe_warmup": 100,
                                                        "probe_queries": 16}).probe_queries == 16


def test_a_set_value_reaches_the_notebooks_that_declare_it():
    from pathlib import Path

    runs = [(Path(f"{name}.yaml"), name, {"seed": 0}) for name in reproduce.CORE]
    routed = {notebook: parameters for _, notebook, parameters in reproduce.apply_overrides(
        runs, {"scheduler": "dpm++", "num_inference_steps": 6})}
    assert routed["02_tuning"] == routed["00b_base_model"] == {"seed": 0, "scheduler": "dpm++", "num_inference_steps": 6}
    # 03 samples as 02 recorded it; 00 and 01 sample nothing
    for notebook in ("00_toy_world", "01_probing", "03_self_correction"):
        assert routed[notebook] == {"seed": 0}, notebook
    with pytest.raises(ValueError, match=r"\['schedular'\].*scheduler"):
        reproduce.apply_overrides(runs, {"schedular": "dpm++"})
