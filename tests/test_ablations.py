"""Ablation batches: variants from a sweep or by name, checked before anything runs; a finished
variant is skipped (same parameters hash), a killed batch resumes, a failing variant does not stop
the others. The notebook run itself is stubbed: these tests are about the batch's bookkeeping."""

import json

import pytest

from dptlib import ablations


def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DPT_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def test_a_sweep_makes_one_variant_per_value_and_checks_them(tmp_path):
    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nshared: {steps: 3}\n"
                                        "sweep: lora_rank\nvalues: [1, 2, 4]\n"))
    assert batch.name == "rank" and batch.notebook == "02_tuning"
    assert batch.variants == {"lora_rank=1": {"steps": 3, "lora_rank": 1}, "lora_rank=2": {"steps": 3, "lora_rank": 2},
                              "lora_rank=4": {"steps": 3, "lora_rank": 4}}
    named = ablations.load_batch(_write(tmp_path / "mse.yaml", "notebook: 02_tuning\nvariants:\n  dpt: {}\n"
                                        "  both: {mse_coef: 0.1}\n"))
    assert named.variants == {"dpt": {}, "both": {"mse_coef": 0.1}}
    with pytest.raises(ValueError, match="variant 'lora_rank=x'.*lora_rank"):
        ablations.load_batch(_write(tmp_path / "bad.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [x]\n"))
    with pytest.raises(ValueError, match="either 'sweep' with 'values', or 'variants'"):
        ablations.load_batch(_write(tmp_path / "both.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvariants: {a: {}}\n"))


def test_finished_variants_are_skipped_failures_reported_and_changes_rerun(tmp_path, runs):
    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1, 2, 4]\n"))
    calls = []

    def run(notebook, output, parameters, runs_folder):
        calls.append(parameters["lora_rank"])
        if parameters["lora_rank"] == 2 and len(calls) < 4:
            raise RuntimeError("out of memory")
        runs_folder.mkdir(parents=True)
        (runs_folder / "metrics.json").write_text(json.dumps({"rank": parameters["lora_rank"]}))

    first = ablations.run_batch(batch, "smoke", run=run, progress=False)
    assert first["lora_rank=1"] == first["lora_rank=4"] == "done" and first["lora_rank=2"].startswith("failed: RuntimeError")
    folder = runs / "smoke" / "ablations" / "rank"
    assert (folder / "lora_rank=2" / "error.txt").exists() and not (folder / "lora_rank=2" / "done.json").exists()
    assert json.loads((folder / "lora_rank=4" / "runs" / "metrics.json").read_text()) == {"rank": 4}
    # run again: the two finished variants are skipped, the failed one runs (and now succeeds)
    again = ablations.run_batch(batch, "smoke", run=run, progress=False)
    assert again == {"lora_rank=1": "skipped", "lora_rank=2": "done", "lora_rank=4": "skipped"} and calls == [1, 2, 4, 2]
    # changed parameters are another run, started afresh (the old run's files are gone)
    (folder / "lora_rank=1" / "runs" / "stale.state.safetensors").write_text("x")
    changed = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nshared: {steps: 5}\n"
                                          "sweep: lora_rank\nvalues: [1]\n"))
    assert ablations.run_batch(changed, "smoke", run=run, progress=False) == {"lora_rank=1": "done"}
    assert not (folder / "lora_rank=1" / "runs" / "stale.state.safetensors").exists()


def test_a_killed_batch_resumes_without_redoing_finished_variants(tmp_path, runs):
    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1, 2, 4]\n"))
    calls = []

    def killed(notebook, output, parameters, runs_folder):
        calls.append(parameters["lora_rank"])
        if parameters["lora_rank"] == 2:
            raise KeyboardInterrupt  # the batch is killed while variant 2 runs

    with pytest.raises(KeyboardInterrupt):
        ablations.run_batch(batch, "smoke", run=killed, progress=False)
    resume_state = runs / "smoke" / "ablations" / "rank" / "lora_rank=2" / "runs" / "probe.state.safetensors"
    resume_state.parent.mkdir(parents=True)
    resume_state.write_text("what the killed run saved")
    calls.clear()
    result = ablations.run_batch(batch, "smoke", run=lambda *args: calls.append(args[2]["lora_rank"]), progress=False)
    assert result == {"lora_rank=1": "skipped", "lora_rank=2": "done", "lora_rank=4": "done"} and calls == [2, 4]
    assert resume_state.exists()  # the variant it was killed in resumes from its own states


def test_one_variant_alone_and_unknown_ones(tmp_path, runs):
    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1, 2]\n"))
    assert ablations.run_batch(batch, "smoke", only=["lora_rank=2"], run=lambda *a: None, progress=False) == {"lora_rank=2": "done"}
    with pytest.raises(ValueError, match="no variant"):
        ablations.run_batch(batch, "smoke", only=["lora_rank=3"], run=lambda *a: None, progress=False)


def test_a_variant_runs_its_notebook_by_papermill_into_its_own_folder(tmp_path, runs, capsys):
    """The real run: 00_toy_world at the smoke scale, its runs folder inside the variant's."""
    pytest.importorskip("papermill")
    batch = ablations.load_batch(_write(tmp_path / "oracle.yaml", "notebook: 00_toy_world\nsweep: seed\nvalues: [1]\n"))
    assert ablations.run_batch(batch, "smoke", progress=False) == {"seed=1": "done"}
    folder = runs / "smoke" / "ablations" / "oracle" / "seed=1"
    assert (folder / "00_toy_world.ipynb").exists() and (folder / "runs" / "smoke" / "toyworld").is_dir()
    assert json.loads((folder / "done.json").read_text())["parameters"] == {"seed": 1, "scale": "smoke"}
