"""The official release's checkpoint, read safely and mapped onto this repo's formats.

The release ships one ``pytorch_model.bin``: ``accelerate``'s ``save_state`` of the trainable
parameters of ``DiffQformerCombined``, a flat ``{name: tensor}`` dict with two kinds of keys:

- the U-Net's LoRA, diffusers 0.20 ``LoRAAttnProcessor`` on every attention (attn1 and attn2):
  ``unet.<attention path>.processor.to_{q,k,v,out}_lora.{down,up}.weight``, down (r, in), up (out, r),
  applied as ``W x + scale * up(down(x))`` with scale 1 and no alpha;
- the adapter: ``transformer.*``, ``query_embed``, ``input_proj``, ``timestep_embedding.*``,
  ``map_to_clip``, ``logit_scale``, ``class_embed``, ``bbox_embed``, ``contrastive_align_projection_*``
  (:class:`dptlib.official.adapter.OfficialAdapter` has exactly these names).

Reading never unpickles arbitrary objects: ``torch.load(weights_only=True)``, and a file holding
anything but tensors (and the plain containers around them) is refused with the name of what it
holds. The LoRA becomes a diffusers/peft LoRA folder (``lora_A`` = down, ``lora_B`` = up, alpha = r
so that peft's scale alpha / r is the release's 1.0), the format :func:`dptlib.method.checkpoint.save_tuned`
writes and ``pipe.load_lora_weights`` reads.

Two sizes are not in the weights and come from the caller: the attention heads (``in_proj`` is
(3d, d) for any head count) and the number M of matching queries among the N; the release uses 8
and 10 (of 110).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dptlib.checks import UserInputError
from dptlib.files import check_safetensors
from dptlib.official.adapter import OfficialAdapter, OfficialAdapterConfig

LORA_KEY = re.compile(r"^unet\.(?P<path>.+)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<part>down|up)\.weight$")
PEFT_NAMES = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}  # diffusers' Attention submodules
NESTING_KEYS = ("state_dict", "model", "module")  # a state dict wrapped once in a plain dict under one of these
BASE_MODELS = {1024: "stabilityai/stable-diffusion-2-1-base", 768: "CompVis/stable-diffusion-v1-4"}  # by CLIP width, as the release picks
ADAPTER_FILE = "adapter.safetensors"


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """{name: tensor} of a release checkpoint (``.bin`` pickle or ``.safetensors``), safely.

    A pickle is read with ``weights_only=True``; one holding other objects (classes, functions,
    numbers, strings) is refused with a ``UserInputError`` naming the first found, never unpickled.
    A ``module.`` prefix on every key (a DDP-wrapped model) is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {path}")
    if path.suffix == ".safetensors":
        check_safetensors(path, "the release's weights as safetensors")
        state = load_file(path)
    else:
        state = _load_pickle(path)
    state = _unwrap(state, path)
    if not state:
        raise UserInputError(f"{path} holds no tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_pickle(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to read is a refusal of this file
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found:
            raise UserInputError(f"{path} holds a non-tensor object ({found.group(1)}): refused, it is not unpickled "
                                 f"(only tensors in plain dicts are read)") from None
        raise UserInputError(f"{path} is not a torch checkpoint of tensors ({type(error).__name__}: "
                             f"{str(error).strip().splitlines()[0] if str(error).strip() else 'unreadable'})") from None


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """The flat state dict in ``obj``: itself, or a dict under one of ``NESTING_KEYS``."""
    if not isinstance(obj, dict):
        raise UserInputError(f"{path} holds an object of type {type(obj).__name__}, not a dict of tensors")
    if not any(torch.is_tensor(v) for v in obj.values()):
        nested = [k for k in NESTING_KEYS if isinstance(obj.get(k), dict)]
        if nested:
            return _unwrap(obj[nested[0]], path)
    for key, value in obj.items():
        if not isinstance(key, str) or not torch.is_tensor(value):
            raise UserInputError(f"{path}: entry {key!r} is of type {type(value).__name__}, not a tensor: refused "
                                 f"(expected a flat state dict, as accelerate's save_state writes)")
    return dict(obj)


def split_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(LoRA entries, adapter entries); a ``unet.`` key that is not a LoRA weight is refused (the
    release saves only trainable weights: a frozen U-Net weight means another kind of file)."""
    lora = {k: v for k, v in state.items() if LORA_KEY.match(k)}
    other = sorted(k for k in state if k.startswith("unet.") and k not in lora)
    if other:
        raise UserInputError(f"unknown U-Net key(s) {other[:3]}{' ...' if len(other) > 3 else ''} ({len(other)}): "
                             f"expected only unet.<path>.processor.to_{{q,k,v,out}}_lora.{{down,up}}.weight")
    return lora, {k: v for k, v in state.items() if not k.startswith("unet.")}


# --------------------------------------------------------------------------------------------
# LoRA: diffusers 0.20 attention processors -> a peft LoRA in diffusers' file format
# --------------------------------------------------------------------------------------------
def lora_layers(lora: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int, list[str]]:
    """(diffusers-format layers ``<path>.<to_q|...|to_out.0>.lora.{down,up}.weight``, rank, the
    target module paths) from the release's LoRA entries. Every attention must carry all four
    projections, each with a down and an up weight of one common rank."""
    layers, ranks, projections = {}, set(), defaultdict(set)
    for key, value in lora.items():
        m = LORA_KEY.match(key)
        projections[m["path"]].add((m["proj"], m["part"]))
        layers[f"{m['path']}.{PEFT_NAMES[m['proj']]}.lora.{m['part']}.weight"] = value
    expected = {(p, part) for p in PEFT_NAMES for part in ("down", "up")}
    for path, present in sorted(projections.items()):
        if present != expected:
            missing = sorted(f"{p}_lora.{part}" for p, part in expected - present)
            raise UserInputError(f"LoRA of unet.{path} is incomplete: missing {missing}")
    for path in projections:
        for proj, target in PEFT_NAMES.items():
            down, up = (layers[f"{path}.{target}.lora.{part}.weight"] for part in ("down", "up"))
            if down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
                raise UserInputError(f"LoRA of unet.{path}.{proj}: down {tuple(down.shape)} and up {tuple(up.shape)} "
                                     f"are not (r, in) and (out, r)")
            ranks.add(down.shape[0])
    if len(ranks) > 1:
        raise UserInputError(f"LoRA ranks differ across layers ({sorted(ranks)}): one rank expected")
    targets = sorted(f"{path}.{target}" for path in projections for target in PEFT_NAMES.values())
    return layers, ranks.pop() if ranks else 0, targets


def save_lora(layers: dict[str, torch.Tensor], rank: int, targets: list[str], out_dir: Path) -> None:
    """The LoRA folder, written as :func:`dptlib.method.checkpoint.save_tuned` writes one: diffusers'
    ``save_lora_weights`` with the peft config as metadata (alpha = r: scale 1, as the release)."""
    from diffusers import StableDiffusionPipeline  # deferred: heavy
    from peft import LoraConfig  # deferred: heavy

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets)
    StableDiffusionPipeline.save_lora_weights(out_dir, unet_lora_layers=layers, safe_serialization=True,
                                              unet_lora_adapter_metadata=config.to_dict())


# --------------------------------------------------------------------------------------------
# Adapter: sizes read from the weights' shapes, then a strict load
# --------------------------------------------------------------------------------------------
def _dim(state: dict[str, torch.Tensor], key: str, axis: int) -> int:
    if key not in state:
        raise UserInputError(f"adapter key {key!r} is missing: not the release's adapter layout")
    return state[key].shape[axis]


def _layer_count(state: dict[str, torch.Tensor], prefix: str) -> int:
    found = {int(m[1]) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found) + 1 if found else 0


def adapter_config(state: dict[str, torch.Tensor], heads: int = 8, num_matching_queries: int = 10) -> OfficialAdapterConfig:
    """The adapter's sizes from its weights; ``heads`` and M are not in them (module docstring)."""
    align = "contrastive_align_projection_image.weight" in state
    try:
        return OfficialAdapterConfig(
            d_model=_dim(state, "query_embed.weight", 1), num_queries=_dim(state, "query_embed.weight", 0), heads=heads,
            num_matching_queries=num_matching_queries, ffn=_dim(state, "transformer.encoder.layers.0.linear1.weight", 0),
            encoder_layers=_layer_count(state, "transformer.encoder.layers."),
            decoder_layers=_layer_count(state, "transformer.decoder.layers."),
            in_channels=_dim(state, "input_proj.weight", 1), text_dim=_dim(state, "map_to_clip.2.weight", 0),
            time_hidden=_dim(state, "timestep_embedding.time_embedding.linear_1.weight", 0),
            num_classes=_dim(state, "class_embed.weight", 0) - 1,
            align_dim=_dim(state, "contrastive_align_projection_image.weight", 0) if align else 0,
            roberta_dim=_dim(state, "contrastive_align_projection_text.weight", 1) if align else 768,
        )
    except UserInputError:
        raise
    except ValueError as error:  # the config's own checks (heads, M)
        raise UserInputError(str(error)) from None


def build_adapter(state: dict[str, torch.Tensor], heads: int = 8, num_matching_queries: int = 10) -> OfficialAdapter:
    """An :class:`OfficialAdapter` holding ``state`` (strict: every key and shape must match)."""
    adapter = OfficialAdapter(adapter_config(state, heads, num_matching_queries))
    expected = adapter.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = [f"{name} {keys[:3]}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                 for name, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise UserInputError("adapter keys do not match the release's layout: " + "; ".join(parts))
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})" for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        raise UserInputError(f"adapter weight shapes do not fit one another: {wrong[:3]}")
    adapter.load_state_dict(state, strict=True)
    return adapter.eval()


def save_official_adapter(adapter: OfficialAdapter, blocks: list[str], model: str, out_dir: Path, extra: dict | None = None) -> None:
    """``adapter.safetensors`` + ``config.json`` (``"architecture": "official"``, blocks, base model)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()}, out_dir / ADAPTER_FILE)
    meta = {"architecture": "official", "model": model, "blocks": blocks, "adapter": asdict(adapter.config), **(extra or {})}
    (out_dir / "config.json").write_text(json.dumps(meta, indent=1))


def load_official_adapter(out_dir: str | Path) -> tuple[OfficialAdapter, list[str], dict]:
    """(adapter, probed blocks, saved config) from a folder written by :func:`save_official_adapter`."""
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / "config.json").read_text())
    if meta.get("architecture") != "official":
        raise ValueError(f"{out_dir} holds a {meta.get('architecture', 'paper')!r} adapter, not an 'official' one: "
                         f"use dptlib.method.checkpoint.load_adapter")
    adapter = OfficialAdapter(OfficialAdapterConfig(**meta["adapter"]))
    adapter.load_state_dict(load_file(out_dir / ADAPTER_FILE), strict=True)
    return adapter.eval(), meta["blocks"], meta
