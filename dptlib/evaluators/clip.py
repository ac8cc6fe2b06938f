"""CLIP scores as the paper and T2I-CompBench compute them.

- **CLIP** (Tab. 1, 4-9, 11): OpenCLIP ViT-H-14 ``laion2b_s32b_b79k``, 100 * cos(image, raw prompt)
  (the authors' ``evaluation.py``: no 2.5 weight, no clamp at 0, no prompt prefix).
- **Non-spatial** (T2I-CompBench): OpenAI ViT-B/32, the raw cosine (``scale=1``).

``dptlib.metrics.clip_score`` (the toy tables) clamps at 0 as CLIPScore does; the two agree
wherever the cosine is positive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..data import open_clip_embedder, to_model_images


class ClipScore:
    """``score(images, items)``: ``items`` has one row per image with its ``prompt`` (and the
    pairing columns); adds ``column`` = ``scale`` * cos(image, prompt) and ``grader``.
    ``embed(images (N, 3, H, W) in [-1, 1], texts) -> (image_emb, text_emb)``, normalised:
    :func:`dptlib.data.clip_embedder` of any CLIP."""

    def __init__(self, embed, name: str, column: str = "CLIP", scale: float = 100.0):
        self.embed, self.name, self.column, self.scale = embed, name, column, scale

    @classmethod
    def from_spec(cls, spec: str = "open_clip:ViT-H-14:laion2b_s32b_b79k", device: str = "cpu", **kwargs) -> ClipScore:
        """From ``open_clip:<architecture>:<checkpoint file or cached tag>`` (no download)."""
        return cls(open_clip_embedder(spec, device), name=spec.split(":", 1)[1], **kwargs)

    def pair_scores(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> np.ndarray:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
        image_emb, text_emb = self.embed(to_model_images(np.stack(images)), list(prompts))
        return (self.scale * (image_emb * text_emb).sum(-1)).float().cpu().numpy()

    def score(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        scores = self.pair_scores(images, list(items["prompt"]))
        return items.reset_index(drop=True).assign(**{self.column: scores}, grader=self.name)

    def summarize(self, table: pd.DataFrame) -> dict[str, float]:
        return {self.column: float(table[self.column].mean())}
