"""Data: readers for the real annotation formats (MS-COCO captions, MDETR's RefCOCO/+/g).

The toy world exports itself in exactly these formats (:func:`dptlib.toyworld.export_world`), so the
readers below serve both worlds unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


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

    images (N, 3, H, W) in [-1, 1]; captions: every caption, flat, with ``caption_image`` (C,) its
    image; expressions with ``expression_image`` (R,) and ``expression_box`` (R, 4) as normalised
    (cx, cy, w, h); ``hard_captions`` (N, k_c) and ``hard_images`` (C, k_i): mined negatives.
    """

    images: "torch.Tensor"
    captions: list[str]
    caption_image: "torch.Tensor"
    expressions: list[str]
    expression_image: "torch.Tensor"
    expression_box: "torch.Tensor"
    hard_captions: "torch.Tensor | None" = None
    hard_images: "torch.Tensor | None" = None

    def __len__(self) -> int:
        return len(self.images)


def load_discrimination_data(captions_json, refexp_json, image_root, limit: int | None = None) -> DiscriminationData:
    """Read a COCO-captions file, an MDETR refexp file and their images into one split.

    Images without captions are dropped; expressions whose image is not in the captions file too.
    ``limit`` keeps the first images only (smoke runs).
    """
    import numpy as np
    import torch
    from PIL import Image

    captioned = read_coco_captions(captions_json)[:limit]
    index = {img.image_id: i for i, img in enumerate(captioned)}
    size = None
    pixels = []
    for img in captioned:
        rgb = np.asarray(Image.open(Path(image_root) / img.file_name).convert("RGB"))
        if size is None:
            size = rgb.shape[:2]
        elif rgb.shape[:2] != size:  # real COCO images vary: resize to the first one's size
            rgb = np.asarray(Image.open(Path(image_root) / img.file_name).convert("RGB").resize(size[::-1]))
        pixels.append(rgb)
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1
    captions = [c for img in captioned for c in img.captions]
    caption_image = torch.tensor([i for i, img in enumerate(captioned) for _ in img.captions])
    expressions, expression_image, boxes = [], [], []
    for ref in read_refexp(refexp_json):
        if ref.image_id not in index:
            continue
        x, y, w, h = ref.box
        expressions.append(ref.expression)
        expression_image.append(index[ref.image_id])
        boxes.append([(x + w / 2) / ref.width, (y + h / 2) / ref.height, w / ref.width, h / ref.height])
    return DiscriminationData(images, captions, caption_image, expressions, torch.tensor(expression_image),
                              torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))


def mine_hard_negatives(image_embeddings, caption_embeddings, caption_image, k_captions: int = 20, k_images: int = 4):
    """Top-k negatives by CLIP similarity (App. B.1, footnote 4): for each image the ``k_captions``
    most similar captions of *other* images, for each caption the ``k_images`` most similar other
    images. image_embeddings (N, D), caption_embeddings (C, D), both normalised; caption_image (C,).
    Returns (hard_captions (N, k_c), hard_images (C, k_i)) as indices."""
    import torch

    similarity = image_embeddings @ caption_embeddings.T  # (N, C)
    own = caption_image[None, :] == torch.arange(len(image_embeddings))[:, None]  # (N, C)
    similarity = similarity.masked_fill(own, -torch.inf)
    hard_captions = similarity.topk(min(k_captions, similarity.shape[1] - int(own.sum(1).max())), dim=1).indices
    hard_images = similarity.T.topk(min(k_images, len(image_embeddings) - 1), dim=1).indices
    return hard_captions, hard_images


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


def sample_septuple(data: DiscriminationData, rng) -> Septuple:
    """App. B.1's sampling: 1) an expression y' and its image x, 2) a caption y of x, 3) y_neg from
    x's mined captions, 4) x_neg from y's mined images, 5) a random other caption and image."""
    import numpy as np

    if data.hard_captions is None or data.hard_images is None:
        raise ValueError("mine hard negatives first (mine_hard_negatives)")
    expression = int(rng.integers(len(data.expressions)))
    image = int(data.expression_image[expression])
    own = np.flatnonzero(data.caption_image.numpy() == image)
    caption = int(rng.choice(own))
    hard_caption = int(data.hard_captions[image, int(rng.integers(data.hard_captions.shape[1]))])
    hard_image = int(data.hard_images[caption, int(rng.integers(data.hard_images.shape[1]))])
    while True:
        random_image = int(rng.integers(len(data)))
        if random_image not in (image, hard_image):
            break
    while True:
        random_caption = int(rng.integers(len(data.captions)))
        if int(data.caption_image[random_caption]) != image and random_caption != hard_caption:
            break
    return Septuple(image, expression, caption, hard_caption, hard_image, random_caption, random_image)


def clip_embedder(model, tokenizer, image_transform=None, batch: int = 256):
    """``embed(images, texts) -> (image_emb, text_emb)``, normalised, for any open_clip model.

    ``tokenizer`` is open_clip's (returns ids) or a Hugging Face tokenizer (the toy evaluator's);
    ``image_transform`` maps (B, 3, H, W) in [-1, 1] to the model's input (e.g. resize to 224 and
    CLIP-normalise for OpenCLIP ViT-H-14; the toy evaluator takes the images as they are)."""
    import torch
    import torch.nn.functional as F

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
                                k_captions: int = 20, k_images: int = 4) -> DiscriminationData:
    """Load a split and mine its hard negatives with a CLIP (``embed`` from :func:`clip_embedder`)."""
    data = load_discrimination_data(captions_json, refexp_json, image_root, limit)
    image_emb, caption_emb = embed(data.images, data.captions)
    data.hard_captions, data.hard_images = mine_hard_negatives(image_emb, caption_emb, data.caption_image, k_captions, k_images)
    return data


def toy_discrimination_data(out_dir: str | Path, n_train: int, n_test: int, seed: int = 0, evaluator_dir=None):
    """The toy world's ITM / REC data as a COCO / RefCOCO user would have them: exported in the
    real formats under ``out_dir``, read back by the readers above, hard negatives mined with the
    evaluator CLIP. Returns ``(train, test, embed)`` with ``embed`` the evaluator's
    :func:`clip_embedder`; ``n_test = 0`` skips the test split (``test`` is None)."""
    from .toymodel import EVALUATOR_DIR, load_evaluator
    from .toyworld import ToyWorld, ToyWorldConfig, export_world

    paths = export_world(ToyWorld(ToyWorldConfig(seed=seed)), out_dir, splits=("train", "test"), n=max(n_train, n_test))
    evaluator, tokenizer = load_evaluator(evaluator_dir or EVALUATOR_DIR)
    embed = clip_embedder(evaluator, tokenizer)
    splits = [prepare_discrimination_data(paths[s]["captions"], paths[s]["refexp"], paths[s]["images"], embed, limit=n) if n else None
              for s, n in (("train", n_train), ("test", n_test))]
    return splits[0], splits[1], embed
