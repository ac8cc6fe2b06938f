"""Ablation batches: variants from a sweep or by name, checked before anything runs; a finished
variant is skipped (same parameters hash), a killed batch resumes, a failing variant does not stop
the others. The notebook run itself is stubbed: these tests are about the batch's bookkeeping."""

import json
import math
import shutil
import time

import pandas as pd
import pytest

from dptlib.config import figures_dir
from dptlib.evaluation import stats
from dptlib.experiments import ablations, report
from dptlib.method.train import ProbeConfig


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
    with pytest.raises(ValueError, match="'sweep' with 'values', or 'variants', or both"):
        ablations.load_batch(_write(tmp_path / "neither.yaml", "notebook: 02_tuning\nshared: {steps: 3}\n"))
    with pytest.raises(ValueError, match="'sweep' with 'values'"):
        ablations.load_batch(_write(tmp_path / "half.yaml", "notebook: 02_tuning\nsweep: lora_rank\n"))


def test_named_variants_come_before_the_sweep_and_the_reference_is_checked(tmp_path):
    both = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nvariants:\n  base: {steps: 0}\n"
                                       "sweep: lora_rank\nvalues: [4, 1]\n"))
    assert list(both.variants) == ["base", "lora_rank=4", "lora_rank=1"] and both.reference == "base"
    chosen = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nreference: lora_rank=1\n"
                                         "sweep: lora_rank\nvalues: [4, 1]\n"))
    assert chosen.reference == "lora_rank=1"
    scaled = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nshared: {steps: 2}\n"
                                         "at_scale: {toy: {steps: 300, batch_size: 8}}\n"
                                         "variants:\n  base: {steps: 0}\nsweep: lora_rank\nvalues: [4]\n"))
    assert scaled.for_scale("smoke").variants == {"base": {"steps": 0}, "lora_rank=4": {"steps": 2, "lora_rank": 4}}
    # the toy budget applies at the toy scale, under each variant's own values
    assert scaled.for_scale("toy").variants == {"base": {"steps": 0, "batch_size": 8},
                                                "lora_rank=4": {"steps": 300, "batch_size": 8, "lora_rank": 4}}
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nat_scale: {huge: {}}\nsweep: lora_rank\nvalues: [1]\n"))
    with pytest.raises(ValueError, match="variant 'lora_rank=1' at scale 'toy'"):
        ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nat_scale: {toy: {steps: many}}\n"
                                    "sweep: lora_rank\nvalues: [1]\n"))
    with pytest.raises(ValueError, match="reference 'rank=1' is not a variant"):
        ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nreference: rank=1\nsweep: lora_rank\nvalues: [1]\n"))


def test_every_committed_batch_file_is_valid():
    """Each papermill_params/ablations/*.yaml loads and its variants pass the notebook's checks."""
    from dptlib.config import repo_root

    paths = sorted((repo_root() / "papermill_params" / "ablations").glob("*.yaml"))
    names = {p.stem for p in paths}
    assert {"blocks", "lora_rank", "adapter_layers", "timesteps", "mse", "trainable"} <= names
    for path in paths:
        batch = ablations.load_batch(path)
        assert batch.notebook == "ablation_variant" and len(batch.variants) >= 2, path


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


def test_jobs_run_the_unfinished_variants_apart_at_most_n_at_once_in_the_batch_order(tmp_path, runs):
    import threading

    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1, 2, 4, 8, 16]\n"))
    ablations.run_batch(batch, "smoke", only=["lora_rank=2"], run=lambda *a: None, progress=False)  # finished before
    lock, running, peak, launched = threading.Lock(), [0], [0], []

    def launch(batch_, scale, name, rerun):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            launched.append((name, rerun))
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return "failed: exit status 1" if name == "lora_rank=8" else "done"

    result = ablations.run_batch(batch, "smoke", jobs=2, launch=launch, progress=False, rerun=["lora_rank=16"])
    assert list(result) == ["lora_rank=1", "lora_rank=2", "lora_rank=4", "lora_rank=8", "lora_rank=16"]
    assert result == {"lora_rank=1": "done", "lora_rank=2": "skipped", "lora_rank=4": "done", "lora_rank=8": "failed: exit status 1",
                      "lora_rank=16": "done"}
    assert peak[0] == 2  # two at a time, never more
    assert [name for name, _ in launched][:2] == ["lora_rank=1", "lora_rank=4"]  # started in the batch's order
    assert dict(launched) == {"lora_rank=1": False, "lora_rank=4": False, "lora_rank=8": False, "lora_rank=16": True}


