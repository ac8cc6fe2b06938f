"""Run the parameterized notebooks with papermill and regenerate ``figures/``: ``make reproduce``.

Every ``papermill_params/*.yaml`` names a notebook and its parameters::

    notebook: 00_toy_world
    parameters: {seed: 0, image_size: 32}

Each file is checked before any kernel starts: the parameters must be names of the notebook's
``parameters`` cell (read with ``papermill.inspect_notebook``) and pass ``dptlib.config``'s checks.
Executed notebooks go to ``runs/<scale>/notebooks/``; at the toy scale the executed notebook
(outputs included, papermill's injected cell left out) is written back to ``notebooks/`` so that
readers see the results without running anything.

    python -m dptlib.experiments.reproduce [--scale toy] [--only 00_toy_world ...] [--no-write-back] [--set NAME=VALUE ...]
    python -m dptlib.experiments.reproduce --only core --set scheduler=dpm++ num_inference_steps=6   # the faster sampler
    python -m dptlib.experiments.reproduce --scale paper-sd21 --params papermill_params/paper --only 01_probing
    python -m dptlib.experiments.reproduce --ablation blocks [--variant up1]   # one ablation batch (dptlib.experiments.ablations)

Every run is checked before the first kernel starts (names, types and values of the parameters,
the model / data / evaluator they name, a notebook run before the one whose runs it reads); a bad
input is one line on stderr and exit status 2 (``--debug``: the traceback).

``CORE`` are the notebooks of ``make reproduce`` (the paper's main tables), ``ABLATIONS`` those of
``make ablations`` (each runs its batches, then draws its table; ``09_results`` gathers the claims).

Paths in a run file are read from ``notebooks/`` (the kernels' working folder): give absolute ones.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

import yaml

from dptlib.checks import (
    check_names,
    check_parameters,
    check_prerequisites,
    check_resources,
    cli_errors,
    command_line,
    declared_parameters,
    failure_reason,
)
from dptlib.config import kernel_name, repo_root, resolve_scale, runs_dir
from dptlib.experiments import ablations
from dptlib.files import RUN_FILE, read_checked_yaml

LOGGER = logging.getLogger(__name__)

CORE = ("00_toy_world", "00b_base_model", "01_probing", "02_tuning", "03_self_correction")
ABLATIONS = ("04_ablation_blocks", "05_ablation_lora_rank", "06_ablation_adapter_layers", "07_ablation_timesteps", "08_ablation_mse",
             "09_results")


def load_runs(params_dir: Path) -> list[tuple[Path, str, dict]]:
    """(yaml path, notebook name, parameters) for every run file, in file-name order."""
    runs = []
    for path in sorted(params_dir.glob("*.yaml")):
        spec = read_checked_yaml(path, RUN_FILE, "run file")
        runs.append((path, spec["notebook"], dict(spec.get("parameters") or {})))
    return runs


def validate_run(notebook: str, parameters: dict, resources: bool = False) -> None:
    """Raise ValueError if ``parameters`` do not fit the notebook's ``parameters`` cell (names,
    types, values) and config (scale); with ``resources``, FileNotFoundError if the model, data
    or evaluator they name is not on this machine."""
    values = check_parameters(notebook, parameters)
    if resources:
        check_resources(vars(values))


PROGRESS_LINE = re.compile(r"(\d+%\|.*\|)|(\d+(\.\d+)?(it/s|s/it)\])|TqdmWarning: IProgress not found|warn_noipywidgets|"
                           r"^\s*from \.autonotebook import tqdm as notebook_tqdm\s*$")


def strip_progress(nb) -> int:
    """Remove progress-bar noise from an executed notebook, in place: tqdm bars shown as widgets
    (and the widget state saved with them), bar lines and tqdm's IProgress warning on stderr.
    Results, tables, figures and every other line stay as the run wrote them. Returns how many
    outputs were removed or trimmed."""
    changed = 0
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        kept, before = [], changed
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data and PROGRESS_LINE.search(str(data.get("text/plain", ""))):
                changed += 1
                continue
            if output.get("output_type") == "stream":
                lines = output["text"].splitlines(keepends=True)
                clean = [line for line in lines if not any(PROGRESS_LINE.search(part) for part in line.split("\r"))]
                if len(clean) != len(lines):
                    changed += 1
                    if not "".join(clean).strip():
                        continue
                    output["text"] = "".join(clean)
            kept.append(output)
        if changed > before:  # a bar's closing newline, alone on stderr
            kept = [o for o in kept if not (o.get("output_type") == "stream" and not o["text"].strip())]
        if "outputs" in cell:
            cell["outputs"] = kept
    return changed


def write_back(executed: Path, target: Path) -> None:
    """Copy an executed notebook over its source, without papermill's injected-parameters cell
    and without progress-bar noise (:func:`strip_progress`)."""
    import jupytext  # deferred: heavy
    import nbformat  # deferred: heavy

    nb = nbformat.read(executed, as_version=4)
    strip_progress(nb)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if not cell.metadata.get("tags", True):
            del cell.metadata["tags"]  # papermill adds empty tag lists
    nb.metadata.pop("papermill", None)
    nb.metadata.get("jupytext", {}).pop("formats", None)  # jupytext.toml pairs every notebook
    nbformat.write(nb, target)
    # the .py is exactly what `jupytext --to py:percent` makes of the .ipynb: the pair stays in sync
    target.with_suffix(".py").write_text(jupytext.writes(nb, fmt="py:percent"))


def parse_overrides(items: list[str]) -> dict:
    """``["retrain=true", "seeds=[0]"]`` -> ``{"retrain": True, "seeds": [0]}`` (values read as YAML)."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set takes NAME=VALUE, got {item!r}")
        overrides[name.strip()] = yaml.safe_load(value)
    return overrides


