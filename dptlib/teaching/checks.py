"""Checks for the notebooks' exercises (``make exercises``, :mod:`dptlib.teaching.exercises`).

Each exercise is written as its solution inside a notebook; the exercise version (under
``notebooks/exercises/``) has the solution cut. Every exercise ends in a ``check_*`` call here,
which

- returns ``"not attempted yet"`` (and prints it) when the answer is still the stub's (``None``,
  ``...``, or a function that returns ``None``), so the exercise notebook runs through;
- returns ``"correct"`` when the answer agrees with the library on every case it tries;
- raises :class:`ExerciseError` naming the first case it gets wrong.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable, Iterable

import numpy as np
import torch

from dptlib.evaluation import stats
from dptlib.method import losses
from dptlib.method.backbone import block_modules, extract_features, image_noise, resolve_blocks
from dptlib.method.sampling import NULL_SEED_OFFSET, random_directions
from dptlib.teaching.quiz import committed_table as committed_table  # re-exported: teaching.committed_table in the notebooks
from dptlib.toy.evaluation import best_eta
from dptlib.toy.model import ToyModelConfig, build_scheduler, build_unet, colour_swap
from dptlib.toy.world import score

NOT_ATTEMPTED = "not attempted yet"
CORRECT = "correct"


class ExerciseError(AssertionError):
    """An attempted answer that disagrees with the library on a case (the message names it)."""


def check_prediction(prediction, options: Iterable[str]) -> str:
    """A judgement exercise's first step: a prediction written down before the result is shown.
    Returns :data:`NOT_ATTEMPTED` (printed) while it is ``None``; refuses a value not among ``options``."""
    options = list(options)
    if prediction is None:
        return _report("your prediction", NOT_ATTEMPTED + ": write it down first, then compare with the result below")
    if prediction not in options:
        raise ExerciseError(f"prediction {prediction!r} is not one of {options}")
    return _report(f"your prediction ({prediction})", "noted: compare it with the result below")


def _report(name: str, outcome: str) -> str:
    print(f"{name}: {outcome}")
    return outcome


def _attempted(answer) -> bool:
    return answer is not None and answer is not Ellipsis


def _unanswered(function: Callable, answer) -> str | None:
    """None when ``answer`` is an answer; :data:`NOT_ATTEMPTED` when ``function`` is still the
    exercise's stub (its body says "Write your code here."); else raises :class:`ExerciseError`
    for a function that ran but returned nothing (a missing ``return``)."""
    if _attempted(answer):
        return None
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # no source to read (a builtin, a lambda made elsewhere): the stub's reading
        return NOT_ATTEMPTED
    if "Write your code here" in source or answer is Ellipsis or getattr(function, "__name__", "") == "<lambda>":
        return NOT_ATTEMPTED
    raise ExerciseError(f"{getattr(function, '__name__', 'your function')} returned None: is its `return` missing?")


def _as_tensor(answer) -> torch.Tensor | None:
    """``answer`` (a tensor, an array, a list, a Python or numpy number) as a float64 tensor, or
    None when it is not numbers."""
    try:
        if torch.is_tensor(answer):
            return answer.detach().cpu().double()
        return torch.as_tensor(np.asarray(answer, dtype=np.float64))
    except (TypeError, ValueError, RuntimeError):
        return None


def _compare(name: str, answer, expected: torch.Tensor, case: str, atol: float, rtol: float = 0.0) -> None:
    """Raise :class:`ExerciseError` unless ``answer``, of any reasonable type, equals ``expected``
    within the tolerances; a wrong type, a wrong shape and a wrong value each say so."""
    found = _as_tensor(answer)
    expected = expected.detach().cpu().double()
    if found is None:
        raise ExerciseError(f"{name}: {case}: expected numbers of shape {tuple(expected.shape)}, got a {type(answer).__name__}")
    if found.numel() == expected.numel() == 1:
        found, expected = found.reshape(()), expected.reshape(())
    if found.shape != expected.shape:
        raise ExerciseError(f"{name}: {case}: expected shape {tuple(expected.shape)}, got shape {tuple(found.shape)}")
    if not torch.allclose(found, expected, atol=atol, rtol=rtol):
        shown = (lambda t: f"{t.item():.5f}" if t.numel() == 1 else str([round(v, 5) for v in t.flatten()[:6].tolist()]))
        raise ExerciseError(f"{name}: {case}: expected {shown(expected)}, got {shown(found)}")


def _uses(function: Callable, names: Iterable[str]) -> list[str]:
    """Which of ``names`` (library functions the exercise asks to write) ``function`` calls by name."""
    code, found = getattr(function, "__code__", None), set()
    stack = [code] if code is not None else []
    while stack:
        current = stack.pop()
        found |= set(current.co_names)
        stack += [c for c in current.co_consts if hasattr(c, "co_names")]
    return [n for n in names if n in found]


def _refuse_library(name: str, function: Callable, names: Iterable[str]) -> None:
    used = _uses(function, names)
    if used:
        raise ExerciseError(f"{name}: your function calls dptlib's {', '.join(used)}: write it from the equation instead")


def check_swap_colours(swap_colours: Callable, world, scenes: Iterable) -> str:
    """Exercise (00): ``swap_colours(spec) -> spec`` swaps the colours of a two-object prompt.

    Tried on every caption of ``scenes`` that names two objects of different colours and that the
    oracle scores correct on the scene's render: the answer must keep everything but the two
    colours and swap them. Prints how many swapped captions the oracle still scores correct (a
    swap is not always a false caption: that is why every toy negative is checked)."""

    name = "swap the colours"
    tried, still_true = 0, []
    for scene in scenes:
        image = world.render(scene)
        for spec in world.captions(scene):
            if len(spec.objects) != 2 or None in (spec.objects[0].colour, spec.objects[1].colour):
                continue
            if spec.objects[0].colour == spec.objects[1].colour or not score(spec, image, world.config)["correct"]:
                continue
            swapped = swap_colours(spec)
            if _unanswered(swap_colours, swapped):
                return _report(name, NOT_ATTEMPTED)
            expected = colour_swap(spec)
            if swapped != expected:
                raise ExerciseError(f"{name}: for {spec.text!r} expected {expected.text!r}, got {swapped!r}")
            tried += 1
            if score(swapped, image, world.config)["correct"]:
                still_true.append(f"{spec.text!r} -> {swapped.text!r}")
    if tried == 0:
        raise ValueError("no caption of these scenes names two objects of different colours: give more scenes")
    print(f"the oracle scores {len(still_true)} of {tried} swapped captions still correct" + (": " if still_true else ""))
    for line in still_true[:5]:
        print("  ", line)
    return _report(f"{name} ({tried} captions)", CORRECT)


def verdict_cases() -> list[dict]:
    """Every combination of the parts of a verdict (interval side, adjusted p, seeds agreeing) for
    5 runs and both expected signs: what :func:`check_verdict` tries."""
    cases = []
    intervals = [(+1.0, +5.0), (-5.0, -1.0), (-2.0, +3.0)]
    for (low, high), p, positive, sign in itertools.product(intervals, (0.001, 0.04, 0.2), range(6), (+1, -1)):
        cases.append(dict(low=low, high=high, p_holm=p, runs_positive=positive, n_runs=5, expected_sign=sign))
    return cases


def check_verdict(verdict: Callable) -> str:
    """Exercise (09): ``verdict(low, high, p_holm, runs_positive, n_runs, expected_sign)`` returns
    "holds", "contradicted" or "inconclusive" as :func:`dptlib.evaluation.stats.seed_verdict` does for 5 runs."""
    name = "the verdict rule"
    for case in verdict_cases():
        answer = verdict(**case)
        if _unanswered(verdict, answer):
            return _report(name, NOT_ATTEMPTED)
        found = dict(low=case["low"], high=case["high"], p_value=case["p_holm"], n_runs=case["n_runs"],
                     runs_positive=case["runs_positive"], runs_negative=case["n_runs"] - case["runs_positive"])
        expected = stats.seed_verdict(found, case["expected_sign"])
        if answer != expected:
            raise ExerciseError(f"{name}: for {case} expected {expected!r}, got {answer!r}")
    return _report(f"{name} ({len(verdict_cases())} cases)", CORRECT)


def _same_scalar(answer, expected: torch.Tensor, atol: float) -> bool:
    """Whether ``answer`` is a one-element tensor equal to the scalar ``expected`` within ``atol``."""
    return torch.is_tensor(answer) and answer.numel() == 1 and torch.allclose(answer.float().reshape(()), expected.reshape(()), atol=atol)


def _random_cases(shapes, n: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(*shape(k), generator=generator) for shape in shapes) for k in range(n)]


def check_matching_score(matching_score: Callable, cases: list[tuple] = ()) -> str:
    """Exercise (01): ``matching_score(match_embeddings (P, M, D), text_embeddings (P, D)) -> (P,)``
    is s(z, y) of Eq. 3-4, as :func:`dptlib.method.losses.matching_similarity` computes it; tried on
    random batches of several shapes and on ``cases``."""
    name = "the matching score s(z, y)"
    _refuse_library(name, matching_score, ("matching_similarity",))
    tried = _random_cases([lambda k: (k + 2, k + 1, 8), lambda k: (k + 2, 8)]) + [tuple(c) for c in cases]
    for match_embeddings, text_embeddings in tried:
        answer = matching_score(match_embeddings, text_embeddings)
        if _unanswered(matching_score, answer):
            return _report(name, NOT_ATTEMPTED)
        expected = losses.matching_similarity(match_embeddings, text_embeddings)
        _compare(name, answer, expected, f"for embeddings of shape {tuple(match_embeddings.shape)}", atol=1e-5)
    return _report(f"{name} ({len(tried)} batches)", CORRECT)


def check_matching_loss(match_loss: Callable, cases: list[tuple] = ()) -> str:
    """Exercise (01): ``match_loss(image_to_text (B, 1+K), text_to_image (B, 1+K'), logit_scale)`` is
    L^match of Eq. 3-4 (the mean over the batch), as :func:`dptlib.method.losses.matching_loss`; tried on
    random scores with several temperatures and on ``cases``."""
    name = "L_match (Eq. 3-4)"
    _refuse_library(name, match_loss, ("matching_loss",))
    generator = torch.Generator().manual_seed(0)
    tried = [(torch.rand(b, 1 + k, generator=generator) * 2 - 1, torch.rand(b, 1 + k2, generator=generator) * 2 - 1,
              torch.tensor(scale)) for b, k, k2, scale in ((1, 2, 2, 0.0), (4, 2, 3, 2.66), (3, 5, 1, 4.0))]
    tried += [tuple(torch.as_tensor(x).detach() for x in c) for c in cases]
    for image_to_text, text_to_image, logit_scale in tried:
        answer = match_loss(image_to_text, text_to_image, logit_scale)
        if _unanswered(match_loss, answer):
            return _report(name, NOT_ATTEMPTED)
        expected = losses.matching_loss(image_to_text, text_to_image, logit_scale)
        _compare(name, answer, expected, f"for scores of shapes {tuple(image_to_text.shape)}, {tuple(text_to_image.shape)} and "
                                         f"log(1/tau) = {float(logit_scale):.2f}", atol=1e-5)
    return _report(f"{name} ({len(tried)} batches)", CORRECT)


def check_paired_difference(paired_difference: Callable, cases: list[tuple] = ()) -> str:
    """Exercise (02): ``paired_difference(base (n,), dpt (n,)) -> (difference in points, p)`` for 0/1
    outcomes of twin images: the mean difference x 100 and McNemar's exact p
    (:func:`dptlib.evaluation.stats.mcnemar_p`); tried on random pairs with and without discordant ones and
    on ``cases``."""

    name = "a paired difference and McNemar's p"
    rng = np.random.default_rng(0)
    tried = [(rng.random(n) < 0.4, rng.random(n) < q) for n, q in ((50, 0.4), (120, 0.55), (30, 0.2))]
    same = rng.random(40) < 0.5
    tried += [(same, same.copy())] + [tuple(np.asarray(x) for x in c) for c in cases]
    for base, dpt in tried:
        answer = paired_difference(base, dpt)
        if _unanswered(paired_difference, None if isinstance(answer, tuple) and answer == (None, None) else answer):
            return _report(name, NOT_ATTEMPTED)
        expected = (100 * float(np.mean(np.asarray(dpt, float) - np.asarray(base, float))), stats.mcnemar_p(base, dpt))
        found = _as_tensor(answer)
        if found is None or found.numel() != 2:
            raise ExerciseError(f"{name}: expected two numbers (difference in points, p), got {answer!r}")
        if not np.allclose(found.flatten().numpy(), expected, atol=1e-9):
            raise ExerciseError(f"{name}: for {len(base)} twins with b = {int((np.asarray(dpt, bool) & ~np.asarray(base, bool)).sum())}, "
                                f"c = {int((np.asarray(base, bool) & ~np.asarray(dpt, bool)).sum())} expected "
                                f"({expected[0]:.3f}, {expected[1]:.4f}), got {answer}")
    return _report(f"{name} ({len(tried)} cases)", CORRECT)


def check_choose_eta(choose_eta: Callable, sweep, chosen: float | None = None) -> str:
    """Exercise (03): ``choose_eta(sweep) -> eta``, the eta > 0 of the "paper" variant with the
    highest share of exactly right images in ``sweep`` (rows: ``method``, ``correct``); tried on
    ``sweep`` (against ``chosen``, the notebook's, when given) and on a sweep with the best eta moved."""
    name = "choosing eta on validation prompts"
    paper = sweep[sweep["method"].str.startswith("paper, eta ")]
    by_eta = paper.groupby("method")["correct"].mean()
    expected = best_eta(sweep)
    if chosen is not None and expected != chosen:
        raise ValueError(f"the sweep's best eta {expected:g} is not the notebook's {chosen:g}")
    worst = by_eta.idxmin()  # the same sweep with the worst eta made the best: the answer must follow the data
    moved = sweep.assign(correct=sweep["correct"].where(sweep["method"] != worst, 1))
    for table, best in ((sweep, expected), (moved, float(worst.split("eta ")[1]))):
        answer = choose_eta(table)
        if _unanswered(choose_eta, answer):
            return _report(name, NOT_ATTEMPTED)
        if float(answer) != best:
            raise ExerciseError(f"{name}: expected eta = {best:g}, got {answer!r}")
    return _report(f"{name} (eta = {expected:g})", CORRECT)


def _toy_unet(seed: int = 0):
    """A randomly initialised U-Net of the toy SD's architecture at the smoke size (seconds to build)."""

    torch.manual_seed(seed)
    return build_unet(ToyModelConfig.preset("smoke"), cross_attention_dim=16).eval()


def blocks_run_by_early_exit(unet, blocks: list[str]) -> list[str]:
    """The blocks of ``unet`` that :func:`dptlib.method.backbone.extract_features` runs, in order, when it
    probes ``blocks`` with its early exit: observed with a forward hook on every block."""

    ran: list[str] = []
    hooks = [module.register_forward_hook(lambda *_, name=name: ran.append(name)) for name, module in block_modules(unet).items()]
    size = unet.config.sample_size
    try:
        with torch.no_grad():
            extract_features(unet, torch.randn(1, 4, size, size), torch.tensor([500]), torch.randn(1, 4, 16), blocks)
    finally:
        for hook in hooks:
            hook.remove()
    return ran


def check_blocks_run(blocks_run: Callable, probes: Iterable[str] = ("down0", "mid", "up1", "down1+up0", "all")) -> str:
    """Exercise (04): ``blocks_run(blocks) -> list`` names the U-Net blocks an early-exit forward
    runs (in execution order) to read the probed ``blocks`` (a list in execution order); compared
    with what a toy U-Net actually runs (:func:`blocks_run_by_early_exit`) for each of ``probes``.
    Prints each probe's share of the U-Net's blocks: what a training step on it costs."""

    name = "the blocks an early exit runs"
    unet = _toy_unet()
    total = len(block_modules(unet))
    for probe in probes:
        blocks = resolve_blocks(probe, unet)
        answer = blocks_run(blocks)
        if _unanswered(blocks_run, answer):
            return _report(name, NOT_ATTEMPTED)
        expected = blocks_run_by_early_exit(unet, blocks)
        if list(answer) != expected:
            raise ExerciseError(f"{name}: probing {blocks} runs {expected}, got {answer!r}")
        print(f"  probe {probe:10s} runs {len(expected)} of {total} blocks: {' -> '.join(expected)}")
    return _report(name, CORRECT)


def lora_parameters_by_peft(d_in: int, d_out: int, rank: int) -> int:
    """The trainable weights peft's LoRA adds to one ``Linear(d_in, d_out)`` at ``rank``, counted."""
    from peft import LoraConfig, inject_adapter_in_model  # deferred: heavy

    holder = torch.nn.Module()
    holder.proj = torch.nn.Linear(d_in, d_out)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=["proj"]), holder)
    return sum(p.numel() for n, p in holder.named_parameters() if "lora_" in n)


def check_lora_parameters(lora_parameters: Callable, cases: Iterable[tuple] = ((32, 32, 1), (64, 32, 4), (96, 160, 16), (320, 320, 64))) -> str:
    """Exercise (05): ``lora_parameters(d_in, d_out, rank) -> int``, the weights LoRA adds to one
    linear layer (W + B A, A: (rank, d_in), B: (d_out, rank)); compared with what peft adds
    (:func:`lora_parameters_by_peft`) for each (d_in, d_out, rank) of ``cases``."""
    name = "LoRA's parameter count"
    for d_in, d_out, rank in cases:
        answer = lora_parameters(d_in, d_out, rank)
        if _unanswered(lora_parameters, answer):
            return _report(name, NOT_ATTEMPTED)
        expected = lora_parameters_by_peft(d_in, d_out, rank)
        if answer != expected:
            raise ExerciseError(f"{name}: a Linear({d_in}, {d_out}) at rank {rank} gets {expected} weights, got {answer!r}")
    return _report(name, CORRECT)


def check_holm(holm_adjust: Callable, cases: Iterable = ()) -> str:
    """Exercise (06): ``holm_adjust(p_values (m,)) -> (m,)``, Holm's step-down adjusted p-values in
    the input's order (:func:`dptlib.evaluation.stats.holm`); tried on random families, ties, p's that cap
    at 1, and ``cases``."""

    name = "Holm's adjustment"
    rng = np.random.default_rng(0)
    tried = [rng.random(m) ** 3 for m in (1, 4, 7)] + [np.array([0.01, 0.04, 0.04, 0.3]), np.array([0.5, 0.2, 0.9])]
    tried += [np.asarray(c, float) for c in cases]
    for p_values in tried:
        answer = holm_adjust(p_values.copy())
        if _unanswered(holm_adjust, answer):
            return _report(name, NOT_ATTEMPTED)
        expected = stats.holm(p_values)
        _compare(name, answer, torch.as_tensor(expected), f"for p = {np.round(p_values, 4).tolist()}", atol=1e-12)
    return _report(f"{name} ({len(tried)} families)", CORRECT)


def p_values(texts: Iterable[str]) -> list[float]:
    """The p-values written in formatted differences ("+2.8 [-0.2, +5.8] (p = 0.07)"): "p < 0.001"
    reads 0.001 (an upper bound); a text without a p reads NaN."""

    found = [re.search(r"p ([=<]) ([\d.]+)", str(text)) for text in texts]
    return [float(m.group(2)) if m else float("nan") for m in found]


def snr_from_add_noise(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """The signal-to-noise ratio of z_t at ``timesteps``, read off the scheduler's own
    ``add_noise``: the share of a clean latent of ones it keeps, squared, over the share of unit
    noise it adds, squared."""
    ones = torch.ones(len(timesteps), 1)
    signal = scheduler.add_noise(ones, torch.zeros_like(ones), timesteps)[:, 0]
    noise = scheduler.add_noise(torch.zeros_like(ones), ones, timesteps)[:, 0]
    return (signal / noise) ** 2


def check_snr(snr: Callable, timesteps: Iterable[int] = (0, 250, 500, 750, 999)) -> str:
    """Exercise (07): ``snr(alphas_cumprod (T,), timesteps (k,)) -> (k,)``, SNR(t) = abar_t / (1 - abar_t)
    of the forward process z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps; compared with what the toy
    SD's scheduler and a linear-beta one do (:func:`snr_from_add_noise`) at ``timesteps``."""
    from diffusers import DDPMScheduler  # deferred: heavy


    name = "the signal-to-noise ratio"
    steps = torch.tensor(list(timesteps))
    for scheduler in (build_scheduler(), DDPMScheduler(beta_schedule="linear")):
        answer = snr(scheduler.alphas_cumprod, steps)
        if _unanswered(snr, answer):
            return _report(name, NOT_ATTEMPTED)
        expected = snr_from_add_noise(scheduler, steps)
        _compare(name, answer, expected, f"at t = {steps.tolist()}", atol=0.0, rtol=1e-4)
    return _report(name, CORRECT)


def check_denoising_loss(denoising: Callable, cases: list[tuple] = ()) -> str:
    """Exercise (08): ``denoising(prediction (B, C, h, w), noise (P, C, h, w), positives (P,)) -> scalar``,
    the MSE term of Eq. 8 on the true pairs' rows only (:func:`dptlib.method.losses.denoising_loss`); tried
    on batches of septuples (B = 6 P, the true pair first) and on ``cases``."""
    name = "the denoising term (Eq. 8)"
    generator = torch.Generator().manual_seed(0)
    tried = []
    for septuples in (1, 2, 3):
        b = 6 * septuples
        tried.append((torch.randn(b, 4, 8, 8, generator=generator), torch.randn(septuples, 4, 8, 8, generator=generator),
                      torch.arange(septuples) * 6))
    tried += [tuple(c) for c in cases]
    for prediction, noise, positives in tried:
        answer = denoising(prediction, noise, positives)
        if _unanswered(denoising, answer):
            return _report(name, NOT_ATTEMPTED)
        expected = losses.denoising_loss(prediction, noise, positives)
        found = _as_tensor(answer)
        if found is None or found.numel() != 1:
            _compare(name, answer, expected, f"for {len(positives)} true pairs in {prediction.shape[0]} rows", atol=1e-6)
        if not _same_scalar(found.float(), expected, atol=1e-6):
            everything = torch.nn.functional.mse_loss(prediction, noise.repeat_interleave(prediction.shape[0] // noise.shape[0], 0))
            hint = " (that is the MSE over every row: only the true pairs' rows count)" if _same_scalar(found.float(), everything, 1e-6) else ""
            raise ExerciseError(f"{name}: for {len(positives)} true pairs in {prediction.shape[0]} rows expected {expected.item():.5f}, "
                                f"got {answer}{hint}")
    return _report(f"{name} ({len(tried)} batches)", CORRECT)


def check_iou(iou: Callable, cases: Iterable[tuple] = ()) -> str:
    """Exercise (00): ``iou(a, b) -> float`` for two (x0, y0, x1, y1) boxes, the intersection over
    union REC P@1 thresholds at 0.5 (:func:`dptlib.evaluation.metrics.rec_hits`); compared with
    :func:`dptlib.method.losses.box_iou` on random boxes, disjoint, nested and touching ones, and ``cases``."""
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(6, 2, 2, generator=generator) * 32
    tried = [(tuple(torch.cat([c.min(0).values, c.max(0).values]).tolist()), tuple(torch.cat([d.min(0).values, d.max(0).values]).tolist()))
             for c, d in zip(corners[:3], corners[3:])]
    tried += [((0, 0, 4, 4), (6, 6, 9, 9)), ((0, 0, 8, 8), (2, 2, 4, 4)), ((0, 0, 4, 4), (4, 0, 8, 4)), ((1, 2, 5, 9), (1, 2, 5, 9))]
    tried += [tuple(c) for c in cases]
    name = "intersection over union"
    for a, b in tried:
        answer = iou(a, b)
        if _unanswered(iou, answer):
            return _report(name, NOT_ATTEMPTED)
        expected = float(losses.box_iou(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))[0])
        if abs(float(answer) - expected) > 1e-6:
            raise ExerciseError(f"{name}: for boxes {a} and {b} expected {expected:.4f}, got {answer!r}")
    return _report(f"{name} ({len(tried)} pairs)", CORRECT)


def lora_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The peft LoRA layers of ``module`` with an active adapter, by name."""
    return {name: m for name, m in module.named_modules()
            if hasattr(m, "lora_A") and getattr(m, "active_adapters", None) and m.active_adapters[0] in m.lora_A}


def check_lora_delta(lora_delta: Callable, module: torch.nn.Module | None = None, n_layers: int = 4) -> str:
    """Exercise (02): ``lora_delta(layer) -> (d_out, d_in)``, the change ΔW LoRA makes to a peft
    LoRA ``Linear`` (its active adapter's scaled B A); checked by what peft's forward does,
    ``layer(x) - layer.base_layer(x) = x ΔWᵀ``, on randomly initialised LoRA layers (B not zero,
    alpha != rank) and on the first ``n_layers`` LoRA layers of ``module`` (a tuned U-Net)."""
    from peft import LoraConfig, inject_adapter_in_model  # deferred: heavy

    torch.manual_seed(0)
    holder = torch.nn.Module()
    holder.a, holder.b = torch.nn.Linear(24, 16), torch.nn.Linear(8, 40)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=["a", "b"], init_lora_weights=False), holder)
    layers = list(lora_layers(holder).items()) + list(lora_layers(module).items())[:n_layers] if module is not None else \
        list(lora_layers(holder).items())
    name = "the LoRA update ΔW"
    for layer_name, layer in layers:
        answer = lora_delta(layer)
        if _unanswered(lora_delta, answer):
            return _report(name, NOT_ATTEMPTED)
        weight = layer.base_layer.weight
        x = torch.randn(3, weight.shape[1], dtype=weight.dtype, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = layer(x) - layer.base_layer(x)
        if not torch.is_tensor(answer) or answer.shape != weight.shape or not torch.allclose(x @ answer.detach().T, expected, atol=1e-5,
                                                                                            rtol=1e-4):
            adapter = layer.active_adapters[0]
            unscaled = (layer.lora_B[adapter].weight @ layer.lora_A[adapter].weight).detach()
            hint = (f" (that is B A without LoRA's scaling alpha / r = {layer.scaling[adapter]:g})"
                    if torch.is_tensor(answer) and answer.shape == unscaled.shape and torch.allclose(answer.detach(), unscaled, atol=1e-6) else "")
            raise ExerciseError(f"{name}: for layer {layer_name!r} ({weight.shape[1]} -> {weight.shape[0]}) x ΔWᵀ does not give what "
                                f"peft's forward adds (got {type(answer).__name__} of shape {getattr(answer, 'shape', None)}){hint}")
    return _report(f"{name} ({len(layers)} layers)", CORRECT)


def check_unit_rms(unit_rms: Callable, cases: Iterable[tuple] = ()) -> str:
    """Exercise (03): ``unit_rms(x (n, ...)) -> (n, ...)``, each row divided by its root mean square:
    what makes Eq. 9's step and its random-direction null the same size. Compared with
    :func:`dptlib.method.sampling.random_directions` (unit-RMS noise per image) and on ``cases``: pairs
    (raw gradient, what :func:`dptlib.method.sampling.correction_gradient` returns for it)."""

    name = "a unit-RMS step"
    tried = [(image_noise(shape, seed + NULL_SEED_OFFSET, indices), random_directions(shape, seed, indices))
             for shape, seed, indices in (((4, 8, 8), 0, [0, 1, 2]), ((4, 16, 16), 5, [3]))]
    tried += [tuple(c) for c in cases]
    for raw, expected in tried:
        answer = unit_rms(raw.clone())
        if _unanswered(unit_rms, answer):
            return _report(name, NOT_ATTEMPTED)
        found = _as_tensor(answer)
        if found is None or found.shape != expected.shape:
            _compare(name, answer, expected, f"for a batch of shape {tuple(raw.shape)}", atol=1e-5, rtol=1e-4)
        if not torch.allclose(found.float(), expected, atol=1e-5, rtol=1e-4):
            answer = found.float()
            raise ExerciseError(f"{name}: for a batch of shape {tuple(raw.shape)} the rows' RMS should be 1 each; got "
                                f"{answer.pow(2).mean(dim=tuple(range(1, answer.dim()))).sqrt().tolist() if torch.is_tensor(answer) else answer!r}")
    return _report(f"{name} ({len(tried)} batches)", CORRECT)
