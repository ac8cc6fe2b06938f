"""Notebook parameters are checked; papermill run files are valid; notebook pairs are in sync."""

from pathlib import Path

import pytest

from dptlib.config import check_parameters, resolve_scale
from dptlib.reproduce import load_runs, validate_run

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
    for path, notebook, parameters in runs:
        validate_run(ROOT / "notebooks" / f"{notebook}.ipynb", notebook, parameters)


def test_a_mistyped_run_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="allowed parameters"):
        validate_run(ROOT / "notebooks" / "00_toy_world.ipynb", "00_toy_world", {"sead": 1})


@pytest.mark.parametrize("script", sorted((ROOT / "notebooks").glob("*.py")), ids=lambda p: p.stem)
def test_notebook_pairs_are_in_sync(script):
    import jupytext

    paired = script.with_suffix(".ipynb")
    assert paired.exists(), f"{script.name} has no paired .ipynb (run make sync)"
    a, b = jupytext.read(script), jupytext.read(paired)
    assert [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells]
    assert b.metadata["kernelspec"]["name"] == "dpt"
    assert any("parameters" in c.metadata.get("tags", []) for c in b.cells if c.cell_type == "code")
