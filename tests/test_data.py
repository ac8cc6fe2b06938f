"""dptlib.data on hand-made inputs: hard-negative mining (ranking, ties, the truth filter, text
dedupe, too few candidates), the DiscriminationData rules, image conversion, the shuffled control."""

import numpy as np
import pytest
import torch

from dptlib.data.discrimination import DiscriminationData, mine_hard_negatives, shuffled_pairs
from dptlib.data.images import to_model_images, to_uint8_images


def _unit(rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_mining_ranks_by_similarity_and_skips_own_captions():
    image_emb = torch.eye(3)
    caption_emb = _unit([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0.5, 0.5, 0], [0, 0, 1.0]])
    hard_c, hard_i = mine_hard_negatives(image_emb, caption_emb, torch.tensor([0, 1, 1, 2, 2]), k_captions=2, k_images=1)
    assert hard_c[0].tolist() == [1, 3]  # image 0's nearest captions that are not its own (caption 0)
    assert hard_c[1].tolist() == [3, 0]  # not 1 and 2, its own
    assert hard_c[2].tolist() == [0, 1]  # all three others are orthogonal: a tie, in index order
    assert hard_i.tolist() == [[1], [0], [0], [0], [0]]  # caption 3: images 0 and 1 tie; image 2 (its own) never


def test_mining_ties_go_to_the_lower_index():
    """Exactly equal similarities (``topk`` returns such ties in no fixed order) are ranked by index."""
    caption_emb = torch.tensor([[0.6, 0.8]] * 60)
    caption_emb[[20, 50]] = torch.tensor([1.0, 0.0])  # the two most similar captions; the other 58 tie
    image_emb = torch.tensor([[1.0, 0.0]] * 3)
    owner = torch.arange(60) % 3
    hard_c, hard_i = mine_hard_negatives(image_emb, caption_emb, owner, k_captions=5, k_images=2)
    assert hard_c.tolist() == [[20, 50, 1, 2, 4], [20, 50, 0, 2, 3], [0, 1, 3, 4, 6]]  # image 2 owns 20 and 50
    assert hard_i[:3].tolist() == [[1, 2], [0, 2], [0, 1]]
    # images tied for a caption go in index order too
    owner = torch.arange(40)
    _, hard_i = mine_hard_negatives(torch.tensor([[1.0, 0.0]] * 40), torch.tensor([[1.0, 0.0]] * 40), owner, k_captions=3, k_images=4)
    assert hard_i[0].tolist() == [1, 2, 3, 4] and hard_i[2].tolist() == [0, 1, 3, 4] and hard_i[39].tolist() == [0, 1, 2, 3]


def test_mining_drops_candidates_the_truth_filter_says_are_true():
    image_emb = torch.eye(3)
    caption_emb = _unit([[0, 0, 1.0], [1.0, 0, 0], [0.9, 0.1, 0], [0.8, 0, 0.2], [0.7, 0.3, 0], [0, 1.0, 0]])
    owner = torch.tensor([0, 1, 1, 2, 2, 2])
    plain_c, plain_i = mine_hard_negatives(image_emb, caption_emb, owner, k_captions=2, k_images=1)
    assert plain_c[0].tolist() == [1, 2] and plain_i[1].tolist() == [0] and plain_i[3].tolist() == [0]
    calls = []

    def is_negative(image, caption):  # captions 1 and 3 are true of image 0
        calls.append((image, caption))
        return not (image == 0 and caption in (1, 3))

    hard_c, hard_i = mine_hard_negatives(image_emb, caption_emb, owner, k_captions=2, k_images=1, is_negative=is_negative)
    assert hard_c[0].tolist() == [2, 4]  # 1 and 3 are true of image 0: skipped
    assert hard_i[1].tolist() == [2] and hard_i[3].tolist() == [1]  # image 0 is no negative of captions 1 and 3
    assert hard_c[1:].tolist() == plain_c[1:].tolist() and hard_i[[0, 2, 4, 5]].tolist() == plain_i[[0, 2, 4, 5]].tolist()
    assert all(int(owner[c]) != i for i, c in calls)  # an image's own captions are never even asked about
    with pytest.raises(ValueError, match="query 0 has only 1 acceptable negatives, 2 asked"):
        mine_hard_negatives(image_emb, caption_emb, owner, k_captions=2, k_images=1,
                            is_negative=lambda image, caption: not (image == 0 and caption in (1, 2, 3, 4)))


