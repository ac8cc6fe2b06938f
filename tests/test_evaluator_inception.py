"""IS / FID through torchmetrics with tiny feature modules, against hand computations."""

import numpy as np
import pytest
import torch

from dptlib.evaluators.inception import InceptionSet
from dptlib.metrics import frechet_distance


class Pooled(torch.nn.Module):
    """uint8 (B, 3, H, W) -> a fixed linear map of the channel means and stds, (B, d)."""

    def __init__(self, d):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(6, d, generator=torch.Generator().manual_seed(d)), requires_grad=False)
        self.num_features = d

    def forward(self, x):
        x = x.float() / 255
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1) @ self.weight


def images(n, seed):
    rng = np.random.default_rng(seed)
    return [(rng.random((16, 16, 3)) * rng.uniform(50, 255)).astype(np.uint8) for _ in range(n)]


def test_fid_and_is_match_hand_computations():
    generated, real = images(24, 0), images(30, 1)
    result = InceptionSet(Pooled(4), Pooled(5), splits=1).compute(generated, real)
    as_batch = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2)  # noqa: E731
    features = lambda xs: Pooled(4)(as_batch(xs)).double().numpy()  # noqa: E731
    assert result["FID"] == pytest.approx(frechet_distance(features(generated), features(real)), rel=1e-3, abs=1e-5)
    logits = Pooled(5)(as_batch(generated)).double()
    p = logits.softmax(1)
    by_hand = float((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean().exp())  # one split
    assert result["IS"] == pytest.approx(by_hand, rel=1e-5)
    assert result["generated images"] == 24 and result["real images"] == 30 and result["IS splits"] == 1


def test_identical_sets_have_fid_near_zero():
    same = images(20, 3)
    assert abs(InceptionSet(Pooled(4), Pooled(5), splits=2).compute(same, same)["FID"]) < 1e-3
