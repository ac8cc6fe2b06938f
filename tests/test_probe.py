"""Stage 1 end to end on a tiny random pipeline: data, mining, septuples, probe, resume, metrics."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dptlib.data.discrimination import prepare_discrimination_data, sample_septuple
from dptlib.evaluation.metrics import itm_accuracy, itm_test_set, rec_precision
from dptlib.method.checkpoint import load_adapter, run_identity
from dptlib.method.inference import DPTScorer
from dptlib.method.train import ProbeConfig, cache_latents, probe
from dptlib.toy.world import ToyWorld, ToyWorldConfig, export_world

ROOT = Path(__file__).resolve().parent.parent


def tiny_backbone():
    """A randomly initialised toy-sized pipeline: enough to test the plumbing, no training."""
    from dptlib.method.backbone import Backbone
    from dptlib.toy.model import build_random_pipeline

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
        assert len({data.captions[c] for c in negatives.tolist()}) == len(negatives)  # distinct texts
    for caption, negatives in enumerate(data.hard_images):
        assert not (negatives == data.caption_image[caption]).any()
        assert len(set(negatives.tolist())) == len(negatives)


@pytest.fixture(scope="module")
def toy_setting(tmp_path_factory):
    from toy_fixtures import small_toy_split

    return small_toy_split(tmp_path_factory.mktemp("toy"), 30, k_captions=6, k_images=3)[2]


@pytest.mark.parametrize("which", ["coco-style", "toy-with-truth"])
def test_septuples_are_well_formed(setting, toy_setting, which):
    """App. B.1's septuple: y a caption of x (the image of y'), y_neg from x's mined captions,
    x_neg from y's mined images, and random negatives drawn among the captioned images / own
    captions, false where the data can tell (``data.negative``)."""
    data = setting[1] if which == "coco-style" else toy_setting
    rng = np.random.default_rng(0)
    positions = set()
    for _ in range(400):
        s = sample_septuple(data, rng)
        assert int(data.expression_image[s.expression]) == s.image == int(data.caption_image[s.caption])
        assert s.image < data.n_captioned and s.caption < data.n_own_captions
        assert s.hard_caption in data.hard_captions[s.image].tolist()
        assert s.hard_image in data.hard_images[s.caption].tolist()
        positions.add(data.hard_captions[s.image].tolist().index(s.hard_caption))
        assert data.negative(s.image, s.hard_caption) and data.negative(s.hard_image, s.caption)
        assert s.random_image < data.n_captioned and s.random_image not in (s.image, s.hard_image)
        assert data.negative(s.random_image, s.caption)
        assert s.random_caption < data.n_own_captions and s.random_caption != s.hard_caption
        assert data.negative(s.image, s.random_caption)
        if data.is_negative is not None:
            assert data.is_negative(s.random_image, s.caption) and data.is_negative(s.image, s.random_caption)
    assert positions == set(range(data.hard_captions.shape[1]))  # every mined negative gets drawn


def test_random_negatives_are_redrawn_until_false(setting):
    """A truth filter that rejects most pairs: the sampler keeps drawing, and never returns a rejected one."""
    from dataclasses import replace

    _, data = setting
    allowed = replace(data, is_negative=lambda image, caption: (image + caption) % 3 == 0)
    rng = np.random.default_rng(1)
    for _ in range(100):
        s = sample_septuple(allowed, rng)
        assert (s.random_image + s.caption) % 3 == 0 and (s.image + s.random_caption) % 3 == 0
    with pytest.raises(ValueError, match="no random negative"):
        sample_septuple(replace(data, is_negative=lambda image, caption: False), rng)


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
               __import__("dptlib.method.train", fromlist=["build_adapter"]).build_adapter(fresh, backbone)[0].state_dict().values()))


def test_in_batch_negatives_run(setting, tmp_path):
    backbone, data = setting
    log = probe(ProbeConfig.preset("smoke", steps=2, in_batch_negatives=True), data, tmp_path, backbone=backbone, progress=False)["log"]
    assert all(np.isfinite(e["loss"]) for e in log)


def _killed_after_step_two(monkeypatch, run):
    """Run ``run()`` and kill it at step 3, after its step-2 checkpoint (a smoke config with
    checkpoint_every=2)."""
    import dptlib.method.train as train

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


def _steps_run(monkeypatch):
    """The steps the training loop executes from now on: septuple_batch gets each step's seeds
    [seed, step, micro, i], once per step and micro-batch."""
    import dptlib.method.train as train

    steps, original = [], train.septuple_batch

    def spy(backbone, data, latents, septuples, seeds, *args, **kwargs):
        steps.append(seeds[0][1])
        return original(backbone, data, latents, septuples, seeds, *args, **kwargs)

    monkeypatch.setattr(train, "septuple_batch", spy)
    return steps


def test_killed_probe_resumes_to_the_same_adapter(setting, tmp_path, monkeypatch):
    backbone, data = setting
    config = ProbeConfig.preset("smoke", steps=4, checkpoint_every=2)
    straight = probe(config, data, tmp_path / "straight", backbone=backbone, progress=False)["log"]
    steps = _steps_run(monkeypatch)
    _killed_after_step_two(monkeypatch, lambda: probe(config, data, tmp_path / "killed", backbone=backbone, progress=False))
    assert steps == [0, 1, 2, 3]  # killed in step 3, after the checkpoint of step 2
    assert (tmp_path / "killed" / "probe.state.safetensors").exists()
    steps.clear()
    resumed = probe(config, data, tmp_path / "killed", backbone=backbone, progress=False)["log"]
    assert steps == [2, 3]  # a resume runs the remaining steps only, not all four again
    assert [e["step"] for e in resumed] == [0, 1, 2, 3]  # the log of steps 0-1 comes back from the state
    for a, b in zip(straight, resumed):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), a["step"]
    a, _, _ = load_adapter(tmp_path / "straight")
    b, _, _ = load_adapter(tmp_path / "killed")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=name)
    # a finished run leaves no resume state: running it again (say on a retrained base model)
    # trains afresh rather than continuing from a state of the earlier run
    assert not (tmp_path / "killed" / "probe.state.safetensors").exists()
    steps.clear()
    probe(config, data, tmp_path / "killed", backbone=backbone, progress=False)
    assert steps == [0, 1, 2, 3]


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
    steps = _steps_run(monkeypatch)
    probe(ProbeConfig.preset("smoke", steps=6, checkpoint_every=2), data, tmp_path, backbone=backbone, progress=False)
    assert steps == [2, 3, 4, 5]
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
    # a scorer that knows the answer gets 100 %, one that prefers any negative 0 %, a constant 0 %
    truth = {(q, c[0]) for q, c in test.image_to_text} | {(c[0], q) for q, c in test.text_to_image}
    assert itm_accuracy(lambda i, c: torch.tensor([float((a, b) in truth) for a, b in zip(i, c)]), test)["overall"] == 100
    assert itm_accuracy(lambda i, c: torch.tensor([float((a, b) not in truth) for a, b in zip(i, c)]), test)["overall"] == 0
    assert itm_accuracy(lambda i, c: torch.zeros(len(i)), test)["overall"] == 0  # a tie is wrong
    assert 0 <= rec_precision(scorer.predict_boxes, data) <= 100
    assert rec_precision(lambda e: data.expression_box[e], data) == 100
    assert rec_precision(lambda e: torch.tensor([[0.02, 0.02, 0.01, 0.01]] * len(e)), data) == 0


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo")
def test_two_processes_average_to_the_one_process_gradient(tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU): DDP's averaged gradient of two half batches equals
    one process's gradient over the whole batch."""
    script = ROOT / "tests" / "distributed_probe.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DPT_THREADS": "1"}
    with socket.socket() as free:  # a port no other process holds now (a fixed one may be taken)
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
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


