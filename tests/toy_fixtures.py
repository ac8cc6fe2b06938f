"""Shared helpers of the tests (not a test module): a stand-in CLIP and small toy splits."""

from pathlib import Path

import torch


def stand_in_embed(images, texts):
    """A deterministic stand-in for CLIP: random but fixed projections of the pixels, and a random
    but fixed vector per text position. It ranks candidates arbitrarily, so mined "negatives"
    include captions that are in fact true of their image: what the truth filter must remove."""
    images = None if images is None else images[: len(images)]  # a tensor, or a store of images as one (as CLIP batches read it)
    g = torch.Generator().manual_seed(0)
    projection = torch.randn(images[0].numel() if images is not None else 1, 8, generator=g)
    image_emb = None if images is None else torch.nn.functional.normalize(images.flatten(1) @ projection, dim=-1)
    text_emb = None if texts is None else torch.nn.functional.normalize(torch.randn(len(texts), 8, generator=g), dim=-1)
    return image_emb, text_emb


def small_toy_split(root: Path, n: int, k_captions: int = 8, k_images: int = 4, seed: int = 0):
    """(world, exported paths, data): ``n`` toy training scenes through :func:`dptlib.toy.data.toy_split`."""
    from dptlib.toy.data import toy_split
    from dptlib.toy.world import ToyWorld, ToyWorldConfig, export_world

    world = ToyWorld(ToyWorldConfig())
    paths = export_world(world, root, splits=("train",), n=n)["train"]
    return world, paths, toy_split(world, paths, stand_in_embed, k_captions=k_captions, k_images=k_images, seed=seed)
