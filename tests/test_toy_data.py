"""The toy world's ITM / REC data (dptlib.toy.data): every hard negative is false of what it is
set against, checked on the structured scenes (SceneTruth) and, independently, by the oracle on
the rendered pixels; the scene edits are minimal, placed by the rules, and read back exactly."""

from collections import Counter

import numpy as np
import pytest

from dptlib.data.discrimination import mine_hard_negatives
from dptlib.data.images import to_uint8_images
from dptlib.toy.data import SCENE_EDIT_KINDS, SceneTruth, read_scenes, scene_edits
from dptlib.toy.model import HARD_NEGATIVE_KINDS
from dptlib.toy.world import PLURALS, ToyWorld, ToyWorldConfig, parse_image, parse_matches_scene, score_objects

from toy_fixtures import small_toy_split, stand_in_embed

N_SCENES = 100


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return small_toy_split(tmp_path_factory.mktemp("toy"), N_SCENES, k_captions=8, k_images=4)


@pytest.fixture(scope="module")
def parsed(split):
    """The oracle's reading of every image of the split (captioned and edited), from its pixels."""
    world, _, data = split
    return [parse_image(image, world.config) for image in to_uint8_images(data.images)]


def _held_out_in_text(text: str, config: ToyWorldConfig) -> bool:
    return any(f"{colour} {shape}" in text or f"{colour} {PLURALS[shape]}" in text for colour, shape in config.held_out)


def test_split_layout_and_kinds(split):
    world, paths, data = split
    n = data.n_captioned
    assert n == N_SCENES and len(data.images) > n  # edited scenes follow the captioned images
    assert (data.caption_image[: data.n_own_captions] >= 0).all() and (data.caption_image[data.n_own_captions :] == -1).all()
    assert data.hard_captions.shape == (n, 8) and data.hard_images.shape == (data.n_own_captions, 4)
    truth = data.is_negative
    assert isinstance(truth, SceneTruth) and truth.scenes[:n] == read_scenes(paths["scenes"])
    assert [s.text for s in truth.specs] == data.captions
    # the pixels are the renders of the truth's scenes, edits included
    for j in range(len(data.images)):
        assert np.array_equal(to_uint8_images(data.images[j : j + 1])[0], world.render(truth.scenes[j])), j
    caption_kinds = Counter(k for kinds in data.hard_caption_kind for k in kinds)
    image_kinds = Counter(k for kinds in data.hard_image_kind for k in kinds)
    assert [len(k) for k in data.hard_caption_kind] == [8] * n
    assert [len(k) for k in data.hard_image_kind] == [4] * data.n_own_captions
    assert set(caption_kinds) <= set(HARD_NEGATIVE_KINDS) | {"mined"}
    assert {"colour swap", "colour change", "shape change", "count", "mined"} <= set(caption_kinds)
    assert set(image_kinds) == set(SCENE_EDIT_KINDS) | {"mined"}
    # mined images are captioned images, edits are the rendered edited scenes after them
    for c, kinds in enumerate(data.hard_image_kind):
        for j, kind in zip(data.hard_images[c].tolist(), kinds):
            assert (kind == "mined") == (j < n), (c, j, kind)
    for i, kinds in enumerate(data.hard_caption_kind):
        for c, kind in zip(data.hard_captions[i].tolist(), kinds):
            assert kind != "mined" or c < data.n_own_captions


def test_no_hard_negative_is_true_by_the_scenes_or_by_the_pixels(split, parsed):
    world, _, data = split
    truth = data.is_negative
    size = world.config.image_size
    checked = 0
    for image in range(data.n_captioned):
        negatives = data.hard_captions[image].tolist()
        assert len(set(data.captions[c] for c in negatives)) == len(negatives), "an image's negatives are distinct texts"
        for c in negatives:
            assert data.negative(image, c) and truth(image, c)
            assert not score_objects(truth.specs[c], parsed[image], size)["correct"], (image, data.captions[c])
            checked += 1
    for caption in range(data.n_own_captions):
        negatives = data.hard_images[caption].tolist()
        assert len(set(negatives)) == len(negatives)
        assert int(data.caption_image[caption]) not in negatives
        for j in negatives:
            assert data.negative(j, caption) and truth(j, caption)
            assert not score_objects(truth.specs[caption], parsed[j], size)["correct"], (j, data.captions[caption])
            checked += 1
    assert checked == data.hard_captions.numel() + data.hard_images.numel()
    # and the positives are true: the filter is not rejecting everything
    for c in range(data.n_own_captions):
        image = int(data.caption_image[c])
        assert not data.negative(image, c) and truth.holds(image, c)
        assert score_objects(truth.specs[c], parsed[image], size)["correct"]


