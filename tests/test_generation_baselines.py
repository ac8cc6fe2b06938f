"""Generation machinery of stage 2 and §3.3: per-prompt arguments, Attend-and-Excite, refreshed
self-correction, method comparison with CLIP scores, the U-Net's caption choice."""

import numpy as np
import pytest
import torch

from dptlib.evaluation.baselines import attend_and_excite_arguments, attend_and_excite_pipeline, subject_token_indices
from dptlib.evaluation.metrics import clip_score
from dptlib.method.sampling import generate
from dptlib.toy.evaluation import compare_methods, evaluate_generation
from dptlib.toy.model import build_random_pipeline, complete_captions
from dptlib.toy.prompts import toy_benchmark
from dptlib.toy.world import ToyWorld, ToyWorldConfig


@pytest.fixture(scope="module")
def pipe():
    return build_random_pipeline()


def fake_embed(images, texts):
    """A fixed random 'CLIP' for plumbing tests."""
    g = torch.Generator().manual_seed(0)
    image_emb = None if images is None else torch.nn.functional.normalize(images.flatten(1) @ torch.randn(images[0].numel(), 8, generator=g), dim=-1)
    text_emb = None if texts is None else torch.nn.functional.normalize(torch.randn(len(texts), 8, generator=g), dim=-1)
    return image_emb, text_emb


def test_subject_token_indices_find_singular_and_plural(pipe):
    tokens = pipe.tokenizer.convert_ids_to_tokens(pipe.tokenizer("two red circles left of a blue square").input_ids)
    indices = subject_token_indices(pipe.tokenizer, "two red circles left of a blue square", ["circle", "square"])
    assert [tokens[i] for i in indices] == ["circles", "square"]
    with pytest.raises(ValueError, match="triangle"):
        subject_token_indices(pipe.tokenizer, "a red circle", ["triangle"])


def test_attend_and_excite_shares_the_model_and_generates(pipe):
    excite = attend_and_excite_pipeline(pipe)
    assert excite.unet is pipe.unet and excite.vae is pipe.vae
    prompts = toy_benchmark("toy-cc", n=2)
    arguments = attend_and_excite_arguments(pipe.tokenizer, prompts, num_inference_steps=4, attn_res=(8, 8))
    assert arguments["max_iter_to_alter"] == 2 and len(arguments["per_prompt"]["token_indices"]) == 2
    images = generate(excite, [p.prompt for p in prompts], seed=0, num_inference_steps=4, progress=False, **arguments)
    plain = generate(pipe, [p.prompt for p in prompts], seed=0, num_inference_steps=4, progress=False)
    assert images.shape == plain.shape == (2, 32, 32, 3)
    assert not np.array_equal(images, plain)  # the latents were excited
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert "AttendExciteAttnProcessor" not in processors  # the base pipeline's attention is restored


def test_per_prompt_arguments_must_match_the_prompts(pipe):
    with pytest.raises(ValueError, match="per_prompt"):
        generate(pipe, ["a red circle", "a blue square"], num_inference_steps=2, progress=False,
                 per_prompt={"token_indices": [[2]]})


def test_refreshing_every_second_step_halves_the_gradient_passes(pipe, monkeypatch, tmp_path):
    import dptlib.method.sampling as sampling
    from dptlib.method.adapter import AdapterConfig, DiscriminativeAdapter
    from dptlib.method.backbone import block_channels

    adapter = DiscriminativeAdapter(AdapterConfig(d_model=32, heads=4, ffn=64, num_queries=6, num_matching_queries=2, dropout=0.0),
                                    [block_channels(pipe.unet, "mid")], pipe.text_encoder.config.hidden_size)
    calls = []
    original = sampling.correction_gradient
    monkeypatch.setattr(sampling, "correction_gradient", lambda *a, **k: calls.append(1) or original(*a, **k))
    kwargs = dict(seed=0, num_inference_steps=6, progress=False)
    every = generate(pipe, ["a red circle"], self_correct=dict(adapter=adapter, blocks=["mid"], eta=0.5), **kwargs)
    assert len(calls) == 6
    calls.clear()
    second = generate(pipe, ["a red circle"], self_correct=dict(adapter=adapter, blocks=["mid"], eta=0.5, refresh_every=2), **kwargs)
    assert len(calls) == 3
    assert not np.array_equal(every, second)
    with pytest.raises(ValueError, match="refresh_every"):
        generate(pipe, ["a red circle"], self_correct=dict(adapter=adapter, blocks=["mid"], eta=0.5, refresh_every=0), **kwargs)


def test_compare_methods_adds_clip_scores_and_features(pipe):
    prompts = {"toy-cc": toy_benchmark("toy-cc", n=2), "toy-nss": toy_benchmark("toy-nss", n=4)[:2]}
    scores, features = compare_methods({"a": (pipe, None), "b": (pipe, {"guidance_scale": 1.0})}, prompts, seeds=(0, 1),
                                       embed=fake_embed, num_inference_steps=2, progress=False)
    assert len(scores) == 2 * 4 * 2 and set(scores["method"]) == {"a", "b"} and set(scores["benchmark"]) == set(prompts)
    assert features["a"].shape == (8, 8)
    alone = evaluate_generation(pipe, prompts["toy-cc"], seeds=(1,), num_inference_steps=2, progress=False)
    images = generate(pipe, [p.prompt for p in prompts["toy-cc"]], seed=1, num_inference_steps=2, progress=False)
    rows = scores[(scores["method"] == "a") & (scores["benchmark"] == "toy-cc") & (scores["seed"] == 1)]
    assert np.allclose(rows["clip_score"], clip_score(fake_embed, images, [p.prompt for p in prompts["toy-cc"]]))
    assert rows["correct"].tolist() == alone["correct"].tolist()


def test_complete_captions_name_every_object():
    world = ToyWorld(ToyWorldConfig())
    for scene in world.scenes("train", 200):
        complete = complete_captions(scene, world.captions(scene))
        assert complete, "every scene has a caption that names all its objects (the counting caption)"
        render = world.render(scene)
        from dptlib.toy.evaluation import oracle_scores

        assert oracle_scores(np.stack([render] * len(complete)), complete, world.config)["correct"].all()
