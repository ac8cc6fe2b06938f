"""The adapter's shapes and gradients; the backbone's block registry and early exit."""

import math
from types import SimpleNamespace

import pytest
import torch

from dptlib.method.adapter import AdapterConfig, DiscriminativeAdapter
from dptlib.method.backbone import block_channels, block_modules, extract_features, paper_block, resolve_blocks


@pytest.fixture(scope="module")
def tiny_pipe():
    from dptlib.toy.model import build_random_pipeline

    return build_random_pipeline()


def test_block_registry_and_paper_names(tiny_pipe):
    unet = tiny_pipe.unet
    assert list(block_modules(unet)) == ["down0", "down1", "down2", "mid", "up0", "up1", "up2"]
    assert resolve_blocks("middle", unet) == ["mid"]
    assert resolve_blocks("up0+bottom3+middle", unet) == ["down2", "mid", "up0"]
    assert [paper_block(b) for b in ("bottom1", "middle", "up1", "up3")] == ["down0", "mid", "up0", "up2"]
    assert resolve_blocks("all", unet) == list(block_modules(unet))
    with pytest.raises(ValueError, match="unknown U-Net block"):
        resolve_blocks("middle+up9", unet)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 16, 16, generator=g), torch.tensor([10, 500]), torch.randn(2, 16, 32, generator=g)


@pytest.mark.parametrize("block", ["down0", "down2", "mid", "up0", "up2"])
def test_early_exit_features_equal_full_forward(tiny_pipe, block):
    latents, t, text = _inputs()
    early = extract_features(tiny_pipe.unet, latents, t, text, [block], early_exit=True)[0]
    full = extract_features(tiny_pipe.unet, latents, t, text, [block], early_exit=False)[0]
    assert torch.equal(early, full)
    assert early.shape[1] == block_channels(tiny_pipe.unet, block)


def test_early_exit_skips_later_blocks_and_leaves_no_hooks(tiny_pipe):
    unet = tiny_pipe.unet
    calls = []
    handle = unet.up_blocks[0].register_forward_hook(lambda *a: calls.append(1))
    latents, t, text = _inputs()
    extract_features(unet, latents, t, text, ["mid"])
    assert calls == []  # stopped before up0
    out = unet(latents, t, encoder_hidden_states=text).sample  # a plain call still runs to the end
    handle.remove()
    assert calls == [1] and out.shape == latents.shape


def test_gradient_reaches_the_latent(tiny_pipe):
    latents, t, text = _inputs()
    latents.requires_grad_()
    features = extract_features(tiny_pipe.unet, latents, t, text, ["mid"])[0]
    features.sum().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0


@pytest.mark.parametrize("position", ["learned", "sine"])
def test_adapter_shapes_and_gradients(tiny_pipe, position):
    unet = tiny_pipe.unet
    blocks = resolve_blocks("down2+mid+up0", unet)
    config = AdapterConfig(d_model=32, heads=4, ffn=64, num_queries=12, num_matching_queries=3, position_embedding=position)
    adapter = DiscriminativeAdapter(config, [block_channels(unet, b) for b in blocks], text_dim=24)
    latents, t, text = _inputs()
    out = adapter(extract_features(unet, latents, t, text, blocks), t)
    assert out.match_embeddings.shape == (2, 3, 24)
    assert out.grounding_logits.shape == (2, 9)
    assert out.boxes.shape == (2, 9, 4) and (out.boxes >= 0).all() and (out.boxes <= 1).all()
    assert out.semantic_embeddings.shape == (2, 9, 24)
    (out.match_embeddings.sum() + out.grounding_logits.sum() + out.boxes.sum() + out.semantic_embeddings.sum()).backward()
    unused = [n for n, p in adapter.named_parameters() if p.grad is None and n != "logit_scale"]
    assert unused == []
    with pytest.raises(ValueError, match="feature maps"):
        adapter([torch.zeros(2, 64, 4, 4)], t)


def test_adapter_config_is_checked():
    with pytest.raises(ValueError):
        AdapterConfig(encoder_layers=6)
    with pytest.raises(ValueError):
        AdapterConfig(num_matching_queries=110)


