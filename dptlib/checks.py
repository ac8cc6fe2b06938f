"""Checks of what a user asks for, made before any work starts: each failure is one ``ValueError``
(or ``FileNotFoundError``) whose message names the bad value and the allowed ones.

- :func:`check_values`: the values of a notebook's parameters that a type check cannot catch:
  choices (``objectives``, ``trainable``, ...), U-Net block names (read from the model's U-Net
  config, no weights loaded), ranges (steps, seeds, eta).
- :func:`check_resources`: what the parameters point at exists on this machine: the model (the
  toy model, a diffusers folder, or a hub id in the local Hugging Face cache: runs are offline),
  the data manifest and every file it names, the evaluator's checkpoint.
- :func:`check_prerequisites`: a notebook that reads another's runs (02 reads 01's) finds them;
  :func:`ensure_prerequisites`, what a notebook calls itself: at the smoke scale it runs the
  missing notebook first, so a student can open 03 on a fresh clone.
- :func:`notebook_parameters`: what a notebook calls after its parameters cell: the values it
  declares, filled from :data:`dptlib.config.PRESETS`, type-checked, then the checks above.
- :func:`cli_errors`: what the command-line entry points do with these errors: one line on
  stderr, exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import ast
import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from dptlib.config import (
    GRADER_KEYS,
    PRESETS,
    PROBE_PRESETS,
    SCHEDULERS,
    check_environment,
    kernel_name,
    repo_root,
    resolve_model,
    resolve_scale,
    runs_dir,
    show_messages,
)
from dptlib.data.manifest import read_manifest
from dptlib.data.prompt_sets import READERS, T2I_COMPBENCH_CATEGORIES
from dptlib.files import check_json_object, check_safetensors, key_path, non_finite, read_text_lines

LOGGER = logging.getLogger(__name__)

# the allowed values of the parameters that take one of a few names (train.py and the notebooks
# refuse others too; tests/test_checks.py keeps these lists equal to theirs)
CHOICES = {
    "objectives": ("both", "matching", "grounding", "none"),
    "trainable": ("adapter+lora", "lora"),
    "lora_targets": ("cross-attention", "all-attention"),
    "selection": ("clip", "oracle"),
    "probe_schedule": ("constant", "cosine", "linear"),
    "adapter_input_norm": ("none", "batch", "whiten"),
    "scheduler": tuple(SCHEDULERS),
}
NON_NEGATIVE = ("steps", "probe_steps", "tune_steps", "comparison_steps", "control_steps", "ablation_steps", "eta", "mse_coef",
                "lora_rank", "n_train_images", "n_val_images", "n_test_images", "n_rec_expressions", "prompts_per_cell",
                "probe_warmup")
# learning rates and coefficients that notebooks declare as None (the preset's value): a number when given
NUMBERS = ("lr", "probe_lr", "tune_lr", "eta", "mse_coef")
POSITIVE = ("batch_size", "num_inference_steps", "adapter_layers", "denoising_timesteps", "refresh_every")
BLOCK_PARAMETERS = ("blocks", "candidate_blocks")
PAPER_BLOCKS = ("bottom1", "bottom2", "bottom3", "middle")  # names of the paper's Tab. 6 that resolve_blocks also reads


class UserInputError(ValueError):
    """A bad value given by the user (a ``ValueError``, so callers that catch those still do)."""


def _unet_config(model: str) -> dict | None:
    """The U-Net's config.json of ``model`` ("toy", a diffusers folder, or a cached hub id), or None."""
    folder = Path(resolve_model(model))
    if (folder / "unet" / "config.json").is_file():
        return json.loads((folder / "unet" / "config.json").read_text())
    try:
        from huggingface_hub import try_to_load_from_cache  # deferred: heavy

        cached = try_to_load_from_cache(str(model), "unet/config.json")
    except Exception:  # not a valid repo id either
        return None
    return json.loads(Path(cached).read_text()) if isinstance(cached, str) else None


