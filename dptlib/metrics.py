"""Metrics. Generation: the toy oracle's exact scores per prompt and per benchmark category."""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def tuning_validator(pipe, prompts, embed, num_inference_steps: int = 25, seed: int = 1234, discrimination=None,
                     config: ToyWorldConfig | None = None):
    """A ``validate(step, model)`` for :func:`dptlib.train.tune`: images of the validation
    ``prompts`` from ``pipe`` (whose U-Net is the one being tuned), scored by the CLIP ``embed``
    (key ``score``, the paper's checkpoint-selection criterion) and by the oracle (``correct``).

    ``discrimination = (test_data, test_latents, itm_test)`` adds the tuned model's ITM overall
    accuracy and REC P@1 on held-out data, for the generation-vs-discrimination curves of Fig. 4a.
    """

    def validate(step, model) -> dict:
        scores = evaluate_generation(pipe, prompts, seeds=(seed,), config=config, progress=False, embed=embed,
                                     num_inference_steps=num_inference_steps)
        result = {"score": float(scores["clip_score"].mean()), "correct": 100 * float(scores["correct"].mean())}
        if discrimination is not None:
            data, latents, test = discrimination
            from .backbone import Backbone

            scorer = DPTScorer(Backbone(pipe), model.adapter, model.blocks, data, latents)
            result["ITM overall"] = itm_accuracy(scorer.score_pairs, test)["overall"]
            result["REC P@1"] = rec_precision(scorer.predict_boxes, data)
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
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402


@dataclass
class ITMTest:
    """Candidates per query, positive first: image -> 1 + n captions, caption -> 1 + n images."""

    image_to_text: list[tuple[int, list[int]]]
    text_to_image: list[tuple[int, list[int]]]


def itm_test_set(data, n_negatives: int = 3, seed: int = 0) -> ITMTest:
    """App. B.1's HN-MSCOCO: for each image one of its captions and ``n_negatives`` drawn from its
    top-20 mined captions; for that caption its image and ``n_negatives`` from its top-4 images."""
    rng = np.random.default_rng(seed)
    i2t, t2i = [], []
    owners = data.caption_image.numpy()
    for image in range(len(data)):
        own = np.flatnonzero(owners == image)
        caption = int(rng.choice(own))
        negatives = rng.choice(data.hard_captions[image].numpy(), n_negatives, replace=False)
        i2t.append((image, [caption, *map(int, negatives)]))
        negative_images = rng.choice(data.hard_images[caption].numpy(), n_negatives, replace=False)
        t2i.append((caption, [image, *map(int, negative_images)]))
    return ITMTest(i2t, t2i)


def itm_accuracy(score_pairs, test: ITMTest, queries_per_call: int = 32) -> dict[str, float]:
    """Accuracy (%) of picking the positive among the candidates, both directions, and their mean.

    ``score_pairs(images: list[int], captions: list[int]) -> (P,)`` scores image-caption pairs."""
    results = {}
    for name, items, as_pairs in (
        ("I->T", test.image_to_text, lambda q, cands: ([q] * len(cands), cands)),
        ("T->I", test.text_to_image, lambda q, cands: (cands, [q] * len(cands))),
    ):
        correct = 0
        for start in range(0, len(items), queries_per_call):
            chunk = items[start : start + queries_per_call]
            images, captions = [], []
            for query, candidates in chunk:
                i, c = as_pairs(query, candidates)
                images += i
                captions += c
            scores = torch.as_tensor(score_pairs(images, captions)).view(len(chunk), -1)
            correct += int((scores.argmax(1) == 0).sum())
        results[name] = 100 * correct / max(1, len(items))
    results["overall"] = (results["I->T"] + results["T->I"]) / 2
    return results


def rec_precision(predict_boxes, data, expressions: list[int] | None = None, iou_threshold: float = 0.5, chunk: int = 64) -> float:
    """Precision@1 (%) of REC: the predicted box hits the referred object with IoU >= 0.5.

    ``predict_boxes(expressions: list[int]) -> (n, 4)`` normalised (cx, cy, w, h)."""
    from .losses import box_iou, cxcywh_to_xyxy

    expressions = list(range(len(data.expressions))) if expressions is None else expressions
    hits = 0
    for start in range(0, len(expressions), chunk):
        part = expressions[start : start + chunk]
        predicted = torch.as_tensor(predict_boxes(part), dtype=torch.float32)
        iou, _ = box_iou(cxcywh_to_xyxy(predicted), cxcywh_to_xyxy(data.expression_box[part]))
        hits += int((iou >= iou_threshold).sum())
    return 100 * hits / max(1, len(expressions))


class DPTScorer:
    """ITM scores s(z_t, y) and REC boxes from a probed (or tuned) model at a fixed timestep.

    Each image gets one fixed noise sample (seeded by its index), so all candidates of a query are
    compared on the same z_t."""

    def __init__(self, backbone, adapter, blocks, data, latents, timestep: int = 250, seed: int = 0):
        self.backbone, self.adapter, self.blocks, self.data = backbone, adapter.eval(), blocks, data
        self.latents, self.timestep, self.seed = latents, timestep, seed

    def _noisy(self, images: list[int]) -> torch.Tensor:
        from .backbone import add_noise

        noise = torch.stack([torch.randn(self.latents.shape[1:], generator=torch.Generator().manual_seed(self.seed * 1_000_003 + i))
                             for i in images])
        t = torch.full((len(images),), self.timestep)
        return add_noise(self.backbone, self.latents[images], t, noise).to(self.backbone.device), t.to(self.backbone.device)

    @torch.no_grad()
    def _outputs(self, images: list[int], texts: list[str]):
        from .backbone import encode_text, extract_features

        z, t = self._noisy(images)
        hidden, pooled = encode_text(self.backbone, texts)
        features = extract_features(self.backbone.unet, z, t, hidden, self.blocks)
        return self.adapter(features, t), pooled

    def score_pairs(self, images: list[int], captions: list[int]) -> torch.Tensor:
        from .losses import matching_similarity

        out, pooled = self._outputs(images, [self.data.captions[c] for c in captions])
        return matching_similarity(out.match_embeddings, pooled).cpu()

    def predict_boxes(self, expressions: list[int]) -> torch.Tensor:
        from .losses import predicted_boxes

        images = [int(self.data.expression_image[e]) for e in expressions]
        out, _ = self._outputs(images, [self.data.expressions[e] for e in expressions])
        return predicted_boxes(out.grounding_logits, out.boxes).cpu()


# --------------------------------------------------------------------------------------------
# Generation: CLIP score and Fréchet distance on a CLIP's image features
# --------------------------------------------------------------------------------------------
def to_model_images(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def clip_score(embed, images: np.ndarray, prompts: list[str]) -> np.ndarray:
    """CLIPScore (Hessel et al.): 100 * max(cos(image, prompt), 0) per image, with any CLIP
    ``embed`` from :func:`dptlib.data.clip_embedder` (the toy evaluator, or OpenCLIP ViT-H-14)."""
    return _clip_features_and_scores(embed, images, prompts)[1]


def _clip_features_and_scores(embed, images: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    image_emb, text_emb = embed(to_model_images(images), prompts)
    return image_emb.numpy(), (100 * (image_emb * text_emb).sum(-1).clamp(min=0)).numpy()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets (N, D):
    FID when the features are Inception's, here whatever image features the caller passes."""
    from scipy import linalg

    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if np.iscomplexobj(root):
        root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
