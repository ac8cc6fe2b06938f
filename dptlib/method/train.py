"""Training: stage 1, discriminative probing (§3.1, Eq. 8).

``probe(config)`` trains the discriminative adapter on a frozen Stable Diffusion with the matching
loss (Eq. 3-4) on septuples and the grounding loss (Eq. 6-7) on referring expressions. Per step,
every (image, text) pair of every septuple goes through **one batched U-Net call** that stops
after the probed block:

    pairs per septuple: (x, y) (x, y_neg) (x, y_rand) (x_neg, y) (x_rand, y) | (x, y')
                        <------------ matching, Eq. 3-4 ------------------->   grounding

The loop runs under Accelerate (one CPU process, several with ``torchrun`` / ``accelerate
launch``, or GPUs), with AdamW, gradient clipping and accumulation, atomic safetensors
checkpoints, and exact resume: the data and noise of step k depend only on (seed, k).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dptlib.checks import UserInputError, check_blocks, check_resources, cli_errors, command_line
from dptlib.config import PROBE_PRESETS, progress_bars, resolve_model
from dptlib.data.discrimination import DiscriminationData, Septuple, sample_septuple
from dptlib.data.embedders import open_clip_embedder
from dptlib.data.manifest import manifest_splits
from dptlib.method.adapter import AdapterConfig, DiscriminativeAdapter
from dptlib.method.backbone import (
    Backbone,
    add_noise,
    block_channels,
    encode_images,
    encode_text,
    extract_features,
    load_backbone,
    resolve_blocks,
)
from dptlib.method.checkpoint import (
    identity_change,
    load_adapter,
    load_training_state,
    run_identity,
    save_adapter,
    save_training_state,
    save_tuned,
    training_state_step,
)
from dptlib.method.losses import denoising_loss, grounding_loss, matching_loss, matching_similarity

PAIRS_PER_SEPTUPLE = 6
LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class ProbeConfig:
    """Stage-1 settings. Defaults are App. B.3's where the paper gives them."""

    model: str = "toy"  # "toy" = the shipped toy SD; else a hub id or a diffusers folder
    blocks: str = "mid"
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    steps: int = 1500
    batch_size: int = 32  # septuples per optimizer step, over all processes and accumulation steps
    grad_accumulation: int = 1
    lr: float = 1e-4
    # the learning rate over steps (diffusers.optimization): "constant" (the paper gives no schedule),
    # "cosine" (to 0 at the last step) or "linear" (likewise), after `warmup_steps` of linear warm-up
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.1
    timesteps: tuple[int, int] = (0, 1000)  # t ~ U[lo, hi)
    # every image of the batch against every caption instead of the septuple's negatives:
    # each (image, caption) pair is its own text-conditioned U-Net pass, so a batch of B costs B^2
    in_batch_negatives: bool = False
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 10

    PRESETS = PROBE_PRESETS

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {self.lr_schedule!r}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be in 0..steps ({self.steps}); got {self.warmup_steps}")

    @classmethod
    def preset(cls, scale: str, **overrides) -> ProbeConfig:
        if scale not in cls.PRESETS:
            raise ValueError(f"no probe preset for scale {scale!r}; presets: {sorted(cls.PRESETS)}")
        values = {**cls.PRESETS[scale], **{k: v for k, v in overrides.items() if v is not None}}
        adapter = values.pop("adapter", {})
        return cls(adapter=adapter if isinstance(adapter, AdapterConfig) else AdapterConfig(**adapter), **values)


def build_adapter(config: ProbeConfig, backbone: Backbone) -> tuple[DiscriminativeAdapter, list[str]]:
    blocks = resolve_blocks(config.blocks, backbone.unet)
    adapter = DiscriminativeAdapter(config.adapter, [block_channels(backbone.unet, b) for b in blocks], backbone.text_dim)
    return adapter, blocks