def test_exclusive_makes_a_second_process_wait_until_the_first_has_built(tmp_path, caplog):
    """What variants run at once share (the exported data, a stage-1 adapter) is built once: a
    second process entering the lock waits for the first to leave it, then finds it built."""
    import subprocess
    import sys

    from dptlib.method.checkpoint import exclusive

    caplog.set_level("INFO", logger="dptlib")

    lock, holding, built = tmp_path / "stage1.lock", tmp_path / "holding", tmp_path / "built"
    first = subprocess.Popen([sys.executable, "-c", (
        "import pathlib, time\nfrom dptlib.method.checkpoint import exclusive\n"
        f"with exclusive({str(lock)!r}):\n"
        f"    pathlib.Path({str(holding)!r}).touch(); time.sleep(1.0); pathlib.Path({str(built)!r}).touch()\n")])
    deadline = time.time() + 60
    while not holding.exists():
        assert time.time() < deadline and first.poll() is None, "the first process never took the lock"
        time.sleep(0.05)
    with exclusive(lock):
        assert built.exists()  # entered only after the first left
    assert first.wait(timeout=60) == 0
    assert any("waiting for stage1.lock" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with exclusive(lock):  # free again: no wait
        pass
    assert not any("waiting" in r.getMessage() for r in caplog.records)


def test_a_rerun_runs_a_finished_variant_again_from_scratch_and_replaces_its_export(tmp_path, runs, monkeypatch):
    monkeypatch.setattr(ablations, "results_dir", lambda scale: tmp_path / "results" / scale)
    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1, 2]\n"))
    ablations.run_batch(batch, "smoke", run=_fake_run({1: 1, 2: 1}), progress=False)
    folder = runs / "smoke" / "ablations" / "rank" / "lora_rank=1"
    exported = tmp_path / "results" / "smoke" / "rank" / "lora_rank=1"
    (folder / "runs" / "tune.state.safetensors").write_text("the finished run's last state")
    old_table = (exported / "generation_scores.csv.gz").read_bytes()
    result = ablations.run_batch(batch, "smoke", run=_fake_run({1: 0, 2: 0}), progress=False, rerun=["lora_rank=1"])
    assert result == {"lora_rank=1": "done", "lora_rank=2": "skipped"}
    assert not (folder / "runs" / "tune.state.safetensors").exists()  # started afresh, not resumed at its end
    assert (exported / "generation_scores.csv.gz").read_bytes() != old_table  # the new outcomes replace the old
    # on a fresh clone only the export exists: the re-run still runs
    shutil.rmtree(runs)
    assert ablations.run_batch(batch, "smoke", run=_fake_run({1: 1}), only=["lora_rank=1"], progress=False,
                               rerun=["lora_rank=1"]) == {"lora_rank=1": "done"}
    with pytest.raises(ValueError, match="no variant"):
        ablations.run_batch(batch, "smoke", run=_fake_run({1: 1}), progress=False, rerun=["lora_rank=9"])


def test_one_variant_alone_and_unknown_ones(tmp_path, runs):
    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1, 2]\n"))
    assert ablations.run_batch(batch, "smoke", only=["lora_rank=2"], run=lambda *a: None, progress=False) == {"lora_rank=2": "done"}
    with pytest.raises(ValueError, match="no variant"):
        ablations.run_batch(batch, "smoke", only=["lora_rank=3"], run=lambda *a: None, progress=False)


def test_a_finished_run_records_the_analysis_plan_it_was_made_under(tmp_path, runs):
    """done.json holds the sha256 of docs/analysis-plan.md as it was when the run finished."""
    import hashlib

    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1]\n"))
    ablations.run_batch(batch, "smoke", run=lambda *a: None, progress=False)
    done = json.loads((runs / "smoke" / "ablations" / "rank" / "lora_rank=1" / "done.json").read_text())
    plan = ablations.repo_root() / ablations.ANALYSIS_PLAN
    assert done["analysis_plan"] == hashlib.sha256(plan.read_bytes()).hexdigest()


def test_a_variant_runs_its_notebook_by_papermill_into_its_own_folder(tmp_path, runs, capsys):
    """The real run: 00_toy_world at the smoke scale, its runs folder inside the variant's."""
    pytest.importorskip("papermill")
    batch = ablations.load_batch(_write(tmp_path / "oracle.yaml", "notebook: 00_toy_world\nsweep: seed\nvalues: [1]\n"))
    assert ablations.run_batch(batch, "smoke", progress=False) == {"seed=1": "done"}
    folder = runs / "smoke" / "ablations" / "oracle" / "seed=1"
    assert (folder / "00_toy_world.ipynb").exists() and (folder / "runs" / "smoke" / "toyworld").is_dir()
    assert json.loads((folder / "done.json").read_text())["parameters"] == {"seed": 1, "scale": "smoke"}


def _fake_run(correct_by_variant):
    """A stub of one variant's notebook: writes the files ablation_variant writes, with every image
    (2 prompts x 2 seeds, one cell) and every ITM query (4) right or wrong as given."""
    def run(notebook, output, parameters, runs_folder):
        rate = correct_by_variant[parameters["lora_rank"]]
        folder = runs_folder / parameters["scale"]
        folder.mkdir(parents=True)
        images = pd.DataFrame({"method": "plain", "cell": "toy-cc (ID)", "prompt": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                               "correct": [rate] * 4, "binding": [rate] * 4, "clip_score": [30.0] * 4})
        images.to_csv(folder / "generation_scores.csv", index=False)
        pd.DataFrame({"task": "ITM overall", "item": range(4), "correct": [bool(rate)] * 4}).to_csv(
            folder / "discrimination_outcomes.csv", index=False)
        (folder / "metrics.json").write_text(json.dumps({"discrimination": {"ITM overall": 100.0 * rate},
                                                         "generation": {"plain": {"frechet": 1.5}}}))
    return run


