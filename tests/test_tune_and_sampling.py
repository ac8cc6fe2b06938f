"""Stage 2 (LoRA tuning, diffusers export) and self-correction on a tiny random pipeline."""

import numpy as np
import pytest
import torch

from dptlib.train import ProbeConfig, TuneConfig, load_adapter, probe, tune
from test_probe import tiny_backbone, tiny_data


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage1")
    backbone, data = tiny_backbone(), tiny_data(root / "data")
    probe(ProbeConfig.preset("smoke", steps=3), data, root / "probe", backbone=backbone, progress=False)
    backbone.pipe.save_pretrained(root / "base")
    return root, data


def test_tuned_lora_round_trips_through_a_stock_pipeline(probed):
    from diffusers import StableDiffusionPipeline

    root, data = probed
    backbone = tiny_backbone()
    scores = []
    result = tune(TuneConfig.preset("smoke", lr=1e-2), data, root / "probe", root / "tuned", backbone=backbone, progress=False,
                  validate=lambda step, model: scores.append(step) or {"score": float(-step)})
    # the start is scored too, but the best of the tuned checkpoints is kept
    assert scores == [0, 2, 4] and result["best"]["step"] == 2
    assert (root / "tuned" / "best" / "pytorch_lora_weights.safetensors").exists()
    latents, t, text = torch.randn(2, 4, 16, 16), torch.tensor([5, 700]), torch.randn(2, 16, 32)
    with torch.no_grad():
        tuned = backbone.unet(latents, t, encoder_hidden_states=text).sample
        pipe = StableDiffusionPipeline.from_pretrained(root / "base")
        base = pipe.unet(latents, t, encoder_hidden_states=text).sample
        pipe.load_lora_weights(root / "tuned")
        loaded = pipe.unet(latents, t, encoder_hidden_states=text).sample
    assert not torch.allclose(base, tuned, atol=1e-6)  # tuning changed the U-Net ...
    torch.testing.assert_close(loaded, tuned, rtol=1e-5, atol=1e-6)  # ... and the stock loader reproduces it


def test_lora_only_keeps_the_adapter_fixed(probed):
    root, data = probed
    backbone = tiny_backbone()
    tune(TuneConfig.preset("smoke", trainable="lora", objectives="matching", validate_every=0), data, root / "probe",
         root / "lora-only", backbone=backbone, progress=False)
    before, _, _ = load_adapter(root / "probe")
    after, _, _ = load_adapter(root / "lora-only")
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))


def test_mse_term_runs_with_the_full_forward(probed):
    root, data = probed
    result = tune(TuneConfig.preset("smoke", steps=2, mse_coef=0.5, validate_every=0), data, root / "probe", root / "mse",
                  backbone=tiny_backbone(), progress=False)
    assert all("mse" in e and np.isfinite(e["mse"]) for e in result["log"])


def test_self_correction_step_raises_the_matching_score(probed):
    from dptlib.backbone import encode_text, extract_features
    from dptlib.losses import matching_similarity
    from dptlib.sampling import correction_gradient

    root, _ = probed
    backbone = tiny_backbone()
    adapter, blocks, _ = load_adapter(root / "probe")
    hidden, pooled = encode_text(backbone, ["a red circle", "two blue squares"])
    z, t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3)), torch.tensor([400, 400])

    def s(latents):
        with torch.no_grad():
            return matching_similarity(adapter(extract_features(backbone.unet, latents, t, hidden, blocks), t).match_embeddings, pooled)

    gradient = correction_gradient(backbone.unet, adapter, blocks, z, t, hidden, pooled, normalize=True)
    assert (s(z + 0.01 * gradient) > s(z)).all()
    assert (s(z - 0.01 * gradient) < s(z)).all()


def test_eta_zero_is_bit_identical_and_eta_changes_images(probed):
    from dptlib.sampling import generate

    root, _ = probed
    backbone = tiny_backbone()
    adapter, blocks, _ = load_adapter(root / "probe")
    prompts = ["a red circle", "two blue squares"]
    kwargs = dict(seed=1, num_inference_steps=3, progress=False)
    plain = generate(backbone.pipe, prompts, **kwargs)
    zero = generate(backbone.pipe, prompts, self_correct=dict(adapter=adapter, blocks=blocks, eta=0.0), **kwargs)
    moved = generate(backbone.pipe, prompts, self_correct=dict(adapter=adapter, blocks=blocks, eta=0.5), **kwargs)
    assert np.array_equal(plain, zero)
    assert not np.array_equal(plain, moved)
    again = generate(backbone.pipe, prompts, **kwargs)  # the patch is gone after the call
    assert np.array_equal(plain, again)
