"""The toy world's ITM / REC data, with negatives that are false by construction (App. B.1's role).

COCO's hard negatives are "the most similar captions of *other* images" (App. B.1): with five
free-form captions per image, a caption of another image is almost never true of this one. Toy
captions are templated and partial ("a red circle"), so many images share them, and that
assumption fails: mined that way, two in five toy "negatives" are true of their image. Here every
negative is checked exactly against the scene it is a negative of (:class:`SceneTruth`, the
oracle's rule on the scene's structured description), and the hard ones are *minimal edits*:

* image -> text (y_neg): a caption of the image with one thing changed (colours swapped between
  two objects, one colour or shape changed, count +- 1, size, relation or position flipped:
  :func:`dptlib.toy.model.hard_negatives`);
* text -> image (x_neg): the image with one thing changed (:func:`scene_edits`: an object
  recoloured or reshaped, two colours swapped, the layout mirrored or flipped, an object removed
  or added), rendered; kept for a caption only if the caption is false of it.

Half of each image's hard captions and of each caption's hard images are such edits; the rest
are mined with the evaluator CLIP as in App. B.1 and kept only if false. No edit uses a held-out
colour-shape pair, so the out-of-distribution prompts stay unseen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from dptlib.config import TOY_EVALUATOR_DIR
from dptlib.data.discrimination import DiscriminationData, load_discrimination_data, mine_hard_negatives
from dptlib.data.embedders import clip_embedder, load_evaluator
from dptlib.data.images import to_model_images
from dptlib.method.checkpoint import atomic_write_text, exclusive
from dptlib.toy.model import hard_negatives
from dptlib.toy.world import (
    PromptSpec,
    Scene,
    ToyObject,
    ToyWorld,
    ToyWorldConfig,
    export_paths,
    export_world,
    scene_from_dict,
    score_objects,
)

SCENE_EDIT_KINDS = ("colour change", "colour swap", "shape change", "mirror", "flip", "remove", "add")
EDIT_SHARE = 0.5  # part of the hard negatives that are edits; the rest are mined with CLIP


# --------------------------------------------------------------------------------------------
# Truth
# --------------------------------------------------------------------------------------------
@dataclass
class SceneTruth:
    """``truth(image, caption)``: whether caption ``caption`` is *false* of image ``image``
    (its spec fails on the image's scene), the ``is_negative`` of :class:`DiscriminationData`.

    The scenes are the rendered images' exact descriptions, so this is what the oracle reads
    from the renders (it is exact on them: ``test_oracle_is_exact_on_1000_ground_truth_renders``)."""

    scenes: list[Scene]
    specs: list[PromptSpec]

    def holds(self, image: int, caption: int) -> bool:
        scene = self.scenes[image]
        return bool(score_objects(self.specs[caption], scene.objects, scene.image_size)["correct"])

    def __call__(self, image: int, caption: int) -> bool:
        return not self.holds(image, caption)


def uses_held_out(spec: PromptSpec, config: ToyWorldConfig) -> bool:
    return bool(spec.pairs() & set(config.held_out))


def is_complete(spec: PromptSpec, scene: Scene) -> bool:
    """Whether ``spec`` accounts for every object of ``scene`` (and so describes it completely)."""
    return sum(o.count for o in spec.objects) == len(scene.objects)


# --------------------------------------------------------------------------------------------
# Minimal edits of a scene (text -> image hard negatives)
# --------------------------------------------------------------------------------------------
def scene_edits(world: ToyWorld, scene: Scene, rng: np.random.Generator) -> dict[str, Scene]:
    """Minimal edits of ``scene``, keyed by kind (:data:`SCENE_EDIT_KINDS`; kinds that do not
    apply, e.g. a swap in a one-colour scene, are missing). Every edited scene obeys the
    placement rule and uses no held-out colour-shape pair."""
    cfg = world.config
    objects = list(scene.objects)
    allowed = set(cfg.allowed_pairs)
    size = cfg.image_size
    out: dict[str, Scene] = {}

    def keep(kind: str, new_objects) -> None:
        out[kind] = replace(scene, objects=tuple(new_objects))

    def redrawn(obj: ToyObject, **changes) -> ToyObject:
        attrs = {"shape": obj.shape, "colour": obj.colour, "size": obj.size, **changes}
        return world.draw(attrs["shape"], attrs["colour"], attrs["size"], world.cell(obj))

    k = int(rng.integers(len(objects)))
    target = objects[k]
    colours = [c for c in cfg.colours if c != target.colour and (c, target.shape) in allowed]
    if colours:
        keep("colour change", objects[:k] + [redrawn(target, colour=colours[int(rng.integers(len(colours)))])] + objects[k + 1 :])
    pairs = [(a, b) for a in range(len(objects)) for b in range(a + 1, len(objects))
             if objects[a].colour != objects[b].colour
             and (objects[b].colour, objects[a].shape) in allowed and (objects[a].colour, objects[b].shape) in allowed]
    if pairs:
        a, b = pairs[int(rng.integers(len(pairs)))]
        swapped = list(objects)
        swapped[a], swapped[b] = redrawn(objects[a], colour=objects[b].colour), redrawn(objects[b], colour=objects[a].colour)
        keep("colour swap", swapped)
    shapes = [s for s in cfg.shapes if s != target.shape and (target.colour, s) in allowed]
    if shapes:
        keep("shape change", objects[:k] + [redrawn(target, shape=shapes[int(rng.integers(len(shapes)))])] + objects[k + 1 :])

    def moved(obj: ToyObject, horizontal: bool) -> ToyObject:
        (x, y), side = world.cell(obj), cfg.side(obj.size)
        cell = (size - x - side, y) if horizontal else (x, size - y - side)  # cells move, shapes stay upright
        return world.draw(obj.shape, obj.colour, obj.size, cell)

    keep("mirror", [moved(o, True) for o in objects])
    keep("flip", [moved(o, False) for o in objects])
    if len(objects) >= 2:
        keep("remove", objects[:k] + objects[k + 1 :])
    if len(objects) < cfg.max_objects:
        side = cfg.side(target.size)
        for _ in range(200):
            cell = tuple(int(v) for v in rng.integers(cfg.gap, size - cfg.gap - side + 1, 2))
            if world.fits(objects, cell, side):
                keep("add", objects + [world.draw(target.shape, target.colour, target.size, cell)])
                break
    return out


def read_scenes(path: str | Path) -> list[Scene]:
    """The structured scenes of an exported split (``scenes_<split>.json``), in file order."""
    return [scene_from_dict(s) for s in json.loads(Path(path).read_text())["scenes"]]


# --------------------------------------------------------------------------------------------
# One split
# --------------------------------------------------------------------------------------------
def _edits_first(edits: list[tuple[int, str]], mined: list[int], k: int, rng, key=lambda index: index) -> tuple[list[int], list[str]]:
    """``k`` negatives: up to ``EDIT_SHARE * k`` edits (a seeded random subset), then mined ones;
    no two with the same ``key`` (a caption's text: other images share it)."""
    chosen = [edits[int(i)] for i in rng.permutation(len(edits))[: round(EDIT_SHARE * k)]]
    taken = {key(index) for index, _ in chosen}
    for m in mined:
        if len(chosen) == k:
            break
        if key(m) not in taken:
            chosen.append((m, "mined"))
            taken.add(key(m))
    if len(chosen) < k:
        raise ValueError(f"only {len(chosen)} distinct negatives, {k} asked: mine more candidates")
    return [index for index, _ in chosen], [kind for _, kind in chosen]


def toy_split(world: ToyWorld, paths: dict, embed, limit: int | None = None, k_captions: int = 20, k_images: int = 4,
              seed: int = 0) -> DiscriminationData:
    """One exported split read back by the COCO / MDETR readers, with negatives that are false by
    construction (see the module docstring). ``paths``: one split of :func:`export_world`'s result."""
    data = load_discrimination_data(paths["captions"], paths["refexp"], paths["images"], limit)
    n = len(data.images)
    scenes = read_scenes(paths["scenes"])[:n]
    specs = [spec for scene in scenes for spec in world.captions(scene)]
    if [s.text for s in specs] != data.captions:
        raise ValueError(f"{paths['captions']} and {paths['scenes']} disagree: not the same toy world export")
    caption_image = data.caption_image.tolist()
    rng = np.random.default_rng([seed, 17])

    # hard negatives by editing: texts (appended to the captions) and scenes (appended to the images)
    text_index = {text: c for c, text in enumerate(data.captions) if caption_image[c] >= 0}
    new_specs, text_edits = [], [[] for _ in range(n)]
    for c, spec in enumerate(specs):
        image = caption_image[c]
        for kind, negative in hard_negatives(spec, scenes[image].objects, world.config.image_size, rng).items():
            if uses_held_out(negative, world.config):
                continue
            if negative.text not in text_index:
                text_index[negative.text] = len(specs) + len(new_specs)
                new_specs.append(negative)
            edit = (text_index[negative.text], kind)
            if edit[0] not in {e for e, _ in text_edits[image]}:
                text_edits[image].append(edit)
    edited_scenes, scene_kinds = [], []
    for image, scene in enumerate(scenes):
        for kind, edited in scene_edits(world, scene, rng).items():
            edited_scenes.append(edited)
            scene_kinds.append((image, kind))
    all_scenes, all_specs = scenes + edited_scenes, specs + new_specs
    truth = SceneTruth(all_scenes, all_specs)
    image_edits = [[] for _ in range(len(specs))]
    for offset, (image, kind) in enumerate(scene_kinds):
        for c in np.flatnonzero(data.caption_image.numpy() == image):
            if truth(n + offset, int(c)):
                image_edits[c].append((n + offset, kind))

    # hard negatives by CLIP, App. B.1, kept only if false
    image_emb, caption_emb = embed(data.images, data.captions)
    mined_captions, mined_images = mine_hard_negatives(image_emb, caption_emb, data.caption_image, k_captions, k_images, truth,
                                                       data.captions)
    texts = data.captions + [s.text for s in new_specs]
    hard_captions, caption_kinds = zip(*(_edits_first(text_edits[i], mined_captions[i].tolist(), k_captions, rng, texts.__getitem__)
                                         for i in range(n)))
    hard_images, image_kinds = zip(*(_edits_first(image_edits[c], mined_images[c].tolist(), k_images, rng) for c in range(len(specs))))

    edited_pixels = to_model_images(np.stack([world.render(s) for s in edited_scenes])) if edited_scenes else data.images[:0]
    return replace(
        data,
        images=torch.cat([data.images, edited_pixels]),
        captions=texts,
        caption_image=torch.cat([data.caption_image, torch.full((len(new_specs),), -1)]),
        hard_captions=torch.tensor(hard_captions), hard_images=torch.tensor(hard_images),
        n_captioned=n, is_negative=truth,
        caption_complete=torch.tensor([is_complete(s, scenes[caption_image[c]]) for c, s in enumerate(specs)] + [False] * len(new_specs)),
        hard_caption_kind=[list(k) for k in caption_kinds], hard_image_kind=[list(k) for k in image_kinds],
    )


def export_once(world: ToyWorld, out_dir: str | Path, splits: tuple[str, ...], n: int) -> dict[str, dict[str, Path]]:
    """:func:`export_world` for the ``splits`` that ``out_dir`` does not hold yet (same world,
    same ``n``: ``out_dir/export.json`` records what was written, after it was written), under a
    lock (``out_dir`` + ``.lock``): runs at once (``--jobs``) export the data once, then read it
    together. Returns every split's paths, as :func:`export_world` does."""
    out_dir = Path(out_dir)
    record_path = out_dir / "export.json"
    with exclusive(out_dir.with_name(out_dir.name + ".lock")):
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        if record.get("world") != repr(world.config):
            record = {"world": repr(world.config), "splits": {}}
        missing = tuple(split for split in splits if record["splits"].get(split) != n)
        if missing:
            export_world(world, out_dir, splits=missing, n=n)
            record["splits"].update({split: n for split in missing})
            atomic_write_text(json.dumps(record, indent=1), record_path)
    return {split: export_paths(out_dir, split) for split in splits}


def toy_discrimination_data(out_dir: str | Path, sizes: dict[str, int], seed: int = 0, evaluator_dir=None,
                            k_captions: int = 20, k_images: int = 4) -> tuple[dict[str, DiscriminationData], object]:
    """The toy world's ITM / REC data as a COCO / RefCOCO user would have them: exported in the
    real formats under ``out_dir``, read back by the real readers, with false-by-construction
    hard negatives (:func:`toy_split`). ``sizes``: images per split, e.g. ``{"train": 4000,
    "val": 500, "test": 500}``. Returns ``(splits, embed)`` with ``embed`` the evaluator CLIP's
    :func:`dptlib.data.embedders.clip_embedder`."""
    world = ToyWorld(ToyWorldConfig(seed=seed))
    wanted = {split: n for split, n in sizes.items() if n}
    paths = export_once(world, out_dir, tuple(wanted), max(wanted.values()))
    evaluator, tokenizer = load_evaluator(evaluator_dir or TOY_EVALUATOR_DIR)
    embed = clip_embedder(evaluator, tokenizer)
    splits = {split: toy_split(world, paths[split], embed, limit=n, k_captions=k_captions, k_images=k_images, seed=seed)
              for split, n in wanted.items()}
    return splits, embed


def write_manifest(paths: dict[str, dict[str, Path]], path: str | Path) -> Path:
    """A data manifest (:func:`dptlib.data.manifest.read_manifest`) for splits written by
    :func:`dptlib.toy.world.export_world`: the toy world read as real data, with no oracle."""
    path = Path(path)
    manifest = {split: {"captions": str(p["captions"]), "refexp": str(p["refexp"]), "images": str(p["images"])}
                for split, p in paths.items()}
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path
