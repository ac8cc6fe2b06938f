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

or both (the named variants first, e.g. the untuned base model as a reference row, then the
sweep). ``reference`` names the variant the others are compared with (default: the first).
``at_scale: {toy: {probe_steps: 3000}}`` adds shared values at one scale only (a batch's toy
budget; the smoke scale keeps its preset); a variant's own values still win over them.
``training_seeds: [0, 1, 2]`` repeats every variant that trains (all but the reference) once per
training seed, as ``<variant>-s<k>`` with ``training_seed: k``, seed-major (every arm of seed 0,
then of seed 1, ...), so that the arms of one seed share its stage-1 adapter within one session.
A variant that sets its own ``training_seed`` is kept as it is, after the repeated ones (an arm
run later, or for fewer seeds).

Each variant runs into ``runs/<scale>/ablations/<batch>/<variant>/``: the executed notebook, its
runs folder (the notebook's ``DPT_RUNS_DIR``: checkpoints, metrics) and ``done.json``, which
records a hash of (notebook, parameters, scale). A variant whose ``done.json`` holds the same
hash is skipped, so a killed batch resumes without redoing finished variants (and the variant
it was killed in keeps its resume states); a changed parameter runs the variant again, afresh.
A failing variant is reported and the batch goes on; the exit status is non-zero if any failed.

A finished variant's outcomes (``done.json``, ``metrics.json`` and its per-image / per-query
tables, gzipped; no weights) are also exported to ``results/<scale>/<batch>/<variant>/``, which
is committed: the notebooks and ``09_results`` read a variant from there when ``runs/`` lacks it,
so they regenerate in seconds on a fresh clone, and a batch skips what ``results/`` holds.
(Smoke runs export under ``runs/smoke/results``: a test never writes into ``results/``.)

    python -m dptlib.experiments.ablations lora_rank [--scale toy] [--variant lora_rank=8] [--list]
    python -m dptlib.experiments.ablations seeds --jobs 8               # on a GPU: 8 variants at once, one process each
    python -m dptlib.experiments.ablations --redraw-figures [--scale toy]   # figures from saved tables only
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from tqdm.auto import tqdm

from dptlib.checks import (
    UserInputError,
    check_names,
    check_parameters,
    check_resources,
    cli_errors,
    command_line,
    declared_parameters,
    failure_reason,
)
from dptlib.config import device, figures_dir, kernel_name, progress_bars, repo_root, resolve_scale, runs_dir
from dptlib.evaluation import stats
from dptlib.experiments import report
from dptlib.files import BATCH_FILE, read_checked_yaml
from dptlib.method.checkpoint import atomic_write_text

LOGGER = logging.getLogger(__name__)

OUTCOME_TABLES = ("generation_scores.csv", "discrimination_outcomes.csv")  # what results/ keeps of a run, beside its metrics
SEEDS_BATCHES = ("seeds", "seeds_q40", "seeds_confirm")  # every core arm once per training seed (what dptlib.experiments.seed_claims reads)
# batches run only when named (hours; a diagnosis; an ablation's extra training seeds): not part of "every batch"
ON_REQUEST = (*SEEDS_BATCHES, "blocks_diagnosis", "blocks_norm", "blocks_whiten", "timesteps_seeds", "timesteps_more_seeds",
              "adapter_layers_seeds", "adapter_layers_more_seeds", "blocks_seeds")
METHOD_SUFFIX = {"plain": "", "self-corrected": " + SC", "random direction": " + null"}  # generation methods' labels


@dataclass
class Batch:
    """An ablation batch: ``variants`` maps a variant's name to its parameters (shared ones included)."""

    name: str
    notebook: str
    variants: dict[str, dict]
    reference: str = ""
    own: dict[str, dict] = field(default_factory=dict)  # each variant's own values (they win over at_scale's)
    at_scale: dict[str, dict] = field(default_factory=dict)  # scale -> shared values at that scale only

    def for_scale(self, scale: str) -> Batch:
        """The batch with its ``at_scale`` values for ``scale`` applied (under each variant's own)."""
        extra = self.at_scale.get(scale, {})
        variants = {name: {**values, **extra, **self.own.get(name, {})} for name, values in self.variants.items()}
        return Batch(self.name, self.notebook, variants, self.reference, self.own, {})


def load_batch(path: str | Path) -> Batch:
    """Read and check a batch file (see the module docstring); every variant's parameters are
    checked against the notebook's ``parameters`` cell before anything runs."""
    path = Path(path)
    spec = read_checked_yaml(path, BATCH_FILE, "batch file")  # keys, shapes, types, finite numbers: one line naming the key
    shared = dict(spec.get("shared") or {})
    variants = {str(name): dict(values or {}) for name, values in (spec.get("variants") or {}).items()}
    if "sweep" in spec:
        variants.update({f"{spec['sweep']}={value}": {spec["sweep"]: value} for value in spec["values"]})
    reference = str(spec.get("reference", next(iter(variants), "")))
    if reference not in variants:
        raise ValueError(f"{path}: reference {reference!r} is not a variant; variants: {list(variants)}")
    if "training_seeds" in spec:
        variants = with_training_seeds(variants, reference, spec["training_seeds"], path)
    own = variants
    variants = {name: {**shared, **values} for name, values in variants.items()}
    at_scale = {str(scale): dict(values or {}) for scale, values in (spec.get("at_scale") or {}).items()}
    for scale in at_scale:
        resolve_scale(scale)  # an unknown scale is a ValueError naming the known ones
    batch = Batch(path.stem, spec["notebook"], variants, reference, own, at_scale)
    for scale in [None, *at_scale]:
        for name, parameters in (batch.for_scale(scale) if scale else batch).variants.items():
            try:
                check_parameters(spec["notebook"], parameters)
            except ValueError as error:
                raise ValueError(f"{path}: variant {name!r}{f' at scale {scale!r}' if scale else ''}: {error}") from None
    return batch


