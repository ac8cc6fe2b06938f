"""The real-data path on data the project makes: a manifest of COCO / MDETR-format splits (the
toy world exported), images resized to a square, and an OpenCLIP evaluator named by a spec."""

import json

import pytest
import torch
import yaml

from dptlib.data.embedders import open_clip_embedder
from dptlib.data.manifest import manifest_splits, read_manifest
from dptlib.toy.data import write_manifest
from dptlib.toy.world import ToyWorld, ToyWorldConfig, export_world

from toy_fixtures import stand_in_embed


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    paths = export_world(ToyWorld(ToyWorldConfig()), root, splits=("train", "test"), n=10)
    return write_manifest(paths, root / "manifest.yaml"), paths


def test_a_manifest_is_read_relative_to_its_folder_and_checked(manifest, tmp_path):
    path, paths = manifest
    assert read_manifest(path)["test"]["refexp"] == paths["test"]["refexp"].resolve()
    relative = tmp_path / "m.yaml"
    relative.write_text(f"train: {{captions: {paths['train']['captions']}, refexp: missing.json, images: .}}\n")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_manifest(relative)
    relative.write_text("train: {captions: a.json}\n")
    with pytest.raises(ValueError, match=r"lacks \['refexp', 'images'\]"):
        read_manifest(relative)
    with pytest.raises(FileNotFoundError, match="no data manifest"):
        read_manifest(tmp_path / "none.yaml")


def test_manifest_splits_read_resize_and_mine(manifest):
    path, paths = manifest
    splits = manifest_splits(path, stand_in_embed, {"train": 6, "test": None}, image_size=48, k_captions=3, k_images=2)
    train, test = splits["train"], splits["test"]
    assert train.images.shape == (6, 3, 48, 48) and test.images.shape[0] == 10
    assert train.hard_captions.shape[1] == 3 and train.is_negative is None  # no oracle: App. B.1 as the paper does
    # boxes stay normalised: the same expression's box as the MDETR file gives it, over the image size
    ref = json.loads(paths["test"]["refexp"].read_text())
    image, box = ref["images"][0], ref["annotations"][0]["bbox"]
    expected = [(box[0] + box[2] / 2) / image["width"], (box[1] + box[3] / 2) / image["height"], box[2] / image["width"],
                box[3] / image["height"]]
    torch.testing.assert_close(test.expression_box[0], torch.tensor(expected))
    with pytest.raises(ValueError, match=r"no split\(s\) \['val'\]"):
        manifest_splits(path, stand_in_embed, {"val": 2})


