"""Exercises and quizzes agree with the committed tables they cite.

A quiz question about what the runs found reads its right answer from ``figures/*.csv``
(:mod:`dptlib.teaching.quiz`); the solution notebooks write their answers as letters. When a
table changes (a new run, a new seed), a solution that no longer agrees fails here, and a prompt
that quotes a number typed by hand instead of reading it from the table fails too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import pytest

from dptlib.teaching import checks, quiz

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TYPED_NUMBER = re.compile(r"(?<![\w.])[+-−]?\d+\.\d+")  # 84.6, +5.1, −2.7: a result typed by hand (Eq. 3, App. B.1 are not)
CONVENTIONS = {"0.05", "0.5"}  # a test's level, REC's IoU threshold: conventions, not results


def typed_results(text: str) -> list[str]:
    return [number for number in TYPED_NUMBER.findall(text) if number not in CONVENTIONS]


def solution_answers(name: str) -> dict:
    """The ``answers = {...}`` a solution notebook writes after its ``# solution`` line."""
    for cell in jupytext.read(NOTEBOOKS / f"{name}.py").cells:
        lines = cell.source.splitlines()
        if cell.cell_type == "code" and "# solution" in lines:
            after = "\n".join(lines[lines.index("# solution") + 1 :])
            if after.startswith("answers = "):
                return ast.literal_eval(after.removeprefix("answers = "))
    raise AssertionError(f"{name}.py has no solution `answers = {{...}}`")


@pytest.mark.parametrize("name", sorted(quiz.QUIZZES))
def test_the_solution_answers_agree_with_the_tables(name):
    right = quiz.answers(name)
    for number, question in enumerate(quiz.QUIZZES[name], 1):
        assert right[number] in question.options, f"{name} question {number}: the right answer {right[number]!r} is not an option"
    assert solution_answers(name) == right, f"{name}: the solution's letters no longer agree with the committed tables"


@pytest.mark.parametrize("name", sorted(quiz.QUIZZES))
def test_quiz_questions_type_no_results(name):
    for question in quiz.QUIZZES[name]:
        assert not typed_results(question.text + " ".join(question.options.values())), question.text


def exercise_prompts(path: Path):
    """The markdown cells of a lesson's judgement exercises, quiz and results exercises (those that cite tables)."""
    citing = False
    for cell in jupytext.read(path).cells:
        if cell.cell_type == "markdown":
            heading = cell.source.lstrip().splitlines()[0] if cell.source.strip() else ""
            if heading.startswith("#"):
                citing = "(judgement)" in heading or heading.startswith("## Quiz") or (
                    path.stem == "09_results" and heading.startswith("### Exercise"))
            if citing and "solution" not in cell.metadata.get("tags", []):
                yield cell.source


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("0*.py")), ids=lambda p: p.stem)
def test_exercise_prompts_read_numbers_from_the_tables(path):
    for text in exercise_prompts(path):
        found = typed_results(text)
        assert not found, f"{path.name}: an exercise prompt types {found}; print it from the table instead"


def test_every_core_lesson_has_a_judgement_exercise_and_a_quiz():
    for name in ("00_toy_world", "01_probing", "02_tuning", "03_self_correction"):
        text = (NOTEBOOKS / f"{name}.py").read_text()
        assert "### Exercise (judgement)" in text and "quiz.check(" in text, name
        assert name in quiz.QUIZZES and 3 <= len(quiz.QUIZZES[name]) <= 5, name


def test_a_stale_solution_is_caught(monkeypatch):
    """Negative control: a table whose verdict moved makes the solution's letter disagree."""
    real = quiz.committed_table

    def moved(name):
        table = real(name)
        if name == "seed_claims":
            table["verdict"] = table["verdict"].replace({"holds": "contradicted", "inconclusive": "holds"})
        return table

    monkeypatch.setattr(quiz, "committed_table", moved)
    assert solution_answers("01_probing") != quiz.answers("01_probing")


def test_a_typed_number_is_caught():
    assert typed_results("the REC row reads +5.1 points") == ["+5.1"]
    assert not typed_results("Eq. 3-4 and App. B.1, Tab. 3, at p < 0.05")


def test_quiz_check_says_right_wrong_and_unanswered(capsys):
    right = quiz.answers("01_probing")
    wrong = {n: next(o for o in quiz.QUIZZES["01_probing"][n - 1].options if o != r) for n, r in right.items()}
    assert quiz.check("01_probing", right) == f"{len(right)} of {len(right)} right"
    assert quiz.check("01_probing", wrong) == f"0 of {len(right)} right"
    assert quiz.check("01_probing", {1: None}).startswith("0 of")
    out = capsys.readouterr().out
    assert "not yet" in out and "not answered yet" in out and "right:" in out
    quiz.check("01_probing", {1: "z"})
    assert "is not one of the letters" in capsys.readouterr().out


def test_a_prediction_must_be_written_down_and_be_an_option(capsys):
    assert checks.check_prediction(None, ["a", "b"]) == checks.NOT_ATTEMPTED + ": write it down first, then compare with the result below"
    assert "noted" in checks.check_prediction("a", ["a", "b"])
    with pytest.raises(checks.ExerciseError, match="not one of"):
        checks.check_prediction("c", ["a", "b"])