def test_results_are_collected_and_compared_paired_with_the_reference(tmp_path, runs):
    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1, 2, 4]\n"))
    ablations.run_batch(batch, "smoke", only=["lora_rank=1", "lora_rank=2"], run=_fake_run({1: 0, 2: 1}), progress=False)
    results = ablations.collect(batch, "smoke")
    assert results.missing == ["lora_rank=4"] and list(results.metrics.index) == ["lora_rank=1", "lora_rank=2"]
    assert results.metrics.loc["lora_rank=2", "ITM overall"] == 100.0 and results.metrics.loc["lora_rank=1", "Fréchet (plain)"] == 1.5
    generation, discrimination = ablations.compare_variants(results, "lora_rank=1")
    # every image of rank 2 is right where rank 1's twin is wrong: +100 points on 4 pairs
    assert generation.loc[("toy-cc (ID)", "lora_rank=2"), "diff"] == 100.0 and generation.loc[("toy-cc (ID)", "lora_rank=2"), "n"] == 4
    assert discrimination.loc[("ITM overall", "lora_rank=2"), "diff"] == 100.0
    table = report.variant_table(generation, discrimination, differences=True)
    assert list(table.index) == ["lora_rank=1", "lora_rank=2"] and list(table.columns) == ["ITM overall", "toy-cc (ID)"]
    assert table.loc["lora_rank=1", "toy-cc (ID)"] == "—" and table.loc["lora_rank=2", "ITM overall"].startswith("+100.0")
    means, differences = report.save_variant_tables(generation, discrimination, "tab_rank", "LoRA rank", "smoke")
    assert differences.equals(table) and means.loc["lora_rank=2", "ITM overall"].startswith("100.0")
    saved = pd.read_csv(runs / "smoke" / "figures" / "tab_rank_differences.csv", keep_default_na=False).set_index("LoRA rank")
    assert saved.loc["lora_rank=2", "ITM overall"] == table.loc["lora_rank=2", "ITM overall"]
    assert ablations.save_batch_figure(generation, discrimination, list(means.index), "fig_rank", "smoke") is None  # no path shown
    assert (figures_dir("smoke") / "fig_rank.png").stat().st_size > 0
    claim = ablations.variant_claim(results, "rank 2 beats rank 1", "+1", "lora_rank=1", "lora_rank=2", "toy-cc (ID)")
    assert claim["n"] == 4 and claim["toy (difference, 95 % interval)"].startswith("+100.0")
    assert ablations.variant_claim(results, "rank 4 beats rank 1", "+1", "lora_rank=1", "lora_rank=4", "toy-cc (ID)") is None
    assert ablations.variant_claim(results, "ITM", "+1", "lora_rank=1", "lora_rank=2", "ITM overall")["n"] == 4


def test_two_files_of_one_ablation_combine_into_one_table_with_their_shared_reference_once(tmp_path, runs):
    # a split ablation (blocks + blocks_fused): both files run the base model, the table holds it once
    first = ablations.load_batch(_write(tmp_path / "single.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1, 2]\n"))
    second = ablations.load_batch(_write(tmp_path / "fused.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1, 4, 8]\n"))
    ablations.run_batch(first, "smoke", run=_fake_run({1: 0, 2: 1}), progress=False)
    ablations.run_batch(second, "smoke", only=["lora_rank=1", "lora_rank=4"], run=_fake_run({1: 1, 4: 1}), progress=False)
    single, fused = ablations.collect(first, "smoke"), ablations.collect(second, "smoke")
    both = ablations.combine(single, fused)
    assert list(both.metrics.index) == ["lora_rank=1", "lora_rank=2", "lora_rank=4"] and both.missing == ["lora_rank=8"]
    # the shared variant's rows come from the first file only (the second's run of it scored differently)
    assert both.metrics.loc["lora_rank=1", "ITM overall"] == single.metrics.loc["lora_rank=1", "ITM overall"] == 0.0
    assert both.generation.groupby("variant").size().to_dict() == {"lora_rank=1": 4, "lora_rank=2": 4, "lora_rank=4": 4}
    assert both.discrimination.groupby("variant").size().to_dict() == {"lora_rank=1": 4, "lora_rank=2": 4, "lora_rank=4": 4}
    generation, _ = ablations.compare_variants(both, "lora_rank=1")
    assert generation.loc[("toy-cc (ID)", "lora_rank=4"), "diff"] == 100.0  # paired with the first file's reference
    assert ablations.combine(single).metrics.equals(single.metrics)


def test_a_saved_interval_cell_reads_back_as_its_numbers():
    assert report.parse_interval(stats.format_interval(32.24, 28.1, 36.44)) == (32.2, 28.1, 36.4)
    assert all(math.isnan(v) for v in report.parse_interval("")) and math.isnan(report.parse_interval("—")[0])
    table = pd.DataFrame({"ITM overall": ["", "81.4 [78.9, 83.8]"], "toy-cc (ID)": ["37.0 [28.0, 47.0]", ""]},
                         index=["base", "lora_rank=4"])
    long = report.interval_long(table)
    assert list(long.index) == [("ITM overall", "lora_rank=4"), ("toy-cc (ID)", "base")]
    assert long.loc[("ITM overall", "lora_rank=4")].tolist() == [81.4, 78.9, 83.8]


