"""Configuration: scales, paths, devices, and each notebook's presets per scale.

The bottom of the package: it imports nothing of ``dptlib``. A notebook's first code cell (tagged
``parameters``) holds plain values that papermill may override; :data:`PRESETS` fills those left
``None``, per scale; :func:`dptlib.checks.notebook_parameters` checks them.

Scales: ``smoke`` (seconds; what ``make test`` runs under nbval), ``toy`` (the default: the toy
world at the size the committed figures come from), ``paper-sd14`` / ``paper-sd21`` (the paper's
settings, App. B.3, for a user's GPU). ``scale=None`` reads ``$DPT_SCALE`` (default ``toy``).
"""

from __future__ import annotations

import logging
import os
import platform
import re
import sys
import warnings
from pathlib import Path

import numpy

SCALES = ("smoke", "toy", "paper-sd14", "paper-sd21")
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
TOY_SD_DIR = ASSETS_DIR / "toy-sd"  # the shipped toy Stable Diffusion (diffusers format)
TOY_EVALUATOR_DIR = ASSETS_DIR / "toy-evaluator"  # the toy world's evaluator CLIP


# the environment variables dptlib reads, and what each allows (check_environment says so in one line)
ENVIRONMENT = {
    "DPT_SCALE": f"one of {list(SCALES)}",
    "DPT_DEVICE": "'cpu' or 'cuda' (cuda needs a CUDA device here)",
    "DPT_THREADS": "a whole number >= 1",
    "DPT_ROOT": "an existing folder (a checkout of this repository)",
    "DPT_RUNS_DIR": "a folder, or a path where one can be made",
    "DPT_RESULTS_DIR": "a folder, or a path where one can be made",
    "DPT_FIGURES_DIR": "a folder, or a path where one can be made",
    "DPT_BENCHMARKS_DIR": "an existing folder",
}


def _can_be_folder(path: Path) -> bool:
    """``path`` is a folder, or none of it exists yet below a writable folder."""
    if path.exists():
        return path.is_dir()
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK)


def check_environment(environ=os.environ) -> None:
    """Every ``DPT_*`` variable that is set holds a value it allows (:data:`ENVIRONMENT`); else one
    ``ValueError`` line naming the variable, its value and what is allowed. What the command-line
    tools and the notebooks call before any work."""
    for name, allowed in ENVIRONMENT.items():
        value = environ.get(name)
        if value is None or value == "":
            continue
        if name == "DPT_SCALE":
            fits = value in SCALES
        elif name == "DPT_DEVICE":
            fits = value in ("cpu", "cuda")
            if value == "cuda":
                import torch  # deferred: heavy

                fits = torch.cuda.is_available()
        elif name == "DPT_THREADS":
            fits = value.strip().isdigit() and int(value) >= 1
        elif name in ("DPT_ROOT", "DPT_BENCHMARKS_DIR"):
            fits = Path(value).is_dir()
        else:
            fits = _can_be_folder(Path(value))
        if not fits:
            raise ValueError(f"{name}={value!r}: must be {allowed}")


def resolve_model(model: str | Path) -> str:
    """A model name as ``from_pretrained`` takes it: ``"toy"`` is the shipped toy pipeline; a hub
    id (``stabilityai/stable-diffusion-2-1``) or a local diffusers folder is passed on as is."""
    return str(TOY_SD_DIR) if str(model) == "toy" else str(model)


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
    """Where a scale's checkpoints, metrics and exported data go: ``runs/<scale>`` (git-ignored),
    or ``$DPT_RUNS_DIR/<scale>``."""
    return Path(os.environ.get("DPT_RUNS_DIR") or repo_root() / "runs") / scale


def figures_dir(scale: str) -> Path:
    """``figures/`` for the toy runs (the committed figures); ``figures/<scale>/`` for a paper
    scale, so that a paper-scale run never overwrites a toy figure of the same name; smoke runs
    write under ``runs/smoke/figures`` so that a test never overwrites a committed figure.
    ``$DPT_FIGURES_DIR`` puts them elsewhere (the paper dry run: random weights, tables of no meaning)."""
    if os.environ.get("DPT_FIGURES_DIR"):
        path = Path(os.environ["DPT_FIGURES_DIR"]) / scale
    elif scale == "smoke":
        path = runs_dir(scale) / "figures"
    else:
        path = repo_root() / "figures" if scale == "toy" else repo_root() / "figures" / scale
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress_bars(wanted: bool = True) -> bool:
    """Whether to show a progress bar: ``wanted``, unless ``TQDM_DISABLE`` is set (as
    ``dptlib.experiments.reproduce`` and the ablation batches set it for their kernels). tqdm reads that
    variable only for bars given no ``disable=``; dptlib's bars pass ``disable=not progress_bars(...)``."""
    return wanted and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")


