"""The toy world: determinism, bad configurations, captions, referring expressions, the oracle."""

import numpy as np
import pytest

from dptlib.toy.world import (
    ObjectSpec,
    PromptSpec,
    RefSpec,
    ToyObject,
    ToyWorld,
    ToyWorldConfig,
    corrupt,
    oracle_accuracy,
    parse_image,
    resolve,
    score,
    score_objects,
)


@pytest.fixture(scope="module")
def world():
    return ToyWorld(ToyWorldConfig())


def test_scenes_are_deterministic_and_independent_of_split_length(world):
    again = ToyWorld(ToyWorldConfig())
    first = world.scenes("train", 50)
    assert first == again.scenes("train", 50)
    assert first[:10] == again.scenes("train", 10)
    assert all(np.array_equal(world.render(a), again.render(b)) for a, b in zip(first, again.scenes("train", 50)))
    other_seed = ToyWorld(ToyWorldConfig(seed=1)).scenes("train", 50)
    assert first != other_seed
    assert world.scenes("val", 20) != world.scenes("test", 20)


def test_scene_statistics(world):
    scenes = world.scenes("train", 500)
    counts = {len(s.objects) for s in scenes}
    assert counts == {1, 2, 3}
    objects = [o for s in scenes for o in s.objects]
    assert {o.colour for o in objects} == set(world.config.colours) and len(world.config.colours) >= 5
    assert {o.shape for o in objects} == {"circle", "square", "triangle"}
    assert {o.size for o in objects} == {"small", "large"}
    for s in scenes:  # no overlap, gap kept, inside the image
        for i, a in enumerate(s.objects):
            assert 0 <= a.box[0] and a.box[2] <= s.image_size and 0 <= a.box[1] and a.box[3] <= s.image_size
            for b in s.objects[i + 1 :]:
                apart_x = a.box[2] <= b.box[0] or b.box[2] <= a.box[0]
                apart_y = a.box[3] <= b.box[1] or b.box[3] <= a.box[1]
                assert apart_x or apart_y


def test_held_out_pairs_never_in_training_scenes_or_captions(world):
    held = set(world.config.held_out)
    for split in ("train", "val", "test"):
        for scene in world.scenes(split, 300):
            assert not {(o.colour, o.shape) for o in scene.objects} & held
            for spec in world.captions(scene):
                assert not spec.pairs() & held
                for colour, shape in held:
                    assert f"{colour} {shape}" not in spec.text
    ood = world.scenes("ood", 50)
    assert all({(o.colour, o.shape) for o in s.objects} & held for s in ood)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=16), "too small"),
        (dict(image_size=36), "multiple of 8"),
        (dict(max_objects=5), "do not fit"),
        (dict(min_objects=0), "min_objects"),
        (dict(colours=("red", "magenta")), "unknown colour"),
        (dict(shapes=("circle", "star")), "unknown shape"),
        (dict(held_out=(("red", "hexagon"),)), "held-out pair"),
    ],
)
def test_bad_configurations_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ToyWorldConfig(**kwargs)


def test_unknown_split_raises(world):
    with pytest.raises(ValueError, match="unknown split"):
        world.scene("training", 0)


def test_64px_with_four_objects_works():
    world = ToyWorld(ToyWorldConfig(image_size=64, max_objects=4))
    scenes = world.scenes("train", 200)
    assert max(len(s.objects) for s in scenes) == 4
    for scene in scenes:
        image = world.render(scene)
        assert image.shape == (64, 64, 3)
        assert sorted(parse_image(image, world.config), key=lambda o: o.box) == sorted(scene.objects, key=lambda o: o.box)


def test_captions_cover_every_kind(world):
    kinds = set()
    for scene in world.scenes("train", 200):
        specs = world.captions(scene)
        assert len(specs) >= 4
        kinds |= {s.category for s in specs}
    assert {"single", "counting", "conjunction", "spatial"} <= kinds


