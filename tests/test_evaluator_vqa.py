"""B-VQA on a tiny random BLIP (built in the test): shapes, determinism, padding, pairing."""

import numpy as np
import pandas as pd
import pytest
import torch

from dptlib.evaluators.rules import bvqa_score, rule_noun_chunks, yes_share
from dptlib.evaluators.vqa import BlipVqa, BlipVqaBinding

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]", "yes", "no", "a", "red", "green", "blue", "car", "bench",
         "dog", "cat", "big", "?", "and"]


@pytest.fixture(scope="module")
def tiny_vqa():
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}, do_lower_case=True)
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8)
    text = dict(vocab_size=len(WORDS), hidden_size=32, encoder_hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37, bos_token_id=5, sep_token_id=3, pad_token_id=0)
    torch.manual_seed(0)
    model = BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision, projection_dim=16, image_text_hidden_size=16))
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    return model, processor


def images(n):
    return [np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8) for i in range(n)]


def test_yes_no_are_probabilities_and_deterministic(tiny_vqa):
    vqa = BlipVqa(*tiny_vqa, image_size=48)  # not the model's 32: interpolated position embeddings
    answers = vqa.yes_no(images(3), ["a red car?", "a dog?", "a big blue bench?"])
    assert answers.shape == (3, 2) and (answers > 0).all() and (answers.sum(1) < 1).all()
    np.testing.assert_array_equal(answers, vqa.yes_no(images(3), ["a red car?", "a dog?", "a big blue bench?"]))


def test_questions_of_any_lengths_answer_as_each_alone(tiny_vqa):
    questions = ["a red car?", "a dog?", "a big blue bench and a cat?", "a cat?"]
    batched = BlipVqa(*tiny_vqa, batch_size=4).yes_no(images(4), questions)
    alone = BlipVqa(*tiny_vqa, batch_size=1).yes_no(images(4), questions)
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-7)


def test_why_questions_are_not_padded(tiny_vqa):
    """The control for the test above: padding a batch changes a short question's answer,
    because this transformers' BLIP decoder ignores the question mask in cross-attention. If
    this test fails, transformers has fixed it and length buckets are no longer needed."""
    vqa = BlipVqa(*tiny_vqa)
    padded = vqa._batch(images(2), ["a dog?", "a big blue bench and a cat?"])
    alone = vqa._batch(images(1), ["a dog?"])
    assert not np.allclose(padded[0], alone[0], rtol=1e-5, atol=1e-7)


def test_the_enc_first_token_changes_the_answer(tiny_vqa):
    cls = BlipVqa(*tiny_vqa).yes_no(images(1), ["a red car?"])
    enc = BlipVqa(*tiny_vqa, first_token="enc").yes_no(images(1), ["a red car?"])
    assert not np.allclose(cls, enc)
    with pytest.raises(ValueError, match="first_token must be"):
        BlipVqa(*tiny_vqa, first_token="bos")


def test_binding_is_the_product_over_chunks_and_keeps_the_pairing(tiny_vqa):
    vqa = BlipVqa(*tiny_vqa)
    items = pd.DataFrame({"prompt_id": [7, 7, 9], "seed": [0, 1, 0], "method": ["dpt"] * 3,
                          "prompt": ["a red car and a green bench", "a red car and a green bench", "a big dog"]})
    pictures = images(3)
    table = BlipVqaBinding(vqa).score(pictures, items)
    assert list(table[["prompt_id", "seed", "method"]].itertuples(index=False)) == list(items[["prompt_id", "seed", "method"]].itertuples(index=False))
    assert table["chunks"].tolist() == [2, 2, 1]
    by_hand = []
    for picture, prompt in zip(pictures, items["prompt"]):
        answers = vqa.yes_no([picture] * len(rule_noun_chunks(prompt)), [f"{c}?" for c in rule_noun_chunks(prompt)])
        by_hand.append(bvqa_score([yes_share(*a) for a in answers]))
    np.testing.assert_allclose(table["B-VQA"], by_hand, rtol=1e-5)
    assert table["grader"].iloc[0] == "blip-vqa (rule chunks)"
    assert BlipVqaBinding(vqa).summarize(table) == {"B-VQA": pytest.approx(np.mean(by_hand))}
    with pytest.raises(ValueError, match="2 images for 3 items"):
        BlipVqaBinding(vqa).score(pictures[:2], items)