def test_a_batch_figure_has_a_panel_per_metric_showing_only_its_settings(runs):
    """Fig. 3 as the paper draws it: the swept setting on x (a "+ SC" variant at its plain twin's
    x), per panel only the settings it has, the base model a line rather than a tick, the sweep
    joined in its numeric order, other recipes apart at the right."""
    cells = {("ITM overall", "lora_rank=4"): 80, ("ITM overall", "lora_rank=1"): 70, ("ITM overall", "other"): 60,
             ("toy-cc (ID)", "base"): 30, ("toy-cc (ID)", "lora_rank=4 + SC"): 40, ("toy-cc (ID)", "lora_rank=1 + SC"): 35}
    frame = pd.DataFrame([(p, v, m, m - 5, m + 5) for (p, v), m in cells.items()],
                         columns=["panel", "variant", "mean", "low", "high"]).set_index(["panel", "variant"])
    order = ["base", "lora_rank=4", "lora_rank=4 + SC", "lora_rank=1", "lora_rank=1 + SC", "other"]
    figure = ablations.batch_figure(frame, order, "tab7_rank")
    itm, generation = figure.axes[:2]
    assert [t.get_text() for t in itm.get_xticklabels()] == ["1", "4", "other"]  # by rank, the rest apart
    assert [t.get_text() for t in generation.get_xticklabels()] == ["1", "4"]  # no "base" tick
    assert itm.get_title() == "ITM overall" and itm.get_xlabel() == "LoRA rank"
    joined = [line for line in itm.get_lines() if len(line.get_xdata()) == 2 and line.get_linestyle() == "-"]
    assert [list(line.get_ydata()) for line in joined] == [[70, 80]]  # the sweep's line skips "other"
    assert any(line.get_linestyle() == "--" and list(line.get_ydata()) == [30, 30] for line in generation.get_lines())
    # the toy's saved table redrawn alone, no run: a new design reaches runs made before it
    table = pd.DataFrame({"ITM overall": ["", "81.4 [78.9, 83.8]", ""], "toy-cc (ID)": ["37.0 [28.0, 47.0]", "", "40.0 [30.0, 50.0]"]},
                         index=pd.Index(["base", "lora_rank=4", "lora_rank=4 + SC"], name="LoRA rank"))
    report.save_table(table, "tab7_rank", "smoke")
    assert ablations.redraw_figures("smoke") == ["tab7_rank"]
    assert (figures_dir("smoke") / "tab7_rank.png").stat().st_size > 0


def test_the_readme_section_between_markers_is_replaced(tmp_path):
    readme = _write(tmp_path / "README.md", "intro\n<!-- claims:begin -->\nold\n<!-- claims:end -->\nrest\n")
    report.replace_between_markers(readme, "claims", "| new |\n")
    assert readme.read_text() == "intro\n<!-- claims:begin -->\n| new |\n<!-- claims:end -->\nrest\n"
    with pytest.raises(ValueError, match="expected one"):
        report.replace_between_markers(readme, "times", "x")


def test_batch_times_are_measured_here_or_kept_from_the_recorded_table(tmp_path, runs):
    """09's cost table: a batch with finished variants here is timed from them (dated); one with
    none keeps the row an earlier run recorded; one never recorded reads 0 finished."""
    batch = ablations.load_batch(ablations.repo_root() / "papermill_params" / "ablations" / "trainable.yaml")

    def run(notebook, output, parameters, runs_folder):
        (runs_folder / "smoke").mkdir(parents=True)
        (runs_folder / "smoke" / "metrics.json").write_text(json.dumps({"machine": "cpu: 2 threads"}))

    assert ablations.run_batch(batch, "smoke", only=["base"], run=run, progress=False) == {"base": "done"}
    recorded = _write(tmp_path / "ablation_times.csv", "batch,variants,finished,minutes,machine\n"
                      "trainable,3,3,37.3,cpu: 2 threads\nblocks,12,12,52.9,cpu: 2 threads\n")
    times = ablations.batch_times("smoke", recorded=recorded)
    assert list(times.columns) == ["variants", "finished", "minutes", "machine", "measured"]
    assert times.loc["trainable", "finished"] == 1 and times.loc["trainable", "minutes"] < 1  # measured here, not the recorded 37.3
    assert times.loc["trainable", "measured"] == time.strftime("%Y-%m-%d")
    assert times.loc["blocks"].tolist() == [12, 12, 52.9, "cpu: 2 threads", "earlier run"]
    assert times.loc["mse", "finished"] == 0 and times.loc["mse", "measured"] == ""
    assert ablations.batch_times("smoke").loc["blocks", "finished"] == 0  # nothing recorded: nothing kept


def test_reproduce_runs_one_ablation_batch(monkeypatch):
    from dptlib.experiments import reproduce

    seen = []
    monkeypatch.setattr(ablations, "main", lambda argv: seen.append(argv) or 0)
    assert reproduce.main(["--ablation", "blocks", "--scale", "smoke", "--variant", "up1"]) == 0
    assert seen == [["blocks", "--scale", "smoke", "--variant", "up1"]]


def _printed(notebook) -> str:
    """Everything an executed notebook's cells printed."""
    cells = json.loads(notebook.read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c["outputs"])


def test_variants_that_change_only_stage_2_share_one_stage_1_adapter(tmp_path, runs):
    """The real worker notebook at the smoke scale, twice: the second variant finds the first's adapter."""
    pytest.importorskip("papermill")
    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: ablation_variant\nshared: {generate: false}\n"
                                        "sweep: lora_rank\nvalues: [1, 2]\n"))
    assert ablations.run_batch(batch, "smoke", progress=False) == {"lora_rank=1": "done", "lora_rank=2": "done"}
    stage1 = list((ablations.shared_dir("smoke") / "stage1").iterdir())
    assert len(stage1) == 1 and (stage1[0] / "adapter.safetensors").exists()
    printed = [_printed(ablations.variant_dir(batch, name, "smoke") / "ablation_variant.ipynb") for name in batch.variants]
    assert "reusing" not in printed[0] and f"stage 1: reusing {stage1[0].name}" in printed[1]
    results = ablations.collect(batch, "smoke")
    assert results.missing == [] and set(results.discrimination["task"]) == {"ITM overall", "REC P@1"}
    assert results.generation.empty  # generate: false