def test_caption_texts():
    two = PromptSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")))
    assert two.text == "a red circle and a blue square"
    assert PromptSpec((ObjectSpec("triangle", "yellow", count=2),), category="counting").text == "two yellow triangles"
    assert PromptSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")), relation="left of").text == (
        "a red circle to the left of a blue square"
    )
    assert PromptSpec((ObjectSpec("circle", "red"),), position="top").text == "a red circle at the top"
    assert RefSpec("square", position="left").text == "the square on the left"
    assert ObjectSpec("circle", "purple", "large").text == "a large purple circle"


def test_oracle_is_exact_on_1000_ground_truth_renders(world):
    """Parse = scene exactly (shapes, colours, sizes, pixel boxes); every caption scores correct;
    every referring expression resolves to its object."""
    for scene in world.scenes("test", 1000):
        image = world.render(scene)
        parsed = parse_image(image, world.config)
        assert sorted(parsed, key=lambda o: o.box) == sorted(scene.objects, key=lambda o: o.box)
        for spec in world.captions(scene):
            assert score_objects(spec, parsed, scene.image_size)["correct"], spec.text
        for index, refs in enumerate(world.referring_expressions(scene)):
            for ref in refs:
                assert resolve(ref, scene.objects, world.config.small_side / 2) == index


def test_oracle_survives_moderate_noise_and_blur(world):
    scenes = world.scenes("test", 150)
    assert oracle_accuracy(world, scenes, noise_std=0.05, blur_sigma=0.5)["scene"] >= 0.97
    assert oracle_accuracy(world, scenes, noise_std=0.1, blur_sigma=0.0)["scene"] >= 0.95
    # and heavy corruption does hurt it: the check can fail
    assert oracle_accuracy(world, scenes, noise_std=0.35, blur_sigma=1.5)["scene"] < 0.9


def _image(world, *objects):
    from dptlib.toy.world import Scene

    return world.render(Scene(tuple(objects), world.config.image_size))


def test_score_catches_each_kind_of_mistake(world):
    # a red circle on the left, a blue square on the right
    red_circle = ToyObject("circle", "red", "small", (3, 12, 10, 19))
    blue_square = ToyObject("square", "blue", "small", (20, 12, 27, 19))
    image = _image(world, red_circle, blue_square)
    right = PromptSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")), relation="left of")
    assert score(right, image, world.config) == {
        "presence": True, "binding": True, "count": True, "spatial": True, "correct": True,
    }
    swapped_relation = PromptSpec(right.objects, relation="right of")
    assert score(swapped_relation, image, world.config)["spatial"] is False
    swapped_colours = PromptSpec((ObjectSpec("circle", "blue"), ObjectSpec("square", "red")))
    result = score(swapped_colours, image, world.config)
    assert result["presence"] and not result["binding"] and not result["correct"]
    two = PromptSpec((ObjectSpec("circle", "red", count=2),), category="counting")
    result = score(two, image, world.config)
    assert result["presence"] and not result["count"] and not result["binding"]
    missing = PromptSpec((ObjectSpec("triangle", "red"),))
    assert score(missing, image, world.config)["presence"] is False
    assert score(PromptSpec((ObjectSpec("circle", "red"),), position="left"), image, world.config)["correct"]
    assert not score(PromptSpec((ObjectSpec("circle", "red"),), position="right"), image, world.config)["correct"]
    assert score(PromptSpec((ObjectSpec("circle", "red", "large"),)), image, world.config)["binding"] is False


def test_oracle_reads_float_images_and_rejects_bad_shapes(world):
    scene = world.scene("train", 3)
    image = world.render(scene)
    assert parse_image(image.astype(float) / 255.0, world.config) == parse_image(image, world.config)
    with pytest.raises(ValueError, match="RGB"):
        parse_image(image[..., 0], world.config)


def test_corrupt_is_seeded(world):
    image = world.render(world.scene("train", 0))
    assert np.array_equal(corrupt(image, 0.1, 1.0, seed=3), corrupt(image, 0.1, 1.0, seed=3))
    assert not np.array_equal(corrupt(image, 0.1, 1.0, seed=3), corrupt(image, 0.1, 1.0, seed=4))
    assert np.array_equal(corrupt(image), image)
