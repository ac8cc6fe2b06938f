"""Notebook parameters are checked; papermill run files are valid; notebook pairs are in sync."""

from pathlib import Path

import pytest

from dptlib.checks import check_parameters
from dptlib.config import progress_bars, resolve_scale
from dptlib.experiments.reproduce import load_runs, parse_overrides, strip_progress, validate_run

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_parameter_names_it_and_the_allowed_ones():
    with pytest.raises(ValueError) as error:
        check_parameters("00_toy_world", {"n_oracle_scene": 10})
    assert "n_oracle_scene" in str(error.value) and "n_oracle_scenes" in str(error.value)


def test_wrong_type_and_unknown_scale_and_notebook():
    with pytest.raises(ValueError, match="image_size"):
        check_parameters("00_toy_world", {"image_size": "32"})
    with pytest.raises(ValueError, match="unknown scale"):
        check_parameters("00_toy_world", {"scale": "huge"})
    with pytest.raises(ValueError, match="unknown notebook"):
        check_parameters("99_nothing", {})


def test_presets_fill_unset_values(monkeypatch):
    monkeypatch.setenv("DPT_SCALE", "smoke")
    assert resolve_scale() == "smoke"
    params = check_parameters("00_toy_world", {"n_oracle_scenes": None})
    assert params.scale == "smoke" and params.n_oracle_scenes == 40
    params = check_parameters("00_toy_world", {"scale": "toy", "n_oracle_scenes": 7})
    assert params.n_oracle_scenes == 7 and params.n_benchmark_prompts == 300


def test_every_papermill_run_file_is_valid():
    runs = load_runs(ROOT / "papermill_params")
    assert runs
    for _, notebook, parameters in runs:
        validate_run(notebook, parameters)


def test_a_mistyped_run_file_is_refused():
    with pytest.raises(ValueError, match="allowed parameters"):
        validate_run("00_toy_world", {"sead": 1})


def test_overrides_are_read_as_yaml_and_checked():
    assert parse_overrides(["retrain=true", "seeds=[0, 1]", "n_prompts = 10"]) == {"retrain": True, "seeds": [0, 1], "n_prompts": 10}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_overrides(["retrain"])
    validate_run("00b_base_model", parse_overrides(["retrain=true"]))
    with pytest.raises(ValueError):
        validate_run("00b_base_model", parse_overrides(["retrian=true"]))


@pytest.mark.parametrize("script", sorted([*(ROOT / "notebooks").glob("*.py"), *(ROOT / "notebooks" / "paper").glob("*.py")]),
                         ids=lambda p: p.parent.name + "/" + p.stem)
def test_notebook_pairs_are_in_sync(script):
    jupytext = pytest.importorskip("jupytext", reason="a dev tool (make setup installs it; a bare GPU image may lack it)")

    paired = script.with_suffix(".ipynb")
    assert paired.exists(), f"{script.name} has no paired .ipynb (run make sync)"
    a, b = jupytext.read(script), jupytext.read(paired)
    assert [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells]
    assert b.metadata["kernelspec"]["name"] == "dpt"
    assert any("parameters" in c.metadata.get("tags", []) for c in b.cells if c.cell_type == "code")


def test_saved_tables_keep_row_labels_and_flatten_columns(monkeypatch, tmp_path):
    import pandas as pd

    from dptlib.experiments import report

    monkeypatch.setattr(report, "figures_dir", lambda scale: tmp_path)
    sweep = pd.DataFrame({"correct": [14.04, 7.01]}, index=pd.Index([0.0, 0.03], name="eta"))
    _, md = report.save_table(sweep, "sweep", "smoke", floatfmt=".1f")
    rows = [line.split("|")[1:3] for line in md.read_text().splitlines()[2:]]
    assert [(a.strip(), b.strip()) for a, b in rows] == [("0", "14.0"), ("0.03", "7.0")]
    columns = pd.MultiIndex.from_tuples([("mean", "correct"), ("std", "correct")])
    table = pd.DataFrame([[1.0, 0.5]], index=pd.Index(["toy-cc"], name="benchmark"), columns=columns)
    csv, _ = report.save_table(table, "flat", "smoke")
    assert list(pd.read_csv(csv).columns) == ["benchmark", "mean correct", "std correct"]


def test_notebook_parameters_read_the_parameters_cell_namespace():
    from dptlib.checks import declared_parameters, notebook_parameters

    namespace = dict(declared_parameters("03_self_correction"), other_variable="not a parameter")
    namespace.update(refresh_every=2, seed=3)
    params = notebook_parameters("03_self_correction", namespace, scale="smoke")
    assert params.refresh_every == 2 and params.seed == 3 and params.etas == [0.0, 0.1]  # the smoke preset fills None
    assert not hasattr(params, "other_variable")
    del namespace["refresh_every"]
    with pytest.raises(ValueError, match="refresh_every"):
        notebook_parameters("03_self_correction", namespace)
    namespace["refresh_every"] = "2"
    with pytest.raises(ValueError, match="refresh_every"):
        notebook_parameters("03_self_correction", namespace)