def unet_blocks(model: str) -> list[str] | None:
    """The probe-able block names of ``model``'s U-Net (down0.., mid, up0..) from its config, or
    None when the model is not on this machine."""
    config = _unet_config(model)
    if config is None:
        return None
    return [f"down{i}" for i in range(len(config["down_block_types"]))] + ["mid"] + [
        f"up{i}" for i in range(len(config["up_block_types"]))]


def check_blocks(name: str, value, model: str) -> None:
    """``value``: a block ("up1"), several joined by "+" ("mid+up1"), "all", or a list of those."""
    known = unet_blocks(model)
    if known is None or value is None:
        return  # an absent model is check_resources' to report
    values = value if isinstance(value, list) else [value]
    for entry in values:
        if entry == "all":
            continue
        unknown = [b for b in str(entry).split("+") if b.strip() not in known and b.strip() not in PAPER_BLOCKS]
        if unknown:
            raise UserInputError(f"{name}={value!r}: unknown U-Net block(s) {unknown}; blocks of model {model!r}: {known} "
                                 f"(join several with '+', or 'all')")


def check_values(notebook: str, values: dict) -> None:
    """The checks of this module's docstring on a notebook's full parameter values."""
    missing = [name for name in REQUIRED.get(notebook, ()) if values.get(name) is None]
    if missing:
        raise UserInputError(f"notebook {notebook!r} needs {missing} (the paper-scale run files in papermill_params/paper/ give them)")
    if notebook in REQUIRED:
        check_paper_inputs(values)
    for name, allowed in CHOICES.items():
        if name in values and values[name] is not None and values[name] not in allowed:
            raise UserInputError(f"{name}={values[name]!r} for notebook {notebook!r}; allowed: {list(allowed)}")
    for name, value in values.items():
        where = non_finite(value)
        if where is not None:
            raise UserInputError(f"{key_path((name, *where))}={value!r} for notebook {notebook!r}: NaN and infinity are not values")
    for name in NUMBERS:
        value = values.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise UserInputError(f"{name}={value!r} for notebook {notebook!r}: must be a number")
    for name in ("lr", "probe_lr", "tune_lr"):
        value = values.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise UserInputError(f"{name}={value!r} for notebook {notebook!r}: a learning rate must be > 0")
    for name in NON_NEGATIVE:
        value = values.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise UserInputError(f"{name}={value!r} for notebook {notebook!r}: must be >= 0")
    for name in POSITIVE:
        value = values.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 1:
            raise UserInputError(f"{name}={value!r} for notebook {notebook!r}: must be >= 1")
    for name in ("seeds", "sweep_seeds", "etas", "timesteps"):
        value = values.get(name)
        if isinstance(value, list) and not value:
            raise UserInputError(f"{name}=[] for notebook {notebook!r}: give at least one value")
    for name, high in (("timesteps", 999), ("diagnostic_timesteps", 999), ("extra_eval_timesteps", 999), ("train_timesteps", 1000)):
        bad = [t for t in values.get(name) or [] if not 0 <= t <= high]
        if bad:
            raise UserInputError(f"{name}={values[name]!r} for notebook {notebook!r}: must lie in [0, {high}]")
    if isinstance(values.get("eval_timestep"), int) and not 0 <= values["eval_timestep"] < 1000:
        raise UserInputError(f"eval_timestep={values['eval_timestep']!r} for notebook {notebook!r}: must lie in [0, 999]")
    if values.get("probe_queries") is not None:
        preset = PROBE_PRESETS.get(values.get("scale"), PROBE_PRESETS["toy"])
        matching = preset.get("adapter", {}).get("num_matching_queries", 10)
        if values["probe_queries"] <= matching:
            raise UserInputError(f"probe_queries={values['probe_queries']!r} for notebook {notebook!r}: must exceed the "
                                 f"{matching} matching queries (the rest are object queries)")
    for name in BLOCK_PARAMETERS:
        if name in values:
            check_blocks(name, values[name], values.get("model") or "toy")
    if "batch" in values and notebook.startswith("0") and "ablation" in notebook:
        folder = repo_root() / "papermill_params" / "ablations"
        named = [(key, value) for key, value in values.items() if key == "batch" or key.endswith("_batch")]  # e.g. trainable_batch
        named += [(key, value) for key, names in values.items() if key.endswith("_batches") for value in names or []]  # seeds_batches
        for name, value in named:
            if not (folder / f"{value}.yaml").is_file():
                raise UserInputError(f"{name}={values[name]!r}: no batch file {folder / (str(value) + '.yaml')}; "
                                     f"batches: {sorted(p.stem for p in folder.glob('*.yaml'))}")


