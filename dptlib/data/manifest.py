"""Real data from local folders: a manifest (YAML) of splits, each naming its COCO captions, MDETR
refexp file and image folder.
"""

from __future__ import annotations

from pathlib import Path

from dptlib.data.discrimination import DiscriminationData, join_tasks, load_discrimination_data, prepare_discrimination_data
from dptlib.data.images import IMAGE_STORAGE
from dptlib.files import MANIFEST, check_json_file, read_checked_yaml

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
    for key in ("captions", "refexp"):
        if key in parsed:
            check_json_file(parsed[key], f"{label}'s {key} file")
    if "images" in parsed and not parsed["images"].is_dir():
        raise ValueError(f"{path}: {label}'s images {parsed['images']} is not a folder")
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
    manifest = read_checked_yaml(path, MANIFEST, "data manifest")
    splits = {}
    for split, entry in manifest.items():
        if isinstance(entry, dict) and set(entry) & set(TEST_PARTS):
            if set(entry) != set(TEST_PARTS):
                raise ValueError(f"{path}: split {split!r} names its tasks apart: it needs exactly {sorted(TEST_PARTS)}, got {sorted(entry)}")
            splits[split] = {part: _manifest_entry(path, f"split {split!r}, {part}", entry[part], keys) for part, keys in TEST_PARTS.items()}
        else:
            splits[split] = _manifest_entry(path, f"split {split!r}", entry, MANIFEST_KEYS)
    return splits



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

