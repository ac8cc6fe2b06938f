"""dptlib.data.prompt_sets against the local copies of the benchmarks (../shared/benchmarks or $DPT_BENCHMARKS_DIR).

No test touches the network: downloads go through a replaced fetch function or a file:// URL.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
from collections import Counter
from pathlib import Path

import pytest

from dptlib.data import prompt_sets as ps

_ENV_DIR = os.environ.get("DPT_BENCHMARKS_DIR")
_CANDIDATES = [Path(_ENV_DIR)] if _ENV_DIR else []
_CANDIDATES.append(Path(__file__).resolve().parents[2] / "shared" / "benchmarks")
REAL_FETCH = ps.fetch_url  # kept before the autouse fixture replaces it
SHARED = next((p for p in _CANDIDATES if (p / "CC-500" / "CC-500.txt").is_file()), None)

needs_data = pytest.mark.skipif(
    SHARED is None, reason=f"benchmark copies not found: set DPT_BENCHMARKS_DIR or provide {_CANDIDATES[-1]}")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """A fresh cache, no $DPT_BENCHMARKS_DIR, downloads off, and a fetch that fails the test if it is reached."""
    monkeypatch.setenv("DPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DPT_BENCHMARKS_DIR", raising=False)
    monkeypatch.setenv("DPT_OFFLINE", "1")

    def no_network(url: str, dest: Path) -> None:
        raise AssertionError(f"unexpected fetch of {url}")

    monkeypatch.setattr(ps, "fetch_url", no_network)


def raw_lines(local_name: str) -> list[str]:
    """The file's lines as the tests read them, independently of the module."""
    return (SHARED / local_name).read_text(encoding="utf-8").splitlines()


def copy_source(key: str, root: Path) -> Path:
    dest = root / ps.SOURCES[key].local_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHARED / ps.SOURCES[key].local_name, dest)
    return dest


def cache_files(tmp_path: Path) -> list[Path]:
    cache = tmp_path / "cache"
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


# ---------------------------------------------------------------- registry


def test_registry_urls_and_pins():
    assert ps.SOURCES["cc500"].url == ("https://raw.githubusercontent.com/weixi-feng/Structured-Diffusion-Guidance/"
                                       "773b2ba068c6cc60443d5d747a725413c8c9d46f/CC-500.txt")
    assert ps.SOURCES["t2i_compbench/color"].commit.startswith("7728deac")
    assert ps.SOURCES["t2i_compbench/color@2025-09-03"].commit.startswith("1b709499")
    for key, source in ps.SOURCES.items():
        assert len(source.commit) == 40, key
        assert source.sha256 is None or len(source.sha256) == 64, key
    assert [k for k, s in ps.SOURCES.items() if s.sha256 is None] == ["tifa/questions"]


@needs_data
def test_registered_hashes_match_local_copies():
    for key, source in ps.SOURCES.items():
        path = SHARED / source.local_name
        if source.sha256 is not None:
            assert ps.sha256_file(path) == source.sha256, key
    assert "CC-500/CC-500_first446.txt" not in {s.local_name for s in ps.SOURCES.values()}  # derived: not registered


# ---------------------------------------------------------------- readers


@needs_data
def test_cc500():
    s = ps.cc500(root=SHARED)
    assert len(s) == 446 and len(set(s.prompts)) == 432
    lines = raw_lines("CC-500/CC-500.txt")
    assert s.prompts[0] == lines[0] == "a green bench and a red car"
    assert s.prompts[-1] == lines[445]
    assert s.prompts == raw_lines("CC-500/CC-500_first446.txt")  # the derived copy in the shared folder
    assert all("\r" not in p and "\n" not in p for p in s.prompts)


@needs_data
def test_abc6k():
    s = ps.abc6k(root=SHARED)
    lines = raw_lines("ABC-6K/ABC-6K.txt")
    assert len(s) == 6434 and len(set(s.prompts)) == 6388
    assert (s.prompts[0], s.prompts[-1]) == (lines[0], lines[-1])
    assert all("\r" not in p for p in s.prompts)


