"""Configuration: scales, paths, and the checked parameters of every notebook.

A notebook's first code cell (tagged ``parameters``) holds plain values that papermill may
override. The next cell hands them to :func:`notebook_parameters`, which checks them against the
notebook's dataclass below: an unknown or mistyped name, or a value of the wrong type, is a
``ValueError`` that names the parameter and the allowed ones. ``dptlib.reproduce`` runs the same
check on every ``papermill_params/*.yaml`` file before it starts a kernel.

Scales: ``smoke`` (seconds; what ``make test`` runs under nbval), ``toy`` (the default: the toy
world at the size the committed figures come from), ``paper-sd14`` / ``paper-sd21`` (the paper's
settings, App. B.3, for a user's GPU). ``scale=None`` reads ``$DPT_SCALE`` (default ``toy``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

SCALES = ("smoke", "toy", "paper-sd14", "paper-sd21")


def resolve_scale(scale: str | None = None) -> str:
    """``scale`` if given, else ``$DPT_SCALE``, else ``"toy"``; checked against :data:`SCALES`."""
    scale = scale or os.environ.get("DPT_SCALE") or "toy"
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; scales: {list(SCALES)}")
    return scale


def repo_root() -> Path:
    """The repository checkout this package lives in (``$DPT_ROOT`` overrides)."""
    if os.environ.get("DPT_ROOT"):
        return Path(os.environ["DPT_ROOT"]).resolve()
    return Path(__file__).resolve().parent.parent


def runs_dir(scale: str) -> Path:
    """Where a scale's checkpoints, metrics and exported data go (git-ignored)."""
    return repo_root() / "runs" / scale


def figures_dir(scale: str) -> Path:
    """``figures/`` for real runs; smoke runs write under ``runs/smoke/figures`` so that a test
    never overwrites a committed figure."""
    path = repo_root() / "figures" if scale != "smoke" else runs_dir(scale) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def quiet_libraries() -> None:
    """Silence the loading bars and notices of diffusers / transformers in notebook outputs
    (warnings and errors still show)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (diffusers_logging, transformers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()


def set_threads(default: int | None = None) -> int:
    """Set torch's CPU threads from ``$DPT_THREADS`` (or ``default``); returns the count used.

    Two torch processes that both use every core run 10-20x slower on this kind of machine.
    """
    import torch

    threads = int(os.environ.get("DPT_THREADS", default or os.cpu_count() or 1))
    torch.set_num_threads(threads)
    return threads


# --------------------------------------------------------------------------------------------
# Notebook parameters
# --------------------------------------------------------------------------------------------
@dataclass
class ToyWorldNotebook:
    """Parameters of ``00_toy_world``. ``None`` takes the scale's preset."""

    scale: str | None = None
    seed: int = 0
    image_size: int = 32
    max_objects: int = 3
    n_oracle_scenes: int | None = None  # scenes in the oracle-accuracy tests
    noise_levels: list = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2])
    blur_levels: list = field(default_factory=lambda: [0.0, 0.5, 1.0])
    n_benchmark_prompts: int | None = None  # prompts per toy benchmark
    export_scenes: int | None = None  # scenes per split written in the COCO / MDETR formats

    PRESETS = {
        "smoke": dict(n_oracle_scenes=40, n_benchmark_prompts=20, export_scenes=8),
        "toy": dict(n_oracle_scenes=1000, n_benchmark_prompts=300, export_scenes=None),
    }


@dataclass
class BaseModelNotebook:
    """Parameters of ``00b_base_model``: the toy Stable Diffusion and its base-model table."""

    scale: str | None = None
    retrain: bool | None = None  # train the toy SD from scratch (smoke: always) instead of loading the shipped one
    seeds: list | None = None  # sampling seeds (toy: [0, 1, 2])
    n_prompts: int | None = None  # per toy benchmark
    num_inference_steps: int | None = None  # DDIM steps
    guidance_scale: float = 7.5
    batch_size: int = 64
    n_clip_scenes: int | None = None  # held-out scenes for the CLIP hard-negative test

    PRESETS = {
        "smoke": dict(retrain=True, n_prompts=4, num_inference_steps=4, n_clip_scenes=20, seeds=[0]),
        "toy": dict(retrain=False, n_prompts=100, num_inference_steps=50, n_clip_scenes=500, seeds=[0, 1, 2]),
    }


