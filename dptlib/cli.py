"""``dpt``: one command for the command-line tools (installed by ``pip install -e .``).

``dpt reproduce --only 01_probing`` is ``python -m dptlib.experiments.reproduce --only 01_probing``; each
subcommand hands its arguments to that module's ``main``. ``dpt`` alone lists them.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module whose main() it runs, what it does); modules are imported only when asked for
COMMANDS = {
    "reproduce": ("dptlib.experiments.reproduce", "run the notebooks with papermill and regenerate figures/ (make reproduce)"),
    "ablations": ("dptlib.experiments.ablations", "an ablation batch, one papermill run per variant, resumable"),
    "claims": ("dptlib.experiments.seed_claims", "the claims over training seeds: show, or check against the committed tables"),
    "train": ("dptlib.method.train", "stage 1 on a data manifest, one GPU or several (accelerate launch -m dptlib.method.train)"),
    "convert-official": ("dptlib.official.convert", "the authors' pytorch_model.bin -> a diffusers LoRA + an adapter folder"),
    "timing": ("dptlib.perf.timing", "benchmarks and make profile"),
    "convergence": ("dptlib.experiments.convergence", "stage 1 under other learning-rate schedules"),
    "dose-response": ("dptlib.experiments.dose_response", "stage 2 from 0 to 3,000 steps: validation curves, chosen checkpoints, test"),
    "sampler-check": ("dptlib.experiments.sampler_check", "the base model's exact match under other samplers"),
    "gpu-check": ("dptlib.perf.gpu_check", "the device tests and SD-2.1-sized throughput on a CUDA machine"),
    "paper-dry-run": ("dptlib.perf.paper_dry_run", "the paper-scale path at the real sizes with random weights"),
    "exercises": ("dptlib.teaching.exercises", "notebooks/exercises/ from the solution notebooks"),
    "toy-model": ("dptlib.toy.model", "train the toy Stable Diffusion and evaluator CLIP from scratch"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: dpt COMMAND [ARGS...]   (dpt COMMAND --help: its arguments)\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dpt: unknown command {name!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv = [f"dpt {name}", *rest]  # so that a module's argparse names the command as it was typed
    return module.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
