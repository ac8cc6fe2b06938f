"""ClipScore: 100 * cos by hand on fixed embeddings, and on the toy evaluator CLIP."""

import numpy as np
import pandas as pd
import pytest
import torch

from dptlib.evaluation.benchmarks import tensor_scorer
from dptlib.evaluation.graders.clip import ClipScore, check_activation


def fixed_embed(images, texts):
    """Image k -> unit vector e_k; text "t<j>" -> (e_j + e_3) / sqrt(2) (so cos = 1/sqrt(2) when j == k)."""
    eye = torch.eye(4)
    image_emb = eye[: len(images)]
    text_emb = torch.stack([(eye[int(t[1:])] + eye[3]) / 2 ** 0.5 for t in texts])
    return image_emb, text_emb


def test_score_is_scale_times_cosine_without_clamp():
    pictures = [np.zeros((8, 8, 3), np.uint8)] * 3
    items = pd.DataFrame({"prompt_id": [0, 1, 2], "prompt": ["t0", "t2", "t2"]})
    table = ClipScore(fixed_embed, "fixed").score(pictures, items)
    assert table["CLIP"].tolist() == pytest.approx([100 / 2 ** 0.5, 0.0, 100 / 2 ** 0.5])
    raw = ClipScore(lambda i, t: (-fixed_embed(i, t)[0], fixed_embed(i, t)[1]), "negated", column="non-spatial", scale=1.0)
    assert raw.score(pictures, items)["non-spatial"].tolist() == pytest.approx([-1 / 2 ** 0.5, 0.0, -1 / 2 ** 0.5])  # not clamped


def test_on_the_toy_evaluator_clip():
    from dptlib.data.embedders import clip_embedder, load_evaluator
    from dptlib.evaluation.metrics import clip_score
    from dptlib.toy.world import ToyWorld, ToyWorldConfig

    world = ToyWorld(ToyWorldConfig(seed=0))
    scenes = world.scenes("val", 4)
    pictures = [world.render(s) for s in scenes]
    prompts = [world.captions(s)[0].text for s in scenes]
    embed = clip_embedder(*load_evaluator())
    table = ClipScore(tensor_scorer(embed), "toy evaluator").score(pictures, pd.DataFrame({"prompt": prompts}))
    np.testing.assert_allclose(table["CLIP"], clip_score(embed, np.stack(pictures), prompts), rtol=1e-5)  # positive here: equal
    assert (table["CLIP"] > 0).all()


def test_openai_weights_in_a_gelu_model_are_refused_in_one_line():
    with pytest.raises(ValueError, match="need QuickGELU; write open_clip:ViT-B-32-quickgelu:/m/openai_vit_b32.pt"):
        check_activation("ViT-B-32", "/m/openai_vit_b32.pt")
    with pytest.raises(ValueError, match="QuickGELU"):
        ClipScore.from_spec("open_clip:ViT-B-32:openai")  # refused before any model is built
    check_activation("ViT-B-32-quickgelu", "/m/openai_vit_b32.pt")
    check_activation("ViT-H-14", "laion2b_s32b_b79k")


def test_a_text_transform_scores_another_text():
    pictures = [np.zeros((8, 8, 3), np.uint8)] * 2
    items = pd.DataFrame({"prompt": ["x0", "x2"]})
    table = ClipScore(fixed_embed, "fixed", text=lambda p: "t" + p[1:]).score(pictures, items)
    assert table["CLIP"].tolist() == pytest.approx([100 / 2 ** 0.5, 0.0])