def test_the_truth_filter_removes_true_negatives_that_mining_alone_would_keep(split):
    """The premise of the check above: the stand-in CLIP, unfiltered, mines captions and images of
    which the caption is true (App. B.1's assumption fails on templated captions)."""
    _, _, data = split
    n, own = data.n_captioned, data.n_own_captions
    image_emb, caption_emb = stand_in_embed(data.images[:n], data.captions[:own])
    hard_captions, hard_images = mine_hard_negatives(image_emb, caption_emb, data.caption_image[:own], 8, 4)
    assert sum(not data.is_negative(i, int(c)) for i in range(n) for c in hard_captions[i]) > 0
    assert sum(not data.is_negative(int(j), c) for c in range(own) for j in hard_images[c]) > 0


def test_no_held_out_pair_in_any_negative_text_or_edited_scene(split):
    world, _, data = split
    held = set(world.config.held_out)
    truth = data.is_negative
    used = set(data.hard_captions.flatten().tolist()) | set(range(data.n_own_captions, len(data.captions)))
    for c in used:
        assert not truth.specs[c].pairs() & held and not _held_out_in_text(data.captions[c], world.config), data.captions[c]
    for scene in truth.scenes:
        assert not {(o.colour, o.shape) for o in scene.objects} & held


def test_positives_of_the_itm_test_are_marked_complete(split):
    world, _, data = split
    truth = data.is_negative
    assert data.caption_complete.shape == (len(data.captions),) and not data.caption_complete[data.n_own_captions :].any()
    for c in range(data.n_own_captions):
        scene = truth.scenes[int(data.caption_image[c])]
        names_all = sum(o.count for o in truth.specs[c].objects) == len(scene.objects)
        assert bool(data.caption_complete[c]) == names_all
    for image in range(data.n_captioned):  # the counting caption names every object
        assert data.caption_complete[data.caption_image == image].any()


# --------------------------------------------------------------------------------------------
# Scene edits
# --------------------------------------------------------------------------------------------
def _cells(world, scene):
    return [(o.shape, o.colour, o.size, world.cell(o)) for o in scene.objects]


def _is_minimal_edit(world, kind, original, edited) -> bool:
    """Whether ``edited`` is ``original`` with exactly the one change ``kind`` names."""
    a, b = _cells(world, original), _cells(world, edited)
    size = world.config.image_size
    if kind in ("colour change", "shape change", "colour swap"):
        if len(a) != len(b):
            return False
        changed = [k for k in range(len(a)) if a[k] != b[k]]
        same_place = all(a[k][2:] == b[k][2:] for k in changed)
        if kind == "colour change":
            return len(changed) == 1 and same_place and a[changed[0]][0] == b[changed[0]][0] and a[changed[0]][1] != b[changed[0]][1]
        if kind == "shape change":
            return len(changed) == 1 and same_place and a[changed[0]][1] == b[changed[0]][1] and a[changed[0]][0] != b[changed[0]][0]
        if len(changed) != 2 or not same_place:
            return False
        p, q = changed
        return (a[p][0], a[q][0]) == (b[p][0], b[q][0]) and (a[p][1], a[q][1]) == (b[q][1], b[p][1]) != (b[p][1], b[q][1])
    if kind in ("mirror", "flip"):
        axis = 0 if kind == "mirror" else 1
        moved = []
        for shape, colour, s, cell in a:
            new = list(cell)
            new[axis] = size - cell[axis] - world.config.side(s)
            moved.append((shape, colour, s, tuple(new)))
        return moved == b
    if kind == "remove":
        return len(b) == len(a) - 1 and all(o in a for o in b)
    if kind == "add":
        return len(b) == len(a) + 1 and b[: len(a)] == a and b[-1][:3] in [o[:3] for o in a]
    raise AssertionError(f"unknown kind {kind}")


