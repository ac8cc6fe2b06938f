"""ITM and REC evaluation: the outcome rule (a tie is wrong), the HN test set built on a toy split
with its truth filter, and DPTScorer (one z_t per image, boxes chosen by the expression)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from dptlib.data.discrimination import DiscriminationData
from dptlib.evaluation.metrics import ITMTest, itm_accuracy, itm_outcomes, itm_test_set, rec_outcomes, rec_precision
from dptlib.method.adapter import AdapterOutput
from dptlib.method.backbone import encode_text
from dptlib.method.inference import DPTScorer
from dptlib.method.train import ProbeConfig, build_adapter, cache_latents

from test_probe import tiny_backbone
from toy_fixtures import small_toy_split

# --------------------------------------------------------------------------------------------
# itm_outcomes / itm_accuracy on a hand-made test set
# --------------------------------------------------------------------------------------------
# image q (0..5) against captions 10q (its own) and 10q+1..10q+3; caption 10q against image q and
# images q+100, q+200, q+300
HAND = ITMTest(
    image_to_text=[(q, [10 * q, 10 * q + 1, 10 * q + 2, 10 * q + 3]) for q in range(6)],
    text_to_image=[(10 * q, [q, q + 100, q + 200, q + 300]) for q in range(6)],
)


def _scorer(table):
    return lambda images, captions: torch.tensor([float(table(i, c)) for i, c in zip(images, captions)])


def test_a_constant_scorer_gets_zero_since_a_tie_is_wrong():
    assert itm_accuracy(lambda images, captions: torch.zeros(len(images)), HAND) == {"I->T": 0.0, "T->I": 0.0, "overall": 0.0}


def test_a_last_candidate_scorer_gets_zero_and_an_oracle_all():
    last = _scorer(lambda i, c: c % 10 + i // 100)  # rises along each candidate list
    assert itm_accuracy(last, HAND)["overall"] == 0.0
    oracle = _scorer(lambda i, c: c == 10 * i)
    assert itm_accuracy(oracle, HAND) == {"I->T": 100.0, "T->I": 100.0, "overall": 100.0}


def test_a_scorer_right_on_a_known_subset_gets_exactly_that_fraction():
    right_i2t, right_t2i = {0, 2, 3}, {1}

    def strict(i, c):  # right on the queries of right_i2t (I->T) and right_t2i (T->I), a tie on the others
        if i < 100 and c == 10 * i:  # a positive pair, met from both directions
            return 0.5
        if i >= 100:  # a caption's negative image: below the positive only for the right queries
            return 0.0 if c // 10 in right_t2i else 0.5
        return 0.0 if i in right_i2t else 0.5  # an image's negative caption

    outcomes = itm_outcomes(_scorer(strict), HAND, queries_per_call=4)  # chunks of 4 queries: 4 + 2
    assert outcomes["I->T"].tolist() == [q in right_i2t for q in range(6)]
    assert outcomes["T->I"].tolist() == [q in right_t2i for q in range(6)]
    accuracy = itm_accuracy(_scorer(strict), HAND, queries_per_call=5)
    assert accuracy["I->T"] == pytest.approx(50.0) and accuracy["T->I"] == pytest.approx(100 / 6)
    assert accuracy["overall"] == pytest.approx((50.0 + 100 / 6) / 2)


def test_rec_outcomes_referred_and_any():
    data = DiscriminationData(torch.zeros(1, 3, 8, 8), ["c"], torch.tensor([0]), ["left one", "right one"], torch.tensor([0, 0]),
                              torch.tensor([[0.25, 0.5, 0.2, 0.2], [0.75, 0.5, 0.2, 0.2]]))
    both_left = lambda e: data.expression_box[[0] * len(e)]  # noqa: E731
    assert rec_outcomes(both_left, data).tolist() == [True, False] and rec_precision(both_left, data) == 50.0
    assert rec_outcomes(both_left, data, target="any").tolist() == [True, True]  # it found an object, not the one
    with pytest.raises(ValueError, match="target"):
        rec_outcomes(both_left, data, target="every")


# --------------------------------------------------------------------------------------------
# The HN test set on a toy split with false-by-construction negatives
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    _, _, data = small_toy_split(tmp_path_factory.mktemp("toy"), 60, k_captions=8, k_images=4)
    return data


def test_itm_test_set_positives_and_negatives(toy):
    data = toy
    test = itm_test_set(data, n_negatives=3, seed=0)
    assert [q for q, _ in test.image_to_text] == list(range(data.n_captioned))
    for (image, candidates), (caption, images) in zip(test.image_to_text, test.text_to_image):
        positive, negatives = candidates[0], candidates[1:]
        assert int(data.caption_image[positive]) == image and bool(data.caption_complete[positive])
        assert len(negatives) == len(set(negatives)) == 3 and positive not in negatives
        assert set(negatives) <= set(data.hard_captions[image].tolist())
        assert all(data.negative(image, c) and data.is_negative(image, c) for c in negatives)
        assert caption == positive and images[0] == image  # T->I asks with the same caption
        assert len(images[1:]) == len(set(images[1:])) == 3 and image not in images[1:]
        assert set(images[1:]) <= set(data.hard_images[caption].tolist())
        assert all(data.negative(j, caption) and data.is_negative(j, caption) for j in images[1:])
    assert itm_test_set(data, 3, seed=0) == test and itm_test_set(data, 3, seed=1) != test
    # without the completeness marks the positive is any own caption: the marks do change it
    unmarked = itm_test_set(replace(data, caption_complete=None), 3, seed=0)
    assert not all(bool(data.caption_complete[c[0]]) for _, c in unmarked.image_to_text)
    assert all(int(data.caption_image[c[0]]) == q for q, c in unmarked.image_to_text)


# --------------------------------------------------------------------------------------------
# DPTScorer
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone()


@pytest.fixture(scope="module")
def scorer(backbone, toy):
    torch.manual_seed(0)
    adapter, blocks = build_adapter(ProbeConfig.preset("smoke"), backbone)
    return DPTScorer(backbone, adapter, blocks, toy, cache_latents(backbone, toy.images[:12]), timestep=250)


def test_each_image_has_one_z_t_whatever_the_caption_or_batch_position(scorer, backbone):
    from dptlib.method.backbone import add_noise

    z, t = scorer.noisy_latents([3, 5, 3])
    assert t.tolist() == [250] * 3
    assert torch.equal(z[0], z[2]) and not torch.equal(z[0], z[1])
    assert torch.equal(scorer.noisy_latents([3])[0][0], z[0]) and torch.equal(scorer.noisy_latents([5, 3])[0][1], z[0])
    clean = add_noise(backbone, scorer.latents[[3]], torch.tensor([250]), torch.zeros(1, *scorer.latents.shape[1:]))
    assert not torch.allclose(z[0], clean[0])  # noised, not only scaled
    other = DPTScorer(backbone, scorer.adapter, scorer.blocks, scorer.data, scorer.latents, timestep=250, seed=1)
    assert not torch.equal(other.noisy_latents([3])[0], z[:1])


def test_all_candidates_of_a_query_are_scored_on_the_same_z_t(scorer, monkeypatch):
    import dptlib.method.inference as inference_module

    seen, calls = {}, {"images": None}
    original = inference_module.extract_features

    def spy(unet, latents, timesteps, *args, **kwargs):
        for image, row in zip(calls["images"], latents):
            seen.setdefault(image, []).append(row.clone())
        return original(unet, latents, timesteps, *args, **kwargs)

    monkeypatch.setattr(inference_module, "extract_features", spy)

    def score_pairs(images, captions):
        calls["images"] = images
        return scorer.score_pairs(images, captions)

    data = scorer.data
    test = ITMTest([(i, [int(c) for c in data.hard_captions[i, :3]] + [int(np.flatnonzero(data.caption_image.numpy() == i)[0])])
                    for i in range(4)],
                   [(int(np.flatnonzero(data.caption_image.numpy() == i)[0]), [i, (i + 1) % 12, (i + 5) % 12]) for i in range(4)])
    itm_outcomes(score_pairs, test, queries_per_call=3)
    assert sum(len(v) for v in seen.values()) == 4 * 4 + 4 * 3
    for image, rows in seen.items():
        assert all(torch.equal(rows[0], r) for r in rows), image


def test_a_pairs_score_does_not_depend_on_the_other_pairs_in_the_call(scorer):
    images, captions = [0, 0, 1, 2, 0], [0, 7, 9, 3, 12]
    together = scorer.score_pairs(images, captions)
    alone = torch.cat([scorer.score_pairs([i], [c]) for i, c in zip(images, captions)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    reordered = scorer.score_pairs(images[::-1], captions[::-1])
    torch.testing.assert_close(reordered, together.flip(0), rtol=1e-4, atol=1e-5)
    assert together.unique().numel() > 1  # the captions do change the score


def test_a_shared_cache_runs_the_unet_once_per_batch_and_changes_no_score(scorer, backbone, monkeypatch):
    """Two adapters of one frozen U-Net asked the same batches: the U-Net runs once per batch
    (and per timestep), and every score and box equals the uncached scorer's to the bit."""
    import dptlib.method.inference as inference_module

    calls = []
    real = inference_module.extract_features
    monkeypatch.setattr(inference_module, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(1)
    other_adapter, _ = build_adapter(ProbeConfig.preset("smoke"), backbone)
    images, captions, expressions = [0, 1, 2, 0], [0, 5, 9, 3], [0, 1, 2]
    kept = {}
    cached = [DPTScorer(backbone, a, scorer.blocks, scorer.data, scorer.latents, timestep=250, cache=kept)
              for a in (scorer.adapter, other_adapter)]
    plain = [DPTScorer(backbone, a, scorer.blocks, scorer.data, scorer.latents, timestep=250) for a in (scorer.adapter, other_adapter)]
    for with_cache, without in zip(cached, plain):
        assert torch.equal(with_cache.score_pairs(images, captions), without.score_pairs(images, captions))
        assert torch.equal(with_cache.predict_boxes(expressions), without.predict_boxes(expressions))
    assert len(calls) == 2 + 4  # the cached pair: one pass per batch (pairs, expressions); the plain pair: one per call
    assert not torch.equal(cached[0].score_pairs(images, captions), cached[1].score_pairs(images, captions))  # adapters differ
    later = DPTScorer(backbone, scorer.adapter, scorer.blocks, scorer.data, scorer.latents, timestep=500, cache=kept)
    later.score_pairs(images, captions)
    assert len(calls) == 7 and len(kept) == 3  # another timestep is another batch


class StubAdapter(torch.nn.Module):
    """Two object queries with equal grounding logits, boxed at two objects, whose semantic
    embeddings are the given unit vectors."""

    def __init__(self, semantic: torch.Tensor, boxes: torch.Tensor):
        super().__init__()
        self.semantic, self.boxes = semantic, boxes
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.timesteps = []

    def forward(self, features, timesteps):
        b = len(timesteps)
        self.timesteps.append(timesteps.tolist())
        return AdapterOutput(torch.zeros(b, 1, self.semantic.shape[-1]), torch.zeros(b, 2), self.boxes.expand(b, 2, 4),
                             self.semantic.expand(b, 2, -1))


def test_dpt_scorer_predicts_the_box_the_expression_asks_for(backbone, toy):
    expressions = ["the circle on the left", "the square on the right"]
    boxes = torch.tensor([[0.25, 0.5, 0.3, 0.3], [0.75, 0.5, 0.3, 0.3]])
    data = DiscriminationData(toy.images[:1], ["a red circle and a blue square"], torch.tensor([0]), expressions,
                              torch.tensor([0, 0]), boxes)
    with torch.no_grad():
        _, pooled = encode_text(backbone, expressions)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    assert (pooled[0] @ pooled[1]).item() < 0.999  # the two expressions are told apart by the text encoder
    latents = cache_latents(backbone, data.images)
    stub = StubAdapter(pooled, boxes)
    scorer = DPTScorer(backbone, stub, ["mid"], data, latents, timestep=250)
    assert scorer.predict_boxes([0, 1]).tolist() == boxes.tolist()
    assert scorer.predict_boxes([1, 0, 1]).tolist() == boxes[[1, 0, 1]].tolist()
    assert rec_precision(scorer.predict_boxes, data) == 100.0
    assert all(t == 250 for call in stub.timesteps for t in call)
    # the grounding rule sees only the (tied) logits: the same box for both expressions
    assert scorer.predict_boxes([0, 1], rule="grounding").tolist() == boxes[[0, 0]].tolist()
    assert rec_precision(DPTScorer(backbone, stub, ["mid"], data, latents, rec_rule="grounding").predict_boxes, data) == 50.0
    # swap which query carries which expression's meaning: the boxes swap
    swapped = DPTScorer(backbone, StubAdapter(pooled[[1, 0]], boxes), ["mid"], data, latents)
    assert rec_precision(swapped.predict_boxes, data) == 0.0
