"""Checkpoints: safetensors only, written atomically, so a killed run resumes from its last one.

A training checkpoint holds a module's weights, the optimizer's state (its tensors flattened into
safetensors, its scalars in the metadata), optionally an EMA copy, and the step reached.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


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
    from safetensors import safe_open

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
    from safetensors import safe_open

    path = Path(path)
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
