"""Detection-based evaluators: a tiny random Grounding DINO (built here) and hand-made detections."""

import numpy as np
import pandas as pd
import pytest
import torch

from dptlib.evaluation.graders import tiny
from dptlib.evaluation.graders.detection import GroundedDetector, GroundedObjects, SpatialScore
from dptlib.evaluation.graders.rules import Detection
from dptlib.evaluation.graders.text import RuleReader

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "dog", "cat", "red", "car", "blue", "bench", "person"]


@pytest.fixture(scope="module")
def tiny_dino():
    torch.manual_seed(0)
    return tiny.grounding_dino()


def images(n, side=128):
    return [np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8) for i in range(n)]


def test_caption_and_label_mapping():
    assert GroundedDetector.caption(["Red car", "bench"]) == "red car. bench."
    assert GroundedDetector.label_of("red car", ["car", "red car", "bench"]) == "red car"  # the longest contained
    assert GroundedDetector.label_of("a blue car", ["red car", "bench"]) is None
    assert GroundedDetector.label_of("bench [SEP]", ["red car", "bench"]) == "bench"


def test_the_tiny_detector_returns_asked_labels_above_threshold(tiny_dino):
    detector = GroundedDetector(*tiny_dino, box_threshold=0.2, text_threshold=0.0, name="tiny-dino")
    found = detector.detect(images(2), [["dog", "cat"], ["red car"]])
    assert len(found) == 2
    for detections, asked in zip(found, [["dog", "cat"], ["red car"]]):
        for d in detections:
            assert d.label in asked and d.score >= 0.2
            assert -1e-3 <= d.box[0] <= d.box[2] <= 128 + 1e-3 and -1e-3 <= d.box[1] <= d.box[3] <= 128 + 1e-3
    assert found == detector.detect(images(2), [["dog", "cat"], ["red car"]])  # deterministic


class FakeDetector:
    """Fixed detections per image, as a detector would return them (for hand-computed scores)."""

    box_threshold, name = 0.5, "fake"

    def __init__(self, per_image):
        self.per_image, self.asked = per_image, []

    def detect(self, images, labels, captions=None):
        self.asked.append([list(x) for x in labels])
        self.captions = captions
        return self.per_image[: len(images)]


def test_grounded_objects_is_the_share_with_every_object_found():
    detector = FakeDetector([[Detection("red car", 0.7, (0, 0, 1, 1)), Detection("blue bench", 0.6, (0, 0, 1, 1))],
                             [Detection("red car", 0.9, (0, 0, 1, 1)), Detection("blue bench", 0.4, (0, 0, 1, 1))]])
    items = pd.DataFrame({"prompt_id": [4, 4], "seed": [0, 1], "prompt": ["a red car and a blue bench"] * 2,
                          "objects": [("red car", "blue bench")] * 2})
    evaluator = GroundedObjects(detector)
    table = evaluator.score(images(2), items)
    assert table["GLIP (stand-in)"].tolist() == [True, False]
    assert detector.captions == ["a red car and a blue bench."] * 2  # the whole prompt, as GLIP's evaluation asks
    assert evaluator.summarize(table) == {"GLIP (stand-in)": 50.0}
    assert table[["prompt_id", "seed"]].values.tolist() == [[4, 0], [4, 1]]


def test_spatial_score_takes_the_benchmarks_150_px_and_scores_x100():
    detector = FakeDetector([[Detection("person", 0.8, (0, 0, 10, 10)), Detection("cat", 0.8, (300, 300, 310, 310))]])
    table = SpatialScore(detector, RuleReader()).score(images(1), pd.DataFrame({"prompt": ["a woman near a cat"]}))
    assert detector.asked == [[["person", "cat"]]]  # woman is asked for as person
    # |dx| = |dy| = 300 > 150: pos = 150 / 300; 0.25 * 0.8 * 2 + 0.5 * 0.5 = 0.65, x 100
    assert table["spatial (stand-in; fallback nouns)"].tolist() == pytest.approx([65.0])


def test_spatial_score_reads_complex_prompts_around_the_preposition():
    detector = FakeDetector([[Detection("dog", 0.9, (0, 0, 10, 10)), Detection("car", 0.9, (100, 0, 110, 10))]])
    spatial = SpatialScore(detector, RuleReader(), mode="complex")
    assert spatial.objects("the fluffy dog was sitting on the left of a red car") == ("dog", "car")
    table = spatial.score(images(1), pd.DataFrame({"prompt": ["the fluffy dog was sitting on the left of a red car"]}))
    assert table.iloc[0, -2] == pytest.approx(100 * (0.25 * 0.9 * 2 + 0.5))
    with pytest.raises(ValueError, match="mode must be"):
        SpatialScore(detector, RuleReader(), mode="both")


def test_spatial_on_the_tiny_detector_keeps_the_pairing(tiny_dino):
    detector = GroundedDetector(*tiny_dino, box_threshold=0.2, text_threshold=0.0)
    items = pd.DataFrame({"prompt_id": [1, 2], "method": ["base", "dpt"], "prompt": ["a dog on the left of a cat", "a car near a bench"]})
    spatial = SpatialScore(detector, RuleReader())
    table = spatial.score(images(2), items)
    pd.testing.assert_frame_equal(table[items.columns], items)
    assert ((table[spatial.column] >= 0) & (table[spatial.column] <= 100)).all()
