"""Prompt sets of the real text-to-image benchmarks used by the DPT paper, read from pinned upstream files.

| reader                | set                   | prompts | repository @ commit, upstream file                                 |
|-----------------------|-----------------------|---------|--------------------------------------------------------------------|
| :func:`cc500`         | CC-500                | 446     | weixi-feng/Structured-Diffusion-Guidance @ 773b2ba, ``CC-500.txt`` |
| :func:`abc6k`         | ABC-6K                | 6,434   | weixi-feng/Structured-Diffusion-Guidance @ 773b2ba, ``ABC-6K.txt`` |
| :func:`coco_nss1k`    | COCO-NSS1K            | 943     | LayoutLLM-T2I/LayoutLLM-T2I @ ee509cc, ``data/five_category.json`` |
| :func:`t2i_compbench` | T2I-CompBench val     | 6 x 300 | Karine-Huang/T2I-CompBench @ 7728dea, ``examples/dataset/*_val.txt``|
| :func:`tifa_v1`       | TIFA v1.0 text inputs | 4,081   | Yushi-Hu/tifa @ 8e37050, ``tifa_v1.0/tifa_v1.0_text_inputs.json``  |

Full commit ids and sha256 hashes are in :data:`SOURCES`.

- CC-500: two objects with two colours ("a green bench and a red car"). The upstream README says the set is lines 1-446;
  lines 447-602 of the file are other compositional prompts. Duplicates (14) are kept.
- ABC-6K: COCO captions with colour words swapped (many lines come in original/swapped pairs).
- COCO-NSS1K: COCO val captions in five groups; the group is the position in ``five_category.json`` (see
  :data:`NSS1K_SPLITS`), upstream names Numerical/Spatial/Semantic/Mixed/Null, mapped to the DPT paper's names by
  :data:`NSS1K_TO_DPT`. The prompt key is ``captions`` (a string).
- T2I-CompBench: validation prompts of color, shape, texture (attribute binding), spatial, non_spatial and complex.
  ``color_val.txt`` was edited upstream on 2025-09-03 (five duplicates replaced); the default is the paper-era file.
- TIFA v1.0: prompts from COCO, PartiPrompts, PaintSkills and DrawBench (the ``id`` prefix). The question/answer file
  needed for the TIFA score is read by :func:`tifa_questions`; its hash is not pinned (no verified copy was available).

The files are data of other projects: **never commit them to this repository**. They are found, in this order, in
an explicit ``root=`` folder, in ``$DPT_BENCHMARKS_DIR``, or in the download cache ``$DPT_CACHE_DIR/benchmarks``
(default ``~/.cache/dpt/benchmarks``), which is filled from ``https://raw.githubusercontent.com/{repo}/{commit}/{path}``
on first use. Every folder has the layout of :attr:`SourceFile.local_name` (e.g. ``CC-500/CC-500.txt``) and every file
is checked against its pinned sha256. Downloads are off when ``DPT_OFFLINE`` is true, or when it is unset and
``HF_HUB_OFFLINE`` is true (``DPT_OFFLINE=0`` re-enables them); a missing file then raises a ``FileNotFoundError``
that says where to fetch it and where to put it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ENV_BENCHMARKS_DIR = "DPT_BENCHMARKS_DIR"
ENV_CACHE_DIR = "DPT_CACHE_DIR"
ENV_OFFLINE = "DPT_OFFLINE"
URL_TEMPLATE = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"

_SDG = ("weixi-feng/Structured-Diffusion-Guidance", "773b2ba068c6cc60443d5d747a725413c8c9d46f")
_NSS = ("LayoutLLM-T2I/LayoutLLM-T2I", "ee509ccd0e4055896210ee1ce062a28cca74335a")
_COMPBENCH = ("Karine-Huang/T2I-CompBench", "7728deac05e17903b3145befd9b7207c7c019573")  # paper-era
_COMPBENCH_2025 = ("Karine-Huang/T2I-CompBench", "1b7094991a57f3c22abdd4f6e8ba6c1a15517073")  # color_val edited 2025-09-03
_TIFA = ("Yushi-Hu/tifa", "8e37050f44ab4ee681e4251f3c8a9d4cc86e901e")


@dataclass(frozen=True)
class SourceFile:
    """One upstream file, pinned to a commit; ``sha256`` is None only where no verified copy was available."""

    benchmark: str
    repo: str
    commit: str
    path: str  # path inside the upstream repository
    sha256: str | None
    local_name: str  # path inside a benchmarks folder

    @property
    def url(self) -> str:
        return URL_TEMPLATE.format(repo=self.repo, commit=self.commit, path=self.path)


def _src(benchmark: str, pin: tuple[str, str], path: str, sha256: str | None, local_name: str) -> SourceFile:
    return SourceFile(benchmark, pin[0], pin[1], path, sha256, local_name)


SOURCES: dict[str, SourceFile] = {
    "cc500": _src("CC-500", _SDG, "CC-500.txt",
                  "b36a39e83459508e1676372902f2becdb48f977ed13868600e6e27e26b301777", "CC-500/CC-500.txt"),
    "abc6k": _src("ABC-6K", _SDG, "ABC-6K.txt",
                  "47fa3ec1a839e6b74bb4f8e3746b454c8a8fb469cef66effddd172473f0f507b", "ABC-6K/ABC-6K.txt"),
    "coco_nss1k": _src("COCO-NSS1K", _NSS, "data/five_category.json",
                       "1a2013d25cea6eb56f23c2d660cae61013c3aea86933b47281b4671e16bf00a6", "COCO-NSS1K/five_category.json"),
    "coco_nss1k/numerical": _src("COCO-NSS1K", _NSS, "data/only_numeral.json",
                                 "3f6a02527b132dc263ffee7fb0ce39e2cf20d71e2c8f4a7812d0ebe6e63ca62b",
                                 "COCO-NSS1K/only_numeral.json"),
    "coco_nss1k/spatial": _src("COCO-NSS1K", _NSS, "data/sampled_only_spatial.json",
                               "5e9ff4b77d844206d06d2b4e9b08f397ee4e721a788c0dc672da4d703ca8c576",
                               "COCO-NSS1K/sampled_only_spatial.json"),
    "coco_nss1k/semantic": _src("COCO-NSS1K", _NSS, "data/sampled_only_semantic.json",
                                "50ec310b28c70bf3fd86498581c63af3ac42a2d803ddd0be7ba6accfcff6edb4",
                                "COCO-NSS1K/sampled_only_semantic.json"),
    "coco_nss1k/mixed": _src("COCO-NSS1K", _NSS, "data/mix_relation.json",
                             "383a2035462fda845b8c55054722dccb6774a54c756e49351cd49a62ec85c6c1",
                             "COCO-NSS1K/mix_relation.json"),
    "coco_nss1k/null": _src("COCO-NSS1K", _NSS, "data/sampled_non_relation.json",
                            "183aa833be6cbfc84b460f9023d473b54cee811a50914574a442b3901b8891aa",
                            "COCO-NSS1K/sampled_non_relation.json"),
    "t2i_compbench/color": _src("T2I-CompBench", _COMPBENCH, "examples/dataset/color_val.txt",
                                "1e37a12c1861bf6b11623eaffb0bf6d6eeea9702caf45b95d040f1721bba7f4f",
                                "T2I-CompBench/color_val.txt"),
    "t2i_compbench/color@2025-09-03": _src("T2I-CompBench", _COMPBENCH_2025, "examples/dataset/color_val.txt",
                                           "1634259756dbc77d13093d907d414480080ec9790a8c97ad09efaea7b2534f2d",
                                           "T2I-CompBench/color_val_2025-09-03.txt"),
    "t2i_compbench/shape": _src("T2I-CompBench", _COMPBENCH, "examples/dataset/shape_val.txt",
                                "37e1a276906c7ea9516cbd7ac8501be896006c0c17ca7344f260562834455bae",
                                "T2I-CompBench/shape_val.txt"),
    "t2i_compbench/texture": _src("T2I-CompBench", _COMPBENCH, "examples/dataset/texture_val.txt",
                                  "fbb5363515b4a28009e360afaaaf389d2dd2289e50dbb0c6ef4ea0c7fe4f3d4f",
                                  "T2I-CompBench/texture_val.txt"),
    "t2i_compbench/spatial": _src("T2I-CompBench", _COMPBENCH, "examples/dataset/spatial_val.txt",
                                  "8707a1d7e42ce3002d95363cf55f74bd043c843ae27108f5125aaaa7840ca988",
                                  "T2I-CompBench/spatial_val.txt"),
    "t2i_compbench/non_spatial": _src("T2I-CompBench", _COMPBENCH, "examples/dataset/non_spatial_val.txt",
                                      "04c56cc9ac441dc9ea6c5157652058bd1635b5308526dd31bb29a1caab9a758d",
                                      "T2I-CompBench/non_spatial_val.txt"),
    "t2i_compbench/complex": _src("T2I-CompBench", _COMPBENCH, "examples/dataset/complex_val.txt",
                                  "1b808018b8d9916db3d47d5aa2ef18377a3549a56901a474156f799824cdf3b4",
                                  "T2I-CompBench/complex_val.txt"),
    "tifa": _src("TIFA v1.0", _TIFA, "tifa_v1.0/tifa_v1.0_text_inputs.json",
                 "650281d508b056ac9782bc84d5493626424ee851a8778af90b9db554cfbc1a0f", "TIFA-v1.0/tifa_v1.0_text_inputs.json"),
    "tifa/questions": _src("TIFA v1.0", _TIFA, "tifa_v1.0/tifa_v1.0_question_answers.json",
                           None, "TIFA-v1.0/tifa_v1.0_question_answers.json"),
    "tifa/sample_questions": _src("TIFA v1.0", _TIFA, "sample/sample_question_answers.json",
                                  "99b7ffd220d5252de6e729786af057165a97cc8dbc715d9548c25f6842e14fe5",
                                  "TIFA-v1.0/sample_question_answers.json"),
}

CC500_LINES = 446  # upstream README: "CC-500: line1-446"
T2I_COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex")
T2I_COMPBENCH_COLOR_VERSIONS = {"paper": "t2i_compbench/color", "2025-09-03": "t2i_compbench/color@2025-09-03"}
TIFA_SOURCES = ("coco", "partiprompt", "paintskill", "drawbench")

# COCO-NSS1K groups in the order of five_category.json: (category, upstream name, count); upstream names from its README.
NSS1K_SPLITS: tuple[tuple[str, str, int], ...] = (
    ("numerical", "Numerical", 155),  # only_numeral.json, indices 0-154
    ("spatial", "Spatial", 200),  # sampled_only_spatial.json, 155-354
    ("semantic", "Semantic", 200),  # sampled_only_semantic.json, 355-554
    ("mixed", "Mixed", 188),  # mix_relation.json, 555-742
    ("null", "Null", 200),  # sampled_non_relation.json, 743-942
)
# The DPT paper's names for the same groups, matched by position. Upstream "Null" means no numeral, spatial or
# semantic relation; the paper calls that group "imagination".
NSS1K_TO_DPT: dict[str, str] = {
    "numerical": "counting",
    "spatial": "spatial",
    "semantic": "semantic",
    "mixed": "complicated relation",
    "null": "imagination",
}


@dataclass
class PromptSet:
    """Prompts of one benchmark, with a category per prompt and per-prompt metadata where the benchmark has them."""

    name: str
    prompts: list[str]
    categories: list[str] | None = None
    meta: list[dict] | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, category: str) -> PromptSet:
        """The prompts of one category, in order."""
        if self.categories is None:
            raise ValueError(f"{self.name} has no categories")
        keep = [i for i, c in enumerate(self.categories) if c == category]
        if not keep:
            raise KeyError(f"{self.name} has no category {category!r}; it has {sorted(set(self.categories))}")
        meta = None if self.meta is None else [self.meta[i] for i in keep]
        return PromptSet(f"{self.name}/{category}", [self.prompts[i] for i in keep], [category] * len(keep), meta)


# ---------------------------------------------------------------- locating, verifying and downloading files


def cache_dir() -> Path:
    """The download cache: ``$DPT_CACHE_DIR/benchmarks``, default ``~/.cache/dpt/benchmarks``."""
    base = os.environ.get(ENV_CACHE_DIR)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "dpt") / "benchmarks"


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def offline() -> bool:
    """True when downloads are off: ``DPT_OFFLINE`` if set, else ``HF_HUB_OFFLINE``."""
    if ENV_OFFLINE in os.environ:
        return _truthy(os.environ[ENV_OFFLINE])
    return _truthy(os.environ.get("HF_HUB_OFFLINE", ""))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(source: SourceFile, path: Path, label: str | None = None) -> Path:
    """``path`` if its sha256 is the pinned one; a ValueError naming the file (or ``label``) and both hashes otherwise."""
    if source.sha256 is None:
        warnings.warn(f"{label or path}: no pinned sha256 for {source.path} ({source.repo}); using it unverified", stacklevel=3)
        return path
    actual = sha256_file(path)
    if actual != source.sha256:
        raise ValueError(f"{label or path} is not {source.repo}@{source.commit[:7]}:{source.path}: "
                         f"expected sha256 {source.sha256}, got {actual}. Replace it with the file from {source.url}")
    return path


def fetch_url(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Write the bytes at ``url`` (https:// or file://) to ``dest``. Tests replace this function."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out)


def _missing(source: SourceFile, searched: list[Path], why: str) -> FileNotFoundError:
    """The error for a file that is in no folder and could not be downloaded: what, from where, to where."""
    folders = ", ".join(str(p) for p in searched)
    target = f"${ENV_BENCHMARKS_DIR}/{source.local_name}"
    if os.environ.get(ENV_BENCHMARKS_DIR):
        target += f" (here {Path(os.environ[ENV_BENCHMARKS_DIR]) / source.local_name})"
    return FileNotFoundError(
        f"{source.benchmark} file {source.local_name} not found (looked in {folders}) and {why}. "
        f"Fetch it from {source.url} and put it at {target}")


def _download(source: SourceFile, dest: Path, fetch: Callable[[str, Path], None]) -> Path:
    """Fetch into a temporary file next to ``dest``, check the sha256, then move it into place atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fetch(source.url, tmp)
        _verify(source, tmp, label=f"the download of {source.url}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _find_local(source: SourceFile, root: str | os.PathLike | None) -> tuple[Path | None, list[Path]]:
    """The verified copy in ``root``, ``$DPT_BENCHMARKS_DIR`` or the cache (first found), and the folders searched."""
    folders = [Path(root)] if root is not None else []
    if os.environ.get(ENV_BENCHMARKS_DIR):
        folders.append(Path(os.environ[ENV_BENCHMARKS_DIR]))
    folders.append(cache_dir())
    folders = [f.expanduser() for f in folders]
    for folder in folders:
        path = folder / source.local_name
        if path.is_file():
            return _verify(source, path), folders
    return None, folders


def locate(key: str | SourceFile, root: str | os.PathLike | None = None,
           fetch: Callable[[str, Path], None] | None = None) -> Path:
    """The verified local path of a registered file (a :data:`SOURCES` key), downloading it into the cache if needed.

    Raises ValueError on a sha256 mismatch and FileNotFoundError when the file is missing and cannot be downloaded.
    """
    source = SOURCES[key] if isinstance(key, str) else key
    path, searched = _find_local(source, root)
    if path is not None:
        return path
    if offline():
        raise _missing(source, searched, f"downloads are off ({ENV_OFFLINE} or HF_HUB_OFFLINE; {ENV_OFFLINE}=0 allows them)")
    try:
        return _download(source, cache_dir() / source.local_name, fetch or fetch_url)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise _missing(source, searched, f"the download failed ({err})") from err


def _find_optional(key: str, root: str | os.PathLike | None) -> Path | None:
    """A verified local copy of ``key`` if one exists; never downloads."""
    return _find_local(SOURCES[key], root)[0]


# ---------------------------------------------------------------- parsing


def _read_lines(path: Path) -> list[str]:
    """Non-empty lines of a text file, without line ends (LF or CRLF; a missing final newline is fine)."""
    text = path.read_bytes().decode("utf-8").replace("\r\n", "\n")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    return [line for line in lines if line.strip()]


def _read_json(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------- readers


def cc500(root: str | os.PathLike | None = None) -> PromptSet:
    """CC-500: lines 1-446 of ``CC-500.txt`` (446 prompts, 432 unique)."""
    lines = _read_lines(locate("cc500", root))[:CC500_LINES]
    if len(lines) != CC500_LINES:
        raise ValueError(f"CC-500.txt has {len(lines)} lines, expected at least {CC500_LINES}")
    return PromptSet("cc500", lines, None, [{"line": i + 1} for i in range(len(lines))])


def abc6k(root: str | os.PathLike | None = None) -> PromptSet:
    """ABC-6K: 6,434 prompts (6,388 unique)."""
    lines = _read_lines(locate("abc6k", root))
    return PromptSet("abc6k", lines, None, [{"line": i + 1} for i in range(len(lines))])


def _nss1k_category_of_index() -> list[str]:
    return [category for category, _, count in NSS1K_SPLITS for _ in range(count)]


def check_nss1k_order(entries: list[dict], parts: dict[str, list[dict]]) -> None:
    """ValueError unless ``entries`` is the concatenation of ``parts`` (category -> entries) in :data:`NSS1K_SPLITS` order."""
    expected = [(e["img_id"], e["captions"]) for category, _, _ in NSS1K_SPLITS for e in parts[category]]
    actual = [(e["img_id"], e["captions"]) for e in entries]
    if len(actual) != len(expected):
        raise ValueError(f"five_category.json has {len(actual)} entries, the category files {len(expected)}")
    for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
        if a != b:
            raise ValueError(f"five_category.json entry {i} is {a}, the category files give {b}")


def coco_nss1k(root: str | os.PathLike | None = None) -> PromptSet:
    """COCO-NSS1K: 943 prompts of ``five_category.json``, categorised by position (:data:`NSS1K_SPLITS`).

    Prompts are the ``captions`` strings without surrounding whitespace (some end in a space or ``\\n``). When all five
    per-category files are present locally, the order is checked against them.
    """
    entries = _read_json(locate("coco_nss1k", root))
    categories = _nss1k_category_of_index()
    if len(entries) != len(categories):
        raise ValueError(f"five_category.json has {len(entries)} entries, expected {len(categories)}")
    part_paths = {c: _find_optional(f"coco_nss1k/{c}", root) for c, _, _ in NSS1K_SPLITS}
    if all(p is not None for p in part_paths.values()):
        check_nss1k_order(entries, {c: _read_json(p) for c, p in part_paths.items()})
    upstream = {c: name for c, name, _ in NSS1K_SPLITS}
    meta = [{"index": i, "img_id": e["img_id"], "name": e["name"], "width": e["width"], "height": e["height"],
             "bbox": e["bbox"], "label": e["label"], "caption": e["captions"], "upstream_category": upstream[c],
             "dpt_category": NSS1K_TO_DPT[c]} for i, (e, c) in enumerate(zip(entries, categories, strict=True))]
    return PromptSet("coco_nss1k", [e["captions"].strip() for e in entries], categories, meta)


def t2i_compbench(categories: Iterable[str] = T2I_COMPBENCH_CATEGORIES, root: str | os.PathLike | None = None,
                  color_version: str = "paper") -> PromptSet:
    """T2I-CompBench validation prompts, 300 per category, in the order of ``categories``.

    ``color_version``: "paper" (commit 7728dea, the file of 2023) or "2025-09-03" (commit 1b70949, five lines changed).
    """
    prompts: list[str] = []
    labels: list[str] = []
    meta: list[dict] = []
    for category in categories:
        if category not in T2I_COMPBENCH_CATEGORIES:
            raise ValueError(f"unknown T2I-CompBench category {category!r}; choose from {T2I_COMPBENCH_CATEGORIES}")
        if category == "color":
            if color_version not in T2I_COMPBENCH_COLOR_VERSIONS:
                raise ValueError(f"color_version must be one of {sorted(T2I_COMPBENCH_COLOR_VERSIONS)}")
            key = T2I_COMPBENCH_COLOR_VERSIONS[color_version]
        else:
            key = f"t2i_compbench/{category}"
        lines = _read_lines(locate(key, root))
        prompts += lines
        labels += [category] * len(lines)
        meta += [{"line": i + 1, "commit": SOURCES[key].commit} for i in range(len(lines))]
    return PromptSet("t2i_compbench", prompts, labels, meta)


def tifa_v1(root: str | os.PathLike | None = None) -> PromptSet:
    """TIFA v1.0 text inputs: 4,081 prompts; category = source (``id`` prefix), meta = id, raw caption, coco_val_id."""
    entries = _read_json(locate("tifa", root))
    categories = [e["id"].split("_", 1)[0] for e in entries]
    unknown = sorted(set(categories) - set(TIFA_SOURCES))
    if unknown:
        raise ValueError(f"TIFA ids with unknown source prefixes: {unknown}")
    meta = [{"id": e["id"], "caption": e["caption"], "coco_val_id": e.get("coco_val_id")} for e in entries]
    return PromptSet("tifa", [e["caption"].strip() for e in entries], categories, meta)


def tifa_questions(root: str | os.PathLike | None = None, sample: bool = False) -> list[dict]:
    """TIFA v1.0 question/answer rows (id, caption, question, choices, answer, element_type, element[, coco_val_id]).

    ``sample=True`` reads the 19-question upstream sample instead (format only). The full file's hash is not pinned.
    """
    return _read_json(locate("tifa/sample_questions" if sample else "tifa/questions", root))


READERS: dict[str, Callable[..., PromptSet]] = {
    "cc500": cc500,
    "abc6k": abc6k,
    "coco_nss1k": coco_nss1k,
    "t2i_compbench": t2i_compbench,
    "tifa": tifa_v1,
}


def load(name: str, root: str | os.PathLike | None = None, **kwargs) -> PromptSet:
    """The prompt set ``name``: a :data:`READERS` key; case, "-" and "_" are ignored ("CC-500", "TIFA-v1.0")."""
    normalised = {k.replace("_", ""): k for k in READERS} | {"tifav1": "tifa", "tifav1.0": "tifa"}
    key = normalised.get(name.lower().replace("-", "").replace("_", ""))
    if key is None:
        raise KeyError(f"unknown prompt set {name!r}; choose from {sorted(READERS)}")
    return READERS[key](root=root, **kwargs)
