"""IS and FID as set metrics (Tab. 1 quality columns): torchmetrics' implementations.

The paper does not say which library; torchmetrics is used here, with what each number depends
on recorded beside it (images, splits, image size). Real runs pass the FID Inception weights as a
local file (``pt_inception-2015-12-05-6726825d.pth``; torchmetrics' default downloads them, and its
Inception needs the ``torch-fidelity`` package). FID on COCO-NSS1K compares with the 943 COCO
val2014 images the benchmark names: FID on so few images is biased high, so report the sizes.
Reference images are read as RGB whatever their mode (COCO has greyscale and CMYK JPEGs: PIL's
``convert("RGB")``, as pytorch-fid and torch-fidelity read them) and at their own sizes; the
Inception resizes each to 299 px (:meth:`InceptionSet._batches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class InceptionSet:
    """``compute(generated, real)``: FID between the two sets of uint8 (H, W, 3) images and the
    Inception Score of ``generated`` (mean and std over ``splits``), with the set sizes.
    ``fid_features``: a module mapping uint8 (B, 3, H, W) to (B, d) features; ``is_logits``: one
    mapping them to (B, classes) logits (tests pass tiny modules; :meth:`from_weights` the real
    Inception)."""

    def __init__(self, fid_features: torch.nn.Module, is_logits: torch.nn.Module, splits: int = 10, name: str = "inception",
                 seed: int = 0):
        self.fid_features, self.is_logits, self.splits, self.name, self.seed = fid_features, is_logits, splits, name, seed

    @classmethod
    def from_weights(cls, path: str | Path, **kwargs) -> InceptionSet:
        """The FID Inception (torchmetrics' ``NoTrainInceptionV3``) from a local weights file."""
        from torchmetrics.image.fid import NoTrainInceptionV3  # deferred: heavy

        def network(features: str):
            return NoTrainInceptionV3(name="inception-v3-compat", features_list=[features], feature_extractor_weights_path=str(path))

        return cls(network("2048"), network("logits_unbiased"), name=Path(path).name, **kwargs)

    @staticmethod
    def _batches(images: Sequence[np.ndarray], batch: int = 64):
        """uint8 (B, 3, H, W) batches of images of one size each, in order of first appearance: real
        reference images (COCO val2014) come at their own sizes, and each goes to the Inception as
        it is, which resizes it to 299 x 299 itself (torchmetrics' ``NoTrainInceptionV3``, the
        TF1-compatible bilinear resize of the original FID), as FID implementations expect."""
        by_size: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"image {i}: FID takes uint8 (H, W, 3) RGB images, got {image.dtype} {image.shape}")
            by_size.setdefault(image.shape, []).append(i)
        for indices in by_size.values():
            for k in range(0, len(indices), batch):
                part = [images[i] for i in indices[k : k + batch]]
                yield torch.from_numpy(np.stack(part)).permute(0, 3, 1, 2).contiguous()

    def compute(self, generated: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> dict:
        from torchmetrics.image.fid import FrechetInceptionDistance  # deferred: heavy
        from torchmetrics.image.inception import InceptionScore  # deferred: heavy

        fid = FrechetInceptionDistance(feature=self.fid_features)
        for x in self._batches(real):
            fid.update(x, real=True)
        for x in self._batches(generated):
            fid.update(x, real=False)
        inception = InceptionScore(feature=self.is_logits, splits=self.splits)
        for x in self._batches(generated):
            inception.update(x)
        torch.manual_seed(self.seed)  # IS shuffles the images before splitting them
        score, spread = inception.compute()
        return {"FID": float(fid.compute()), "IS": float(score), "IS std": float(spread), "generated images": len(generated),
                "real images": len(real), "IS splits": self.splits, "grader": self.name}