def test_a_kept_state_lets_a_longer_run_continue(setting, tmp_path, monkeypatch):
    """keep_state=True: a later run with more steps executes only the new steps and ends where a
    straight run of that length ends (the block comparison of 01_probing continues its winner)."""
    backbone, data = setting
    straight = probe(ProbeConfig.preset("smoke", steps=4), data, tmp_path / "straight", backbone=backbone, progress=False)["log"]
    steps = _steps_run(monkeypatch)
    probe(ProbeConfig.preset("smoke", steps=2), data, tmp_path / "chunks", backbone=backbone, progress=False, keep_state=True)
    assert steps == [0, 1] and (tmp_path / "chunks" / "probe.state.safetensors").exists()
    steps.clear()
    continued = probe(ProbeConfig.preset("smoke", steps=4), data, tmp_path / "chunks", backbone=backbone, progress=False)["log"]
    assert steps == [2, 3]
    assert [e["loss"] for e in continued] == pytest.approx([e["loss"] for e in straight], rel=1e-5)
    a, _, _ = load_adapter(tmp_path / "straight")
    b, _, _ = load_adapter(tmp_path / "chunks")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=name)


def test_a_state_ahead_of_the_run_is_not_reused(setting, tmp_path, monkeypatch):
    """A state kept by a longer run (step 4) must not stand in for a 2-step run: the shorter run
    trains afresh and ends where a straight 2-step run ends."""
    backbone, data = setting
    straight = probe(ProbeConfig.preset("smoke", steps=2), data, tmp_path / "straight", backbone=backbone, progress=False)["log"]
    probe(ProbeConfig.preset("smoke", steps=4), data, tmp_path / "ahead", backbone=backbone, progress=False, keep_state=True)
    steps = _steps_run(monkeypatch)
    with pytest.warns(UserWarning, match="training afresh"):
        shorter = probe(ProbeConfig.preset("smoke", steps=2), data, tmp_path / "ahead", backbone=backbone, progress=False)["log"]
    assert steps == [0, 1]
    assert [e["loss"] for e in shorter] == pytest.approx([e["loss"] for e in straight], rel=1e-5)


