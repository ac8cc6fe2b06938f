"""CLIP scores as the paper and T2I-CompBench compute them.

- **CLIP** (Tab. 1, 4-9, 11): OpenCLIP ViT-H-14 ``laion2b_s32b_b79k``, 100 * cos(image, raw prompt)
  (the authors' ``evaluation.py``: no 2.5 weight, no clamp at 0, no prompt prefix).
- **Non-spatial** (T2I-CompBench): OpenAI ViT-B/32, the raw cosine, x 100 as the paper prints
  T2I-CompBench; OpenAI's weights need QuickGELU (``ViT-B-32-quickgelu``: a spec naming OpenAI
  weights with a GELU architecture is refused). In 3-in-1 the prompt loses its adjectives first
  (``text=``: :func:`dptlib.evaluation.graders.text.without_adjectives`), as the benchmark's ``--complex``.

Images go through open_clip's own preprocessing (PIL: resize the short side, bicubic, centre crop,
normalise), the transform the authors' ``evaluation.py`` and OpenAI's ``clip.load`` apply.
``dptlib.evaluation.metrics.clip_score`` (the toy tables) clamps at 0 as CLIPScore does; the two agree
wherever the cosine is positive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import open_clip
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

OPENAI_ARCHITECTURES = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336")


def check_activation(architecture: str, checkpoint: str) -> None:
    """One-line error where OpenAI's weights would run through a GELU model (they were trained
    with QuickGELU; open_clip builds ``ViT-B-32`` with GELU and ``ViT-B-32-quickgelu`` with QuickGELU)."""
    if architecture in OPENAI_ARCHITECTURES and "openai" in checkpoint.lower():
        raise ValueError(f"open_clip:{architecture}:{checkpoint}: OpenAI's CLIP weights need QuickGELU; "
                         f"write open_clip:{architecture}-quickgelu:{checkpoint}")


def open_clip_scorer(model, preprocess, tokenizer, device: str | torch.device = "cpu"):
    """``embed(images, texts) -> (image_emb, text_emb)``, L2-normalised, of images (uint8 (H, W, 3)
    arrays or PIL images, which keep their mode: open_clip converts to RGB after its resize) through
    open_clip's ``preprocess`` (a PIL transform) and its ``tokenizer``."""

    @torch.no_grad()
    def embed(images: Sequence[np.ndarray | Image.Image], texts: Sequence[str]):
        pictures = [image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image)) for image in images]
        pixels = torch.stack([preprocess(picture) for picture in pictures]).to(device)
        image_emb = F.normalize(model.encode_image(pixels).float(), dim=-1)
        text_emb = F.normalize(model.encode_text(tokenizer(list(texts)).to(device)).float(), dim=-1)
        return image_emb, text_emb

    return embed


class ClipScore:
    """``score(images, items)``: ``items`` has one row per image with its ``prompt`` (and the
    pairing columns); adds ``column`` = ``scale`` * cos(image, text(prompt)) and ``grader``.
    ``embed(images: list of uint8 (H, W, 3), texts) -> (image_emb, text_emb)``, normalised
    (:func:`open_clip_scorer`); ``text``: what is scored of the prompt (None: the prompt itself)."""

    def __init__(self, embed, name: str, column: str = "CLIP", scale: float = 100.0, text: Callable[[str], str] | None = None,
                 batch_size: int = 64):
        self.embed, self.name, self.column, self.scale, self.text, self.batch_size = embed, name, column, scale, text, batch_size

    @classmethod
    def from_spec(cls, spec: str = "open_clip:ViT-H-14:laion2b_s32b_b79k", device: str = "cpu", **kwargs) -> ClipScore:
        """From ``open_clip:<architecture>:<checkpoint file or cached tag>`` (no download), with
        open_clip's own preprocessing of that model."""
        kind, _, rest = spec.partition(":")
        architecture, _, checkpoint = rest.partition(":")
        if kind != "open_clip" or not architecture or not checkpoint:
            raise ValueError(f"a CLIP grader is 'open_clip:<architecture>:<checkpoint>', got {spec!r}")
        check_activation(architecture, checkpoint)
        model, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=checkpoint, device=device)
        embed = open_clip_scorer(model.eval(), preprocess, open_clip.get_tokenizer(architecture), device)
        return cls(embed, name=rest, **kwargs)

    def pair_scores(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> np.ndarray:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
        texts = [self.text(p) for p in prompts] if self.text else list(prompts)
        out = []
        for i in range(0, len(texts), self.batch_size):
            image_emb, text_emb = self.embed(list(images[i : i + self.batch_size]), texts[i : i + self.batch_size])
            out.append((self.scale * (image_emb * text_emb).sum(-1)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def score(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        scores = self.pair_scores(images, list(items["prompt"]))
        return items.reset_index(drop=True).assign(**{self.column: scores}, grader=self.name)

    def summarize(self, table: pd.DataFrame) -> dict[str, float]:
        return {self.column: float(table[self.column].mean())}
