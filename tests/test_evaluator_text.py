"""What T2I-CompBench reads from a prompt: the readers' interface and their one-line errors (the
benchmark's rules on spaCy's tags: tests/test_evaluator_parity.py)."""

import pytest

from dptlib.evaluation.graders import text
from dptlib.evaluation.graders.text import RuleReader, Token


def test_rules_on_tagged_tokens_by_hand():
    tokens = [Token(w, p) for w, p in [("The", "DET"), ("red", "ADJ"), ("umbrella", "NOUN"), ("was", "AUX"), ("on", "ADP"),
                                        ("the", "DET"), ("left", "NOUN"), ("of", "ADP"), ("a", "DET"), ("bench", "NOUN")]]
    assert text.first_and_last_noun(tokens) == ("umbrella", "bench")
    assert text.complex_objects(tokens) == ["umbrella", "bench"]  # "on the left" spans three tokens
    assert text.without_adjectives(tokens) == "The umbrella was on the left of a bench"
    assert text.first_and_last_noun([Token("it", "PRON")]) == (None, None)
    # two prepositions: four objects, so no pair (the benchmark's spatial score is then 0)
    twice = tokens + [Token("near", "ADP"), Token("a", "DET"), Token("tree", "NOUN")]
    assert text.complex_objects(twice) == ["umbrella", "bench", "bench", "tree"] and text.complex_pair(twice) == (None, None)
    # no noun after the preposition: a proper name that ends the phrase
    named = [Token("a", "DET"), Token("cat", "NOUN"), Token("near", "ADP"), Token("New", "PROPN"), Token("York", "PROPN"),
             Token(".", "PUNCT")]
    assert text.complex_objects(named) == ["cat", "York"]


def test_the_fallback_reader_says_what_it_is():
    reader = RuleReader()
    assert reader.is_fallback and "fallback" in reader.name
    assert reader.noun_chunks("The soft, fluffy cat sits on the wooden floor.") == ["The soft, fluffy cat", "the wooden floor"]
    assert reader.noun_chunks("a dog on the left of a cat") == ["a dog", "a cat"]  # "the left" dropped, as the benchmark


def test_asking_for_spacy_without_it_fails_in_one_line_naming_the_command(monkeypatch):
    monkeypatch.setattr(text, "spacy_available", lambda model=text.SPACY_MODEL: False)
    with pytest.raises(ValueError, match=r"en_core_web_sm is not installed.*python -m spacy download en_core_web_sm"):
        text.load_reader("spacy")
    assert isinstance(text.load_reader("auto"), RuleReader)
    with pytest.raises(ValueError, match="must be 'auto', 'spacy' or 'rules'; got 'nltk'"):
        text.load_reader("nltk")


def test_a_paper_scale_suite_without_spacy_stops_before_loading_a_model(monkeypatch, tmp_path):
    from dptlib.evaluation.benchmarks import EvaluatorSuite

    monkeypatch.setattr(text, "spacy_available", lambda model=text.SPACY_MODEL: False)
    with pytest.raises(ValueError, match="spacy download"):  # the folder does not exist: no model was read
        EvaluatorSuite.from_paths({"vqa": str(tmp_path / "no-such-blip")}, noun_chunks="spacy")
