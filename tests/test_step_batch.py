"""One training step's tensors (septuple_batch) and which of them each loss term reads
(dpt_losses, the MSE term): rows checked against add_noise / encode_text of the right inputs."""

import numpy as np
import pytest
import torch

import dptlib.method.train as train
from dptlib.data.discrimination import sample_septuple
from dptlib.method.backbone import add_noise, encode_text, extract_features
from dptlib.method.losses import matching_loss, matching_similarity
from dptlib.method.train import (
    PAIRS_PER_SEPTUPLE,
    DPTModel,
    ProbeConfig,
    build_adapter,
    cache_latents,
    dpt_losses,
    septuple_batch,
)

from test_probe import tiny_backbone, tiny_data

B = 3


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    backbone, data = tiny_backbone(), tiny_data(tmp_path_factory.mktemp("data"))
    latents = cache_latents(backbone, data.images)
    rng = np.random.default_rng(5)
    septuples = []
    while len(septuples) < B:  # septuples whose four texts differ, so that a misplaced text shows
        s = sample_septuple(data, rng)
        texts = {data.captions[s.caption], data.captions[s.hard_caption], data.captions[s.random_caption], data.expressions[s.expression]}
        if len(texts) == 4 and s.image not in [t.image for t in septuples]:
            septuples.append(s)
    seeds = [[0, 7, 0, i] for i in range(B)]
    return backbone, data, latents, septuples, seeds


def _drawn(latents, seed):
    """The timestep and the three noise samples septuple_batch documents for ``seed``."""
    g = torch.Generator().manual_seed(int(np.random.default_rng(seed).integers(2**62)))
    t = torch.randint(0, 1000, (1,), generator=g)
    return t, torch.randn((3, *latents.shape[1:]), generator=g)


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_septuple_rows_hold_the_pairs_in_the_documented_order(setting):
    backbone, data, latents, septuples, seeds = setting
    batch = septuple_batch(backbone, data, latents, septuples, seeds, (0, 1000))
    assert batch.latents.shape[0] == PAIRS_PER_SEPTUPLE * B and not batch.in_batch
    assert batch.positives.tolist() == [0, 6, 12]
    for i, (s, seed) in enumerate(zip(septuples, seeds)):
        t, noise = _drawn(latents, seed)

        def noisy(image, k):
            return add_noise(backbone, latents[[image]], t, noise[k : k + 1])[0]

        x, x_neg, x_rand = noisy(s.image, 0), noisy(s.hard_image, 1), noisy(s.random_image, 2)
        rows = slice(6 * i, 6 * i + 6)
        for got, want in zip(batch.latents[rows], [x, x, x, x_neg, x_rand, x]):  # (x,y) (x,y_neg) (x,y_rand) (x_neg,y) (x_rand,y) (x,y')
            _close(got, want)
        y, y_neg, y_rand = data.captions[s.caption], data.captions[s.hard_caption], data.captions[s.random_caption]
        hidden, pooled = encode_text(backbone, [y, y_neg, y_rand, y, y, data.expressions[s.expression]])
        _close(batch.text_pooled[rows], pooled)
        _close(batch.text_hidden[rows], hidden)
        assert batch.timesteps[rows].tolist() == [int(t)] * 6
        assert torch.equal(batch.boxes[i], data.expression_box[s.expression])
        assert torch.equal(batch.noise[i], noise[0])  # the noise of the positive pair (x, y) ...
        _close(batch.latents[batch.positives[i]], add_noise(backbone, latents[[s.image]], t, batch.noise[i : i + 1])[0])  # ... at its row


def test_in_batch_rows_are_the_image_caption_grid_then_the_expressions(setting):
    backbone, data, latents, septuples, seeds = setting
    batch = septuple_batch(backbone, data, latents, septuples, seeds, (0, 1000), in_batch=True)
    assert batch.in_batch and batch.latents.shape[0] == B * B + B
    assert batch.positives.tolist() == [i * (B + 1) for i in range(B)] == [0, 4, 8]
    drawn = [_drawn(latents, seed) for seed in seeds]
    x = [add_noise(backbone, latents[[s.image]], t, noise[:1])[0] for s, (t, noise) in zip(septuples, drawn)]
    _, captions = encode_text(backbone, [data.captions[s.caption] for s in septuples])
    _, expressions = encode_text(backbone, [data.expressions[s.expression] for s in septuples])
    for i in range(B):
        for j in range(B):  # row i * B + j: (x_i, y_j)
            _close(batch.latents[i * B + j], x[i])
            _close(batch.text_pooled[i * B + j], captions[j])
            assert int(batch.timesteps[i * B + j]) == int(drawn[i][0])
        _close(batch.latents[B * B + i], x[i])  # then (x_i, y'_i)
        _close(batch.text_pooled[B * B + i], expressions[i])
        p = int(batch.positives[i])
        _close(batch.latents[p], add_noise(backbone, latents[[septuples[i].image]], drawn[i][0], batch.noise[i : i + 1])[0])
        _close(batch.text_pooled[p], captions[i])