def test_scene_edits_are_minimal_placed_by_the_rules_and_read_back_exactly():
    world = ToyWorld(ToyWorldConfig())
    cfg = world.config
    held, rng = set(cfg.held_out), np.random.default_rng(0)
    kinds = Counter()
    for scene in world.scenes("train", 120):
        for kind, edited in scene_edits(world, scene, rng).items():
            kinds[kind] += 1
            assert _is_minimal_edit(world, kind, scene, edited), (kind, scene, edited)
            if kind not in ("mirror", "flip"):  # a mirrored symmetric layout can equal the original
                assert edited.objects != scene.objects
            assert not {(o.colour, o.shape) for o in edited.objects} & held
            for k, obj in enumerate(edited.objects):  # gap from the border and from every other cell
                assert world.fits(edited.objects[:k] + edited.objects[k + 1 :], world.cell(obj), cfg.side(obj.size)), (kind, obj)
            image = world.render(edited)
            read = parse_image(image, cfg)
            assert parse_matches_scene(read, edited), kind
            assert sorted(read, key=lambda o: o.box) == sorted(edited.objects, key=lambda o: o.box), kind
    assert set(kinds) == set(SCENE_EDIT_KINDS)
    # edits that need a second colour or room can be missing; the others come with every scene
    assert kinds["mirror"] == kinds["flip"] == 120


def test_minimal_edit_check_rejects_wrong_edits():
    """The checker of the test above is not vacuous."""
    world = ToyWorld(ToyWorldConfig())
    rng = np.random.default_rng(0)
    for scene in world.scenes("train", 50):
        edits = scene_edits(world, scene, rng)
        if set(edits) == set(SCENE_EDIT_KINDS) and edits["mirror"] != edits["flip"]:
            break
    else:
        raise AssertionError("no scene with every kind of edit among the first 50")
    assert not _is_minimal_edit(world, "colour change", scene, scene)
    assert not _is_minimal_edit(world, "mirror", scene, edits["flip"])
    assert not _is_minimal_edit(world, "colour swap", scene, edits["colour change"])
    assert not _is_minimal_edit(world, "shape change", scene, edits["colour change"])
    assert not _is_minimal_edit(world, "remove", scene, edits["add"])
    assert not _is_minimal_edit(world, "add", scene, edits["remove"])
    assert not _is_minimal_edit(world, "colour change", scene, edits["colour swap"])


def test_the_data_is_exported_once_per_split_and_world_then_read_from_disk(tmp_path, monkeypatch):
    """``export_once``: a second request for the same splits writes nothing (runs at once share
    it, reading only); a new split exports that split alone; another world exports afresh; the
    paths are what ``export_world`` returns."""
    from dptlib.toy import data as toy_data
    from dptlib.toy.world import export_world

    calls = []

    def counting(world, root, splits, n):
        calls.append((world.config.seed, splits, n))
        return export_world(world, root, splits=splits, n=n)

    monkeypatch.setattr(toy_data, "export_world", counting)
    world = ToyWorld(ToyWorldConfig())
    first = toy_data.export_once(world, tmp_path / "toyworld", ("train", "test"), 6)
    assert {s: {k: p.relative_to(tmp_path / "toyworld") for k, p in d.items()} for s, d in first.items()} == \
        {s: {k: p.relative_to(tmp_path / "fresh") for k, p in d.items()} for s, d in
         export_world(world, tmp_path / "fresh", splits=("train", "test"), n=6).items()}
    stamp = first["train"]["captions"].stat().st_mtime_ns
    assert toy_data.export_once(world, tmp_path / "toyworld", ("train", "test"), 6) == first
    assert calls == [(0, ("train", "test"), 6)] and first["train"]["captions"].stat().st_mtime_ns == stamp
    toy_data.export_once(world, tmp_path / "toyworld", ("train", "val"), 6)
    assert calls[-1] == (0, ("val",), 6)
    toy_data.export_once(world, tmp_path / "toyworld", ("train",), 8)  # another size: that split again
    assert calls[-1] == (0, ("train",), 8)
    toy_data.export_once(ToyWorld(ToyWorldConfig(seed=1)), tmp_path / "toyworld", ("train",), 8)  # another world
    assert calls[-1] == (1, ("train",), 8)
