"""3-in-1 from three scorers' columns, by the prompt's kind."""

import numpy as np
import pandas as pd
import pytest
import torch

from dptlib.evaluation.graders.compbench import ThreeInOne


class Fixed:
    def __init__(self, column, values, grader):
        self.column, self.values, self.grader = column, values, grader

    def score(self, images, items):
        return items.reset_index(drop=True).assign(**{self.column: self.values[: len(items)]}, grader=self.grader)


def test_three_in_one_combines_by_kind():
    items = pd.DataFrame({"prompt_id": [0, 1, 2], "prompt": ["a dog on the left of a cat", "a man riding a red horse",
                                                             "a red man riding a horse near a tree"]})
    evaluator = ThreeInOne(Fixed("B-VQA", [0.6, 0.6, 0.6], "vqa"), Fixed("spatial", [0.2, 0.2, 0.3], "det"),
                           Fixed("non-spatial", [0.9, 0.9, 0.9], "clip"), ["A dog on the left of a cat."], ["a man riding a red horse"])
    table = evaluator.score([np.zeros((4, 4, 3), np.uint8)] * 3, items)
    assert table["kind"].tolist() == ["spatial", "action", "both"]
    assert table["3-in-1"].tolist() == pytest.approx([0.4, 0.75, 0.6])
    assert table["grader"].iloc[0] == "vqa + det + clip" and table["prompt_id"].tolist() == [0, 1, 2]
    assert evaluator.summarize(table) == {"3-in-1": pytest.approx((0.4 + 0.75 + 0.6) / 3)}


def test_from_parts_reads_complex_prompts_in_complex_mode():
    """3-in-1's spatial part takes the objects around the preposition (not the first and last
    noun), and its CLIP part scores the prompt without adjectives, as the benchmark's --complex runs."""
    from dptlib.evaluation.graders.clip import ClipScore
    from dptlib.evaluation.graders.rules import Detection
    from dptlib.evaluation.graders.text import RuleReader

    class Detector:
        name = "fake"

        def detect(self, images, labels, captions=None):
            self.asked = labels
            return [[Detection("umbrella", 0.9, (0, 0, 10, 10)), Detection("bench", 0.9, (300, 0, 310, 10))]] * len(images)

    class Binding(Fixed):
        reader, scale = RuleReader(), 100.0

    seen = []
    clip = ClipScore(lambda images, texts: seen.extend(texts) or (torch.ones(len(texts), 2) / 2 ** 0.5,) * 2, "clip")
    detector = Detector()
    evaluator = ThreeInOne.from_parts(Binding("B-VQA (fallback chunks)", [60.0], "vqa"), detector, clip,
                                      ["the red umbrella was on the left of a wooden bench"], [])
    prompt = "the red umbrella was on the left of a wooden bench"
    table = evaluator.score([np.zeros((4, 4, 3), np.uint8)], pd.DataFrame({"prompt": [prompt]}))
    assert detector.asked == [["umbrella", "bench"]]  # not "was" as the first object
    assert seen == ["the umbrella was on the left of a bench"]  # "red" and "wooden" removed
    assert table["kind"].tolist() == ["spatial"] and evaluator.column == "3-in-1 (fallback text)"
    assert table[evaluator.column].tolist() == pytest.approx([(60.0 + 100 * (0.25 * 0.9 * 2 + 0.5)) / 2])