@pytest.fixture(scope="module")
def adapter(setting):
    torch.manual_seed(0)
    adapter, blocks = build_adapter(ProbeConfig.preset("smoke"), setting[0])
    return adapter.eval(), blocks


def _losses_seen(monkeypatch, adapter, features, batch):
    """Run dpt_losses with a matching similarity that is each pair's row number, and return what
    the matching and grounding losses were given."""
    seen = {}
    monkeypatch.setattr(train, "matching_similarity", lambda match, text: torch.arange(len(match), dtype=torch.float32))
    monkeypatch.setattr(train, "matching_loss", lambda i2t, t2i, scale: seen.update(i2t=i2t, t2i=t2i) or torch.tensor(0.0))
    original = train.grounding_loss

    def grounding(logits, boxes, semantic, target, expression, scale):
        seen.update(logits=logits, target=target, expression=expression)
        return original(logits, boxes, semantic, target, expression, scale)

    monkeypatch.setattr(train, "grounding_loss", grounding)
    dpt_losses(adapter, features, batch)
    return seen


def test_dpt_losses_read_the_right_rows_of_a_septuple_batch(setting, adapter, monkeypatch):
    backbone, data, latents, septuples, seeds = setting
    adapter, blocks = adapter
    batch = septuple_batch(backbone, data, latents, septuples, seeds, (0, 1000))
    with torch.no_grad():
        features = extract_features(backbone.unet, batch.latents, batch.timesteps, batch.text_hidden, blocks)
        out = adapter(features, batch.timesteps)
        s = matching_similarity(out.match_embeddings, batch.text_pooled).view(B, 6)
        expected = matching_loss(s[:, [0, 1, 2]], s[:, [0, 3, 4]], adapter.logit_scale)
        assert dpt_losses(adapter, features, batch)["matching"].item() == pytest.approx(expected.item(), rel=1e-6)
        seen = _losses_seen(monkeypatch, adapter, features, batch)
    rows = torch.arange(B)[:, None] * 6
    assert torch.equal(seen["i2t"], (rows + torch.tensor([0, 1, 2])).float())  # x against y, y_neg, y_rand
    assert torch.equal(seen["t2i"], (rows + torch.tensor([0, 3, 4])).float())  # y against x, x_neg, x_rand
    assert torch.equal(seen["expression"], batch.text_pooled[5::6]) and torch.equal(seen["target"], batch.boxes)
    assert torch.equal(seen["logits"], out.grounding_logits[5::6])


def test_dpt_losses_read_the_right_rows_of_an_in_batch_grid(setting, adapter, monkeypatch):
    backbone, data, latents, septuples, seeds = setting
    adapter, blocks = adapter
    batch = septuple_batch(backbone, data, latents, septuples, seeds, (0, 1000), in_batch=True)
    with torch.no_grad():
        features = extract_features(backbone.unet, batch.latents, batch.timesteps, batch.text_hidden, blocks)
        out = adapter(features, batch.timesteps)
        seen = _losses_seen(monkeypatch, adapter, features, batch)
    # s[i, j] = row i * B + j = (x_i, y_j); positive first, then the others in order
    assert seen["i2t"].tolist() == [[0, 1, 2], [4, 3, 5], [8, 6, 7]]  # image i against every caption
    assert seen["t2i"].tolist() == [[0, 3, 6], [4, 1, 7], [8, 2, 5]]  # caption j against every image
    assert torch.equal(seen["expression"], batch.text_pooled[B * B :]) and torch.equal(seen["logits"], out.grounding_logits[B * B :])


@pytest.mark.parametrize("in_batch", [False, True])
def test_the_denoising_term_is_the_positive_pairs_error(setting, adapter, in_batch, monkeypatch):
    """Stage 2's MSE term: the U-Net's prediction on each (x, y) row against the noise added to x."""
    backbone, data, latents, septuples, seeds = setting
    adapter, blocks = adapter
    batch = septuple_batch(backbone, data, latents, septuples, seeds, (0, 1000), in_batch=in_batch)
    model = DPTModel(backbone.unet, adapter, blocks, mse_coef=1.0)
    with torch.no_grad():
        mse = model(batch)["mse"]
        p = batch.positives
        prediction = backbone.unet(batch.latents[p], batch.timesteps[p], encoder_hidden_states=batch.text_hidden[p]).sample
    assert mse.item() == pytest.approx(torch.nn.functional.mse_loss(prediction, batch.noise).item(), rel=1e-5)
    # which rows: let the U-Net "predict" its row number everywhere
    original = train.extract_features

    def numbered(unet, z, t, hidden, blocks, **kwargs):
        features, output = original(unet, z, t, hidden, blocks, **kwargs)
        return features, torch.arange(len(z), dtype=output.dtype).view(-1, 1, 1, 1).expand_as(output)

    monkeypatch.setattr(train, "extract_features", numbered)
    with torch.no_grad():
        mse = model(batch)["mse"].item()
    rows = [0, 6, 12] if not in_batch else [0, 4, 8]
    expected = np.mean([(r - batch.noise[i]).pow(2).mean().item() for i, r in enumerate(rows)])
    assert mse == pytest.approx(expected, rel=1e-5)
