"""The paper's generation tables at paper scale: benchmark prompts -> images on disk -> graders -> paired tables.

Tab. 1 (COCO-NSS1K, CC-500, ABC-6K: CLIP, BLIP-M, BLIP-C, GLIP, IS, FID), Tab. 2 (TIFA and
T2I-CompBench's six categories) and Tab. 4 (COCO-NSS1K and CC-500 with and without
self-correction) are built in four steps, each its own function:

1. :func:`benchmark_items`: the prompts, from :mod:`dptlib.data.prompt_sets` (pinned upstream files),
   one row per prompt: ``benchmark`` (a set, or ``t2i_compbench/<category>``), ``prompt_id``
   (its position in the set), ``prompt``, ``category``, ``caption_id`` (TIFA's id), and
   ``image_index``, which seeds the prompt's noise.
2. :func:`generate_images`: every (prompt, seed) of a method as a PNG under
   ``folder/<method>/<benchmark>/``, with an index table; resumable (a finished chunk is kept),
   and image ``i`` of seed ``s`` starts from the same noise for every method, so every image has
   a twin in every other method (:func:`dptlib.method.sampling.generate`).
3. :class:`EvaluatorSuite`: each benchmark's graders (:data:`GRADERS_OF`) on its images, one
   row per image with the pairing columns (method, benchmark, prompt_id, seed), so the graders
   can run again without sampling again; IS / FID per method and set (:meth:`set_metrics`).
4. :func:`paired_comparison`: per benchmark and column, each method's mean and its paired
   difference to the base model, with 95 % intervals that resample prompts (each with all its
   seeds), from :func:`dptlib.evaluation.stats.compare_to_baseline`.

Every grader's name is kept in the table (``grader`` per column, :attr:`EvaluatorSuite.graders`):
a stand-in (Grounding DINO for GLIP and UniDet, BLIP VQA for mPLUG, the toy CLIP in a dry run)
is labelled as one wherever its column is reported.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from dptlib.config import GRADER_KEYS, progress_bars
from dptlib.data import prompt_sets
from dptlib.data.coco import read_coco_captions, read_refexp
from dptlib.data.embedders import clip_embedder, load_evaluator
from dptlib.data.images import _read_image, to_model_images
from dptlib.data.manifest import read_manifest
from dptlib.evaluation import stats
from dptlib.evaluation.graders.blip2 import Blip2Match
from dptlib.evaluation.graders.clip import ClipScore
from dptlib.evaluation.graders.compbench import ThreeInOne
from dptlib.evaluation.graders.detection import GroundedDetector, GroundedObjects, SpatialScore
from dptlib.evaluation.graders.inception import InceptionSet
from dptlib.evaluation.graders.text import load_reader
from dptlib.evaluation.graders.tifa import Tifa, load_questions, sbert_embedder
from dptlib.evaluation.graders.vqa import BlipVqa, BlipVqaBinding
from dptlib.files import read_text_lines
from dptlib.method.sampling import generate

TABLE_1 = ("coco_nss1k", "cc500", "abc6k")
TABLE_2 = ("tifa", *(f"t2i_compbench/{c}" for c in prompt_sets.T2I_COMPBENCH_CATEGORIES))
TABLE_4 = ("coco_nss1k", "cc500")
# the per-image graders of each benchmark's columns in the paper (evaluation notes; T2I-CompBench by category)
GRADERS_OF = {
    "coco_nss1k": ("clip", "blip2"),
    "cc500": ("clip", "blip2", "glip"),
    "abc6k": ("clip", "blip2"),
    "tifa": ("tifa",),
    "t2i_compbench/color": ("bvqa",),
    "t2i_compbench/shape": ("bvqa",),
    "t2i_compbench/texture": ("bvqa",),
    "t2i_compbench/spatial": ("spatial",),
    "t2i_compbench/non_spatial": ("nonspatial",),
    "t2i_compbench/complex": ("three_in_one",),
}
CUSTOM_GRADERS = ("clip", "blip2")  # a prompt file of the user's own (``file:<path>``): Tab. 1's alignment columns
SET_METRICS_OF = {"coco_nss1k": ("IS", "FID"), "cc500": ("IS",), "abc6k": ("IS",)}
ITEM_COLUMNS = ["benchmark", "prompt_id", "prompt", "category", "caption_id", "image_index"]
PAIRING = ["prompt_id", "seed"]


# --------------------------------------------------------------------------------------------
# 1. Prompts
# --------------------------------------------------------------------------------------------


def _spread(n_total: int, n: int | None) -> list[int]:
    """``n`` positions spread evenly over ``range(n_total)`` (all when ``n`` is None or larger):
    a benchmark ordered by category (COCO-NSS1K, TIFA) keeps every category in a small run."""
    if n is None or n >= n_total:
        return list(range(n_total))
    return sorted({int(i) for i in np.linspace(0, n_total - 1, n).round()})


def benchmark_items(spec: dict[str, int | None], root: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per prompt of the benchmarks in ``spec`` (prompt-set name -> prompts, None: all).

    Names are :func:`dptlib.data.prompt_sets.load`'s ("cc500", "coco_nss1k", "abc6k", "tifa",
    "t2i_compbench"), optionally ``name/category`` for one category, or ``file:<path>`` for a
    prompt file of one's own (one prompt per line; benchmark ``custom:<file stem>``, graded by
    :data:`CUSTOM_GRADERS`). T2I-CompBench is split into
    its categories (``t2i_compbench/color``, ...), each one benchmark of Tab. 2 with ``n`` prompts.
    ``image_index`` is the row's position: with a seed it fixes the prompt's initial noise, also in
    a subset of the rows (Tab. 4 samples COCO-NSS1K and CC-500 of the same items again).
    """
    frames = []
    for name, n in spec.items():
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ValueError(f"benchmarks[{name!r}] must be a positive number of prompts or None, got {n!r}")
        if name.startswith("file:"):
            path = Path(name.removeprefix("file:"))
            lines = read_text_lines(path)
            positions = _spread(len(lines), n)
            frames.append(pd.DataFrame({"benchmark": f"custom:{path.stem}", "prompt_id": positions,
                                        "prompt": [lines[i] for i in positions], "category": "", "caption_id": ""}))
            continue
        base, _, category = name.partition("/")
        prompt_set = prompt_sets.load(base, root)
        key = prompt_set.name
        parts = [category] if category else (list(dict.fromkeys(prompt_set.categories)) if key == "t2i_compbench" else [None])
        for part in parts:
            chosen = prompt_set.subset(part) if part else prompt_set
            label = f"{key}/{part}" if key == "t2i_compbench" else key
            positions = _spread(len(chosen), n)
            meta = chosen.meta or [{}] * len(chosen)
            frames.append(pd.DataFrame({
                "benchmark": label,
                "prompt_id": positions,
                "prompt": [chosen.prompts[i] for i in positions],
                "category": [chosen.categories[i] if chosen.categories else "" for i in positions],
                "caption_id": [str(meta[i].get("id", "")) for i in positions],
            }))
    if not frames:
        raise ValueError("no benchmarks asked for: give e.g. {'cc500': 446, 'coco_nss1k': None}")
    items = pd.concat(frames, ignore_index=True)
    return items.assign(image_index=range(len(items)))[ITEM_COLUMNS]