@torch.no_grad()
def cache_latents(backbone: Backbone, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """VAE latents (N, 4, h, w) of images (N, 3, H, W); computed once, the VAE is frozen."""
    return torch.cat([encode_images(backbone, images[i : i + batch]).cpu() for i in range(0, len(images), batch)])


@dataclass
class StepBatch:
    """The tensors of one step: 6 pairs per septuple, pair-major within each septuple (or, with
    in-batch negatives, the B x B grid of images and captions followed by the B expressions)."""

    latents: torch.Tensor  # (6B, 4, h, w) noisy latents z_t
    timesteps: torch.Tensor  # (6B,)
    text_hidden: torch.Tensor  # (6B, L, D) U-Net conditioning
    text_pooled: torch.Tensor  # (6B, D) CLIP text embedding of each pair's text
    boxes: torch.Tensor  # (B, 4) target box of y'
    noise: torch.Tensor  # (B, 4, h, w) the noise added to x (for the denoising loss of stage 2)
    positives: torch.Tensor  # (B,) the row of each (x, y) pair in latents / text_* (its denoising target is noise)
    in_batch: bool = False  # pairs are (x_i, y_j) for all i, j (B^2), then (x_i, y'_i)


def septuple_batch(
    backbone: Backbone, data: DiscriminationData, latents: torch.Tensor, septuples: list[Septuple], seeds: list[list[int]],
    timesteps: tuple[int, int], in_batch: bool = False,
) -> StepBatch:
    """Noise the septuples' images and encode their texts.

    Septuple i draws its timestep and noise from a generator seeded by ``seeds[i]``, so a
    septuple's tensors do not depend on which process or batch it lands in. Each image keeps one
    noise sample, and the septuple one timestep, across all the pairs it appears in: the pairs
    differ only in what is being compared."""
    b = len(septuples)
    t, noise = [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(np.random.default_rng(seed).integers(2**62)))
        t.append(torch.randint(timesteps[0], timesteps[1], (1,), generator=generator))
        noise.append(torch.randn((3, *latents.shape[1:]), generator=generator))
    t, noise = torch.cat(t), torch.stack(noise)  # (B,), (B, 3, 4, h, w)
    images = torch.tensor([[s.image, s.hard_image, s.random_image] for s in septuples])  # (B, 3)
    clean = latents[images.flatten()].view(b, 3, *latents.shape[1:])
    noisy = add_noise(backbone, clean.flatten(0, 1), t.repeat_interleave(3), noise.flatten(0, 1)).view_as(clean)
    x, x_neg, x_rand = noisy.unbind(1)
    captions = [data.captions[s.caption] for s in septuples]
    expressions = [data.expressions[s.expression] for s in septuples]
    if in_batch:  # pairs: (x_i, y_j) for all i, j, then (x_i, y'_i)
        z = torch.cat([x.repeat_interleave(b, 0), x])
        texts = [captions[j] for _ in range(b) for j in range(b)] + expressions
        steps = torch.cat([t.repeat_interleave(b), t])
        positives = torch.arange(b) * (b + 1)  # (x_i, y_i)
    else:
        z = torch.stack([x, x, x, x_neg, x_rand, x], 1).flatten(0, 1)  # (6B, ...)
        texts = []
        for s, y, y_ref in zip(septuples, captions, expressions):
            texts += [y, data.captions[s.hard_caption], data.captions[s.random_caption], y, y, y_ref]
        steps = t.repeat_interleave(PAIRS_PER_SEPTUPLE)
        positives = torch.arange(b) * PAIRS_PER_SEPTUPLE  # (x, y) opens each septuple
    with torch.no_grad():
        hidden, pooled = encode_text(backbone, texts)
    device = backbone.device
    return StepBatch(z.to(device), steps.to(device), hidden, pooled,
                     data.expression_box[[s.expression for s in septuples]].to(device), noise[:, 0], positives.to(device), in_batch)


def dpt_losses(adapter: DiscriminativeAdapter, features: list[torch.Tensor], batch: StepBatch,
               objectives: str = "both") -> dict[str, torch.Tensor]:
    """Eq. 8 on one step's features: matching (Eq. 3-4) + grounding (Eq. 7); ``objectives``
    "matching" or "grounding" keeps one of them (Tab. 4's GM / LG); "none" keeps neither (the
    "MSE only" row of Tab. 5, where the denoising loss of stage 2 is the whole objective)."""
    out = adapter(features, batch.timesteps)
    b = len(batch.boxes)
    device = batch.timesteps.device
    if batch.in_batch:
        s = matching_similarity(out.match_embeddings[: b * b], batch.text_pooled[: b * b]).view(b, b)  # (image, caption)
        order = torch.stack([torch.cat([torch.tensor([i]), torch.arange(b)[torch.arange(b) != i]]) for i in range(b)]).to(device)
        image_to_text = s.gather(1, order)  # positive first
        text_to_image = s.T.gather(1, order)
        ref = torch.arange(b * b, b * b + b, device=device)
    else:
        pair = torch.arange(PAIRS_PER_SEPTUPLE * b, device=device).view(b, PAIRS_PER_SEPTUPLE)
        s = matching_similarity(out.match_embeddings, batch.text_pooled)[pair]  # (B, 6)
        image_to_text = s[:, [0, 1, 2]]  # x against y, y_neg, y_rand
        text_to_image = s[:, [0, 3, 4]]  # y against x, x_neg, x_rand
        ref = pair[:, 5]
    match = matching_loss(image_to_text, text_to_image, adapter_scale(adapter))
    ground = grounding_loss(out.grounding_logits[ref], out.boxes[ref], out.semantic_embeddings[ref], batch.boxes,
                            batch.text_pooled[ref], adapter_scale(adapter))
    loss = {"both": match + ground.total, "matching": match, "grounding": ground.total, "none": 0.0 * match}[objectives]
    return {"loss": loss, "matching": match.detach(), "grounding": ground.total.detach(),
            "l1": ground.l1.detach(), "giou": ground.giou.detach()}


def adapter_scale(adapter) -> torch.Tensor:
    return getattr(adapter, "module", adapter).logit_scale


class DPTModel(torch.nn.Module):
    """The U-Net (frozen; LoRA trainable in stage 2) and the adapter as one module, so that one
    DDP wrapper synchronises every trainable weight. ``forward(batch)`` returns the losses."""

    def __init__(self, unet, adapter: DiscriminativeAdapter, blocks: list[str], objectives: str = "both", mse_coef: float = 0.0):
        super().__init__()
        self.unet, self.adapter, self.blocks = unet, adapter, blocks
        self.objectives, self.mse_coef = objectives, mse_coef
        self.unet_trainable = any(p.requires_grad for p in unet.parameters())

    def forward(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(self.unet_trainable and torch.is_grad_enabled()):
            if self.mse_coef > 0:  # the denoising loss needs the full forward; features come from the same pass
                features, prediction = extract_features(self.unet, batch.latents, batch.timesteps, batch.text_hidden, self.blocks,
                                                        early_exit=False, return_output=True)
            else:
                features = extract_features(self.unet, batch.latents, batch.timesteps, batch.text_hidden, self.blocks)
        losses = dpt_losses(self.adapter, features, batch, self.objectives)
        if self.mse_coef > 0:
            mse = denoising_loss(prediction, batch.noise, batch.positives)
            losses["loss"] = losses["loss"] + self.mse_coef * mse
            losses["mse"] = mse.detach()
        return losses

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint needs: the adapter and the LoRA weights (not the frozen U-Net)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("adapter.") or "lora_" in k}


def lr_scheduler(optimizer: torch.optim.Optimizer, config, start: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """diffusers' schedule ``config.lr_schedule`` with ``config.warmup_steps`` of warm-up over
    ``config.steps``, positioned at step ``start`` (a resumed run): the learning rate of step k
    depends on k alone, so a killed run resumes on the same schedule."""
    from diffusers.optimization import get_scheduler  # deferred: heavy

    name = "constant_with_warmup" if config.lr_schedule == "constant" and config.warmup_steps else config.lr_schedule
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", config.lr)
    return get_scheduler(name, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=config.steps, last_epoch=start - 1)


def _fit(*, config, data: DiscriminationData, out_dir: Path, backbone: Backbone, adapter: DiscriminativeAdapter, blocks: list[str],
         parameters: list, name: str, accelerator, progress: bool = True, on_gradients=None, objectives: str = "both",
         mse_coef: float = 0.0, validate=None, validate_every: int = 0, validate_at=(), keep_state: bool = False
         ) -> tuple[DPTModel, list, list]:
    """The training loop both stages share; see the module docstring. ``keep_state`` also saves
    the resume state after the last step, so that a later, longer run of the same settings goes on
    from here. ``validate`` runs at step 0, every ``validate_every`` steps and after each step
    count in ``validate_at``."""
    model = DPTModel(backbone.unet, adapter, blocks, objectives, mse_coef)
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    state_path = out_dir / f"{name}.state.safetensors"
    start, log, validation = 0, [], []
    run = run_identity(config, backbone.unet, data)
    if state_path.exists() and training_state_step(state_path) > config.steps:
        # a state kept by a longer run (keep_state) is ahead of this one: going on from it would
        # report the longer run's adapter as this shorter run's, so this run trains afresh
        warnings.warn(f"{state_path} is after step {training_state_step(state_path)}, beyond this run's "
                      f"{config.steps} steps: training afresh and replacing it", stacklevel=2)
        state_path.unlink()
    if state_path.exists():
        start, extra = load_training_state(state_path, model, optimizer, strict=False)
        if extra.get("run") != run:
            raise ValueError(f"{state_path} is the resume state of another run ({identity_change(extra.get('run'), run)}): "
                             f"delete it to train afresh, or pick another out_dir")
        log, validation = extra.get("log", []), extra.get("validation", [])
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = lr_scheduler(optimizer, config, start)
    latents = cache_latents(backbone, data.images)
    per_process = config.batch_size // (accelerator.num_processes * config.grad_accumulation)
    if per_process < 1:
        raise ValueError(f"batch_size={config.batch_size} is smaller than processes x accumulation steps")
    validate_at = set(validate_at)
    if validate is not None and (validate_every or validate_at) and start == 0 and accelerator.is_main_process:  # the start
        model.eval()
        validation.append({"step": 0, **validate(0, accelerator.unwrap_model(model))})
    model.train()
    bar = tqdm(range(start, config.steps), desc=name, initial=start, total=config.steps,
               disable=not progress_bars(progress) or not accelerator.is_main_process, mininterval=5)
    t0 = time.time()
    for step in bar:
        step_lr = scheduler.get_last_lr()[0]  # the learning rate of this step
        for micro in range(config.grad_accumulation):
            # the global batch of this step depends on (seed, step) only; each process takes its share
            rng = np.random.default_rng([config.seed, step, micro])
            global_batch = [sample_septuple(data, rng) for _ in range(per_process * accelerator.num_processes)]
            share = range(accelerator.process_index * per_process, (accelerator.process_index + 1) * per_process)
            batch = septuple_batch(backbone, data, latents, [global_batch[i] for i in share],
                                   [[config.seed, step, micro, i] for i in share], config.timesteps, config.in_batch_negatives)
            with accelerator.accumulate(model):
                losses = model(batch)
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients:
                    if on_gradients is not None:
                        on_gradients(step, accelerator.unwrap_model(model).adapter)
                    accelerator.clip_grad_norm_(parameters, config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                scheduler.step()
        if step % config.log_every == 0 or step == config.steps - 1:
            entry = {"step": step, **{k: float(v.detach()) for k, v in losses.items()}, "lr": step_lr,
                     "seconds": time.time() - t0}
            log.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
        every = validate_every and ((step + 1) % validate_every == 0 or step + 1 == config.steps)
        if validate is not None and (every or step + 1 in validate_at):
            if accelerator.is_main_process:
                model.eval()
                score = validate(step + 1, accelerator.unwrap_model(model))
                model.train()
                validation.append({"step": step + 1, **score})
        last = step + 1 == config.steps
        if ((step + 1) % config.checkpoint_every == 0 and not last or keep_state and last) and accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            save_training_state(state_path, unwrapped, optimizer, step + 1, extra={"log": log, "validation": validation, "run": run},
                                state_dict=unwrapped.trainable_state())
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model), log, validation


def _finished(out_dir: Path, name: str) -> None:
    """A finished run drops its resume state: running it again trains afresh instead of resuming
    from an old state (which may belong to another base model)."""
    (out_dir / f"{name}.state.safetensors").unlink(missing_ok=True)


def _accelerator(config, find_unused: bool = False):
    from accelerate import Accelerator  # deferred: heavy
    from accelerate.utils import DistributedDataParallelKwargs  # deferred: heavy

    # DPT_DEVICE=cpu keeps training on the CPU of a machine with a GPU (the unit tests do)
    cpu = os.environ.get("DPT_DEVICE") == "cpu" or not torch.cuda.is_available()
    return Accelerator(cpu=cpu, gradient_accumulation_steps=config.grad_accumulation,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)])


