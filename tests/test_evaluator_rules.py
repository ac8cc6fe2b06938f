"""dptlib.evaluation.graders.rules against hand-computed cases of each benchmark's arithmetic."""

import numpy as np
import pytest

from dptlib.evaluation.graders import rules
from dptlib.evaluation.graders.rules import Detection


def test_bvqa_is_the_product_of_yes_shares_over_at_most_eight_chunks():
    assert rules.yes_share(0.6, 0.2) == pytest.approx(0.75)
    assert rules.yes_share(0.2, 0.1) == 0.6667  # written to 4 decimals, as the benchmark's result files
    assert rules.bvqa_score([0.75, 0.5]) == pytest.approx(0.375)
    assert rules.bvqa_score([]) == 1.0  # no question asked: the benchmark multiplies by 1
    assert rules.bvqa_score([0.5] * 9) == pytest.approx(0.0039)  # the ninth chunk is not asked; 0.5 ** 8 to 4 decimals


def test_relation_is_the_first_of_the_benchmarks_list():
    assert rules.relation_of("a dog on the left of a cat") == "on the left of"
    assert rules.relation_of("a cup near a lamp next to a book") == "next to"  # "next to" comes before "near" in the list
    assert rules.relation_of("a cat on top of a table") == "on top of"
    assert rules.relation_of("a cat and a table") is None


def test_position_scores_by_hand():
    left, right = (0, 0, 100, 100), (300, 0, 400, 100)  # centres 50 and 350 apart along x, same y
    assert rules.position_score("on the left of", left, right) == 1.0
    assert rules.position_score("on the right of", left, right) == 0.0
    assert rules.position_score("on the right of", right, left) == 1.0
    top, bottom = (0, 0, 100, 100), (0, 300, 100, 400)  # y points down: `top` is above
    assert rules.position_score("on the top of", top, bottom) == 1.0
    assert rules.position_score("on the bottom of", bottom, top) == 1.0
    assert rules.position_score("on the bottom of", top, bottom) == 0.0
    # overlapping: boxes of 100 x 100 shifted by 60 along x: IoU = 4000 / 16000 = 0.25 -> 0.1 / 0.25
    assert rules.position_score("on the left of", (0, 0, 100, 100), (60, 0, 160, 100)) == pytest.approx(0.4)
    # the other axis dominates: 0
    assert rules.position_score("on the left of", (0, 0, 10, 10), (20, 200, 30, 210)) == 0.0
    # near: within 150 px along x OR y -> 1; else 150 / max(|dx|, |dy|)
    assert rules.position_score("near", (0, 0, 10, 10), (400, 100, 410, 110)) == 1.0
    assert rules.position_score("near", (0, 0, 10, 10), (300, 200, 310, 210)) == pytest.approx(0.5)
    assert rules.position_score("on top of", top, bottom) == 0.0  # never matched by the benchmark
    assert rules.position_score(None, top, bottom) == 0.0


def test_spatial_score_by_hand():
    dog, cat = (0, 0, 100, 100), (300, 0, 400, 100)
    found = [Detection("dog", 0.9, dog), Detection("dog", 0.6, cat), Detection("cat", 0.7, cat)]
    # best dog (0.9) left of the cat: 0.25 * 0.9 + 0.25 * 0.7 + 0.5 * 1
    assert rules.spatial_score("dog", "cat", "on the left of", found) == pytest.approx(0.9)
    # wrong side: 0.25 * 0.9 + 0.25 * 0.7 = 0.4 < 0.5 -> 0
    assert rules.spatial_score("dog", "cat", "on the right of", found) == 0.0
    # one object found: 0.25 * s < 0.5 -> 0
    assert rules.spatial_score("dog", "horse", "on the left of", found) == 0.0
    # girl / boy / man / woman are detected as person
    people = [Detection("person", 0.8, dog), Detection("cat", 0.8, cat)]
    assert rules.spatial_score("woman", "cat", "near", people) == pytest.approx(0.9)


def test_three_in_one_by_subset():
    spatial, action = ["A dog on the left of a cat."], ["a man riding a red horse"]
    assert rules.complex_kind("a dog on the left of a cat", spatial, action) == "spatial"
    assert rules.complex_kind("A man riding a red horse.", spatial, action) == "action"
    assert rules.complex_kind("a red man riding a horse near a tree", spatial, action) == "both"
    assert rules.three_in_one("spatial", 0.6, 0.2, 0.9) == pytest.approx(0.4)
    assert rules.three_in_one("action", 0.6, 0.2, 0.9) == pytest.approx(0.75)
    assert rules.three_in_one("both", 0.6, 0.3, 0.9) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="kind must be"):
        rules.three_in_one("colour", 0.6, 0.2, 0.9)


def test_nearest_choice_maps_free_answers_by_cosine():
    table = {"pale green": [0.8, 0.6, 0.0], "green": [1.0, 0.0, 0.0], "black": [0.0, 1.0, 0.0], "yellow": [0.0, 0.0, 1.0]}
    embed = lambda texts: np.array([table[t] for t in texts])  # noqa: E731
    assert rules.nearest_choice("green", ["black", "green", "yellow"], embed) == "green"  # in the choices: itself
    assert rules.nearest_choice("pale green", ["black", "green", "yellow"], embed) == "green"  # 0.8 > 0.6 > 0


def test_tifa_is_the_mean_over_captions_of_their_share_correct():
    rows = [{"caption_id": 1, "element_type": "color", "correct": 1}, {"caption_id": 1, "element_type": "object", "correct": 0},
            {"caption_id": 2, "element_type": "object", "correct": 1}, {"caption_id": 2, "element_type": "object", "correct": 1},
            {"caption_id": 2, "element_type": "count", "correct": 1}]
    summary = rules.tifa_summary(rows)
    assert summary["tifa"] == pytest.approx((0.5 + 1.0) / 2)  # not 4 / 5: captions weigh equally
    assert summary["accuracy_by_type"] == {"color": 1.0, "count": 1.0, "object": pytest.approx(2 / 3)}
    assert summary["captions"] == 2


def test_all_detected_needs_every_object_at_the_threshold():
    boxes = [Detection("cat", 0.7, (0, 0, 1, 1)), Detection("dog", 0.49, (0, 0, 1, 1))]
    assert not rules.all_detected(["cat", "dog"], boxes)
    assert rules.all_detected(["cat", "dog"], boxes, threshold=0.4)
    assert rules.all_detected(["cat"], boxes)
