"""The toy world written in the real formats and read back by the real readers (and pycocotools)."""

import json

import numpy as np
import pytest
from PIL import Image

from dptlib.data.coco import read_coco_captions, read_refexp
from dptlib.toy.world import ToyWorld, ToyWorldConfig, export_world, image_id, scene_from_dict


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    world = ToyWorld(ToyWorldConfig())
    root = tmp_path_factory.mktemp("toyworld")
    return world, export_world(world, root, splits=("train", "test"), n=25)


def test_captions_read_back(exported):
    world, paths = exported
    images = read_coco_captions(paths["train"]["captions"])
    assert len(images) == 25
    for record, scene in zip(images, world.scenes("train", 25)):
        assert record.image_id == image_id("train", scene.scene_id)
        assert record.captions == [s.text for s in world.captions(scene)]
        on_disk = np.asarray(Image.open(paths["train"]["images"] / record.file_name).convert("RGB"))
        assert np.array_equal(on_disk, world.render(scene))


def test_refexp_read_back(exported):
    world, paths = exported
    records = read_refexp(paths["test"]["refexp"])
    scenes = {image_id("test", s.scene_id): s for s in world.scenes("test", 25)}
    expected = sum(len(r) for s in scenes.values() for r in world.referring_expressions(s))
    assert len(records) == expected > 25
    for record in records:
        scene = scenes[record.image_id]
        x, y, w, h = record.box
        target = [o for o in scene.objects if o.box == (x, y, x + w, y + h)]
        assert len(target) == 1 and target[0].shape in record.expression


def test_instances_with_pycocotools(exported):
    COCO = pytest.importorskip("pycocotools.coco", reason="a dev tool (make setup installs it)").COCO

    world, paths = exported
    coco = COCO(str(paths["train"]["instances"]))
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"circle", "square", "triangle"}
    scenes = world.scenes("train", 25)
    assert len(coco.getAnnIds()) == sum(len(s.objects) for s in scenes)
    for scene in scenes:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id("train", scene.scene_id)))
        boxes = sorted(tuple(a["bbox"]) for a in anns)
        assert boxes == sorted((o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]) for o in scene.objects)
        for ann in anns:  # the polygon covers the object (squares exactly)
            mask = coco.annToMask(ann)
            if coco.loadCats(ann["category_id"])[0]["name"] == "square":
                assert mask.sum() == ann["area"]
            assert mask.sum() > 0.6 * ann["area"]


def test_scene_specs_round_trip(exported):
    world, paths = exported
    data = json.loads(paths["train"]["scenes"].read_text())
    assert [scene_from_dict(s) for s in data["scenes"]] == world.scenes("train", 25)


def test_readers_reject_broken_files(tmp_path):
    bad = tmp_path / "captions.json"
    bad.write_text(json.dumps({"images": [], "annotations": [{"id": 1, "image_id": 7, "caption": "x"}]}))
    with pytest.raises(ValueError, match="unknown image 7"):
        read_coco_captions(bad)
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1, "caption": "the x"}],
                               "annotations": []}))
    with pytest.raises(ValueError, match="has no box"):
        read_refexp(bad)
