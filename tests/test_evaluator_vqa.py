"""B-VQA on a tiny random BLIP (built in the test): shapes, determinism, padding, pairing."""

import numpy as np
import pandas as pd
import pytest
import torch

from dptlib.evaluation.graders import tiny
from dptlib.evaluation.graders.rules import bvqa_score, yes_share
from dptlib.evaluation.graders.text import RuleReader
from dptlib.evaluation.graders.vqa import BlipVqa, BlipVqaBinding

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]", "yes", "no", "a", "red", "green", "blue", "car", "bench",
         "dog", "cat", "big", "?", "and"]


@pytest.fixture(scope="module")
def tiny_vqa():
    torch.manual_seed(0)
    return tiny.blip_vqa()


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
    binding = BlipVqaBinding(vqa, RuleReader())
    table = binding.score(pictures, items)
    pairing = ["prompt_id", "seed", "method"]
    pd.testing.assert_frame_equal(table[pairing], items[pairing])
    assert table["chunks"].tolist() == [2, 2, 1]
    by_hand = []
    for picture, prompt in zip(pictures, items["prompt"]):
        chunks = RuleReader().noun_chunks(prompt)
        answers = vqa.yes_no([picture] * len(chunks), [f"{c}?" for c in chunks])
        by_hand.append(100 * bvqa_score([yes_share(*a) for a in answers]))
    np.testing.assert_allclose(table["B-VQA (fallback chunks)"], by_hand, rtol=1e-5)
    assert table["grader"].iloc[0] == "blip-vqa (rule-based fallback (no spaCy))"
    assert binding.summarize(table) == {"B-VQA (fallback chunks)": pytest.approx(np.mean(by_hand))}
    with pytest.raises(ValueError, match="2 images for 3 items"):
        binding.score(pictures[:2], items)


def test_free_answers_are_deterministic_and_unaffected_by_batching(tiny_vqa):
    questions = ["a red car?", "a dog?", "a big blue bench and a cat?"]
    together = BlipVqa(*tiny_vqa, batch_size=3).answer(images(3), questions, max_length=4)
    alone = BlipVqa(*tiny_vqa, batch_size=1).answer(images(3), questions, max_length=4)
    assert together == alone and all(isinstance(a, str) for a in together)


def test_sbert_embedder_is_masked_mean_pooling(tiny_vqa):
    from transformers import BertConfig, BertModel

    from dptlib.evaluation.graders.tifa import sbert_embedder

    tokenizer = tiny_vqa[1].tokenizer
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=len(tiny.WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=20)).eval()
    embed = sbert_embedder(encoder, tokenizer)
    together = embed(["a red car", "a dog"])
    inputs = tokenizer(["a dog"], return_tensors="pt")
    with torch.no_grad():
        by_hand = torch.nn.functional.normalize(encoder(**inputs)[0].mean(1), dim=-1).numpy()  # no padding: a plain mean
    np.testing.assert_allclose(together[1:], by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, rtol=1e-6)


def test_tifa_maps_answers_to_choices_and_scores_per_caption(tiny_vqa, monkeypatch):
    from dptlib.evaluation.graders.tifa import Tifa

    vqa = BlipVqa(*tiny_vqa)
    free = {"is there a car?": "yes", "what color is the car?": "reddish", "is there a dog?": "no"}
    monkeypatch.setattr(vqa, "answer", lambda images, questions, **kw: [free[q] for q in questions])
    questions = pd.DataFrame([
        {"id": "c1", "question": "is there a car?", "choices": ["yes", "no"], "answer": "yes", "element_type": "object"},
        {"id": "c1", "question": "what color is the car?", "choices": ["red", "blue"], "answer": "red", "element_type": "color"},
        {"id": "c2", "question": "is there a dog?", "choices": ["yes", "no"], "answer": "yes", "element_type": "object"},
    ])
    vectors = {"reddish": [1.0, 0.1], "red": [1.0, 0.0], "blue": [0.0, 1.0]}
    embed = lambda texts: np.array([vectors[t] for t in texts])  # noqa: E731
    tifa = Tifa(vqa, embed, questions)
    items = pd.DataFrame({"caption_id": ["c1", "c2"], "seed": [0, 0]})
    asked = tifa.question_table(images(2), items)
    assert asked["choice"].tolist() == ["yes", "red", "no"] and asked["correct"].tolist() == [True, True, False]
    table = tifa.score(images(2), items)
    assert table["TIFA"].tolist() == [100.0, 0.0] and table["grader"].iloc[0] == "blip-vqa (not the paper's VQA)"
    assert tifa.summarize(table) == {"TIFA": 50.0}
    assert Tifa.by_type(asked)["accuracy_by_type"] == {"color": 1.0, "object": 0.5}
    with pytest.raises(ValueError, match="no TIFA questions for caption id 'c9'"):
        tifa.question_table(images(1), pd.DataFrame({"caption_id": ["c9"]}))
