"""The graders against the benchmarks' own code: fixtures recorded by running it.

Each ``tests/fixtures/parity/*.json`` holds inputs and what the reference function returned on
them (T2I-CompBench, TIFA, the DPT release's ``evaluation.py``), with the repository, commit and
function named in its ``reference``; the reference code was run outside this repository and is
not in it. A failure names the case and both values. Where the reference reads prompts with spaCy,
the fixture records spaCy's tokens and tags too, so the benchmark's rules are checked here on the
same tags without spaCy installed; the rule-based fallback's agreement is measured, not assumed
(:func:`test_fallback_reader_agreement_is_what_the_docs_say`). No benchmark prompt is stored: a
case refers to its prompt in the pinned files (``tests/parity_fixtures.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dptlib.evaluation.graders import rules, text, tiny
from dptlib.evaluation.graders.rules import Detection

from parity_fixtures import BENCHMARKS, agreement_markdown, complex_prompts, prompt_of, spans_of, tokens_of

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
needs_benchmarks = pytest.mark.skipif(BENCHMARKS is None, reason="the benchmark files ($DPT_BENCHMARKS_DIR, ../shared/benchmarks): "
                                                                  "the fixtures refer to their prompts, they do not copy them")


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def mismatches(cases, ours, expected, close=None) -> list[str]:
    """'<id>: ours <a>, reference <b>' for each case where they differ."""
    same = close or (lambda a, b: a == b)
    return [f"{c['id']}: ours {a!r}, reference {b!r}" for c, a, b in zip(cases, ours, expected) if not same(a, b)]


def assert_parity(cases, ours, expected, close=None):
    bad = mismatches(cases, ours, expected, close)
    assert not bad, f"{len(bad)} of {len(cases)} cases differ from the reference:\n" + "\n".join(bad[:20])


# --------------------------------------------------------------------------------------------
# TIFA
# --------------------------------------------------------------------------------------------


def test_tifa_choice_mapping_matches_tifas_sbert_multiple_choice():
    from dptlib.evaluation.graders.tifa import sbert_embedder

    data = fixture("tifa_choice.json")
    torch.manual_seed(0)  # the tiny encoder the fixture was recorded with (its "run" says so)
    model, tokenizer = tiny.sentence_encoder()
    embed = sbert_embedder(model.eval(), tokenizer)
    ours = [rules.nearest_choice(c["free_answer"], c["choices"], embed) for c in data["cases"]]
    assert len(data["cases"]) >= 30
    assert_parity(data["cases"], ours, [c["expected"] for c in data["cases"]])


@needs_benchmarks
def test_tifa_average_and_per_type_accuracy_match_tifa_score_benchmark():
    data = fixture("tifa_aggregate.json")
    sample = json.loads((BENCHMARKS / "TIFA-v1.0" / "sample_question_answers.json").read_text(encoding="utf-8"))
    questions = [{**sample[q["sample_index"]], **q} if "sample_index" in q else q for q in data["questions"]]
    rows = [{"caption_id": q["id"], "element_type": q["element_type"], "correct": q["multiple_choice_answer"] == q["answer"]}
            for q in questions]
    ours, expected = rules.tifa_summary(rows), data["expected"]
    assert ours["tifa"] == pytest.approx(expected["tifa_average"], abs=1e-12)
    assert ours["tifa_stdev"] == pytest.approx(expected["tifa_stdev"], abs=1e-12)
    types = sorted(expected["accuracy_by_type"])
    assert_parity([{"id": t} for t in types], [ours["accuracy_by_type"][t] for t in types],
                  [expected["accuracy_by_type"][t] for t in types], lambda a, b: abs(a - b) < 1e-12)
    captions = sorted(expected["caption_scores"])
    assert_parity([{"id": c} for c in captions], [ours["caption_scores"][c] for c in captions],
                  [expected["caption_scores"][c] for c in captions], lambda a, b: abs(a - b) < 1e-12)


# --------------------------------------------------------------------------------------------
# CLIP: open_clip's own preprocessing, the release's arithmetic
# --------------------------------------------------------------------------------------------


def _tiny_open_clip(tmp_path, data, key):
    import open_clip

    name = data[f"model_config_name{'' if key == 'model_config' else '_gelu'}"]
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps(data[key]))
    open_clip.add_model_config(config)
    torch.manual_seed(data["seed"])
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    return name, model.eval(), preprocess, open_clip.get_tokenizer(name)


@pytest.mark.parametrize("key, cases", [("model_config", "cases"), ("model_config_gelu", "cases_gelu")])
def test_clip_score_matches_the_releases_evaluation_through_open_clips_preprocessing(tmp_path, key, cases):
    from dptlib.evaluation.graders.clip import ClipScore, open_clip_scorer

    data = fixture("clip_score.json")
    _, model, preprocess, tokenizer = _tiny_open_clip(tmp_path, data, key)
    scorer = ClipScore(open_clip_scorer(model, preprocess, tokenizer), "tiny", scale=1.0)
    rows = data[cases]
    pictures = [Image.open(FIXTURES / "clip_images" / c["image"]) for c in rows]  # as the release opens them: mode kept
    ours = scorer.pair_scores(pictures, [c["prompt"] for c in rows]).tolist()
    assert len(rows) >= 12 and len({p.size for p in pictures}) >= 6
    assert_parity(rows, ours, [c["expected"] for c in rows], lambda a, b: abs(a - b) < 2e-6)


def test_quick_gelu_and_gelu_give_other_scores(tmp_path):
    """The control of the test above: the activation is visible in the scores, so OpenAI's weights
    in a GELU model would not pass it."""
    data = fixture("clip_score.json")
    differences = [abs(a["expected"] - b["expected"]) for a, b in zip(data["cases"], data["cases_gelu"])]
    assert min(differences) > 2e-5


def test_clip_from_spec_builds_open_clips_model_and_preprocessing(tmp_path):
    """``ClipScore.from_spec`` (what the run files name) on RGB images given as arrays, the
    path every generated image takes."""
    from safetensors.torch import save_file

    from dptlib.evaluation.graders.clip import ClipScore

    data = fixture("clip_score.json")
    name, model, _, _ = _tiny_open_clip(tmp_path, data, "model_config")
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    scorer = ClipScore.from_spec(f"open_clip:{name}:{weights}", column="non-spatial CLIP")
    rows = [c for c in data["cases"] if Image.open(FIXTURES / "clip_images" / c["image"]).mode == "RGB"]
    arrays = [np.asarray(Image.open(FIXTURES / "clip_images" / c["image"])) for c in rows]
    ours = (scorer.pair_scores(arrays, [c["prompt"] for c in rows]) / 100).tolist()
    assert len(rows) >= 6
    assert_parity(rows, ours, [c["expected"] for c in rows], lambda a, b: abs(a - b) < 2e-6)


# --------------------------------------------------------------------------------------------
# T2I-CompBench: the spatial rule, the nouns, B-VQA, 3-in-1
# --------------------------------------------------------------------------------------------


def test_spatial_rule_matches_unidet_eval_on_every_relation_and_edge():
    data = fixture("spatial_rule.json")
    cases = data["cases"]
    ours = [rules.spatial_score(c["obj1"], c["obj2"], rules.relation_of(c["prompt"]),
                                [Detection(d["label"], d["score"], tuple(d["box"])) for d in c["detections"]]) for c in cases]
    assert len(cases) >= 30 and {rules.relation_of(c["prompt"]) for c in cases} >= {*rules.RELATIONS, None}
    assert_parity(cases, ours, [c["expected"] for c in cases], lambda a, b: abs(a - b) < 1e-12)


def test_position_rule_matches_determine_position():
    cases = [c for c in fixture("spatial_rule.json")["cases"] if c["expected_position"] is not None]

    def first_box(case, label):
        return next(tuple(d["box"]) for d in case["detections"] if d["label"] == label)

    ours = [rules.position_score(c["locality"], first_box(c, c["obj1_label"]), first_box(c, c["obj2_label"])) for c in cases]
    assert len(cases) >= 20
    assert_parity(cases, ours, [c["expected_position"] for c in cases], lambda a, b: abs(a - b) < 1e-12)


@needs_benchmarks
def test_first_and_last_noun_match_the_spatial_categorys_rule():
    cases = [c for c in fixture("nouns.json")["cases"] if c["mode"] == "simple"]
    assert len(cases) == 300
    assert_parity(cases, [list(text.first_and_last_noun(tokens_of(c))) for c in cases], [c["expected"] for c in cases])


@needs_benchmarks
def test_complex_mode_objects_match_the_benchmarks_preposition_rule():
    cases = [c for c in fixture("nouns.json")["cases"] if c["mode"] == "complex"]
    assert len(cases) == 300
    assert_parity(cases, [text.complex_objects(tokens_of(c)) for c in cases], [c["objects"] for c in cases])
    assert_parity(cases, [list(text.complex_pair(tokens_of(c))) for c in cases], [c["expected"] for c in cases])


@needs_benchmarks
def test_prompt_without_adjectives_matches_clip_similaritys_complex_mode():
    cases = fixture("complex_clip_prompts.json")["cases"]
    assert len(cases) == 300
    assert_parity(cases, [text.without_adjectives(tokens_of(c)) for c in cases], [" ".join(spans_of(c, "expected_spans")) for c in cases])


def test_bvqa_product_matches_blip_vqas_float32_reward_product():
    cases = fixture("bvqa_product.json")["cases"]
    ours = [rules.bvqa_score([s for s in c["shares"] if s is not None]) for c in cases]
    assert len(cases) >= 30
    assert_parity(cases, ours, [rules.written(c["expected"]) for c in cases])
    assert_parity(cases, [f"{v:.4f}" for v in ours], [c["expected_str"] for c in cases])


@needs_benchmarks
def test_three_in_one_kinds_and_averages_match_3_in_1():
    data = fixture("three_in_one.json")
    kinds = data["kinds"]
    spatial, action = complex_prompts(data["spatial_indices"]), complex_prompts(data["action_indices"])
    ours = [rules.complex_kind(prompt_of(c), spatial, action) for c in kinds]
    assert len(kinds) == 300 and set(ours) == {"spatial", "action", "both"}
    assert_parity(kinds, ours, [c["expected_kind"] for c in kinds])
    averaging = data["averaging"]
    ours = [rules.three_in_one(c["kind"], c["attribute"], c["spatial"], c["action"]) for c in averaging]
    assert len(averaging) >= 30
    assert_parity(averaging, ours, [c["expected"] for c in averaging], lambda a, b: abs(a - b) < 1e-12)


@needs_benchmarks
def test_bvqa_questions_are_the_kept_chunks():
    """B-VQA asks "{chunk}?" for spaCy's chunks less the benchmark's four: the evaluator's own
    chunk list, from a reader that returns spaCy's recorded chunks, is the fixture's."""
    from dptlib.evaluation.graders.vqa import BlipVqaBinding

    cases = fixture("chunks.json")["cases"]

    class Recorded:  # what spaCy's noun_chunks gave (recorded after the filter, so filtering again is a no-op)
        name, chunks = "recorded spaCy", {prompt_of(c): spans_of(c, "expected_spans") for c in cases}

        def noun_chunks(self, prompt):
            return text.kept_chunks(self.chunks[prompt])

    binding = BlipVqaBinding(type("V", (), {"name": "vqa"})(), Recorded())
    assert_parity(cases, [binding.chunks(prompt_of(c)) for c in cases], [spans_of(c, "expected_spans")[:8] for c in cases])
    assert text.kept_chunks(["a dog", "the left", "top", "a cat", "the side", "the right", "the top"]) == ["a dog", "a cat", "the top"]


@needs_benchmarks
@pytest.mark.skipif(not text.spacy_available(), reason="spaCy's en_core_web_sm is not installed (pip install -e '.[paper]')")
def test_spacy_reader_gives_the_benchmarks_chunks():
    cases = fixture("chunks.json")["cases"]
    reader = text.load_reader("spacy")
    agree = [reader.noun_chunks(prompt_of(c)) == spans_of(c, "expected_spans") for c in cases]
    assert sum(agree) / len(agree) > 0.97, "another spaCy model than the fixture's reads these prompts differently"


@needs_benchmarks
def test_fallback_reader_agreement_is_what_the_docs_say():
    """The fallback's agreement table in docs/paper-scale.md is the one computed from the fixtures."""
    computed = agreement_markdown()
    docs = (Path(__file__).parents[1] / "docs" / "paper-scale.md").read_text(encoding="utf-8")
    written = docs.split("<!-- fallback-agreement:begin -->")[1].split("<!-- fallback-agreement:end -->")[0].strip()
    assert written == computed, "docs/paper-scale.md's fallback table is stale: python tests/parity_fixtures.py"
    rows = [line for line in computed.splitlines() if line.startswith("| noun chunks vs spaCy")]
    assert len(rows) == 4 and all(float(line.split("|")[-3]) >= 60 for line in rows)  # a fallback, not a copy of spaCy
