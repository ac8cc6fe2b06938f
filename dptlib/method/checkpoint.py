"""Checkpoints: safetensors only, written atomically, so a killed run resumes from its last one.

Here too: what a trained model is saved as (the adapter with its config; the tuned LoRA in the
diffusers format) and the identity a resume state must match.

A training checkpoint holds a module's weights, the optimizer's state (its tensors flattened into
safetensors, its scalars in the metadata), optionally an EMA copy, and the step reached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dptlib.data.discrimination import DiscriminationData, fingerprint
from dptlib.files import check_json_object, check_safetensors
from dptlib.method.adapter import ADAPTER_FILE, AdapterConfig, DiscriminativeAdapter

LOGGER = logging.getLogger(__name__)


def atomic_save_file(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file`` to a temporary file in the same folder, then rename: a reader
    (or a resumed run) never sees a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    """A small text file (a config, a log) written to a temporary file, then renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


@contextmanager
def exclusive(path: str | Path):
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block.

    Variants run at once (``python -m dptlib.experiments.ablations ... --jobs N``) share artefacts: the exported
    toy data, a stage-1 adapter that several arms build on. Whoever takes the lock first builds
    the artefact; the others wait, then find it built. ``filelock``'s operating-system lock
    (``flock`` on POSIX, ``msvcrt`` on Windows): released when its process dies, so a killed run
    blocks no one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        LOGGER.info(f"waiting for {path.name}: another run is building it")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def save_training_state(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    ema: torch.nn.Module | None = None,
    extra: dict | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write model (+ optimizer, EMA) state at ``step`` to one safetensors file, atomically.
    ``state_dict`` saves only these model tensors (e.g. the trainable ones) instead of all."""
    tensors = {f"model.{k}": v for k, v in (state_dict if state_dict is not None else model.state_dict()).items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    scalars = {}
    if optimizer is not None:
        state = optimizer.state_dict()
        for param_id, param_state in state["state"].items():
            for key, value in param_state.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{param_id}.{key}"] = value
                else:
                    scalars[f"{param_id}.{key}"] = value
        scalars["param_groups"] = state["param_groups"]
    metadata = {"step": str(step), "optimizer": json.dumps(scalars), "extra": json.dumps(extra or {})}
    return atomic_save_file(tensors, path, metadata)


def training_state_step(path: str | Path) -> int:
    """The step a resume state was saved after, read from its metadata without loading it."""
    check_safetensors(path, "a resume state")
    with safe_open(Path(path), "pt") as handle:
        return int(handle.metadata()["step"])


def load_training_state(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: torch.nn.Module | None = None,
    strict: bool = True,
) -> tuple[int, dict]:
    """Restore what :func:`save_training_state` wrote; returns (step, extra). ``strict=False``
    restores a partial state (one saved with ``state_dict=``)."""
    path = Path(path)
    check_safetensors(path, "a resume state")
    tensors = load_file(path)
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=strict)
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    if optimizer is not None:
        scalars = json.loads(metadata["optimizer"])
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, param_id, name = key.split(".", 2)
                state.setdefault(int(param_id), {})[name] = value
        for key, value in scalars.items():
            if key != "param_groups":
                param_id, name = key.split(".", 1)
                state.setdefault(int(param_id), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})
    return int(metadata["step"]), json.loads(metadata.get("extra", "{}"))


# --------------------------------------------------------------------------------------------
# Run identity: what a resume state must match
# --------------------------------------------------------------------------------------------
# settings a resumed run may change: how long it trains and how often it logs or saves
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "log_every", "validate_every", "validate_at")


def run_identity(config, unet: torch.nn.Module, data: DiscriminationData) -> dict:
    """What a resume state must match to be resumed: the run's settings (but those of
    ``RESUMABLE_CHANGES``), its data (size and :func:`dptlib.data.discrimination.fingerprint`) and the base
    U-Net's weights (a fingerprint of its first and last frozen tensors, so that a retrained
    model at the same path is noticed)."""
    frozen = [(n, p) for n, p in unet.named_parameters() if "lora_" not in n]
    digest = hashlib.sha256()
    for n, p in (frozen[0], frozen[-1]):
        digest.update(n.encode() + p.detach().float().cpu().numpy().tobytes())
    # a decaying schedule is laid out over `steps`: a run of another length is another run
    resumable = RESUMABLE_CHANGES if getattr(config, "lr_schedule", "constant") == "constant" else \
        tuple(c for c in RESUMABLE_CHANGES if c != "steps")
    settings = {k: v for k, v in asdict(config).items() if k not in resumable}
    # the schedule's fields at their defaults are left out, so runs from before they existed resume
    for key, default in (("lr_schedule", "constant"), ("warmup_steps", 0)):
        if settings.get(key, default) == default:
            settings.pop(key, None)
    if isinstance(settings.get("adapter"), dict) and settings["adapter"].get("input_norm", "none") == "none":
        settings["adapter"].pop("input_norm", None)  # likewise the adapter's input_norm (added later)
    return json.loads(json.dumps({"config": settings, "images": len(data.images), "data": fingerprint(data),
                                  "base_model": digest.hexdigest()}))


def identity_change(recorded: dict | None, current: dict) -> str:
    """What differs between a resume state's recorded identity and this run's, for the error."""
    if recorded is None:
        return "it records no identity"
    changed = [k for k in ("images", "data", "base_model") if recorded.get(k) != current[k]]
    changed += [k for k in current["config"] if recorded.get("config", {}).get(k) != current["config"][k]]
    return "differs in " + ", ".join(changed)


# --------------------------------------------------------------------------------------------
# Trained models: the adapter (+ its config) and the tuned LoRA
# --------------------------------------------------------------------------------------------
def save_tuned(unet, adapter, config, blocks: list[str], out_dir: Path, meta: dict | None = None) -> None:
    """LoRA in the diffusers format (with its peft config, so alpha survives) + the adapter."""
    from diffusers import StableDiffusionPipeline  # deferred: heavy
    from diffusers.utils import convert_state_dict_to_diffusers  # deferred: heavy
    from peft.utils import get_peft_model_state_dict  # deferred: heavy

    out_dir.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(out_dir, unet_lora_layers=layers, safe_serialization=True,
                                              unet_lora_adapter_metadata=config.lora_config().to_dict())
    save_adapter(adapter, config, blocks, out_dir)


def save_adapter(adapter: DiscriminativeAdapter, config, blocks: list[str], out_dir: Path) -> None:
    """The adapter as ``adapter.safetensors`` + ``config.json`` (its constructor's arguments, as
    ``DiscriminativeAdapter.save_pretrained`` writes them, so ``from_pretrained`` reads the folder
    too; plus the probed blocks and the base model), each written atomically.

    The adapter's shape is read from the adapter itself, not from ``config``: stage 2 saves an
    adapter it loaded from stage 1, whose layers its own config does not describe."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_file(adapter.state_dict(), out_dir / ADAPTER_FILE)
    meta = {**adapter._hub_mixin_config, "model": config.model, "blocks": blocks}
    atomic_write_text(json.dumps(meta, indent=1), out_dir / "config.json")


def load_adapter(out_dir: str | Path) -> tuple[DiscriminativeAdapter, list[str], dict]:
    """(adapter, probed blocks, saved config) from an adapter folder: one :func:`save_adapter` wrote
    (config.json's ``config``), or one written before the adapter's ``save_pretrained`` existed
    (config.json's ``adapter``). ``meta["adapter"]`` is the adapter's config either way."""
    out_dir = Path(out_dir)
    meta = check_json_object(out_dir / "config.json", "adapter's config.json")
    check_safetensors(out_dir / ADAPTER_FILE, "the adapter's weights")
    if meta.get("architecture", "paper") != "paper":
        raise ValueError(f"{out_dir} holds an {meta['architecture']!r} adapter: load it with "
                         f"dptlib.official.checkpoint.load_official_adapter")
    if "config" in meta:
        adapter = DiscriminativeAdapter.from_pretrained(out_dir)
        meta["adapter"] = meta["config"]
    else:  # the layout before save_pretrained
        adapter = DiscriminativeAdapter(AdapterConfig(**meta["adapter"]), meta["in_channels"], meta["text_dim"])
        adapter.load_state_dict(load_file(out_dir / ADAPTER_FILE))
    return adapter.eval(), meta["blocks"], meta
