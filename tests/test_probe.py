"""Stage 1 end to end on a tiny random pipeline: data, mining, septuples, probe, resume, metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dptlib.data import mine_hard_negatives, prepare_discrimination_data, sample_septuple
from dptlib.metrics import DPTScorer, itm_accuracy, itm_test_set, rec_precision
from dptlib.toyworld import ToyWorld, ToyWorldConfig, export_world
from dptlib.train import ProbeConfig, cache_latents, load_adapter, probe

ROOT = Path(__file__).resolve().parent.parent


def tiny_backbone():
    """A randomly initialised toy-sized pipeline: enough to test the plumbing, no training."""
    from dptlib.backbone import Backbone
    from dptlib.toymodel import build_random_pipeline

    return Backbone(build_random_pipeline())


def tiny_data(root: Path, n: int = 12):
    world = ToyWorld(ToyWorldConfig())
    paths = export_world(world, root, splits=("train",), n=n)["train"]

    def embed(images, texts):  # a deterministic stand-in for CLIP: random but fixed projections
        g = torch.Generator().manual_seed(0)
        image_emb = torch.nn.functional.normalize(images.flatten(1) @ torch.randn(images[0].numel(), 8, generator=g), dim=-1)
        text_emb = torch.nn.functional.normalize(torch.randn(len(texts), 8, generator=g), dim=-1)
        return image_emb, text_emb

    return prepare_discrimination_data(paths["captions"], paths["refexp"], paths["images"], embed, k_captions=5, k_images=3)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    return tiny_backbone(), tiny_data(tmp_path_factory.mktemp("data"))


def test_mined_negatives_exclude_the_images_own_captions(setting):
    _, data = setting
    for image, negatives in enumerate(data.hard_captions):
        assert not (data.caption_image[negatives] == image).any()
    for caption, negatives in enumerate(data.hard_images):
        assert not (negatives == data.caption_image[caption]).any()
    # ranking is by similarity: hand-made embeddings
    image_emb = torch.eye(3)
    caption_emb = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0.5, 0.5, 0], [0, 0, 1.0]])
    caption_emb = torch.nn.functional.normalize(caption_emb, dim=-1)
    hard_c, hard_i = mine_hard_negatives(image_emb, caption_emb, torch.tensor([0, 1, 1, 2, 2]), k_captions=2, k_images=1)
    assert hard_c[0].tolist() == [1, 3]  # image 0's nearest captions not its own (caption 0)
    assert hard_i[0].tolist() == [1]


def test_septuples_are_well_formed(setting):
    _, data = setting
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = sample_septuple(data, rng)
        assert int(data.expression_image[s.expression]) == s.image == int(data.caption_image[s.caption])
        assert int(data.caption_image[s.hard_caption]) != s.image and s.hard_image != s.image
        assert s.random_image not in (s.image, s.hard_image) and int(data.caption_image[s.random_caption]) != s.image


def test_probe_trains_and_is_deterministic(setting, tmp_path):
    backbone, data = setting
    config = ProbeConfig.preset("smoke", steps=4)
    log = probe(config, data, tmp_path / "a", backbone=backbone, progress=False)["log"]
    assert len(log) == 4 and all(np.isfinite(e["loss"]) and e["matching"] > 0 and e["grounding"] > 0 for e in log)
    assert json.loads((tmp_path / "a" / "log.json").read_text()) == log
    probe(config, data, tmp_path / "b", backbone=backbone, progress=False)
    a, _, _ = load_adapter(tmp_path / "a")
    b, _, _ = load_adapter(tmp_path / "b")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    fresh = ProbeConfig.preset("smoke")
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(),
               __import__("dptlib.train", fromlist=["build_adapter"]).build_adapter(fresh, backbone)[0].state_dict().values()))


def test_in_batch_negatives_run(setting, tmp_path):
    backbone, data = setting
    log = probe(ProbeConfig.preset("smoke", steps=2, in_batch_negatives=True), data, tmp_path, backbone=backbone, progress=False)["log"]
    assert all(np.isfinite(e["loss"]) for e in log)


def _killed_after_step_two(monkeypatch, run):
    """Run ``run()`` and kill it at step 3, after its step-2 checkpoint (a smoke config with
    checkpoint_every=2)."""
    import dptlib.train as train

    original, calls = train.dpt_losses, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "dpt_losses", dying)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(train, "dpt_losses", original)


def test_killed_probe_resumes_to_the_same_adapter(setting, tmp_path, monkeypatch):
    backbone, data = setting
    config = ProbeConfig.preset("smoke", steps=4, checkpoint_every=2)
    probe(config, data, tmp_path / "straight", backbone=backbone, progress=False)
    _killed_after_step_two(monkeypatch, lambda: probe(config, data, tmp_path / "killed", backbone=backbone, progress=False))
    assert (tmp_path / "killed" / "probe.state.safetensors").exists()
    probe(config, data, tmp_path / "killed", backbone=backbone, progress=False)
    a, _, _ = load_adapter(tmp_path / "straight")
    b, _, _ = load_adapter(tmp_path / "killed")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=name)
    # a finished run leaves no resume state: running it again (say on a retrained base model)
    # trains afresh rather than continuing from a state of the earlier run
    assert not (tmp_path / "killed" / "probe.state.safetensors").exists()


def test_a_resume_state_of_another_run_is_refused(setting, tmp_path, monkeypatch):
    """A killed run's state is resumed only by the same run: not after the settings or the base
    model changed (a retrained toy model is saved at the same path as the old one)."""
    backbone, data = setting
    config = ProbeConfig.preset("smoke", steps=4, checkpoint_every=2)
    _killed_after_step_two(monkeypatch, lambda: probe(config, data, tmp_path, backbone=backbone, progress=False))
    with pytest.raises(ValueError, match="another run.*lr"):
        probe(ProbeConfig.preset("smoke", steps=4, checkpoint_every=2, lr=1e-3), data, tmp_path, backbone=backbone, progress=False)
    weight = backbone.unet.conv_in.weight
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.add_(0.01)
    try:
        with pytest.raises(ValueError, match="base_model"):
            probe(config, data, tmp_path, backbone=backbone, progress=False)
    finally:
        with torch.no_grad():
            weight.copy_(kept)
    # a longer run of the same settings resumes
    probe(ProbeConfig.preset("smoke", steps=6, checkpoint_every=2), data, tmp_path, backbone=backbone, progress=False)
    assert not (tmp_path / "probe.state.safetensors").exists()


def test_metrics_on_a_probed_adapter(setting, tmp_path):
    backbone, data = setting
    probe(ProbeConfig.preset("smoke"), data, tmp_path, backbone=backbone, progress=False)
    adapter, blocks, meta = load_adapter(tmp_path)
    assert meta["blocks"] == ["mid"]
    scorer = DPTScorer(backbone, adapter, blocks, data, cache_latents(backbone, data.images), timestep=250)
    test = itm_test_set(data, n_negatives=3)
    accuracy = itm_accuracy(scorer.score_pairs, test)
    assert set(accuracy) == {"I->T", "T->I", "overall"} and all(0 <= v <= 100 for v in accuracy.values())
    # a scorer that knows the answer gets 100 %, one that prefers the last candidate 0 %
    truth = {(q, c[0]) for q, c in test.image_to_text} | {(c[0], q) for q, c in test.text_to_image}
    assert itm_accuracy(lambda i, c: torch.tensor([float((a, b) in truth) for a, b in zip(i, c)]), test)["overall"] == 100
    assert 0 <= rec_precision(scorer.predict_boxes, data) <= 100
    assert rec_precision(lambda e: data.expression_box[e], data) == 100
    assert rec_precision(lambda e: torch.tensor([[0.02, 0.02, 0.01, 0.01]] * len(e)), data) == 0


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo")
def test_two_processes_average_to_the_one_process_gradient(tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU): DDP's averaged gradient of two half batches equals
    one process's gradient over the whole batch."""
    script = ROOT / "tests" / "distributed_probe.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DPT_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                          str(script), str(tmp_path / "two.safetensors"), str(tmp_path / "data")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.safetensors"), str(tmp_path / "data")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "two.safetensors"), load_file(tmp_path / "one.safetensors")
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)