def test_a_variants_probe_lr_reaches_its_stage_1(tmp_path, runs):
    """``probe_lr`` (the diagnosis of 06) trains stage 1 at that rate, in its own adapter folder; left
    out, the scale's preset rate is used."""
    pytest.importorskip("papermill")
    batch = ablations.load_batch(_write(tmp_path / "lr.yaml", "notebook: ablation_variant\nshared: {generate: false, tune_steps: 0}\n"
                                        "variants:\n  preset: {}\n  slow: {probe_lr: 3.0e-4}\n"))
    assert ablations.run_batch(batch, "smoke", progress=False) == {"preset": "done", "slow": "done"}
    keys = [json.loads(p.read_text())["config"] for p in (ablations.shared_dir("smoke") / "stage1").glob("*/key.json")]
    preset_lr = ProbeConfig.preset("smoke").lr
    assert sorted("lr=0.0003," in k for k in keys) == [False, True]
    assert sum(f"lr={preset_lr}," in k for k in keys) == 1 and preset_lr != 3e-4


def test_training_seeds_repeat_every_trained_variant_seed_major(tmp_path):
    batch = ablations.load_batch(_write(tmp_path / "seeds.yaml", "notebook: ablation_variant\nreference: base\nvariants:\n"
                                        "  base: {probe_steps: 0}\n  dpt: {}\n  lora: {trainable: lora}\ntraining_seeds: [0, 3]\n"))
    assert list(batch.variants) == ["base", "dpt-s0", "lora-s0", "dpt-s3", "lora-s3"]
    assert batch.variants["lora-s3"] == {"trainable": "lora", "training_seed": 3} and batch.variants["base"] == {"probe_steps": 0}
    assert [ablations.split_seed(name) for name in batch.variants] == [("base", None), ("dpt", 0), ("lora", 0), ("dpt", 3), ("lora", 3)]
    assert ablations.split_seed("lr-sweep") == ("lr-sweep", None)
    # a variant with its own training seed is kept as it is, after the repeated ones
    late = ablations.load_batch(_write(tmp_path / "seeds.yaml", "notebook: ablation_variant\nreference: base\nvariants:\n"
                                       "  base: {probe_steps: 0}\n  dpt: {}\n  ctl-s1: {shuffle_pairs: true, training_seed: 1}\n"
                                       "training_seeds: [0, 1]\n"))
    assert list(late.variants) == ["base", "dpt-s0", "dpt-s1", "ctl-s1"]
    for bad in ("[]", "[0, 0]", "[-1]", "3", "[a]"):
        with pytest.raises(ValueError, match="training_seeds"):
            ablations.load_batch(_write(tmp_path / "seeds.yaml", f"notebook: ablation_variant\nvariants:\n  dpt: {{}}\ntraining_seeds: {bad}\n"))


def test_the_seeds_batch_file_names_the_core_arms():
    batch = ablations.load_batch(ablations.repo_root() / "papermill_params" / "ablations" / "seeds.yaml").for_scale("toy")
    assert batch.reference == "base" and len(batch.variants) == 1 + 3 * 5
    assert {ablations.split_seed(name)[0] for name in batch.variants} == {"base", "dpt", "lora", "shuffled"}
    # every trained arm has the same budget and test sets; only the training seed differs between seeds
    for k in range(5):
        assert batch.variants[f"dpt-s{k}"] == {**batch.variants["dpt-s0"], "training_seed": k}
    assert batch.variants["shuffled-s2"]["probe_steps"] == batch.variants["dpt-s2"]["probe_steps"] == 3000


def test_finished_outcomes_are_exported_and_read_back_without_runs(tmp_path, runs, monkeypatch):
    """A finished variant's outcomes go to the results folder (gzipped, byte-stable); with runs/
    gone, collect() reads them from there and run_batch() skips the variant."""
    monkeypatch.setattr(ablations, "results_dir", lambda scale: tmp_path / "results" / scale)
    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1, 2]\n"))
    ablations.run_batch(batch, "smoke", run=_fake_run({1: 0, 2: 1}), progress=False)
    exported = tmp_path / "results" / "smoke" / "rank" / "lora_rank=2"
    assert sorted(p.name for p in exported.iterdir()) == ["discrimination_outcomes.csv.gz", "done.json", "generation_scores.csv.gz",
                                                         "metrics.json"]
    before = ablations.collect(batch, "smoke")
    assert before.missing == []
    first_bytes = (exported / "generation_scores.csv.gz").read_bytes()
    shutil.rmtree(runs)
    after = ablations.collect(batch, "smoke")
    assert after.missing == [] and after.generation.equals(before.generation) and after.discrimination.equals(before.discrimination)
    assert after.metrics.drop(columns="seconds").equals(before.metrics.drop(columns="seconds"))
    called = []
    assert ablations.run_batch(batch, "smoke", run=lambda *a: called.append(a), progress=False) == {"lora_rank=1": "skipped",
                                                                                                 "lora_rank=2": "skipped"}
    assert not called and (exported / "generation_scores.csv.gz").read_bytes() == first_bytes


def _finished_variant(tmp_path, digest):
    """A variant folder as a finished toy run leaves it: metrics, one outcome table, done.json."""
    folder = tmp_path / "variant"
    (folder / "runs" / "toy").mkdir(parents=True)
    (folder / "runs" / "toy" / "metrics.json").write_text("{}")
    (folder / "runs" / "toy" / "generation_scores.csv").write_text("prompt,correct\na,1\n")
    (folder / "done.json").write_text(json.dumps({"hash": digest, "seconds": 1}))
    return folder


def test_a_run_exported_twice_gives_the_same_bytes(tmp_path):
    folder = _finished_variant(tmp_path, "x")
    ablations.export_outcomes(folder, tmp_path / "one", "toy")
    time.sleep(1.1)
    ablations.export_outcomes(folder, tmp_path / "two", "toy")
    assert (tmp_path / "one" / "generation_scores.csv.gz").read_bytes() == (tmp_path / "two" / "generation_scores.csv.gz").read_bytes()


