"""BLIP-M and BLIP-C (Tab. 1, 4-9): BLIP-2's image-text matching head and its contrastive
similarity, as the paper reports them (x 100).

- **BLIP-M**: 100 * softmax(ITM logits)[:, 1], the matching head's probability that the text
  describes the image (``Salesforce/blip2-itm-vit-g``, ``Blip2ForImageTextRetrieval`` with
  ``use_image_text_matching_head=True``).
- **BLIP-C**: 100 * the largest cosine between the 32 query embeddings of the image and the text's
  [CLS] embedding (the model's ``logits_per_image`` without the matching head already takes that
  maximum); each image is scored against its own prompt only (the diagonal).

The processor must come from the model's own folder (it inserts the image tokens the model's
config expects).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch


class Blip2Match:
    """``score(images, items)``: ``items`` has one row per image with its ``prompt`` and the
    columns that pair it across methods; returns those rows with ``BLIP-M``, ``BLIP-C`` and
    ``grader``. ``summarize`` gives the means."""

    columns = ("BLIP-M", "BLIP-C")

    def __init__(self, model, processor, batch_size: int = 16, name: str = "blip2-itm"):
        self.model, self.processor, self.batch_size, self.name = model.eval(), processor, batch_size, name

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu", **kwargs) -> Blip2Match:
        from transformers import Blip2ForImageTextRetrieval, Blip2Processor  # deferred: heavy

        model = Blip2ForImageTextRetrieval.from_pretrained(folder, local_files_only=True).to(device)
        return cls(model, Blip2Processor.from_pretrained(folder, local_files_only=True), name=Path(str(folder)).name, **kwargs)

    @torch.no_grad()
    def pair_scores(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> np.ndarray:
        """(n, 2): BLIP-M and BLIP-C of each (image (H, W, 3) uint8, prompt) pair."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
        out = np.zeros((len(prompts), 2), dtype=np.float32)
        for i in range(0, len(prompts), self.batch_size):
            inputs = self.processor(images=list(images[i : i + self.batch_size]), text=list(prompts[i : i + self.batch_size]),
                                    padding=True, return_tensors="pt").to(self.model.device)
            itm = self.model(**inputs, use_image_text_matching_head=True).logits_per_image  # (b, 2)
            itc = self.model(**inputs, use_image_text_matching_head=False).logits_per_image  # (b, b): every image x text
            out[i : i + len(itm), 0] = 100 * itm.float().softmax(-1)[:, 1].cpu().numpy()
            out[i : i + len(itm), 1] = 100 * itc.float().diagonal().cpu().numpy()
        return out

    def score(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        if len(images) != len(items):
            raise ValueError(f"{len(images)} images for {len(items)} items")
        scores = self.pair_scores(images, list(items["prompt"]))
        return items.reset_index(drop=True).assign(**{c: scores[:, k] for k, c in enumerate(self.columns)}, grader=self.name)

    def summarize(self, table: pd.DataFrame) -> dict[str, float]:
        return {c: float(table[c].mean()) for c in self.columns}