def test_mining_dedupes_caption_texts_when_given_them():
    image_emb = torch.eye(3)
    caption_emb = _unit([[0, 1.0, 0], [1.0, 0, 0], [1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0], [0, 1.0, 0]])
    owner = torch.tensor([1, 1, 2, 2, 2, 1])
    texts = ["a blue square", "a red circle", "a red circle", "two red circles", "a green triangle", "a blue square"]
    plain, _ = mine_hard_negatives(image_emb, caption_emb, owner, k_captions=2, k_images=1)
    assert plain[0].tolist() == [1, 2]  # the same text twice (two images have it)
    deduped, _ = mine_hard_negatives(image_emb, caption_emb, owner, k_captions=2, k_images=1, captions=texts)
    assert deduped.tolist() == [[1, 3], [3, 2], [0, 1]]
    assert mine_hard_negatives(image_emb, caption_emb, owner, k_captions=3, k_images=1)[0].shape == (3, 3)
    with pytest.raises(ValueError, match="query 2 has only 2 acceptable negatives, 3 asked"):  # captions 0 and 5 are one text
        mine_hard_negatives(image_emb, caption_emb, owner, k_captions=3, k_images=1, captions=texts)


def test_too_few_negatives_raise():
    image_emb, caption_emb = torch.eye(2), torch.eye(2)
    owner = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="acceptable negatives"):
        mine_hard_negatives(image_emb, caption_emb, owner, k_captions=2, k_images=1)
    with pytest.raises(ValueError, match="acceptable negatives"):
        mine_hard_negatives(image_emb, caption_emb, owner, k_captions=1, k_images=2)
    with pytest.raises(ValueError, match="acceptable negatives"):  # the filter leaves none for image 0
        mine_hard_negatives(image_emb, caption_emb, owner, k_captions=1, k_images=1, is_negative=lambda i, c: i != 0)


def _data(**kwargs):
    base = dict(images=torch.zeros(3, 3, 8, 8), captions=["a", "b", "c", "d", "x"], caption_image=torch.tensor([0, 0, 1, 2, -1]),
                expressions=["e0", "e1", "e2"], expression_image=torch.tensor([0, 0, 1]),
                expression_box=torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]))
    return DiscriminationData(**{**base, **kwargs})


def test_discrimination_data_rules():
    data = _data()
    assert data.n_captioned == 3 and data.n_own_captions == 4
    assert not data.negative(0, 0) and not data.negative(0, 1) and data.negative(0, 2) and data.negative(1, 4)
    filtered = _data(is_negative=lambda image, caption: caption != 2)
    assert not filtered.negative(0, 2) and filtered.negative(0, 3) and not filtered.negative(1, 2)
    with pytest.raises(ValueError, match="before the negative-only texts"):
        _data(caption_image=torch.tensor([0, -1, 1, 2, 0]))
    boxes = data.object_boxes()
    assert sorted(boxes) == [0, 1] and boxes[0].shape == (1, 4) and torch.equal(boxes[1], data.expression_box[2:])


def test_image_conversion_round_trips():
    rng = np.random.default_rng(0)
    uint8 = rng.integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    model = to_model_images(uint8)
    assert model.shape == (2, 3, 8, 6) and model.min() >= -1 and model.max() <= 1
    assert model[0, 1, 2, 3].item() == pytest.approx(uint8[0, 2, 3, 1] / 127.5 - 1)
    assert np.array_equal(to_uint8_images(model), uint8)
    assert np.array_equal(to_uint8_images(torch.full((1, 3, 2, 2), 7.0)), np.full((1, 2, 2, 3), 255, np.uint8))  # clamped


def test_shuffled_pairs_moves_every_image_in_one_cycle():
    """Captioned and negative-only images alike: were the edited images of a caption's own scene
    left in place, they would stay related to the caption while the shown image is not."""
    images = torch.arange(7, dtype=torch.float32).view(7, 1, 1, 1).expand(7, 3, 2, 2).clone()
    data = _data(images=images, n_captioned=5)
    shuffled = shuffled_pairs(data, seed=3)
    source = shuffled.images[:, 0, 0, 0].long().tolist()
    assert sorted(source) == list(range(7)) and all(s != i for i, s in enumerate(source))
    seen, i = set(), 0
    while i not in seen:  # follow the permutation from 0: one cycle through all seven
        seen.add(i)
        i = source[i]
    assert len(seen) == 7
    assert shuffled.captions == data.captions and torch.equal(shuffled.expression_box, data.expression_box)
    assert shuffled.n_captioned == 5 and shuffled.hard_images is data.hard_images
    assert shuffled_pairs(data, seed=3).images.equal(shuffled.images)  # seeded
    assert len({tuple(shuffled_pairs(data, seed=s).images[:, 0, 0, 0].tolist()) for s in range(6)}) > 1


def test_the_fingerprint_sees_what_a_run_learns_from():
    from dataclasses import replace

    from dptlib.data.discrimination import fingerprint

    data = _data(images=torch.zeros(7, 3, 2, 2), n_captioned=5, hard_images=torch.tensor([[1, 2], [2, 0], [0, 1], [1, 0]]))
    assert fingerprint(data) == fingerprint(replace(data))
    assert fingerprint(shuffled_pairs(replace(data, images=torch.rand(7, 3, 2, 2)))) != fingerprint(data)
    assert fingerprint(replace(data, captions=[c + "!" for c in data.captions])) != fingerprint(data)
    assert fingerprint(replace(data, hard_images=data.hard_images.flip(1))) != fingerprint(data)