@needs_data
def test_coco_nss1k():
    s = ps.coco_nss1k(root=SHARED)
    assert len(s) == 943
    assert Counter(s.categories) == {"numerical": 155, "spatial": 200, "semantic": 200, "mixed": 188, "null": 200}
    assert s.categories[154] == "numerical" and s.categories[155] == "spatial" and s.categories[942] == "null"
    entries = json.loads((SHARED / "COCO-NSS1K/five_category.json").read_text(encoding="utf-8"))
    assert s.prompts[0] == entries[0]["captions"] == "One bird that looks like two different ones."
    assert s.prompts[-1] == entries[-1]["captions"].strip()
    assert s.prompts[477] == "A guy is skiing there is a lot of snow ." and s.meta[477]["caption"].endswith("\n")
    assert all(p == p.strip() and "\r" not in p for p in s.prompts)
    assert {m["dpt_category"] for m in s.meta} == set(ps.NSS1K_TO_DPT.values())
    assert s.meta[600]["dpt_category"] == "complicated relation" and s.meta[0]["upstream_category"] == "Numerical"
    labels = [json.loads(line) for line in raw_lines("COCO-NSS1K/five_category_labels.jsonl")]  # derived copy
    assert [row["category"] for row in labels] == s.categories
    assert len(s.subset("mixed")) == 188


@needs_data
def test_nss1k_order_check_refuses_a_mismatch():
    entries = json.loads((SHARED / "COCO-NSS1K/five_category.json").read_text(encoding="utf-8"))
    parts = {c: json.loads(ps.locate(f"coco_nss1k/{c}", SHARED).read_text(encoding="utf-8")) for c, _, _ in ps.NSS1K_SPLITS}
    ps.check_nss1k_order(entries, parts)
    parts["spatial"], parts["semantic"] = parts["semantic"], parts["spatial"]
    with pytest.raises(ValueError, match="entry 155"):
        ps.check_nss1k_order(entries, parts)


@needs_data
def test_t2i_compbench():
    s = ps.t2i_compbench(root=SHARED)
    assert len(s) == 1800
    assert Counter(s.categories) == {c: 300 for c in ps.T2I_COMPBENCH_CATEGORIES}
    assert all("\r" not in p and "\n" not in p and p for p in s.prompts)
    for category in ps.T2I_COMPBENCH_CATEGORIES:
        sub = s.subset(category)
        lines = [line.rstrip("\r") for line in raw_lines(f"T2I-CompBench/{category}_val.txt")]
        assert (sub.prompts[0], sub.prompts[-1]) == (lines[0], lines[-1]), category
    assert s.prompts[0] == "a green bench and a blue bowl"
    assert len(set(s.subset("color").prompts)) == 295


@needs_data
def test_t2i_compbench_color_versions_and_categories():
    new = ps.t2i_compbench(categories=("color",), root=SHARED, color_version="2025-09-03")
    old = ps.t2i_compbench(categories=["color"], root=SHARED)
    assert len(new) == len(old) == 300 and len(set(new.prompts)) == 300
    assert sum(a != b for a, b in zip(new.prompts, old.prompts, strict=True)) == 5
    with pytest.raises(ValueError, match="unknown T2I-CompBench category"):
        ps.t2i_compbench(categories=("numeracy",), root=SHARED)


@needs_data
def test_tifa_v1():
    s = ps.tifa_v1(root=SHARED)
    entries = json.loads((SHARED / "TIFA-v1.0/tifa_v1.0_text_inputs.json").read_text(encoding="utf-8"))
    assert len(s) == 4081 and len({m["id"] for m in s.meta}) == 4081
    assert Counter(s.categories) == {"coco": 2000, "partiprompt": 1420, "paintskill": 500, "drawbench": 161}
    assert s.meta[0] == entries[0] and s.prompts[0] == entries[0]["caption"]
    assert s.meta[-1]["id"] == entries[-1]["id"] == "paintskill_499" and s.meta[-1]["coco_val_id"] is None
    assert sum(m["coco_val_id"] is not None for m in s.meta) == 2000
    assert all(p == p.strip() for p in s.prompts)


@needs_data
def test_tifa_questions():
    sample = ps.tifa_questions(root=SHARED, sample=True)
    assert len(sample) == 19 and {"question", "choices", "answer", "element_type"} <= set(sample[0])
    with pytest.raises(FileNotFoundError, match="tifa_v1.0_question_answers.json"):
        ps.tifa_questions(root=SHARED)


@needs_data
def test_load_dispatch():
    assert len(ps.load("cc500", root=SHARED)) == 446
    assert len(ps.load("CC-500", root=SHARED)) == 446
    assert len(ps.load("t2i_compbench", root=SHARED, categories=("shape",))) == 300
    assert ps.load("TIFA-v1.0", root=SHARED).name == "tifa"
    with pytest.raises(KeyError):
        ps.load("drawbench")


# ---------------------------------------------------------------- locations and hashes


@needs_data
def test_environment_folder_is_used(monkeypatch):
    monkeypatch.setenv("DPT_BENCHMARKS_DIR", str(SHARED))
    assert len(ps.abc6k()) == 6434


