"""Metrics: ITM accuracy on hard negatives, REC precision@1, and for generation the CLIP score and
the Fréchet distance on a CLIP's image features. (The toy world's oracle-graded generation
metrics are in :mod:`dptlib.toy.evaluation`.)"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dptlib.data.images import to_model_images
from dptlib.method.losses import box_iou, cxcywh_to_xyxy


def image_features(embed, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """A CLIP's image features (N, D) of uint8 images (N, H, W, 3), e.g. of real renders."""
    return np.concatenate([embed(to_model_images(images[i : i + batch]), None)[0].numpy() for i in range(0, len(images), batch)])



# --------------------------------------------------------------------------------------------
# Discrimination: ITM on hard negatives (HN-MSCOCO protocol) and REC precision@1
# --------------------------------------------------------------------------------------------
@dataclass
class ITMTest:
    """Candidates per query, positive first: image -> 1 + n captions, caption -> 1 + n images."""

    image_to_text: list[tuple[int, list[int]]]
    text_to_image: list[tuple[int, list[int]]]

    def head(self, n: int) -> ITMTest:
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


def query_images(data, itm_test: ITMTest | None = None, rec_expressions=None) -> dict[str, np.ndarray]:
    """The test image each query is about, in the order of its outcomes: ``"ITM overall"`` (the
    I->T queries' images, then the T->I queries' positive images, as :func:`itm_outcomes` and the
    notebooks concatenate them) and ``"REC P@1"`` (each expression's image). Queries on one image
    share it, so intervals cluster by it (:func:`dptlib.evaluation.stats.seed_paired_difference`)."""
    found = {}
    if itm_test is not None:
        found["ITM overall"] = np.array([image for image, _ in itm_test.image_to_text]
                                        + [candidates[0] for _, candidates in itm_test.text_to_image], dtype=int)
    if rec_expressions is not None:
        found["REC P@1"] = data.expression_image[np.asarray(rec_expressions, dtype=int)].numpy().astype(int)
    return found


def outcome_frame(method: str, outcomes: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per-query outcomes of one method as a long table (method, task, item, correct): the form
    :func:`dptlib.evaluation.stats.compare_to_baseline` compares methods in (``item`` = query number)."""
    return pd.concat([pd.DataFrame({"method": method, "task": task, "item": np.arange(len(hits)), "correct": hits.astype(bool)})
                      for task, hits in outcomes.items()], ignore_index=True)


# --------------------------------------------------------------------------------------------
# Generation: CLIP score and Fréchet distance on a CLIP's image features
# --------------------------------------------------------------------------------------------
def clip_score(embed, images: np.ndarray, prompts: list[str]) -> np.ndarray:
    """CLIPScore (Hessel et al.): 100 * max(cos(image, prompt), 0) per image, with any CLIP
    ``embed`` from :func:`dptlib.data.embedders.clip_embedder` (the toy evaluator, or OpenCLIP ViT-H-14)."""
    return clip_features_and_scores(embed, images, prompts)[1]


def clip_features_and_scores(embed, images: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    image_emb, text_emb = embed(to_model_images(images), prompts)
    return image_emb.numpy(), (100 * (image_emb * text_emb).sum(-1).clamp(min=0)).numpy()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets (N, D):
    FID when the features are Inception's, here whatever image features the caller passes.
    NaN when a set has fewer than two samples."""
    from scipy import linalg  # deferred: heavy

    if len(features_a) < 2 or len(features_b) < 2:
        return float("nan")  # a covariance needs two samples
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)  # (scipy >= 1.18 has no disp argument)
    if np.iscomplexobj(root):
        root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