def _on_device(backbone: Backbone | None, config: ProbeConfig, device: torch.device) -> Backbone:
    """The given backbone moved to the training device (the whole pipeline: the text encoder and
    the VAE run in the loop too), or the config's model loaded there."""
    if backbone is None:
        return load_backbone(resolve_model(config.model), device)
    if backbone.device != device:
        backbone.pipe.to(device)
    return backbone


def probe(config: ProbeConfig, data: DiscriminationData, out_dir: str | Path, backbone: Backbone | None = None,
          accelerator=None, progress: bool = True, on_gradients=None, keep_state: bool = False, validate=None,
          validate_every: int = 0) -> dict:
    """Stage 1: train the adapter on a frozen U-Net; returns the training log.

    ``data`` needs mined hard negatives. Writes ``out_dir/adapter.safetensors`` (+ ``config.json``)
    and resumes from ``out_dir/probe.state.safetensors`` if a killed run left one.
    ``on_gradients(step, adapter)``, if given, sees the synchronised gradients before each update.
    ``keep_state=True`` keeps the resume state of the finished run: a later call with more
    ``steps`` (and otherwise the same settings) continues it instead of starting again.
    ``validate(step, model) -> {name: value}``, if given, scores the adapter at step 0 and every
    ``validate_every`` steps (the returned "validation" list; `dptlib.experiments.convergence`).
    """
    out_dir = Path(out_dir)
    accelerator = accelerator or _accelerator(config)
    backbone = _on_device(backbone, config, accelerator.device)
    torch.manual_seed(config.seed)
    adapter, blocks = build_adapter(config, backbone)
    model, log, validation = _fit(config=config, data=data, out_dir=out_dir, backbone=backbone, adapter=adapter, blocks=blocks,
                                  parameters=list(adapter.parameters()), name="probe", accelerator=accelerator, progress=progress,
                                  on_gradients=on_gradients, keep_state=keep_state, validate=validate, validate_every=validate_every)
    if accelerator.is_main_process:
        save_adapter(model.adapter, config, blocks, out_dir)
        (out_dir / "log.json").write_text(json.dumps(log))
        if not keep_state:
            _finished(out_dir, "probe")
    accelerator.wait_for_everyone()
    return {"log": log, "blocks": blocks, "validation": validation}


