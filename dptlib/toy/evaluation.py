"""Generation graded by the toy world's oracle: exact presence, binding, count and spatial scores
per image, per prompt and per benchmark category, and the tuning validator built on them.

These stand where the paper uses human-aligned or detector-based scores (Tab. 1-2); at paper
scale only the CLIP score and the Fréchet distance of :mod:`dptlib.evaluation.metrics` are available.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dptlib.evaluation.metrics import clip_features_and_scores, itm_accuracy, rec_precision
from dptlib.method.backbone import Backbone
from dptlib.method.inference import DPTScorer
from dptlib.method.sampling import generate
from dptlib.toy.world import PromptSpec, ToyWorldConfig, parse_image, score_objects

ORACLE_COLUMNS = ("presence", "binding", "count", "spatial", "correct")


def oracle_scores(images: np.ndarray, specs: list[PromptSpec], config: ToyWorldConfig | None = None) -> pd.DataFrame:
    """One row per image: the oracle's booleans (``spatial`` is NaN where the prompt has no relation).

    images: uint8 (N, H, W, 3); specs: the N prompts' specs.
    """
    if len(images) != len(specs):
        raise ValueError(f"{len(images)} images for {len(specs)} prompts")
    rows = []
    for image, spec in zip(images, specs):
        result = score_objects(spec, parse_image(image, config), image.shape[0])
        rows.append({k: (np.nan if result[k] is None else float(result[k])) for k in ORACLE_COLUMNS})
    return pd.DataFrame(rows)


def summarize(scores: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean of the oracle columns (in %) grouped by ``by`` (e.g. ["benchmark", "category"])."""
    return scores.groupby(by)[list(ORACLE_COLUMNS)].mean() * 100


def evaluate_generation(pipe, prompts, seeds=(0,), config: ToyWorldConfig | None = None, progress: bool = True,
                        embed=None, return_features: bool = False, **generate_kwargs):
    """Generate every benchmark prompt once per seed and grade it with the oracle.

    ``prompts``: :class:`~dptlib.toy.prompts.BenchmarkPrompt` s with specs; ``generate_kwargs`` go to
    :func:`dptlib.method.sampling.generate` (steps, guidance, batch size, self-correction, per-prompt
    arguments). Returns one row per (prompt, seed) with the prompt's category and distribution
    beside the oracle's scores. With a CLIP ``embed`` (:func:`dptlib.data.embedders.clip_embedder`) a
    ``clip_score`` column is added, and ``return_features=True`` returns ``(scores, features)``
    with the CLIP image features (N, D) of the generated images for :func:`frechet_distance`.
    """
    frames, features = [], []
    for seed in seeds:
        images = generate(pipe, [p.prompt for p in prompts], seed=seed, progress=progress, **generate_kwargs)
        frame = oracle_scores(images, [p.spec for p in prompts], config)
        if embed is not None:
            image_emb, frame["clip_score"] = clip_features_and_scores(embed, images, [p.prompt for p in prompts])
            features.append(image_emb)
        frame.insert(0, "seed", seed)
        frame.insert(0, "prompt", [p.prompt for p in prompts])
        frame.insert(0, "distribution", [p.distribution for p in prompts])
        frame.insert(0, "category", [p.category for p in prompts])
        frames.append(frame)
    scores = pd.concat(frames, ignore_index=True)
    if return_features:
        if embed is None:
            raise ValueError("return_features needs a CLIP embed")
        return scores, np.concatenate(features)
    return scores


