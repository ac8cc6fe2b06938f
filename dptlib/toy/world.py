"""The toy world: procedurally generated scenes of coloured shapes, and an oracle that reads them back.

It stands in for three things of the paper at once:

* MS-COCO captions (image-text matching data): every scene comes with >= 4 captions generated from
  its structured description (single object, two-object conjunction, counting, spatial relation);
* RefCOCO/+/g (referring-expression grounding data): every object gets the referring expressions
  that pick it out uniquely, with its box;
* the detector-based metrics (GLIP, UniDet) of the evaluation: :func:`parse_image` reads an RGB
  image back into objects and :func:`score` checks a prompt's :class:`PromptSpec` against it
  exactly (presence, attribute binding, count, spatial relation).

Geometry. A scene of side ``W`` holds 1-4 objects; each is a circle, square or (upward) triangle of
side ``small_side`` or ``large_side`` pixels, drawn into an axis-aligned square cell at integer
pixel coordinates on a plain background. Cells keep ``gap`` pixels between each other and from the
border, so objects never touch and the oracle can separate them by connected components. Boxes are
``(x0, y0, x1, y1)`` in pixels, end-exclusive, tight around the drawn pixels.

Colour is read by direction, not distance: a pixel ``p`` mixed with the background ``b`` (blur,
anti-aliasing, a faint generated object) stays on the ray ``b + a (c - b)``, so the oracle takes
the palette colour ``c`` whose direction ``c - b`` has the largest cosine with ``p - b``.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")  # between two objects
POSITIONS = ("left", "right", "top", "bottom")  # of one object in the image
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles"}

# RGB, 0-255. Chosen so that the directions c - background are >= 30 degrees apart.
DEFAULT_PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 60, 230),
    "yellow": (230, 220, 30),
    "purple": (160, 40, 200),
    "cyan": (30, 200, 200),
}
DEFAULT_BACKGROUND = (20, 20, 20)
# Colour-shape pairs never drawn in train / val / test scenes nor said in their captions: the
# out-of-distribution prompts of toy-CC use them (the role CC-500 plays in the paper).
DEFAULT_HELD_OUT = (("red", "triangle"), ("blue", "circle"), ("yellow", "square"))
MIN_IMAGE_SIZE = 32


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyWorldConfig:
    """Everything that defines a toy world; two equal configs give identical scenes.

    ``image_size`` must be >= 32 (smaller shapes are not reliably told apart); sides scale with it.
    """

    image_size: int = 32
    min_objects: int = 1
    max_objects: int = 3
    colours: tuple[str, ...] = tuple(DEFAULT_PALETTE)
    shapes: tuple[str, ...] = SHAPES
    held_out: tuple[tuple[str, str], ...] = DEFAULT_HELD_OUT
    palette: tuple[tuple[str, tuple[int, int, int]], ...] = tuple(DEFAULT_PALETTE.items())
    background: tuple[int, int, int] = DEFAULT_BACKGROUND
    seed: int = 0
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 500

    def __post_init__(self) -> None:
        palette = dict(self.palette)
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(
                f"image_size={self.image_size} is too small: the toy world needs at least "
                f"{MIN_IMAGE_SIZE} pixels so that small shapes stay distinguishable"
            )
        if self.image_size % 8:
            raise ValueError(f"image_size={self.image_size} must be a multiple of 8 (VAE down-sampling)")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got min_objects={self.min_objects}, "
                f"max_objects={self.max_objects}"
            )
        if self.max_objects > self.capacity:
            raise ValueError(
                f"max_objects={self.max_objects} objects do not fit in a {self.image_size}x"
                f"{self.image_size} image: at most {self.capacity} large objects fit "
                f"(large side {self.large_side} px + gap {self.gap} px); raise image_size or "
                f"lower max_objects"
            )
        unknown = [c for c in self.colours if c not in palette]
        if unknown:
            raise ValueError(f"unknown colour(s) {unknown}; known colours: {sorted(palette)}")
        if len(self.colours) < 2:
            raise ValueError("the toy world needs at least 2 colours")
        bad_shapes = [s for s in self.shapes if s not in SHAPES]
        if bad_shapes:
            raise ValueError(f"unknown shape(s) {bad_shapes}; known shapes: {list(SHAPES)}")
        for colour, shape in self.held_out:
            if colour not in self.colours or shape not in self.shapes:
                raise ValueError(f"held-out pair ({colour!r}, {shape!r}) is not a colour-shape pair of this world")
        if len(self.held_out) >= len(self.colours) * len(self.shapes):
            raise ValueError("held_out leaves no colour-shape pair for training")
        for n in (self.n_train, self.n_val, self.n_test):
            if n < 0:
                raise ValueError("split sizes must be >= 0")

    @classmethod
    def from_dict(cls, data: dict) -> ToyWorldConfig:
        """Inverse of ``dataclasses.asdict`` (JSON turns the tuples into lists)."""

        def tuples(value):
            return tuple(tuples(v) for v in value) if isinstance(value, (list, tuple)) else value

        return cls(**{k: tuples(v) for k, v in data.items()})

    @property
    def small_side(self) -> int:
        return round(0.22 * self.image_size)

    @property
    def large_side(self) -> int:
        return round(0.34 * self.image_size)

    @property
    def gap(self) -> int:
        # 3 px at 32: objects stay apart even after a Gaussian blur of sigma 1 px.
        return max(3, round(0.06 * self.image_size))

    @property
    def capacity(self) -> int:
        """How many large objects always fit (a grid argument; the sampler packs by rejection)."""
        per_row = (self.image_size - self.gap) // (self.large_side + self.gap)
        return per_row * per_row

    def side(self, size: str) -> int:
        return {"small": self.small_side, "large": self.large_side}[size]

    def rgb(self, colour: str) -> tuple[int, int, int]:
        return dict(self.palette)[colour]

    @property
    def allowed_pairs(self) -> tuple[tuple[str, str], ...]:
        """Colour-shape pairs that appear in the training distribution."""
        return tuple(p for p in itertools.product(self.colours, self.shapes) if p not in self.held_out)


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyObject:
    """One drawn object; ``box`` = (x0, y0, x1, y1) in pixels, end-exclusive."""

    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    def describe(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A scene's structured description: what the renderer draws and the oracle reads back."""

    objects: tuple[ToyObject, ...]
    image_size: int
    scene_id: int = 0


