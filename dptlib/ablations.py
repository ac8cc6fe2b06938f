"""Ablation batches: one papermill run per variant of a swept parameter.

A batch file ``papermill_params/ablations/<name>.yaml`` names a notebook, the parameters every
variant shares, and the variants, either as one swept parameter and its values::

    notebook: 02_tuning
    shared: {steps: 300}
    sweep: lora_rank
    values: [1, 2, 4, 8]

or as named variants (for sweeps over several parameters at once)::

    variants:
      mid+down2+up0: {blocks: mid+down2+up0}
      all: {blocks: all}

Each variant runs into ``runs/<scale>/ablations/<batch>/<variant>/``: the executed notebook, its
runs folder (the notebook's ``DPT_RUNS_DIR``: checkpoints, metrics) and ``done.json``, which
records a hash of (notebook, parameters, scale). A variant whose ``done.json`` holds the same
hash is skipped, so a killed batch resumes without redoing finished variants (and the variant
it was killed in keeps its resume states); a changed parameter runs the variant again, afresh.
A failing variant is reported and the batch goes on; the exit status is non-zero if any failed.

    python -m dptlib.ablations lora_rank [--scale toy] [--variant lora_rank=8] [--list]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from .checkpoint import atomic_write_text
from .config import check_parameters, repo_root, resolve_scale, runs_dir

KERNEL = "dpt"


@dataclass
class Batch:
    """An ablation batch: ``variants`` maps a variant's name to its parameters (shared ones included)."""

    name: str
    notebook: str
    variants: dict[str, dict]


def load_batch(path: str | Path) -> Batch:
    """Read and check a batch file (see the module docstring); every variant's parameters are
    checked against the notebook's ``parameters`` cell before anything runs."""
    path = Path(path)
    spec = yaml.safe_load(path.read_text()) or {}
    allowed = {"notebook", "shared", "sweep", "values", "variants"}
    unknown = sorted(set(spec) - allowed)
    if unknown or "notebook" not in spec:
        raise ValueError(f"{path}: a batch file has 'notebook' and {sorted(allowed - {'notebook'})}; got {sorted(spec)}")
    if ("sweep" in spec) == ("variants" in spec) or ("sweep" in spec) != ("values" in spec):
        raise ValueError(f"{path}: give either 'sweep' with 'values', or 'variants'")
    shared = dict(spec.get("shared") or {})
    if "sweep" in spec:
        variants = {f"{spec['sweep']}={value}": {spec["sweep"]: value} for value in spec["values"]}
    else:
        variants = {str(name): dict(values or {}) for name, values in spec["variants"].items()}
    variants = {name: {**shared, **values} for name, values in variants.items()}
    for name, parameters in variants.items():
        try:
            check_parameters(spec["notebook"], parameters)
        except ValueError as error:
            raise ValueError(f"{path}: variant {name!r}: {error}") from None
    return Batch(path.stem, spec["notebook"], variants)


def run_hash(notebook: str, parameters: dict, scale: str) -> str:
    """What a finished variant must match to be skipped: the notebook, its parameters, the scale."""
    text = json.dumps({"notebook": notebook, "parameters": parameters, "scale": scale}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def finished(folder: Path, digest: str) -> bool:
    done = folder / "done.json"
    return done.exists() and json.loads(done.read_text()).get("hash") == digest


@contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute(notebook: str, output: Path, parameters: dict, runs: Path) -> None:
    """One papermill run of ``notebooks/<notebook>.ipynb``, its runs folder set to ``runs``."""
    import papermill

    with _environment(DPT_RUNS_DIR=str(runs), HF_HUB_OFFLINE="1"):
        papermill.execute_notebook(str(repo_root() / "notebooks" / f"{notebook}.ipynb"), str(output), parameters=parameters,
                                   kernel_name=KERNEL, cwd=str(repo_root() / "notebooks"), progress_bar=False)


def _prepare(folder: Path, digest: str) -> None:
    """A variant's folder for a run: kept where a killed run of the same parameters left resume
    states, emptied where they belong to other parameters (training would refuse them)."""
    started = folder / "started.json"
    if folder.exists() and (not started.exists() or json.loads(started.read_text()).get("hash") != digest):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "done.json").unlink(missing_ok=True)
    atomic_write_text(json.dumps({"hash": digest}), started)


def run_batch(batch: Batch, scale: str, only: list[str] | None = None, run=execute, progress: bool = True) -> dict[str, str]:
    """Run the batch's variants (or ``only`` those); returns variant -> "done" / "skipped" /
    "failed: <error>". ``run(notebook, output, parameters, runs_folder)`` executes one variant."""
    unknown = sorted(set(only or []) - set(batch.variants))
    if unknown:
        raise ValueError(f"batch {batch.name!r} has no variant(s) {unknown}; variants: {list(batch.variants)}")
    root = runs_dir(scale) / "ablations" / batch.name
    outcome = {}
    names = [name for name in batch.variants if not only or name in only]
    for name in tqdm(names, desc=batch.name, disable=not progress):
        parameters = {**batch.variants[name], "scale": scale}
        digest = run_hash(batch.notebook, parameters, scale)
        folder = root / name.replace("/", "_")
        if finished(folder, digest):
            outcome[name] = "skipped"
            continue
        _prepare(folder, digest)
        start = time.time()
        try:
            run(batch.notebook, folder / f"{batch.notebook}.ipynb", parameters, folder / "runs")
        except Exception as error:  # a failed variant must not stop the others
            outcome[name] = f"failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            (folder / "error.txt").write_text(traceback.format_exc())
            continue
        atomic_write_text(json.dumps({"hash": digest, "notebook": batch.notebook, "parameters": parameters,
                                      "seconds": round(time.time() - start, 1)}, indent=1), folder / "done.json")
        outcome[name] = "done"
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("batches", nargs="*", help="batch names (files in papermill_params/ablations); none: all")
    parser.add_argument("--scale", default=None)
    parser.add_argument("--variant", nargs="*", default=None, help="run only these variants")
    parser.add_argument("--list", action="store_true", help="list the variants and whether they are done")
    args = parser.parse_args(argv)
    scale = resolve_scale(args.scale)
    folder = repo_root() / "papermill_params" / "ablations"
    paths = [folder / f"{name}.yaml" for name in args.batches] or sorted(folder.glob("*.yaml"))
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"no batch file {missing}; batches: {sorted(p.stem for p in folder.glob('*.yaml'))}")
    batches = [load_batch(p) for p in paths]  # every file checked before anything runs
    failed = 0
    for batch in batches:
        if args.list:
            for name, parameters in batch.variants.items():
                digest = run_hash(batch.notebook, {**parameters, "scale": scale}, scale)
                done = finished(runs_dir(scale) / "ablations" / batch.name / name.replace("/", "_"), digest)
                print(f"{batch.name:16s} {name:24s} {'done' if done else 'to run'}")
            continue
        for name, result in run_batch(batch, scale, args.variant).items():
            print(f"[{batch.name}] {name}: {result}", flush=True)
            failed += result.startswith("failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
