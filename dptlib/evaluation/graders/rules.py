"""The scoring rules of the paper's benchmarks, apart from the models that feed them.

Each rule is the benchmark's own arithmetic (read from its released code; see
``../shared/paper/evaluation-notes.md``), written as a pure function of what a model answered, so
that it is tested on hand-computed cases and shared by every model that can stand in:

- **B-VQA** (T2I-CompBench colour / shape / texture): per noun chunk (at most 8) the VQA model's
  p(yes) / (p(yes) + p(no)) for the question "{chunk}?"; an image's score is the product (the
  chunks themselves: :mod:`dptlib.evaluation.graders.text`).
- **Spatial** (T2I-CompBench, the UniDet rule): the two objects' first boxes in the detector's order;
  0.25 s1 + 0.25 s2 + 0.5 pos when both are found, a score under 0.5 counts as 0.
- **3-in-1** (T2I-CompBench complex): the mean of B-VQA, spatial and CLIP, or of two of them for
  the prompts listed as spatial-only or action-only.
- **TIFA**: a free-form answer outside the choices becomes the nearest choice (SBERT cosine);
  a caption's score is the share of its questions answered right; the benchmark's the mean.
- **GLIP score** (CC-500): the share of images where every object of the prompt is detected at
  the box threshold (the released script dumps boxes only: this aggregation is inferred).

Boxes here are ``(x0, y0, x1, y1)`` in pixels, y pointing down (image coordinates).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import mean, stdev

import numpy as np

# --------------------------------------------------------------------------------------------
# B-VQA
# --------------------------------------------------------------------------------------------
MAX_CHUNKS = 8  # T2I-CompBench's --np_num: chunks beyond it are not asked


def written(value: float) -> float:
    """A value as T2I-CompBench writes it to its result files and reads it back: ``'{:.4f}'``."""
    return float(f"{value:.4f}")


def yes_share(p_yes: float, p_no: float) -> float:
    """p(yes) / (p(yes) + p(no)): the answer restricted to the two words the question allows, to
    4 decimals (BLIP's ``vqa_prob`` answers are written as ``'{:.4f}'``)."""
    return written(p_yes / (p_yes + p_no))


def bvqa_score(chunk_yes_shares: Sequence[float], max_chunks: int = MAX_CHUNKS) -> float:
    """One image's B-VQA: the float32 product of its first ``max_chunks`` chunks' yes shares (1 for
    a prompt without noun chunks: the benchmark multiplies by 1 where it has no question), to 4
    decimals as the benchmark writes it."""
    product = np.float32(1.0)
    for share in list(chunk_yes_shares)[:max_chunks]:
        product = np.float32(product * np.float32(share))
    return written(float(product))


# --------------------------------------------------------------------------------------------
# Spatial (T2I-CompBench's UniDet rule)
# --------------------------------------------------------------------------------------------
RELATIONS = ("on side of", "next to", "near", "on the left of", "on the right of", "on the bottom of", "on the top of", "on top of")
PERSON_WORDS = ("girl", "boy", "man", "woman")  # detected as "person"


@dataclass(frozen=True)
class Detection:
    """One detector box: its label, confidence and (x0, y0, x1, y1) in pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]


def relation_of(prompt: str) -> str | None:
    """The first of ``RELATIONS`` (in that order) the prompt contains, as the benchmark finds it.
    "on top of" is found but scores 0 in :func:`position_score`, as in the benchmark."""
    return next((r for r in RELATIONS if r in prompt), None)


def _iou(a, b) -> float:
    overlap = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union


def position_score(relation: str | None, box1, box2, iou_threshold: float = 0.1, distance_threshold: float = 150.0) -> float:
    """How well box1 stands in ``relation`` to box2, in [0, 1] (the benchmark's soft rule).

    Left / right / top / bottom: 1 if the centres differ mostly along that axis, on the right
    side, and the boxes overlap with IoU < ``iou_threshold``; ``iou_threshold / IoU`` if they
    overlap more; 0 otherwise. Near / next to / on side of: 1 if the centres are within
    ``distance_threshold`` px along x *or* y, else ``distance_threshold / max(|dx|, |dy|)``
    (150 px, whatever the image's size, as the benchmark)."""
    dx = (box2[0] + box2[2]) / 2 - (box1[0] + box1[2]) / 2
    dy = (box2[1] + box2[3]) / 2 - (box1[1] + box1[3]) / 2
    if relation in ("next to", "on side of", "near"):
        return 1.0 if abs(dx) < distance_threshold or abs(dy) < distance_threshold else distance_threshold / max(abs(dx), abs(dy))
    along = {"on the left of": (dx, dy, 1), "on the right of": (dx, dy, -1), "on the top of": (dy, dx, 1), "on the bottom of": (dy, dx, -1)}
    if relation not in along:
        return 0.0
    main, other, side = along[relation]
    if side * main <= 0 or abs(main) <= abs(other):
        return 0.0
    iou = _iou(box1, box2)
    return 1.0 if iou < iou_threshold else iou_threshold / iou


def detected_as(noun: str | None) -> str | None:
    """The detector label a noun is looked up as: girl, boy, man and woman are "person"."""
    return "person" if noun in PERSON_WORDS else noun


def spatial_score(first: str | None, last: str | None, relation: str | None, detections: Sequence[Detection],
                  distance_threshold: float = 150.0) -> float:
    """One image's spatial score: ``first`` and ``last`` are the prompt's two objects (None: not
    found in the prompt), ``detections`` the detector's boxes above its confidence threshold, in its
    order (by decreasing score, as UniDet's detectron2 returns them). Each object takes the first
    box of its label (``list.index``, as the benchmark); both found: 0.25 s1 + 0.25 s2 + 0.5 pos;
    one found: 0.25 s; a total under 0.5 counts as 0 (so one object alone never scores)."""
    labels = [d.label for d in detections]

    def lookup(noun):
        noun = detected_as(noun)
        return detections[labels.index(noun)] if noun is not None and noun in labels else None

    a, b = lookup(first), lookup(last)
    if a and b:
        score = 0.25 * a.score + 0.25 * b.score + position_score(relation, a.box, b.box, distance_threshold=distance_threshold) / 2
    elif a or b:
        score = 0.25 * (a or b).score
    else:
        score = 0.0
    return score if score >= 0.5 else 0.0


# --------------------------------------------------------------------------------------------
# 3-in-1
# --------------------------------------------------------------------------------------------
def _prompt_key(prompt: str) -> str:
    return prompt.strip().split(".")[0].lower()


def complex_kind(prompt: str, spatial_prompts: Sequence[str], action_prompts: Sequence[str]) -> str:
    """"spatial" / "action" if the prompt is listed in ``complex_val_spatial.txt`` /
    ``complex_val_action.txt`` (compared as the benchmark does: up to the first full stop,
    lower-cased), else "both"."""
    key = _prompt_key(prompt)
    if key in {_prompt_key(p) for p in spatial_prompts}:
        return "spatial"
    if key in {_prompt_key(p) for p in action_prompts}:
        return "action"
    return "both"


def three_in_one(kind: str, attribute: float, spatial: float, action: float) -> float:
    """One image's 3-in-1: B-VQA (``attribute``) with the spatial score, the CLIP score
    (``action``), or both, by the prompt's ``kind`` (:func:`complex_kind`)."""
    if kind == "spatial":
        return (attribute + spatial) / 2
    if kind == "action":
        return (attribute + action) / 2
    if kind == "both":
        return (attribute + spatial + action) / 3
    raise ValueError(f"kind must be 'spatial', 'action' or 'both'; got {kind!r}")


# --------------------------------------------------------------------------------------------
# TIFA
# --------------------------------------------------------------------------------------------
def nearest_choice(answer: str, choices: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> str:
    """The choice a free-form VQA answer stands for: itself if it is one, else the choice whose
    embedding (``embed(texts) -> (n, d)``, L2-normalised: SBERT all-mpnet-base-v2 in TIFA) has
    the largest dot product with the answer's; the answer and the choices are embedded in two
    calls (two padded batches) and compared in float32, as TIFA's ``SBERTModel.multiple_choice``."""
    if answer in choices:
        return answer
    answer_vector = np.asarray(embed([answer]), dtype=np.float32)
    choice_vectors = np.asarray(embed(list(choices)), dtype=np.float32)
    return choices[int(np.argmax(choice_vectors @ answer_vector[0]))]


def tifa_summary(rows: Sequence[dict]) -> dict:
    """TIFA from per-question rows ``{"caption_id", "element_type", "correct"}``: the mean over
    captions of each caption's share correct (and its standard deviation over captions, as
    ``tifa_score_benchmark``), and the accuracy per element type (over questions)."""
    by_caption, by_type = defaultdict(list), defaultdict(list)
    for row in rows:
        by_caption[row["caption_id"]].append(float(row["correct"]))
        by_type[row["element_type"]].append(float(row["correct"]))
    per_caption = [mean(v) for v in by_caption.values()]
    return {"tifa": mean(per_caption), "tifa_stdev": stdev(per_caption) if len(per_caption) > 1 else float("nan"),
            "caption_scores": {c: mean(v) for c, v in by_caption.items()},
            "accuracy_by_type": {t: mean(v) for t, v in sorted(by_type.items())},
            "captions": len(by_caption)}


# --------------------------------------------------------------------------------------------
# GLIP score
# --------------------------------------------------------------------------------------------
def all_detected(objects: Sequence[str], detections: Sequence[Detection], threshold: float = 0.5) -> bool:
    """Whether every object of the prompt has a box at or above ``threshold``."""
    return all(any(d.label == o and d.score >= threshold for d in detections) for o in objects)