# --------------------------------------------------------------------------------------------
# Stage 2: discriminative tuning (§3.2)
# --------------------------------------------------------------------------------------------
LORA_TARGETS = {
    "cross-attention": ["attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"],  # what the paper says
    "all-attention": ["to_q", "to_k", "to_v", "to_out.0"],  # what the official code does
}


@dataclass
class TuneConfig(ProbeConfig):
    """Stage-2 settings (App. B.3.1: 6k steps, batch 8, accumulation 8, lr 1e-4)."""

    lora_rank: int = 4
    lora_alpha: float | None = None  # None: = rank
    lora_targets: str = "cross-attention"
    trainable: str = "adapter+lora"  # or "lora" (Tab. 11)
    objectives: str = "both"  # "matching" (GM), "grounding" (LG), "both" (Tab. 4) or "none" (MSE only, Tab. 5)
    mse_coef: float = 0.0  # weight of the denoising loss (Tab. 5, 9)
    validate_every: int = 0  # steps between validation scores (checkpoint selection); 0: never
    validate_at: tuple[int, ...] = ()  # step counts after which to validate too (a dose-response's doses)

    PRESETS = {
        "smoke": dict(steps=4, batch_size=4, checkpoint_every=2, log_every=1, validate_every=2,
                      adapter=dict(d_model=32, heads=4, ffn=64, num_queries=12, num_matching_queries=3, dropout=0.0)),
        "toy": dict(steps=600, batch_size=16, lr=1e-4, validate_every=100,  # constant learning rate (not stage 1's cosine)
                    adapter=dict(d_model=128, heads=8, ffn=512, num_queries=16, num_matching_queries=8, dropout=0.0, max_side=8)),
        "paper-sd14": dict(model="CompVis/stable-diffusion-v1-4", steps=6000, batch_size=64, grad_accumulation=8, validate_every=100),
        "paper-sd21": dict(model="stabilityai/stable-diffusion-2-1", steps=6000, batch_size=64, grad_accumulation=8, validate_every=100),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_targets not in LORA_TARGETS:
            raise ValueError(f"lora_targets must be one of {list(LORA_TARGETS)}")
        if self.trainable not in ("adapter+lora", "lora"):
            raise ValueError("trainable must be 'adapter+lora' or 'lora'")
        if self.objectives not in ("both", "matching", "grounding", "none"):
            raise ValueError("objectives must be 'both', 'matching', 'grounding' or 'none'")
        if self.objectives == "none" and self.mse_coef <= 0:
            raise ValueError("objectives='none' trains on the denoising loss alone: it needs mse_coef > 0")

    def lora_config(self):
        from peft import LoraConfig  # deferred: heavy

        return LoraConfig(r=self.lora_rank, lora_alpha=self.lora_alpha or self.lora_rank, init_lora_weights="gaussian",
                          target_modules=LORA_TARGETS[self.lora_targets])


def add_lora(unet, config: TuneConfig) -> list[torch.nn.Parameter]:
    """Inject LoRA layers into the U-Net (peft, through diffusers' ``add_adapter``); returns the
    new trainable parameters. ``lora_B`` starts at zero, so the tuned model starts as the base."""
    unet.add_adapter(config.lora_config())
    return [p for n, p in unet.named_parameters() if "lora_" in n and p.requires_grad]


def tune(config: TuneConfig, data: DiscriminationData, probe_dir: str | Path, out_dir: str | Path, backbone: Backbone | None = None,
         accelerator=None, progress: bool = True, validate=None) -> dict:
    """Stage 2: LoRA on the U-Net (+ the adapter) with the DPT objectives, from a stage-1 adapter.

    ``validate(step, model) -> dict`` (e.g. the evaluator CLIP score of images generated for
    validation prompts, key ``"score"``) runs before the first step, every ``validate_every``
    steps and after each step count in ``validate_at``; among the tuned checkpoints (not step 0) the best-scoring
    LoRA + adapter are kept in ``out_dir/best`` (the paper's checkpoint selection), the last in
    ``out_dir``. Both are saved in the diffusers LoRA format (``pipe.load_lora_weights(dir)``).
    """
    out_dir = Path(out_dir)
    # with early exit the LoRA layers after the probed block get no gradient: DDP must know
    accelerator = accelerator or _accelerator(config, find_unused=config.mse_coef == 0)
    backbone = _on_device(backbone, config, accelerator.device)
    adapter, blocks, meta = load_adapter(probe_dir)
    adapter = adapter.to(accelerator.device).train()
    torch.manual_seed(config.seed)
    lora = add_lora(backbone.unet, config)
    if config.trainable == "lora":
        adapter.requires_grad_(False)
    parameters = lora + ([p for p in adapter.parameters() if p.requires_grad])
    # a resumed run must not replace a better checkpoint an earlier (killed) run kept
    best_file = out_dir / "best" / "validation.json"
    resuming = (out_dir / "tune.state.safetensors").exists()
    best = json.loads(best_file.read_text()) if resuming and best_file.exists() else {"score": -math.inf}

    def validate_and_keep(step, model):
        result = validate(step, model)
        # step 0 (the untuned model) is the curves' reference point, not a candidate checkpoint
        if step > 0 and result["score"] > best["score"]:
            best.clear()
            best.update(result, step=step)
            save_tuned(model.unet, model.adapter, config, blocks, out_dir / "best", meta)
            best_file.write_text(json.dumps(best))
        return result

    model, log, validation = _fit(config=config, data=data, out_dir=out_dir, backbone=backbone, adapter=adapter, blocks=blocks,
                                  parameters=parameters, name="tune", accelerator=accelerator, progress=progress,
                                  objectives=config.objectives, mse_coef=config.mse_coef,
                                  validate=validate_and_keep if validate else None, validate_every=config.validate_every,
                                  validate_at=config.validate_at)
    if accelerator.is_main_process:
        save_tuned(model.unet, model.adapter, config, blocks, out_dir, meta)
        (out_dir / "log.json").write_text(json.dumps({"log": log, "validation": validation, "best": best}))
        _finished(out_dir, "tune")
    accelerator.wait_for_everyone()
    return {"log": log, "validation": validation, "best": best, "blocks": blocks}


# --------------------------------------------------------------------------------------------
# Command line: stage 1 on real data, one process or several (accelerate launch)
# --------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    """``python -m dptlib.method.train probe ...`` or ``accelerate launch -m dptlib.method.train probe ...``:
    stage 1 on a data manifest (:func:`dptlib.data.manifest.read_manifest`) with an OpenCLIP evaluator
    mining the hard negatives. (The toy world runs through the notebooks.) A bad input (an unknown
    block, a missing model, manifest, file or checkpoint, a step count below 1) is one line on
    stderr and exit status 2, before anything loads; ``--debug`` shows its traceback."""

    argv, debug = command_line(argv)
    with cli_errors(debug, "dptlib.method.train") as state:
        return _main(argv, state)


def _main(argv: list[str], state) -> int:

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("stage", choices=["probe"])
    parser.add_argument("--scale", default="paper-sd21", choices=sorted(ProbeConfig.PRESETS))
    parser.add_argument("--model", default=None, help="hub id or diffusers folder (default: the scale's)")
    parser.add_argument("--data", required=True, help="data manifest (YAML)")
    parser.add_argument("--evaluator", required=True, help="open_clip:<architecture>:<checkpoint>")
    parser.add_argument("--out", required=True)
    parser.add_argument("--blocks", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--grad-accumulation", type=int, default=None)
    parser.add_argument("--n-train-images", type=int, default=None, help="default: every image of the train split")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--debug", action="store_true", help="show the traceback of a bad input instead of one line")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "grad_accumulation", "n_train_images", "image_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserInputError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be >= 1")
    config = ProbeConfig.preset(args.scale, model=args.model, blocks=args.blocks, steps=args.steps, batch_size=args.batch_size,
                                grad_accumulation=args.grad_accumulation)
    check_resources({"model": config.model, "data": args.data, "evaluator": args.evaluator})
    check_blocks("--blocks", config.blocks, config.model)
    state.working = True  # the input is checked: what fails from here on keeps its traceback
    # every process reads and mines the same split (deterministic), then trains on its share of each step
    train = manifest_splits(args.data, open_clip_embedder(args.evaluator), {"train": args.n_train_images},
                            image_size=args.image_size)["train"]
    probe(config, train, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
