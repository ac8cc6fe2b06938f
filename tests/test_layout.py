"""The package's layers: every import of every module (function-level ones included) goes down,
never up and never round in a circle; the paper's method (``dptlib/method``) stands alone."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dptlib"
# the layers, lowest first: a module imports modules of its own package or of a lower layer only
LAYERS = [("config", "files"), ("data",), ("checks",), ("method",), ("official", "evaluation"), ("toy",), ("experiments",),
          ("perf", "teaching"), ("cli",), ("__main__",)]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
METHOD_MUST_NOT_IMPORT = ("dptlib.evaluation", "dptlib.experiments", "dptlib.toy", "dptlib.teaching", "dptlib.official",
                          "dptlib.perf")
# what an import inside a function may defer: a dependency slow to import or optional (each such
# line says so with a "# deferred" comment); a dptlib module is never one of them
DEFERRABLE = {"IPython", "accelerate", "diffusers", "huggingface_hub", "jupyter_client", "jupytext", "matplotlib", "nbformat", "open_clip",
              "papermill", "peft", "scipy", "seaborn", "spacy", "tokenizers", "torch", "torch_fidelity", "torchmetrics",
              "transformers"}


def module_name(path: Path) -> str:
    parts = path.with_suffix("").parts
    parts = parts[len(parts) - parts[::-1].index("dptlib") - 1 :]  # from the last "dptlib" folder on
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p): p for p in sorted(root.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported dptlib module, line, inside a function) for every import in ``path``, at any
    depth; ``from dptlib.x import y`` counts as an import of ``dptlib.x.y`` when that is a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    inside = {id(node) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) for node in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known and "." in target:  # dptlib.data.images.X -> dptlib.data.images
                target = target.rpartition(".")[0]
            if target in known and target != "dptlib":
                found.append((target, node.lineno, id(node) in inside))
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = all_modules(root)
    return {name: {target for target, _, _ in imports_of(path, set(modules))} - {name} for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circle(s): " + "; ".join(" <-> ".join(c) for c in found)


def test_every_import_goes_down_a_layer_or_stays_in_its_package():
    modules = all_modules()
    unranked = sorted({layer(m) for m in modules} - set(RANK) - {"dptlib"})
    assert not unranked, f"modules outside every layer: {unranked} (add them to LAYERS)"
    upward = [f"{name} (line {line}) imports {target}" for name, path in modules.items() for target, line, _ in imports_of(path, set(modules))
              if layer(target) != layer(name) and RANK[layer(target)] >= RANK[layer(name)]]
    assert not upward, "imports that do not go down: " + "; ".join(upward)


def test_the_method_stands_alone():
    modules = all_modules()
    bad = [f"{name} imports {target}" for name, path in modules.items() if name.startswith("dptlib.method")
           for target, _, _ in imports_of(path, set(modules)) if target.startswith(METHOD_MUST_NOT_IMPORT)]
    assert not bad, "; ".join(bad)


def test_a_function_level_import_only_defers_a_heavy_dependency():
    bad = []
    for name, path in all_modules().items():
        source = path.read_text()
        lines = source.splitlines()
        for f in ast.walk(ast.parse(source)):
            if not isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(f):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    top = (node.names[0].name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
                    if getattr(node, "level", 0) or top not in DEFERRABLE or "# deferred" not in "".join(lines[node.lineno - 1 : node.end_lineno]):
                        bad.append(f"{name} line {node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not bad, "function-level imports that defer nothing heavy (or say nothing): " + "; ".join(bad)


def test_the_walk_finds_circles_and_upward_imports(tmp_path):
    """A negative control: a made-up package whose method imports the toy world, which imports the
    method back, is caught by both checks."""
    root = tmp_path / "dptlib"
    for folder in ("method", "toy"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "method" / "train.py").write_text("def f():\n    from dptlib.toy import world\n")
    (root / "toy" / "world.py").write_text("from ..method.train import f\n")
    graph = import_graph(root)
    assert graph["dptlib.method.train"] == {"dptlib.toy.world"} and graph["dptlib.toy.world"] == {"dptlib.method.train"}
    assert circles(graph) == [["dptlib.method.train", "dptlib.toy.world"]]


def test_importing_the_method_loads_nothing_above_it():
    code = ("import sys, dptlib.method.adapter, dptlib.method.losses, dptlib.method.train, dptlib.method.sampling, "
            "dptlib.method.inference, dptlib.method.checkpoint, dptlib.method.backbone; "
            "print(sorted(m for m in sys.modules if m.startswith('dptlib.') and m.split('.')[1] not in "
            "('config', 'files', 'checks', 'data', 'method')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_every_module_imports():
    code = f"import importlib; [importlib.import_module(m) for m in {sorted(all_modules())!r}]"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
