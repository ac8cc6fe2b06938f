"""IS / FID through torchmetrics with tiny feature modules, against hand computations."""

import numpy as np
import pytest
import torch

from dptlib.evaluation.graders.inception import InceptionSet
from dptlib.evaluation.metrics import frechet_distance


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


def test_fid_reads_reference_images_of_mixed_sizes_and_modes(tmp_path):
    """COCO val2014 as it is: JPEGs of many sizes, some greyscale (L), some CMYK. Each is read as
    RGB at its own size and goes to the feature network alone-sized (the Inception resizes it to
    299 itself), so FID equals the Fréchet distance of the images' features taken one by one."""
    from PIL import Image

    from dptlib.evaluation.benchmarks import load_images

    rng = np.random.default_rng(5)
    paths = []
    for k, (mode, size) in enumerate([("RGB", (64, 48)), ("L", (50, 70)), ("CMYK", (64, 48)), ("RGB", (80, 80)),
                                      ("L", (64, 48)), ("CMYK", (33, 61)), ("RGB", (50, 70)), ("RGB", (64, 48))] * 3):
        channels = {"RGB": 3, "L": 1, "CMYK": 4}[mode]
        pixels = (rng.random((size[1], size[0], channels)) * rng.uniform(60, 255)).astype(np.uint8)
        path = tmp_path / f"COCO_val2014_{k:012d}.jpg"
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path, quality=95)
        paths.append(path)
    real = load_images(paths)
    assert {im.shape[:2] for im in real} == {(48, 64), (70, 50), (80, 80), (61, 33)} and all(im.shape[2] == 3 for im in real)
    generated = images(20, 4)
    result = InceptionSet(Pooled(4), Pooled(5), splits=1).compute(generated, real)
    one_by_one = lambda xs: np.concatenate([Pooled(4)(torch.from_numpy(x).permute(2, 0, 1)[None]).double().numpy()  # noqa: E731
                                            for x in xs])
    assert result["FID"] == pytest.approx(frechet_distance(one_by_one(generated), one_by_one(real)), rel=1e-3, abs=1e-5)
    assert result["real images"] == 24


def test_fid_refuses_what_is_not_an_rgb_uint8_image():
    with pytest.raises(ValueError, match=r"image 1: FID takes uint8 \(H, W, 3\) RGB images, got uint8 \(16, 16\)"):
        InceptionSet(Pooled(4), Pooled(5)).compute(images(3, 0), [images(1, 1)[0], np.zeros((16, 16), np.uint8)])


def test_the_real_inception_architecture_reads_mixed_sizes_each_at_its_own(tmp_path):
    """torchmetrics' FID Inception (torch-fidelity's network, random weights in the real layout, read
    by ``from_weights`` as the real file is) on images of several sizes: each is resized to 299 by the
    network itself, so the batched FID is the Fréchet distance of the one-by-one features."""
    from dptlib.perf.paper_dry_run import inception_weights

    torch.manual_seed(0)
    inception = InceptionSet.from_weights(inception_weights(tmp_path / "pt_inception-random.pth"), splits=1)
    rng = np.random.default_rng(0)
    real = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(64, 48), (80, 80), (64, 48), (33, 61), (80, 80), (50, 70)] * 2]
    generated = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(8)]
    result = inception.compute(generated, real)
    one_by_one = lambda xs: torch.cat([inception.fid_features(torch.from_numpy(x).permute(2, 0, 1)[None]) for x in xs]).double().numpy()  # noqa: E731
    assert result["FID"] == pytest.approx(frechet_distance(one_by_one(generated), one_by_one(real)), rel=1e-3)
    assert np.isfinite(result["IS"]) and result["real images"] == 12