def compare_methods(methods: dict, benchmarks: dict, seeds=(0,), embed=None, config: ToyWorldConfig | None = None,
                    **generate_kwargs) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every method on every benchmark at the same seeds and sampler settings.

    ``methods``: name -> ``(pipe, arguments)`` where ``arguments(prompts) -> dict`` gives the
    method's own :func:`dptlib.method.sampling.generate` arguments for a benchmark's prompts (or is a
    dict, or None); ``benchmarks``: name -> prompts. Returns the scores of
    :func:`evaluate_generation` with ``method`` and ``benchmark`` columns, and per method the CLIP
    image features of all its images (empty without ``embed``).
    """
    frames, features = [], {}
    for name, (pipe, arguments) in methods.items():
        parts = []
        for benchmark, prompts in benchmarks.items():
            extra = arguments(prompts) if callable(arguments) else dict(arguments or {})
            result = evaluate_generation(pipe, prompts, seeds, config, embed=embed, return_features=embed is not None,
                                         **{**generate_kwargs, **extra})
            scores, found = result if embed is not None else (result, None)
            frames.append(scores.assign(method=name, benchmark=benchmark))
            parts += [] if found is None else [found]
        features[name] = np.concatenate(parts) if parts else np.zeros((0, 0))
    return pd.concat(frames, ignore_index=True), features


SELECTION_CRITERIA = ("clip", "oracle")


def tuning_validator(pipe, prompts, embed, num_inference_steps: int = 25, seed: int = 1234, discrimination=None,
                     config: ToyWorldConfig | None = None, selection: str = "clip", guidance_scale: float = 7.5,
                     scheduler: str | None = None):
    """A ``validate(step, model)`` for :func:`dptlib.method.train.tune`: images of the validation
    ``prompts`` from ``pipe`` (whose U-Net is the one being tuned), scored by the CLIP ``embed``
    (``clip_score``) and by the oracle (``correct``, % exactly right). ``selection`` says which
    is the checkpoint-selection ``score``: ``"clip"`` (the paper's criterion, App. B.3.1) or
    ``"oracle"`` (the toy world's exact judge; no such judge exists at paper scale).

    ``discrimination = (data, latents, itm_test, rec_expressions)`` (a validation split) adds the
    tuned model's ITM overall accuracy and REC P@1, for the generation-vs-discrimination curves
    of Fig. 4a. ``scheduler``: the sampler's scheduler (:func:`dptlib.method.sampling.generate`; None: the
    pipeline's own), the same as the test images'.
    """
    if selection not in SELECTION_CRITERIA:
        raise ValueError(f"selection must be one of {SELECTION_CRITERIA}, got {selection!r}")

    def validate(step, model) -> dict:
        scores = evaluate_generation(pipe, prompts, seeds=(seed,), config=config, progress=False, embed=embed,
                                     num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, scheduler=scheduler)
        result = {"clip_score": float(scores["clip_score"].mean()), "correct": 100 * float(scores["correct"].mean())}
        result["score"] = result["clip_score" if selection == "clip" else "correct"]
        if discrimination is not None:
            data, latents, itm_test, rec_expressions = discrimination
            scorer = DPTScorer(Backbone(pipe), model.adapter, model.blocks, data, latents)
            result["ITM overall"] = itm_accuracy(scorer.score_pairs, itm_test)["overall"]
            result["REC P@1"] = rec_precision(scorer.predict_boxes, data, rec_expressions)
        return result

    return validate


def mean_and_spread(scores: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: the oracle columns' mean over seeds and the std of the per-seed means, in %
    (and the same for ``clip_score`` where the scores have it)."""
    columns = [c for c in ORACLE_COLUMNS if c in scores]
    per_seed = scores.groupby(by + ["seed"])[columns].mean() * 100
    if "clip_score" in scores:  # already on a 0-100 scale
        per_seed["clip_score"] = scores.groupby(by + ["seed"])["clip_score"].mean()
    grouped = per_seed.groupby(level=list(range(len(by))))
    return pd.concat({"mean": grouped.mean(), "std": grouped.std(ddof=0)}, axis=1)


def best_eta(sweep: pd.DataFrame) -> float:
    """The eta > 0 of Eq. 9 as written with the highest share of exactly right images in a sweep
    (rows: ``method`` "paper, eta E" among others, and the oracle's 0/1 ``correct``): the choice
    ``03_self_correction`` makes on validation prompts."""
    paper = sweep[sweep["method"].str.startswith("paper, eta ")]
    if paper.empty:
        raise ValueError("the sweep has no 'paper, eta E' rows")
    return float(paper.groupby("method")["correct"].mean().idxmax().split("eta ")[1])