def quiet_libraries() -> None:
    """Silence the loading bars and notices of diffusers / transformers in notebook outputs
    (warnings and errors still show)."""
    from diffusers.utils import logging as diffusers_logging  # deferred: heavy
    from transformers.utils import logging as transformers_logging  # deferred: heavy

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()
    # torch's notice that meshgrid will need `indexing=` (called inside diffusers' attention processors, not here)
    warnings.filterwarnings("ignore", message="torch.meshgrid: in an upcoming release", category=UserWarning)


class _Console(logging.Handler):
    """dptlib's messages as plain lines: INFO to the current ``sys.stdout``, WARNING and above to
    ``sys.stderr`` (looked up at each message: a notebook's streams, a test's capture)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        stream.write(self.format(record) + "\n")
        stream.flush()


def show_messages(level: int = logging.INFO) -> None:
    """Show the library's log messages (logger ``dptlib``) as plain lines: what the command-line
    tools (:func:`dptlib.checks.command_line`) and the notebooks (:func:`dptlib.checks.notebook_parameters`)
    call. A program that configures ``logging`` itself need not; the library alone prints nothing."""
    logger = logging.getLogger("dptlib")
    if not any(isinstance(handler, _Console) for handler in logger.handlers):
        logger.addHandler(_Console())
    logger.setLevel(level)


KERNEL = "dpt"  # the Jupyter kernel make setup registers


def kernel_name() -> str:
    """The kernel papermill runs the notebooks with: "dpt" where it is registered (``make setup``),
    else this environment's own "python3" (``conda env create`` + ``dpt reproduce`` without make),
    with a logged note."""
    from jupyter_client.kernelspec import find_kernel_specs  # deferred: jupyter is the dev extra, only runners need it

    if KERNEL in find_kernel_specs():
        return KERNEL
    logging.getLogger(__name__).warning("no Jupyter kernel named %r (make setup registers it): running the notebooks "
                                        "with this environment's python3 kernel", KERNEL)
    return "python3"


def device() -> str:
    """``"cuda"`` where a GPU is present, else ``"cpu"``; ``DPT_DEVICE=cpu`` keeps work on the CPU
    of a GPU machine (as training does, :func:`dptlib.method.train.probe`)."""
    import torch  # deferred: heavy

    wanted = os.environ.get("DPT_DEVICE")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ValueError("DPT_DEVICE='cuda': no CUDA device on this machine (unset it, or DPT_DEVICE=cpu)")
    return "cuda" if torch.cuda.is_available() and wanted != "cpu" else "cpu"


def machine() -> str:
    """What ran a measurement, for the records beside its seconds: the GPU's name, or the CPU's
    thread count."""
    import torch  # deferred: heavy

    if device() == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {torch.get_num_threads()} threads"


def float_environment() -> dict[str, str]:
    """What decides the rounding of a run's floats, recorded beside its numbers so that a result
    that moves on another machine explains itself: the device, torch's CPU kernel capability, the
    CPU model, the MKL and oneDNN versions, the thread count and the library versions. Results
    come out byte for byte again only where all of these match."""
    import diffusers  # deferred: heavy
    import torch  # deferred: heavy

    build = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", build)
    onednn = re.search(r"MKL-DNN (v[\d.]+)", build)
    cpu = platform.processor() or platform.machine()
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        cpu = f"{info['model name']} (family {info['cpu family']}, model {info['model']})"
    except (OSError, KeyError, ValueError):
        pass
    return {"device": machine(), "cpu": cpu, "torch cpu capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": mkl.group(1) if mkl else "none", "onednn": (onednn.group(1) if onednn else "none") + (
                "" if torch.backends.mkldnn.enabled else " (off)"),
            "torch": torch.__version__, "diffusers": diffusers.__version__, "numpy": numpy.__version__}


def run_summary(params) -> str:
    """One line for the top of a notebook: the run's settings (``params``, a namespace or mapping;
    unset ones left out) and its float environment (``float_environment``)."""
    settings = params if isinstance(params, dict) else vars(params)
    shown = ", ".join(f"{key}={value}" for key, value in settings.items() if value is not None)
    rounding = ", ".join(f"{key} {value}" for key, value in float_environment().items())
    return f"settings: {shown} | float environment: {rounding}"


def set_threads(default: int | None = None) -> int:
    """Set torch's CPU threads from ``$DPT_THREADS`` (or ``default``); returns the count used.

    Two torch processes that both use every core run 10-20x slower on this kind of machine.
    """
    import torch  # deferred: heavy

    threads = int(os.environ.get("DPT_THREADS", default or os.cpu_count() or 1))
    torch.set_num_threads(threads)
    return threads


# --------------------------------------------------------------------------------------------
# Notebook parameters
# --------------------------------------------------------------------------------------------
# A notebook declares each parameter once, in its first code cell (tagged ``parameters``): a
# plain value papermill may override. ``None`` there means "the scale's value", given here; these
# presets are the only other place a parameter's name appears. A scale a notebook has no preset
# for takes the toy preset; a paper-scale preset leaves unset what should stay None (e.g.
# ``n_train_images``: every image of the split).
HEADLINE_CELLS = ["toy-cc (ID)", "toy-nss (ID)"]  # the cells sized to detect a 5-point difference
PAPER_MODELS = {"paper-sd21": "stabilityai/stable-diffusion-2-1", "paper-sd14": "CompVis/stable-diffusion-v1-4"}
# what a notebook's `scheduler` parameter may name: a diffusers scheduler class, built from the
# model's own scheduler config (same noise schedule); None keeps the pipeline's own (the toy SD's: DDIM).
# "dpm++" at 6 steps passed the base-model check on validation prompts (figures/sampler_steps.md)
SCHEDULERS = {"ddim": "DDIMScheduler", "dpm++": "DPMSolverMultistepScheduler"}

# the graders a paper-scale notebook may name (dptlib.evaluation.benchmarks.EvaluatorSuite.from_paths reads them)
GRADER_KEYS = ("clip", "clip_b32", "blip2", "vqa", "detector", "sentence_encoder", "inception", "tifa_questions",
               "complex_spatial", "complex_action")
# stage 1's presets per scale (dptlib.method.train.ProbeConfig.PRESETS): here, below the checks that read them
PROBE_PRESETS = {
    "smoke": dict(steps=4, batch_size=4, checkpoint_every=2, log_every=1,
                  adapter=dict(d_model=32, heads=4, ffn=64, num_queries=12, num_matching_queries=3, dropout=0.0)),
    # the toy adapter is the paper's shape scaled to scenes of <= 3 objects; maps above 8x8 (the
    # toy's up1 is 16x16 after its upsampler) are resized to 8x8, the side its attention runs at
    # 16 queries (8 matching) and a cosine schedule with 100 warm-up steps: with 40 queries and a constant
    # learning rate, stage 1 stopped on the rise of its REC curve (docs/evidence.md, "Fewer object queries");
    # the paper-scale presets keep App. B.3.2's N = 110 queries and no schedule (constant)
    "toy": dict(steps=3000, batch_size=16, lr=1e-3, lr_schedule="cosine", warmup_steps=100,
                adapter=dict(d_model=128, heads=8, ffn=512, num_queries=16, num_matching_queries=8, dropout=0.0, max_side=8)),
    "paper-sd14": dict(model="CompVis/stable-diffusion-v1-4", steps=60000, batch_size=220),
    "paper-sd21": dict(model="stabilityai/stable-diffusion-2-1", steps=60000, batch_size=220),
}

PRESETS: dict[str, dict[str, dict]] = {
    "00_toy_world": {
        "smoke": dict(n_oracle_scenes=40, n_benchmark_prompts=20, export_scenes=8),
        "toy": dict(n_oracle_scenes=1000, n_benchmark_prompts=300, export_scenes=None),
    },
    "00b_base_model": {
        "smoke": dict(retrain=True, n_prompts=4, num_inference_steps=4, n_clip_scenes=20, seeds=[0]),
        "toy": dict(retrain=False, n_prompts=100, num_inference_steps=50, n_clip_scenes=500, seeds=[0, 1, 2]),
    },
    "01_probing": {
        "smoke": dict(comparison_steps=2, steps=4, batch_size=4, control_steps=2, n_train_images=24, n_val_images=12,
                      n_test_images=12, n_rec_expressions=24, diagnostic_scenes=24, denoising_timesteps=2),
        # blocks: up1, chosen on validation data by 01's own comparison when it ran it (docs/results.md)
        "toy": dict(blocks="up1", comparison_steps=600, steps=3000, batch_size=16, control_steps=300, n_train_images=4000, n_val_images=500,
                    n_test_images=500, n_rec_expressions=1000, diagnostic_scenes=400, denoising_timesteps=10),
        # App. B.3: the middle block, 60k steps of 220 septuples; validation every 5k steps; 512 px images
        # (the paper does not say; SD-2.1's U-Net then runs at the 64x64 latents gpu-check measures)
        "paper-sd21": dict(blocks="mid", candidate_blocks=["mid"], comparison_steps=5000, steps=60000, batch_size=220,
                           control_steps=6000, n_val_images=1000, n_test_images=1000, n_rec_expressions=5000,
                           denoising_timesteps=10, image_size=512),
    },
    "02_tuning": {
        "smoke": dict(steps=2, batch_size=4, validate_every=1, n_validation_prompts=1, n_train_images=24, n_val_images=12,
                      prompts={"toy-cc (ID)": 2, "toy-cc (OOD)": 1, "toy-nss (ID)": 2, "toy-abc (MD)": 2, "toy-compbench (MD)": 4},
                      control_cells=HEADLINE_CELLS, n_positive_control_prompts=1, seeds=[0], num_inference_steps=3, attn_res=[8, 8]),
        "toy": dict(steps=300, batch_size=16, validate_every=150, n_validation_prompts=32, n_train_images=4000, n_val_images=500,
                    prompts={"toy-cc (ID)": 150, "toy-cc (OOD)": 56, "toy-nss (ID)": 150, "toy-abc (MD)": 50, "toy-compbench (MD)": 60},
                    control_cells=HEADLINE_CELLS, n_positive_control_prompts=75, seeds=[0, 1, 2, 3], num_inference_steps=15,
                    attn_res=[8, 8]),
    },
    # one ablation variant (notebooks/ablation_variant): DPT end to end at a budget that lets a batch of
    # variants fit an hour on 2 cores; the batch files in papermill_params/ablations say what they change
    "ablation_variant": {
        "smoke": dict(probe_steps=2, tune_steps=2, batch_size=4, n_train_images=24, n_test_images=12, n_rec_expressions=12,
                      prompts={"toy-cc (ID)": 2, "toy-cc (OOD)": 1, "toy-nss (ID)": 2}, seeds=[0], num_inference_steps=3,
                      n_real_images=16),
        "toy": dict(probe_steps=600, tune_steps=100, batch_size=16, n_train_images=4000, n_test_images=500, n_rec_expressions=500,
                    prompts={"toy-cc (ID)": 100, "toy-cc (OOD)": 56, "toy-nss (ID)": 100}, seeds=[0], num_inference_steps=15,
                    n_real_images=500),
    },
    # the ablation notebooks: at the smoke scale a batch's first two variants (what `make test` runs)
    **{name: {"smoke": dict(max_variants=2), "toy": dict()} for name in (
        "04_ablation_blocks", "05_ablation_lora_rank", "06_ablation_adapter_layers", "07_ablation_timesteps", "08_ablation_mse")},
    "09_results": {"smoke": dict(), "toy": dict()},
    # stage 2 and self-correction on a real Stable Diffusion, graded as the paper grades (notebooks/paper/); at the smoke
    # scale a dry run: the toy SD, the toy data as COCO / MDETR files and tiny random graders (tests/test_paper_dry_run.py).
    # App. B.3.1's stage 2 is TuneConfig's preset (6k steps, batch 64 as 8 x 8 accumulated, lr 1e-4); every prompt of every
    # benchmark, one image per prompt (the paper does not say how many; more seeds tighten the intervals)
    "paper/02_tuning": {
        "smoke": dict(model="toy", steps=2, batch_size=4, validate_every=1, n_validation_prompts=2, n_train_images=24, seeds=[0],
                      num_inference_steps=3, generation_batch_size=8, vqa_image_size=32, noun_chunks="auto",
                      benchmarks={"cc500": 2, "coco_nss1k": 2, "abc6k": 1, "tifa": 1, "t2i_compbench": 1}),
        **{scale: dict(model=sd, n_validation_prompts=100, seeds=[0], num_inference_steps=50, generation_batch_size=8,
                       vqa_image_size=480, image_size=512, noun_chunks="spacy",
                       benchmarks={"coco_nss1k": None, "cc500": None, "abc6k": None, "tifa": None, "t2i_compbench": None})
           for scale, sd in PAPER_MODELS.items()},
        "toy": dict(),
    },
    "paper/03_self_correction": {
        "smoke": dict(etas=[0.0, 0.1], n_sweep_prompts=2, sweep_seeds=[0], vqa_image_size=32, noun_chunks="auto"),
        **{scale: dict(etas=[0.0, 0.1, 0.3, 0.5, 1.0], n_sweep_prompts=100, sweep_seeds=[0], vqa_image_size=480, noun_chunks="spacy")
           for scale in PAPER_MODELS},
        "toy": dict(),
    },
    "03_self_correction": {
        "smoke": dict(etas=[0.0, 0.1], sweep_seeds=[0]),
        "toy": dict(etas=[0.0, 0.03, 0.1, 0.3, 1.0], sweep_seeds=[0, 1]),
    },
}