def test_a_variant_finished_before_its_export_is_exported_when_skipped(tmp_path, runs, monkeypatch):
    monkeypatch.setattr(ablations, "results_dir", lambda scale: tmp_path / "results" / scale)
    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1]\n"))
    ablations.run_batch(batch, "smoke", run=_fake_run({1: 1}), progress=False)
    exported = tmp_path / "results" / "smoke" / "rank" / "lora_rank=1"
    shutil.rmtree(exported)  # as if killed between finishing and exporting
    assert ablations.run_batch(batch, "smoke", run=_fake_run({1: 1}), progress=False) == {"lora_rank=1": "skipped"}
    assert (exported / "done.json").exists() and (exported / "generation_scores.csv.gz").exists()


def test_a_re_export_leaves_no_table_of_the_earlier_run(tmp_path):
    folder = _finished_variant(tmp_path, "old")
    ablations.export_outcomes(folder, tmp_path / "out", "toy")
    (folder / "runs" / "toy" / "generation_scores.csv").unlink()  # the new run writes no generation table
    (folder / "done.json").write_text(json.dumps({"hash": "new", "seconds": 1}))
    ablations.export_outcomes(folder, tmp_path / "out", "toy")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["done.json", "metrics.json"]
    assert not (tmp_path / "out.partial").exists()


def test_a_seeded_difference_pairs_variants_by_training_seed():
    """Base always wrong on 20 queries; the other arm right on 10, 6 and 8 of them at seeds 0-2:
    +40 points, per seed +50, +30, +40, all positive; a seed only one arm has is left out."""
    frames = []
    for seed, right in ((0, 10), (1, 6), (2, 8)):
        frames.append(pd.DataFrame({"variant": f"raw-s{seed}", "task": "ITM overall", "item": range(20), "correct": False}))
        frames.append(pd.DataFrame({"variant": f"norm-s{seed}", "task": "ITM overall", "item": range(20),
                                    "correct": [i < right for i in range(20)]}))
    frames.append(pd.DataFrame({"variant": "norm-s3", "task": "ITM overall", "item": range(20), "correct": True}))
    outcomes = pd.concat(frames)
    raw = {s: f"raw-s{s}" for s in range(3)}
    found = ablations.seeded_difference(outcomes, raw, {s: f"norm-s{s}" for s in range(4)}, "ITM overall")
    assert found["difference"] == pytest.approx(40.0) and found["per_run"] == pytest.approx([50.0, 30.0, 40.0])
    assert found["n_runs"] == 3 and found["low"] > 0 and found["verdict"] == "holds"
    assert ablations.seeded_difference(outcomes, raw, {s: f"norm-s{s}" for s in range(4)}, "ITM overall", -1)["verdict"] == "contradicted"
    assert ablations.seeded_difference(outcomes, {0: "raw-s0", 1: "raw-s1"}, {0: "norm-s0", 1: "norm-s1"}, "ITM overall")["verdict"] == "2 runs"
    with pytest.raises(ValueError, match="share no training seed"):
        ablations.seeded_difference(outcomes, {0: "raw-s0"}, {3: "norm-s3"}, "ITM overall")
    with pytest.raises(ValueError, match="no 'REC P@1' outcomes"):
        ablations.seeded_difference(outcomes, raw, raw, "REC P@1")


def test_a_treatment_table_judges_only_rows_with_three_seeds_and_adjusts_over_them():
    """Two treatments of one block: one at 3 seeds (judged, Holm over 2 tasks), one at 1 seed
    ("one run"); a treatment with no finished run has no row."""
    frames = []
    for seed, right in ((0, 10), (1, 6), (2, 8)):
        for task in ("ITM overall", "REC P@1"):
            frames.append(pd.DataFrame({"variant": f"raw-s{seed}", "task": task, "item": range(20), "correct": False}))
            frames.append(pd.DataFrame({"variant": f"a-s{seed}", "task": task, "item": range(20), "correct": [i < right for i in range(20)]}))
    frames.append(pd.DataFrame({"variant": "b-s0", "task": ["ITM overall", "REC P@1"], "item": [0, 0], "correct": True}))
    outcomes = pd.concat(frames)
    raw = {"blk": {s: f"raw-s{s}" for s in range(3)}}
    treated = {("blk", "a"): {s: f"a-s{s}" for s in range(3)}, ("blk", "b"): {0: "b-s0"}, ("blk", "c"): {0: "c-s0"}}
    table = ablations.treatment_table(outcomes, raw, treated, ["ITM overall", "REC P@1"])
    assert list(zip(table["map"], table["task"])) == [("a", "ITM overall"), ("a", "REC P@1"), ("b", "ITM overall"), ("b", "REC P@1")]
    assert list(table["verdict"]) == ["holds", "holds", "one run", "one run"]
    assert table["Holm p"].str.endswith("(of 2)").tolist() == [True, True, False, False]
    assert table["per seed"].iloc[0] == "+50.0, +30.0, +40.0"


