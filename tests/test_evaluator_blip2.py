"""BLIP-M / BLIP-C on a tiny random BLIP-2 (built in the test)."""

import numpy as np
import pandas as pd
import pytest
import torch

from dptlib.evaluation.graders import tiny
from dptlib.evaluation.graders.blip2 import Blip2Match

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "green", "blue", "car", "bench", "dog", "cat", "big", "and"]


@pytest.fixture(scope="module")
def tiny_blip2():
    torch.manual_seed(0)
    return tiny.blip2()


def images(n):
    return [np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8) for i in range(n)]


PROMPTS = ["a red car", "a big blue bench and a green dog", "a cat"]


def test_scores_are_in_range_deterministic_and_batch_invariant(tiny_blip2):
    together = Blip2Match(*tiny_blip2, batch_size=3).pair_scores(images(3), PROMPTS)
    alone = Blip2Match(*tiny_blip2, batch_size=1).pair_scores(images(3), PROMPTS)
    assert together.shape == (3, 2)
    assert ((together[:, 0] > 0) & (together[:, 0] < 100)).all() and (np.abs(together[:, 1]) <= 100 + 1e-4).all()
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-4)  # padding of the shorter prompts is masked
    np.testing.assert_array_equal(together, Blip2Match(*tiny_blip2, batch_size=3).pair_scores(images(3), PROMPTS))


def test_scores_are_the_models_own_on_each_pair(tiny_blip2):
    model, processor = tiny_blip2
    inputs = processor(images=images(1), text=PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        itm = model(**inputs, use_image_text_matching_head=True).logits_per_image.softmax(-1)[0, 1]
        image = torch.nn.functional.normalize(model.vision_projection(model.qformer(
            query_embeds=model.query_tokens, encoder_hidden_states=model.vision_model(inputs["pixel_values"])[0]).last_hidden_state), dim=-1)
        text = model.qformer(query_embeds=model.embeddings(input_ids=inputs["input_ids"]), query_length=0,
                             attention_mask=inputs["attention_mask"]).last_hidden_state[:, 0]
        itc = (image[0] @ torch.nn.functional.normalize(model.text_projection(text), dim=-1)[0]).max()  # max over the 4 queries
    scores = Blip2Match(*tiny_blip2).pair_scores(images(1), PROMPTS[:1])[0]
    assert scores == pytest.approx([100 * float(itm), 100 * float(itc)], rel=1e-4)


def test_rows_keep_their_pairing_columns(tiny_blip2):
    items = pd.DataFrame({"prompt_id": [3, 1, 2], "seed": [0, 0, 1], "method": ["base", "dpt", "dpt"], "prompt": PROMPTS})
    evaluator = Blip2Match(*tiny_blip2, name="tiny-blip2")
    table = evaluator.score(images(3), items)
    pd.testing.assert_frame_equal(table[items.columns], items)
    assert set(table["grader"]) == {"tiny-blip2"}
    assert evaluator.summarize(table) == {"BLIP-M": pytest.approx(table["BLIP-M"].mean()), "BLIP-C": pytest.approx(table["BLIP-C"].mean())}
