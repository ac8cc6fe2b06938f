"""T2I-CompBench's complex category (3-in-1): B-VQA, the spatial score and the non-spatial CLIP
score of each image, combined by what its prompt contains (:func:`rules.three_in_one`).

The benchmark lists its spatial-only and action-only complex prompts in ``complex_val_spatial.txt``
and ``complex_val_action.txt``; every other complex prompt averages all three. (Its script also
assumes 10 images per prompt; here each image row carries its own prompt, so any number works.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .rules import complex_kind, three_in_one


class ThreeInOne:
    """``attribute``, ``spatial``, ``action``: evaluators whose ``score`` adds one column each
    (``BlipVqaBinding``, ``SpatialScore``, a ``ClipScore`` with ``scale=1``)."""

    column = "3-in-1"

    def __init__(self, attribute, spatial, action, spatial_prompts: Sequence[str], action_prompts: Sequence[str]):
        self.parts = (attribute, spatial, action)
        self.spatial_prompts, self.action_prompts = list(spatial_prompts), list(action_prompts)

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
