"""Metrics. Generation: the toy oracle's exact scores per prompt and per benchmark category."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .data import to_model_images
from .toyworld import PromptSpec, ToyWorldConfig, parse_image, score_objects

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

    ``prompts``: :class:`~dptlib.benchmarks.BenchmarkPrompt` s with specs; ``generate_kwargs`` go to
    :func:`dptlib.sampling.generate` (steps, guidance, batch size, self-correction, per-prompt
    arguments). Returns one row per (prompt, seed) with the prompt's category and distribution
    beside the oracle's scores. With a CLIP ``embed`` (:func:`dptlib.data.clip_embedder`) a
    ``clip_score`` column is added, and ``return_features=True`` returns ``(scores, features)``
    with the CLIP image features (N, D) of the generated images for :func:`frechet_distance`.
    """
    from .sampling import generate

    frames, features = [], []
    for seed in seeds:
        images = generate(pipe, [p.prompt for p in prompts], seed=seed, progress=progress, **generate_kwargs)
        frame = oracle_scores(images, [p.spec for p in prompts], config)
        if embed is not None:
            image_emb, frame["clip_score"] = _clip_features_and_scores(embed, images, [p.prompt for p in prompts])
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
    method's own :func:`dptlib.sampling.generate` arguments for a benchmark's prompts (or is a
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


def image_features(embed, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """A CLIP's image features (N, D) of uint8 images (N, H, W, 3), e.g. of real renders."""
    return np.concatenate([embed(to_model_images(images[i : i + batch]), None)[0].numpy() for i in range(0, len(images), batch)])


SELECTION_CRITERIA = ("clip", "oracle")


def tuning_validator(pipe, prompts, embed, num_inference_steps: int = 25, seed: int = 1234, discrimination=None,
                     config: ToyWorldConfig | None = None, selection: str = "clip", guidance_scale: float = 7.5):
    """A ``validate(step, model)`` for :func:`dptlib.train.tune`: images of the validation
    ``prompts`` from ``pipe`` (whose U-Net is the one being tuned), scored by the CLIP ``embed``
    (``clip_score``) and by the oracle (``correct``, % exactly right). ``selection`` says which
    is the checkpoint-selection ``score``: ``"clip"`` (the paper's criterion, App. B.3.1) or
    ``"oracle"`` (the toy world's exact judge; no such judge exists at paper scale).

    ``discrimination = (data, latents, itm_test, rec_expressions)`` (a validation split) adds the
    tuned model's ITM overall accuracy and REC P@1, for the generation-vs-discrimination curves
    of Fig. 4a.
    """
    if selection not in SELECTION_CRITERIA:
        raise ValueError(f"selection must be one of {SELECTION_CRITERIA}, got {selection!r}")

    def validate(step, model) -> dict:
        scores = evaluate_generation(pipe, prompts, seeds=(seed,), config=config, progress=False, embed=embed,
                                     num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
        result = {"clip_score": float(scores["clip_score"].mean()), "correct": 100 * float(scores["correct"].mean())}
        result["score"] = result["clip_score" if selection == "clip" else "correct"]
        if discrimination is not None:
            from .backbone import Backbone

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


# --------------------------------------------------------------------------------------------
# Discrimination: ITM on hard negatives (HN-MSCOCO protocol) and REC precision@1
# --------------------------------------------------------------------------------------------
@dataclass
class ITMTest:
    """Candidates per query, positive first: image -> 1 + n captions, caption -> 1 + n images."""

    image_to_text: list[tuple[int, list[int]]]
    text_to_image: list[tuple[int, list[int]]]

    def head(self, n: int) -> "ITMTest":
        """The first ``n`` queries of each direction (a cheaper test, e.g. for curves along training)."""
        return ITMTest(self.image_to_text[:n], self.text_to_image[:n])


def itm_test_set(data, n_negatives: int = 3, seed: int = 0) -> ITMTest:
    """App. B.1's HN-MSCOCO: for each captioned image one of its captions and ``n_negatives``
    drawn from its hard negative captions; for that caption its image and ``n_negatives`` drawn
    from its hard negative images. Where the data mark complete captions
    (``caption_complete``), the positive is one of them, as specific as the negatives it is
    set against."""
    rng = np.random.default_rng(seed)
    i2t, t2i = [], []
    owners = data.caption_image.numpy()
    complete = data.caption_complete.numpy() if data.caption_complete is not None else np.ones(len(owners), bool)
    for image in range(data.n_captioned):
        own = np.flatnonzero(owners == image)
        pool = own[complete[own]] if complete[own].any() else own
        caption = int(rng.choice(pool))
        negatives = rng.choice(data.hard_captions[image].numpy(), n_negatives, replace=False)
        i2t.append((image, [caption, *map(int, negatives)]))
        negative_images = rng.choice(data.hard_images[caption].numpy(), n_negatives, replace=False)
        t2i.append((caption, [image, *map(int, negative_images)]))
    return ITMTest(i2t, t2i)


def itm_outcomes(score_pairs, test: ITMTest, queries_per_call: int = 32) -> dict[str, np.ndarray]:
    """Per query, whether the positive scores strictly above every negative (a tie is wrong:
    a scorer that cannot tell the candidates apart gets 0, not 100).

    ``score_pairs(images: list[int], captions: list[int]) -> (P,)`` scores image-caption pairs.
    Returns ``{"I->T": bool (Q,), "T->I": bool (Q,)}``."""
    results = {}
    for name, items, as_pairs in (
        ("I->T", test.image_to_text, lambda q, cands: ([q] * len(cands), cands)),
        ("T->I", test.text_to_image, lambda q, cands: (cands, [q] * len(cands))),
    ):
        correct = []
        for start in range(0, len(items), queries_per_call):
            chunk = items[start : start + queries_per_call]
            images, captions = [], []
            for query, candidates in chunk:
                i, c = as_pairs(query, candidates)
                images += i
                captions += c
            scores = torch.as_tensor(score_pairs(images, captions)).view(len(chunk), -1)
            correct.append((scores[:, 0] > scores[:, 1:].max(1).values).numpy())
        results[name] = np.concatenate(correct) if correct else np.zeros(0, bool)
    return results


def itm_accuracy(score_pairs, test: ITMTest, queries_per_call: int = 32) -> dict[str, float]:
    """Accuracy (%) of :func:`itm_outcomes`, both directions, and their mean ("overall")."""
    outcomes = itm_outcomes(score_pairs, test, queries_per_call)
    results = {name: 100 * float(hits.mean()) if len(hits) else 0.0 for name, hits in outcomes.items()}
    results["overall"] = (results["I->T"] + results["T->I"]) / 2
    return results


def rec_predictions(predict_boxes, expressions: list[int], chunk: int = 64) -> torch.Tensor:
    """Predicted boxes (n, 4), normalised (cx, cy, w, h), of ``expressions``, asked ``chunk`` at a
    time of ``predict_boxes(expressions: list[int]) -> (n, 4)``."""
    parts = [torch.as_tensor(predict_boxes(expressions[i : i + chunk]), dtype=torch.float32) for i in range(0, len(expressions), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, 4)


def rec_hits(predicted: torch.Tensor, data, expressions: list[int], iou_threshold: float = 0.5, target: str = "referred") -> np.ndarray:
    """Per expression, whether its predicted box (n, 4) hits at IoU >= 0.5 the referred object
    (``target="referred"``, REC's precision@1) or any ground-truth object of the image
    (``"any"``: localisation without selection)."""
    from .losses import box_iou, cxcywh_to_xyxy

    if target not in ("referred", "any"):
        raise ValueError(f"target must be 'referred' or 'any', got {target!r}")
    predicted = cxcywh_to_xyxy(predicted)
    if target == "referred":
        iou, _ = box_iou(predicted, cxcywh_to_xyxy(data.expression_box[expressions]))
    else:
        objects = data.object_boxes()
        iou = torch.stack([box_iou(p[None], cxcywh_to_xyxy(objects[int(data.expression_image[e])]))[0].max()
                           for p, e in zip(predicted, expressions)]) if len(expressions) else torch.zeros(0)
    return (iou >= iou_threshold).numpy()


def rec_outcomes(predict_boxes, data, expressions: list[int] | None = None, iou_threshold: float = 0.5, chunk: int = 64,
                 target: str = "referred") -> np.ndarray:
    """:func:`rec_hits` of the boxes ``predict_boxes`` gives for ``expressions`` (default: all)."""
    expressions = list(range(len(data.expressions))) if expressions is None else list(expressions)
    return rec_hits(rec_predictions(predict_boxes, expressions, chunk), data, expressions, iou_threshold, target)


def rec_precision(predict_boxes, data, expressions: list[int] | None = None, iou_threshold: float = 0.5, chunk: int = 64,
                  target: str = "referred") -> float:
    """Precision@1 (%) of :func:`rec_outcomes`."""
    hits = rec_outcomes(predict_boxes, data, expressions, iou_threshold, chunk, target)
    return 100 * float(hits.mean()) if len(hits) else 0.0


def outcome_frame(method: str, outcomes: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per-query outcomes of one method as a long table (method, task, item, correct): the form
    :func:`dptlib.stats.compare_to_baseline` compares methods in (``item`` = query number)."""
    return pd.concat([pd.DataFrame({"method": method, "task": task, "item": np.arange(len(hits)), "correct": hits.astype(bool)})
                      for task, hits in outcomes.items()], ignore_index=True)


class DPTScorer:
    """ITM scores s(z_t, y) and REC boxes from a probed (or tuned) model at a fixed timestep.

    Each image gets one fixed noise sample (seeded by its index), so all candidates of a query are
    compared on the same z_t. ``rec_rule``: how the object query is chosen
    (:func:`dptlib.losses.query_choice_scores`)."""

    def __init__(self, backbone, adapter, blocks, data, latents, timestep: int = 250, seed: int = 0,
                 rec_rule: str = "grounding+text"):
        self.backbone, self.adapter, self.blocks, self.data = backbone, adapter.eval(), blocks, data
        self.latents, self.timestep, self.seed, self.rec_rule = latents, timestep, seed, rec_rule

    def noisy_latents(self, images: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """z_t (n, 4, h, w) of the images at the scorer's timestep, and the timesteps (n,)."""
        from .backbone import add_noise

        noise = torch.stack([torch.randn(self.latents.shape[1:], generator=torch.Generator().manual_seed(self.seed * 1_000_003 + i))
                             for i in images])
        t = torch.full((len(images),), self.timestep)
        return add_noise(self.backbone, self.latents[images], t, noise).to(self.backbone.device), t.to(self.backbone.device)

    @torch.no_grad()
    def _outputs(self, images: list[int], texts: list[str]):
        from .backbone import encode_text, extract_features

        z, t = self.noisy_latents(images)
        hidden, pooled = encode_text(self.backbone, texts)
        features = extract_features(self.backbone.unet, z, t, hidden, self.blocks)
        return self.adapter(features, t), pooled

    def score_pairs(self, images: list[int], captions: list[int]) -> torch.Tensor:
        from .losses import matching_similarity

        out, pooled = self._outputs(images, [self.data.captions[c] for c in captions])
        return matching_similarity(out.match_embeddings, pooled).cpu()

    def predict_boxes(self, expressions: list[int], rule: str | None = None) -> torch.Tensor:
        from .losses import predicted_boxes

        images = [int(self.data.expression_image[e]) for e in expressions]
        out, pooled = self._outputs(images, [self.data.expressions[e] for e in expressions])
        return predicted_boxes(out.grounding_logits, out.boxes, out.semantic_embeddings, pooled, self.adapter.logit_scale,
                               rule or self.rec_rule).cpu()


# --------------------------------------------------------------------------------------------
# Generation: CLIP score and Fréchet distance on a CLIP's image features
# --------------------------------------------------------------------------------------------
def clip_score(embed, images: np.ndarray, prompts: list[str]) -> np.ndarray:
    """CLIPScore (Hessel et al.): 100 * max(cos(image, prompt), 0) per image, with any CLIP
    ``embed`` from :func:`dptlib.data.clip_embedder` (the toy evaluator, or OpenCLIP ViT-H-14)."""
    return _clip_features_and_scores(embed, images, prompts)[1]


def _clip_features_and_scores(embed, images: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    image_emb, text_emb = embed(to_model_images(images), prompts)
    return image_emb.numpy(), (100 * (image_emb * text_emb).sum(-1).clamp(min=0)).numpy()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets (N, D):
    FID when the features are Inception's, here whatever image features the caller passes.
    NaN when a set has fewer than two samples."""
    from scipy import linalg

    if len(features_a) < 2 or len(features_b) < 2:
        return float("nan")  # a covariance needs two samples
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)  # (scipy >= 1.18 has no disp argument)
    if np.iscomplexobj(root):
        root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
