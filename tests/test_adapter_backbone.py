"""The adapter's shapes and gradients; the backbone's block registry and early exit."""

import pytest
import torch

from dptlib.adapter import AdapterConfig, DiscriminativeAdapter
from dptlib.backbone import block_channels, block_modules, extract_features, paper_block, resolve_blocks


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


def test_fusion_size_resizes_every_map(tiny_pipe):
    unet = tiny_pipe.unet
    blocks = resolve_blocks("all", unet)
    config = AdapterConfig(d_model=32, heads=4, ffn=64, num_queries=12, num_matching_queries=3, fusion_size=4)
    adapter = DiscriminativeAdapter(config, [block_channels(unet, b) for b in blocks], text_dim=24)
    latents, t, text = _inputs()
    features = extract_features(unet, latents, t, text, blocks)
    assert len({f.shape[-1] for f in features}) > 1  # maps of several sizes ...
    assert adapter(features, t).boxes.shape == (2, 9, 4)  # ... fused at 4 x 4
