"""The toy Stable Diffusion: tokenizer, hard negatives, a smoke-scale build, and the shipped model."""

import json

import numpy as np
import pytest
import torch

from dptlib.config import TOY_SD_DIR
from dptlib.data.embedders import load_evaluator
from dptlib.toy.model import (
    ToyModelConfig,
    build_tokenizer,
    build_toy_sd,
    hard_negative_accuracy,
    hard_negatives,
    load_text_clip,
    load_toy_pipeline,
    text_clip_embeddings,
    tokenize,
    toy_vocabulary,
)
from dptlib.toy.prompts import TOY_BENCHMARKS, toy_benchmark
from dptlib.toy.world import ToyWorld, ToyWorldConfig, score_objects


def test_tokenizer_round_trip_and_special_ids(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = build_tokenizer(max_length=16)
    vocab = toy_vocabulary()
    assert tokenizer.eos_token_id == len(vocab) - 1 != 2  # open_clip pools at the largest id
    ids = tokenize(tokenizer, ["a red circle to the left of a blue square"])
    assert ids.shape == (1, 16)
    assert ids[0, 0] == tokenizer.bos_token_id and (ids[0] == tokenizer.eos_token_id).sum() == 1
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert torch.equal(tokenize(again, ["two yellow triangles"]), tokenize(tokenizer, ["two yellow triangles"]))


def test_every_toy_text_is_in_the_vocabulary():
    tokenizer = build_tokenizer()
    world = ToyWorld(ToyWorldConfig())
    texts = [s.text for scene in world.scenes("train", 200) for s in world.captions(scene)]
    texts += [r.text for scene in world.scenes("train", 200) for refs in world.referring_expressions(scene) for r in refs]
    texts += [p.prompt for name in TOY_BENCHMARKS for p in toy_benchmark(name, world.config)]
    ids = tokenize(tokenizer, texts)
    assert not (ids == tokenizer.unk_token_id).any()
    assert ((ids == tokenizer.eos_token_id).sum(1) == 1).all()  # nothing truncated


def test_hard_negatives_are_false_and_minimal():
    world = ToyWorld(ToyWorldConfig())
    rng = np.random.default_rng(0)
    kinds = set()
    for scene in world.scenes("val", 100):
        for spec in world.captions(scene):
            for kind, negative in hard_negatives(spec, scene.objects, scene.image_size, rng).items():
                kinds.add(kind)
                assert not score_objects(negative, scene.objects, scene.image_size)["correct"]
                assert negative.text != spec.text
    assert {"colour swap", "count", "size", "left/right", "above/below"} <= kinds


THREADS_AFTER_BUILD = {}


@pytest.fixture(scope="module")
def smoke_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-sd")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # a build with threads=2 must hand back 1
    try:
        report = build_toy_sd(ToyModelConfig.preset("smoke"), root / "toy-sd", root / "toy-evaluator", root / "work", threads=2)
        THREADS_AFTER_BUILD["threads"] = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return root, report


def test_a_build_restores_torchs_thread_count(smoke_build):
    root, report = smoke_build
    assert report["threads"] == 2 and THREADS_AFTER_BUILD["threads"] == 1


def test_smoke_build_saves_a_stock_diffusers_pipeline(smoke_build):
    from diffusers import StableDiffusionPipeline

    root, report = smoke_build
    pipe = StableDiffusionPipeline.from_pretrained(root / "toy-sd")
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.safety_checker is None
    kwargs = dict(num_inference_steps=3, guidance_scale=7.5, output_type="np")
    a = pipe(["a red circle"], generator=torch.Generator().manual_seed(0), **kwargs).images
    b = pipe(["a red circle"], generator=torch.Generator().manual_seed(0), **kwargs).images
    assert a.shape == (1, 32, 32, 3) and np.array_equal(a, b)
    assert set(report["seconds"]) >= {"clip", "evaluator", "vae", "unet", "total"}
    assert all(len(report["loss"][part]) > 0 for part in ("clip", "evaluator", "vae", "unet"))


def test_smoke_build_resumes_from_finished_parts(smoke_build):
    root, report = smoke_build
    again = build_toy_sd(ToyModelConfig.preset("smoke"), root / "toy-sd-2", root / "toy-evaluator-2", root / "work", threads=2)
    # every part was loaded from the work folder, so the weights are the same
    from safetensors.torch import load_file

    first = load_file(root / "toy-sd" / "unet" / "diffusion_pytorch_model.safetensors")
    second = load_file(root / "toy-sd-2" / "unet" / "diffusion_pytorch_model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert again["seconds"]["unet"] == report["seconds"]["unet"]


def test_part_inputs_follow_the_training_order():
    base = ToyModelConfig.preset("smoke")
    changed = {
        "vae_lr": {"vae", "unet"},
        "clip_lr": {"clip", "evaluator", "unet"},  # the evaluator shares the contrastive loop
        "evaluator_steps": {"evaluator"},
        "complete_caption_rate": {"unet"},
        "n_scenes": {"clip", "evaluator", "vae", "unet"},
        "checkpoint_every": set(),
    }
    for name, parts in changed.items():
        other = ToyModelConfig.preset("smoke", **{name: getattr(base, name) * 2})
        assert {p for p in ToyModelConfig.PART_INPUTS if other.part_inputs(p) != base.part_inputs(p)} == parts, name


def test_a_changed_configuration_retrains_only_the_parts_it_reaches(smoke_build, tmp_path):
    """A work folder from an earlier build is reused only where the configuration still holds."""
    import shutil

    from safetensors.torch import load_file

    root, report = smoke_build
    shutil.copytree(root / "work", tmp_path / "work")
    again = build_toy_sd(ToyModelConfig.preset("smoke", complete_caption_rate=0.3), tmp_path / "toy-sd",
                         tmp_path / "toy-evaluator", tmp_path / "work", threads=2)
    for part, same in (("clip/model.safetensors", True), ("vae/diffusion_pytorch_model.safetensors", True),
                       ("unet/diffusion_pytorch_model.safetensors", False)):
        first, second = load_file(root / "toy-sd" / part), load_file(tmp_path / "toy-sd" / part)
        assert all(torch.equal(first[k], second[k]) for k in first) == same, part
    assert again["seconds"]["clip"] == report["seconds"]["clip"]
    assert json.loads((tmp_path / "work" / "unet.config.json").read_text())["complete_caption_rate"] == 0.3


def test_a_build_from_scratch_is_bit_reproducible(smoke_build, tmp_path):
    """Same seed, same thread count: a second build from nothing gives byte-identical weights, so a
    retrain reproduces the shipped model rather than merely resembling it."""
    from safetensors.torch import load_file

    root, _ = smoke_build
    build_toy_sd(ToyModelConfig.preset("smoke"), tmp_path / "toy-sd", tmp_path / "toy-evaluator", tmp_path / "work", threads=2)
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "clip/model.safetensors"):
        first, second = load_file(root / "toy-sd" / part), load_file(tmp_path / "toy-sd" / part)
        assert all(torch.equal(first[k], second[k]) for k in first), part


# ---- the shipped model ----------------------------------------------------------------------
shipped = pytest.mark.skipif(not (TOY_SD_DIR / "model_index.json").exists(), reason="no shipped toy model")


@shipped
def test_shipped_files_match_their_provenance_and_size():
    import hashlib

    provenance = json.loads((TOY_SD_DIR / "PROVENANCE.json").read_text())
    total = 0
    for name, digest in provenance["files"].items():
        path = TOY_SD_DIR.parent / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name
        total += path.stat().st_size
    assert total <= 20 * 2**20
    assert set(provenance["seconds"]) >= {"clip", "evaluator", "vae", "unet", "total"}  # the budget is reported, not tested


@shipped
def test_shipped_text_encoder_separates_every_compositional_axis():
    pipe = load_toy_pipeline()
    clip = load_text_clip()
    # the pipeline's text encoder is the CLIP's text tower
    for key, value in clip.text_model.state_dict().items():
        assert torch.equal(value, pipe.text_encoder.state_dict()[key])
    accuracy = hard_negative_accuracy(lambda i, x: text_clip_embeddings(clip, i, x), pipe.tokenizer, ToyWorld(ToyWorldConfig()), n_scenes=150)
    assert accuracy["colour swap"] >= 0.95
    assert accuracy["count"] >= 0.90 and accuracy["size"] >= 0.90
    assert accuracy["left/right"] >= 0.90 and accuracy["above/below"] >= 0.90


@shipped
def test_shipped_evaluator_loads_through_open_clip():
    import open_clip

    model, tokenizer = load_evaluator()
    assert isinstance(model, open_clip.model.CLIP)
    world = ToyWorld(ToyWorldConfig())
    scenes = world.scenes("test", 32)
    images = torch.from_numpy(np.stack([world.render(s) for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.encode_text(tokenize(tokenizer, [world.captions(s)[2].text for s in scenes])), dim=-1)
        image = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    similarity = image @ text.T
    assert (similarity.argmax(1) == torch.arange(32)).float().mean() > 0.5  # far above chance (1/32)


@shipped
def test_shipped_pipeline_draws_the_asked_object():
    """The base model draws the asked-for object (shape, colour, size), and only it, most of the
    time (the shipped model: 79 % / 71 % / 67 % on these 24 prompts; thresholds leave room for
    another CPU's rounding), yet not always: that is the room DPT is meant to close."""
    from dptlib.toy.evaluation import evaluate_generation

    pipe = load_toy_pipeline()
    world = ToyWorld(ToyWorldConfig())
    prompts = [p for p in toy_benchmark("toy-nss", world.config, n=200) if p.category == "attribute"][:24]
    scores = evaluate_generation(pipe, prompts, seeds=[0], config=world.config, num_inference_steps=25, progress=False)
    assert scores["presence"].mean() >= 0.7 and scores["binding"].mean() >= 0.6 and scores["correct"].mean() >= 0.5
    assert scores["correct"].mean() < 1.0
