"""The paper-scale path end to end, as a dry run: from the benchmarks' real prompt files to Tab. 1, 2 and 4.

`01_probing` (with a data manifest), `paper/02_tuning` and `paper/03_self_correction` run through
papermill at the smoke scale with the toy Stable Diffusion, the toy world written as COCO / MDETR
files, tiny random graders saved as local model folders (``dptlib.evaluation.graders.tiny``) and a few
prompts of each real benchmark (``../shared/benchmarks`` or ``$DPT_BENCHMARKS_DIR``). The
numbers mean nothing; the plumbing, the pairing and the tables' shapes do. Where the benchmark
files are absent, prompt files written by the test stand in for them (the notebooks read a prompt
file of one's own as ``file:<path>``), so the path runs on every machine. The pieces in between
are tested on their own below, without the benchmark files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dptlib.data.prompt_sets import PromptSet
from dptlib.evaluation import benchmarks as benchmark_eval
from dptlib.evaluation.graders import text

ROOT = Path(__file__).resolve().parents[1]
_ENV = os.environ.get("DPT_BENCHMARKS_DIR")
SHARED = next((p for p in [*([Path(_ENV)] if _ENV else []), ROOT.parent / "shared" / "benchmarks"]
               if (p / "CC-500" / "CC-500.txt").is_file()), None)


def test_cc500_objects_are_the_nouns_without_article_or_colour():
    assert benchmark_eval.cc500_objects("a green bench and a red car") == ("bench", "car")
    assert benchmark_eval.cc500_objects("A blue apple and an orange traffic light.") == ("apple", "traffic light")


def test_items_spread_over_a_set_and_t2i_compbench_splits_by_category(monkeypatch):
    sets = {"cc500": PromptSet("cc500", [f"p{i}" for i in range(10)]),
            "t2i_compbench": PromptSet("t2i_compbench", ["c1", "c2", "s1", "s2", "s3"], ["color"] * 2 + ["spatial"] * 3)}
    monkeypatch.setattr(benchmark_eval.prompt_sets, "load", lambda name, root=None: sets[name])
    items = benchmark_eval.benchmark_items({"cc500": 3, "t2i_compbench": 2})
    assert list(items["benchmark"]) == ["cc500"] * 3 + ["t2i_compbench/color"] * 2 + ["t2i_compbench/spatial"] * 2
    assert list(items["prompt_id"]) == [0, 4, 9, 0, 1, 0, 2]  # spread evenly, first and last kept
    assert list(items["prompt"]) == ["p0", "p4", "p9", "c1", "c2", "s1", "s3"]
    assert list(items["image_index"]) == list(range(7))
    with pytest.raises(ValueError, match="positive number"):
        benchmark_eval.benchmark_items({"cc500": 0})


def test_the_paper_run_files_fit_their_notebooks_and_bad_input_is_named():
    from dptlib.checks import UserInputError, check_resources
    from dptlib.experiments.reproduce import load_runs, validate_run

    runs = {notebook: parameters for _, notebook, parameters in load_runs(ROOT / "papermill_params" / "paper")}
    assert set(runs) == {"01_probing", "paper/02_tuning", "paper/03_self_correction"}
    for notebook, parameters in runs.items():
        validate_run(notebook, {**parameters, "scale": "paper-sd21"})  # names, types, values; the files are the user's
    stage2 = {**runs["paper/02_tuning"], "scale": "paper-sd21"}
    with pytest.raises(UserInputError, match=r"needs \['graders'\]"):
        validate_run("paper/02_tuning", {**stage2, "graders": None})
    with pytest.raises(UserInputError, match="unknown; allowed"):
        validate_run("paper/02_tuning", {**stage2, "benchmarks": {"cc-5000": 10}})
    with pytest.raises(UserInputError, match="positive number"):
        validate_run("paper/02_tuning", {**stage2, "benchmarks": {"cc500": 0}})
    with pytest.raises(UserInputError, match="'glipp'"):
        validate_run("paper/02_tuning", {**stage2, "graders": {"glipp": "/x"}})
    with pytest.raises(FileNotFoundError, match="blip2"):
        check_resources({"graders": {"blip2": "/nowhere/blip2-itm-vit-g"}})


class CountingPipe:
    """Stands in for a diffusers pipeline: an image's pixels are its noise seed's, so pairing shows."""

    device = "cpu"

    def __init__(self, offset=0):
        self.calls, self.offset = 0, offset

    def __call__(self, prompts, generator, output_type, **kwargs):
        from types import SimpleNamespace

        self.calls += 1
        values = [(g.initial_seed() % 251 + self.offset) / 255 for g in generator]
        return SimpleNamespace(images=np.stack([np.full((8, 8, 3), v, dtype=np.float32) for v in values]))


def items_of(n):
    return pd.DataFrame({"benchmark": "cc500", "prompt_id": range(n), "prompt": [f"p{i}" for i in range(n)], "category": "",
                         "caption_id": "", "image_index": range(n)})


def test_images_are_paired_across_methods_subsets_and_resumption(tmp_path):
    items = items_of(5)
    base = benchmark_eval.generate_images(CountingPipe(), items, [0, 1], tmp_path, "base", chunk=2, progress=False)
    assert len(base) == 10 and all(Path(p).is_file() for p in base["path"])
    images = benchmark_eval.load_images(base["path"])
    assert len({int(x[0, 0, 0]) for x in images}) == 10  # every (prompt, seed) its own noise
    # a subset of the items (Tab. 4 samples two benchmarks of 02's items again) keeps each item's noise
    subset = benchmark_eval.generate_images(CountingPipe(), items.iloc[[1, 3]], [1], tmp_path, "again", progress=False)
    twins = base[(base["seed"] == 1) & base["prompt_id"].isin([1, 3])]
    assert [x[0, 0, 0] for x in benchmark_eval.load_images(subset["path"])] == [x[0, 0, 0] for x in benchmark_eval.load_images(twins["path"])]
    # a resumed run samples only the missing chunk
    Path(base["path"].iloc[0]).unlink()
    pipe = CountingPipe()
    benchmark_eval.generate_images(pipe, items, [0, 1], tmp_path, "base", chunk=2, progress=False)
    assert pipe.calls == 1


class ConstantGrader:
    column = "S"

    def __init__(self, value, name="constant"):
        self.value, self.name = value, name

    def score(self, images, items):
        values = [self.value + float(x[0, 0, 0]) for x in images]
        return items.reset_index(drop=True).assign(S=values, grader=self.name)


def test_grading_keeps_pairing_and_a_shift_is_the_paired_difference(tmp_path):
    items = items_of(6)
    index = pd.concat([benchmark_eval.generate_images(CountingPipe(offset), items, [0], tmp_path, name, progress=False)
                       for name, offset in (("base", 0), ("shifted", 3))], ignore_index=True)
    suite = benchmark_eval.EvaluatorSuite(clip=ConstantGrader(1.0, "grader (stand-in)"))
    scores = suite.grade(index, progress=False)
    assert suite.missing == {"cc500": ["blip2", "glip"]}
    comparison = benchmark_eval.paired_comparison(scores, "base", ["base", "shifted"])
    row = comparison.loc[("cc500", "S", "shifted")]
    assert row["diff"] == pytest.approx(3.0) and row["diff_low"] == pytest.approx(3.0)  # the same +3 on every twin
    assert benchmark_eval.graders_used(scores).loc["S", "grader"] == "grader (stand-in)"


def test_paper_scale_notebooks_from_prompt_files_to_tables(tmp_path, monkeypatch):
    """With the benchmarks' files (../shared/benchmarks or $DPT_BENCHMARKS_DIR): a few prompts of
    each, every column of Tab. 1, 2 and 4. Without them (a clean clone elsewhere), two prompt files
    written here take their place (``file:``): the same path from prompt file to table."""
    import papermill

    from dptlib.evaluation.graders.tiny import write_tiny_evaluators
    from dptlib.perf.paper_dry_run import write_complex_lists
    from dptlib.toy.data import write_manifest
    from dptlib.toy.world import ToyWorld, ToyWorldConfig, export_world

    monkeypatch.setenv("DPT_RUNS_DIR", str(tmp_path / "runs"))  # the kernels inherit it: nothing touches runs/smoke
    monkeypatch.setenv("TQDM_DISABLE", "1")
    paths = export_world(ToyWorld(ToyWorldConfig()), tmp_path / "data", splits=("train", "val", "test"), n=24)
    manifest = str(write_manifest(paths, tmp_path / "data" / "manifest.yaml"))
    graders = write_tiny_evaluators(tmp_path / "graders")
    if SHARED is not None:
        monkeypatch.setenv("DPT_BENCHMARKS_DIR", str(SHARED))
        graders["tifa_questions"] = str(SHARED / "TIFA-v1.0" / "sample_question_answers.json")  # the full file is not pinned upstream
        graders.update(write_complex_lists(tmp_path / "complex-lists", SHARED))  # 3-in-1's lists: stand-ins made from the prompts
        stage2, stage3 = {}, {}  # the smoke preset's benchmarks; Tab. 4's default sets
    else:
        files = {"two-objects": ["a green bench and a red car", "a blue apple and a yellow dog", "a red cat and a blue chair"],
                 "scenes": ["two dogs on the left of a table", "a man with a red cup"]}
        for stem, lines in files.items():
            (tmp_path / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        stage2 = {"benchmarks": {f"file:{tmp_path / stem}.txt": None for stem in files}}
        stage3 = {"tab4_benchmarks": [f"custom:{stem}" for stem in files]}
    runs = [("01_probing", dict(data=manifest, evaluator="toy")),
            ("paper/02_tuning", dict(data=manifest, evaluator="toy", graders=graders, **stage2)),
            ("paper/03_self_correction", dict(data=manifest, graders=graders, **stage3))]
    for notebook, parameters in runs:
        output = tmp_path / "executed" / f"{notebook}.ipynb"
        output.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{notebook}.ipynb"), str(output), parameters={"scale": "smoke", **parameters},
                                   kernel_name="dpt", cwd=str(ROOT / "notebooks"), progress_bar=False)

    figures = tmp_path / "runs" / "smoke" / "figures"

    def cells(name):
        table = pd.read_csv(figures / f"{name}.csv")
        return table, set(zip(table["benchmark"], table["metric"]))

    if SHARED is not None:
        tab1, found = cells("paper_tab1_generation")
        assert list(tab1.columns) == ["benchmark", "metric", "SD (base)", "DPT", "DPT vs SD (base)"]
        assert {("coco_nss1k", "CLIP"), ("coco_nss1k", "BLIP-M"), ("coco_nss1k", "BLIP-C"), ("cc500", "GLIP (stand-in)"),
                ("abc6k", "BLIP-M")} <= found
        _, found = cells("paper_tab2_generation")
        spacy = text.spacy_available()  # without spaCy's model the columns say they come from the fallback reader
        bvqa, spatial = ("B-VQA", "spatial (stand-in)") if spacy else ("B-VQA (fallback chunks)", "spatial (stand-in; fallback nouns)")
        three = "3-in-1" if spacy else "3-in-1 (fallback text)"
        assert {("tifa", "TIFA"), ("t2i_compbench/color", bvqa), ("t2i_compbench/spatial", spatial),
                ("t2i_compbench/non_spatial", "non-spatial CLIP"), ("t2i_compbench/complex", three)} <= found
        tab4_sets = {"coco_nss1k", "cc500"}
    else:
        other, found = cells("paper_other_generation")
        assert list(other.columns) == ["benchmark", "metric", "SD (base)", "DPT", "DPT vs SD (base)"]
        assert found == {(f"custom:{stem}", metric) for stem in files for metric in ("CLIP", "BLIP-M", "BLIP-C")}
        tab4_sets = {f"custom:{stem}" for stem in files}
    tab4, found = cells("paper_tab4_self_correction")
    assert list(tab4.columns)[2:6] == ["SD (base)", "DPT", "DPT + SC", "DPT + random step"]
    assert {b for b, _ in found} == tab4_sets
    graded = pd.read_csv(tmp_path / "runs" / "smoke" / "self_correction_scores.csv")
    per_twin = graded.groupby(["benchmark", "prompt_id", "seed"])["method"].nunique()
    assert (per_twin == 4).all()  # every image has a twin in each of the four methods
    used = pd.read_csv(figures / "paper_graders.csv").set_index("column")["grader"]
    assert "stand-in" in used["CLIP"]
    if SHARED is not None:
        assert "not the paper's VQA" in used["TIFA"]