def test_each_parameter_is_declared_once_in_its_notebook():
    """The parameters cell is the declaration; the presets only give values, for declared names."""
    from dptlib.checks import declared_parameters
    from dptlib.config import PRESETS

    for notebook, presets in PRESETS.items():
        declared = declared_parameters(notebook)
        for scale, values in presets.items():
            assert set(values) <= set(declared), (notebook, scale, set(values) - set(declared))
        script = (ROOT / "notebooks" / f"{notebook}.py").read_text()
        assert f'notebook_parameters("{notebook}", globals())' in script


@pytest.mark.parametrize("script", sorted((ROOT / "notebooks").glob("*.py")), ids=lambda p: p.stem)
def test_bootstrapped_error_bars_are_seeded(script):
    """seaborn draws a new bootstrap on every call unless given ``seed``: a figure with ``ci``
    error bars would then differ from run to run (and from the committed one)."""
    import ast

    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", None) == "sns":
            keywords = {k.arg: k.value for k in node.keywords}
            errorbar = keywords.get("errorbar")
            bootstraps = isinstance(errorbar, ast.Tuple) and getattr(errorbar.elts[0], "value", None) == "ci"
            assert not bootstraps or "seed" in keywords, f"{script.name}:{node.lineno}: sns.{node.func.attr} bootstraps without seed="


def _sanitized(text: str) -> str:
    """``text`` as strict nbval (``make verify``) compares it, through nbval's own parser."""
    import re

    from nbval.plugin import get_sanitize_patterns

    for regex, replace in get_sanitize_patterns((ROOT / "notebooks" / "nbval_sanitize.cfg").read_text()):
        text = re.sub(regex, replace, text)
    return text


def test_verify_ignores_where_the_clone_lies_and_how_long_it_took_but_not_a_number():
    """A fresh clone prints its own .venv path in warnings and its own times; a result must still differ."""
    here = ("/work/main/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found.\n"
            "stage 1: 312.4 s, 48 ms a step, ITM 79.8 %\n"
            "PosixPath('/work/main/figures/tab3.md')")
    elsewhere = ("/tmp/tmp.x1/dpt/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found.\n"
                 "stage 1: 287 s, 51.5 ms a step, ITM 79.8 %\n"
                 "PosixPath('/tmp/tmp.x1/dpt/figures/tab3.md')")
    assert _sanitized(here) == _sanitized(elsewhere)
    assert _sanitized(here) != _sanitized(here.replace("ITM 79.8", "ITM 79.9"))
    assert _sanitized(here) != _sanitized(here.replace("tqdm/auto.py", "tqdm/std.py"))


def test_progress_noise_is_stripped_and_everything_else_kept():
    """What write-back removes from an executed notebook: tqdm bars (widgets and stderr lines),
    the widget state, tqdm's IProgress warning; a real warning and the results stay."""
    import nbformat

    bar = {"application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2, "version_minor": 0},
           "text/plain": "generate:   0%|          | 0/4 [00:00<?, ?it/s]"}
    cell = nbformat.v4.new_code_cell("run()", outputs=[
        nbformat.v4.new_output("display_data", data=bar),
        nbformat.v4.new_output("stream", name="stderr", text="\radapter_layers: 100%|██████████| 8/8 [00:00<00:00, 2636.89it/s]"),
        nbformat.v4.new_output("stream", name="stderr", text="\n"),
        nbformat.v4.new_output("stream", name="stderr", text=".../tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update\n"
                                                              "  from .autonotebook import tqdm as notebook_tqdm\n"),
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: torch.meshgrid: pass the indexing argument\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "ITM 81.4 %"}, execution_count=1),
    ])
    quiet = nbformat.v4.new_code_cell("x = 1", outputs=[nbformat.v4.new_output("stream", name="stdout", text="\n")])
    nb = nbformat.v4.new_notebook(cells=[cell, quiet], metadata={"widgets": {"state": {}}, "language_info": {"name": "python"}})
    assert strip_progress(nb) == 3
    assert [o.get("text", o.get("data", {}).get("text/plain")) for o in nb.cells[0].outputs] == [
        "UserWarning: torch.meshgrid: pass the indexing argument\n", "ITM 81.4 %"]
    assert nb.cells[1].outputs[0]["text"] == "\n"  # a cell without bars keeps even its blank line
    assert "widgets" not in nb.metadata and nb.metadata["language_info"] == {"name": "python"}


def test_progress_bars_follow_tqdm_disable(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_bars() and not progress_bars(False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress_bars() and not progress_bars(True)
