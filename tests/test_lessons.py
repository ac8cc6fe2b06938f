"""The notebooks read as lessons: goals first, findings last, short cells, no dates, whole tables.

The rules (docs/teaching.md):

- every lesson (``notebooks/0*.py``) opens with its goals ("**In this lesson you will**") and
  closes with its findings ("## What we learned");
- a code cell is at most ``MAX_LINES`` lines, the stated exceptions apart (``EXCEPTIONS``: the
  papermill ``parameters`` cell, which lists a run's settings one per line);
- each code cell is introduced by one sentence: a markdown cell before it or a comment as its first line;
- no dates inside a lesson (history goes to CHANGELOG.md);
- no committed output shows a table with a cell cut short ("...").
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("0*.py"))
MAX_LINES = 15
EXCEPTIONS = {"parameters": "papermill's parameters cell: one setting per line, each with its comment"}
GOALS = "**In this lesson you will**"
FINDINGS = "## What we learned"
DATE = re.compile(r"\b20\d\d-\d\d(-\d\d)?\b")
# Lessons whose committed outputs predate report.set_theme's display options and wait for their toy-scale
# re-execution: their table check is expected to fail until then (none now).
PENDING_RERUN: dict[str, str] = {}
CUT = re.compile(r"(<td>[^<]*\.\.\.</td>|\S\.\.\.\s{2,})")


def cells(path: Path):
    return jupytext.read(path).cells


def test_there_are_lessons():
    assert len(LESSONS) >= 11, LESSONS


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_goals_first_and_findings_last(path):
    markdown = [cell.source for cell in cells(path) if cell.cell_type == "markdown"]
    assert any(GOALS in text for text in markdown[:3]), f"{path.name}: no goals ({GOALS!r}) among its first markdown cells"
    assert any(text.lstrip().startswith(FINDINGS) for text in markdown), f"{path.name}: no findings ({FINDINGS!r})"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_code_cells_are_short_and_introduced(path):
    previous = None
    for number, cell in enumerate(cells(path)):
        if cell.cell_type == "code":
            lines = cell.source.strip().splitlines()
            excepted = set(cell.metadata.get("tags", [])) & set(EXCEPTIONS)
            assert excepted or len(lines) <= MAX_LINES, f"{path.name} cell {number}: {len(lines)} lines > {MAX_LINES}: {lines[0]!r}"
            introduced = previous == "markdown" or (lines and lines[0].startswith("#")) or excepted
            assert introduced, f"{path.name} cell {number}: no sentence introduces it: {lines[0]!r}"
        previous = cell.cell_type


def unshown_prose(source: str) -> list[int]:
    """Lines of ``report.prose(...)`` calls whose Markdown a notebook would not show: a bare call that is not the
    cell's last top-level statement (inside an ``if`` or a loop, or followed by more code) is evaluated and dropped."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    tree = ast.parse(code)
    last = tree.body[-1] if tree.body else None
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "prose" and node is not last]


def test_the_prose_detector_sees_a_dropped_paragraph():
    assert unshown_prose("x = 1\nreport.prose(f'{x}')") == []
    assert unshown_prose("if x:\n    display(report.prose('a'))") == []
    assert unshown_prose("if x:\n    report.prose('a')") == [2]
    assert unshown_prose("report.prose('a')\nprint(1)") == [1]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_computed_prose_is_shown(path):
    for number, cell in enumerate(cells(path)):
        if cell.cell_type == "code":
            lines = unshown_prose(cell.source)
            assert not lines, f"{path.name} cell {number}: report.prose at line(s) {lines} is not shown (wrap it in display())"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_no_dates_inside_a_lesson(path):
    for number, cell in enumerate(cells(path)):
        found = DATE.search(cell.source)
        assert not found, f"{path.name} cell {number}: a date ({found.group()}) inside a lesson; history goes to CHANGELOG.md"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_committed_tables_are_whole(path):
    if path.stem in PENDING_RERUN:
        pytest.xfail(PENDING_RERUN[path.stem])
    notebook = json.loads(path.with_suffix(".ipynb").read_text())
    for number, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            html = "".join(output.get("data", {}).get("text/html", []))
            if "<table" in html:
                found = CUT.search(html)
                assert not found, f"{path.with_suffix('.ipynb').name} cell {number}: a table cell cut short: {found.group()!r}"


def test_the_cut_detector_sees_a_cut_table():
    """Negative control: pandas' default display cuts a long cell, and the detector sees it."""
    import pandas as pd

    with pd.option_context("display.max_colwidth", 50):
        html = pd.DataFrame({"claim": ["Tab. 1: DPT (stage 2) improves on the base model on every prompt set"]})._repr_html_()
    assert CUT.search(html)


def test_a_cell_reading_toy_rows_says_so_at_the_smoke_scale_and_fails_at_the_toy_scale(capsys):
    import pandas as pd

    from dptlib.experiments import report

    table = pd.DataFrame({"ITM overall": [84.6]}, index=["up1"])
    with report.toy_rows("smoke"):
        table.loc["down0", "ITM overall"]
    said = capsys.readouterr().out
    assert "does not make" in said and "KeyError" in said
    with pytest.raises(KeyError):
        with report.toy_rows("toy"):
            table.loc["down0", "ITM overall"]
