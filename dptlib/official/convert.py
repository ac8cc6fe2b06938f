"""Convert the official release's checkpoint (LgQu/DPT-T2I ``pytorch_model.bin``) into this repo's formats.

    python -m dptlib.official.convert ckpt/dpt-v2.1/pytorch_model.bin runs/official

writes

    OUT/lora/              diffusers LoRA folder: ``load_pipeline(model, lora=OUT/lora)`` (or ``pipe.load_lora_weights``)
    OUT/adapter/           adapter.safetensors + config.json ("architecture": "official", blocks ["up1"], base model):
                           ``dptlib.official.checkpoint.load_official_adapter(OUT/adapter)``
    OUT/conversion.json    what was read and written

A part the checkpoint lacks is not written (a stage-1 file has no LoRA; a LoRA-only stage 2 no
adapter). The whole input is read and checked before anything is written: a missing file, a
pickle holding non-tensor objects, unknown, missing or misshapen keys are one line on stderr and
exit status 2 (``--debug``: the traceback). The output appears at once: it is written to a
temporary folder beside OUT, then renamed; an existing OUT is refused unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dptlib.checks import UserInputError, cli_errors, command_line
from dptlib.official.adapter import OfficialAdapter
from dptlib.official.checkpoint import (
    BASE_MODELS,
    build_adapter,
    lora_layers,
    read_checkpoint,
    save_lora,
    save_official_adapter,
    split_keys,
)


@dataclass
class Converted:
    """A checkpoint mapped onto this repo's formats, in memory, ready to write."""

    source: str
    model: str
    blocks: list[str]
    adapter: OfficialAdapter | None
    lora: dict[str, torch.Tensor]  # diffusers-format layers; empty when the checkpoint has none
    lora_rank: int
    lora_targets: list[str]

    def summary(self) -> dict:
        return {"source": self.source, "model": self.model, "blocks": self.blocks,
                "adapter": asdict(self.adapter.config) if self.adapter is not None else None,
                "lora": {"rank": self.lora_rank, "alpha": self.lora_rank, "scale": 1.0, "modules": len(self.lora_targets)}
                if self.lora else None}


def convert(path: str | Path, heads: int = 8, num_matching_queries: int = 10, model: str | None = None,
            block: str = "up1") -> Converted:
    """Read and map ``path``; raises ``UserInputError`` / ``FileNotFoundError`` on bad input."""

    lora, adapter_state = split_keys(read_checkpoint(path))
    layers, rank, targets = lora_layers(lora) if lora else ({}, 0, [])
    adapter = build_adapter(adapter_state, heads, num_matching_queries) if adapter_state else None
    if adapter is None and not lora:
        raise UserInputError(f"{path} holds neither LoRA nor adapter weights")
    if model is None:
        width = adapter.config.text_dim if adapter is not None else 1024  # the release hard-wires SD-2.1-base
        if width not in BASE_MODELS:
            raise UserInputError(f"text width {width} is neither SD-2.1's 1024 nor SD-1.4's 768: name the base model with --model")
        model = BASE_MODELS[width]
    return Converted(str(path), model, [block], adapter, layers, rank, targets)


def write(converted: Converted, out: str | Path, force: bool = False) -> Path:
    """Write ``converted`` under ``out`` (module docstring), through a temporary folder and a rename."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        if converted.lora:
            save_lora(converted.lora, converted.lora_rank, converted.lora_targets, tmp / "lora")
        if converted.adapter is not None:
            save_official_adapter(converted.adapter, converted.blocks, converted.model, tmp / "adapter",
                                  extra={"source": converted.source})
        (tmp / "conversion.json").write_text(json.dumps(converted.summary(), indent=1))
        _replace_folder(tmp, out, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _replace_folder(new: Path, out: Path, force: bool) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` (only with ``force``) is moved aside first."""
    if not out.exists():
        os.replace(new, out)
        return
    if not force:
        raise FileExistsError(f"{out} exists")
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.replace(out, old / "previous")
    os.replace(new, out)
    shutil.rmtree(old)


def main(argv: list[str] | None = None) -> int:
    """``python -m dptlib.official.convert PATH OUT``: see the module docstring."""

    argv, debug = command_line(argv)
    with cli_errors(debug, "dptlib.official.convert") as state:
        return _main(argv, state)


def _main(argv: list[str], state) -> int:

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="the release's pytorch_model.bin (or a .safetensors of the same keys)")
    parser.add_argument("out", help="output folder (must not exist unless --force)")
    parser.add_argument("--heads", type=int, default=8, help="attention heads of the adapter (not in the weights; release: 8)")
    parser.add_argument("--matching-queries", type=int, default=10, help="M, the matching queries among N (release: 10)")
    parser.add_argument("--model", default=None, help="base model id (default: from the text width, 1024 -> SD-2.1-base)")
    parser.add_argument("--block", default="up1", help="the probed U-Net block (release: up1)")
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a bad input instead of one line")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not args.force:
        raise UserInputError(f"{args.out} exists: remove it or pass --force")
    if args.heads < 1 or args.matching_queries < 1:
        raise UserInputError("--heads and --matching-queries must be >= 1")
    converted = convert(args.path, args.heads, args.matching_queries, args.model, args.block)
    state.working = True  # the input is read and checked: what fails from here on keeps its traceback
    out = write(converted, args.out, args.force)
    summary = converted.summary()
    parts = [f"lora/ (rank {converted.lora_rank}, {len(converted.lora_targets)} projections)" if converted.lora else None,
             "adapter/ (d {d_model}, {num_queries} queries, {num_matching_queries} matching, {encoder_layers}+{decoder_layers} layers)"
             .format(**summary["adapter"]) if converted.adapter is not None else None]
    print(f"{out}: " + ", ".join(p for p in parts if p) + f"; base model {converted.model}, block {converted.blocks[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
