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

from dptlib.config import SCHEDULERS, progress_bars
from dptlib.method.backbone import Backbone, encode_text, extract_features, image_generators, image_noise, warn_long_prompts
from dptlib.method.losses import matching_similarity


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
    indices: list[int] | None = None,
    scheduler: str | None = None,
    **pipe_kwargs,
) -> np.ndarray:
    """Images for ``prompts`` as uint8 (N, H, W, 3); ``pipe_kwargs`` go to the pipeline call.

    ``self_correct``: ``dict(adapter=..., blocks=..., eta=..., normalize=True, refresh_every=1,
    variant="paper", direction="gradient")`` turns on self-correction (Eq. 9, :func:`self_correction`)
    for every batch; None samples plainly. ``direction="random"`` is its null control: the same
    unit-RMS step along a random direction fixed per image (drawn from the image's seed and index).
    ``per_prompt``: pipeline arguments with one value per prompt (e.g. Attend-and-Excite's
    ``token_indices``), cut into the same batches as the prompts. ``indices``: each prompt's
    image index, which seeds its noise with ``seed`` (default: its position in ``prompts``); a list
    drawn in parts, or a subset of a longer one, keeps its images by passing their indices.
    ``scheduler``: a name of :data:`dptlib.config.SCHEDULERS` samples with that scheduler
    (:func:`scheduler_named`) for this call only; None keeps ``pipe.scheduler``."""
    if not prompts:
        raise ValueError("no prompts to generate")
    for name, values in (per_prompt or {}).items():
        if len(values) != len(prompts):
            raise ValueError(f"per_prompt[{name!r}] has {len(values)} values for {len(prompts)} prompts")
    indices = list(range(len(prompts))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(prompts):
        raise ValueError(f"{len(indices)} image indices for {len(prompts)} prompts")
    if getattr(pipe, "tokenizer", None) is not None:  # the pipeline cuts them silently (its logger is quieted)
        warn_long_prompts(pipe.tokenizer, list(prompts))
    device = pipe.device
    out = []
    starts = range(0, len(prompts), batch_size)
    with scheduler_swapped(pipe, scheduler):
        for start in tqdm(starts, desc="generate", disable=not progress_bars(progress) or len(starts) == 1):
            chunk = prompts[start : start + batch_size]
            chunk_indices = indices[start : start + len(chunk)]
            images = dict(direction_seed=seed, indices=chunk_indices)
            context = self_correction(pipe, prompts=chunk, **images, **self_correct) if self_correct else nullcontext()
            with context:
                result = pipe(
                    chunk,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                    generator=image_generators(seed, chunk_indices, device),
                    output_type="np",
                    **{name: values[start : start + len(chunk)] for name, values in (per_prompt or {}).items()},
                    **pipe_kwargs,
                )
            out.append((np.clip(result.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def scheduler_named(pipe, name: str):
    """A new scheduler of kind ``name`` (a key of :data:`dptlib.config.SCHEDULERS`, e.g. ``"dpm++"``)
    built from ``pipe.scheduler``'s config, so the noise schedule (betas, prediction type) stays the
    model's. Raises ``ValueError`` naming the allowed kinds for another name."""
    import diffusers  # deferred: heavy

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; schedulers: {list(SCHEDULERS)} (or None: the pipeline's own)")
    return getattr(diffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config)


@contextmanager
def scheduler_swapped(pipe, name: str | None):
    """Within this block ``pipe`` samples with :func:`scheduler_named` ``(pipe, name)``; its own
    scheduler is back afterwards. ``name=None`` changes nothing (the same object stays)."""
    if name is None:
        yield
        return
    own = pipe.scheduler
    pipe.scheduler = scheduler_named(pipe, name)
    try:
        yield
    finally:
        pipe.scheduler = own


# --------------------------------------------------------------------------------------------
# Self-correction (§3.3, Eq. 9)
# --------------------------------------------------------------------------------------------


def correction_gradient(unet, adapter, blocks, latents, timesteps, text_hidden, text_pooled, normalize: bool = True):
    """d s(z_t, y) / d z_t for latents (B, 4, h, w), through the U-Net up to the probed block
    (early exit) and the adapter. ``normalize`` rescales each sample's gradient to unit RMS, so
    that eta means the same step size whatever the model's gradient scale."""
    with torch.enable_grad():
        z = latents.detach().requires_grad_(True)
        features = extract_features(unet, z, timesteps, text_hidden, blocks)
        similarity = matching_similarity(adapter(features, timesteps).match_embeddings, text_pooled)
        (gradient,) = torch.autograd.grad(similarity.sum(), z)
    if normalize:  # in float32: a half-precision square of a small gradient underflows
        gradient = gradient.float()
        gradient = (gradient / gradient.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1e-12)).to(latents.dtype)
    return gradient


SC_VARIANTS = ("paper", "official")
SC_DIRECTIONS = ("gradient", "random")
NULL_SEED_OFFSET = 7_919  # the random directions' seeds differ from the initial noise's (seed + offset)


def random_directions(shape: tuple[int, ...], seed: int, indices) -> torch.Tensor:
    """(n, *shape) unit-RMS directions, row i drawn from image ``indices[i]``'s own generator
    (seed ``seed + NULL_SEED_OFFSET``): the same image gets the same direction in any batch."""
    directions = image_noise(shape, seed + NULL_SEED_OFFSET, list(indices))
    return directions / directions.pow(2).mean(dim=tuple(range(1, directions.dim())), keepdim=True).sqrt()


@contextmanager
def self_correction(pipe, adapter, blocks, prompts: list[str], eta: float, normalize: bool = True, refresh_every: int = 1,
                    variant: str = "paper", direction: str = "gradient", direction_seed: int = 0, indices=None):
    """Within this block, every U-Net call of ``pipe`` first moves the latent it is given,

        z_t <- z_t + eta * ds(z_t, y)/dz_t                                  (Eq. 9)

    and predicts the noise from the moved latent. ``variant="paper"`` (Eq. 9 as written): the
    scheduler's update then starts from the moved latent too, so z_{t-1} follows from z_t-hat.
    ``variant="official"`` (the authors' release): only the noise prediction sees the moved
    latent; the update starts from the unmoved one.

    Works with the stock ``StableDiffusionPipeline`` and classifier-free guidance: the gradient is
    the conditional half's, and both halves of the guided batch are moved by it. The paper
    variant needs a scheduler whose model input is the latent itself (DDIM, DDPM; checked at
    every step). ``eta = 0`` leaves sampling bit-identical.

    ``refresh_every = k`` computes a fresh gradient at every k-th step only and moves the latents
    of the steps between by the last one (adjacent steps' gradients point much the same way);
    k = 1 is Eq. 9 exactly, k = 2 halves the extra cost.

    ``direction="random"`` is self-correction's null control: every step moves each latent by
    ``eta`` along one unit-RMS random direction, fixed per image for the whole trajectory
    (:func:`random_directions` of ``direction_seed`` and the images' ``indices``, default
    ``range(len(prompts))``): a step of the same size that knows nothing of the text. Each step
    matches the gradient step's size; the whole path does not have to: the fixed direction adds
    up in a straight line, the gradient's only as far as adjacent steps' gradients agree, so the
    null moves an image at least as far as self-correction does.

    ``prompts`` must be the prompts of the pipeline call, one image per prompt.
    """
    if refresh_every < 1:
        raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
    if variant not in SC_VARIANTS:
        raise ValueError(f"unknown self-correction variant {variant!r}; variants: {list(SC_VARIANTS)}")
    if direction not in SC_DIRECTIONS:
        raise ValueError(f"unknown self-correction direction {direction!r}; directions: {list(SC_DIRECTIONS)}")
    if normalize is False and direction == "random":
        raise ValueError("direction='random' is a unit-RMS step: it needs normalize=True")
    indices = range(len(prompts)) if indices is None else indices
    if len(indices) != len(prompts):
        raise ValueError(f"{len(indices)} image indices for {len(prompts)} prompts")
    unet, scheduler = pipe.unet, pipe.scheduler
    original_forward, original_step = unet.forward, scheduler.step
    adapter = adapter.eval().to(unet.device)  # a checkpoint loads on the CPU
    with torch.no_grad():
        _, pooled = encode_text(Backbone(pipe), prompts)
    state = {"inside": False, "calls": 0, "gradient": None, "seen": None, "moved": None}

    def forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
        if state["inside"] or eta == 0:  # the gradient pass itself goes through the plain U-Net
            return original_forward(sample, timestep, encoder_hidden_states, *args, **kwargs)
        n = len(pooled)
        guided = len(sample) == 2 * n
        z = sample[n:] if guided else sample  # the conditional half
        hidden = encoder_hidden_states[n:] if guided else encoder_hidden_states
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(n)
        if direction == "random":
            if state["gradient"] is None:  # drawn once: one direction per image for the whole trajectory
                state["gradient"] = random_directions(tuple(z.shape[1:]), direction_seed, indices).to(z.device, z.dtype)
        elif state["calls"] % refresh_every == 0:
            state["inside"] = True
            try:
                state["gradient"] = correction_gradient(unet, adapter, blocks, z, t, hidden, pooled, normalize)
            finally:
                state["inside"] = False
        state["calls"] += 1
        corrected = z + eta * state["gradient"]
        state["seen"], state["moved"] = z, corrected
        return original_forward(torch.cat([corrected, corrected]) if guided else corrected, timestep, encoder_hidden_states,
                                *args, **kwargs)

    def step(model_output, timestep, sample, *args, **kwargs):
        if state["moved"] is not None:
            if not torch.equal(sample, state["seen"]):
                raise RuntimeError("the scheduler steps from another latent than the U-Net saw (a scheduler that scales "
                                   "its model input?): use variant='official' with it")
            sample, state["moved"] = state["moved"], None
        return original_step(model_output, timestep, sample, *args, **kwargs)

    # restore what the instances held: their own wrappers, or nothing (then the class's method)
    saved = {"forward": vars(unet).get("forward"), "step": vars(scheduler).get("step")}
    unet.forward = forward
    if variant == "paper":
        scheduler.step = step
    try:
        yield
    finally:
        for obj, name in ((unet, "forward"), (scheduler, "step")):
            if saved[name] is not None:
                setattr(obj, name, saved[name])
            elif name in vars(obj):
                delattr(obj, name)
