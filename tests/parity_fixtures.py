"""Reading the parity fixtures (not a test module), and the fallback reader's agreement table.

The fixtures store no benchmark prompt: a case names its prompt as ``prompt_ref`` = (set, category,
index) into the pinned benchmark files (:mod:`dptlib.data.prompt_sets`), spaCy's tokens as
``[start, end, pos]`` offsets into it, and the text the reference returned as spans of it. The files
are read from ``$DPT_BENCHMARKS_DIR`` or ``../shared/benchmarks`` (:data:`BENCHMARKS`; None where
neither has them, and the tests that need them are skipped).

``python tests/parity_fixtures.py`` prints the agreement table that docs/paper-scale.md holds.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pandas as pd

from dptlib.data import prompt_sets
from dptlib.evaluation.graders.text import RuleReader, Token, complex_pair, first_and_last_noun, without_adjectives

FIXTURES = Path(__file__).parent / "fixtures"
_ROOT = Path(__file__).resolve().parents[1]
_ENV = os.environ.get("DPT_BENCHMARKS_DIR")
BENCHMARKS = next((p for p in [*([Path(_ENV)] if _ENV else []), _ROOT.parent / "shared" / "benchmarks"]
                   if (p / "T2I-CompBench" / "complex_val.txt").is_file()), None)


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@cache
def _prompts(name: str, category: str) -> tuple[str, ...]:
    return tuple(prompt_sets.load(name, BENCHMARKS).subset(category).prompts)


def prompt_of(case: dict) -> str:
    """The benchmark prompt a case refers to."""
    ref = case["prompt_ref"]
    return _prompts(ref["set"], ref["category"])[ref["index"]]


def tokens_of(case: dict) -> list[Token]:
    """spaCy's reading of the case's prompt, as the fixture recorded it."""
    prompt = prompt_of(case)
    return [Token(prompt[start:end], pos) for start, end, pos in case["tokens"]]


def spans_of(case: dict, key: str) -> list[str]:
    prompt = prompt_of(case)
    return [prompt[start:end] for start, end in case[key]]


def complex_prompts(indices) -> list[str]:
    return [_prompts("t2i_compbench", "complex")[i] for i in indices]


def fallback_agreement() -> pd.DataFrame:
    """How often :class:`RuleReader` reads a T2I-CompBench val prompt exactly as the benchmark's
    spaCy does (the fixtures), and how often it and spaCy give the hand-labelled chunks."""
    reader, rows = RuleReader(), []

    def add(what, prompts, category, fallback, spacy=None):
        rows.append({"what": what, "prompts": prompts, "category": category, "n": len(fallback),
                     "fallback agrees (%)": round(100 * sum(fallback) / len(fallback), 1),
                     "spaCy agrees (%)": "" if spacy is None else round(100 * sum(spacy) / len(spacy), 1)})

    chunks = fixture("parity/chunks.json")["cases"]
    for category in dict.fromkeys(c["category"] for c in chunks):
        add("noun chunks vs spaCy", "val (the benchmark's)", category,
            [reader.noun_chunks(prompt_of(c)) == spans_of(c, "expected_spans") for c in chunks if c["category"] == category])
    spacy_chunks = {prompt_of(c): spans_of(c, "expected_spans") for c in chunks}
    hand = fixture("chunks_hand_labelled.json")["cases"]
    for category in dict.fromkeys(c["category"] for c in hand):
        mine = [c for c in hand if c["category"] == category]
        add("noun chunks vs hand labels", "val, every 10th line", category,
            [reader.noun_chunks(prompt_of(c)) == spans_of(c, "chunk_spans") for c in mine],
            [spacy_chunks[prompt_of(c)] == spans_of(c, "chunk_spans") for c in mine])
    nouns = fixture("parity/nouns.json")["cases"]
    add("first and last noun vs spaCy", "val", "spatial",
        [list(first_and_last_noun(reader.tokens(prompt_of(c)))) == c["expected"] for c in nouns if c["mode"] == "simple"])
    add("complex-mode objects vs spaCy", "val", "complex",
        [list(complex_pair(reader.tokens(prompt_of(c)))) == c["expected"] for c in nouns if c["mode"] == "complex"])
    add("prompt without adjectives vs spaCy", "val", "complex",
        [without_adjectives(reader.tokens(prompt_of(c))) == " ".join(spans_of(c, "expected_spans"))
         for c in fixture("parity/complex_clip_prompts.json")["cases"]])
    return pd.DataFrame(rows)


def agreement_markdown() -> str:
    from dptlib.experiments.report import markdown_table

    return markdown_table(fallback_agreement().set_index(["what", "prompts", "category"]), floatfmt=".1f").strip()


if __name__ == "__main__":
    print(agreement_markdown())