def test_input_norm_standardises_each_channel_of_the_map(tiny_pipe, tmp_path):
    """With input_norm="batch" a per-channel offset and (positive) scale of the probed map change
    nothing in training mode; without it they do. The running statistics survive a save / load."""
    from dptlib.method.checkpoint import load_adapter, save_adapter

    with pytest.raises(ValueError, match="input_norm"):
        AdapterConfig(input_norm="layer")
    unet = tiny_pipe.unet
    blocks = resolve_blocks("up0", unet)
    latents, t, text = _inputs()
    features = extract_features(unet, latents, t, text, blocks)
    scale = torch.rand(1, features[0].shape[1], 1, 1) + 0.5
    offset = torch.randn(1, features[0].shape[1], 1, 1) * 5
    outputs = {}
    for norm in ("none", "batch"):
        torch.manual_seed(0)
        config = AdapterConfig(d_model=32, heads=4, ffn=64, num_queries=12, num_matching_queries=3, dropout=0.0, input_norm=norm)
        adapter = DiscriminativeAdapter(config, [block_channels(unet, b) for b in blocks], text_dim=24).train()
        outputs[norm] = (adapter(features, t).match_embeddings, adapter([features[0] * scale + offset], t).match_embeddings)
    assert torch.allclose(*outputs["batch"], atol=1e-4)
    assert not torch.allclose(*outputs["none"], atol=1e-2)
    assert adapter.input_norms[0].num_batches_tracked.item() == 2
    save_adapter(adapter.eval(), SimpleNamespace(model="tiny"), blocks, tmp_path)
    loaded, _, meta = load_adapter(tmp_path)
    assert meta["adapter"]["input_norm"] == "batch"
    assert torch.equal(loaded.input_norms[0].running_mean, adapter.input_norms[0].running_mean)
    assert torch.allclose(loaded(features, t).match_embeddings, adapter(features, t).match_embeddings)


def test_channel_whitening_decorrelates_the_channels_and_keeps_running_estimates():
    """Channels mixed by a random matrix come out with mean 0 and covariance I in training mode;
    in eval mode the running estimates (after one batch at momentum 1: that batch's) do the same."""
    from dptlib.method.adapter import ChannelWhitening

    generator = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=generator) + 3 * torch.eye(6)
    features = torch.einsum("dc,bchw->bdhw", mix, torch.randn(8, 6, 5, 5, generator=generator)) + 4.0
    whitening = ChannelWhitening(6, momentum=1.0).train()
    rows = whitening(features).permute(0, 2, 3, 1).reshape(-1, 6)
    torch.testing.assert_close(rows.mean(0), torch.zeros(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cov(rows.T), torch.eye(6), atol=1e-3, rtol=0)
    torch.testing.assert_close(whitening.eval()(features), whitening.train()(features), atol=1e-4, rtol=0)
    assert not ChannelWhitening(6)(features.requires_grad_()).sum().backward()  # a gradient reaches the map
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_fusion_size_resizes_every_map(tiny_pipe):
    unet = tiny_pipe.unet
    blocks = resolve_blocks("all", unet)
    config = AdapterConfig(d_model=32, heads=4, ffn=64, num_queries=12, num_matching_queries=3, fusion_size=4)
    adapter = DiscriminativeAdapter(config, [block_channels(unet, b) for b in blocks], text_dim=24)
    latents, t, text = _inputs()
    features = extract_features(unet, latents, t, text, blocks)
    assert len({f.shape[-1] for f in features}) > 1  # maps of several sizes ...
    assert adapter(features, t).boxes.shape == (2, 9, 4)  # ... fused at 4 x 4


def test_timestep_embedding_is_the_sd_unets_sinusoid_bit_for_bit():
    """diffusers' get_timestep_embedding (cos first, no shift) equals the formula written out:
    exp(-ln(10^4) k / (d/2)) per frequency, t times it, [cos, sin]."""
    from dptlib.method.adapter import timestep_embedding

    t = torch.cat([torch.arange(0, 1000), torch.tensor([999, 0, 1, 500])])
    for dim in (64, 256):
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        assert torch.equal(timestep_embedding(t, dim), torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


def test_the_sine_option_is_the_releases_normalised_embedding():
    """AdapterConfig(position_embedding="sine") uses the embedding the release's adapter adds
    (DETR's normalised 2-D sine: coordinates (r + 1) / h * 2 pi, sin on even channels, y then x)."""
    from dptlib.method.adapter import AdapterConfig, DiscriminativeAdapter, normalized_sine_embedding

    adapter = DiscriminativeAdapter(AdapterConfig(d_model=32, heads=4, ffn=64, num_queries=6, num_matching_queries=2,
                                                  position_embedding="sine"), [8], 16)
    pos = adapter.position_embedding(3, 5, "cpu")
    assert torch.equal(pos, normalized_sine_embedding(3, 5, 32))
    y = pos.reshape(3, 5, 32)[:, 0, :16]  # the y half at column 0
    assert torch.allclose(y[1, 0], torch.tensor(2 / (3 + 1e-6) * 2 * math.pi).sin())  # row 1, channel 0: sin((1 + 1) / 3 * 2 pi)