def check_paper_inputs(values: dict) -> None:
    """The graders and benchmarks a paper-scale notebook names are known ones (their files:
    :func:`check_resources`)."""
    graders = values.get("graders") or {}
    unknown = sorted(set(graders) - set(GRADER_KEYS))
    if unknown:
        raise UserInputError(f"graders {unknown} are unknown; allowed: {list(GRADER_KEYS)}")
    for name, n in (values.get("benchmarks") or {}).items():
        if name.startswith("file:"):  # a prompt file of one's own
            read_text_lines(name.removeprefix("file:"))  # missing, empty or not UTF-8: one line naming the file
            continue
        base, _, category = name.partition("/")
        known = base.replace("-", "_").lower() in READERS and (not category or category in T2I_COMPBENCH_CATEGORIES)
        if not known:
            raise UserInputError(f"benchmark {name!r} is unknown; allowed: {sorted(READERS)} (t2i_compbench/<category>: "
                                 f"{list(T2I_COMPBENCH_CATEGORIES)}), or file:<a prompt file>")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise UserInputError(f"benchmarks[{name!r}] = {n!r}: a positive number of prompts, or None for all")


def check_resources(values: dict) -> None:
    """The model, data manifest and evaluator named by a notebook's values exist here."""
    model = values.get("model")
    if model not in (None, "toy") and _unet_config(model) is None:
        raise FileNotFoundError(f"model={model!r}: not 'toy', not a diffusers folder (with unet/config.json), and not in the local "
                                f"Hugging Face cache (runs are offline: download it first, e.g. `huggingface-cli download {model}`)")
    data = values.get("data")
    if data not in (None, "toy"):
        read_manifest(data)  # names the manifest's missing keys or files
    for name, path in (values.get("graders") or {}).items():
        checkpoint = str(path).rpartition(":")[2] if str(path).startswith("open_clip:") else path
        if path not in (None, "toy") and ("/" in str(checkpoint)) and not Path(checkpoint).exists():
            raise FileNotFoundError(f"graders[{name!r}] = {path!r}: no such file or folder here")
    evaluator = values.get("evaluator")
    if evaluator not in (None, "toy"):
        kind, _, rest = str(evaluator).partition(":")
        architecture, _, checkpoint = rest.partition(":")
        if kind != "open_clip" or not architecture or not checkpoint:
            raise UserInputError(f"evaluator={evaluator!r}: an evaluator is 'toy' or 'open_clip:<architecture>:<checkpoint>'")
        looks_like_path = "/" in checkpoint or checkpoint.endswith((".bin", ".pt", ".pth", ".safetensors"))
        if looks_like_path and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"evaluator={evaluator!r}: no checkpoint file {checkpoint}")


# notebook -> (the notebook whose runs it reads, files under runs/<scale>/ that must exist)
PREREQUISITES = {
    "02_tuning": ("01_probing", ("probe/adapter.safetensors", "probe-shuffled/adapter.safetensors")),
    "03_self_correction": ("02_tuning", ("tune/best/adapter.safetensors", "tune/best/pytorch_lora_weights.safetensors",
                                         "tune-shuffled/best/adapter.safetensors", "tune-shuffled/best/pytorch_lora_weights.safetensors",
                                         "generation_scores.json")),
    "paper/02_tuning": ("01_probing", ("probe/adapter.safetensors",)),
    "paper/03_self_correction": ("paper/02_tuning", ("tune/best/adapter.safetensors", "tune/best/pytorch_lora_weights.safetensors",
                                                     "benchmark_index.csv",
                                                     "benchmark_sampler.json")),
}
# what a paper-scale notebook cannot run without (its presets leave them to the user)
REQUIRED = {"paper/02_tuning": ("data", "evaluator", "graders", "benchmarks"), "paper/03_self_correction": ("data", "graders")}