def test_seeded_claims_judge_each_claim_over_seeds_with_holm_over_the_judged_ones():
    """Three claims on designed outcomes: 'up' beats 'base' at 3 seeds (+50, +30, +40 points:
    holds), 'down' is worse at 3 seeds but the claim expects it better (contradicted), 'single'
    has one run ("one run", no Holm p); a claim with no finished run has no row."""
    frames = []
    for seed, right in ((0, 10), (1, 6), (2, 8)):
        for variant, first in (("base", 10), ("up", 10 + right), ("down", 10 - right)):  # items below `first` are right
            frames.append(pd.DataFrame({"variant": f"{variant}-s{seed}", "task": "ITM overall", "item": range(20),
                                        "correct": [i < first for i in range(20)]}))
    frames.append(pd.DataFrame({"variant": "single-s0", "task": "ITM overall", "item": range(20), "correct": True}))
    outcomes = pd.concat(frames)
    base = {s: f"base-s{s}" for s in range(3)}
    claims = [dict(claim="up beats base", paper="+10.0 (x)", task="ITM overall", base=base, own={s: f"up-s{s}" for s in range(3)}),
              dict(claim="down beats base", paper="+1.0", task="ITM overall", base=base, own={s: f"down-s{s}" for s in range(3)}),
              dict(claim="single beats base", paper="n/a", task="ITM overall", base=base, own={0: "single-s0"}),
              dict(claim="never ran", paper="+1.0", task="ITM overall", base=base, own={0: "ghost-s0"}),
              dict(claim="no REC outcomes", paper="+1.0", task="REC P@1", base=base, own={s: f"up-s{s}" for s in range(3)}),
              dict(claim="down is worse than base", paper="-30.0", task="ITM overall", base=base, own={s: f"down-s{s}" for s in range(3)},
                   expected_sign=-1)]
    table = ablations.seeded_claims(outcomes, claims)
    assert list(table.columns) == ablations.SEEDED_CLAIM_COLUMNS
    assert list(table["claim"]) == ["up beats base", "down beats base", "single beats base", "down is worse than base"]
    assert list(table["verdict"]) == ["holds", "contradicted", "one run", "holds"]
    assert list(table["per seed"]) == ["+50.0, +30.0, +40.0", "-50.0, -30.0, -40.0", "+50.0", "-50.0, -30.0, -40.0"]
    assert list(table["seeds agreeing"]) == ["3 of 3", "3 of 3", "1 of 1", "3 of 3"]
    assert table["p (Holm)"].str.endswith("(of 3)").tolist() == [True, True, False, True]
    # +40 against +10 and -40 against +1 (sign) differ; -40 against -30 does not; no paper number: empty
    assert list(table["size vs paper"]) == ["differs > 3x", "differs > 3x", "", "within 3x"]
    assert table["toy (difference, 95 % interval)"].iloc[0].startswith("+40.0 [")
    assert list(table["n"]) == [60, 60, 20, 60]
    empty = ablations.seeded_claims(pd.DataFrame(), claims)
    assert empty.empty and list(empty.columns) == ablations.SEEDED_CLAIM_COLUMNS


def test_the_timesteps_seed_files_repeat_the_timesteps_batch_but_for_the_training_seed():
    """Tab. 10's extra training seeds are the same experiment: each variant of timesteps_seeds and
    timesteps_more_seeds has exactly the parameters of its arm in timesteps.yaml (seed 0) plus
    its training seed; together they give t = 250, 0 and 999 seeds 1-4, run on request only."""
    folder = ablations.repo_root() / "papermill_params" / "ablations"
    seed0 = ablations.load_batch(folder / "timesteps.yaml").for_scale("toy").variants
    seen = set()
    for name in ("timesteps_seeds", "timesteps_more_seeds"):
        assert name in ablations.ON_REQUEST and name not in ablations.SEEDS_BATCHES
        for variant, values in ablations.load_batch(folder / f"{name}.yaml").for_scale("toy").variants.items():
            arm, seed = ablations.split_seed(variant)
            assert seed == values["training_seed"] and seed > 0, variant
            assert {k: v for k, v in values.items() if k != "training_seed"} == seed0[arm], variant
            seen.add((arm, seed))
    assert seen == {(f"t={t}", k) for t in (250, 0, 999) for k in range(1, 5)}


def test_seed_arm_finds_a_variants_runs_at_every_training_seed():
    names = ["t=250-s2", "t=0-s1", "t=250-s1", "t=2500-s3", "t=250"]
    assert ablations.seed_arm("t=250", names) == {0: "t=250", 1: "t=250-s1", 2: "t=250-s2"}
    assert ablations.seed_arm("t=999", names) == {0: "t=999"}


def generation_results(right: dict[str, list[int]], cell="toy-nss (ID)", prompts=10, seeds=(0, 1)) -> ablations.Results:
    """Results whose plain images of variant v are right for the prompts in ``right[v]`` (every
    generation seed alike); each variant's self-corrected images all wrong."""
    rows = [{"variant": v, "method": method, "cell": cell, "prompt": f"p{i}", "seed": seed,
             "correct": float(method == "plain" and i in good)}
            for v, good in right.items() for method in ("plain", "self-corrected") for i in range(prompts) for seed in seeds]
    return ablations.Results(pd.DataFrame(index=list(right)), pd.DataFrame(rows), pd.DataFrame(), [])


def test_seeded_outcomes_put_images_beside_queries():
    results = generation_results({"base": [0, 1], "four": [0, 1, 2]})
    results.discrimination = pd.DataFrame({"variant": "four", "task": "ITM overall", "item": [0, 1], "correct": [True, False]})
    outcomes = ablations.seeded_outcomes(results)
    assert list(outcomes.columns) == ["variant", "task", "item", "cluster", "correct"]
    assert set(outcomes["variant"]) == {"base", "base + SC", "four", "four + SC"}
    images = outcomes[outcomes["task"] == "toy-nss (ID)"]
    assert len(images) == 2 * 2 * 10 * 2 and images["item"].str.fullmatch(r"p\d\|[01]").all()
    assert (images["cluster"] == images["item"].str.split("|").str[0]).all()  # a prompt with all its seeds
    queries = outcomes[outcomes["task"] == "ITM overall"]
    assert queries["item"].tolist() == queries["cluster"].tolist() == ["0", "1"]
    assert ablations.seeded_outcomes(ablations.Results(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), [])).empty


