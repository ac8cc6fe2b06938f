"""A notebook runs on what its parameters name, not on the shipped toy world: 01_probing at the
smoke scale, run by papermill as ``make reproduce`` runs it, on a randomly initialised pipeline
this test writes (text width 24; the toy model's is wider) and on data read through a manifest
(the toy world exported in the COCO / MDETR formats, read as real data: no oracle)."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_01_probing_runs_on_the_model_and_data_its_parameters_name(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    from dptlib.config import TOY_SD_DIR
    from dptlib.toy.data import write_manifest
    from dptlib.toy.model import build_random_pipeline
    from dptlib.toy.world import ToyWorld, ToyWorldConfig, export_world

    model_dir = tmp_path / "random-sd"
    build_random_pipeline(text_width=24, seed=7).save_pretrained(model_dir)
    paths = export_world(ToyWorld(ToyWorldConfig(seed=3)), tmp_path / "exported", splits=("train", "val", "test"), n=24)
    manifest = write_manifest(paths, tmp_path / "exported" / "manifest.yaml")
    monkeypatch.setenv("DPT_RUNS_DIR", str(tmp_path / "runs"))
    executed = tmp_path / "01_probing.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "01_probing.ipynb"), str(executed),
                               parameters={"scale": "smoke", "model": str(model_dir), "data": str(manifest)},
                               kernel_name="dpt", cwd=str(ROOT / "notebooks"), progress_bar=False)
    saved = json.loads((tmp_path / "runs" / "smoke" / "probe" / "config.json").read_text())
    assert saved["model"] == str(model_dir)
    assert saved["text_dim"] == 24 != json.loads((TOY_SD_DIR / "text_encoder" / "config.json").read_text())["hidden_size"]
    outputs = json.dumps(json.loads(executed.read_text())["cells"])
    assert "no oracle to judge the mined negatives" in outputs  # the manifest's data, not the toy world's
    assert not (tmp_path / "runs" / "smoke" / "toyworld").exists()
