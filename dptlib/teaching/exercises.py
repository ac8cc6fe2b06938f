"""Exercise notebooks generated from the solution notebooks: ``make exercises``.

The exercises are written as solutions inside ``notebooks/NAME.py``; this module writes
``notebooks/exercises/NAME.py`` and ``.ipynb`` (no outputs) with the solutions cut, by two rules
(those of scikit-learn-mooc):

- a cell tagged ``solution`` is dropped;
- in a code cell, the line ``# solution`` and every line after it are replaced by
  ``# Write your code here.`` at that line's indentation (a function keeps its signature and
  docstring, so the stub still runs and returns ``None``).

Every exercise then calls a ``dptlib.teaching.checks.check_*`` helper, which says "not attempted yet" on
the stub, so both versions run under nbval. ``tests/test_exercises.py`` fails when the committed
exercise notebooks differ from what this module writes.

    python -m dptlib.teaching.exercises [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat

from dptlib.config import repo_root

SOLUTION_TAG = "solution"
SOLUTION_LINE = re.compile(r"^(\s*)# solution\s*$")
STUB = "# Write your code here."
FOLDER = "exercises"


def has_exercises(notebook: nbformat.NotebookNode) -> bool:
    return any(SOLUTION_TAG in cell.metadata.get("tags", []) or
               (cell.cell_type == "code" and any(SOLUTION_LINE.match(line) for line in cell.source.splitlines()))
               for cell in notebook.cells)


def cut_solution(source: str) -> str:
    """A code cell's source with everything from its ``# solution`` line on replaced by the stub."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        match = SOLUTION_LINE.match(line)
        if match:
            return "\n".join([*lines[:i], match.group(1) + STUB])
    return source


def exercise_notebook(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The exercise version of a solution notebook (outputs cleared; a first cell says where it came from)."""
    notebook = nbformat.from_dict(solution)
    cells = []
    for cell in notebook.cells:
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            continue
        if cell.cell_type == "code":
            cell.source = cut_solution(cell.source)
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    note = nbformat.v4.new_markdown_cell(
        f"*Exercise version of `notebooks/{name}.py`, written by `make exercises`: do not edit it here.\n"
        "Where a cell says `# Write your code here.`, write the code; the check after it says\n"
        "\"not attempted yet\" until you do, then whether your answer agrees with the library.*")
    notebook.cells = [note, *cells]
    for i, cell in enumerate(notebook.cells):  # fixed ids: the same solution gives the same file
        cell["id"] = f"{name}-{i}".replace("_", "-")
    return notebook


def render(notebooks_dir: Path | None = None) -> dict[str, str]:
    """{relative path under notebooks/exercises: text} of every exercise file (.py and .ipynb)."""
    notebooks_dir = notebooks_dir or repo_root() / "notebooks"
    out = {}
    for path in sorted(notebooks_dir.glob("*.py")):
        solution = jupytext.read(path)
        if not has_exercises(solution):
            continue
        exercise = exercise_notebook(solution, path.stem)
        out[f"{path.stem}.py"] = jupytext.writes(exercise, fmt="py:percent")
        out[f"{path.stem}.ipynb"] = jupytext.writes(exercise, fmt="ipynb")
    return out


def write(notebooks_dir: Path | None = None) -> list[Path]:
    """Write the exercise notebooks (and remove exercise files whose solution notebook has none)."""
    notebooks_dir = notebooks_dir or repo_root() / "notebooks"
    folder = notebooks_dir / FOLDER
    folder.mkdir(exist_ok=True)
    files = render(notebooks_dir)
    for stale in [p for p in folder.glob("*") if p.suffix in (".py", ".ipynb") and p.name not in files]:
        stale.unlink()
    written = []
    for name, text in files.items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


def drift(notebooks_dir: Path | None = None) -> list[str]:
    """Names of exercise files that are missing, stale or differ from what :func:`render` writes."""
    notebooks_dir = notebooks_dir or repo_root() / "notebooks"
    folder = notebooks_dir / FOLDER
    files = render(notebooks_dir)
    present = {p.name for p in folder.glob("*") if p.suffix in (".py", ".ipynb")} if folder.is_dir() else set()
    changed = [name for name, text in files.items() if not (folder / name).is_file() or (folder / name).read_text() != text]
    return sorted(set(changed) | (present - set(files)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if notebooks/exercises/ drifted")
    args = parser.parse_args(argv)
    if args.check:
        changed = drift()
        if changed:
            print(f"notebooks/exercises/ differs from the solutions: {', '.join(changed)} (run `make exercises`)", file=sys.stderr)
            return 1
        print("notebooks/exercises/ matches the solutions")
        return 0
    for path in write():
        print(path.relative_to(repo_root()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