def with_training_seeds(variants: dict[str, dict], reference: str, seeds, path) -> dict[str, dict]:
    """``variants`` with every one but ``reference`` repeated per training seed (``<name>-s<k>``,
    ``training_seed: k``), seed-major."""
    if not isinstance(seeds, list) or not seeds or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in seeds):
        raise ValueError(f"{path}: training_seeds must be a list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: training_seeds repeats a seed: {seeds}")
    repeated = {name: values for name, values in variants.items() if name != reference and "training_seed" not in values}
    out = {reference: variants[reference]}
    for k in seeds:
        out.update({f"{name}-s{k}": {**values, "training_seed": k} for name, values in repeated.items()})
    out.update({name: values for name, values in variants.items() if name != reference and name not in repeated})
    return out


def split_seed(variant: str) -> tuple[str, int | None]:
    """``"dpt-s3"`` -> ``("dpt", 3)``; a variant without a training-seed suffix -> ``(variant, None)``."""
    arm, sep, k = variant.rpartition("-s")
    return (arm, int(k)) if sep and arm and k.isdigit() else (variant, None)


def seed_arm(variant: str, names) -> dict[int, str]:
    """{training seed: run} of ``variant`` among the run ``names``: ``variant`` itself is training
    seed 0 (its batch's own run), ``"<variant>-s<k>"`` seed k (a seeds batch's).

    >>> seed_arm("t=250", ["t=250-s2", "t=0-s1", "t=250-s1"])
    {0: 't=250', 1: 't=250-s1', 2: 't=250-s2'}
    """
    arms = {0: variant}
    for name in names:
        arm, k = split_seed(name)
        if arm == variant and k is not None:
            arms[k] = name
    return dict(sorted(arms.items()))


ANALYSIS_PLAN = "docs/analysis-plan.md"  # the frozen plan the confirmatory runs are made under


def analysis_plan_hash() -> str | None:
    """sha256 of the analysis plan as it is now (recorded in each finished run's ``done.json``, so
    that a run says which plan it was made under); None where the repository has none."""
    path = repo_root() / ANALYSIS_PLAN
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def run_hash(notebook: str, parameters: dict, scale: str) -> str:
    """What a finished variant must match to be skipped: the notebook, its parameters, the scale."""
    text = json.dumps({"notebook": notebook, "parameters": parameters, "scale": scale}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def finished(folder: Path, digest: str) -> bool:
    done = folder / "done.json"
    return done.exists() and json.loads(done.read_text()).get("hash") == digest


def results_dir(scale: str) -> Path:
    """Where finished variants' outcomes are exported: ``results/<scale>`` (committed), or
    ``$DPT_RESULTS_DIR/<scale>``; at the smoke scale ``runs/smoke/results``."""
    if scale == "smoke":
        return runs_dir(scale) / "results"
    return Path(os.environ.get("DPT_RESULTS_DIR") or repo_root() / "results") / scale


def exported_dir(batch: Batch, name: str, scale: str) -> Path:
    """``results/<scale>/<batch>/<variant>``: a finished variant's outcomes, without weights."""
    return results_dir(scale) / batch.name / name.replace("/", "_")


def export_outcomes(folder: Path, target: Path, scale: str) -> None:
    """Copy a finished variant's ``done.json``, ``metrics.json`` and outcome tables (gzipped, with
    no time stamp, so that the same run gives the same bytes) from ``folder`` into ``target``,
    replacing what ``target`` held: the files are written into a fresh folder beside it, which
    then takes its place (a killed export leaves the old folder or none, never a mix)."""
    runs = folder / "runs" / scale
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "metrics.json").write_text((runs / "metrics.json").read_text())
    for name in OUTCOME_TABLES:
        if (runs / name).exists():
            (partial / f"{name}.gz").write_bytes(gzip.compress((runs / name).read_bytes(), mtime=0))
    (partial / "done.json").write_text((folder / "done.json").read_text())
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)


def outcomes_dir(batch: Batch, name: str, scale: str, digest: str) -> Path | None:
    """Where a variant's finished outcomes lie: its run folder (``runs/``, with ``metrics.json``
    under ``runs/<scale>``), else its exported folder (``results/``); None when neither is finished."""
    folder = variant_dir(batch, name, scale)
    if finished(folder, digest):
        return folder
    exported = exported_dir(batch, name, scale)
    return exported if finished(exported, digest) else None


def _outcome_file(found: Path, scale: str, name: str) -> Path | None:
    """A run folder keeps its files under ``runs/<scale>``, an exported one beside ``done.json``, gzipped."""
    for path in (found / "runs" / scale / name, found / name, found / f"{name}.gz"):
        if path.exists():
            return path
    return None


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
    """One papermill run of ``notebooks/<notebook>.ipynb``, its runs folder set to ``runs``.

    A notebook with a ``shared_dir`` parameter gets ``runs/<scale>/ablations/shared``: what
    variants of every batch share (stage-1 adapters by their settings, the exported data). The
    path is not part of the variant's hash: moving the checkout does not redo finished variants.
    """
    import papermill  # deferred: heavy

    if "shared_dir" in declared_parameters(notebook) and "shared_dir" not in parameters:
        parameters = {**parameters, "shared_dir": str(shared_dir(parameters["scale"]))}
    with _environment(DPT_RUNS_DIR=str(runs), HF_HUB_OFFLINE="1", TQDM_DISABLE="1"):
        papermill.execute_notebook(str(repo_root() / "notebooks" / f"{notebook}.ipynb"), str(output), parameters=parameters,
                                   kernel_name=kernel_name(), cwd=str(repo_root() / "notebooks"), progress_bar=False)