@dataclass
class ProbingNotebook:
    """Parameters of ``01_probing``: what the blocks hold, stage 1, Tab. 3 and Tab. 10."""

    scale: str | None = None
    blocks: str | None = None  # None: the candidate the short comparison ranks first on validation data
    candidate_blocks: list = field(default_factory=lambda: ["mid", "up1"])
    comparison_steps: int | None = None  # probe steps per candidate block
    steps: int | None = None  # probe training steps of the chosen block
    batch_size: int | None = None  # septuples per step
    control_steps: int | None = None  # the negative control's probe (shuffled image-text pairs)
    eval_timestep: int = 250  # the paper's best timestep (Tab. 10)
    timesteps: list = field(default_factory=lambda: [0, 250, 500, 750, 999])
    n_train_images: int | None = None
    n_val_images: int | None = None  # validation: choices (block) are made here
    n_test_images: int | None = None  # test: the tables (ITM: one I->T and one T->I query per image)
    n_rec_expressions: int | None = None  # REC test expressions (evenly spaced over the test split)
    diagnostic_scenes: int | None = None  # validation scenes of the linear probes
    diagnostic_timesteps: list = field(default_factory=lambda: [250, 750])
    denoising_timesteps: int | None = None  # Diffusion Classifier / DiffusionITM / local denoising
    seed: int = 0

    PRESETS = {
        "smoke": dict(comparison_steps=2, steps=4, batch_size=4, control_steps=2, n_train_images=24, n_val_images=12,
                      n_test_images=12, n_rec_expressions=24, diagnostic_scenes=24, denoising_timesteps=2),
        "toy": dict(comparison_steps=600, steps=3000, batch_size=16, control_steps=300, n_train_images=4000, n_val_images=500,
                    n_test_images=500, n_rec_expressions=1000, diagnostic_scenes=400, denoising_timesteps=10),
    }


HEADLINE_CELLS = ["toy-cc (ID)", "toy-nss (ID)"]  # the cells sized to detect a 5-point difference


@dataclass
class TuningNotebook:
    """Parameters of ``02_tuning``: stage 2 and its controls, Tab. 1, Tab. 2, Fig. 4a."""

    scale: str | None = None
    steps: int | None = None  # tuning steps (each run: DPT, LoRA only, negative control)
    batch_size: int | None = None
    lora_rank: int = 4
    lora_targets: str = "cross-attention"
    objectives: str = "both"
    mse_coef: float = 0.0
    validate_every: int | None = None
    selection: str = "clip"  # checkpoint selection: "clip" (the paper) or "oracle" (the toy world's exact judge)
    n_validation_prompts: int | None = None  # per cell, disjoint from the test prompts
    n_train_images: int | None = None
    n_val_images: int | None = None  # ITM / REC along tuning, on the validation split
    prompts: dict | None = None  # test prompts per cell
    control_cells: list | None = None  # cells the controls (LoRA only, negative control) are sampled on
    n_positive_control_prompts: int | None = None  # Attend-and-Excite, on toy-cc (ID)
    seeds: list | None = None
    num_inference_steps: int | None = None
    guidance_scale: float = 7.5
    attn_res: list | None = None  # Attend-and-Excite's attention resolution; None: the scale's preset
    seed: int = 0

    PRESETS = {
        "smoke": dict(steps=2, batch_size=4, validate_every=1, n_validation_prompts=1, n_train_images=24, n_val_images=12,
                      prompts={"toy-cc (ID)": 2, "toy-cc (OOD)": 1, "toy-nss (ID)": 2, "toy-abc (MD)": 2, "toy-compbench (MD)": 4},
                      control_cells=HEADLINE_CELLS, n_positive_control_prompts=1, seeds=[0], num_inference_steps=3, attn_res=[8, 8]),
        "toy": dict(steps=300, batch_size=16, validate_every=150, n_validation_prompts=32, n_train_images=4000, n_val_images=500,
                    prompts={"toy-cc (ID)": 150, "toy-cc (OOD)": 56, "toy-nss (ID)": 150, "toy-abc (MD)": 50, "toy-compbench (MD)": 60},
                    control_cells=HEADLINE_CELLS, n_positive_control_prompts=75, seeds=[0, 1, 2, 3], num_inference_steps=15,
                    attn_res=[8, 8]),
    }


