"""T2I-CompBench's complex category (3-in-1): B-VQA, the spatial score and the non-spatial CLIP
score of each image, combined by what its prompt contains (:func:`rules.three_in_one`).

Its parts are computed in complex mode, as the benchmark's scripts are run for this category
(``--complex``): the spatial score takes the two objects around the spatial preposition
(``SpatialScore(mode="complex")``), and the CLIP score reads the prompt without its adjectives
(``ClipScore(text=without_adjectives)``); :meth:`ThreeInOne.from_parts` builds them so.
The benchmark lists its spatial-only and action-only complex prompts in ``complex_val_spatial.txt``
and ``complex_val_action.txt``; every other complex prompt averages all three. (Its script also
assumes 10 images per prompt; here each image row carries its own prompt, so any number works.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dptlib.evaluation.graders.clip import ClipScore
from dptlib.evaluation.graders.detection import SpatialScore
from dptlib.evaluation.graders.rules import complex_kind, three_in_one
from dptlib.evaluation.graders.text import RuleReader, without_adjectives


class ThreeInOne:
    """``attribute``, ``spatial``, ``action``: evaluators whose ``score`` adds one column each, on
    one scale (``BlipVqaBinding``, ``SpatialScore(mode="complex")``, a ``ClipScore`` of the prompt
    without adjectives; x 100 each, so 3-in-1 is x 100 too)."""

    column = "3-in-1"

    def __init__(self, attribute, spatial, action, spatial_prompts: Sequence[str], action_prompts: Sequence[str]):
        self.parts = (attribute, spatial, action)
        self.spatial_prompts, self.action_prompts = list(spatial_prompts), list(action_prompts)
        fallback = [p for p in self.parts if "fallback" in p.column]
        self.column = "3-in-1" + (" (fallback text)" if fallback else "")

    @classmethod
    def from_parts(cls, bvqa, detector, clip_b32, spatial_prompts: Sequence[str], action_prompts: Sequence[str], reader=None):
        """3-in-1 in complex mode from the graders the other columns use: ``bvqa`` (a
        ``BlipVqaBinding``), ``detector`` (a ``GroundedDetector``), ``clip_b32`` (the non-spatial
        ``ClipScore``); the spatial part reads the prompt in complex mode and the CLIP part scores it
        without adjectives, both with ``reader`` (spaCy's where installed)."""
        reader = reader or bvqa.reader
        spatial = SpatialScore(detector, reader, mode="complex", scale=bvqa.scale)
        fallback = " (fallback text)" if isinstance(reader, RuleReader) else ""
        action = ClipScore(clip_b32.embed, name=f"{clip_b32.name} (prompt without adjectives)", column="CLIP (no adjectives)" + fallback,
                           scale=clip_b32.scale, text=lambda prompt: without_adjectives(reader.tokens(prompt)))
        return cls(bvqa, spatial, action, spatial_prompts, action_prompts)

    def score(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        table = items.reset_index(drop=True)
        graders = []
        for part in self.parts:
            scored = part.score(images, items)
            table[part.column] = scored[part.column].to_numpy()
            graders.append(str(scored["grader"].iloc[0]) if len(scored) else "")
        kinds = [complex_kind(p, self.spatial_prompts, self.action_prompts) for p in table["prompt"]]
        columns = [part.column for part in self.parts]
        table[self.column] = [three_in_one(k, *row) for k, row in zip(kinds, table[columns].itertuples(index=False))]
        return table.assign(kind=kinds, grader=" + ".join(graders))

    def summarize(self, table: pd.DataFrame) -> dict[str, float]:
        return {self.column: float(table[self.column].mean())}
