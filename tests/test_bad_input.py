"""Bad input, as a new user gives it, answered before any work: each case runs a command-line tool
in this process (no kernel starts: papermill and training are stubbed to fail the test if reached),
and asserts exit status 2, one line on stderr, no traceback, and the bad value or file named in it.
Cases given a finished run check that it is intact afterwards. More cases: tests/test_checks.py."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from test_checks import nothing_runs  # noqa: F401 (autouse: papermill and training stubbed to fail if reached)

from dptlib import cli
from dptlib.config import repo_root
from dptlib.experiments import ablations, convergence, reproduce, sampler_check, seed_claims
from dptlib.method import train
from dptlib.official import convert
from dptlib.perf import timing

REPO = repo_root()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """Runs and results under tmp; no DPT_* variable but the ones a case sets."""
    monkeypatch.setenv("DPT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DPT_RESULTS_DIR", str(tmp_path / "results"))
    for name in ("DPT_DEVICE", "DPT_THREADS", "DPT_SCALE", "DPT_FIGURES_DIR", "DPT_BENCHMARKS_DIR", "DPT_ROOT"):
        monkeypatch.delenv(name, raising=False)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# --- files a case is given: each builder writes into tmp and returns the path ----------------------
def run_files(tmp: Path, text: str | bytes) -> Path:
    """A folder of run files (``reproduce --params``) holding one file."""
    write(tmp / "params" / "01_probing.yaml", text)
    return tmp / "params"


def fake_root(tmp: Path, batch: str | bytes) -> Path:
    """A repository root whose notebooks are the real ones and whose ablation batch ``bad`` is given."""
    root = tmp / "root"
    (root / "papermill_params").mkdir(parents=True)
    os.symlink(REPO / "notebooks", root / "notebooks")
    write(root / "papermill_params" / "ablations" / "bad.yaml", batch)
    return root


def manifest(tmp: Path, text: str, captions: str | bytes = "{}", images: bool = True) -> Path:
    write(tmp / "captions.json", captions)
    write(tmp / "refexp.json", "{}")
    if images:
        (tmp / "images").mkdir(exist_ok=True)
    else:
        write(tmp / "images", "not a folder")
    return write(tmp / "manifest.yaml", text)


GOOD_SPLIT = "{captions: captions.json, refexp: refexp.json, images: images}"
TRAIN_SPLIT = f"train: {GOOD_SPLIT}\n"


def with_manifest(text: str, **files):
    """argv of a 01_probing run on a manifest holding ``text`` (its files per ``files``)."""
    return lambda tmp: ["--set", f"data={manifest(tmp, text, **files)}", "--only", "01_probing"]


def with_run_file(text: str | bytes):
    return lambda tmp: ["--params", str(run_files(tmp, text))]


def dpt(argv):
    """The ``dpt`` command as a console script runs it: its status is the exit status."""
    raise SystemExit(cli.main(argv))


def safetensors_file(path: Path, damage: str) -> Path:
    save_file({"w": np.arange(64, dtype=np.float32)}, path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:-10], "empty": b"", "random": os.urandom(300), "whole": data}[damage])
    return path


# --- the table: id -> (main, argv builder (tmp) -> argv, environment, fragments the line must name) ----------
def R(*argv):
    return lambda tmp: list(argv)


CASES = {
    # environment, read once at start-up by every tool
    "threads-0": (reproduce.main, R("--list"), {"DPT_THREADS": "0"}, ["DPT_THREADS='0'", ">= 1"]),
    "threads-abc": (reproduce.main, R("--only", "00_toy_world"), {"DPT_THREADS": "abc"}, ["DPT_THREADS='abc'"]),
    "threads-float": (ablations.main, R("lora_rank", "--list"), {"DPT_THREADS": "1.5"}, ["DPT_THREADS='1.5'"]),
    "device-tpu": (reproduce.main, R("--only", "00_toy_world"), {"DPT_DEVICE": "tpu"}, ["DPT_DEVICE='tpu'", "'cpu' or 'cuda'"]),
    "scale-env": (reproduce.main, R("--only", "00_toy_world"), {"DPT_SCALE": "huge"}, ["DPT_SCALE='huge'", "paper-sd21"]),
    "runs-dir": (reproduce.main, R("--only", "00_toy_world"), {"DPT_RUNS_DIR": "/dev/null/x"}, ["DPT_RUNS_DIR='/dev/null/x'"]),
    "results-dir": (ablations.main, R("lora_rank", "--list"), {"DPT_RESULTS_DIR": "/dev/null/x"}, ["DPT_RESULTS_DIR='/dev/null/x'"]),
    "figures-dir": (reproduce.main, R("--only", "00_toy_world"), {"DPT_FIGURES_DIR": "/dev/null/f"}, ["DPT_FIGURES_DIR='/dev/null/f'"]),
    "root": (reproduce.main, R("--only", "00_toy_world"), {"DPT_ROOT": "/nowhere/repo"}, ["DPT_ROOT='/nowhere/repo'"]),
    "benchmarks-dir": (reproduce.main, R("--only", "00_toy_world"), {"DPT_BENCHMARKS_DIR": "/nowhere/b"}, ["DPT_BENCHMARKS_DIR"]),
    "threads-train": (train.main, R("probe", "--scale", "smoke"), {"DPT_THREADS": "-2"}, ["DPT_THREADS='-2'"]),
    "threads-claims": (seed_claims.main, R("show"), {"DPT_THREADS": "x"}, ["DPT_THREADS='x'"]),
    "threads-timing": (timing.main, R("probe"), {"DPT_THREADS": "0"}, ["DPT_THREADS='0'"]),
    "threads-sampler": (sampler_check.main, R("--scale", "smoke"), {"DPT_THREADS": "0"}, ["DPT_THREADS='0'"]),
    "threads-convergence": (convergence.main, R("--scale", "smoke"), {"DPT_THREADS": "0"}, ["DPT_THREADS='0'"]),
    # values given on the command line
    "set-eta-nan": (reproduce.main, R("--set", "eta=nan", "--only", "03_self_correction"), {}, ["eta='nan'", "number"]),
    "set-eta-yaml-nan": (reproduce.main, R("--set", "eta=.nan", "--only", "03_self_correction"), {}, ["eta=nan", "NaN"]),
    "set-eta-inf": (reproduce.main, R("--set", "eta=.inf", "--only", "03_self_correction"), {}, ["eta", "NaN and infinity"]),
    "set-etas-nan": (reproduce.main, R("--set", "etas=[0.0, .nan]", "--only", "03_self_correction"), {}, ["etas.1", "NaN"]),
    "set-steps-neg": (reproduce.main, R("--set", "steps=-5", "--only", "01_probing"), {}, ["steps=-5", ">= 0"]),
    "set-seed-text": (reproduce.main, R("--set", "seed=abc", "--only", "01_probing"), {}, ["'seed'", "'abc'"]),
    "claims-scale": (seed_claims.main, R("check", "--scale", "foo"), {}, ["'foo'", "toy"]),
    "timing-scale": (timing.main, R("profile", "--scale", "foo"), {}, ["'foo'", "toy"]),
    "sampler-scale": (sampler_check.main, R("--scale", "huge"), {}, ["'huge'", "toy"]),
    "convergence-scale": (convergence.main, R("--scale", "huge"), {}, ["'huge'", "toy"]),
    "convergence-arm": (convergence.main, R("--scale", "smoke", "--arms", "nope"), {}, ["'nope'"]),
    "variant-unknown": (ablations.main, R("lora_rank", "--variant", "nope", "--scale", "smoke"), {}, ["'nope'", "base"]),
    "batch-unknown": (ablations.main, R("nope", "--list"), {}, ["'nope'", "lora_rank"]),
    "jobs-zero": (ablations.main, R("lora_rank", "--jobs", "0"), {}, ["--jobs"]),
    "cli-unknown": (dpt, R("reproduse"), {}, ["'reproduse'", "reproduce"]),
    # run files (reproduce --params)
    "run-yaml-syntax": (reproduce.main, with_run_file("notebook: 01_probing\nparameters: {steps: 3\n"),
                        {}, ["01_probing.yaml", "not valid YAML", "line"]),
    "run-not-utf8": (reproduce.main, with_run_file(b"notebook: 01_probing\n# caf\xe9\n"), {},
                     ["01_probing.yaml", "not UTF-8"]),
    "run-parameters-list": (reproduce.main, with_run_file("notebook: 01_probing\nparameters: [a, b]\n"),
                            {}, ["01_probing.yaml", "parameters"]),
    "run-unknown-key": (reproduce.main, with_run_file("notebook: 01_probing\nparams: {}\n"), {},
                        ["01_probing.yaml", "params"]),
    "run-no-notebook": (reproduce.main, with_run_file("parameters: {steps: 3}\n"), {},
                        ["01_probing.yaml", "'notebook'"]),
    "run-a-list": (reproduce.main, with_run_file("- notebook: 01_probing\n"), {},
                   ["01_probing.yaml", "the top level"]),
    "run-nan": (reproduce.main, with_run_file("notebook: 03_self_correction\nparameters: {eta: .nan}\n"),
                {}, ["01_probing.yaml", "parameters.eta", "finite"]),
    "run-empty-notebook": (reproduce.main, with_run_file("notebook: ''\n"), {}, ["01_probing.yaml", "notebook"]),
    "run-unknown-parameter": (reproduce.main, with_run_file("notebook: 01_probing\nparameters: {stepz: 3}\n"),
                              {}, ["'stepz'", "steps"]),
    # batch files (papermill_params/ablations), found through DPT_ROOT
    "batch-yaml-syntax": (ablations.main, R("bad", "--list"), "notebook: ablation_variant\nvariants: {a: {lora_rank: 4}\n",
                          ["bad.yaml", "not valid YAML"]),
    "batch-values-scalar": (ablations.main, R("bad", "--list"), "notebook: ablation_variant\nsweep: lora_rank\nvalues: 5\n",
                            ["bad.yaml", "values", "array"]),
    "batch-variants-list": (ablations.main, R("bad", "--list"), "notebook: ablation_variant\nvariants: [a, b]\n",
                            ["bad.yaml", "variants"]),
    "batch-shared-list": (ablations.main, R("bad", "--list"), "notebook: ablation_variant\nshared: [a]\nvariants: {a: {}}\n",
                          ["bad.yaml", "shared"]),
    "batch-nan": (ablations.main, R("bad", "--list"), "notebook: ablation_variant\nvariants: {a: {probe_lr: .nan}}\n",
                  ["bad.yaml", "variants.a.probe_lr", "finite"]),
    "batch-lr-text": (ablations.main, R("bad", "--list"), "notebook: ablation_variant\nvariants: {a: {probe_lr: abc}}\n",
                      ["bad.yaml", "probe_lr='abc'", "number"]),
    "batch-lr-negative": (ablations.main, R("bad", "--list"), "notebook: ablation_variant\nvariants: {a: {probe_lr: -1.0}}\n",
                          ["bad.yaml", "probe_lr=-1.0", "> 0"]),
    "batch-unknown-key": (ablations.main, R("bad", "--list"), "notebook: ablation_variant\nvariants: {a: {}}\nseeds: [1]\n",
                          ["bad.yaml", "seeds"]),
    "batch-no-notebook": (ablations.main, R("bad", "--list"), "variants: {a: {}}\n", ["bad.yaml", "'notebook'"]),
    "batch-neither": (ablations.main, R("bad", "--list"), "notebook: ablation_variant\nshared: {lora_rank: 4}\n",
                      ["bad.yaml", "'sweep' with 'values', or 'variants'"]),
    "batch-seeds-negative": (ablations.main, R("bad", "--list"), "notebook: ablation_variant\nvariants: {a: {}, b: {}}\n"
                             "training_seeds: [-1]\n", ["bad.yaml", "training_seeds"]),
    "batch-reference-unknown": (ablations.main, R("bad", "--list"), "notebook: ablation_variant\nvariants: {a: {}}\nreference: z\n",
                                ["bad.yaml", "'z'"]),
    "batch-not-utf8": (ablations.main, R("bad", "--list"), b"notebook: ablation_variant\nvariants: {a: {}}\n# \xff\n",
                       ["bad.yaml", "not UTF-8"]),
    # data manifests (--set data=...)
    "manifest-list": (reproduce.main, with_manifest("- train\n- val\n"), {}, ["manifest.yaml", "the top level"]),
    "manifest-yaml-syntax": (reproduce.main, with_manifest("train: {captions: a\n"), {}, ["manifest.yaml", "not valid YAML"]),
    "manifest-truncated-json": (reproduce.main, with_manifest(TRAIN_SPLIT, captions='{"images": ['), {},
                                ["captions.json", "not valid JSON"]),
    "manifest-images-file": (reproduce.main, with_manifest(TRAIN_SPLIT, images=False), {}, ["images", "not a folder"]),
    "manifest-missing-key": (reproduce.main, with_manifest("train: {captions: captions.json}\n"), {}, ["manifest.yaml", "lacks", "refexp"]),
    "manifest-empty": (reproduce.main, with_manifest(""), {}, ["manifest.yaml", "should be non-empty"]),
    "manifest-split-scalar": (reproduce.main, with_manifest("train: 5\n"), {}, ["manifest.yaml", "train"]),
    "manifest-captions-not-utf8": (reproduce.main, with_manifest(TRAIN_SPLIT, captions=b'{"a": "\xff"}'), {},
                                   ["captions.json", "not UTF-8"]),
    # checkpoints and results
    "convert-random": (convert.main, lambda t: [str(safetensors_file(t / "w.safetensors", "random")), str(t / "out")], {},
                       ["w.safetensors", "not a whole safetensors file"]),
    "convert-truncated": (convert.main, lambda t: [str(safetensors_file(t / "w.safetensors", "truncated")), str(t / "out")], {},
                          ["w.safetensors", "not a whole safetensors file"]),
    "convert-missing": (convert.main, lambda t: [str(t / "gone.bin"), str(t / "out")], {}, ["gone.bin"]),
}


def run_case(main, argv, env, monkeypatch, capsys) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2, f"exit status {exit_.value.code}"
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_before_any_work(case, tmp_path, monkeypatch, capsys):
    main, build, env, named = CASES[case]
    if isinstance(env, str | bytes):  # a batch file's text: the batch 'bad' of a repository root of its own
        env = {"DPT_ROOT": str(fake_root(tmp_path, env))}
    line = run_case(main, build(tmp_path), env, monkeypatch, capsys)
    for fragment in named:
        assert fragment in line, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
@pytest.mark.parametrize("main, argv", [(reproduce.main, ["--only", "00_toy_world"]), (timing.main, ["float-step", "--device", "cuda"])])
def test_cuda_asked_for_without_cuda_is_an_error_not_the_cpu(main, argv, tmp_path, monkeypatch, capsys):
    env = {"DPT_DEVICE": "cuda"} if main is reproduce.main else {}
    line = run_case(main, argv, env, monkeypatch, capsys)
    assert "cuda" in line.lower() and "CUDA device" in line


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_rerun_leaves_the_finished_run_intact(tmp_path, monkeypatch, capsys):
    """A finished variant (its folder and exported outcomes) and a re-run refused for its
    environment: both folders come out byte for byte."""
    runs = tmp_path / "runs" / "smoke" / "ablations" / "lora_rank" / "base"
    results = tmp_path / "results" / "smoke" / "lora_rank" / "base"
    for folder in (runs, results):
        write(folder / "done.json", json.dumps({"seconds": 1.0}))
        write(folder / "metrics.json", json.dumps({"discrimination": {"ITM": 50.0}}))
    before = checksums(tmp_path / "runs"), checksums(tmp_path / "results")
    line = run_case(ablations.main, ["lora_rank", "--scale", "smoke", "--variant", "base", "--rerun"], {"DPT_THREADS": "0"},
                    monkeypatch, capsys)
    assert "DPT_THREADS='0'" in line
    assert (checksums(tmp_path / "runs"), checksums(tmp_path / "results")) == before


def test_a_damaged_exported_outcome_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    """``make check-claims`` over a truncated ``.csv.gz`` of results/: one line naming it."""
    results = tmp_path / "results"
    shutil.copytree(REPO / "results" / "toy" / "seeds", results / "toy" / "seeds")
    victim = next(iter(sorted((results / "toy" / "seeds").rglob("*.csv.gz"))))
    victim.write_bytes(victim.read_bytes()[:100])
    line = run_case(seed_claims.main, ["check", "--scale", "toy"], {}, monkeypatch, capsys)
    assert victim.name in line and "damaged" in line


def test_library_loads_name_the_damaged_file(tmp_path):
    """What the notebooks call: a damaged adapter, resume state or LoRA folder is one ValueError
    line naming the file (no safetensors or peft message without a file)."""
    from dptlib.method.backbone import load_pipeline
    from dptlib.method.checkpoint import load_adapter, load_training_state

    folder = tmp_path / "adapter"
    write(folder / "config.json", json.dumps({"config": {}, "blocks": ["mid"]}))
    safetensors_file(folder / "adapter.safetensors", "truncated")
    with pytest.raises(ValueError, match=r"adapter\.safetensors: not a whole safetensors file"):
        load_adapter(folder)
    write(folder / "config.json", "{not json")
    with pytest.raises(ValueError, match=r"config\.json: the adapter's config\.json is not valid JSON"):
        load_adapter(folder)
    state = safetensors_file(tmp_path / "probe.state.safetensors", "empty")
    with pytest.raises(ValueError, match=r"probe\.state\.safetensors: not a whole safetensors file \(a resume state\)"):
        load_training_state(state, torch.nn.Linear(2, 2))
    (tmp_path / "lora").mkdir()
    with pytest.raises(FileNotFoundError, match=r"pytorch_lora_weights\.safetensors: no stage 2's LoRA weights"):
        load_pipeline("toy", lora=tmp_path / "lora")


@pytest.mark.parametrize("content, named", [(b"", "an empty prompt file"), (b"\n  \n", "an empty prompt file"),
                                            (b"a red cube\n\xff\n", "not UTF-8")])
def test_a_prompt_file_of_ones_own_is_read_or_refused(tmp_path, content, named):
    from dptlib.checks import check_paper_inputs

    path = write(tmp_path / "prompts.txt", content)
    with pytest.raises(ValueError, match=named):
        check_paper_inputs({"benchmarks": {f"file:{path}": 2}})


def test_a_gzip_that_is_whole_still_reads(tmp_path):
    """A positive control for the damaged-file check: a whole .csv.gz reads as before."""
    path = tmp_path / "x.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("a,b\n1,2\n")
    assert ablations.read_outcome_csv(path).to_dict("records") == [{"a": 1, "b": 2}]


def test_the_table_is_large():
    assert len(CASES) >= 60, len(CASES)


def test_a_prompt_longer_than_the_text_encoder_is_warned_about_once(caplog):
    """Cut, as the pipeline cuts it, but said: how many and the first; not again for the same prompt."""
    from dptlib.method import backbone
    from dptlib.toy.model import build_tokenizer

    tokenizer = build_tokenizer()
    long_prompt = " ".join(["a red cube left of a blue ball"] * 200)
    with caplog.at_level("WARNING", logger="dptlib"):
        assert backbone.warn_long_prompts(tokenizer, ["a red cube", long_prompt, long_prompt + " and more"]) == [
            long_prompt, long_prompt + " and more"]
        assert backbone.warn_long_prompts(tokenizer, [long_prompt]) == []  # said once
        assert backbone.warn_long_prompts(tokenizer, ["a blue ball"]) == []  # a short prompt: nothing to say
    said = [r.getMessage() for r in caplog.records if r.name.startswith("dptlib")]
    assert len(said) == 1 and said[0].startswith(f"2 prompt(s) longer than the text encoder's {tokenizer.model_max_length} tokens")
