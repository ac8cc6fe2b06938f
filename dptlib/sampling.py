"""Sampling: seeded, batched generation with any diffusers Stable Diffusion pipeline.

Every image has its own generator, seeded by (seed, index of the prompt), so an image does not
depend on the batch it was drawn in: the same prompt and seed give the same image whatever the
batch size.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from tqdm.auto import tqdm


def image_generators(seed: int, indices, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per image, seeded by (seed, index)."""
    return [torch.Generator(device).manual_seed(int(seed) * 1_000_003 + int(i)) for i in indices]


@torch.no_grad()
def generate(
    pipe,
    prompts: list[str],
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int = 64,
    progress: bool = True,
    self_correct: dict | None = None,
    per_prompt: dict[str, list] | None = None,
    **pipe_kwargs,
) -> np.ndarray:
    """Images for ``prompts`` as uint8 (N, H, W, 3); ``pipe_kwargs`` go to the pipeline call.

    ``self_correct``: ``dict(adapter=..., blocks=..., eta=..., normalize=True, refresh_every=1)``
    turns on self-correction (Eq. 9) for every batch; None samples plainly.
    ``per_prompt``: pipeline arguments with one value per prompt (e.g. Attend-and-Excite's
    ``token_indices``), cut into the same batches as the prompts."""
    if not prompts:
        raise ValueError("no prompts to generate")
    for name, values in (per_prompt or {}).items():
        if len(values) != len(prompts):
            raise ValueError(f"per_prompt[{name!r}] has {len(values)} values for {len(prompts)} prompts")
    device = pipe.device
    out = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress or len(starts) == 1):
        chunk = prompts[start : start + batch_size]
        context = self_correction(pipe, prompts=chunk, **self_correct) if self_correct else nullcontext()
        with context:
            result = pipe(
                chunk,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=image_generators(seed, range(start, start + len(chunk)), device),
                output_type="np",
                **{name: values[start : start + len(chunk)] for name, values in (per_prompt or {}).items()},
                **pipe_kwargs,
            )
        out.append((np.clip(result.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# Self-correction (§3.3, Eq. 9)
# --------------------------------------------------------------------------------------------


def correction_gradient(unet, adapter, blocks, latents, timesteps, text_hidden, text_pooled, normalize: bool = True):
    """d s(z_t, y) / d z_t for latents (B, 4, h, w), through the U-Net up to the probed block
    (early exit) and the adapter. ``normalize`` rescales each sample's gradient to unit RMS, so
    that eta means the same step size whatever the model's gradient scale."""
    from .backbone import extract_features
    from .losses import matching_similarity

    with torch.enable_grad():
        z = latents.detach().requires_grad_(True)
        features = extract_features(unet, z, timesteps, text_hidden, blocks)
        similarity = matching_similarity(adapter(features, timesteps).match_embeddings, text_pooled)
        (gradient,) = torch.autograd.grad(similarity.sum(), z)
    if normalize:
        gradient = gradient / gradient.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1e-12)
    return gradient


@contextmanager
def self_correction(pipe, adapter, blocks, prompts: list[str], eta: float, normalize: bool = True, refresh_every: int = 1):
    """Within this block, every U-Net call of ``pipe`` first moves the latent it is given by
    eta * ds(z_t, y)/dz_t (Eq. 9) and predicts the noise from the moved latent; the scheduler's
    update still starts from the unmoved one. Works with the stock ``StableDiffusionPipeline`` and
    classifier-free guidance (the conditional half's gradient is applied to both halves).
    ``eta = 0`` leaves sampling bit-identical.

    ``refresh_every = k`` computes a fresh gradient at every k-th step only and moves the latents
    of the steps between by the last one (adjacent steps' gradients point much the same way);
    k = 1 is Eq. 9 exactly, k = 2 halves the extra cost.

    ``prompts`` must be the prompts of the pipeline call, one image per prompt.
    """
    if refresh_every < 1:
        raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
    from .backbone import Backbone, encode_text

    unet = pipe.unet
    original = unet.forward
    adapter = adapter.eval()
    with torch.no_grad():
        _, pooled = encode_text(Backbone(pipe), prompts)
    state = {"inside": False, "calls": 0, "gradient": None}

    def forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
        if state["inside"] or eta == 0:  # the gradient pass itself goes through the plain U-Net
            return original(sample, timestep, encoder_hidden_states, *args, **kwargs)
        n = len(pooled)
        guided = len(sample) == 2 * n
        z = sample[n:] if guided else sample
        hidden = encoder_hidden_states[n:] if guided else encoder_hidden_states
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(n)
        if state["calls"] % refresh_every == 0:
            state["inside"] = True
            try:
                state["gradient"] = correction_gradient(unet, adapter, blocks, z, t, hidden, pooled, normalize)
            finally:
                state["inside"] = False
        state["calls"] += 1
        corrected = z + eta * state["gradient"]
        sample = torch.cat([corrected, corrected]) if guided else corrected
        return original(sample, timestep, encoder_hidden_states, *args, **kwargs)

    unet.forward = forward
    try:
        yield
    finally:
        unet.forward = original
