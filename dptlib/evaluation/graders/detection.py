"""Open-vocabulary detection for the GLIP score (CC-500) and T2I-CompBench's spatial score.

GLIP (the paper's grader for CC-500) and UniDet (T2I-CompBench's) are not in transformers; a
text-conditioned detector stands in (Grounding DINO, ``GroundingDinoForObjectDetection``; any
model whose processor has ``post_process_grounded_object_detection`` and takes a caption of
"label. label." works). Every column these evaluators write names the detector in ``grader``,
and carries "(stand-in)" — a GLIP score from Grounding DINO is not the paper's GLIP score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dptlib.evaluation.graders.rules import RELATIONS, Detection, all_detected, detected_as, relation_of, spatial_score
from dptlib.evaluation.graders.text import RuleReader, complex_pair, first_and_last_noun, load_reader


class GroundedDetector:
    """``detect(images, labels)``: per image, the boxes (pixels, xyxy) of the phrases it was asked
    for, each scored by the detector, at ``box_threshold`` and above. A returned phrase is mapped
    to the longest requested label it contains (else dropped)."""

    def __init__(self, model, processor, box_threshold: float = 0.5, text_threshold: float = 0.25, name: str = "grounding-dino"):
        self.model, self.processor, self.name = model.eval(), processor, name
        self.box_threshold, self.text_threshold = box_threshold, text_threshold

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu", **kwargs) -> GroundedDetector:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor  # deferred: heavy

        model = AutoModelForZeroShotObjectDetection.from_pretrained(folder, local_files_only=True).to(device)
        return cls(model, AutoProcessor.from_pretrained(folder, local_files_only=True), name=Path(str(folder)).name, **kwargs)

    @staticmethod
    def caption(labels: Sequence[str]) -> str:
        """Grounding DINO's caption for a list of labels: lower-case phrases, each ended by a full stop."""
        return " ".join(f"{label.lower().strip()}." for label in labels)

    @staticmethod
    def prompt_caption(prompt: str) -> str:
        """A whole prompt as Grounding DINO's caption (lower case, ended by a full stop), as GLIP's
        evaluation gives GLIP the whole prompt."""
        text = prompt.lower().strip()
        return text if text.endswith(".") else text + "."

    @staticmethod
    def label_of(phrase: str, labels: Sequence[str]) -> str | None:
        """The longest of ``labels`` whose words all occur in ``phrase`` (None if none does)."""
        words = set(re.findall(r"[a-z0-9]+", phrase.lower()))
        found = [label for label in labels if set(re.findall(r"[a-z0-9]+", label.lower())) <= words]
        return max(found, key=len) if found else None

    @torch.no_grad()
    def detect(self, images: Sequence[np.ndarray], labels: Sequence[Sequence[str]],
               captions: Sequence[str] | None = None) -> list[list[Detection]]:
        """Per image, the boxes of its ``labels`` by decreasing score (detectron2's order, which the
        spatial rule's first-box lookup assumes). ``captions``: the text given to the detector (None:
        the labels, :meth:`caption`); its returned phrases are mapped back to the labels."""
        found = []
        captions = [self.caption(asked) for asked in labels] if captions is None else list(captions)
        for image, asked, caption in zip(images, labels, captions, strict=True):
            inputs = self.processor(images=[image], text=[caption], return_tensors="pt").to(self.model.device)
            outputs = self.model(**inputs)
            result = self.processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold,
                target_sizes=[image.shape[:2]])[0]
            detections = []
            for score, box, phrase in zip(result["scores"].tolist(), result["boxes"].tolist(), result["text_labels"]):
                label = self.label_of(phrase, asked)
                if label is not None:
                    detections.append(Detection(label, float(score), tuple(box)))
            found.append(sorted(detections, key=lambda d: -d.score))
        return found


class GroundedObjects:
    """The GLIP score's stand-in (CC-500): per image, whether every object of its prompt is
    detected at the box threshold (0.5), the detector given the whole prompt as its caption (as
    GLIP's evaluation gives GLIP); ``summarize``: the share of such images, x 100. ``items`` needs
    ``prompt`` and ``objects`` (the prompt's object nouns, e.g. from ``dptlib.data.prompt_sets``), to
    which the detector's phrases are mapped."""

    column = "GLIP (stand-in)"

    def __init__(self, detector: GroundedDetector):
        self.detector = detector

    def score(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        detections = self.detector.detect(images, [list(o) for o in items["objects"]],
                                          captions=[GroundedDetector.prompt_caption(p) for p in items["prompt"]])
        hits = [all_detected(list(o), d, self.detector.box_threshold) for o, d in zip(items["objects"], detections)]
        return items.reset_index(drop=True).assign(**{self.column: hits}, grader=self.detector.name)

    def summarize(self, table: pd.DataFrame) -> dict[str, float]:
        return {self.column: 100 * float(table[self.column].mean())}


class SpatialScore:
    """T2I-CompBench's spatial score with a stand-in detector: the prompt's two objects' first boxes,
    0.25 s1 + 0.25 s2 + 0.5 pos (:func:`rules.spatial_score`), x ``scale`` (100: the paper prints
    T2I-CompBench x 100). ``mode``: how the two objects are read (:mod:`dptlib.evaluation.graders.text`):
    "simple", the first and last NOUN (the spatial category), or "complex", around the spatial
    preposition (3-in-1's spatial part, the benchmark's ``--complex``). ``distance_threshold``: the
    benchmark's 150 px, in the pixels of the image scored, whatever its size (as the benchmark)."""

    def __init__(self, detector: GroundedDetector, reader=None, mode: str = "simple", scale: float = 100.0,
                 distance_threshold: float = 150.0):
        if mode not in ("simple", "complex"):
            raise ValueError(f"mode must be 'simple' or 'complex'; got {mode!r}")
        self.detector, self.reader, self.mode, self.scale = detector, reader or load_reader(), mode, scale
        self.distance_threshold = distance_threshold
        self.column = "spatial (stand-in" + ("; fallback nouns" if isinstance(self.reader, RuleReader) else "") + ")"
        self.grader = f"{detector.name} ({self.reader.name})"

    def objects(self, prompt: str) -> tuple[str | None, str | None]:
        """The prompt's two objects as the benchmark reads them (before the person mapping)."""
        tokens = self.reader.tokens(prompt)
        return first_and_last_noun(tokens) if self.mode == "simple" else complex_pair(tokens)

    def score(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        pairs = [self.objects(p) for p in items["prompt"]]
        asked = [[detected_as(n) for n in pair if n is not None] for pair in pairs]
        detections = self.detector.detect(images, [a or ["object"] for a in asked])
        scores = []
        for prompt, (first, last), found in zip(items["prompt"], pairs, detections):
            value = spatial_score(first, last, relation_of(prompt), found, distance_threshold=self.distance_threshold)
            scores.append(self.scale * value)
        return items.reset_index(drop=True).assign(**{self.column: scores}, grader=self.grader)

    def summarize(self, table: pd.DataFrame) -> dict[str, float]:
        return {self.column: float(table[self.column].mean())}


__all__ = ["GroundedDetector", "GroundedObjects", "SpatialScore", "RELATIONS"]