def test_a_split_may_test_itm_and_rec_on_two_image_sets(manifest, tmp_path):
    """The paper tests ITM on MS-COCO val2014 and REC on RefCOCO testA: a split naming the two
    apart gives ITM queries and negatives on the first set only, REC on the second only."""
    from dptlib.evaluation.metrics import itm_test_set

    _, paths = manifest
    part = {k: str(v) for k, v in paths["train"].items()}
    path = tmp_path / "apart.yaml"
    path.write_text(yaml.safe_dump({"test": {"itm": {"captions": part["captions"], "images": part["images"]},
                                             "rec": {k: str(v) for k, v in paths["test"].items()}}}))
    assert set(read_manifest(path)["test"]) == {"itm", "rec"}
    test = manifest_splits(path, stand_in_embed, {"test": 6}, image_size=48, k_captions=3, k_images=2)["test"]
    alone = {split: manifest_splits(write_manifest({split: paths[split]}, tmp_path / f"{split}.yaml"), stand_in_embed, {split: 6},
                                    image_size=48, k_captions=3, k_images=2)[split] for split in ("train", "test")}
    assert len(test) == 12 and test.n_captioned == 6
    torch.testing.assert_close(test.images[:6], alone["train"].images[:6])
    torch.testing.assert_close(test.images[6:], alone["test"].images[:6])
    assert test.captions == alone["train"].captions and test.expressions == alone["test"].expressions
    assert bool((test.expression_image >= 6).all())  # REC on the second image set only
    assert int(test.hard_images.max()) < 6 and int(test.caption_image.max()) < 6  # ITM never reaches it
    queries = itm_test_set(test, n_negatives=2)
    assert all(i < 6 and max(c) < len(test.captions) for i, c in queries.image_to_text)
    assert all(max(images) < 6 for _, images in queries.text_to_image)
    path.write_text(yaml.safe_dump({"test": {"itm": {"captions": part["captions"], "images": part["images"]}}}))
    with pytest.raises(ValueError, match=r"needs exactly \['itm', 'rec'\]"):
        read_manifest(path)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(spec, model): a small OpenCLIP architecture registered from a config file, its random
    weights saved as a checkpoint file, as a user's ViT-H-14 checkpoint would be."""
    open_clip = pytest.importorskip("open_clip")
    root = tmp_path_factory.mktemp("clip")
    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (root / "tiny_clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(root / "tiny_clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny_clip").eval()
    torch.save(model.state_dict(), root / "tiny.pt")
    return f"open_clip:tiny_clip:{root / 'tiny.pt'}", model


def test_an_open_clip_evaluator_loads_from_a_spec(tiny_clip):
    import open_clip

    spec, model = tiny_clip
    embed = open_clip_embedder(spec)
    image_emb, text_emb = embed(torch.rand(3, 3, 40, 40) * 2 - 1, ["a red circle", "two blue squares"])
    assert image_emb.shape == (3, 16) and text_emb.shape == (2, 16)
    torch.testing.assert_close(image_emb.norm(dim=-1), torch.ones(3))
    with torch.no_grad():  # the loaded weights are the saved ones: same text embedding as the model itself
        direct = torch.nn.functional.normalize(model.encode_text(open_clip.get_tokenizer("tiny_clip")(["a red circle"])), dim=-1)
    torch.testing.assert_close(text_emb[:1], direct)
    with pytest.raises(ValueError, match="open_clip:<architecture>:<checkpoint>"):
        open_clip_embedder("ViT-H-14")


def test_stage_1_from_the_command_line_on_a_manifest(manifest, tiny_clip, tmp_path):
    """``python -m dptlib.method.train probe`` (what ``accelerate launch -m dptlib.method.train probe`` runs per process)."""
    from dptlib.method.checkpoint import load_adapter
    from dptlib.method.train import main
    from dptlib.toy.model import build_random_pipeline

    path, _ = manifest
    build_random_pipeline(text_width=24).save_pretrained(tmp_path / "sd")
    assert main(["probe", "--scale", "smoke", "--model", str(tmp_path / "sd"), "--data", str(path), "--evaluator", tiny_clip[0],
                 "--out", str(tmp_path / "probe"), "--n-train-images", "8", "--image-size", "32"]) == 0
    adapter, blocks, meta = load_adapter(tmp_path / "probe")
    assert meta["model"] == str(tmp_path / "sd") and meta["text_dim"] == 24 and blocks == ["mid"]
    assert len(json.loads((tmp_path / "probe" / "log.json").read_text())) == 4  # the smoke preset's steps


def test_referred_only_keeps_the_images_an_expression_names(manifest, tmp_path):
    from dptlib.data.discrimination import load_discrimination_data

    _, paths = manifest
    ref = json.loads(paths["test"]["refexp"].read_text())
    ids = sorted({entry["original_id"] for entry in ref["images"]})[:3]  # a RefCOCO-like subset of the images
    kept = [entry for entry in ref["images"] if entry["original_id"] in ids]
    ref = {**ref, "images": kept, "annotations": [a for a in ref["annotations"] if a["image_id"] in {e["id"] for e in kept}]}
    (tmp_path / "subset.json").write_text(json.dumps(ref))
    every = load_discrimination_data(paths["test"]["captions"], tmp_path / "subset.json", paths["test"]["images"])
    referred = load_discrimination_data(paths["test"]["captions"], tmp_path / "subset.json", paths["test"]["images"],
                                        referred_only=True)
    assert len(every) == 10 and len(referred) == 3
    assert len(referred.expressions) == len(every.expressions) == len(kept)
    assert sorted(set(referred.expression_image.tolist())) == [0, 1, 2]


def test_every_image_storage_gives_the_same_images_fingerprint_and_shuffle(manifest):
    import hashlib

    from dptlib.data.discrimination import fingerprint, load_discrimination_data, shuffled_pairs
    from dptlib.data.images import ImageFiles, Uint8Images

    _, paths = manifest
    split = paths["test"]
    held = {storage: load_discrimination_data(split["captions"], split["refexp"], split["images"], image_size=40, storage=storage)
            for storage in ("float32", "uint8", "lazy")}
    reference = held["float32"].images
    assert isinstance(held["uint8"].images, Uint8Images) and isinstance(held["lazy"].images, ImageFiles)
    assert held["uint8"].images.array.nbytes * 4 == reference.numel() * reference.element_size()  # a quarter of float32
    index = torch.tensor([3, 0, 7])
    for data in held.values():
        images = data.images
        assert len(images) == len(reference) and tuple(images.shape) == tuple(reference.shape)
        assert torch.equal(images[2], reference[2]) and torch.equal(images[-1], reference[-1])
        assert torch.equal(images[1:4], reference[1:4]) and torch.equal(images[index], reference[index])
    digests = {storage: fingerprint(data) for storage, data in held.items()}
    assert len(set(digests.values())) == 1
    # the chunked digest is the digest of the whole float tensor, as runs fingerprinted before it had chunks
    whole = hashlib.sha256(reference.contiguous().numpy().tobytes())
    data = held["float32"]
    for tensor in (data.caption_image, data.expression_image, data.expression_box):
        whole.update(tensor.contiguous().numpy().tobytes())
    whole.update("\n".join(data.captions + ["|"] + data.expressions).encode())
    assert digests["float32"] == whole.hexdigest()
    shuffled = {storage: shuffled_pairs(data, seed=1) for storage, data in held.items()}
    assert type(shuffled["uint8"].images) is Uint8Images and type(shuffled["lazy"].images) is ImageFiles
    assert len({fingerprint(d) for d in shuffled.values()}) == 1 and fingerprint(shuffled["uint8"]) != digests["uint8"]
    with pytest.raises(ValueError, match="float32, uint8, lazy; got 'f16'"):
        load_discrimination_data(split["captions"], split["refexp"], split["images"], storage="f16")
    with pytest.raises(IndexError):
        held["uint8"].images[len(reference)]