def apply_overrides(runs: list[tuple[Path, str, dict]], overrides: dict) -> list[tuple[Path, str, dict]]:
    """Each ``--set`` value goes to the runs whose notebook declares that parameter, so one
    ``--set scheduler=dpm++`` reaches 00b and 02 of ``--only core`` and not 01. A name that no
    notebook of ``runs`` declares raises ``ValueError`` naming the parameters they have."""
    declared = {notebook: set(declared_parameters(notebook)) for _, notebook, _ in runs}
    unused = sorted(name for name in overrides if not any(name in names for names in declared.values()))
    if unused:
        raise ValueError(f"unknown parameter(s) {unused} for notebook(s) {sorted(declared)}; "
                         f"allowed parameters: {sorted(set().union(*declared.values()))}")
    return [(path, notebook, {**parameters, **{name: value for name, value in overrides.items() if name in declared[notebook]}})
            for path, notebook, parameters in runs]


def main(argv: list[str] | None = None) -> int:
    argv, debug = command_line(argv)
    with cli_errors(debug, "dptlib.experiments.reproduce") as state:
        return _main(argv, state)


def _main(argv: list[str], state) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default=None, help="smoke | toy (default: $DPT_SCALE or toy)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these notebooks (or 'core' / 'ablations')")
    parser.add_argument("--ablation", nargs="*", default=None, metavar="BATCH",
                        help="run these ablation batches (papermill_params/ablations/BATCH.yaml) and nothing else")
    parser.add_argument("--variant", nargs="*", default=None, help="with --ablation: only these variants")
    parser.add_argument("--rerun", action="store_true", help="with --ablation and --variant: run them again although finished")
    parser.add_argument("--params", default="papermill_params",
                        help="folder of run files (default papermill_params; paper scale: papermill_params/paper)")
    parser.add_argument("--no-write-back", action="store_true", help="leave notebooks/*.ipynb untouched")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="override a parameter of the runs that have it (VALUE read as YAML), e.g. --set retrain=true")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a bad input instead of one line")
    args = parser.parse_args(argv)
    if args.ablation is not None:

        state.working = True  # the batch runner checks its own input (one line, exit 2)
        return ablations.main([*args.ablation, *(["--scale", args.scale] if args.scale else []),
                               *(["--variant", *args.variant] if args.variant is not None else []), *(["--rerun"] if args.rerun else []),
                               *(["--debug"] if args.debug else [])])
    if args.variant is not None or args.rerun:
        raise ValueError(f"{'--variant' if args.variant is not None else '--rerun'} acts on an ablation batch's variants: "
                         "give --ablation BATCH with it")
    overrides = parse_overrides(args.set)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the kernels inherit it: no progress bars in the written-back outputs
    scale = resolve_scale(args.scale)
    root = repo_root()
    if not (root / args.params).is_dir():
        raise FileNotFoundError(f"--params {args.params}: no such folder of run files")
    runs = load_runs(root / args.params)
    if args.only is not None:
        groups = {"core": CORE, "ablations": ABLATIONS}
        check_names("notebook", [item for item in args.only if item not in groups], [r[1] for r in runs])
        if not args.only:
            raise ValueError(f"--only names notebooks to run; notebooks: {[r[1] for r in runs]} (or 'core', 'ablations')")
        only = {name for item in args.only for name in groups.get(item, (item,))}
        runs = [r for r in runs if r[1] in only]
    runs = apply_overrides(runs, overrides)
    for _, notebook, parameters in runs:  # check everything before spending time on any run
        try:
            validate_run(notebook, parameters, resources=True)
        except ValueError as error:
            raise type(error)(f"{notebook}: {error}") from error
        check_prerequisites(notebook, scale, [r[1] for r in runs])

    import papermill  # deferred: heavy

    state.working = True  # every run checked: what fails from here on keeps its traceback
    out_dir = runs_dir(scale) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, notebook, parameters in runs:
        source = root / "notebooks" / f"{notebook}.ipynb"
        executed = out_dir / f"{path.stem}.ipynb"
        start = time.time()
        LOGGER.info(f"[reproduce] {path.name}: {notebook} at scale {scale}")
        try:
            papermill.execute_notebook(
                str(source), str(executed), parameters={**parameters, "scale": scale}, kernel_name=kernel_name(),
                cwd=str(root / "notebooks"), progress_bar=False,
            )
        except papermill.PapermillExecutionError as error:  # the notebook's own error, in one line, and where its traceback is
            LOGGER.error(f"[reproduce] {notebook} failed: {failure_reason(error)}; the executed notebook, with the traceback: {executed}")
            return 1
        # only the toy scale's outputs are the committed ones (paper-scale runs stay under runs/)
        if scale == "toy" and not args.no_write_back and path.stem == notebook:
            write_back(executed, source)
        LOGGER.info(f"[reproduce] {notebook} done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