@needs_data
def test_corrupted_copy_is_refused(monkeypatch, tmp_path):
    root = tmp_path / "bench"
    path = copy_source("cc500", root)
    path.write_text(path.read_text(encoding="utf-8").replace("red", "blue", 1), encoding="utf-8")
    with pytest.raises(ValueError) as err:
        ps.cc500(root=root)
    message = str(err.value)
    assert str(path) in message and ps.SOURCES["cc500"].sha256 in message and ps.sha256_file(path) in message
    monkeypatch.setenv("DPT_BENCHMARKS_DIR", str(root))
    with pytest.raises(ValueError, match="expected sha256"):
        ps.cc500()
    assert len(ps.cc500(root=SHARED)) == 446  # an explicit root comes before the environment


# ---------------------------------------------------------------- downloads


def test_fetch_url_reads_file_urls(tmp_path):
    src = tmp_path / "a.txt"
    src.write_bytes(b"one\r\ntwo")
    REAL_FETCH(src.as_uri(), tmp_path / "b.txt")
    assert (tmp_path / "b.txt").read_bytes() == b"one\r\ntwo"


@needs_data
def test_download_into_cache_then_reuse(monkeypatch, tmp_path):
    monkeypatch.setenv("DPT_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # DPT_OFFLINE=0 wins
    calls: list[str] = []
    by_url = {s.url: s for s in ps.SOURCES.values()}

    def fake_fetch(url: str, dest: Path) -> None:
        calls.append(url)
        shutil.copyfile(SHARED / by_url[url].local_name, dest)

    monkeypatch.setattr(ps, "fetch_url", fake_fetch)
    assert len(ps.cc500()) == 446
    assert calls == [ps.SOURCES["cc500"].url]
    assert cache_files(tmp_path) == [tmp_path / "cache" / "benchmarks" / "CC-500" / "CC-500.txt"]
    assert len(ps.cc500()) == 446 and len(calls) == 1  # the second call reads the cache


@needs_data
def test_download_with_a_file_url(monkeypatch, tmp_path):
    """The real urllib fetch, pointed at the shared folder through file:// URLs."""
    by_url = {s.url: s for s in ps.SOURCES.values()}
    monkeypatch.setenv("DPT_OFFLINE", "0")
    monkeypatch.setattr(ps, "fetch_url", lambda url, dest: REAL_FETCH((SHARED / by_url[url].local_name).as_uri(), dest))
    s = ps.t2i_compbench(categories=("spatial",))
    assert len(s) == 300 and len(cache_files(tmp_path)) == 1


@needs_data
def test_download_with_a_wrong_hash_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("DPT_OFFLINE", "0")
    monkeypatch.setattr(ps, "fetch_url", lambda url, dest: Path(dest).write_bytes(b"404: Not Found"))
    with pytest.raises(ValueError, match="expected sha256"):
        ps.abc6k()
    assert cache_files(tmp_path) == []


def test_offline_without_a_copy_says_where_to_get_it(tmp_path):
    source = ps.SOURCES["coco_nss1k"]
    with pytest.raises(FileNotFoundError) as err:
        ps.coco_nss1k(root=tmp_path / "empty")
    message = str(err.value)
    assert source.url in message and f"$DPT_BENCHMARKS_DIR/{source.local_name}" in message
    assert str(tmp_path / "empty") in message and "downloads are off" in message


def test_unreachable_network_gives_the_same_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DPT_OFFLINE", "0")

    def unreachable(url: str, dest: Path) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(ps, "fetch_url", unreachable)
    with pytest.raises(FileNotFoundError, match="download failed") as err:
        ps.tifa_v1()
    assert ps.SOURCES["tifa"].url in str(err.value) and "DPT_BENCHMARKS_DIR/TIFA-v1.0/" in str(err.value)
    assert cache_files(tmp_path) == []


@needs_data
def test_coco_nss1k_without_the_category_files(tmp_path):
    root = tmp_path / "bench"
    copy_source("coco_nss1k", root)
    s = ps.coco_nss1k(root=root)
    assert len(s) == 943 and s.categories[742] == "mixed" and s.categories[743] == "null"


@needs_data
def test_unpinned_tifa_questions_are_read_with_a_warning(tmp_path):
    root = tmp_path / "bench"
    dest = root / ps.SOURCES["tifa/questions"].local_name
    dest.parent.mkdir(parents=True)
    shutil.copyfile(SHARED / ps.SOURCES["tifa/sample_questions"].local_name, dest)
    with pytest.warns(UserWarning, match="no pinned sha256"):
        rows = ps.tifa_questions(root=root)
    assert len(rows) == 19
