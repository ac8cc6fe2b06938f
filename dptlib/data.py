"""Data: readers for the real annotation formats (MS-COCO captions, MDETR's RefCOCO/+/g).

The toy world exports itself in exactly these formats (:func:`dptlib.toy.world.export_world`), so the
readers below serve both worlds unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from tqdm.auto import tqdm

from .config import progress_bars


@dataclass
class CaptionedImage:
    """One image of a COCO-captions file with all its captions."""

    image_id: int
    file_name: str
    width: int
    height: int
    captions: list[str] = field(default_factory=list)


@dataclass
class ReferringExpression:
    """One (image, expression, box) triple; ``box`` = (x, y, w, h) in pixels as in COCO."""

    image_id: int
    file_name: str
    width: int
    height: int
    expression: str
    box: tuple[float, float, float, float]


def read_coco_captions(path: str | Path) -> list[CaptionedImage]:
    """Read a COCO captions JSON (``captions_train2014.json`` and the like), images in file order.

    Raises ``ValueError`` when a caption names an image the file does not list.
    """
    data = json.loads(Path(path).read_text())
    images = {
        img["id"]: CaptionedImage(img["id"], img["file_name"], img["width"], img["height"]) for img in data["images"]
    }
    for ann in data["annotations"]:
        if ann["image_id"] not in images:
            raise ValueError(f"{path}: caption {ann.get('id')} refers to unknown image {ann['image_id']}")
        images[ann["image_id"]].captions.append(ann["caption"].strip())
    return list(images.values())


def read_refexp(path: str | Path) -> list[ReferringExpression]:
    """Read an MDETR-format referring-expression file (``final_refcoco_train.json``, ...).

    MDETR lists one "image" entry per expression (``caption`` holds the expression,
    ``original_id`` the COCO image id) and one box annotation per entry.
    """
    data = json.loads(Path(path).read_text())
    boxes = {}
    for ann in data["annotations"]:
        if ann["image_id"] in boxes:
            raise ValueError(f"{path}: expression {ann['image_id']} has more than one box")
        boxes[ann["image_id"]] = tuple(float(v) for v in ann["bbox"])
    out = []
    for img in data["images"]:
        if img["id"] not in boxes:
            raise ValueError(f"{path}: expression {img['id']} ({img['caption']!r}) has no box")
        out.append(
            ReferringExpression(
                img.get("original_id", img["id"]), img["file_name"], img["width"], img["height"], img["caption"],
                boxes[img["id"]],
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Discrimination data: images, captions, referring expressions, hard negatives (App. B.1)
# --------------------------------------------------------------------------------------------
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


def clip_embedder(model, tokenizer, image_transform=None, batch: int = 256):
    """``embed(images, texts) -> (image_emb, text_emb)``, normalised, for any open_clip model.

    ``tokenizer`` is open_clip's (returns ids) or a Hugging Face tokenizer (the toy evaluator's);
    ``image_transform`` maps (B, 3, H, W) in [-1, 1] to the model's input (e.g. resize to 224 and
    CLIP-normalise for OpenCLIP ViT-H-14; the toy evaluator takes the images as they are)."""

    def ids(texts):
        if hasattr(tokenizer, "model_max_length"):
            return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids
        return tokenizer(texts)

    @torch.no_grad()
    def embed(images, texts):
        image_emb = torch.cat([
            F.normalize(model.encode_image(image_transform(images[i : i + batch]) if image_transform else images[i : i + batch]), dim=-1)
            for i in range(0, len(images), batch)
        ]) if images is not None else None
        text_emb = torch.cat([F.normalize(model.encode_text(ids(texts[i : i + batch])), dim=-1) for i in range(0, len(texts), batch)]) \
            if texts is not None else None
        return image_emb, text_emb

    return embed


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


# --------------------------------------------------------------------------------------------
# Real data from local folders: a manifest of splits, and an OpenCLIP evaluator
# --------------------------------------------------------------------------------------------
MANIFEST_KEYS = ("captions", "refexp", "images")  # and optionally referred_only: true
TEST_PARTS = {"itm": ("captions", "images"), "rec": MANIFEST_KEYS}  # a split whose two tasks use two image sets


def _manifest_entry(path: Path, label: str, entry: dict, keys: tuple[str, ...]) -> dict:
    missing = [k for k in keys if k not in (entry or {})]
    if missing:
        raise ValueError(f"{path}: {label} lacks {missing}")
    parsed = {k: (path.parent / entry[k]).resolve() for k in keys}
    absent = [str(p) for p in parsed.values() if not p.exists()]
    if absent:
        raise FileNotFoundError(f"{path}: {label} names files that do not exist: {absent}")
    parsed["referred_only"] = bool(entry.get("referred_only", False))
    return parsed


def read_manifest(path: str | Path) -> dict[str, dict]:
    """A data manifest (YAML): per split, the COCO captions file, the MDETR refexp file and the
    image folder, relative paths read from the manifest's folder, and ``referred_only`` (keep
    only the images an expression refers to; see :func:`load_discrimination_data`)::

        train: {captions: annotations/captions_train2014.json, refexp: mdetr_annotations/final_refcoco_train.json,
                images: train2014, referred_only: true}
        val:   {...}
        test:  {...}

    A split may instead name its two tasks' image sets apart, as the paper tests (ITM on MS-COCO
    val2014, REC on RefCOCO testA): ``test: {itm: {captions: ..., images: ...}, rec: {captions:
    ..., refexp: ..., images: ..., referred_only: true}}``; such a split reads as
    ``{"itm": {...}, "rec": {...}}`` (:func:`manifest_splits` joins them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data manifest at {path} (a YAML file naming each split's {list(MANIFEST_KEYS)})")
    manifest = yaml.safe_load(path.read_text()) or {}
    splits = {}
    for split, entry in manifest.items():
        if isinstance(entry, dict) and set(entry) & set(TEST_PARTS):
            if set(entry) != set(TEST_PARTS):
                raise ValueError(f"{path}: split {split!r} names its tasks apart: it needs exactly {sorted(TEST_PARTS)}, got {sorted(entry)}")
            splits[split] = {part: _manifest_entry(path, f"split {split!r}, {part}", entry[part], keys) for part, keys in TEST_PARTS.items()}
        else:
            splits[split] = _manifest_entry(path, f"split {split!r}", entry, MANIFEST_KEYS)
    return splits


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


def manifest_splits(manifest: str | Path, embed, sizes: dict[str, int | None], image_size: int | None = None,
                    k_captions: int = 20, k_images: int = 4, storage: str = "uint8") -> dict[str, DiscriminationData]:
    """The splits of ``sizes`` (split -> images, None: all) read from a data manifest
    (:func:`read_manifest`), hard negatives mined with ``embed`` as App. B.1 does (no truth
    filter: the real data have no oracle). Images are held as uint8 by default (``storage``:
    see :func:`load_discrimination_data`)."""
    if storage not in IMAGE_STORAGE:
        raise ValueError(f"storage must be one of {', '.join(IMAGE_STORAGE)}; got {storage!r}")
    paths = read_manifest(manifest)
    unknown = sorted(set(sizes) - set(paths))
    if unknown:
        raise ValueError(f"{manifest} has no split(s) {unknown}; it has {sorted(paths)}")
    splits = {}
    for split, n in sizes.items():
        entry = paths[split]
        if "itm" in entry:  # ITM and REC on two image sets (the paper's test): the ITM part mined alone, then joined
            itm = prepare_discrimination_data(entry["itm"]["captions"], None, entry["itm"]["images"], embed, limit=n,
                                              k_captions=k_captions, k_images=k_images, image_size=image_size, storage=storage)
            side = image_size or itm.images.shape[-1]
            rec = load_discrimination_data(entry["rec"]["captions"], entry["rec"]["refexp"], entry["rec"]["images"], limit=n,
                                           image_size=side, referred_only=entry["rec"]["referred_only"], storage=storage)
            splits[split] = join_tasks(itm, rec)
        else:
            splits[split] = prepare_discrimination_data(entry["captions"], entry["refexp"], entry["images"], embed, limit=n,
                                                        k_captions=k_captions, k_images=k_images, image_size=image_size,
                                                        referred_only=entry["referred_only"], storage=storage)
    return splits


def open_clip_embedder(spec: str, device: str | torch.device = "cpu"):
    """:func:`clip_embedder` of an OpenCLIP model named ``"open_clip:<architecture>:<checkpoint>"``,
    e.g. ``open_clip:ViT-H-14:/models/open_clip_vit_h14.bin`` (the checkpoint a local file, or a
    tag such as ``laion2b_s32b_b79k`` that open_clip finds in its cache), with the model's own
    resize and normalisation."""
    import open_clip

    kind, _, rest = spec.partition(":")
    architecture, _, checkpoint = rest.partition(":")
    if kind != "open_clip" or not architecture or not checkpoint:
        raise ValueError(f"an evaluator is 'open_clip:<architecture>:<checkpoint>', got {spec!r}")
    model = open_clip.create_model(architecture, pretrained=checkpoint, device=device)
    size = model.visual.image_size if isinstance(model.visual.image_size, int) else model.visual.image_size[0]
    mean = torch.tensor(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)

    def transform(images):  # [-1, 1] (B, 3, H, W) -> the model's input
        resized = F.interpolate((images + 1) / 2, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        return ((resized - mean) / std).to(device)

    return clip_embedder(model.eval(), open_clip.get_tokenizer(architecture), transform)
