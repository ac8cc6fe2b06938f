"""The backbone: a diffusers Stable Diffusion pipeline seen as a feature extractor (Eq. 1).

F_t = UNet_l(z_t, CLIP(y), t): the U-Net runs on the noisy latent z_t, conditioned on the text
encoder's hidden states, and **stops right after block l** (early exit): no compute is spent on
the blocks after it, and the features equal those of a full forward exactly.

Block names follow diffusers' module order: ``down0 .. down{n-1}``, ``mid``, ``up0 .. up{n-1}``.
The paper's Tab. 6 names map onto them as

    bottom1 = down0, bottom2 = down1, bottom3 = down2, middle = mid, up1 = up0, up2 = up1, up3 = up2

The paper lists each up block at the resolution it works at; the features here are taken at the
block's output, after its upsampler, so they are twice that size (SD-2.1 at 64x64 latents:
mid 8x8, up0 16x16, up1 32x32).

The "CLIP text embedding" CLIP(y) of Eq. 3 and 6 is the text encoder's pooled output (the final
layer-normed end-of-text token), as in the official code; its width is the text encoder's hidden
size (768 for SD-1.4, 1024 for SD-2.1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dptlib.config import resolve_model
from dptlib.files import check_safetensors

LOGGER = logging.getLogger(__name__)
LORA_FILE = "pytorch_lora_weights.safetensors"  # the file diffusers' save_lora_weights writes

PAPER_BLOCK_NAMES = {
    "bottom1": "down0", "bottom2": "down1", "bottom3": "down2", "middle": "mid", "up1": "up0", "up2": "up1", "up3": "up2",
}


@dataclass
class Backbone:
    """The parts of a Stable Diffusion pipeline DPT uses; ``pipe`` is the pipeline itself."""

    pipe: object

    @property
    def unet(self):
        return self.pipe.unet

    @property
    def vae(self):
        return self.pipe.vae

    @property
    def text_encoder(self):
        return self.pipe.text_encoder

    @property
    def tokenizer(self):
        return self.pipe.tokenizer

    @property
    def scheduler(self):
        return self.pipe.scheduler

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def text_dim(self) -> int:
        return self.text_encoder.config.hidden_size

    @property
    def num_train_timesteps(self) -> int:
        return self.scheduler.config.num_train_timesteps


def load_pipeline(model: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  lora: str | Path | None = None):
    """A stock diffusers ``StableDiffusionPipeline``: ``model`` is ``"toy"`` (the shipped toy SD),
    a hub id such as ``stabilityai/stable-diffusion-2-1`` (from the local cache when offline) or a
    local diffusers folder. ``lora``: a stage-2 folder (:func:`dptlib.method.checkpoint.save_tuned`),
    loaded by the stock ``pipe.load_lora_weights``."""
    from diffusers import StableDiffusionPipeline  # deferred: heavy

    model = resolve_model(model)
    if Path(model).exists() and not (Path(model) / "model_index.json").exists():
        raise FileNotFoundError(f"{model} is a folder without model_index.json: not a diffusers pipeline")
    pipe = StableDiffusionPipeline.from_pretrained(model, dtype=dtype, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        check_safetensors(Path(lora) / LORA_FILE, "stage 2's LoRA weights (save_tuned writes them)")
        pipe.load_lora_weights(Path(lora))
    return pipe.to(device)


def load_backbone(model: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Backbone:
    """:func:`load_pipeline`, frozen: the backbone of stage 1."""
    pipe = load_pipeline(model, device, dtype)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False).eval()
    return Backbone(pipe)


# --------------------------------------------------------------------------------------------
# Block registry
# --------------------------------------------------------------------------------------------
def block_modules(unet) -> dict[str, torch.nn.Module]:
    """Every probe-able block of a diffusers U-Net, in execution order."""
    blocks = {f"down{i}": b for i, b in enumerate(unet.down_blocks)}
    blocks["mid"] = unet.mid_block
    blocks.update({f"up{i}": b for i, b in enumerate(unet.up_blocks)})
    return blocks


def paper_block(name: str) -> str:
    """Our block name for a name of the paper's Tab. 6 ("bottom1" .. "up3")."""
    if name not in PAPER_BLOCK_NAMES:
        raise ValueError(f"{name!r} is not a block name of the paper; those are {list(PAPER_BLOCK_NAMES)}")
    return PAPER_BLOCK_NAMES[name]


def resolve_blocks(blocks: str | list[str], unet) -> list[str]:
    """Block names from "mid", "mid+down2+up0", "all" or a list, in U-Net execution order.

    "bottom1-3" and "middle" are read as the paper's names; the paper's "up1-3" collide with ours
    ("up1" is our up0), so they must go through :func:`paper_block`. Unknown names raise
    ``ValueError`` listing the known ones.
    """
    known = list(block_modules(unet))
    if isinstance(blocks, str):
        blocks = known if blocks == "all" else [b.strip() for b in blocks.split("+")]
    names = [PAPER_BLOCK_NAMES[b] if b.startswith("bottom") or b == "middle" else b for b in blocks]
    unknown = [b for b in names if b not in known]
    if unknown or not names:
        raise ValueError(f"unknown U-Net block(s) {unknown or blocks}; blocks: {known} (paper names: {list(PAPER_BLOCK_NAMES)})")
    return sorted(set(names), key=known.index)


def block_channels(unet, name: str) -> int:
    """Channels of a block's output feature map (its last ResNet's; samplers keep the width)."""
    return block_modules(unet)[name].resnets[-1].out_channels


# --------------------------------------------------------------------------------------------
# Early-exit feature extraction
# --------------------------------------------------------------------------------------------
class _EarlyExit(Exception):
    """Raised by the hook of the last probed block to stop the U-Net there."""