def validation_captions(manifest: str | Path, n: int | None, split: str = "val") -> list[str]:
    """The first caption of each image of the manifest's ``split`` (COCO val captions at paper
    scale), the first ``n`` distinct ones: the prompts that choose a checkpoint or eta, none of
    them a benchmark prompt."""

    splits = read_manifest(manifest)
    if split not in splits:
        raise ValueError(f"{manifest}: no {split!r} split (it has {sorted(splits)}); validation prompts come from it")
    entry = splits[split].get("itm", splits[split])  # a split with its tasks apart: its ITM part's captions
    images = read_coco_captions(entry["captions"])
    if entry["referred_only"]:  # the split's images are those its expressions refer to (RefCOCO val's)
        referred = {e.image_id for e in read_refexp(entry["refexp"])}
        images = [image for image in images if image.image_id in referred]
    captions = [image.captions[0] for image in images if image.captions]
    return list(dict.fromkeys(captions))[:n]


_ARTICLE = re.compile(r"^(a|an|the|one)\s+", re.IGNORECASE)


def graders_of(benchmark: str) -> tuple[str, ...]:
    """The per-image graders of a benchmark's columns: :data:`GRADERS_OF`, or
    :data:`CUSTOM_GRADERS` for a prompt file of one's own."""
    return CUSTOM_GRADERS if benchmark.startswith("custom:") else GRADERS_OF.get(benchmark, ())


