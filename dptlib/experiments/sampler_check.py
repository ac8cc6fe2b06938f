"""The sampler's steps: does the base model generate as well with fewer?

Generation is about two fifths of a trained arm's time (`docs/evidence.md`), and its cost is
proportional to the sampler's steps. Issue 24 allows fewer steps, or another diffusers scheduler,
if the base model's exact-match rate stays within its interval. This module measures that on
**validation** prompts only (the headline cells' prompts after the test prompts, as
:func:`dptlib.toy.prompts.generation_prompts` draws them; no test prompt is read), so that a
setting could be chosen on them:

- every setting of ``SETTINGS`` (a diffusers scheduler, built from the model's own scheduler
  config, and a number of steps) samples the same prompts with the same initial noise (the same
  ``seeds``), at `02_tuning`'s guidance scale;
- the oracle grades every image; each setting is compared with ``REFERENCE`` (the toy pipelines'
  DDIM at 15 steps) by the paired difference of exact-match, with its 95 % interval (bootstrap over
  prompts, each with all its seeds) and McNemar's p (:func:`dptlib.evaluation.stats.compare_to_baseline`);
- ``inside`` says whether the setting's exact-match lies inside the reference's own interval
  (the issue's criterion), and the seconds per image come from the same run, one setting after
  another on the same machine.

    python -m dptlib.experiments.sampler_check [--scale toy] [--settings ddim-15 ddim-10 dpm-8 ...] [--prompts 150] [--seeds 0 1 ... 7]

Per-image scores go to ``results/toy/sampler/<setting>.csv.gz`` (atomically; a setting
already there with the same prompts and seeds is skipped, so a killed run resumes); the table to
``figures/sampler_steps.{csv,md}``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd

from dptlib.checks import UserInputError, check_names, cli_errors, command_line
from dptlib.config import HEADLINE_CELLS, PRESETS, SCHEDULERS, device, float_environment
from dptlib.evaluation import stats
from dptlib.experiments import ablations, report
from dptlib.method.backbone import load_pipeline
from dptlib.method.checkpoint import atomic_write_text
from dptlib.method.sampling import scheduler_named
from dptlib.toy.evaluation import compare_methods
from dptlib.toy.prompts import generation_prompts
from dptlib.toy.world import ToyWorld, ToyWorldConfig

LOGGER = logging.getLogger(__name__)

# name -> (diffusers scheduler class, sampler steps)
SETTINGS: dict[str, tuple[str, int]] = {
    "ddim-15": ("DDIMScheduler", 15),  # what 02_tuning, 03_self_correction and the batches sample with
    "ddim-10": ("DDIMScheduler", 10),
    "ddim-8": ("DDIMScheduler", 8),
    "dpm-10": ("DPMSolverMultistepScheduler", 10),  # DPM-Solver++ (2M), diffusers' defaults
    "dpm-8": ("DPMSolverMultistepScheduler", 8),
    "dpm-6": ("DPMSolverMultistepScheduler", 6),
}
REFERENCE = "ddim-15"
METRIC = "correct"  # the oracle's exact-match: every asked-for object right and the relation held


def results_dir(scale: str) -> Path:
    """``results/<scale>/sampler`` (``runs/smoke/results/sampler`` at the smoke scale)."""
    return ablations.results_dir(scale) / "sampler"


def validation_prompts(n_prompts: int, scale: str = "toy", seed: int = 0) -> dict[str, list]:
    """The headline cells' validation prompts: the ``n_prompts`` after each cell's test prompts
    (`02_tuning`'s sizes), so none is a test prompt; the first 32 are the ones 02 and 03 choose on.
    A cell has fewer where its prompts run out (toy-CC (ID) holds 36 after its 150 test prompts)."""

    sizes = PRESETS["02_tuning"]["smoke" if scale == "smoke" else "toy"]["prompts"]
    _, validation = generation_prompts(ToyWorld(ToyWorldConfig(seed=seed)).config, sizes, n_prompts, seed=seed)
    return {cell: validation[cell] for cell in HEADLINE_CELLS}


def set_sampler(pipe, setting: str) -> int:
    """Give ``pipe`` the setting's scheduler (from the pipeline's own scheduler config, so the
    noise schedule stays the model's); returns the setting's number of steps."""

    name, steps = SETTINGS[setting]
    pipe.scheduler = scheduler_named(pipe, {cls: kind for kind, cls in SCHEDULERS.items()}[name])
    return steps


def run_setting(setting: str, prompts: dict[str, list], seeds: list[int], scale: str = "toy", model: str = "toy",
                guidance_scale: float = 7.5) -> pd.DataFrame:
    """The base model's oracle scores under ``setting``: one row per (cell, prompt, seed), with the
    run's seconds per image in ``attrs``."""

    world = ToyWorld(ToyWorldConfig(seed=0))  # the world 02_tuning grades with
    pipe = load_pipeline(model, device=device())
    steps = set_sampler(pipe, setting)
    started = time.time()
    scores, _ = compare_methods({setting: (pipe, None)}, prompts, seeds, config=world.config, progress=False,
                                num_inference_steps=steps, guidance_scale=guidance_scale)
    scores.attrs["seconds per image"] = (time.time() - started) / len(scores)
    return scores


def _path(scale: str, setting: str) -> Path:
    return results_dir(scale) / f"{setting}.csv.gz"


def _key(prompts: dict[str, list], seeds: list[int]) -> dict:
    return {"prompts": {cell: len(p) for cell, p in prompts.items()}, "seeds": list(seeds)}


def save_setting(scores: pd.DataFrame, setting: str, key: dict, scale: str) -> Path:
    """``scores`` gzipped (fixed mtime, so the same scores give the same bytes), its key and
    timing in a JSON beside it; both written atomically."""

    path = _path(scale, setting)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as stream:
        stream.write(scores.to_csv(index=False).encode())
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    meta = {"setting": setting, "scheduler": SETTINGS[setting][0], "steps": SETTINGS[setting][1], **key,
            "seconds per image": round(scores.attrs["seconds per image"], 4), "float environment": float_environment()}
    atomic_write_text(json.dumps(meta, indent=1), path.with_suffix("").with_suffix(".json"))
    return path


def load_setting(setting: str, scale: str) -> tuple[pd.DataFrame, dict] | None:
    """The saved scores and record of ``setting``, or None."""
    path = _path(scale, setting)
    meta = path.with_suffix("").with_suffix(".json")
    if not (path.exists() and meta.exists()):
        return None
    return pd.read_csv(path), json.loads(meta.read_text())


def table(settings: list[str], scale: str = "toy") -> pd.DataFrame:
    """Per cell and setting: steps, milliseconds per image, exact-match with its interval, the paired
    difference to ``REFERENCE`` with its interval and p, and ``inside`` (the setting's mean inside
    the reference's interval). Only settings saved with the reference's prompts and seeds."""

    loaded = {s: load_setting(s, scale) for s in dict.fromkeys([REFERENCE, *settings])}
    if loaded[REFERENCE] is None:
        return pd.DataFrame()
    key = {k: loaded[REFERENCE][1][k] for k in ("prompts", "seeds")}
    kept = {s: v for s, v in loaded.items() if v is not None and {k: v[1][k] for k in key} == key}
    scores = pd.concat([v[0] for v in kept.values()], ignore_index=True)
    comparison = stats.compare_to_baseline(scores, METRIC, REFERENCE, methods=list(kept))
    rows = []
    for (cell, setting), row in comparison.iterrows():
        reference = comparison.loc[(cell, REFERENCE)]
        rows.append({"cell": cell, "setting": setting, "steps": kept[setting][1]["steps"],
                     "ms per image": 1000 * kept[setting][1]["seconds per image"], "n": int(row["n"]),
                     "exactly right (%)": row["mean"], "low": row["low"], "high": row["high"],
                     "vs ddim-15": row["diff"], "diff low": row["diff_low"], "diff high": row["diff_high"],
                     "p": "" if pd.isna(row["p"]) else f"{row['p']:.2f}",
                     "inside": bool(reference["low"] <= row["mean"] <= reference["high"])})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    argv, _ = command_line(argv)  # the environment checked, the library's messages shown
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="toy")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--prompts", type=int, default=150, help="validation prompts per headline cell")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    parser.add_argument("--table", action="store_true", help="print the saved settings' table and exit")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    args = parser.parse_args(argv)
    with cli_errors(args.debug, "dptlib.experiments.sampler_check"):
        check_names("scale", [args.scale], ("smoke", "toy"))
        check_names("setting", args.settings, tuple(SETTINGS))
        if args.prompts < 1:
            raise UserInputError(f"--prompts must be at least 1, got {args.prompts}")
    settings = list(dict.fromkeys([REFERENCE, *args.settings]))
    if not args.table:
        prompts = validation_prompts(args.prompts, args.scale)
        key = _key(prompts, args.seeds)
        for setting in settings:
            saved = load_setting(setting, args.scale)
            if saved is not None and {k: saved[1][k] for k in key} == key:
                LOGGER.info(f"{setting}: done, skipped")
                continue
            scores = run_setting(setting, prompts, args.seeds, args.scale)
            save_setting(scores, setting, key, args.scale)
            LOGGER.info(f"{setting}: {len(scores)} images, {scores.attrs['seconds per image']:.4f} s each, "
                  f"exactly right {100 * scores[METRIC].mean():.1f} %")
    result = table(settings, args.scale)
    if result.empty:
        LOGGER.warning(f"no {REFERENCE} scores saved yet")
        return 0

    report.save_table(result.set_index(["cell", "setting"]), "sampler_steps", args.scale, floatfmt=".2f")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(result.round(2).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