@dataclass
class SelfCorrectionNotebook:
    """Parameters of ``03_self_correction``: Fig. 4b, Tab. 4, Fig. 5, Fig. 6 and the cost of Eq. 9.
    Prompts, seeds and the sampler are ``02_tuning``'s (its images are reused)."""

    scale: str | None = None
    etas: list | None = None  # the sweep of Fig. 4b, on validation prompts
    eta: float | None = None  # None: the best eta > 0 of the sweep
    normalize: bool = True
    refresh_every: int = 1
    sweep_seeds: list | None = None
    ablation_steps: int | None = None  # tuning steps of the GM-only and LG-only variants (Tab. 4)
    n_train_images: int | None = None  # their training data
    seed: int = 0

    PRESETS = {
        "smoke": dict(etas=[0.0, 0.1], sweep_seeds=[0], ablation_steps=2, n_train_images=24),
        "toy": dict(etas=[0.0, 0.03, 0.1, 0.3, 1.0], sweep_seeds=[0, 1], ablation_steps=300, n_train_images=4000),
    }


NOTEBOOKS: dict[str, type] = {
    "02_tuning": TuningNotebook,
    "03_self_correction": SelfCorrectionNotebook,
    "01_probing": ProbingNotebook,
    "00_toy_world": ToyWorldNotebook,
    "00b_base_model": BaseModelNotebook,
}


def _type_ok(value, annotation) -> bool:
    """Whether ``value`` fits a simple annotation (str, int, float, bool, list, dict, X | None)."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"list": list, "dict": dict})  # noqa: S307 - our own annotations
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or annotation)


def check_parameters(notebook: str, params: dict):
    """Check ``params`` for ``notebook`` and return its parameter dataclass.

    Raises ``ValueError`` for an unknown notebook, an unknown parameter (naming the allowed ones),
    a value of the wrong type, or an unknown scale. ``None`` values take the scale's preset.
    """
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; notebooks with parameters: {sorted(NOTEBOOKS)}")
    cls = NOTEBOOKS[notebook]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for notebook {notebook!r}; allowed parameters: {sorted(fields)}"
        )
    for name, value in params.items():
        if not _type_ok(value, fields[name].type):
            raise ValueError(
                f"parameter {name!r} of notebook {notebook!r} must be {fields[name].type}, got {value!r}"
            )
    values = dict(params)
    values["scale"] = resolve_scale(values.get("scale"))
    preset = cls.PRESETS.get(values["scale"], cls.PRESETS.get("toy", {}))
    for name, default in preset.items():
        if values.get(name) is None:
            values[name] = default
    return cls(**values)


def notebook_parameters(notebook: str, namespace: dict | None = None, **params):
    """The call a notebook makes right after its ``parameters`` cell; see :func:`check_parameters`.

    ``namespace`` (the notebook's ``globals()``) supplies every parameter the notebook declares,
    so that a parameter is written once, in the ``parameters`` cell; ``params`` override it."""
    if namespace is not None:
        if notebook not in NOTEBOOKS:
            raise ValueError(f"unknown notebook {notebook!r}; notebooks with parameters: {sorted(NOTEBOOKS)}")
        declared = {f.name for f in dataclasses.fields(NOTEBOOKS[notebook])}
        missing = sorted(declared - set(namespace))
        if missing:
            raise ValueError(f"notebook {notebook!r} declares no {missing} in its parameters cell")
        params = {**{name: namespace[name] for name in declared}, **params}
    return check_parameters(notebook, params)
