"""The method stands apart from the toy world: no method module imports ``dptlib.toy``."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dptlib"
# the paper's method and its general machinery; the toy world (dptlib/toy) may import these, not the reverse
METHOD_MODULES = ("adapter", "backbone", "baselines", "checkpoint", "checks", "config", "data", "feature_probe", "inference", "losses",
                  "metrics", "prompt_sets", "sampling", "stats", "train", "official_transformer", "official_adapter",
                  "official_checkpoint", "convert_official", "evaluators/rules",
                  "evaluators/vqa", "evaluators/blip2", "evaluators/clip", "evaluators/detection",
                  "evaluators/tifa", "evaluators/compbench", "evaluators/inception")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports too), made absolute."""
    package = "dptlib" if path.parent == PACKAGE else "dptlib." + path.parent.name
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("name", METHOD_MODULES)
def test_a_method_module_imports_nothing_of_the_toy_world(name):
    toy = sorted(m for m in imported_modules(PACKAGE / f"{name}.py") if m == "dptlib.toy" or m.startswith("dptlib.toy."))
    assert not toy, f"dptlib/{name}.py imports {toy}"


def test_the_walk_sees_relative_imports():
    """A negative control: the walk does find the toy package's own imports of the method."""
    assert "dptlib.data" in imported_modules(PACKAGE / "toy" / "data.py")
    assert "dptlib.toy.world" in imported_modules(PACKAGE / "toy" / "prompts.py")


def test_importing_the_method_loads_no_toy_module():
    code = ("import sys, dptlib.adapter, dptlib.losses, dptlib.train, dptlib.sampling, dptlib.inference, dptlib.metrics; "
            "print(sorted(m for m in sys.modules if m.startswith('dptlib.toy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