def check_prerequisites(notebook: str, scale: str, planned: list[str] = ()) -> None:
    """Raise when ``notebook`` reads runs another notebook makes, and that one has not run at
    ``scale`` and is not ``planned`` to run before it (in the same call)."""
    if notebook not in PREREQUISITES:
        return
    needed, files = PREREQUISITES[notebook]
    planned = list(planned)
    earlier = planned[: planned.index(notebook)] if notebook in planned else planned
    if needed in earlier:
        return
    missing = [f for f in files if not (runs_dir(scale) / f).exists()]
    if missing:
        raise UserInputError(f"{notebook} reads the runs of {needed}, which has not run at scale {scale!r} here "
                             f"(no {runs_dir(scale) / missing[0]}): run `python -m dptlib.experiments.reproduce --scale {scale} --only {needed}` "
                             f"first, or both together")
    for name in files:  # present, but whole: a truncated file is named here, not in the kernel
        if name.endswith(".safetensors"):
            check_safetensors(runs_dir(scale) / name, f"what {needed} wrote")
        elif name.endswith(".json"):
            check_json_object(runs_dir(scale) / name, f"{name} {needed} wrote")


def _run_notebook(notebook: str, scale: str) -> None:
    """Execute ``notebooks/<notebook>.ipynb`` at ``scale`` through papermill into ``runs/<scale>/notebooks/``."""
    import papermill  # deferred: the runner's dependency, slow to import

    out_dir = runs_dir(scale) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(repo_root() / "notebooks" / f"{notebook}.ipynb"), str(out_dir / f"{notebook}.ipynb"),
                               parameters={"scale": scale}, kernel_name=kernel_name(), cwd=str(repo_root() / "notebooks"),
                               progress_bar=False)


def ensure_prerequisites(notebook: str, scale: str, run=_run_notebook) -> list[str]:
    """What a notebook calls right after its parameters: when the runs it reads are missing, at the
    smoke scale run the notebooks that make them (and theirs, first) with ``run(name, scale)``;
    at any other scale raise :class:`UserInputError` naming the notebook to run (training at the
    toy scale takes tens of minutes: it is not started behind a reader's back).
    Returns the notebooks it ran, in order."""
    ran = []
    try:
        check_prerequisites(notebook, scale)
    except UserInputError:
        if scale != "smoke":
            raise
        needed = PREREQUISITES[notebook][0]
        ran += ensure_prerequisites(needed, scale, run)
        LOGGER.info(f"{notebook} reads the runs of {needed}, missing at the smoke scale here: running {needed} first (about a minute)")
        run(needed, scale)
        ran.append(needed)
        check_prerequisites(notebook, scale)
    return ran


def check_names(kind: str, names, allowed, plural: str | None = None) -> None:
    """Every one of ``names`` is one of ``allowed`` (else one error naming them all)."""
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise UserInputError(f"unknown {kind}(s) {unknown}; {plural or kind + 's'}: {list(allowed)}")


def command_line(argv: list[str] | None) -> tuple[list[str], bool]:
    """``argv`` (default ``sys.argv[1:]``) as a list, and whether it asks for ``--debug``."""
    show_messages()
    argv = list(sys.argv[1:] if argv is None else argv)
    with cli_errors("--debug" in argv, Path(sys.argv[0]).name or "dptlib"):  # one line, exit status 2
        check_environment()
    return argv, "--debug" in argv


def failure_reason(error: BaseException) -> str:
    """One line for a failed run: the notebook's own exception and message and the cell it came
    from (papermill's error starts with a blank line), else the exception's first line."""
    if hasattr(error, "ename") and hasattr(error, "evalue"):  # papermill.PapermillExecutionError
        message = str(error.evalue).strip().splitlines()
        return f"{error.ename}: {message[0] if message else ''} (cell [{error.exec_count}])"
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


