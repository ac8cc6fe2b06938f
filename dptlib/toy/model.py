"""The toy world's Stable Diffusion, trained from scratch on 2 CPU cores and saved in the diffusers format.

Four parts, trained one after the other by :func:`build_toy_sd`:

1. a word-level **tokenizer** over the toy vocabulary (``PreTrainedTokenizerFast``);
2. a tiny **CLIP** (transformers ``CLIPModel``) trained contrastively on toy captions with hard
   negatives (swapped colours, changed shape / count / size, flipped relation). Its text tower is
   the pipeline's frozen text encoder, and its pooled output is the paper's "CLIP text embedding";
3. a tiny ``AutoencoderKL`` (32x32x3 -> 16x16x4);
4. a tiny ``UNet2DConditionModel`` (epsilon prediction, 10 % empty captions for classifier-free
   guidance, EMA weights), assembled with the others into a ``StableDiffusionPipeline``.

Beside it, a second, independent **evaluator CLIP** built with open_clip's custom-model config (other
seed, other architecture), for CLIP score and Fréchet features: the same open_clip scoring code
serves OpenCLIP ViT-H-14 at paper scale.

``load_toy_pipeline()`` loads the trained model shipped in ``dptlib/assets/toy-sd`` exactly as
``StableDiffusionPipeline.from_pretrained("stabilityai/stable-diffusion-2-1")`` loads SD-2.1.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from dptlib.config import TOY_EVALUATOR_DIR, TOY_SD_DIR, progress_bars, runs_dir, set_threads
from dptlib.data.images import to_model_images, to_uint8_images
from dptlib.method.backbone import load_pipeline, noise_latents
from dptlib.method.checkpoint import atomic_save_file, load_training_state, save_training_state
from dptlib.toy.world import (
    NUMBER_WORDS,
    PLURALS,
    POSITIONS,
    RELATIONS,
    SIZES,
    PromptSpec,
    ToyWorld,
    ToyWorldConfig,
    parse_image,
    parse_matches_scene,
    score_objects,
)

LOGGER = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<unk>", "<mask>", "<bos>")  # <eos> comes last: see toy_vocabulary
HARD_NEGATIVE_KINDS = ("colour swap", "colour change", "shape change", "count", "size", "left/right", "above/below", "position")
HARD_KINDS = ("colour swap", "size", "left/right", "above/below", "position")  # always used in training


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class ToyModelConfig:
    """Sizes and schedules of the toy SD; presets ``smoke`` (seconds) and ``toy`` (the shipped model)."""

    world: ToyWorldConfig = field(default_factory=ToyWorldConfig)
    seed: int = 0
    n_scenes: int = 20000  # training scenes (train split) for all four parts
    max_length: int = 16  # tokens, <bos> and <eos> included
    # text-encoder CLIP (transformers)
    clip_width: int = 96
    clip_layers: int = 3
    clip_heads: int = 4
    clip_patch: int = 4
    clip_dim: int = 64
    clip_steps: int = 3000
    clip_batch: int = 128
    clip_lr: float = 1e-3
    # evaluator CLIP (open_clip)
    evaluator_width: int = 64
    evaluator_layers: int = 3
    evaluator_patch: int = 8
    evaluator_steps: int = 1000
    evaluator_seed: int = 1
    # VAE
    vae_channels: tuple[int, ...] = (16, 32)
    vae_steps: int = 2000
    vae_batch: int = 64
    vae_lr: float = 2e-3
    vae_kl: float = 1e-6
    # U-Net
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_steps: int = 3200
    unet_batch: int = 64
    unet_lr: float = 1e-3
    ema_decay: float = 0.999
    empty_caption_rate: float = 0.1
    # share of U-Net captions that name every object in the scene: a caption that names only part
    # of a scene teaches that "a red circle" may come with other objects, and the model then adds
    # unasked-for objects (mostly copies of the asked one) to single-object prompts
    complete_caption_rate: float = 1.0
    checkpoint_every: int = 500

    PRESETS = {
        "smoke": dict(n_scenes=256, clip_width=32, clip_layers=1, clip_steps=20, clip_batch=32, evaluator_width=32,
                      evaluator_layers=1, evaluator_steps=10, vae_steps=20, vae_batch=16, unet_channels=(16, 32, 32),
                      unet_steps=20, unet_batch=16, checkpoint_every=10),
        "toy": {},
    }

    # what each part learns from, as field-name prefixes; the fields no part names (world, seed,
    # scenes, tokens) reach every part
    PART_INPUTS = {
        "clip": ("clip_",),
        "evaluator": ("clip_", "evaluator_"),  # the evaluator shares the CLIP's contrastive loop
        "vae": ("vae_",),
        "unet": ("clip_", "vae_", "unet_", "ema_decay", "empty_caption_rate", "complete_caption_rate"),
    }

    @classmethod
    def preset(cls, scale: str, **overrides) -> ToyModelConfig:
        if scale not in cls.PRESETS:
            raise ValueError(f"no toy-model preset for scale {scale!r}; presets: {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[scale], **overrides})

    def part_inputs(self, part: str) -> dict:
        """The fields that can change what ``part`` learns: the shared ones and those of
        ``PART_INPUTS[part]`` (the U-Net trains on the CLIP's text features and the VAE's latents,
        so their fields are its inputs too). ``checkpoint_every`` changes nothing."""
        if part not in self.PART_INPUTS:
            raise ValueError(f"unknown part {part!r}; parts: {list(self.PART_INPUTS)}")
        named = tuple(prefix for prefixes in self.PART_INPUTS.values() for prefix in prefixes)
        return {k: v for k, v in _jsonable(asdict(self)).items()
                if k != "checkpoint_every" and (k.startswith(self.PART_INPUTS[part]) or not k.startswith(named))}


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------
def toy_vocabulary(world: ToyWorldConfig | None = None) -> list[str]:
    """Every word the toy world's captions, prompts and referring expressions use.

    ``<eos>`` is the last (largest) id: open_clip pools text at the argmax token id, transformers'
    CLIP at the first ``eos_token_id`` (which must not be 2, the legacy pooling path)."""
    world = world or ToyWorldConfig()
    words = ["a", "an", "the", "and", "to", "of", "on", "at", "above", "below", *RELATIONS, *POSITIONS]
    words += list(dict(world.palette)) + list(world.shapes) + [PLURALS[s] for s in world.shapes]
    words += list(SIZES) + list(NUMBER_WORDS.values())
    flat = []
    for w in words:
        for token in w.split():
            if token not in flat:
                flat.append(token)
    return [*SPECIAL_TOKENS, *flat, "<eos>"]


def build_tokenizer(world: ToyWorldConfig | None = None, max_length: int = 16):
    """A word-level tokenizer over :func:`toy_vocabulary`, "<bos> words <eos>", padded to
    ``max_length`` with <pad>; saved / loaded with ``save_pretrained`` / ``from_pretrained``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors  # deferred: heavy
    from transformers import PreTrainedTokenizerFast  # deferred: heavy

    vocab = {w: i for i, w in enumerate(toy_vocabulary(world))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", model_max_length=max_length, padding_side="right",
    )


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """(B, max_length) token ids, padded and truncated as the SD pipeline does."""
    return tokenizer(
        [t.lower() for t in texts], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids


# --------------------------------------------------------------------------------------------
# Training data: scenes, captions, hard negatives
# --------------------------------------------------------------------------------------------
def colour_swap(spec: PromptSpec) -> PromptSpec:
    """``spec`` with the colours of its first two objects exchanged (the others kept)."""
    a, b, *rest = spec.objects
    return replace(spec, objects=(replace(a, colour=b.colour), replace(b, colour=a.colour), *rest))


def hard_negatives(spec: PromptSpec, objects, image_size: int, rng: np.random.Generator) -> dict[str, PromptSpec]:
    """Minimal edits of ``spec`` that are false of ``objects``, keyed by kind (``HARD_NEGATIVE_KINDS``)."""
    world = ToyWorldConfig(image_size=image_size)
    out: dict[str, PromptSpec] = {}
    objs = list(spec.objects)

    def edited(new_objects=None, **changes):
        return replace(spec, objects=tuple(new_objects or objs), **changes)

    if len(objs) >= 2 and objs[0].colour and objs[1].colour and objs[0].colour != objs[1].colour:
        out["colour swap"] = colour_swap(spec)
    k = int(rng.integers(len(objs)))
    if objs[k].colour:
        others = [c for c in world.colours if c != objs[k].colour]
        out["colour change"] = edited(objs[:k] + [replace(objs[k], colour=others[int(rng.integers(len(others)))])] + objs[k + 1 :])
    shapes = [s for s in world.shapes if s != objs[k].shape]
    out["shape change"] = edited(objs[:k] + [replace(objs[k], shape=shapes[int(rng.integers(len(shapes)))])] + objs[k + 1 :])
    counts = [c for c in (objs[k].count - 1, objs[k].count + 1) if 1 <= c <= 4]
    out["count"] = replace(edited(objs[:k] + [replace(objs[k], count=counts[int(rng.integers(len(counts)))])] + objs[k + 1 :]), category="counting")
    if objs[k].size:
        out["size"] = edited(objs[:k] + [replace(objs[k], size="small" if objs[k].size == "large" else "large")] + objs[k + 1 :])
    flips = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    if spec.relation:
        out["left/right" if spec.relation in ("left of", "right of") else "above/below"] = edited(relation=flips[spec.relation])
    if spec.position:
        out["position"] = edited(position={"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[spec.position])
    return {kind: neg for kind, neg in out.items() if not score_objects(neg, objects, image_size)["correct"]}


class SceneBank:
    """Rendered training scenes with their captions: images (N, 3, H, W) in [-1, 1]."""

    def __init__(self, world: ToyWorld, n: int, split: str = "train"):
        self.world = world
        self.scenes = world.scenes(split, n)
        self.images = to_model_images(np.stack([world.render(s) for s in self.scenes]))
        self.captions = [world.captions(s) for s in self.scenes]

    def __len__(self) -> int:
        return len(self.scenes)

    def batch(self, size: int, rng: np.random.Generator, negatives: bool = False, shares=(0.5, 0.2)):
        """Images (B, 3, H, W), one random caption each, and (if asked) every hard negative of
        that caption (a flat list, with the row of the image each belongs to).

        ``shares``: the parts of the captions drawn from the spatial captions and from the sized
        ones; the rest from all of them. Relations and sizes are what a bag-of-words encoder
        misses, and in-batch negatives almost never differ by a relation or a size alone."""
        index = rng.integers(0, len(self), size)
        texts, negs, owners = [], [], []
        for row, i in enumerate(index):
            specs = self.captions[i]
            spatial = [s for s in specs if s.relation or s.position]
            sized = [s for s in specs if any(o.size for o in s.objects)]
            draw = rng.random()
            pool = spatial if spatial and draw < shares[0] else sized if sized and draw < sum(shares) else specs
            spec = pool[int(rng.integers(len(pool)))]
            texts.append(spec.text)
            if negatives:
                options = hard_negatives(spec, self.scenes[i].objects, self.world.config.image_size, rng)
                # the kinds a bag of words cannot tell apart always; one of the easy kinds besides
                hard = [k for k in options if k in HARD_KINDS]
                easy = [k for k in options if k not in HARD_KINDS]
                kinds = hard + ([easy[int(rng.integers(len(easy)))]] if easy else [])
                found = [options[k].text for k in kinds]
                negs += found
                owners += [row] * len(found)
        return self.images[torch.from_numpy(index)], texts, negs, torch.tensor(owners, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# The text-encoder CLIP (transformers) and the evaluator CLIP (open_clip)
# --------------------------------------------------------------------------------------------
def build_text_clip(config: ToyModelConfig, tokenizer):
    from transformers import CLIPConfig, CLIPModel  # deferred: heavy

    width = config.clip_width
    clip_config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
            num_hidden_layers=config.clip_layers, num_attention_heads=config.clip_heads,
            max_position_embeddings=config.max_length, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(
            image_size=config.world.image_size, patch_size=config.clip_patch, hidden_size=width, num_channels=5,
            intermediate_size=2 * width, num_hidden_layers=config.clip_layers, num_attention_heads=config.clip_heads,
        ),
        projection_dim=config.clip_dim,
    )
    return CLIPModel(clip_config)


def with_coordinates(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 5, H, W): RGB plus x and y coordinate planes in [-1, 1] (CoordConv).

    The text-encoder CLIP's vision tower sees where things are from its first layer on, so that
    left/right and above/below become learnable in minutes on a CPU."""
    b, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.cat([images, xs.expand(b, 1, h, w), ys.expand(b, 1, h, w)], 1)


def text_clip_embeddings(model, input_ids=None, pixel_values=None):
    """Normalised projected embeddings of the transformers CLIP: texts (B, D) and/or images (B, D).
    ``pixel_values`` are RGB (B, 3, H, W) in [-1, 1]; the coordinate planes are added here."""
    text = image = None
    if input_ids is not None:
        pooled = model.text_model(input_ids=input_ids, attention_mask=(input_ids != model.config.text_config.pad_token_id).long()).pooler_output
        text = F.normalize(model.text_projection(pooled), dim=-1)
    if pixel_values is not None:
        pooled = model.vision_model(pixel_values=with_coordinates(pixel_values)).pooler_output
        image = F.normalize(model.visual_projection(pooled), dim=-1)
    return text, image


def evaluator_model_config(config: ToyModelConfig, vocab_size: int) -> dict:
    """open_clip custom-model config of the evaluator CLIP (a ViT with 8x8 patches)."""
    width = config.evaluator_width
    return {
        "embed_dim": config.clip_dim,
        "vision_cfg": {"image_size": config.world.image_size, "layers": config.evaluator_layers, "width": width,
                       "head_width": 16, "patch_size": config.evaluator_patch, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": config.max_length, "vocab_size": vocab_size, "width": width, "heads": 4,
                     "layers": config.evaluator_layers, "mlp_ratio": 2.0, "pool_type": "argmax", "pad_id": 0},
    }


def build_evaluator(config: ToyModelConfig, vocab_size: int):
    import open_clip  # deferred: heavy

    model_config = evaluator_model_config(config, vocab_size)
    return open_clip.model.CLIP(**model_config), model_config


def _contrastive_step(image_emb, text_emb, n_images, logit_scale, owners):
    """Symmetric InfoNCE over the batch, plus a hard-negative term: each image must prefer its
    caption to that caption's own minimal edits (NegCLIP-style). In a softmax over hundreds of
    in-batch texts a single left/right flip is too faint a signal to be learnt.

    image_emb (B, D); text_emb (B + K, D), the K hard negatives last; owners (K,) their images."""
    logits = logit_scale * image_emb @ text_emb.T  # (B, B + K)
    target = torch.arange(n_images)
    contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :n_images].T, target)) / 2
    if len(owners) == 0:
        return contrastive
    positive = logits[target, target]  # (B,)
    negative = logits[owners, n_images + torch.arange(len(owners))]  # (K,)
    # log(1 + sum_k exp(neg_k - pos)) per image, over its own negatives
    margins = torch.full((n_images, int(torch.bincount(owners, minlength=n_images).max())), -torch.inf)
    slot = torch.cat([torch.arange(c) for c in torch.bincount(owners, minlength=n_images).tolist()])
    margins = margins.index_put((owners, slot), negative - positive[owners])
    hard = torch.logsumexp(torch.cat([torch.zeros(n_images, 1), margins], 1), 1).mean()
    return contrastive + hard


def _cosine_lr(optimizer, base_lr: float, step: int, total: int, warmup: int = 100) -> None:
    lr = base_lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    for group in optimizer.param_groups:
        group["lr"] = lr


def _train(name, model, steps, lr, loss_fn, work_dir: Path, every: int, log: list, ema=None, ema_decay=0.999):
    """The one loop all four parts share: AdamW, cosine schedule, grad clip 1.0, atomic
    checkpoints every ``every`` steps and resume from the last one, loss log, tqdm bar."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    state_path = work_dir / f"{name}.state.safetensors"
    step = 0
    if state_path.exists():
        step, extra = load_training_state(state_path, model, optimizer, ema)
        log[:] = extra.get("log", [])
    bar = tqdm(range(step, steps), desc=name, initial=step, total=steps, mininterval=5, disable=not progress_bars())
    for step in bar:
        _cosine_lr(optimizer, lr, step, steps)
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - ema_decay)
        if step % 25 == 0:
            log.append((step, float(loss.detach())))
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if (step + 1) % every == 0 and step + 1 < steps:
            save_training_state(state_path, model, optimizer, step + 1, ema, extra={"log": log})
    return log


def _train_contrastive(name: str, model, embed, steps: int, seed: list[int], config: ToyModelConfig, bank: SceneBank,
                       tokenizer, work_dir: Path, log: list):
    """Contrastive training shared by both CLIPs: in-batch InfoNCE plus each caption's hard negatives."""
    rng = np.random.default_rng(seed)

    def loss_fn(step):
        images, texts, negs, owners = bank.batch(config.clip_batch, rng, negatives=True)
        text_emb, image_emb = embed(model, tokenize(tokenizer, texts + negs), images)
        return _contrastive_step(image_emb, text_emb, len(texts), model.logit_scale.exp().clamp(max=100), owners)

    _train(name, model, steps, config.clip_lr, loss_fn, work_dir, config.checkpoint_every, log)
    return model.eval()


def train_text_clip(config: ToyModelConfig, bank: SceneBank, tokenizer, work_dir: Path, log: list):
    torch.manual_seed(config.seed)
    model = build_text_clip(config, tokenizer)
    return _train_contrastive("clip", model, text_clip_embeddings, config.clip_steps, [config.seed, 1], config, bank,
                              tokenizer, work_dir, log)


def evaluator_embeddings(model, input_ids=None, images=None):
    """Normalised open_clip embeddings: texts (B, D) and/or images (B, D)."""
    text = F.normalize(model.encode_text(input_ids), dim=-1) if input_ids is not None else None
    image = F.normalize(model.encode_image(images), dim=-1) if images is not None else None
    return text, image


def train_evaluator(config: ToyModelConfig, bank: SceneBank, tokenizer, work_dir: Path, log: list):
    torch.manual_seed(config.evaluator_seed)
    model, model_config = build_evaluator(config, len(tokenizer))
    model = _train_contrastive("evaluator", model, evaluator_embeddings, config.evaluator_steps, [config.evaluator_seed, 2],
                               config, bank, tokenizer, work_dir, log)
    return model, model_config


@torch.no_grad()
def hard_negative_accuracy(embed, tokenizer, world: ToyWorld, n_scenes: int = 500, split: str = "test") -> dict[str, float]:
    """How often a CLIP prefers the true caption over its minimal edit, per edit kind, on held-out
    scenes. ``embed(input_ids, images) -> (text_emb, image_emb)``, both normalised."""
    rng = np.random.default_rng(123)
    hits: dict[str, list[bool]] = {k: [] for k in HARD_NEGATIVE_KINDS}
    for scene in world.scenes(split, n_scenes):
        image = to_model_images(world.render(scene)[None])
        pairs = []
        for spec in world.captions(scene):
            for kind, neg in hard_negatives(spec, scene.objects, scene.image_size, rng).items():
                pairs.append((kind, spec.text, neg.text))
        if not pairs:
            continue
        texts = [t for _, pos, neg in pairs for t in (pos, neg)]
        text_emb, image_emb = embed(tokenize(tokenizer, texts), image)
        sims = (text_emb @ image_emb[0]).view(-1, 2)
        for (kind, _, _), (pos, neg) in zip(pairs, sims):
            hits[kind].append(bool(pos > neg))
    return {k: float(np.mean(v)) for k, v in hits.items() if v}


# --------------------------------------------------------------------------------------------
# VAE and U-Net
# --------------------------------------------------------------------------------------------
def build_vae(config: ToyModelConfig):
    from diffusers import AutoencoderKL  # deferred: heavy

    n = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=config.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1, norm_num_groups=8, sample_size=config.world.image_size,
    )


def train_vae(config: ToyModelConfig, bank: SceneBank, work_dir: Path, log: list):
    torch.manual_seed(config.seed)
    vae = build_vae(config)
    rng = np.random.default_rng([config.seed, 3])

    def loss_fn(step):
        index = torch.from_numpy(rng.integers(0, len(bank), config.vae_batch))
        images = bank.images[index]
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        return F.mse_loss(recon, images) + F.l1_loss(recon, images) + config.vae_kl * posterior.kl().mean()

    _train("vae", vae, config.vae_steps, config.vae_lr, loss_fn, work_dir, config.checkpoint_every, log)
    vae.eval()
    with torch.no_grad():  # SD's scaling factor: latents of unit variance for the U-Net
        latents = torch.cat([vae.encode(bank.images[i : i + 256]).latent_dist.mean for i in range(0, min(2048, len(bank)), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae


def build_unet(config: ToyModelConfig, cross_attention_dim: int):
    from diffusers import UNet2DConditionModel  # deferred: heavy

    down = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    up = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    return UNet2DConditionModel(
        sample_size=config.world.image_size // 2 ** (len(config.vae_channels) - 1), in_channels=4, out_channels=4,
        block_out_channels=config.unet_channels, down_block_types=down, up_block_types=up, layers_per_block=1,
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8,
    )


def build_scheduler():
    """SD's noise schedule (scaled-linear betas 0.00085-0.012, 1000 steps) as a DDIM sampler."""
    from diffusers import DDIMScheduler  # deferred: heavy

    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )


def complete_captions(scene, specs: list[PromptSpec]) -> list[PromptSpec]:
    """The captions of ``scene`` that account for every object in it."""
    return [s for s in specs if sum(o.count for o in s.objects) == len(scene.objects)]


def train_unet(config: ToyModelConfig, bank: SceneBank, tokenizer, text_encoder, vae, work_dir: Path, log: list):
    torch.manual_seed(config.seed)
    unet = build_unet(config, text_encoder.config.hidden_size)
    ema = copy.deepcopy(unet).requires_grad_(False)
    scheduler = build_scheduler()
    rng = np.random.default_rng([config.seed, 4])
    with torch.no_grad():
        latents = torch.cat([vae.encode(bank.images[i : i + 256]).latent_dist.mean for i in range(0, len(bank), 256)])
        latents = latents * vae.config.scaling_factor
    complete = [complete_captions(scene, specs) for scene, specs in zip(bank.scenes, bank.captions)]

    def loss_fn(step):
        index = rng.integers(0, len(bank), config.unet_batch)
        texts = []
        for i in index:
            draw = rng.random()
            pool = complete[i] if draw < config.complete_caption_rate and complete[i] else bank.captions[i]
            texts.append("" if rng.random() < config.empty_caption_rate else pool[int(rng.integers(len(pool)))].text)
        with torch.no_grad():
            ids = tokenize(tokenizer, texts)
            hidden = text_encoder(input_ids=ids).last_hidden_state
        x0 = latents[torch.from_numpy(index)]
        t = torch.from_numpy(rng.integers(0, scheduler.config.num_train_timesteps, config.unet_batch))
        noise = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
        noisy = noise_latents(scheduler, x0, t, noise)
        return F.mse_loss(unet(noisy, t, encoder_hidden_states=hidden).sample, noise)

    _train("unet", unet, config.unet_steps, config.unet_lr, loss_fn, work_dir, config.checkpoint_every, log, ema=ema,
           ema_decay=config.ema_decay)
    return ema.eval()


# --------------------------------------------------------------------------------------------
# Assembly, saving, loading
# --------------------------------------------------------------------------------------------
def assemble_pipeline(tokenizer, text_encoder, vae, unet):
    """A stock ``StableDiffusionPipeline`` (DDIM, no safety checker) from the toy parts."""
    from diffusers import StableDiffusionPipeline  # deferred: heavy

    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=build_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_random_pipeline(config: ToyModelConfig | None = None, text_width: int = 32, seed: int = 0):
    """An untrained pipeline of the toy architecture (random weights): for tests of the plumbing
    (early exit, LoRA export, self-correction) that need no trained model."""
    from transformers import CLIPTextConfig, CLIPTextModel  # deferred: heavy

    config = config or ToyModelConfig.preset("smoke")
    tokenizer = build_tokenizer(config.world, config.max_length)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=2 * text_width, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=config.max_length, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    pipe = assemble_pipeline(tokenizer, text_encoder, build_vae(config), build_unet(config, text_width))
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False).eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_toy_sd(config: ToyModelConfig, out_dir: str | Path = TOY_SD_DIR, evaluator_dir: str | Path = TOY_EVALUATOR_DIR,
                 work_dir: str | Path | None = None, threads: int | None = None) -> dict:
    """Train every part, save the pipeline and the evaluator, and return the training report.

    Resumable: each part's final weights and periodic training states live in ``work_dir``; a
    killed build restarts from the last checkpoint of the part it was on. ``threads`` holds for
    the build only: torch's thread count is restored afterwards.
    """
    previous = torch.get_num_threads()
    try:
        return _build_toy_sd(config, out_dir, evaluator_dir, work_dir, set_threads(threads))
    finally:
        torch.set_num_threads(previous)


def _build_toy_sd(config: ToyModelConfig, out_dir, evaluator_dir, work_dir, threads: int) -> dict:
    from transformers import CLIPTextModel  # deferred: heavy

    out_dir, evaluator_dir = Path(out_dir), Path(evaluator_dir)
    work_dir = Path(work_dir or out_dir.parent / f".{out_dir.name}-work")
    work_dir.mkdir(parents=True, exist_ok=True)
    world = ToyWorld(config.world)
    tokenizer = build_tokenizer(config.world, config.max_length)
    report: dict = {"config": _jsonable(asdict(config)), "threads": threads, "seconds": {}, "loss": {}}
    start = time.time()
    bank = SceneBank(world, config.n_scenes)
    report["seconds"]["data"] = time.time() - start

    def part(name, train):
        t0, log = time.time(), []
        done = work_dir / f"{name}.done.json"
        _forget_if_stale(work_dir, name, config.part_inputs(name))
        result = train(log)
        report["seconds"][name] = json.loads(done.read_text())["seconds"] if done.exists() else time.time() - t0
        report["loss"][name] = json.loads(done.read_text())["loss"] if done.exists() else log
        done.write_text(json.dumps({"seconds": report["seconds"][name], "loss": report["loss"][name]}))
        return result

    clip = part("clip", lambda log: _cached(work_dir / "clip.safetensors", lambda: build_text_clip(config, tokenizer),
                                             lambda: train_text_clip(config, bank, tokenizer, work_dir, log)))
    evaluator = part("evaluator", lambda log: _cached(work_dir / "evaluator.safetensors",
                                                       lambda: build_evaluator(config, len(tokenizer))[0],
                                                       lambda: train_evaluator(config, bank, tokenizer, work_dir, log)[0]))
    vae = part("vae", lambda log: _cached(work_dir / "vae.safetensors", lambda: _vae_with_scale(config, work_dir),
                                           lambda: train_vae(config, bank, work_dir, log), keep_scale=work_dir))
    text_encoder = CLIPTextModel(clip.config.text_config)
    text_encoder.load_state_dict(clip.text_model.state_dict())
    text_encoder.eval().requires_grad_(False)
    unet = part("unet", lambda log: _cached(work_dir / "unet.safetensors",
                                             lambda: build_unet(config, text_encoder.config.hidden_size),
                                             lambda: train_unet(config, bank, tokenizer, text_encoder, vae, work_dir, log)))

    pipe = assemble_pipeline(tokenizer, text_encoder, vae, unet)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    evaluator_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_file(evaluator.state_dict(), evaluator_dir / "open_clip_model.safetensors")
    # open_clip registers a custom model by its config file's name: "toy_evaluator"
    (evaluator_dir / "toy_evaluator.json").write_text(json.dumps(evaluator_model_config(config, len(tokenizer)), indent=1))
    tokenizer.save_pretrained(evaluator_dir / "tokenizer")
    atomic_save_file(clip.state_dict(), out_dir / "clip" / "model.safetensors")
    (out_dir / "clip").mkdir(exist_ok=True)
    clip.config.to_json_file(out_dir / "clip" / "config.json")

    report["clip_hard_negatives"] = hard_negative_accuracy(lambda ids, img: text_clip_embeddings(clip, ids, img), tokenizer, world)
    report["evaluator_hard_negatives"] = hard_negative_accuracy(lambda ids, img: evaluator_embeddings(evaluator, ids, img), tokenizer, world)
    report["vae"] = vae_quality(vae, world)
    # training time of every part, also of parts finished by an earlier (killed) run
    report["seconds"]["total"] = sum(report["seconds"][k] for k in ("data", "clip", "evaluator", "vae", "unet"))
    report["seconds"]["this_run"] = time.time() - start
    report["parameters"] = {
        "text_encoder": _count(text_encoder), "clip": _count(clip), "evaluator": _count(evaluator), "vae": _count(vae), "unet": _count(unet),
    }
    report["files"] = {str(p.relative_to(out_dir.parent)): _sha256(p) for d in (out_dir, evaluator_dir)
                       for p in sorted(d.rglob("*")) if p.is_file() and p.name != "PROVENANCE.json"}
    return report


def _vae_with_scale(config, work_dir):
    vae = build_vae(config)
    scale = work_dir / "vae.scale.json"
    if scale.exists():
        vae.register_to_config(scaling_factor=json.loads(scale.read_text())["scaling_factor"])
    return vae


def _forget_if_stale(work_dir: Path, name: str, inputs: dict) -> None:
    """Delete ``name``'s weights, training state and log from ``work_dir`` if they were made with
    other inputs than ``inputs`` (or by a build that did not record them), then record ``inputs``.

    Without this a changed configuration would silently reuse a part trained under the old one."""
    stamp = work_dir / f"{name}.config.json"
    files = [work_dir / f"{name}{suffix}" for suffix in (".safetensors", ".state.safetensors", ".done.json", ".scale.json")]
    recorded = json.loads(stamp.read_text()) if stamp.exists() else None
    if recorded != inputs and any(f.exists() for f in files):
        why = ("no record of its configuration" if recorded is None else
               "changed: " + ", ".join(sorted(k for k in inputs if recorded.get(k) != inputs[k])))
        LOGGER.info(f"{work_dir / name}: {why}; training it again")
        for f in files:
            f.unlink(missing_ok=True)
    stamp.write_text(json.dumps(inputs, indent=1, sort_keys=True))


def _cached(path: Path, build, train, keep_scale: Path | None = None):
    """Load a finished part from ``path`` or train it and save it there (atomically)."""

    if path.exists():
        model = build()
        model.load_state_dict(load_file(path))
        return model.eval()
    model = train()
    atomic_save_file(model.state_dict(), path)
    if keep_scale is not None:
        (keep_scale / "vae.scale.json").write_text(json.dumps({"scaling_factor": model.config.scaling_factor}))
    return model


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@torch.no_grad()
def vae_quality(vae, world: ToyWorld, n_scenes: int = 500) -> dict[str, float]:
    """PSNR (dB) of VAE reconstructions of held-out scenes, and how often the oracle still reads
    the reconstruction exactly."""
    scenes = world.scenes("test", n_scenes)
    images = to_model_images(np.stack([world.render(s) for s in scenes]))
    recon = torch.cat([vae.decode(vae.encode(images[i : i + 100]).latent_dist.mean).sample for i in range(0, len(images), 100)])
    recon = recon.clamp(-1, 1)
    mse = ((recon - images) / 2).pow(2).flatten(1).mean(1)
    psnr = float((10 * torch.log10(1 / mse)).mean())
    rgb = to_uint8_images(recon)
    oracle = float(np.mean([parse_matches_scene(parse_image(r, world.config), s) for r, s in zip(rgb, scenes)]))
    return {"psnr_db": psnr, "oracle_on_reconstructions": oracle}


def load_toy_pipeline(path: str | Path = TOY_SD_DIR, device: str = "cpu", lora: str | Path | None = None):
    """The shipped toy SD, loaded by the stock diffusers loader (the SD-2.1 code path); with
    ``lora``, a stage-2 folder (:func:`dptlib.method.checkpoint.save_tuned`), its LoRA loaded by the stock
    ``pipe.load_lora_weights``."""
    path = Path(path)
    if not (path / "model_index.json").exists():
        raise FileNotFoundError(f"no diffusers pipeline at {path}: run `python -m dptlib.toy.model` (or make reproduce) to train one")
    return load_pipeline(path, device, lora=lora)


def load_text_clip(path: str | Path = TOY_SD_DIR / "clip"):
    """The whole text-encoder CLIP (both towers) saved beside the pipeline."""
    from transformers import CLIPConfig, CLIPModel  # deferred: heavy

    path = Path(path)
    model = CLIPModel(CLIPConfig.from_json_file(path / "config.json"))
    model.load_state_dict(load_file(path / "model.safetensors"))
    return model.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train the toy world's Stable Diffusion and evaluator CLIP from scratch.")
    parser.add_argument("--scale", default="toy", help="smoke | toy")
    parser.add_argument("--out", default=str(TOY_SD_DIR))
    parser.add_argument("--evaluator-out", default=str(TOY_EVALUATOR_DIR))
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = ToyModelConfig.preset(args.scale)
    work_dir = args.work_dir or runs_dir(args.scale) / "toymodel-work"
    report = build_toy_sd(config, args.out, args.evaluator_out, work_dir, args.threads)
    report["command"] = f"python -m dptlib.toy.model --scale {args.scale}"
    provenance = Path(args.out) / "PROVENANCE.json"
    provenance.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("seconds", "clip_hard_negatives", "evaluator_hard_negatives", "vae", "parameters")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
