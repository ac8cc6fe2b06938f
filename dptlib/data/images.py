"""Images as the models take them, and stores that stand in for a float tensor without holding one
(uint8 arrays, or files decoded when indexed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_model_images(images) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]: what the VAE and the CLIPs take."""

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1



def to_uint8_images(images) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3): the inverse of :func:`to_model_images`."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()



IMAGE_STORAGE = ("float32", "uint8", "lazy")



class StoredImages:
    """Images that stand in for a float tensor (N, 3, H, W) in [-1, 1] without holding one: indexing
    (``images[i]`` -> (3, H, W), ``images[i:j]`` / ``images[index]`` -> (k, 3, H, W)) converts
    only what it returns. Subclasses say where the pixels live (:meth:`pixels`, uint8 (k, H, W, 3))."""

    def __init__(self, n: int, height: int, width: int):
        self.n, self.height, self.width = n, height, width

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n, 3, self.height, self.width)

    def pixels(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def subset(self, rows) -> StoredImages:
        raise NotImplementedError

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.ndim == 0):
            return to_model_images(self.pixels(self._rows([int(index)])))[0]
        return to_model_images(self.pixels(self._rows(index)))

    def _rows(self, index) -> np.ndarray:
        if isinstance(index, slice):
            return np.arange(self.n)[index]
        rows = np.asarray(index.cpu() if torch.is_tensor(index) else index, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < -self.n or rows.max() >= self.n):
            raise IndexError(f"image index out of range for {self.n} images")
        return rows % self.n if rows.size else rows



class Uint8Images(StoredImages):
    """Images kept as uint8 (N, H, W, 3): a quarter of float32's memory (RefCOCO train at 512 px:
    about 13 GB instead of 51)."""

    def __init__(self, pixels: np.ndarray):
        if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels (N, H, W, 3), got {pixels.dtype} {pixels.shape}")
        super().__init__(len(pixels), pixels.shape[1], pixels.shape[2])
        self.array = pixels

    def pixels(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]

    def subset(self, rows) -> Uint8Images:
        return Uint8Images(self.array[self._rows(rows)])



class ImageFiles(StoredImages):
    """Images decoded from their files when indexed, resized to (height, width): nothing held in
    memory but the paths."""

    def __init__(self, paths: list[Path], height: int, width: int):
        super().__init__(len(paths), height, width)
        self.paths = [Path(p) for p in paths]

    def pixels(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([_read_image(self.paths[r], (self.height, self.width)) for r in rows]) if len(rows) else \
            np.zeros((0, self.height, self.width, 3), np.uint8)

    def subset(self, rows) -> ImageFiles:
        return ImageFiles([self.paths[r] for r in self._rows(rows)], self.height, self.width)



def select_images(images, rows):
    """``images[rows]`` that stays in its storage: a tensor for a tensor, a store for a store."""
    return images.subset(rows) if isinstance(images, StoredImages) else images[rows]



def _read_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 (H, W, 3) of an image file, resized (bicubic) to ``size`` = (H, W) when it differs."""
    picture = Image.open(path).convert("RGB")
    if size is not None and picture.size[::-1] != tuple(size):  # real COCO images vary in size
        picture = picture.resize(size[::-1], Image.BICUBIC)
    return np.asarray(picture)



def concat_images(first, second):
    """Two image collections of one side as one, in their storage (tensors, uint8, or files)."""
    if first.shape[1:] != second.shape[1:]:
        raise ValueError(f"images of shapes {tuple(first.shape[1:])} and {tuple(second.shape[1:])} cannot be joined")
    if isinstance(first, Uint8Images) and isinstance(second, Uint8Images):
        return Uint8Images(np.concatenate([first.array, second.array]))
    if isinstance(first, ImageFiles) and isinstance(second, ImageFiles):
        return ImageFiles(first.paths + second.paths, first.height, first.width)
    if torch.is_tensor(first) and torch.is_tensor(second):
        return torch.cat([first, second])
    raise ValueError(f"cannot join images stored as {type(first).__name__} and {type(second).__name__}")