def _shape_mask(shape: str, side: int) -> np.ndarray:
    """Boolean (side, side) mask of ``shape`` drawn in a side x side cell, by pixel centres."""
    c = (np.arange(side) + 0.5)[None, :]  # x of pixel centres, (1, side)
    r = (np.arange(side) + 0.5)[:, None]  # y of pixel centres, (side, 1)
    if shape == "square":
        return np.ones((side, side), bool)
    if shape == "circle":
        half = side / 2
        return (c - half) ** 2 + (r - half) ** 2 <= half**2
    if shape == "triangle":  # apex at the top middle, base along the bottom edge
        return np.abs(c - side / 2) <= r / 2
    raise ValueError(f"unknown shape {shape!r}; known shapes: {list(SHAPES)}")


def _tight_box(mask: np.ndarray, x0: int, y0: int) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return (x0 + int(cols.min()), y0 + int(rows.min()), x0 + int(cols.max()) + 1, y0 + int(rows.max()) + 1)


class ToyWorld:
    """A seeded generator of scenes, their captions and referring expressions.

    Scene ``i`` of split ``s`` depends only on ``(config.seed, s, i)``: splits can be generated in
    any order or in parallel, and growing a split keeps its first scenes.
    """

    SPLITS = {"train": 0, "val": 1, "test": 2, "ood": 3}

    def __init__(self, config: ToyWorldConfig | None = None) -> None:
        self.config = config or ToyWorldConfig()

    # -- sampling -------------------------------------------------------------------------
    def rng(self, split: str, index: int) -> np.random.Generator:
        if split not in self.SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {list(self.SPLITS)}")
        return np.random.default_rng([self.config.seed, self.SPLITS[split], index])

    def split_size(self, split: str) -> int:
        cfg = self.config
        return {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test, "ood": cfg.n_test}[split]

    def scene(self, split: str, index: int) -> Scene:
        """Scene ``index`` of ``split``. The ``ood`` split holds at least one held-out pair."""
        cfg = self.config
        rng = self.rng(split, index)
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        pairs = cfg.allowed_pairs
        for _ in range(100):
            chosen = [pairs[int(k)] for k in rng.integers(0, len(pairs), n)]
            if split == "ood":
                chosen[0] = cfg.held_out[int(rng.integers(0, len(cfg.held_out)))]
            sizes = [SIZES[int(k)] for k in rng.integers(0, 2, n)]
            cells = self._place([cfg.side(s) for s in sizes], rng)
            if cells is not None:
                break
        else:  # pragma: no cover - capacity check in the config makes this unreachable in practice
            raise RuntimeError(f"could not place {n} objects in {cfg.image_size}px after 100 tries")
        objects = []
        for (colour, shape), size, (x0, y0) in zip(chosen, sizes, cells):
            mask = _shape_mask(shape, cfg.side(size))
            objects.append(ToyObject(shape, colour, size, _tight_box(mask, x0, y0)))
        return Scene(tuple(objects), cfg.image_size, scene_id=index)

    def scenes(self, split: str, n: int | None = None) -> list[Scene]:
        """The first ``n`` scenes of ``split`` (default: the split's configured size)."""
        n = self.split_size(split) if n is None else n
        return [self.scene(split, i) for i in range(n)]

    def _place(self, sides: list[int], rng: np.random.Generator) -> list[tuple[int, int]] | None:
        """Top-left corners for cells of these sides, ``gap`` apart; None if packing failed."""
        size, gap = self.config.image_size, self.config.gap
        placed: list[tuple[int, int, int]] = []
        for side in sorted(sides, reverse=True):  # big first packs better
            for _ in range(200):
                x, y = (int(v) for v in rng.integers(gap, size - gap - side + 1, 2))
                if all(
                    x + side + gap <= px or px + ps + gap <= x or y + side + gap <= py or py + ps + gap <= y
                    for px, py, ps in placed
                ):
                    placed.append((x, y, side))
                    break
            else:
                return None
        # undo the sort: hand corners back in the order of ``sides``
        out, pool = [], list(placed)
        for side in sides:
            k = next(i for i, p in enumerate(pool) if p[2] == side)
            out.append(pool.pop(k)[:2])
        return out

    def realize(self, spec: PromptSpec, seed: int = 0, max_tries: int = 500) -> Scene:
        """A scene that satisfies ``spec`` exactly (attributes the spec leaves free are drawn at
        random): the "real image" of a benchmark prompt. Raises ``ValueError`` if none fits."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 99, seed])
        wanted = [o for o in spec.objects for _ in range(o.count)]
        if len(wanted) > cfg.max_objects:
            raise ValueError(f"{spec.text!r} asks for {len(wanted)} objects; this world holds at most {cfg.max_objects}")
        for _ in range(max_tries):
            kinds = []
            for o in wanted:
                colour = o.colour or cfg.colours[int(rng.integers(len(cfg.colours)))]
                kinds.append((o.shape, colour, o.size or SIZES[int(rng.integers(2))]))
            cells = self._place([cfg.side(z) for _, _, z in kinds], rng)
            if cells is None:
                continue
            objects = tuple(
                ToyObject(shape, colour, size, _tight_box(_shape_mask(shape, cfg.side(size)), x0, y0))
                for (shape, colour, size), (x0, y0) in zip(kinds, cells)
            )
            if score_objects(spec, objects, cfg.image_size)["correct"]:
                return Scene(objects, cfg.image_size, scene_id=seed)
        raise ValueError(f"could not realize {spec.text!r} in {max_tries} tries")

    # -- drawing --------------------------------------------------------------------------
    def draw(self, shape: str, colour: str, size: str, cell: tuple[int, int]) -> ToyObject:
        """The object drawn in the square cell whose top-left corner is ``cell`` = (x0, y0)."""
        return ToyObject(shape, colour, size, _tight_box(_shape_mask(shape, self.config.side(size)), *cell))

    def cell(self, obj: ToyObject) -> tuple[int, int]:
        """Top-left corner (x0, y0) of the cell ``obj`` is drawn in: the inverse of :meth:`draw`
        (the tight box of a circle can start one pixel inside its cell)."""
        bx0, by0, _, _ = _tight_box(_shape_mask(obj.shape, self.config.side(obj.size)), 0, 0)
        return obj.box[0] - bx0, obj.box[1] - by0

    def fits(self, objects, cell: tuple[int, int], side: int) -> bool:
        """Whether a cell of ``side`` at ``cell`` keeps ``gap`` pixels from the border and from
        the cells of ``objects`` (the rule every scene is placed by)."""
        size, gap = self.config.image_size, self.config.gap
        x, y = cell
        if not (gap <= x <= size - gap - side and gap <= y <= size - gap - side):
            return False
        for obj in objects:
            (px, py), ps = self.cell(obj), self.config.side(obj.size)
            if not (x + side + gap <= px or px + ps + gap <= x or y + side + gap <= py or py + ps + gap <= y):
                return False
        return True

    # -- rendering ------------------------------------------------------------------------
    def render(self, scene: Scene) -> np.ndarray:
        """uint8 RGB image (H, W, 3) of ``scene``."""
        cfg = self.config
        image = np.empty((scene.image_size, scene.image_size, 3), np.uint8)
        image[:] = cfg.background
        for obj in scene.objects:
            side = cfg.side(obj.size)
            cx0, cy0 = self.cell(obj)
            region = image[cy0 : cy0 + side, cx0 : cx0 + side]
            region[_shape_mask(obj.shape, side)] = cfg.rgb(obj.colour)
        return image

    # -- language -------------------------------------------------------------------------
    def captions(self, scene: Scene) -> list[PromptSpec]:
        """>= 4 captions of ``scene`` as specs (``spec.text`` is the caption).

        Always: single object, single object with size, counting (the whole scene), spatial
        (relation between two objects, or one object's position in the image); plus a two-object
        conjunction when the scene has two different kinds of object.
        """
        groups = _groups(scene.objects, ("colour", "shape"))
        first = scene.objects[0]
        key = (first.colour, first.shape)
        sized = _groups(scene.objects, ("size", "colour", "shape"))
        specs = [
            PromptSpec((ObjectSpec(first.shape, first.colour, count=len(groups[key])),), category="single"),
            PromptSpec(
                (ObjectSpec(first.shape, first.colour, first.size, count=len(sized[(first.size,) + key])),),
                category="single",
            ),
            PromptSpec(
                tuple(ObjectSpec(s, c, count=len(objs)) for (c, s), objs in groups.items()), category="counting"
            ),
        ]
        if len(groups) >= 2:
            (k1, o1), (k2, o2) = list(groups.items())[:2]
            specs.append(
                PromptSpec(
                    (ObjectSpec(k1[1], k1[0], count=len(o1)), ObjectSpec(k2[1], k2[0], count=len(o2))),
                    category="conjunction",
                )
            )
        specs.append(self._spatial_caption(scene, groups))
        return specs

    def _spatial_caption(self, scene: Scene, groups: dict) -> PromptSpec:
        unique = [objs[0] for objs in groups.values() if len(objs) == 1]
        min_offset = self.config.small_side / 2
        best = None
        for a, b in itertools.permutations(unique, 2):
            dx, dy = b.center[0] - a.center[0], b.center[1] - a.center[1]
            relation, offset = ("left of" if dx > 0 else "right of", abs(dx)) if abs(dx) >= abs(dy) else (
                "above" if dy > 0 else "below",
                abs(dy),
            )
            if offset >= min_offset and (best is None or offset > best[0]):
                best = (offset, a, b, relation)
        if best is not None:
            _, a, b, relation = best
            return PromptSpec(
                (ObjectSpec(a.shape, a.colour), ObjectSpec(b.shape, b.colour)), relation=relation, category="spatial"
            )
        # one object, or no clearly separated pair: where one kind of object sits in the image
        for (colour, shape), members in groups.items():
            for position in POSITIONS:
                if all(_in_position(o, position, scene.image_size, margin=1.0) for o in members):
                    spec = ObjectSpec(shape, colour, count=len(members))
                    return PromptSpec((spec,), position=position, category="spatial")
        # same-looking objects on opposite sides: describe the scene with sizes instead
        sized = _groups(scene.objects, ("size", "colour", "shape"))
        return PromptSpec(
            tuple(ObjectSpec(s, c, z, count=len(objs)) for (z, c, s), objs in sized.items()), category="attributes"
        )

    def referring_expressions(self, scene: Scene) -> list[list[RefSpec]]:
        """For each object of ``scene``, the referring expressions that pick it out uniquely."""
        out = []
        for index, obj in enumerate(scene.objects):
            candidates = [
                RefSpec(obj.shape),
                RefSpec(obj.shape, colour=obj.colour),
                RefSpec(obj.shape, size=obj.size),
                RefSpec(obj.shape, colour=obj.colour, size=obj.size),
            ]
            candidates += [RefSpec(obj.shape, position=p) for p in POSITIONS]
            candidates += [RefSpec(obj.shape, colour=obj.colour, position=p) for p in POSITIONS]
            found, seen = [], set()
            for ref in candidates:
                if ref.text in seen:
                    continue
                if resolve(ref, scene.objects, min_gap=self.config.small_side / 2) == index:
                    found.append(ref)
                    seen.add(ref.text)
            out.append(found)
        return out


def _groups(objects, keys: tuple[str, ...]) -> dict[tuple, list[ToyObject]]:
    """Objects grouped by the attributes ``keys``, in order of first appearance."""
    groups: dict[tuple, list[ToyObject]] = {}
    for obj in objects:
        groups.setdefault(tuple(getattr(obj, k) for k in keys), []).append(obj)
    return groups


def _in_position(obj: ToyObject, position: str, image_size: int, margin: float = 0.0) -> bool:
    """Whether the object's centre lies in that half of the image, ``margin`` px clear of the middle."""
    half = image_size / 2
    cx, cy = obj.center
    return {
        "left": cx < half - margin,
        "right": cx > half + margin,
        "top": cy < half - margin,
        "bottom": cy > half + margin,
    }[position]


def _relation_holds(a: ToyObject, b: ToyObject, relation: str) -> bool:
    (ax, ay), (bx, by) = a.center, b.center
    return {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[relation]


# --------------------------------------------------------------------------------------------
# Prompt specs and referring expressions
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectSpec:
    """What a prompt asks of one kind of object; ``None`` attributes are left free."""

    shape: str
    colour: str | None = None
    size: str | None = None
    count: int = 1

    def matches(self, obj: ToyObject) -> bool:
        return (
            obj.shape == self.shape
            and (self.colour is None or obj.colour == self.colour)
            and (self.size is None or obj.size == self.size)
        )

    @property
    def text(self) -> str:
        return self.phrase()

    def phrase(self, numbered: bool = False) -> str:
        """'a large red circle' / 'two red circles'; ``numbered`` says "one" instead of "a"."""
        words = [w for w in (self.size, self.colour) if w]
        if self.count == 1 and not numbered:
            article = "an" if (words[0] if words else self.shape)[0] in "aeiou" else "a"
            return " ".join([article, *words, self.shape])
        noun = self.shape if self.count == 1 else PLURALS[self.shape]
        return " ".join([NUMBER_WORDS[self.count], *words, noun])


@dataclass(frozen=True)
class PromptSpec:
    """A prompt with its exact meaning: the objects it asks for, and an optional relation.

    ``relation`` relates ``objects[0]`` (subject) to ``objects[1]``; ``position`` places
    ``objects[0]`` in the image. ``category`` names the benchmark category (e.g. "counting").
    """

    objects: tuple[ObjectSpec, ...]
    relation: str | None = None
    position: str | None = None
    category: str = ""

    def __post_init__(self) -> None:
        if not self.objects:
            raise ValueError("a prompt spec needs at least one object")
        if self.relation is not None and (self.relation not in RELATIONS or len(self.objects) != 2):
            raise ValueError(f"relation must be one of {RELATIONS} between exactly two objects")
        if self.position is not None and self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}")

    @property
    def text(self) -> str:
        if self.relation is not None:
            a, b = self.objects
            rel = f"to the {self.relation}" if self.relation in ("left of", "right of") else self.relation
            return f"{a.text} {rel} {b.text}"
        text = " and ".join(o.phrase(numbered=self.category == "counting") for o in self.objects)
        if self.position is not None:
            where = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
            text = f"{text} {where[self.position]}"
        return text

    @property
    def words(self) -> set[str]:
        """Every colour and shape word the prompt uses (to check held-out pairs)."""
        return {w for o in self.objects for w in (o.colour, o.shape) if w}

    def pairs(self) -> set[tuple[str, str]]:
        return {(o.colour, o.shape) for o in self.objects if o.colour}


@dataclass(frozen=True)
class RefSpec:
    """A referring expression: "the [size] [colour] shape [on the left|right|top|bottom]"."""

    shape: str
    colour: str | None = None
    size: str | None = None
    position: str | None = None

    @property
    def text(self) -> str:
        words = ["the", *(w for w in (self.size, self.colour) if w), self.shape]
        if self.position is not None:
            words += {"left": ["on", "the", "left"], "right": ["on", "the", "right"], "top": ["at", "the", "top"],
                      "bottom": ["at", "the", "bottom"]}[self.position]
        return " ".join(words)


def resolve(ref: RefSpec, objects: tuple[ToyObject, ...], min_gap: float = 0.0) -> int | None:
    """Index of the one object ``ref`` picks out, or None when it picks none or several.

    A positional expression picks the extreme one among the matching objects (at least two of them),
    and only when it leads the runner-up by ``min_gap`` pixels along that axis.
    """
    spec = ObjectSpec(ref.shape, ref.colour, ref.size)
    matching = [i for i, o in enumerate(objects) if spec.matches(o)]
    if ref.position is None:
        return matching[0] if len(matching) == 1 else None
    if len(matching) < 2:
        return None
    axis = 0 if ref.position in ("left", "right") else 1
    sign = 1 if ref.position in ("left", "top") else -1
    ranked = sorted(matching, key=lambda i: sign * objects[i].center[axis])
    lead = sign * (objects[ranked[1]].center[axis] - objects[ranked[0]].center[axis])
    return ranked[0] if lead >= min_gap else None


# --------------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------------
def _colour_directions(config: ToyWorldConfig) -> tuple[list[str], np.ndarray]:
    names = list(config.colours)
    directions = np.array([config.rgb(c) for c in names], float) - np.array(config.background, float)  # (K, 3)
    return names, directions


_TEMPLATE_BLURS = (0.0, 0.7, 1.4)  # px; generated and corrupted images are soft-edged
_TEMPLATE_MARGIN = 4  # px around a template, room for its blur


@lru_cache(maxsize=8)
def _template_bank(config: ToyWorldConfig) -> dict[tuple[str, str, float], np.ndarray]:
    """(shape, size, blur) -> float template on a canvas of side + 2 * margin pixels."""
    bank = {}
    m = _TEMPLATE_MARGIN
    for shape in config.shapes:
        for size in SIZES:
            side = config.side(size)
            canvas = np.zeros((side + 2 * m, side + 2 * m))
            canvas[m : m + side, m : m + side] = _shape_mask(shape, side)
            for blur in _TEMPLATE_BLURS:
                bank[shape, size, blur] = ndimage.gaussian_filter(canvas, blur) if blur else canvas
    return bank


def _template_centroid(shape: str, side: int) -> tuple[float, float]:
    """(row, col) centroid of a shape inside its cell."""
    return (2 * side / 3 if shape == "triangle" else side / 2), side / 2


def classify_object(soft: np.ndarray, config: ToyWorldConfig, bank: dict | None = None) -> tuple[str, str]:
    """(shape, size) whose template, blurred by 0-1.4 px and shifted by up to 1 px, best fits
    ``soft``: an (h, w) map of how far each pixel is from the background toward the object's
    colour (0 = background, 1 = the colour), zero outside the object's neighbourhood.

    Template fitting (least squares) averages noise over the whole object, where per-pixel
    thresholds would not.
    """
    bank = bank or _template_bank(config)
    m, pad = _TEMPLATE_MARGIN, config.large_side + _TEMPLATE_MARGIN + 2
    padded = np.pad(soft, pad)
    rows, cols = np.indices(soft.shape)
    total = soft.sum()
    cy, cx = (rows * soft).sum() / total + pad, (cols * soft).sum() / total + pad
    best, best_error = None, np.inf
    for (shape, size, _), template in bank.items():
        side = config.side(size)
        ty, tx = _template_centroid(shape, side)
        for dy, dx in itertools.product((-1, 0, 1), repeat=2):
            y0, x0 = int(round(cy - ty)) + dy - m, int(round(cx - tx)) + dx - m
            window = padded[y0 : y0 + template.shape[0], x0 : x0 + template.shape[1]]
            # ||canvas - padded||^2 up to the constant ||padded||^2
            error = (template**2).sum() - 2 * (template * window).sum()
            if error < best_error:
                best, best_error = (shape, size), error
    return best


def parse_image(image: np.ndarray, config: ToyWorldConfig | None = None) -> list[ToyObject]:
    """Read the objects of an RGB image (H, W, 3), uint8 or float in [0, 1].

    Foreground is whatever lies more than half-way along a palette colour's ray from the
    background; connected foreground regions are objects, split by colour where two colours meet.
    Objects are returned left to right, top to bottom.
    """
    config = config or ToyWorldConfig(image_size=image.shape[0])
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    pixels = image.astype(float) * (255.0 if image.dtype.kind == "f" else 1.0)
    offset = pixels - np.array(config.background, float)  # (H, W, 3)
    names, directions = _colour_directions(config)
    # fraction of the way from background to each palette colour, (H, W, K)
    along = offset @ directions.T / (directions**2).sum(1)
    cosine = offset @ directions.T / (np.linalg.norm(offset, axis=-1, keepdims=True) * np.linalg.norm(directions, axis=1) + 1e-9)
    label = cosine.argmax(-1)  # (H, W)
    foreground = np.take_along_axis(along, label[..., None], -1)[..., 0] > 0.5
    min_area = max(4, round(0.25 * config.small_side**2))
    bank = _template_bank(config)
    soft_all = np.clip(along, 0.0, 1.0)  # (H, W, K)

    objects = []
    regions, n_regions = ndimage.label(foreground)
    for region_index in range(1, n_regions + 1):
        region = regions == region_index
        if region.sum() < min_area:
            continue  # noise speck
        counts = np.bincount(label[region], minlength=len(names))
        colours = [k for k in np.argsort(-counts) if counts[k] >= max(min_area, 0.25 * region.sum())]
        colours = colours or [int(counts.argmax())]
        for k in colours:
            part = region & (label == k) if len(colours) > 1 else region
            parts, n_parts = ndimage.label(part)
            for part_index in range(1, n_parts + 1):
                mask = ndimage.binary_fill_holes(parts == part_index)
                if mask.sum() < min_area:
                    continue
                rows, cols = np.nonzero(mask)
                y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
                near = ndimage.binary_dilation(mask, iterations=2) & ~(foreground & ~mask)
                ny, nx = np.nonzero(near)
                crop = (slice(ny.min(), ny.max() + 1), slice(nx.min(), nx.max() + 1))
                soft = np.where(near[crop], soft_all[crop + (k,)], 0.0)
                shape, size = classify_object(soft, config, bank)
                objects.append(ToyObject(shape, names[k], size, (int(x0), int(y0), int(x1), int(y1))))
    return sorted(objects, key=lambda o: (o.box[0], o.box[1]))


def score_objects(spec: PromptSpec, objects: list[ToyObject] | tuple[ToyObject, ...], image_size: int) -> dict:
    """Check a prompt spec against parsed objects.

    Returns booleans: ``presence`` (every asked-for shape is there, any colour), ``binding`` (every
    asked-for object is there with all its attributes, distinct objects for distinct asks),
    ``count`` (exactly ``count`` objects match each ask), ``spatial`` (the relation or position
    holds; None when the prompt has none) and ``correct`` (all of them).
    """
    presence = all(any(o.shape == s.shape for o in objects) for s in spec.objects)
    slots = [s for s in spec.objects for _ in range(s.count)]
    if len(slots) > len(objects):
        binding = False
    else:
        cost = np.array([[0.0 if s.matches(o) else 1.0 for o in objects] for s in slots])
        rows, cols = linear_sum_assignment(cost)
        binding = bool(cost[rows, cols].sum() == 0)
    count = all(sum(s.matches(o) for o in objects) == s.count for s in spec.objects)
    spatial = None
    if spec.relation is not None:
        subjects = [o for o in objects if spec.objects[0].matches(o)]
        others = [o for o in objects if spec.objects[1].matches(o)]
        spatial = bool(subjects) and all(
            any(_relation_holds(a, b, spec.relation) for b in others if b is not a) for a in subjects
        )
    elif spec.position is not None:
        placed = [o for o in objects if spec.objects[0].matches(o)]
        spatial = bool(placed) and all(_in_position(o, spec.position, image_size) for o in placed)
    correct = presence and binding and count and spatial is not False
    return {"presence": presence, "binding": binding, "count": count, "spatial": spatial, "correct": correct}


def score(spec: PromptSpec, image: np.ndarray, config: ToyWorldConfig | None = None) -> dict:
    """Oracle score of an RGB image (H, W, 3) against ``spec``; see :func:`score_objects`."""
    return score_objects(spec, parse_image(image, config), image.shape[0])


# --------------------------------------------------------------------------------------------
# Robustness of the oracle
# --------------------------------------------------------------------------------------------
def corrupt(image: np.ndarray, noise_std: float = 0.0, blur_sigma: float = 0.0, seed: int = 0) -> np.ndarray:
    """Blur (Gaussian, ``blur_sigma`` px) then add Gaussian noise (``noise_std`` in [0, 1] units)."""
    out = image.astype(float) / 255.0
    if blur_sigma > 0:
        out = ndimage.gaussian_filter(out, sigma=(blur_sigma, blur_sigma, 0))
    if noise_std > 0:
        out = out + np.random.default_rng(seed).normal(0.0, noise_std, out.shape)
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def parse_matches_scene(parsed: list[ToyObject], scene: Scene, min_iou: float = 0.5) -> bool:
    """Whether the parse recovers every object of the scene (shape, colour, size, box IoU >= min_iou)
    and nothing else."""
    if len(parsed) != len(scene.objects):
        return False
    cost = np.array(
        [[0.0 if (p.shape, p.colour, p.size) == (o.shape, o.colour, o.size) and box_iou(p.box, o.box) >= min_iou
          else 1.0 for p in parsed] for o in scene.objects]
    )
    rows, cols = linear_sum_assignment(cost)
    return bool(cost[rows, cols].sum() == 0)


# --------------------------------------------------------------------------------------------
# Export in the real data sets' formats
# --------------------------------------------------------------------------------------------
def _polygon(obj: ToyObject) -> list[float]:
    """COCO polygon [x0, y0, x1, y1, ...] of an object's outline."""
    x0, y0, x1, y1 = obj.box
    if obj.shape == "square":
        return [x0, y0, x1, y0, x1, y1, x0, y1]
    if obj.shape == "triangle":
        return [(x0 + x1) / 2, y0, x1, y1, x0, y1]
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    return [round(float(v), 2) for a in angles for v in (cx + r * np.cos(a), cy + r * np.sin(a))]


def image_id(split: str, index: int) -> int:
    """Globally unique COCO image id of scene ``index`` of ``split``."""
    return ToyWorld.SPLITS[split] * 1_000_000 + index + 1  # COCO ids start at 1


def scene_to_dict(scene: Scene) -> dict:
    return {
        "scene_id": scene.scene_id,
        "image_size": scene.image_size,
        "objects": [{"shape": o.shape, "colour": o.colour, "size": o.size, "box": list(o.box)} for o in scene.objects],
    }


def scene_from_dict(data: dict) -> Scene:
    objects = tuple(ToyObject(o["shape"], o["colour"], o["size"], tuple(o["box"])) for o in data["objects"])
    return Scene(objects, data["image_size"], data["scene_id"])


def export_world(world: ToyWorld, root, splits=("train", "val", "test"), n: int | None = None) -> dict:
    """Write ``splits`` of ``world`` as the real data sets are laid out, and return the paths.

    ``root/images/<split>/<split>_<index>.png``, and in ``root/annotations/``:
    ``captions_<split>.json`` (COCO captions), ``instances_<split>.json`` (COCO instances; the
    category is the shape, colour and size ride along as extra keys), ``final_toyref_<split>.json``
    (MDETR's RefCOCO format: one "image" entry per expression) and ``scenes_<split>.json`` (the
    structured scene specs, for exact scoring). ``n`` caps the scenes per split.
    """
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    category_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    info = {"description": f"dpt toy world, {world.config}", "version": "1.0"}
    paths: dict[str, dict[str, Path]] = {}
    for split in splits:
        scenes = world.scenes(split, None if n is None else min(n, world.split_size(split)))
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        images, captions, instances, ref_images, ref_annotations = [], [], [], [], []
        for scene in scenes:
            iid = image_id(split, scene.scene_id)
            file_name = f"{split}/{split}_{scene.scene_id:06d}.png"
            Image.fromarray(world.render(scene)).save(root / "images" / file_name)
            image = {"id": iid, "file_name": file_name, "width": scene.image_size, "height": scene.image_size}
            images.append(image)
            for spec in world.captions(scene):
                captions.append({"id": len(captions) + 1, "image_id": iid, "caption": spec.text})
            annotation_ids = []
            for obj in scene.objects:
                x0, y0, x1, y1 = obj.box
                annotation_ids.append(len(instances) + 1)
                instances.append({
                    "id": len(instances) + 1, "image_id": iid, "category_id": category_id[obj.shape],
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(_shape_mask(obj.shape, world.config.side(obj.size)).sum()),
                    "iscrowd": 0, "segmentation": [_polygon(obj)], "colour": obj.colour, "size": obj.size,
                })
            for obj_index, refs in enumerate(world.referring_expressions(scene)):
                obj = scene.objects[obj_index]
                x0, y0, x1, y1 = obj.box
                for sentence_id, ref in enumerate(refs):
                    rid = len(ref_images) + 1
                    text = ref.text
                    ref_images.append({
                        **image, "id": rid, "original_id": iid, "caption": text, "dataset_name": "toyref",
                        "sentence_id": sentence_id, "tokens_negative": [[0, len(text)]],
                        "tokens_positive_eval": [[[0, len(text)]]],
                    })
                    ref_annotations.append({
                        "id": rid, "image_id": rid, "category_id": category_id[obj.shape],
                        "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                        "original_id": annotation_ids[obj_index], "tokens_positive": [[0, len(text)]],
                    })
        files = {
            "captions": {"info": info, "licenses": [], "images": images, "annotations": captions},
            "instances": {"info": info, "licenses": [], "images": images, "annotations": instances, "categories": categories},
            "refexp": {"info": info, "images": ref_images, "annotations": ref_annotations, "categories": categories},
            "scenes": {"info": info, "split": split, "scenes": [scene_to_dict(s) for s in scenes]},
        }
        paths[split] = export_paths(root, split)
        for kind, content in files.items():
            paths[split][kind].write_text(json.dumps(content))
    return paths


def export_paths(root, split: str) -> dict[str, Path]:
    """Where :func:`export_world` writes ``split`` under ``root``: the four annotation files and
    the images folder."""
    root = Path(root)
    names = {"captions": f"captions_{split}.json", "instances": f"instances_{split}.json",
             "refexp": f"final_toyref_{split}.json", "scenes": f"scenes_{split}.json"}
    return {**{kind: root / "annotations" / name for kind, name in names.items()}, "images": root / "images"}


def oracle_accuracy(world: ToyWorld, scenes: list[Scene], noise_std: float = 0.0, blur_sigma: float = 0.0) -> dict:
    """How often the oracle reads corrupted renders right.

    Returns ``scene`` (fraction of scenes parsed exactly: every object's shape, colour and size,
    box IoU >= 0.5, nothing extra) and ``captions`` (fraction of the scenes' captions scored
    correct). Each scene gets its own noise seed (its index), so the numbers are reproducible.
    """
    scene_ok, caption_ok, n_captions = 0, 0, 0
    for scene in scenes:
        image = corrupt(world.render(scene), noise_std, blur_sigma, seed=scene.scene_id)
        parsed = parse_image(image, world.config)
        scene_ok += parse_matches_scene(parsed, scene)
        for spec in world.captions(scene):
            caption_ok += score_objects(spec, parsed, scene.image_size)["correct"]
            n_captions += 1
    return {"scene": scene_ok / max(1, len(scenes)), "captions": caption_ok / max(1, n_captions)}