def cc500_objects(prompt: str) -> tuple[str, ...]:
    """The object nouns of a CC-500 prompt ("a green bench and a red car" -> ("bench", "car")):
    each side of "and" without its article and colour word, as Structured Diffusion's GLIP
    evaluation names them."""
    parts = [_ARTICLE.sub("", p.strip()) for p in re.split(r"\band\b", prompt.strip().rstrip("."))]
    return tuple(" ".join(p.split()[1:]) if len(p.split()) > 1 else p for p in parts if p)


# --------------------------------------------------------------------------------------------
# 2. Images on disk
# --------------------------------------------------------------------------------------------


def _image_path(folder: Path, method: str, benchmark: str, prompt_id: int, seed: int) -> Path:
    return folder / method / benchmark.replace("/", "__") / f"{prompt_id:05d}-seed{seed}.png"


def _save_png(image: np.ndarray, path: Path) -> None:
    """Write atomically: a killed run leaves no half-written image that a resumed run would keep."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png.part")
    os.close(fd)
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)


def generate_images(pipe, items: pd.DataFrame, seeds: Sequence[int], folder: str | Path, method: str, chunk: int = 32,
                    progress: bool = True, **generate_kwargs) -> pd.DataFrame:
    """Images of every (item, seed) for ``method``, written as PNG; returns the index, one row per
    image: the item's columns, ``method``, ``seed``, ``path``.

    The image of an item with seed ``s`` is drawn from the noise of (s, its ``image_index``)
    whatever the method, chunk, subset or resumption, so methods sampled on the same items are
    paired.
    Chunks whose images all exist are skipped. ``generate_kwargs`` go to
    :func:`dptlib.method.sampling.generate` (sampler settings, ``self_correct``, ``batch_size``)."""
    folder, items = Path(folder), items.reset_index(drop=True)
    rows = []
    plan = [(seed, start) for seed in seeds for start in range(0, len(items), chunk)]
    for seed, start in tqdm(plan, desc=f"images: {method}", disable=not progress_bars(progress)):
        part = items.iloc[start : start + chunk]
        paths = [_image_path(folder, method, b, int(p), seed) for b, p in zip(part["benchmark"], part["prompt_id"])]
        if not all(p.is_file() for p in paths):
            images = generate(pipe, list(part["prompt"]), seed=seed, indices=list(part["image_index"]), progress=False,
                              **generate_kwargs)
            for image, path in zip(images, paths):
                _save_png(image, path)
        rows.append(part.assign(method=method, seed=seed, path=[str(p) for p in paths]))
    return pd.concat(rows, ignore_index=True)


def load_images(paths: Sequence[str | Path]) -> list[np.ndarray]:
    """uint8 (H, W, 3) arrays of the PNGs at ``paths`` (:func:`dptlib.data`'s image reader, no resize)."""

    return [_read_image(Path(p), None) for p in paths]


# --------------------------------------------------------------------------------------------
# 3. Graders
# --------------------------------------------------------------------------------------------


def tensor_scorer(embed):
    """Adapts :func:`dptlib.data.embedders.clip_embedder`'s ``embed`` (images as a [-1, 1] tensor at their own
    size: the toy evaluator CLIP of dry runs) to :class:`~dptlib.evaluation.graders.clip.ClipScore`'s uint8 images."""

    return lambda images, texts: embed(to_model_images(np.stack(images)), list(texts))


def _clip_scorer(spec: str, name: str, column: str, device: str):

    if spec == "toy":  # the toy world's evaluator CLIP, a real (tiny) OpenCLIP model: dry runs only

        embed = tensor_scorer(clip_embedder(*load_evaluator()))
        return ClipScore(embed, name=f"toy evaluator CLIP (stand-in for {name})", column=column)
    return ClipScore.from_spec(spec, device=device, column=column)


@dataclass
class EvaluatorSuite:
    """The graders of the paper's generation tables; a grader left None leaves its columns out
    (:attr:`missing` says which benchmark lacks which). Build it with :meth:`from_paths`."""

    clip: object = None  # ClipScore, 100 * cos (Tab. 1, 4)
    blip2: object = None  # Blip2Match: BLIP-M, BLIP-C
    glip: object = None  # GroundedObjects (stand-in)
    bvqa: object = None  # BlipVqaBinding
    spatial: object = None  # SpatialScore (stand-in)
    nonspatial: object = None  # ClipScore, raw cosine, OpenAI ViT-B/32
    three_in_one: object = None  # ThreeInOne
    tifa: object = None  # Tifa
    inception: object = None  # InceptionSet (IS, FID)
    missing: dict = field(default_factory=dict)

    @classmethod
    def from_paths(cls, graders: dict[str, str], device: str = "cpu", vqa_image_size: int | None = 480,
                   benchmarks_root: str | os.PathLike | None = None, noun_chunks: str = "auto",
                   vqa_first_token: str = "enc") -> EvaluatorSuite:
        """Graders from local files (nothing is downloaded); ``graders`` maps :data:`GRADER_KEYS` to paths:

        - ``clip``: ``open_clip:ViT-H-14:<checkpoint>`` (or ``toy``); ``clip_b32``: ``open_clip:ViT-B-32-quickgelu:<checkpoint>``
          (OpenAI's weights need QuickGELU);
        - ``blip2``: a ``Salesforce/blip2-itm-vit-g`` folder; ``vqa``: ``Salesforce/blip-vqa-capfilt-large``;
          ``detector``: a Grounding DINO folder; ``sentence_encoder``: ``sentence-transformers/all-mpnet-base-v2``;
        - ``inception``: torchmetrics' FID Inception weights file;
        - ``tifa_questions``: TIFA's question file (default: :func:`dptlib.data.prompt_sets.tifa_questions`);
        - ``complex_spatial``, ``complex_action``: T2I-CompBench's ``complex_val_spatial.txt`` / ``_action.txt``.

        T2I-CompBench is asked as its code asks: B-VQA's BLIP at ``vqa_image_size`` (480) with [ENC]
        first (``vqa_first_token``) and the original's question reader; ``noun_chunks`` says who
        reads the prompts (:func:`dptlib.evaluation.graders.text.load_reader`: "spacy", "rules", "auto").
        TIFA's stand-in asks the same BLIP as TIFA's ``blip-large`` option (384 px, [CLS], 50 tokens).
        """
        unknown = sorted(set(graders) - set(GRADER_KEYS))
        if unknown:
            raise ValueError(f"unknown grader(s) {unknown}; allowed: {list(GRADER_KEYS)}")

        suite = cls()
        needs_reader = any(graders.get(k) for k in ("vqa", "detector"))
        reader = load_reader(noun_chunks) if needs_reader else None  # before any model loads: a missing spaCy fails at once
        if graders.get("clip"):
            suite.clip = _clip_scorer(graders["clip"], "OpenCLIP ViT-H-14", "CLIP", device)
        if graders.get("clip_b32"):
            suite.nonspatial = _clip_scorer(graders["clip_b32"], "OpenAI ViT-B/32", "non-spatial CLIP", device)
        if graders.get("blip2"):
            suite.blip2 = Blip2Match.from_folder(graders["blip2"], device=device)
        vqa = None
        if graders.get("vqa"):  # T2I-CompBench's BLIP: 480 px, [ENC] first, the original's question reader
            vqa = BlipVqa.from_folder(graders["vqa"], device=device, image_size=vqa_image_size, first_token=vqa_first_token,
                                      original_questions=True)
            suite.bvqa = BlipVqaBinding(vqa, reader)
        if graders.get("detector"):
            detector = GroundedDetector.from_folder(graders["detector"], device=device)
            suite.glip, suite.spatial = GroundedObjects(detector), SpatialScore(detector, reader)
        if suite.bvqa and suite.spatial and suite.nonspatial and graders.get("complex_spatial") and graders.get("complex_action"):
            lists = [Path(graders[k]).read_text(encoding="utf-8").splitlines() for k in ("complex_spatial", "complex_action")]
            suite.three_in_one = ThreeInOne.from_parts(suite.bvqa, detector, suite.nonspatial, *lists, reader=reader)
        if vqa is not None and graders.get("sentence_encoder"):
            from transformers import AutoModel, AutoTokenizer  # deferred: heavy

            encoder = graders["sentence_encoder"]
            embed = sbert_embedder(AutoModel.from_pretrained(encoder, local_files_only=True).to(device),
                                   AutoTokenizer.from_pretrained(encoder, local_files_only=True))
            try:
                questions = (load_questions(graders["tifa_questions"]) if graders.get("tifa_questions")
                             else pd.DataFrame(prompt_sets.tifa_questions(benchmarks_root)))
                tifa_vqa = BlipVqa(vqa.model, vqa.processor, image_size=None, first_token="cls", name=vqa.name)  # TIFA's BLIP
                suite.tifa = Tifa(tifa_vqa, embed, questions)
            except FileNotFoundError as err:  # TIFA's question file is not pinned upstream: say what is missing, grade the rest
                suite.missing["tifa"] = [f"tifa ({err})"]
        if graders.get("inception"):
            suite.inception = InceptionSet.from_weights(graders["inception"])
        return suite

    def grade(self, index: pd.DataFrame, progress: bool = True) -> pd.DataFrame:
        """One row per image of ``index`` (:func:`generate_images`'s), with the columns of every
        grader its benchmark has (:data:`GRADERS_OF`) and ``grader: <column>`` naming who graded.
        Benchmarks whose graders are missing are recorded in :attr:`missing`."""
        parts = []
        groups = list(index.groupby("benchmark", sort=False))
        for benchmark, rows in tqdm(groups, desc="grading", disable=not progress_bars(progress)):
            rows = rows.reset_index(drop=True)
            images = load_images(rows["path"])
            table = rows.copy()
            for key in graders_of(benchmark):
                grader = getattr(self, key)
                if grader is None:
                    self.missing.setdefault(benchmark, []).append(key)
                    continue
                items = rows.assign(objects=[cc500_objects(p) for p in rows["prompt"]]) if key == "glip" else rows
                scored = grader.score(images, items)
                new = [c for c in scored.columns if c not in items.columns and c not in ("grader", "chunks", "kind")]
                for column in new:
                    table[column] = scored[column].to_numpy()
                    table[f"grader: {column}"] = scored["grader"].to_numpy()
            parts.append(table)
        return pd.concat(parts, ignore_index=True)

    def set_metrics(self, index: pd.DataFrame, real: dict[str, Sequence[np.ndarray]] | None = None) -> pd.DataFrame:
        """IS (and FID where ``real`` has the benchmark's reference images, e.g. COCO-NSS1K's 943
        val2014 images) per method and benchmark of :data:`SET_METRICS_OF`, with the set sizes."""
        if self.inception is None:
            return pd.DataFrame()
        rows = []
        for (method, benchmark), group in index.groupby(["method", "benchmark"], sort=False):
            if benchmark not in SET_METRICS_OF:
                continue
            generated = load_images(group["path"])
            reference = (real or {}).get(benchmark)
            result = self.inception.compute(generated, reference if reference is not None else generated[:2])
            if reference is None:
                result["FID"] = float("nan")  # no reference images: FID is not reported
            rows.append({"method": method, "benchmark": benchmark, **result})
        return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# 4. Paired tables
# --------------------------------------------------------------------------------------------


def metric_columns(scores: pd.DataFrame) -> list[str]:
    """The score columns of a graded table (those with a ``grader: <column>`` beside them)."""
    return [c.removeprefix("grader: ") for c in scores.columns if c.startswith("grader: ")]


def paired_comparison(scores: pd.DataFrame, baseline: str, methods: Sequence[str] | None = None, **options) -> pd.DataFrame:
    """Per (benchmark, metric, method): n, mean, its 95 % interval, and the paired difference to
    ``baseline`` on the same (prompt, seed) with its interval and p (bootstrap over prompts, each
    with all its seeds: :func:`dptlib.evaluation.stats.compare_to_baseline`). A 0/1 column (GLIP) is in %."""
    parts = []
    for column in metric_columns(scores):
        rows = scores.dropna(subset=[column])
        if rows.empty:
            continue
        table = stats.compare_to_baseline(rows.assign(metric=column), column, baseline, cell_cols=("benchmark", "metric"),
                                          item_cols=PAIRING, cluster_col="prompt_id", methods=methods, **options)
        parts.append(table)
    result = pd.concat(parts)
    result.attrs["methods"] = list(methods) if methods is not None else list(pd.unique(scores["method"]))
    return result


def paper_table(comparison: pd.DataFrame, baseline: str, digits: int = 3) -> pd.DataFrame:
    """A table as the paper prints it, turned to fit many columns: one row per (benchmark,
    metric); per method its "mean [low, high]", then per other method "+d [low, high] (p = …)",
    its paired difference to ``baseline``."""
    methods = [m for m in comparison.attrs.get("methods", []) if m in comparison.index.get_level_values("method")]
    cells = list(dict.fromkeys((b, m) for b, m, _ in comparison.index))
    table = pd.DataFrame(index=pd.MultiIndex.from_tuples(cells, names=["benchmark", "metric"]))
    for method in methods:
        rows = comparison.xs(method, level="method")
        table[method] = [stats.format_interval(*rows.loc[c, ["mean", "low", "high"]], digits=digits) if c in rows.index else ""
                         for c in cells]
    for method in methods:
        if method == baseline:
            continue
        rows = comparison.xs(method, level="method")
        table[f"{method} vs {baseline}"] = [
            stats.format_difference(*rows.loc[c, ["diff", "diff_low", "diff_high", "p"]], digits=digits) if c in rows.index else ""
            for c in cells]
    return table


def graders_used(scores: pd.DataFrame) -> pd.DataFrame:
    """Which model graded each column (stand-ins say so)."""
    return pd.DataFrame({"grader": {c: "; ".join(pd.unique(scores[f"grader: {c}"].dropna())) for c in metric_columns(scores)}})


def clip_validator(pipe, prompts: Sequence[str], clip, seed: int = 1234, **sampler):
    """A ``validate(step, model)`` for :func:`dptlib.method.train.tune` at paper scale: the CLIP score
    (``clip``: a :class:`dptlib.evaluation.graders.clip.ClipScore`) of one image per validation prompt
    from ``pipe`` (whose U-Net is the one being tuned), the paper's checkpoint selection."""

    def validate(step, model) -> dict:
        images = generate(pipe, list(prompts), seed=seed, progress=False, **sampler)
        score = float(np.mean(clip.pair_scores(list(images), list(prompts))))
        return {"clip_score": score, "score": score}

    return validate