def shared_dir(scale: str) -> Path:
    """What the variants of all batches share at a scale (stage-1 adapters, exported data)."""
    return runs_dir(scale) / "ablations" / "shared"


def variant_dir(batch: Batch, name: str, scale: str) -> Path:
    """``runs/<scale>/ablations/<batch>/<variant>``: where a variant's run and results live."""
    return runs_dir(scale) / "ablations" / batch.name / name.replace("/", "_")


def _prepare(folder: Path, digest: str) -> None:
    """A variant's folder for a run: kept where a killed run of the same parameters left resume
    states, emptied where they belong to other parameters (training would refuse them)."""
    started = folder / "started.json"
    if folder.exists() and (not started.exists() or json.loads(started.read_text()).get("hash") != digest):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "done.json").unlink(missing_ok=True)
    atomic_write_text(json.dumps({"hash": digest}), started)


def _swap_in(staging: Path, folder: Path) -> None:
    """Put a finished re-run (``staging``) in the place of the run it replaces (``folder``)."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def run_batch(batch: Batch, scale: str, only: list[str] | None = None, run=execute, progress: bool = True,
              rerun: list[str] | None = None, jobs: int = 1, launch=None) -> dict[str, str]:
    """Run the batch's variants (or ``only`` those); returns variant -> "done" / "skipped" /
    "failed: <error>". ``run(notebook, output, parameters, runs_folder)`` executes one variant.

    ``rerun`` names variants to run again although finished (in ``runs/`` or ``results/``): the
    re-run goes into a folder beside the finished one (``<variant>.rerun``; a killed re-run resumes
    there) and takes its place only when it finishes, and only then do its outcomes replace the
    exported ones: a re-run that fails leaves the finished run as it was. (A stage-1 adapter in
    the shared folder is still reused: re-run on a fresh clone to train it again.) A failure's
    reason is returned as one line, and its full log is in the ``error.txt`` it names.

    ``jobs > 1`` runs the unfinished variants as separate processes, that many at a time
    (:func:`run_apart`; ``launch`` replaces the process launcher in tests)."""
    batch = batch.for_scale(scale)
    unknown = sorted((set(only or []) | set(rerun or [])) - set(batch.variants))
    if unknown:
        raise UserInputError(f"batch {batch.name!r} has no variant(s) {unknown}; variants: {list(batch.variants)}")
    outcome, pending = {}, []
    names = [name for name in batch.variants if not only or name in only]
    for name in tqdm(names, desc=batch.name, disable=not progress_bars(progress) or jobs > 1):
        parameters = {**batch.variants[name], "scale": scale}
        digest = run_hash(batch.notebook, parameters, scale)
        folder = variant_dir(batch, name, scale)
        if jobs > 1 and (name in (rerun or []) or outcomes_dir(batch, name, scale, digest) is None):
            pending.append(name)  # its own process does what follows
            continue
        target = folder  # where the variant's run ends up
        if name in (rerun or []):
            if finished(folder, digest):  # run beside it: its saved states would "resume" the re-run at its end
                folder = folder.with_name(folder.name + ".rerun")
        elif outcomes_dir(batch, name, scale, digest) is not None:
            exported = exported_dir(batch, name, scale)
            if finished(folder, digest) and not finished(exported, digest) and (folder / "runs" / scale / "metrics.json").exists():
                export_outcomes(folder, exported, scale)  # finished before its export (killed between, or an older run)
            outcome[name] = "skipped"
            continue
        _prepare(folder, digest)
        start = time.time()
        try:
            run(batch.notebook, folder / f"{batch.notebook}.ipynb", parameters, folder / "runs")
        except Exception as error:  # a failed variant must not stop the others
            (folder / "error.txt").write_text(traceback.format_exc())
            outcome[name] = f"failed: {failure_reason(error)}; full log: {folder / 'error.txt'}"
            continue
        atomic_write_text(json.dumps({"hash": digest, "notebook": batch.notebook, "parameters": parameters,
                                      "seconds": round(time.time() - start, 1), "finished": time.strftime("%Y-%m-%d"),
                                      "analysis_plan": analysis_plan_hash()},
                                     indent=1), folder / "done.json")
        (folder / "error.txt").unlink(missing_ok=True)  # an earlier failed try's log
        if folder != target:  # a finished re-run takes the place of the run it replaces
            _swap_in(folder, target)
            folder = target
        if (folder / "runs" / scale / "metrics.json").exists():
            export_outcomes(folder, exported_dir(batch, name, scale), scale)
        outcome[name] = "done"
    if pending:
        outcome.update(run_apart(batch, scale, pending, jobs, rerun=[n for n in pending if n in (rerun or [])], launch=launch,
                                 progress=progress))
    return {name: outcome[name] for name in names}


def launch_variant(batch: Batch, scale: str, name: str, rerun: bool) -> str:
    """``python -m dptlib.experiments.ablations <batch> --scale <scale> --variant <name> [--rerun]`` in a process
    of its own, its output in ``runs/<scale>/ablations/<batch>/<variant>.log``; returns its result
    ("done", "skipped" or "failed: ...") as the child printed it."""
    folder = variant_dir(batch, name, scale)
    log = folder.with_name(folder.name + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "dptlib.experiments.ablations", batch.name, "--scale", scale, "--variant", name] + (["--rerun"] if rerun else [])
    with open(log, "w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=repo_root(), env={**os.environ, "TQDM_DISABLE": "1"}).returncode
    prefix = f"[{batch.name}] {name}: "
    said = [line[len(prefix):] for line in log.read_text().splitlines() if line.startswith(prefix)]
    return said[-1] if said else f"failed: exit status {code} (see {log})"


def run_apart(batch: Batch, scale: str, names: list[str], jobs: int, rerun: list[str] | None = None, launch=None,
              progress: bool = True) -> dict[str, str]:
    """Run ``names`` of ``batch`` as separate processes, ``jobs`` at a time, in the batch's order
    (``--jobs``; for a GPU, which one toy variant leaves mostly idle). Variants that share an
    artefact take turns on it (:func:`dptlib.method.checkpoint.exclusive`: the exported data in
    :func:`dptlib.toy.data.export_once`, a stage-1 adapter in the notebook), so an arm that needs another's stage 1 waits for it; seed-major
    batches keep such arms next to each other. ``launch(batch, scale, name, rerun)`` runs one
    variant and returns its result (default :func:`launch_variant`)."""
    launch = launch or launch_variant
    outcome = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(launch, batch, scale, name, name in (rerun or [])): name for name in names}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"{batch.name} ({jobs} at a time)",
                           disable=not progress_bars(progress)):
            outcome[futures[future]] = future.result()
    return outcome


@dataclass
class Results:
    """A batch's finished variants, read back: ``metrics`` (one row per variant: its headline
    numbers and seconds), ``generation`` (one row per image: variant, sampling, cell, prompt,
    seed and the oracle's / CLIP's scores) and ``discrimination`` (one row per query: variant,
    task, item, correct). ``missing``: the variants without results (not run, or failed)."""

    metrics: pd.DataFrame
    generation: pd.DataFrame
    discrimination: pd.DataFrame
    missing: list[str]


def _damaged(path: Path, error: Exception) -> ValueError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(f"{path}: damaged ({type(error).__name__}: {reason}); restore it (git checkout -- <file>, for a committed "
                      f"result) or run the variant again (--rerun --variant)")


def read_outcome_csv(path: Path) -> pd.DataFrame:
    """An exported outcome table (``.csv`` or ``.csv.gz``); a truncated or foreign file is one
    ``ValueError`` line naming it."""
    try:
        return pd.read_csv(path)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise _damaged(Path(path), error) from None


def read_outcome_json(path: Path) -> dict:
    """An exported outcome record (``metrics.json``, ``done.json``), or one line naming the damaged file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(Path(path), error) from None


