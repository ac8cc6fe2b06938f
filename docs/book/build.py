"""Build the course website: ``make book`` (``python docs/book/build.py [--out build/book]``).

Stages the site's sources under ``<out>-src/`` with the repository's layout, then runs Sphinx (configuration:
``docs/book/conf.py``) into ``<out>/``:

- ``index.md`` and ``claims.md`` from ``docs/book/`` (the index's ``{toctree}`` markers are filled here: the reading order);
- ``notebooks/0*.ipynb``: the committed, executed notebooks (never executed here), with every exercise's solution folded:
  a code cell with a ``# solution`` line or tagged ``solution`` gets myst-nb's ``hide-input`` tag, a Markdown cell tagged
  ``solution`` goes into a closed dropdown (the rule of ``dptlib.teaching.exercises``);
- ``docs/*.md``;
- ``figures/`` (for ``../figures/*.png`` images and links and the claims table; not pages; also copied into the site as
  it is, for raw HTML ``<img src="../figures/...">``).

Links in the staged Markdown are rewritten: a link to a page of the site (``docs/x.md``, ``../notebooks/01_probing.ipynb``
or its ``.py`` pair, written relative to the file or to the repository root) points at that page; a link to a repository
file that is not in the site (``../dptlib/...py``) becomes its plain text; a link to a ``figures/*.md`` table downloads its
text; ``<a id="x"></a>`` anchors become MyST targets.
Files are written only when they changed, so a second build is incremental.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "docs" / "book"
sys.path.insert(0, str(ROOT))
from dptlib.teaching.exercises import SOLUTION_LINE, SOLUTION_TAG  # noqa: E402  (the exercises' own rule)

# the reading order; any other notebooks/0*.ipynb or docs/*.md follow in name order
NOTEBOOK_ORDER = ["00_toy_world", "00b_base_model", "01_probing", "02_tuning", "03_self_correction",
                  "04_ablation_blocks", "05_ablation_lora_rank", "06_ablation_adapter_layers", "07_ablation_timesteps",
                  "08_ablation_mse", "09_results"]
DOCS_ORDER = ["results", "course", "analysis-plan", "evidence", "ablations", "layout", "reproducibility", "cost", "gpu",
              "paper-scale"]
HIDE_INPUT = "hide-input"
SOLUTION_PROMPT = {"code_prompt_show": "Show the solution", "code_prompt_hide": "Hide the solution"}

LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?(\s+\"[^\"]*\")?\s*\)")
HTML_ATTR = re.compile(r"""\b(src|href)=(["'])([^"']+)\2""")
ANCHOR = re.compile(r"""^<a\s+(?:id|name)=["']([\w.:-]+)["']\s*>\s*</a>\s*""")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def notebooks() -> list[str]:
    names = [p.stem for p in sorted((ROOT / "notebooks").glob("0*.ipynb"))]
    return [n for n in NOTEBOOK_ORDER if n in names] + [n for n in names if n not in NOTEBOOK_ORDER]


def docs_pages() -> list[str]:
    names = [p.stem for p in sorted((ROOT / "docs").glob("*.md"))]
    return [n for n in DOCS_ORDER if n in names] + [n for n in names if n not in DOCS_ORDER]


def site_pages() -> dict[str, str]:
    """{repository path: staged source path} of every page that comes from the repository."""
    pages = {f"docs/book/{p.name}": p.name for p in BOOK.glob("*.md")}  # this folder's pages sit at the site's root
    pages.update({f"docs/{n}.md": f"docs/{n}.md" for n in docs_pages()})
    for n in notebooks():
        pages[f"notebooks/{n}.ipynb"] = pages[f"notebooks/{n}.py"] = f"notebooks/{n}.ipynb"
    return pages


# ---------------------------------------------------------------- links


def _resolve(target: str, source: str) -> str | None:
    """The repository path a relative link of ``source`` (a repository path) names, or None when it names nothing here."""
    if re.match(r"^[a-zA-Z][\w+.-]*:", target) or target.startswith(("#", "/", "//")):
        return None
    for candidate in (posixpath.normpath(posixpath.join(posixpath.dirname(source), target)), posixpath.normpath(target)):
        if not candidate.startswith("..") and (ROOT / candidate).exists():
            return candidate
    return None


def rewrite_target(target: str, source: str, staged_source: str) -> tuple[str, bool]:
    """(new target, keep as a link) for a link written in ``source``; a target that names nothing is left to Sphinx."""
    path, hash_, fragment = target.partition("#")
    if not path:
        return target, True
    resolved = _resolve(path, source)
    if resolved is None:
        return target, True
    pages = site_pages()
    staged = pages.get(resolved) or (resolved if resolved.startswith("figures/") else None)
    if staged is None:
        return target, False  # a repository file that is not in the site: plain text
    new = posixpath.relpath(staged, posixpath.dirname(staged_source) or ".")
    if staged not in pages.values() and staged.endswith((".md", ".ipynb")):
        return f"path:{new}", True  # a figures/ table in Markdown: its text (a download), not a page
    return new + hash_ + fragment, True


def rewrite_markdown(text: str, source: str, staged_source: str | None = None) -> str:
    """``text`` (Markdown of repository file ``source``) with its links and anchors made to work in the site."""
    staged_source = staged_source or site_pages().get(source, source)
    out, fence = [], None

    def link(match: re.Match) -> str:
        bang, label, target, title = match.groups()
        new, keep = rewrite_target(target, source, staged_source)
        if keep:
            return f"{bang}[{label}]({new}{title or ''})"
        return label if not bang else f"*{label or posixpath.basename(target)}*"

    def attr(match: re.Match) -> str:
        new, keep = rewrite_target(match.group(3), source, staged_source)
        new = new.removeprefix("path:")  # raw HTML is not Sphinx's: it reaches the copy of figures/ in the site
        return f"{match.group(1)}={match.group(2)}{new if keep else '#'}{match.group(2)}"

    for line in text.split("\n"):
        opened = FENCE.match(line)
        if fence:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            out.append(line)
            continue
        if opened:
            fence = opened.group(1)
            out.append(line)
            continue
        anchor = ANCHOR.match(line)
        if anchor:  # <a id="d1"></a>**D1.** ... -> a MyST target: [D1](#d1) then resolves
            out.append(f"({anchor.group(1)})=")
            line = line[anchor.end():]
        out.append(HTML_ATTR.sub(attr, LINK.sub(link, line)))
    return "\n".join(out)


# ---------------------------------------------------------------- notebooks


def is_solution(cell) -> bool:
    tagged = SOLUTION_TAG in cell.metadata.get("tags", [])
    cut = cell.cell_type == "code" and any(SOLUTION_LINE.match(line) for line in cell.source.splitlines())
    return tagged or cut


def fold_markdown(source: str) -> str:
    """A solution Markdown cell as a closed dropdown (leading headings stay outside: a section cannot open in a directive)."""
    lines = source.strip("\n").split("\n")
    head = []
    while lines and (HEADING.match(lines[0]) or not lines[0].strip()):
        head.append(lines.pop(0))
    body = [f"**{HEADING.match(x).group(2)}**" if HEADING.match(x) else x for x in lines]
    if not body:
        return source
    ticks = "`" * max(4, 1 + max((len(m) for m in re.findall(r"`{3,}", source)), default=0))
    return "\n".join([*head, "", f"{ticks}{{dropdown}} Solution", ":class-container: solution", "", *body, ticks])


def stage_notebook(path: Path, source: str) -> tuple[str, int]:
    """(the notebook's staged JSON, number of folded solutions)."""
    notebook = nbformat.read(path, as_version=4)
    folded = 0
    for cell in notebook.cells:
        solution = is_solution(cell)
        if cell.cell_type == "markdown":
            cell.source = rewrite_markdown(cell.source, source)
            if solution:  # a solution cell that is only a heading stays as it is (nothing to fold)
                was, cell.source = cell.source, fold_markdown(cell.source)
                folded += cell.source != was
        elif solution and cell.cell_type == "code":
            folded += 1
            tags = cell.metadata.setdefault("tags", [])
            if HIDE_INPUT not in tags:
                tags.append(HIDE_INPUT)
            cell.metadata.setdefault("mystnb", {}).update(SOLUTION_PROMPT)
    return nbformat.writes(notebook), folded


def solution_counts() -> dict[str, int]:
    """{notebook name: number of solutions folded in its page} (tests/test_book.py checks the pages against it)."""
    return {n: sum(is_solution(c) for c in nbformat.read(ROOT / "notebooks" / f"{n}.ipynb", as_version=4).cells)
            for n in notebooks()}


# ---------------------------------------------------------------- staging and build


def _write(path: Path, data: str | bytes, written: set[Path]) -> None:
    written.add(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    if not path.is_file() or path.read_bytes() != raw:
        path.write_bytes(raw)


def toctree(caption: str, entries: list[str]) -> str:
    return "\n".join(["```{toctree}", f":caption: {caption}", ":maxdepth: 1", "", *entries, "```"])


def stage(src: Path) -> dict:
    """Write the site's sources into ``src`` (stale files there removed); returns what was staged."""
    written: set[Path] = set()
    index = (BOOK / "index.md").read_text()
    index = index.replace("% toctree: notebooks", toctree("Notebooks", [f"notebooks/{n}" for n in notebooks()]))
    index = index.replace("% toctree: docs", toctree("Documentation", [f"docs/{n}" for n in docs_pages()]))
    _write(src / "index.md", rewrite_markdown(index, "docs/book/index.md", "index.md"), written)
    for page in sorted(BOOK.glob("*.md")):
        if page.name != "index.md":
            _write(src / page.name, rewrite_markdown(page.read_text(), f"docs/book/{page.name}", page.name), written)
    for n in docs_pages():
        _write(src / "docs" / f"{n}.md", rewrite_markdown((ROOT / "docs" / f"{n}.md").read_text(), f"docs/{n}.md"), written)
    folded = {}
    for n in notebooks():
        text, folded[n] = stage_notebook(ROOT / "notebooks" / f"{n}.ipynb", f"notebooks/{n}.ipynb")
        _write(src / "notebooks" / f"{n}.ipynb", text, written)
    for fig in sorted((ROOT / "figures").rglob("*")):
        if fig.is_file():
            _write(src / fig.relative_to(ROOT), fig.read_bytes(), written)
    for stale in [p for p in src.rglob("*") if p.is_file() and p not in written]:
        stale.unlink()
    return {"notebooks": notebooks(), "docs": docs_pages(), "solutions": folded}


def build(out: Path, strict: bool = False, jobs: str = "1", quiet: bool = True) -> dict:
    """Stage and build the site into ``out``; returns what was staged, the seconds taken and Sphinx's warnings."""
    start = time.monotonic()
    src = out.parent / f"{out.name}-src"
    staged = stage(src)
    warnings = out.parent / f"{out.name}-warnings.txt"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(BOOK), "-d", str(out.parent / f"{out.name}-doctrees"),
           "-j", jobs, "-w", str(warnings), str(src), str(out)]
    if quiet:
        cmd.append("-q")
    if strict:
        cmd += ["-W", "--keep-going"]
    result = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    if result.returncode == 0:  # raw HTML (<img src="../figures/x.png">) is not followed by Sphinx: figures/ as it is
        shutil.copytree(src / "figures", out / "figures", dirs_exist_ok=True)
    staged.update(seconds=round(time.monotonic() - start, 1), returncode=result.returncode,
                  warnings=[w for w in warnings.read_text().splitlines() if w.strip()] if warnings.is_file() else [])
    return staged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="the site's folder (default build/book)")
    parser.add_argument("--strict", action="store_true", help="fail on any Sphinx warning")
    parser.add_argument("-j", "--jobs", default="1", help="Sphinx's parallel jobs (default 1)")
    parser.add_argument("--json", action="store_true", help="print what was built as JSON")
    args = parser.parse_args(argv)
    info = build(args.out.resolve(), strict=args.strict, jobs=args.jobs)
    if args.json:
        print(json.dumps(info, indent=1))
    pages = len(info["notebooks"]) + len(info["docs"])
    print(f"site: {args.out / 'index.html'} ({pages} notebooks and docs pages, {sum(info['solutions'].values())} solutions folded, "
          f"{len(info['warnings'])} warnings, {info['seconds']} s)")
    return info["returncode"]


if __name__ == "__main__":
    sys.exit(main())