# --------------------------------------------------------------------------------------------
# Learning-rate schedules (dptlib.experiments.convergence tests shorter stage-1 runs with them)
# --------------------------------------------------------------------------------------------
def _lrs(config, steps):
    from dptlib.method.train import lr_scheduler

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = lr_scheduler(optimizer, config)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_schedules_give_the_hand_computed_learning_rates():
    import math

    lr, steps, warmup = 1e-3, 10, 2
    constant = _lrs(ProbeConfig.preset("smoke", steps=steps, lr=lr), steps)
    assert constant == [lr] * steps  # exactly the configured rate: the default changes nothing
    cosine = _lrs(ProbeConfig.preset("smoke", steps=steps, lr=lr, lr_schedule="cosine", warmup_steps=warmup), steps)
    expected = [lr * k / warmup if k < warmup else lr * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (steps - warmup)))
                for k in range(steps)]
    assert cosine == pytest.approx(expected, rel=1e-12)
    linear = _lrs(ProbeConfig.preset("smoke", steps=steps, lr=lr, lr_schedule="linear"), steps)
    assert linear == pytest.approx([lr * (steps - k) / steps for k in range(steps)], rel=1e-12)
    warm = _lrs(ProbeConfig.preset("smoke", steps=steps, lr=lr, warmup_steps=warmup), steps)
    assert warm == pytest.approx([0.0, lr / 2] + [lr] * (steps - 2), rel=1e-12)


def test_a_scheduler_built_at_a_resumed_step_is_on_schedule():
    from dptlib.method.train import lr_scheduler

    config = ProbeConfig.preset("smoke", steps=10, lr=1e-3, lr_schedule="cosine", warmup_steps=2)
    straight = _lrs(config, 10)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    lr_scheduler(optimizer, config, start=6)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(straight[6], rel=1e-12)