def collect(batch: Batch, scale: str, only: list[str] | None = None) -> Results:
    """Read the results of ``batch``'s finished variants (those whose ``done.json`` matches
    their parameters) at ``scale``, in the batch's order."""
    metrics, generation, discrimination, missing = [], [], [], []
    batch = batch.for_scale(scale)
    for name, parameters in batch.variants.items():
        if only and name not in only:
            continue
        where = outcomes_dir(batch, name, scale, run_hash(batch.notebook, {**parameters, "scale": scale}, scale))
        if where is None:
            missing.append(name)
            continue
        found = read_outcome_json(_outcome_file(where, scale, "metrics.json"))
        row = {"variant": name, **found.get("discrimination", {}), "seconds": read_outcome_json(where / "done.json")["seconds"],
               "machine": found.get("machine", "")}
        for method, cells in found.get("generation", {}).items():
            row[f"Fréchet ({method})"] = cells.get("frechet")
        metrics.append(row)
        for table, parts in (("generation_scores.csv", generation), ("discrimination_outcomes.csv", discrimination)):
            path = _outcome_file(where, scale, table)
            if path is not None:
                parts.append(read_outcome_csv(path).assign(variant=name))
    frame = pd.DataFrame(metrics).set_index("variant") if metrics else pd.DataFrame()
    join = lambda parts: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()  # noqa: E731
    return Results(frame, join(generation), join(discrimination), missing)


def combine(*parts: Results) -> Results:
    """One table from the results of several batch files of one ablation (a batch split to fit
    its time budget, e.g. ``blocks`` and ``blocks_fused``), in order. A variant both parts ran
    (their common reference, e.g. ``base``) is kept from the first part that has it."""
    seen, metrics, generation, discrimination, missing = set(), [], [], [], []
    for part in parts:
        new = [name for name in part.metrics.index if name not in seen]
        metrics.append(part.metrics.loc[new])
        for table, into in ((part.generation, generation), (part.discrimination, discrimination)):
            if not table.empty:
                into.append(table[table["variant"].isin(new)])
        missing += [name for name in part.missing if name not in seen and name not in missing]
        seen.update(new)
    join = lambda frames: pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()  # noqa: E731
    present = [m for m in metrics if len(m)]
    return Results(pd.concat(present) if present else pd.DataFrame(), join(generation), join(discrimination),
                   [name for name in missing if name not in seen])