def _block_output(name: str, output):
    # down blocks return (hidden_states, residuals); the others return hidden_states
    return output[0] if name.startswith("down") else output


def extract_features(
    unet, latents: torch.Tensor, timesteps: torch.Tensor, text_hidden: torch.Tensor, blocks: list[str], early_exit: bool = True,
    return_output: bool = False,
):
    """Feature maps of ``blocks`` for noisy latents.

    latents (B, 4, h, w), timesteps (B,) or scalar, text_hidden (B, L, D_text) ->
    one (B, C_l, h_l, w_l) map per block, in execution order. With ``early_exit`` the U-Net stops
    after the last requested block; the hooks exist only during this call, so the pipeline's own
    U-Net calls are never cut short. Gradients flow to ``latents`` and any trainable weights.
    ``return_output=True`` (which needs ``early_exit=False``) also returns the U-Net's noise
    prediction (B, 4, h, w) of the same pass: features and denoising loss from one forward.
    """
    if return_output and early_exit:
        raise ValueError("return_output needs the full forward: pass early_exit=False")
    modules = block_modules(unet)
    captured: dict[str, torch.Tensor] = {}
    last = blocks[-1]

    def hook_for(name):
        def hook(module, inputs, output):
            captured[name] = _block_output(name, output)
            if early_exit and name == last:
                raise _EarlyExit

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in blocks]
    output = None
    try:
        output = unet(latents, timesteps, encoder_hidden_states=text_hidden).sample
    except _EarlyExit:
        pass
    finally:
        for handle in handles:
            handle.remove()
    features = [captured[name] for name in blocks]
    return (features, output) if return_output else features


# --------------------------------------------------------------------------------------------
# Text, images, noise
# --------------------------------------------------------------------------------------------
_WARNED_LONG: set[str] = set()  # the prompts already warned about in this process


def warn_long_prompts(tokenizer, texts: list[str]) -> list[str]:
    """Warn once (logger ``dptlib``) about the prompts of ``texts`` longer than the text encoder's
    window, which the tokenizer cuts to ``tokenizer.model_max_length`` tokens: how many, and the
    first. A prompt warned about once is not again. Returns the new long prompts."""
    limit = tokenizer.model_max_length
    unseen = [t for t in dict.fromkeys(texts) if t not in _WARNED_LONG]
    lengths = [len(ids) for ids in tokenizer(unseen, truncation=False, verbose=False).input_ids] if unseen else []
    long = [t for t, n in zip(unseen, lengths) if n > limit]
    if long:
        _WARNED_LONG.update(long)
        first = long[0] if len(long[0]) <= 80 else long[0][:77] + "..."
        LOGGER.warning(f"{len(long)} prompt(s) longer than the text encoder's {limit} tokens are cut to them "
                       f"(the first, {lengths[unseen.index(long[0])]} tokens: {first!r})")
    return long


def tokenize(backbone: Backbone, texts: list[str]) -> torch.Tensor:
    """(B, L) token ids, padded to the tokenizer's max length, as the pipeline pads them (a prompt
    longer than that is cut, with a warning: :func:`warn_long_prompts`)."""
    tokenizer = backbone.tokenizer
    warn_long_prompts(tokenizer, texts)
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(backbone.device)


def encode_text(backbone: Backbone, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden (B, L, D), pooled (B, D)): the U-Net's conditioning and the "CLIP text embedding"."""
    output = backbone.text_encoder(input_ids=tokenize(backbone, texts))
    return output.last_hidden_state, output.pooler_output


def encode_images(backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    """Scaled VAE latents (B, 4, h, w) of images (B, 3, H, W) in [-1, 1] (posterior means)."""
    return backbone.vae.encode(images.to(backbone.device, backbone.vae.dtype)).latent_dist.mean * backbone.vae.config.scaling_factor


def noise_latents(scheduler, latents: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z_t = sqrt(a_t) z_0 + sqrt(1 - a_t) noise with a diffusers scheduler's ``alphas_cumprod``
    (the forward process; h(x, t) of §3.1). latents, noise (B, 4, h, w); timesteps (B,)."""
    alphas = scheduler.alphas_cumprod.to(latents.device, latents.dtype)[timesteps.long()].view(-1, 1, 1, 1)
    return alphas.sqrt() * latents + (1 - alphas).sqrt() * noise


def add_noise(backbone: Backbone, latents: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """:func:`noise_latents` with the pipeline's own noise schedule."""
    return noise_latents(backbone.scheduler, latents, timesteps, noise)


def image_seed(seed: int, index: int) -> int:
    """The seed of one image's randomness: (run seed, image index) -> one integer. Every per-image
    draw (sampling noise, scoring noise) goes through here, so an image's noise never depends on
    the batch it is drawn in."""
    return int(seed) * 1_000_003 + int(index)


def image_generators(seed: int, indices, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per image, seeded by :func:`image_seed`."""
    return [torch.Generator(device).manual_seed(image_seed(seed, i)) for i in indices]


def image_noise(shape: tuple[int, ...], seed: int, indices) -> torch.Tensor:
    """(n, *shape) standard normal noise on the CPU, row i drawn from ``image_seed(seed, indices[i])``."""
    return torch.stack([torch.randn(shape, generator=g) for g in image_generators(seed, indices)])


def fuse(features: list[torch.Tensor], size: tuple[int, int] | None = None) -> list[torch.Tensor]:
    """Resize feature maps to one size (the first map's, or ``size``) by bilinear interpolation,
    ready to be added after a per-block projection (Tab. 6's additive fusion)."""
    size = size or tuple(features[0].shape[-2:])
    return [f if tuple(f.shape[-2:]) == tuple(size) else F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features]
