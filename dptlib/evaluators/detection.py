"""Open-vocabulary detection for the GLIP score (CC-500) and T2I-CompBench's spatial score.

GLIP (the paper's grader for CC-500) and UniDet (T2I-CompBench's) are not in transformers; a
text-conditioned detector stands in (Grounding DINO, ``GroundingDinoForObjectDetection``; any
model whose processor has ``post_process_grounded_object_detection`` and takes a caption of
"label. label." works). Every column these evaluators write names the detector in ``grader``,
and carries "(stand-in)" — a GLIP score from Grounding DINO is not the paper's GLIP score.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .rules import RELATIONS, Detection, all_detected, relation_of, spatial_score


class GroundedDetector:
    """``detect(images, labels)``: per image, the boxes (pixels, xyxy) of the phrases it was asked
    for, each scored by the detector, at ``box_threshold`` and above. A returned phrase is mapped
    to the longest requested label it contains (else dropped)."""

    def __init__(self, model, processor, box_threshold: float = 0.5, text_threshold: float = 0.25, name: str = "grounding-dino"):
        self.model, self.processor, self.name = model.eval(), processor, name
        self.box_threshold, self.text_threshold = box_threshold, text_threshold

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu", **kwargs) -> GroundedDetector:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        model = AutoModelForZeroShotObjectDetection.from_pretrained(folder, local_files_only=True).to(device)
        return cls(model, AutoProcessor.from_pretrained(folder, local_files_only=True), name=Path(str(folder)).name, **kwargs)

    @staticmethod
    def caption(labels: Sequence[str]) -> str:
        """Grounding DINO's caption: lower-case phrases, each ended by a full stop."""
        return " ".join(f"{label.lower().strip()}." for label in labels)

    @staticmethod
    def label_of(phrase: str, labels: Sequence[str]) -> str | None:
        """The longest of ``labels`` whose words all occur in ``phrase`` (None if none does)."""
        words = set(re.findall(r"[a-z0-9]+", phrase.lower()))
        found = [label for label in labels if set(re.findall(r"[a-z0-9]+", label.lower())) <= words]
        return max(found, key=len) if found else None

    @torch.no_grad()
    def detect(self, images: Sequence[np.ndarray], labels: Sequence[Sequence[str]]) -> list[list[Detection]]:
        found = []
        for image, asked in zip(images, labels, strict=True):
            inputs = self.processor(images=[image], text=[self.caption(asked)], return_tensors="pt").to(self.model.device)
            outputs = self.model(**inputs)
            result = self.processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold,
                target_sizes=[image.shape[:2]])[0]
            detections = []
            for score, box, phrase in zip(result["scores"].tolist(), result["boxes"].tolist(), result["text_labels"]):
                label = self.label_of(phrase, asked)
                if label is not None:
                    detections.append(Detection(label, float(score), tuple(box)))
            found.append(detections)
        return found


class GroundedObjects:
    """The GLIP score's stand-in (CC-500): per image, whether every object of its prompt is
    detected at the box threshold (0.5); ``summarize``: the share of such images, x 100.
    ``items`` needs ``prompt`` and ``objects`` (the prompt's object nouns, e.g. from
    ``dptlib.prompt_sets``)."""

    column = "GLIP (stand-in)"

    def __init__(self, detector: GroundedDetector):
        self.detector = detector

    def score(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        detections = self.detector.detect(images, [list(o) for o in items["objects"]])
        hits = [all_detected(list(o), d, self.detector.box_threshold) for o, d in zip(items["objects"], detections)]
        return items.reset_index(drop=True).assign(**{self.column: hits}, grader=self.detector.name)

    def summarize(self, table: pd.DataFrame) -> dict[str, float]:
        return {self.column: 100 * float(table[self.column].mean())}


def rule_first_and_last_noun(prompt: str) -> tuple[str, str]:
    """The subject and object of a spatial prompt without a tagger: the last word before its
    relation and the prompt's last word ("a red dog on the left of a cat" -> dog, cat). T2I-CompBench
    takes spaCy's first and last NOUN; pass ``nouns=`` where spaCy is installed."""
    text = prompt.strip().rstrip(".").lower()
    relation = relation_of(text)
    if relation is None:
        words = text.split()
        return words[0], words[-1]
    before, _, after = text.partition(relation)
    return before.split()[-1], after.split()[-1]


class SpatialScore:
    """T2I-CompBench's spatial score with a stand-in detector: the first and last noun's best
    boxes, 0.25 s1 + 0.25 s2 + 0.5 pos (:func:`rules.spatial_score`), x 1 (the benchmark's
    scale). ``distance_threshold`` is the benchmark's 150 px at its ~480 px images, scaled to
    the images scored (``150 * side / 480`` by default)."""

    column = "spatial (stand-in)"

    def __init__(self, detector: GroundedDetector, nouns: Callable[[str], tuple[str, str]] = rule_first_and_last_noun):
        self.detector, self.nouns = detector, nouns

    def score(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        pairs = [self.nouns(p) for p in items["prompt"]]
        asked = [["person" if n in ("girl", "boy", "man", "woman") else n for n in pair] for pair in pairs]
        detections = self.detector.detect(images, asked)
        scores = []
        for image, prompt, (first, last), found in zip(images, items["prompt"], pairs, detections):
            scale = max(image.shape[:2]) / 480
            scores.append(spatial_score(first, last, relation_of(prompt.lower()), found, distance_threshold=150 * scale))
        return items.reset_index(drop=True).assign(**{self.column: scores}, grader=self.detector.name)

    def summarize(self, table: pd.DataFrame) -> dict[str, float]:
        return {self.column: float(table[self.column].mean())}


__all__ = ["GroundedDetector", "GroundedObjects", "SpatialScore", "rule_first_and_last_noun", "RELATIONS"]