@pytest.mark.parametrize("bad, message", [(dict(lr_schedule="step"), "lr_schedule must be one of constant, cosine, linear"),
                                          (dict(warmup_steps=9), "warmup_steps must be in 0..steps")])
def test_bad_schedules_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        ProbeConfig.preset("smoke", steps=4, **bad)


def test_killed_cosine_probe_resumes_on_its_schedule(setting, tmp_path, monkeypatch):
    backbone, data = setting
    config = ProbeConfig.preset("smoke", steps=4, checkpoint_every=2, lr_schedule="cosine", warmup_steps=1)
    straight = probe(config, data, tmp_path / "straight", backbone=backbone, progress=False)["log"]
    assert [e["lr"] for e in straight] == pytest.approx([0.0, config.lr, config.lr * 0.75, config.lr * 0.25], rel=1e-12)
    _killed_after_step_two(monkeypatch, lambda: probe(config, data, tmp_path / "killed", backbone=backbone, progress=False))
    resumed = probe(config, data, tmp_path / "killed", backbone=backbone, progress=False)["log"]
    assert [e["lr"] for e in resumed] == [e["lr"] for e in straight]
    a, _, _ = load_adapter(tmp_path / "straight")
    b, _, _ = load_adapter(tmp_path / "killed")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=name)


def test_a_decaying_schedule_is_not_continued_to_another_length(setting, tmp_path, monkeypatch):
    """A constant-rate state may be continued to more steps (keep_state); a cosine one may not:
    its rates were laid out over its own length."""
    backbone, data = setting
    short = ProbeConfig.preset("smoke", steps=2, lr_schedule="cosine")
    probe(short, data, tmp_path, backbone=backbone, progress=False, keep_state=True)
    with pytest.raises(ValueError, match="differs in steps"):
        probe(ProbeConfig.preset("smoke", steps=4, lr_schedule="cosine"), data, tmp_path, backbone=backbone, progress=False)


def test_probe_reports_validation_at_the_steps_asked(setting, tmp_path):
    backbone, data = setting
    seen = []

    def validate(step, model):
        seen.append(step)
        assert not model.training
        return {"score": float(step)}

    out = probe(ProbeConfig.preset("smoke", steps=4), data, tmp_path, backbone=backbone, progress=False, validate=validate,
                validate_every=2)
    assert seen == [0, 2, 4] and [v["step"] for v in out["validation"]] == [0, 2, 4]


def test_the_schedule_enters_a_run_identity_only_when_it_is_not_the_default(setting):
    """Resume states written before the schedule existed keep their identity (constant, no warm-up);
    a cosine run's identity names its schedule and its length."""
    backbone, data = setting
    plain = run_identity(ProbeConfig.preset("smoke", steps=4), backbone.unet, data)["config"]
    cosine = run_identity(ProbeConfig.preset("smoke", steps=4, lr_schedule="cosine", warmup_steps=1), backbone.unet, data)["config"]
    assert "lr_schedule" not in plain and "warmup_steps" not in plain and "steps" not in plain
    assert cosine["lr_schedule"] == "cosine" and cosine["warmup_steps"] == 1 and cosine["steps"] == 4


def test_the_input_norm_enters_a_run_identity_only_when_it_is_set(setting):
    """Like the schedule: resume states from before `input_norm` existed keep their identity."""
    backbone, data = setting
    plain = run_identity(ProbeConfig.preset("smoke", steps=4), backbone.unet, data)["config"]
    smoke_adapter = ProbeConfig.preset("smoke").adapter
    normed = run_identity(ProbeConfig.preset("smoke", steps=4, adapter={**vars(smoke_adapter), "input_norm": "batch"}),
                          backbone.unet, data)["config"]
    assert "input_norm" not in plain["adapter"] and normed["adapter"]["input_norm"] == "batch"
    assert "input_norm" not in repr(ProbeConfig.preset("smoke"))  # the stage-1 keys of earlier ablation runs stay valid