@contextmanager
def cli_errors(debug: bool = False, program: str = "dptlib"):
    """Turn the user's errors raised inside into one line on stderr and ``SystemExit(2)``;
    ``debug`` lets them through with their traceback. Yields a state whose ``working`` the caller
    sets once its checks are done and work starts: an error after that is not the user's input,
    and keeps its traceback."""
    state = SimpleNamespace(working=False)
    try:
        yield state
    except (ValueError, FileNotFoundError) as error:
        if debug or state.working:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"{program}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


# --------------------------------------------------------------------------------------------
# A notebook's parameters: declared in its parameters cell, filled from config.PRESETS, checked
# --------------------------------------------------------------------------------------------
def _notebook_path(notebook: str) -> Path:
    path = repo_root() / "notebooks" / f"{notebook}.ipynb"
    if notebook not in PRESETS or not path.exists():
        raise ValueError(f"unknown notebook {notebook!r}; notebooks with parameters: {sorted(PRESETS)}")
    return path


def declared_parameters(notebook: str) -> dict[str, object]:
    """name -> value of each assignment in the notebook's ``parameters`` cell (``notebooks/NAME.ipynb``).

    The cell papermill injects after (the one tagged ``parameters``), read from the notebook's JSON
    and evaluated with ``ast.literal_eval``: values, where ``papermill.inspect_notebook`` gives each
    default as its source text; and without papermill, which a notebook run in JupyterLab may lack."""
    cells = json.loads(_notebook_path(notebook).read_text())["cells"]
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise ValueError(f"notebook {notebook!r} has no cell tagged 'parameters'")
    tree = ast.parse("".join(cell["source"]))
    return {target.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets}


def _fits(value, examples: list) -> bool:
    """Whether ``value`` has the type of the non-None examples (an int is a float; None always fits)."""
    kinds = {type(e) for e in examples if e is not None}
    if value is None or not kinds:
        return True
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return True
    return any(type(value) is kind for kind in kinds)


def check_parameters(notebook: str, params: dict) -> SimpleNamespace:
    """The parameters of ``notebook``: its ``parameters`` cell's values, ``params`` over them,
    then the scale's preset for every value still ``None``.

    Raises ``ValueError`` for an unknown notebook, an unknown parameter (naming the allowed ones),
    a value whose type differs from the declared value's (or the presets'), an unknown scale, or
    a value outside its allowed ones (:func:`check_values`: choices, U-Net blocks,
    ranges).
    """
    declared = declared_parameters(notebook)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for notebook {notebook!r}; allowed parameters: {sorted(declared)}")
    presets = PRESETS[notebook]
    for name, value in params.items():
        examples = [declared[name]] + [preset.get(name) for preset in presets.values()]
        if not _fits(value, examples):
            kinds = sorted({type(e).__name__ for e in examples if e is not None})
            raise ValueError(f"parameter {name!r} of notebook {notebook!r} must be {' or '.join(kinds)} (or None), got {value!r}")
    values = {**declared, **params}
    values["scale"] = resolve_scale(values.get("scale"))
    preset = presets.get(values["scale"], presets["toy"])
    for name, value in preset.items():
        if values.get(name) is None:
            values[name] = value
    check_values(notebook, values)
    return SimpleNamespace(**values)


def notebook_parameters(notebook: str, namespace: dict, **params) -> SimpleNamespace:
    """The call a notebook makes right after its ``parameters`` cell, with ``globals()``: the
    values its parameters now hold (papermill's included), checked by :func:`check_parameters`
    and :func:`check_resources` (the model, data and evaluator exist here);
    ``params`` override them. From here on the library's messages show in the notebook."""
    show_messages()
    check_environment()
    declared = declared_parameters(notebook)
    missing = sorted(set(declared) - set(namespace))
    if missing:
        raise ValueError(f"notebook {notebook!r}: its parameters cell declares {missing}, which the namespace lacks")
    values = check_parameters(notebook, {**{name: namespace[name] for name in declared}, **params})
    check_resources(vars(values))
    return values