def compare_variants(results: Results, reference: str, discrimination_reference: str | None = None,
                     metric: str = "correct") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paired comparisons of every variant with a reference (:func:`dptlib.evaluation.stats.compare_to_baseline`).

    Generation: per cell, each variant's images (``"<variant>"`` plain, ``"<variant> + SC"``
    self-corrected) against the ``reference`` variant's plain images of the same prompts and
    seeds, on ``metric``. Discrimination: per task (ITM overall, REC P@1), each variant against
    ``discrimination_reference`` on the same queries; where that variant has no results (not
    run: a smoke batch runs two variants), against the first variant that has them.
    """
    generation = pd.DataFrame()
    if not results.generation.empty:
        images = results.generation.copy()
        images["method"] = images["variant"] + images["method"].map(METHOD_SUFFIX)
        order = [f"{v}{s}" for v in dict.fromkeys(images["variant"]) for s in METHOD_SUFFIX.values() if f"{v}{s}" in set(images["method"])]
        generation = stats.compare_to_baseline(images, metric, reference, cell_cols=("cell",), methods=order)
    discrimination = pd.DataFrame()
    if not results.discrimination.empty:
        measured = list(dict.fromkeys(results.discrimination["variant"]))
        chosen = discrimination_reference if discrimination_reference in measured else measured[0]
        discrimination = stats.compare_to_baseline(results.discrimination, "correct", chosen,
                                                   method_col="variant", cell_cols=("task",), item_cols=("item",), cluster_col=None)
    return generation, discrimination


CLAIM_COLUMNS = ["claim", "paper", "toy (difference, 95 % interval)", "n", "verdict"]


def claims_frame(rows: list[dict | None]) -> pd.DataFrame:
    """The claims a notebook could test (:func:`variant_claim` rows; None where a variant has no
    results) as a table with :data:`CLAIM_COLUMNS`, also when there are none."""
    return pd.DataFrame([row for row in rows if row is not None], columns=CLAIM_COLUMNS)


def panels(generation: pd.DataFrame, discrimination: pd.DataFrame) -> pd.DataFrame:
    """The two comparisons of :func:`compare_variants` stacked for one figure, indexed by
    (panel, variant): a panel per discrimination task and per generation cell."""
    parts = [c.rename_axis(["panel", "variant"]) for c in (discrimination, generation) if not c.empty]
    return pd.concat(parts) if parts else pd.DataFrame()


BLOCK_ORDER = ["down0", "down1", "down2", "mid", "up0", "up1", "up2"]  # bottom of the U-Net to its top (diffusers' order)
# Each batch figure: the table it draws (figures/<table>.csv), its x axis, and its ordered sweep
# (a line joins these; a "sweep" parameter name means its settings "<name>=<number>", by number).
FIGURES = {
    "fig3_blocks": dict(table="tab6_blocks", xlabel="probed block (bottom to top)", line=BLOCK_ORDER),
    "tab7_rank": dict(table="tab7_rank", xlabel="LoRA rank", sweep="lora_rank"),
    "tab8_layers": dict(table="tab8_layers", xlabel="adapter layers", sweep="adapter_layers"),
    "tab9_mse": dict(table="tab9_mse", xlabel="MSE coefficient", sweep="mse_coef"),
}


def _sweep_line(settings: list[str], parameter: str) -> list[str]:
    """The settings "<parameter>=<number>" of ``settings``, by number."""
    numbered = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        try:
            numbered[setting] = float(value) if key == parameter else None
        except ValueError:
            numbered[setting] = None
    return sorted((s for s, v in numbered.items() if v is not None), key=numbered.get)


def batch_figure(comparison: pd.DataFrame, order: list[str], name: str):
    """The figure ``name`` of :data:`FIGURES` (any other name: no line, no x label) from a
    (panel, variant) frame with ``mean``, ``low``, ``high``, in ``order``."""
    options = FIGURES.get(name, {})
    settings = [v.removesuffix(report.SC_SUFFIX) for v in order]
    line = options.get("line") or (_sweep_line(settings, options["sweep"]) if "sweep" in options else None)
    return report.variant_plot(comparison, order, line=line, xlabel=options.get("xlabel", ""))


def save_batch_figure(generation: pd.DataFrame, discrimination: pd.DataFrame, order: list[str], name: str, scale: str) -> None:
    """An ablation's figure (:func:`batch_figure`): a panel per discrimination task and generation
    cell (:func:`panels`), each variant's mean with the tables' own 95 % interval; saved as ``name``."""
    report.save_figure(batch_figure(panels(generation, discrimination), order, name), name, scale)


def redraw_figures(scale: str) -> list[str]:
    """Redraw each figure of :data:`FIGURES` whose table the scale's figures folder holds, from
    that table alone (no run needed): a new figure design reaches runs made before it. Returns
    the names redrawn."""
    redrawn = []
    for name, options in FIGURES.items():
        path = figures_dir(scale) / f"{options['table']}.csv"
        if path.exists():
            table = pd.read_csv(path, keep_default_na=False, dtype=str)
            table = table.set_index(table.columns[0])
            figure = batch_figure(report.interval_long(table), list(table.index), name)
            report.save_figure(figure, name, scale)
            plt.close(figure)
            redrawn.append(name)
    return redrawn


def variant_claim(results: Results, claim: str, paper: str, baseline: str, method: str, cell: str,
                  expected_sign: int = +1, control: bool = False, metric: str = "correct") -> dict | None:
    """One line of the claims table (:func:`dptlib.experiments.report.claim_row`): ``method`` against
    ``baseline`` in ``cell``, paired, on those two only. A generation cell ("toy-cc (ID)")
    compares images (a name ending in " + SC" means self-corrected), a task ("ITM overall",
    "REC P@1") compares queries. None where either variant has no results."""
    def label(frame):
        return frame["variant"] + frame["method"].map(METHOD_SUFFIX)

    if cell in set(results.discrimination.get("task", [])):
        frame = results.discrimination.rename(columns={"variant": "method"})
        options = dict(cell_cols=("task",), item_cols=("item",), cluster_col=None)
    elif not results.generation.empty:
        frame = results.generation.assign(method=label(results.generation))
        options = dict(cell_cols=("cell",))
    else:
        return None
    found = set(frame.loc[frame[options["cell_cols"][0]] == cell, "method"])
    if baseline not in found or method not in found:
        return None
    row = stats.compare_pair(frame, metric, baseline, method, cell=cell, **options)
    return report.claim_row(claim, paper, row, expected_sign=expected_sign, control=control)


def seeded_outcomes(results: Results) -> pd.DataFrame:
    """A batch's outcomes as :func:`seeded_claims` reads them: one row per (variant, task, item)
    with ``cluster`` and ``correct``. Discrimination rows as they are (each query its own
    cluster); generation rows with the cell ("toy-nss (ID)") as the task, an image
    (``prompt|seed``) as the item, clustered by prompt (a prompt with all its generation seeds),
    and a self-corrected image under ``"<variant> + SC"`` (the labels of :func:`variant_claim`)."""
    parts = []
    if not results.discrimination.empty:
        found = results.discrimination
        parts.append(found.assign(item=found["item"].astype(str), cluster=found["item"].astype(str)))
    if not results.generation.empty:
        found = results.generation
        parts.append(pd.DataFrame({"variant": found["variant"] + found["method"].map(METHOD_SUFFIX), "task": found["cell"],
                                   "item": found["prompt"] + "|" + found["seed"].astype(str), "cluster": found["prompt"],
                                   "correct": found["correct"]}))
    columns = ["variant", "task", "item", "cluster", "correct"]
    return pd.concat([p[columns] for p in parts], ignore_index=True) if parts else pd.DataFrame(columns=columns)


def seeded_difference(outcomes: pd.DataFrame, base: dict[int, str], own: dict[int, str], task: str,
                      expected_sign: int = +1) -> dict:
    """``own - base`` on one ``task`` over training seeds and test items.

    ``outcomes``: rows (variant, task, item, correct) of one or more batches' results, and
    ``cluster`` where items group (:func:`seeded_outcomes`: a generation cell's images by prompt;
    without it each item stands alone); ``base`` / ``own``: {training seed: variant}. Runs pair by
    training seed where both arms have it (the same test items throughout; an untrained base may
    be the same variant at every seed), through :func:`dptlib.evaluation.stats.seed_paired_difference`.
    Returns its result in points with ``verdict`` (:func:`dptlib.evaluation.stats.seed_verdict`: fewer than
    3 paired seeds read "k runs"). Raises ``ValueError`` when the arms share no seed."""
    seeds = sorted(set(base) & set(own))
    if not seeds:
        raise ValueError(f"the arms share no training seed: {sorted(base)} against {sorted(own)}")
    clustered = "cluster" in outcomes

    def rows(arm: dict[int, str]) -> pd.DataFrame:
        frame = outcomes[outcomes["task"] == task]
        picked = [frame[frame["variant"] == arm[s]].assign(run=s) for s in seeds]
        missing = [arm[s] for s, f in zip(seeds, picked) if f.empty]
        if missing:
            raise ValueError(f"no {task!r} outcomes for {missing}")
        return pd.concat(picked)[["run", "item", "correct"] + (["cluster"] if clustered else [])].astype({"correct": float})

    found = stats.seed_paired_difference(rows(base), rows(own), "correct", item_cols=("item",),
                                         cluster_col="cluster" if clustered else None)
    for key in ("difference", "low", "high", "se"):
        found[key] *= 100
    found["per_run"] = [100 * v for v in found["per_run"]]
    found["verdict"] = stats.seed_verdict(found, expected_sign)
    return found


def _holm_over_judged(found: list[dict], min_runs: int = stats.MIN_RUNS) -> tuple[list[float | None], int]:
    """Holm's adjustment over the differences with >= ``min_runs`` seeds (the others get None: no
    verdict is read from them); returns the adjusted p per difference and the family size."""
    judged = [i for i, f in enumerate(found) if f["n_runs"] >= min_runs]
    adjusted = dict(zip(judged, stats.holm([found[i]["p_value"] for i in judged])))
    return [adjusted.get(i) for i in range(len(found))], len(judged)


def _holm_text(p: float | None, family: int) -> str:
    if p is None:
        return "—"
    return (f"{p:.3f}" if p >= 0.001 else "< 0.001") + f" (of {family})"


def treatment_table(discrimination: pd.DataFrame, raw: dict[str, dict[int, str]], treated: dict[tuple[str, str], dict[int, str]],
                    tasks: list[str]) -> pd.DataFrame:
    """Each treatment of a block against the block's raw runs, per task, by training seed.

    ``raw``: {block: {training seed: variant}}; ``treated``: {(block, treatment): {seed: variant}}.
    Only seeds whose both variants have outcomes count (:func:`seeded_difference`). Holm's
    adjustment runs over the rows with >= 3 seeds; the others read "k runs" whatever their p.
    One row per (block, treatment, task): seeds, the difference with its interval and p, the
    per-seed differences, the Holm p (with the family size) and the verdict."""
    finished = set(discrimination.get("variant", []))
    found = {}
    for (block, treatment), runs in treated.items():
        seeds = [s for s in runs if s in raw[block] and {raw[block][s], runs[s]} <= finished]
        for task in tasks if seeds else []:
            found[block, treatment, task] = seeded_difference(discrimination, {s: raw[block][s] for s in seeds},
                                                              {s: runs[s] for s in seeds}, task)
    adjusted, family = _holm_over_judged(list(found.values()))
    return pd.DataFrame([
        {"block": block, "map": treatment, "task": task, "seeds": f["n_runs"],
         "treated − raw": stats.format_difference(f["difference"], f["low"], f["high"], f["p_value"]),
         "per seed": ", ".join(f"{v:+.1f}" for v in f["per_run"]), "Holm p": _holm_text(p, family),
         "verdict": stats.seed_verdict(f, p_adjusted=p)}
        for ((block, treatment, task), f), p in zip(found.items(), adjusted)])


SEEDED_CLAIM_COLUMNS = ["claim", "paper", "toy (difference, 95 % interval)", "per seed", "seeds agreeing", "p (Holm)", "size vs paper",
                        "n", "verdict", "difference", "low", "high"]


def seeded_claims(outcomes: pd.DataFrame, claims: list[dict]) -> pd.DataFrame:
    """An ablation's claims judged over training seeds and test items, as the seeds batch's are.

    ``outcomes``: rows (variant, task, item, correct) of the ablation's batches, or
    :func:`seeded_outcomes` of them (generation cells too); ``claims``: dicts with ``claim``,
    ``paper`` (text whose leading number is the paper's effect), ``task`` (a discrimination task
    or a generation cell), ``base`` and ``own`` ({training seed: variant}; ``base`` may be one
    variant that trains nothing, e.g. the untuned ``"base"``, paired with every seed of ``own``)
    and optionally ``expected_sign``
    (+1 default: ``own`` beats ``base``). A claim is measured on the seeds where both its
    variants have outcomes (:func:`seeded_difference`); one with none is left out. Holm's
    adjustment runs over the claims with >= 3 seeds (the table is the family); one with fewer
    reads "k runs". Returns one row per measured claim (:data:`SEEDED_CLAIM_COLUMNS`; ``difference``,
    ``low``, ``high`` as numbers: what ``make check-claims`` compares)."""
    measured = []
    for claim in claims:
        if isinstance(claim["base"], str):
            claim = {**claim, "base": {s: claim["base"] for s in claim["own"]}}
        finished = set(outcomes.loc[outcomes["task"] == claim["task"], "variant"]) if len(outcomes) else set()
        seeds = [s for s in claim["own"] if s in claim["base"] and {claim["base"][s], claim["own"][s]} <= finished]
        if seeds:
            found = seeded_difference(outcomes, {s: claim["base"][s] for s in seeds}, {s: claim["own"][s] for s in seeds},
                                      claim["task"])
            measured.append((claim, found))
    adjusted, family = _holm_over_judged([f for _, f in measured])
    rows = []
    for (claim, f), p in zip(measured, adjusted):
        sign = claim.get("expected_sign", +1)
        verdict = stats.seed_verdict(f, sign, p_adjusted=p)
        side = -sign if verdict == "contradicted" else sign
        paper = report.leading_number(claim["paper"])
        rows.append({"claim": claim["claim"], "paper": claim["paper"],
                     "toy (difference, 95 % interval)": stats.format_difference(f["difference"], f["low"], f["high"], f["p_value"]),
                     "per seed": ", ".join(f"{v:+.1f}" for v in f["per_run"]),
                     "seeds agreeing": f"{f['runs_positive'] if side > 0 else f['runs_negative']} of {f['n_runs']}",
                     "p (Holm)": _holm_text(p, family),
                     "size vs paper": "" if pd.isna(paper) else ("differs > 3x" if stats.sizes_differ(f["difference"], paper) else "within 3x"),
                     "n": f["n"], "verdict": verdict,
                     "difference": round(f["difference"], 3), "low": round(f["low"], 3), "high": round(f["high"], 3)})
    return pd.DataFrame(rows, columns=SEEDED_CLAIM_COLUMNS)


def run_and_collect(name: str, scale: str | None = None, max_variants: int | None = None, run: bool = True,
                    progress: bool = True) -> tuple[Batch, Results]:
    """What an ablation notebook does first: read ``papermill_params/ablations/<name>.yaml``, run
    its first ``max_variants`` variants (all if None) whose results are missing (``run=False``:
    none), report failures, and read the results back."""
    scale = resolve_scale(scale)
    batch = load_batch(repo_root() / "papermill_params" / "ablations" / f"{name}.yaml")
    names = list(batch.variants)[:max_variants]
    if run:
        for variant, outcome in run_batch(batch, scale, names, progress=progress).items():
            if outcome.startswith("failed"):
                LOGGER.info(f"[{batch.name}] {variant}: {outcome}")
    return batch, collect(batch, scale, names)


def read_finished(names, scale: str | None = None) -> Results:
    """The finished variants of the named batch files, one table (:func:`combine`); nothing is run
    (e.g. a seeds batch run on request, read by the ablation notebook it belongs to)."""
    return combine(*(run_and_collect(name, scale, run=False)[1] for name in names))


def _finished_day(batch: Batch, name: str, scale: str) -> str:
    """The day a finished variant finished: recorded in its ``done.json`` (older runs: the file's time)."""
    digest = run_hash(batch.notebook, {**batch.for_scale(scale).variants[name], "scale": scale}, scale)
    done = outcomes_dir(batch, name, scale, digest) / "done.json"
    return json.loads(done.read_text()).get("finished") or time.strftime("%Y-%m-%d", time.localtime(done.stat().st_mtime))


def batch_times(scale: str, recorded: str | Path | None = None) -> pd.DataFrame:
    """Per batch file: its variants, how many have finished at ``scale``, the minutes their runs
    took (from each ``done.json``), the machine(s) that ran them (from ``metrics.json``) and the
    day(s) they finished. A batch with no finished variant here keeps its row of ``recorded`` (the
    table an earlier run saved, e.g. ``figures/ablation_times.csv``) where it has one, so a machine
    that re-ran one batch still reports what the others cost when they ran."""
    earlier = {}
    if recorded is not None and Path(recorded).exists():
        earlier = {row["batch"]: row for row in pd.read_csv(recorded, keep_default_na=False).to_dict("records")}
    rows = []
    for path in sorted((repo_root() / "papermill_params" / "ablations").glob("*.yaml")):
        batch = load_batch(path)
        metrics = collect(batch, scale).metrics
        if not len(metrics) and batch.name in earlier:
            rows.append({"measured": "earlier run", **earlier[batch.name]})
            continue
        days = sorted({_finished_day(batch, name, scale) for name in metrics.index})
        rows.append({"batch": batch.name, "variants": len(batch.variants), "finished": len(metrics),
                     "minutes": metrics["seconds"].sum() / 60 if len(metrics) else 0.0,
                     "machine": ", ".join(sorted(set(metrics["machine"]) - {""})) if len(metrics) else "",
                     "measured": " to ".join(dict.fromkeys([days[0], days[-1]])) if days else ""})
    columns = ["batch", "variants", "finished", "minutes", "machine", "measured"]
    return pd.DataFrame(rows)[columns].set_index("batch")


def main(argv: list[str] | None = None) -> int:
    argv, debug = command_line(argv)
    with cli_errors(debug, "dptlib.experiments.ablations") as state:
        return _main(argv, state)


def _main(argv: list[str], state) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("batches", nargs="*",
                        help="batch names (files in papermill_params/ablations); none: all but those run on request only (ON_REQUEST)")
    parser.add_argument("--scale", default=None)
    parser.add_argument("--variant", nargs="*", default=None, help="run only these variants")
    parser.add_argument("--rerun", action="store_true",
                        help="with --variant: run those variants again although finished (beside the finished run, which it "
                             "and its outcomes in results/ replace only when it finishes); e.g. re-run a seed on a fresh "
                             "clone, then `make check-claims`")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run this many variants at once, each in its own process (for a GPU, which one toy variant "
                             "leaves mostly idle; on a 2-core CPU keep 1)")
    parser.add_argument("--list", action="store_true", help="list the variants and whether they are done")
    parser.add_argument("--redraw-figures", action="store_true",
                        help="redraw the batches' figures from their saved tables (figures/), running nothing")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a bad input instead of one line")
    args = parser.parse_args(argv)
    scale = resolve_scale(args.scale)
    if args.redraw_figures:
        report.set_theme()
        print("redrawn:", ", ".join(redraw_figures(scale)) or "none (no saved tables at this scale)")
        return 0
    folder = repo_root() / "papermill_params" / "ablations"
    check_names("batch", args.batches, sorted(p.stem for p in folder.glob("*.yaml")), plural="batches")
    paths = [folder / f"{name}.yaml" for name in args.batches] or [p for p in sorted(folder.glob("*.yaml")) if p.stem not in ON_REQUEST]
    batches = [load_batch(p) for p in paths]  # every file checked before anything runs
    if args.variant is not None:
        if not args.variant:
            raise UserInputError("--variant names the variants to run: give at least one")
        check_names("variant", args.variant, [name for batch in batches for name in batch.for_scale(scale).variants])
    if args.jobs < 1:
        raise UserInputError(f"--jobs {args.jobs}: the number of variants run at once is 1 or more")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.jobs > 1 and device() == "cpu":
        LOGGER.warning(f"note: --jobs {args.jobs} on the CPU: the variants share its {cores} cores")
    elif args.jobs > cores:
        # each variant renders, embeds and batches its data on the CPU, so variants beyond the cores queue there
        LOGGER.warning(f"note: --jobs {args.jobs} but this process may use {cores} CPU core(s): the variants' CPU work "
              f"(data, batching) will queue; --jobs {cores} or fewer keeps each one moving")
    if args.rerun and not args.variant:
        raise UserInputError("--rerun re-runs the variants named by --variant: give them (e.g. --variant dpt-s0 --rerun)")
    for batch in batches:
        for parameters in batch.for_scale(scale).variants.values():
            check_resources(check_parameters(batch.notebook, {**parameters, "scale": scale}).__dict__)
    failed = 0
    state.working = True  # what fails from here on is not the user's input: its traceback shows
    for batch in batches:
        if args.list:
            for name, parameters in batch.for_scale(scale).variants.items():
                digest = run_hash(batch.notebook, {**parameters, "scale": scale}, scale)
                done = outcomes_dir(batch, name, scale, digest) is not None
                print(f"{batch.name:16s} {name:24s} {'done' if done else 'to run'}")
            continue
        only = [v for v in args.variant if v in batch.variants] if args.variant else None
        if args.variant and not only:
            continue  # the variants asked for belong to another of the batches named
        for name, result in run_batch(batch, scale, only, rerun=only if args.rerun else None, jobs=args.jobs).items():
            LOGGER.info(f"[{batch.name}] {name}: {result}")
            failed += result.startswith("failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
