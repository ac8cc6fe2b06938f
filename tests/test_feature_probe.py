"""Linear probes of block features: pooling over boxes, the probe's accuracy, the toy tasks."""

import numpy as np
import pytest
import torch

from dptlib.evaluation.feature_probe import box_pool, linear_probe_accuracy


def test_box_pool_averages_the_cells_inside_a_box():
    features = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)  # channel 0: 0..15, channel 1: 16..31
    # a box over the top-left 2x2 cells (centres 0.125 and 0.375 in each direction)
    pooled = box_pool(features, torch.tensor([[0.25, 0.25, 0.5, 0.5]]))
    assert pooled.tolist() == [[(0 + 1 + 4 + 5) / 4, (16 + 17 + 20 + 21) / 4]]
    # a box smaller than a cell falls back to the nearest cell: the one holding (0.8, 0.3)
    tiny = box_pool(features, torch.tensor([[0.8, 0.3, 0.01, 0.01]]))
    assert tiny.tolist() == [[7.0, 23.0]]
    assert box_pool(features, None).tolist() == [[7.5, 23.5]]


def test_linear_probe_reads_a_linear_label_and_not_noise():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(600, 8)), dtype=torch.float32)
    groups = torch.arange(600) // 3
    readable = (x[:, 2] > 0).long()  # one direction of the features holds it
    noise = torch.tensor(rng.integers(0, 2, 600))
    assert linear_probe_accuracy(x, readable, groups)["accuracy"] > 95
    result = linear_probe_accuracy(x, noise, groups)
    assert abs(result["accuracy"] - 50) < 12 and result["n_test"] == 180


def test_groups_stay_on_one_side_of_the_split():
    # every row of a group has the same label and the same features: a probe that saw the group in
    # training would be right on it, one that did not can only guess
    rng = np.random.default_rng(1)
    groups = torch.arange(300) // 3
    centres = torch.tensor(rng.normal(size=(100, 16)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, 2, 100))
    assert abs(linear_probe_accuracy(centres[groups], labels[groups], groups)["accuracy"] - 50) < 20


def test_toy_probe_inputs_pair_the_referent_task():
    from dptlib.toy.diagnostics import probe_inputs
    from dptlib.toy.world import ToyWorld, ToyWorldConfig

    world = ToyWorld(ToyWorldConfig())
    passes, rows = probe_inputs(world, world.scenes("val", 40))
    referent = [r for r in rows if r["task"] == "referent"]
    assert referent and len(referent) % 4 == 0
    for i in range(0, len(referent), 4):  # two expressions, each pooled over both named objects
        a, b = referent[i : i + 2], referent[i + 2 : i + 4]
        assert [r["label"] for r in a] == [1, 0] and [r["label"] for r in b] == [0, 1]
        assert passes[a[0]["pass"]]["text"] != passes[b[0]["pass"]]["text"]
        assert torch.equal(passes[a[0]["pass"]]["boxes"], passes[b[0]["pass"]]["boxes"])
    colours = [r for r in rows if r["task"] == "colour"]
    assert len(colours) == sum(len(s.objects) for s in world.scenes("val", 40))
    assert all(passes[r["pass"]]["text"] == "" for r in rows if r["task"] != "referent")


@pytest.mark.parametrize("block", ["mid", "up1"])
def test_pooled_features_are_the_block_maps_pooled(block):
    from dptlib.evaluation.feature_probe import pooled_block_features
    from dptlib.method.backbone import Backbone, add_noise, encode_text, extract_features
    from dptlib.toy.model import build_random_pipeline

    backbone = Backbone(build_random_pipeline())
    latents = torch.randn(3, 4, 16, 16)
    boxes = [torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.3, 0.3]]), None, torch.tensor([[0.7, 0.3, 0.2, 0.2]])]
    texts = ["a red circle", "", "a blue square"]
    pooled = pooled_block_features(backbone, latents, texts, [block], 250, boxes, seed=0, noise_ids=[5, 5, 6])
    # rows 0 and 1 share noise id 5: the same z_t
    noise = torch.stack([torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(i)) for i in (5, 5, 6)])
    t = torch.full((3,), 250)
    hidden, _ = encode_text(backbone, texts)
    (fmap,) = extract_features(backbone.unet, add_noise(backbone, latents, t, noise), t, hidden, [block])
    for row in range(3):
        copies = len(boxes[row]) if boxes[row] is not None else 1
        torch.testing.assert_close(pooled[block][row], box_pool(fmap[row : row + 1].expand(copies, -1, -1, -1), boxes[row]))


def test_map_statistics_against_a_designed_map(monkeypatch):
    """A 2x2 map built as channel offset + image effect + checkerboard: every statistic by hand."""
    from types import SimpleNamespace

    from dptlib.evaluation import feature_probe

    offsets = torch.tensor([3.0, -1.0])[None, :, None, None]  # per channel
    image = torch.tensor([1.0, -1.0])[:, None, None, None]  # per image: unbiased variance 2
    board = 0.5 * torch.tensor([[1.0, -1.0], [-1.0, 1.0]])[None, None]  # per position: unbiased variance 1/3
    designed = offsets + image + board  # (2 images, 2 channels, 2, 2)
    monkeypatch.setattr(feature_probe, "add_noise", lambda backbone, latents, t, noise: latents)
    monkeypatch.setattr(feature_probe, "encode_text", lambda backbone, texts: (None, None))
    monkeypatch.setattr(feature_probe, "extract_features", lambda unet, z, t, hidden, blocks: [designed])
    stats = feature_probe.map_statistics(SimpleNamespace(device="cpu", unet=None), torch.randn(2, 4, 2, 2), ["", ""], ["b"], 250)["b"]
    assert stats["channels"] == 2 and stats["side"] == 2
    assert stats["offset"] == pytest.approx(2.0) and stats["largest offset"] == pytest.approx(3.0)  # median of |3|, |-1|; max
    assert stats["within"] == pytest.approx(1 / 3) and stats["between"] == pytest.approx(2.0)
    assert stats["image share"] == pytest.approx(2.0 / (2.0 + 1 / 3))
    assert stats["RMS"] == pytest.approx(float(designed.pow(2).mean().sqrt()))
    assert stats["spread"] == pytest.approx(float(designed[:, 0].std()))  # every channel spreads alike
    assert {"noise R2", "z0 R2"} <= set(stats)  # (their values: test_held_out_r2_...)


def test_held_out_r2_is_one_for_a_linear_target_and_near_zero_for_an_unrelated_one():
    from dptlib.evaluation.feature_probe import held_out_r2

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=generator)
    linear = x @ torch.randn(5, 3, generator=generator) + 2.0
    assert held_out_r2(x, linear, 200) == pytest.approx(1.0)
    unrelated = torch.randn(400, 3, generator=generator)
    assert abs(held_out_r2(x, unrelated, 200)) < 0.1
