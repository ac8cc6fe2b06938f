"""Readers of the real annotation formats: MS-COCO captions and MDETR's RefCOCO/+/g.

The toy world exports itself in exactly these formats (:func:`dptlib.toy.world.export_world`), so
the readers serve both worlds unchanged.
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

