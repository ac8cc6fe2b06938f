"""Discrimination data (App. B.1): one split of images, captions, referring expressions and hard
negatives; the septuples a training step draws from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dptlib.config import progress_bars
from dptlib.data.coco import read_coco_captions, read_refexp
from dptlib.data.images import IMAGE_STORAGE, ImageFiles, Uint8Images, _read_image, concat_images, select_images, to_model_images


@dataclass
class DiscriminationData:
    """One split of the combined ITM + REC data.

    ``images`` (N, 3, H, W) in [-1, 1]; the first ``n_captioned`` own captions, any after them
    are negative-only images (e.g. the toy world's edited scenes). ``captions``: every text, flat,
    with ``caption_image`` (C,) its image, ``-1`` for negative-only texts, which come after every
    image's own captions. Expressions with ``expression_image`` (R,) and ``expression_box`` (R, 4)
    as normalised (cx, cy, w, h). Hard negatives: ``hard_captions`` (n_captioned, k_c) for each
    captioned image, ``hard_images`` (C_own, k_i) for each own caption (indices).

    ``is_negative(image, caption) -> bool`` says whether a caption is *false* of an image. COCO
    has no such oracle and App. B.1 takes every caption of another image as a negative (None);
    the toy world checks each candidate exactly (:mod:`dptlib.toy.data`). ``caption_complete``
    (C,) marks captions that describe their image completely, the positives of the ITM test
    where the data know them. ``hard_caption_kind`` / ``hard_image_kind`` name where each hard
    negative came from ("mined", or the edit that made it), parallel to the index tensors.
    """

    images: torch.Tensor
    captions: list[str]
    caption_image: torch.Tensor
    expressions: list[str]
    expression_image: torch.Tensor
    expression_box: torch.Tensor
    hard_captions: torch.Tensor | None = None
    hard_images: torch.Tensor | None = None
    n_captioned: int | None = None
    is_negative: Callable[[int, int], bool] | None = None
    caption_complete: torch.Tensor | None = None
    hard_caption_kind: list[list[str]] | None = None
    hard_image_kind: list[list[str]] | None = None

    def __post_init__(self) -> None:
        if self.n_captioned is None:
            self.n_captioned = len(self.images)
        owned = (self.caption_image >= 0).numpy()
        if owned.any() and not owned[: int(owned.sum())].all():
            raise ValueError("an image's own captions must come before the negative-only texts (caption_image = -1)")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_own_captions(self) -> int:
        """Captions that belong to an image (the first ones); the rest are negative-only texts."""
        return int((self.caption_image >= 0).sum())

    def object_boxes(self) -> dict[int, torch.Tensor]:
        """Per image, the distinct boxes (K, 4) of its referred objects: the ground-truth object
        proposals crop-based REC evaluations choose among."""

        out: dict[int, list] = {}
        for image, box in zip(self.expression_image.tolist(), self.expression_box):
            boxes = out.setdefault(image, [])
            if not any(torch.allclose(box, b) for b in boxes):
                boxes.append(box)
        return {k: torch.stack(v) for k, v in out.items()}

    def negative(self, image: int, caption: int) -> bool:
        """Whether ``caption`` may serve as a negative of ``image``: not one of its own captions,
        and false of it where the data can tell (``is_negative``)."""
        if int(self.caption_image[caption]) == image:
            return False
        return True if self.is_negative is None else bool(self.is_negative(image, caption))



def load_discrimination_data(captions_json, refexp_json, image_root, limit: int | None = None,
                             image_size: int | None = None, referred_only: bool = False,
                             storage: str = "float32") -> DiscriminationData:
    """Read a COCO-captions file, an MDETR refexp file (None: no expressions) and their images into one split.

    Images without captions are dropped; expressions whose image is not in the captions file too.
    ``referred_only`` keeps only the images some expression refers to (RefCOCO's share of COCO's
    train2014 captions), ``limit`` then the first images only. ``image_size`` resizes every image to a square of that
    side (boxes are kept in normalised coordinates, so they stay right); None keeps the first
    image's size and resizes the others to it. ``storage`` says how the images are held:
    "float32" a tensor (N, 3, S, S), 3 MB per image at S = 512; "uint8" (:class:`Uint8Images`) a
    quarter of that; "lazy" (:class:`ImageFiles`) only their paths, each decoded when indexed.
    Every storage gives the same float images when indexed (and the same :func:`fingerprint`).
    """
    if storage not in IMAGE_STORAGE:
        raise ValueError(f"storage must be one of {', '.join(IMAGE_STORAGE)}; got {storage!r}")

    references = read_refexp(refexp_json) if refexp_json is not None else []  # None: an ITM-only split
    captioned = read_coco_captions(captions_json)
    if referred_only:
        referred = {ref.image_id for ref in references}
        captioned = [img for img in captioned if img.image_id in referred]
    captioned = captioned[:limit]
    index = {img.image_id: i for i, img in enumerate(captioned)}
    size = (image_size, image_size) if image_size else None
    paths = [Path(image_root) / img.file_name for img in captioned]
    if storage == "lazy":
        size = size or _read_image(paths[0], None).shape[:2]
        images = ImageFiles(paths, *size)
    else:
        pixels = []
        for path in tqdm(paths, desc="images", disable=not progress_bars(len(paths) >= 1000), mininterval=10):
            pixels.append(_read_image(path, size))
            size = size or pixels[0].shape[:2]
        images = Uint8Images(np.stack(pixels)) if storage == "uint8" else to_model_images(np.stack(pixels))
    captions = [c for img in captioned for c in img.captions]
    caption_image = torch.tensor([i for i, img in enumerate(captioned) for _ in img.captions])
    expressions, expression_image, boxes = [], [], []
    for ref in references:
        if ref.image_id not in index:
            continue
        x, y, w, h = ref.box
        expressions.append(ref.expression)
        expression_image.append(index[ref.image_id])
        boxes.append([(x + w / 2) / ref.width, (y + h / 2) / ref.height, w / ref.width, h / ref.height])
    return DiscriminationData(images, captions, caption_image, expressions, torch.tensor(expression_image),
                              torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))



def _ranked_negatives(similarity, accept, k: int, key=None, rows_per_sort: int = 256) -> list[list[int]]:
    """For each row of ``similarity`` (Q, K), the first ``k`` columns in order of decreasing
    similarity that ``accept(row, column)`` lets through, no two with the same ``key(column)``;
    equal similarities in column order (a stable sort, not ``topk``'s unspecified order).
    Raises if a row has fewer than ``k``."""

    out = []
    for start in range(0, len(similarity), rows_per_sort):
        order = torch.sort(-similarity[start : start + rows_per_sort], dim=1, stable=True).indices
        for offset, columns in enumerate(order.tolist()):
            row, found, seen = start + offset, [], set()
            for column in columns:
                name = column if key is None else key(column)
                if name not in seen and accept(row, column):
                    found.append(column)
                    seen.add(name)
                    if len(found) == k:
                        break
            if len(found) < k:
                raise ValueError(f"query {row} has only {len(found)} acceptable negatives, {k} asked")
            out.append(found)
    return out



def mine_hard_negatives(image_embeddings, caption_embeddings, caption_image, k_captions: int = 20, k_images: int = 4,
                        is_negative=None, captions: list[str] | None = None):
    """Top-k negatives by CLIP similarity (App. B.1, footnote 4): for each image the ``k_captions``
    most similar captions of *other* images, for each caption the ``k_images`` most similar other
    images. image_embeddings (N, D), caption_embeddings (C, D), both normalised; caption_image (C,).

    ``is_negative(image, caption) -> bool``, if given, drops candidates that are in fact true of
    the image (the toy world's oracle; App. B.1 assumes none are). With ``captions`` (the C
    texts) an image's negatives are distinct texts. Ties in similarity go to the lower index.
    Returns (hard_captions (N, k_c), hard_images (C, k_i)) as indices."""

    owner = caption_image.tolist()

    def caption_ok(image, caption):
        return owner[caption] != image and (is_negative is None or is_negative(image, caption))

    def image_ok(caption, image):
        return owner[caption] != image and (is_negative is None or is_negative(image, caption))

    similarity = image_embeddings @ caption_embeddings.T  # (N, C)
    hard_captions = _ranked_negatives(similarity, caption_ok, k_captions, captions.__getitem__ if captions else None)
    hard_images = _ranked_negatives(similarity.T, image_ok, k_images)
    return torch.tensor(hard_captions, dtype=torch.long), torch.tensor(hard_images, dtype=torch.long)



@dataclass
class Septuple:
    """Indices of one training instance (x, y', y, y_neg, x_neg, y_rand, x_rand) and y''s box."""

    image: int
    expression: int
    caption: int
    hard_caption: int
    hard_image: int
    random_caption: int
    random_image: int



def sample_septuple(data: DiscriminationData, rng, max_tries: int = 1000) -> Septuple:
    """App. B.1's sampling: 1) an expression y' and its image x, 2) a caption y of x, 3) y_neg from
    x's mined captions, 4) x_neg from y's mined images, 5) a random caption of another image that
    is false of x, and a random other captioned image of which y is false."""

    if data.hard_captions is None or data.hard_images is None:
        raise ValueError("mine hard negatives first (mine_hard_negatives)")
    expression = int(rng.integers(len(data.expressions)))
    image = int(data.expression_image[expression])
    own = np.flatnonzero(data.caption_image.numpy() == image)
    caption = int(rng.choice(own))
    hard_caption = int(data.hard_captions[image, int(rng.integers(data.hard_captions.shape[1]))])
    hard_image = int(data.hard_images[caption, int(rng.integers(data.hard_images.shape[1]))])
    for _ in range(max_tries):
        random_image = int(rng.integers(data.n_captioned))
        if random_image not in (image, hard_image) and data.negative(random_image, caption):
            break
    else:
        raise ValueError(f"no random negative image found for caption {caption} in {max_tries} draws")
    for _ in range(max_tries):
        random_caption = int(rng.integers(data.n_own_captions))
        if random_caption != hard_caption and data.negative(image, random_caption):
            break
    else:
        raise ValueError(f"no random negative caption found for image {image} in {max_tries} draws")
    return Septuple(image, expression, caption, hard_caption, hard_image, random_caption, random_image)



def prepare_discrimination_data(captions_json, refexp_json, image_root, embed, limit: int | None = None,
                                k_captions: int = 20, k_images: int = 4, is_negative=None,
                                image_size: int | None = None, referred_only: bool = False,
                                storage: str = "float32") -> DiscriminationData:
    """Load a split and mine its hard negatives with a CLIP (``embed`` from :func:`clip_embedder`).

    ``is_negative(image, caption) -> bool`` is the optional truth filter of
    :func:`mine_hard_negatives` (and of the septuples' random negatives)."""
    data = load_discrimination_data(captions_json, refexp_json, image_root, limit, image_size, referred_only, storage)
    image_emb, caption_emb = embed(data.images, data.captions)
    data.hard_captions, data.hard_images = mine_hard_negatives(image_emb, caption_emb, data.caption_image, k_captions, k_images,
                                                               is_negative, data.captions)
    data.is_negative = is_negative
    return data



def shuffled_pairs(data: DiscriminationData, seed: int = 0) -> DiscriminationData:
    """The negative control's data: every image, captioned or negative-only, is replaced by
    another one (a seeded single cycle, so none keeps its own), while captions, expressions,
    boxes and negatives stay where they were. No displayed image is related to any text any
    more, hard negative images included (were they left in place, the edited images of a
    caption's own scene would teach the adapter to prefer images that do *not* match)."""
    order = np.random.default_rng([seed, 23]).permutation(len(data.images))
    source = np.empty(len(order), dtype=np.int64)
    source[order] = np.roll(order, -1)  # image order[i] now shows image order[i + 1]
    return replace(data, images=select_images(data.images, torch.from_numpy(source)))



def fingerprint(data: DiscriminationData) -> str:
    """A sha256 of what a run learns from (images, texts, boxes, negatives): two splits with the
    same fingerprint train the same way, whatever code or files produced them."""
    digest = hashlib.sha256()
    for start in range(0, len(data.images), 256):  # in chunks: the same bytes as the whole float tensor's
        digest.update(data.images[start : start + 256].detach().cpu().contiguous().numpy().tobytes())
    for tensor in (data.caption_image, data.expression_image, data.expression_box, data.hard_captions, data.hard_images):
        if tensor is not None:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update("\n".join(data.captions + ["|"] + data.expressions).encode())
    return digest.hexdigest()



def join_tasks(itm: DiscriminationData, rec: DiscriminationData) -> DiscriminationData:
    """One split whose ITM queries use ``itm``'s images and captions (with their mined negatives)
    and whose REC queries use ``rec``'s images and expressions: ``itm``'s images come first and
    are the captioned ones (``n_captioned``); ``rec``'s follow, without captions, so no ITM query
    or negative reaches them."""
    if itm.n_own_captions != len(itm.captions):
        raise ValueError("the ITM part must hold its images' own captions only")
    offset = len(itm)
    return DiscriminationData(
        images=concat_images(itm.images, rec.images), captions=list(itm.captions), caption_image=itm.caption_image.clone(),
        expressions=list(rec.expressions), expression_image=rec.expression_image + offset, expression_box=rec.expression_box.clone(),
        hard_captions=itm.hard_captions, hard_images=itm.hard_images, n_captioned=itm.n_captioned, is_negative=itm.is_negative)

