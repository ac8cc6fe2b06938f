"""Generation metrics: oracle grading, CLIP score and Fréchet distance."""

import numpy as np
import torch

from dptlib.evaluation.metrics import clip_score, frechet_distance
from dptlib.toy.evaluation import mean_and_spread, oracle_scores
from dptlib.toy.world import ObjectSpec, PromptSpec, ToyWorld, ToyWorldConfig


def test_oracle_scores_grade_renders():
    world = ToyWorld(ToyWorldConfig())
    spec = PromptSpec((ObjectSpec("circle", "red"),))
    right = world.render(world.realize(spec, seed=0))
    wrong = world.render(world.realize(PromptSpec((ObjectSpec("square", "blue"),)), seed=0))
    scores = oracle_scores(np.stack([right, wrong]), [spec, spec], world.config)
    assert scores["correct"].tolist() == [1.0, 0.0] and scores["spatial"].isna().all()


def test_mean_and_spread_over_seeds():
    import pandas as pd

    frame = pd.DataFrame({"category": ["a"] * 4, "seed": [0, 0, 1, 1], "presence": [1.0, 1.0, 1.0, 0.0],
                          "binding": [1.0, 0.0, 0.0, 0.0], "count": 1.0, "spatial": np.nan, "correct": [1.0, 0.0, 0.0, 0.0]})
    table = mean_and_spread(frame, ["category"])
    assert table.loc["a", ("mean", "presence")] == 75.0 and table.loc["a", ("std", "presence")] == 25.0
    assert table.loc["a", ("mean", "correct")] == 25.0


def test_frechet_distance_by_hand():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    assert frechet_distance(a, a) < 1e-6
    shifted = a + np.array([3.0, 0.0, 4.0])  # same covariance, mean moved by 5: distance 25
    assert abs(frechet_distance(a, shifted) - 25.0) < 1e-6
    scaled = a * 2  # covariance 4 I against I: Tr(I + 4I - 2 * 2I) = 3 (sampling error aside)
    assert abs(frechet_distance(a, scaled) - 3.0) < 0.3


def test_clip_score_is_100_cos_clamped():
    def embed(images, texts):
        return torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.6, 0.8], [-1.0, 0.0]])

    scores = clip_score(embed, np.zeros((2, 4, 4, 3), np.uint8), ["a", "b"])
    assert np.allclose(scores, [60.0, 0.0])


def test_frechet_distance_of_a_single_sample_is_nan():
    assert np.isnan(frechet_distance(np.ones((1, 3)), np.random.default_rng(0).normal(size=(5, 3))))