def test_seeded_claims_judge_generation_against_an_untrained_base():
    """The base model (one run, 8 of 40 prompts right) against 'four' at three training seeds,
    right on 20, 16 and 24 prompts (+30, +20, +40 points; every generation seed alike): holds. The
    interval resamples prompts, not images: two generation seeds of one prompt are one cluster."""
    right = {"base": range(8), "four": range(20), "four-s1": range(16), "four-s2": range(24)}
    outcomes = ablations.seeded_outcomes(generation_results(right, prompts=40))
    claims = [dict(claim="four beats base", paper="+6.1 BLIP-ITM", task="toy-nss (ID)", base="base",
                   own=ablations.seed_arm("four", right)),
              dict(claim="four + SC beats base", paper="+1.0", task="toy-nss (ID)", base="base",
                   own={k: f"{v} + SC" for k, v in ablations.seed_arm("four", right).items()})]
    table = ablations.seeded_claims(outcomes, claims).set_index("claim")
    assert table.loc["four beats base", "per seed"] == "+30.0, +20.0, +40.0"
    assert table.loc["four beats base", "verdict"] == "holds" and table.loc["four beats base", "n"] == 240
    assert table.loc["four + SC beats base", "per seed"] == "-20.0, -20.0, -20.0"
    assert table.loc["four + SC beats base", "verdict"] == "contradicted"
    # clustered by prompt: the same interval as one generation seed per prompt (n halves, the spread does not)
    one_seed = ablations.seeded_outcomes(generation_results(right, prompts=40, seeds=(0,)))
    halved = ablations.seeded_claims(one_seed, claims[:1]).set_index("claim")
    assert halved.loc["four beats base", "toy (difference, 95 % interval)"] == table.loc["four beats base", "toy (difference, 95 % interval)"]
    assert halved.loc["four beats base", "n"] == 120


def _checksums(root):
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_rerun_replaces_a_finished_run_only_when_it_finishes(tmp_path, runs):
    """--rerun of a finished variant: a re-run that fails, or is killed, leaves the finished run and
    its exported outcomes byte for byte as they were; one that finishes replaces both."""
    batch = ablations.load_batch(_write(tmp_path / "rank.yaml", "notebook: 02_tuning\nsweep: lora_rank\nvalues: [1]\n"))
    behaviour = {"mode": "ok", "value": 1}

    def run(notebook, output, parameters, runs_folder):
        (runs_folder / "smoke").mkdir(parents=True, exist_ok=True)
        (runs_folder / "smoke" / "partial.txt").write_text("half-way")
        if behaviour["mode"] == "fail":
            raise RuntimeError("warmup_steps must be in 0..steps (2); got 50")
        if behaviour["mode"] == "kill":
            raise KeyboardInterrupt
        (runs_folder / "smoke" / "metrics.json").write_text(json.dumps({"value": behaviour["value"]}))

    assert ablations.run_batch(batch, "smoke", run=run, progress=False) == {"lora_rank=1": "done"}
    folder = runs / "smoke" / "ablations" / "rank" / "lora_rank=1"
    exported = runs / "smoke" / "results" / "rank" / "lora_rank=1"  # results/ at the smoke scale
    before = (_checksums(folder), _checksums(exported))
    assert "metrics.json" in before[1] and "done.json" in before[0]
    behaviour["mode"] = "fail"
    result = ablations.run_batch(batch, "smoke", run=run, progress=False, rerun=["lora_rank=1"])["lora_rank=1"]
    assert result.startswith("failed: RuntimeError: warmup_steps must be in 0..steps (2); got 50; full log: ")
    assert result.endswith("lora_rank=1.rerun/error.txt")
    assert (_checksums(folder), _checksums(exported)) == before
    behaviour["mode"] = "kill"
    with pytest.raises(KeyboardInterrupt):
        ablations.run_batch(batch, "smoke", run=run, progress=False, rerun=["lora_rank=1"])
    assert (_checksums(folder), _checksums(exported)) == before
    behaviour.update(mode="ok", value=2)
    assert ablations.run_batch(batch, "smoke", run=run, progress=False, rerun=["lora_rank=1"]) == {"lora_rank=1": "done"}
    assert json.loads((folder / "runs" / "smoke" / "metrics.json").read_text()) == {"value": 2}
    assert json.loads((exported / "metrics.json").read_text()) == {"value": 2}
    assert not folder.with_name("lora_rank=1.rerun").exists() and not folder.with_name("lora_rank=1.old").exists()
    assert not (folder / "error.txt").exists()  # the failed try's log does not outlive the run that finished


def test_a_failed_notebooks_reason_is_its_exception_not_papermills_blank_line():
    from papermill.exceptions import PapermillExecutionError

    from dptlib.checks import failure_reason

    error = PapermillExecutionError(cell_index=7, exec_count=5, source="probe(...)", ename="ValueError",
                                    evalue="warmup_steps must be in 0..steps (2); got 50", traceback=["Traceback", "..."])
    assert str(error).startswith("\n")  # what the outcome line used to show: nothing
    assert failure_reason(error) == "ValueError: warmup_steps must be in 0..steps (2); got 50 (cell [5])"
    assert failure_reason(RuntimeError("\nout of memory")) == "RuntimeError: out of memory"
