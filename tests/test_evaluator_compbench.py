"""3-in-1 from three scorers' columns, by the prompt's kind."""

import numpy as np
import pandas as pd
import pytest

from dptlib.evaluators.compbench import ThreeInOne


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
