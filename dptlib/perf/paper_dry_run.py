"""The paper-scale path at the real sizes, with random weights: ``make paper-dry-run`` (a GPU) and
``make paper-dry-run-cpu`` (a reduced version for 2 CPU cores).

What a researcher runs with SD-2.1 and the paper's graders, with every model at its real
architecture and random weights (nothing is downloaded), so that memory and speed are known before
the real run:

- **GPU** (``--device cuda``, under 8 minutes on one H100 / H200): a random SD-2.1-sized pipeline
  written as a diffusers folder, the graders' architectures written as the folders and files the
  run files name (OpenCLIP ViT-H-14 and ViT-B-32-quickgelu, BLIP-2 ITM ViT-g, BLIP VQA capfilt-large (ViT-B),
  Grounding DINO with a Swin-B backbone, MPNet-base, the FID Inception), the toy world written as
  COCO / MDETR files at 512 px; then ``01_probing`` (a few steps), ``paper/02_tuning`` and
  ``paper/03_self_correction`` through papermill on ``--prompts`` prompts per benchmark, and each
  grader once more on its own over the images 02 made: images/s and peak GPU memory per grader.
- **CPU** (``--reduced``): the SD-2.1-sized U-Net for one classifier-free-guided step at 64 x 64
  latents, and each grader's real architecture on 2 images of 512 px, timed one by one, with the
  process's peak memory after each.

The numbers mean nothing as scores (random weights); they are the cost. A JSON report goes to
``--out``. The tokenizers are the tiny test vocabularies (``dptlib.evaluation.graders.tiny``): the ids differ
from the real tokenizers', the shapes and so the cost do not.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import open_clip
import pandas as pd
import torch
from safetensors.torch import save_file

from dptlib.config import kernel_name
from dptlib.data import prompt_sets
from dptlib.evaluation.graders.blip2 import Blip2Match
from dptlib.evaluation.graders.clip import ClipScore, open_clip_scorer
from dptlib.evaluation.graders.detection import GroundedDetector, GroundedObjects, SpatialScore
from dptlib.evaluation.graders.inception import InceptionSet
from dptlib.evaluation.graders.rules import RELATIONS
from dptlib.evaluation.graders.text import load_reader
from dptlib.evaluation.graders.tifa import Tifa, sbert_embedder
from dptlib.evaluation.graders.tiny import tokenizer, write_tiny_evaluators
from dptlib.evaluation.graders.vqa import BlipVqa, BlipVqaBinding
from dptlib.perf.gpu_check import build_pipeline
from dptlib.perf.timing import SD21_UNET
from dptlib.toy.data import write_manifest
from dptlib.toy.world import ToyWorld, ToyWorldConfig, export_world

LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
OPENCLIP_SPECS = {"clip": "ViT-H-14", "clip_b32": "ViT-B-32-quickgelu"}


# --------------------------------------------------------------------------------------------
# The graders' real architectures, random weights
# --------------------------------------------------------------------------------------------


def blip2_itm():
    """(model, processor): ``Blip2ForImageTextRetrieval`` at ``blip2-itm-vit-g``'s sizes (ViT-g, 32 queries)."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor, BlipImageProcessor  # deferred: heavy

    model = Blip2ForImageTextRetrieval(Blip2Config(qformer_config=dict(use_qformer_text_input=True)))
    return model, Blip2Processor(BlipImageProcessor(size={"height": 224, "width": 224}), tokenizer())


def blip_vqa_capfilt():
    """(model, processor): ``BlipForQuestionAnswering`` at ``blip-vqa-capfilt-large``'s sizes: BLIP's ViT-B/16 VQA model
    (trained on the CapFilt-L data, hence the name) at 384 px, BERT-base text."""
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor  # deferred: heavy

    vision = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, image_size=384, patch_size=16)
    text = dict(vocab_size=30524, encoder_hidden_size=768, bos_token_id=30522, sep_token_id=102, pad_token_id=0)
    model = BlipForQuestionAnswering(BlipConfig(vision_config=vision, text_config=text))
    return model, BlipProcessor(image_processor=BlipImageProcessor(size={"height": 384, "width": 384}), tokenizer=tokenizer())


def grounding_dino_base():
    """(model, processor): ``GroundingDinoForObjectDetection`` with ``grounding-dino-base``'s Swin-B backbone and BERT-base text."""
    from transformers import (
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )  # deferred: heavy

    backbone = SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12, image_size=384,
                          out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4])
    model = GroundingDinoForObjectDetection(GroundingDinoConfig(backbone_config=backbone, use_timm_backbone=False))
    return model, GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tokenizer())


def mpnet_base():
    """(model, tokenizer): ``MPNetModel`` at ``all-mpnet-base-v2``'s sizes."""
    from transformers import MPNetConfig, MPNetModel  # deferred: heavy

    return MPNetModel(MPNetConfig()), tokenizer()


def open_clip_model(architecture: str):
    """(model, preprocess, tokenizer) of an OpenCLIP architecture with random weights."""
    model, _, preprocess = open_clip.create_model_and_transforms(architecture)
    return model.eval(), preprocess, open_clip.get_tokenizer(architecture)


def inception_weights(path: Path) -> Path:
    """A random-weights file in the layout of the FID Inception (``pt_inception-2015-12-05``), which
    ``InceptionSet.from_weights`` reads as it reads the real one. torch-fidelity's network loads its
    weights while it is built, so the load is skipped once, here, to draw random ones."""

    import torch_fidelity.feature_extractor_inceptionv3 as inception  # deferred: an optional dependency (the 'paper' extra)

    with mock.patch.object(inception.torch, "load", lambda *args, **kwargs: None), \
            mock.patch.object(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None):
        network = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="random")
    torch.save(network.state_dict(), path)
    return path


def sd21_unet(device, dtype=torch.float32):
    """The SD-2.1 U-Net's architecture (865 M parameters), random weights, built on ``device``."""
    from diffusers import UNet2DConditionModel  # deferred: heavy

    with torch.device(device):
        unet = UNet2DConditionModel(**SD21_UNET)
    return unet if dtype == torch.float32 else unet.to(dtype)


def peak_rss_gib() -> float:
    """This process's peak resident memory so far, GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def _images(n: int, side: int = 512) -> list[np.ndarray]:
    return [np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8) for i in range(n)]


PROMPTS = ["a red umbrella on the left of a wooden bench", "a green bench and a red car"]


def grader_builders(device: str):
    """name -> a function building the grader (an object with ``score(images, items)``) at its real
    architecture with random weights, and the items it scores."""


    reader = load_reader("auto")
    items = pd.DataFrame({"prompt": PROMPTS, "objects": [("umbrella", "bench"), ("bench", "car")], "caption_id": ["c0", "c1"]})

    def clip(architecture, column):
        return lambda: ClipScore(open_clip_scorer(*open_clip_model(architecture), device=device), architecture, column=column)

    def moved(build):
        model, processor = build()
        return model.to(device), processor

    def vqa(**kwargs):
        return BlipVqa(*moved(blip_vqa_capfilt), **kwargs)

    def tifa():
        questions = pd.DataFrame([{"id": c, "question": q, "choices": ["yes", "no"], "answer": "yes", "element_type": "object"}
                                  for c in ("c0", "c1") for q in ("is there a bench?", "is the umbrella red?")])
        model, tokenizer = moved(mpnet_base)
        return Tifa(vqa(image_size=None, first_token="cls"), sbert_embedder(model, tokenizer), questions)

    def inception():
        folder = Path(tempfile.mkdtemp())
        return _InceptionGrader(InceptionSet.from_weights(inception_weights(folder / "inception.pth")))

    return items, {
        "CLIP (OpenCLIP ViT-H-14)": clip("ViT-H-14", "CLIP"),
        "non-spatial CLIP (ViT-B-32-quickgelu)": clip("ViT-B-32-quickgelu", "non-spatial CLIP"),
        "BLIP-M / BLIP-C (BLIP-2 ITM ViT-g)": lambda: Blip2Match(*moved(blip2_itm)),
        "B-VQA (BLIP VQA capfilt-large, 480 px)": lambda: BlipVqaBinding(vqa(image_size=480, first_token="enc", original_questions=True), reader),
        "GLIP stand-in (Grounding DINO Swin-B)": lambda: GroundedObjects(GroundedDetector(*moved(grounding_dino_base), box_threshold=0.0)),
        "spatial stand-in (Grounding DINO Swin-B)": lambda: SpatialScore(GroundedDetector(*moved(grounding_dino_base)), reader),
        "TIFA (BLIP VQA capfilt-large, 384 px + MPNet)": tifa,
        "IS / FID (Inception v3)": inception,
    }


class _InceptionGrader:
    """IS / FID as one more ``score`` for the timing loop (FID of the images against themselves)."""

    def __init__(self, inception):
        self.inception = inception

    def score(self, images, items):
        return self.inception.compute(list(images), list(images))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_graders(device: str, n_images: int = 2, side: int = 512) -> list[dict]:
    """Each grader built and run on ``n_images`` images of ``side`` px, one at a time: seconds to
    build, seconds and images/s to score, and peak memory (GPU: its own peak; CPU: the process's)."""

    items, builders = grader_builders(device)
    items = items.iloc[[k % len(items) for k in range(n_images)]].reset_index(drop=True)
    pictures = _images(n_images, side)
    rows = []
    for name, build in builders.items():
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        torch.manual_seed(0)
        with torch.device(device):
            grader = build()
        built = time.perf_counter() - start
        if device == "cuda":  # warm-up (kernels, autotuning); a CPU has none worth the time
            grader.score(pictures[:2], items.iloc[:2])
            _sync(device)
        start = time.perf_counter()
        grader.score(pictures, items)
        _sync(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else peak_rss_gib()
        rows.append({"grader": name, "build_s": round(built, 2), "score_s": round(seconds, 3), "images": n_images,
                     "images_per_s": round(n_images / seconds, 3), "peak_gib": round(peak, 2)})
        LOGGER.info(f"  {name}: built in {built:.1f} s, {n_images} images in {seconds:.2f} s ({n_images / seconds:.2f} images/s), "
              f"peak {peak:.1f} GiB")
        del grader
        gc.collect()
    return rows


def unet_step(device: str, dtype=torch.float32, batch: int = 2, latent: int = 64) -> dict:
    """One classifier-free-guided step of the SD-2.1-sized U-Net (a batch of ``batch`` latents:
    conditional and unconditional halves) at ``latent`` x ``latent``, 77 text tokens of 1024."""
    start = time.perf_counter()
    unet = sd21_unet(device, dtype).eval()
    built = time.perf_counter() - start
    x = torch.randn(batch, 4, latent, latent, device=device, dtype=dtype)
    text = torch.randn(batch, 77, 1024, device=device, dtype=dtype)
    t = torch.full((batch,), 500, device=device)
    with torch.no_grad():
        _sync(device)
        start = time.perf_counter()
        unet(x, t, encoder_hidden_states=text)
        _sync(device)
        seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in unet.parameters())
    LOGGER.info(f"  SD-2.1 U-Net ({parameters / 1e6:.0f} M parameters): built in {built:.1f} s, one step of {batch} x {latent}^2 "
          f"latents in {seconds:.2f} s")
    return {"parameters": parameters, "build_s": round(built, 2), "step_s": round(seconds, 3), "batch": batch, "latent": latent}


# --------------------------------------------------------------------------------------------
# The GPU run: the notebooks at the real sizes
# --------------------------------------------------------------------------------------------


def _open_clip_file(folder: Path, architecture: str) -> str:
    """A random OpenCLIP model of ``architecture`` saved as safetensors; its ``open_clip:`` spec."""

    path = folder / f"{architecture}.safetensors"
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in open_clip_model(architecture)[0].state_dict().items()}, path)
    return f"open_clip:{architecture}:{path}"


def write_models(folder: Path, device: str, tiny: bool = False, own_size_clip: bool = False) -> dict:
    """The SD-2.1-sized pipeline as a diffusers folder and the graders as the files and folders the
    run files name; ``tiny``: the toy architecture's random pipeline and the tiny graders (a check
    of this script on a CPU), with a random ViT-B-32-quickgelu as every CLIP where ``own_size_clip``
    (paper-scale images are larger than the toy CLIP takes). Returns ``{"model": folder, "evaluator":
    spec, "graders": {...}}``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    unet = None if tiny else sd21_unet(device)
    pipe = build_pipeline(tiny, torch.device(device), torch.float32, unet)
    pipe.save_pretrained(folder / "sd")
    del pipe, unet
    if tiny:
        graders = write_tiny_evaluators(folder / "graders")
        if own_size_clip:
            graders["clip"] = graders["clip_b32"] = _open_clip_file(folder, "ViT-B-32-quickgelu")
        return {"model": str(folder / "sd"), "evaluator": graders["clip"] if own_size_clip else "toy", "graders": graders}
    graders = {key: _open_clip_file(folder, architecture) for key, architecture in OPENCLIP_SPECS.items()}
    for key, build in (("blip2", blip2_itm), ("vqa", blip_vqa_capfilt), ("detector", grounding_dino_base), ("sentence_encoder", mpnet_base)):
        torch.manual_seed(0)
        with torch.device(device):
            parts = build()
        for part in parts:
            part.save_pretrained(folder / key)
        graders[key] = str(folder / key)
    graders["inception"] = str(inception_weights(folder / "inception.pth"))
    return {"model": str(folder / "sd"), "evaluator": graders["clip"], "graders": graders}


def benchmarks_root() -> Path | None:
    """The benchmarks' files: ``$DPT_BENCHMARKS_DIR``, else ``../shared/benchmarks`` beside the repo (None: neither)."""
    candidates = [Path(os.environ["DPT_BENCHMARKS_DIR"])] if os.environ.get("DPT_BENCHMARKS_DIR") else []
    return next((p for p in [*candidates, ROOT.parent / "shared" / "benchmarks"] if (p / "CC-500" / "CC-500.txt").is_file()), None)


FALLBACK_PROMPTS = ["a green bench and a red car", "a blue apple and a yellow dog", "a red umbrella on the left of a wooden bench",
                    "two dogs near a table", "a man with a red cup", "a black cat on top of a white chair",
                    "a brown horse next to a pink bicycle", "a purple vase and an orange book", "a bird on the right of a tree",
                    "three cups on a round table"]


def write_complex_lists(folder: Path, root: Path | None = None) -> dict[str, str]:
    """Stand-ins for T2I-CompBench's ``complex_val_spatial.txt`` / ``complex_val_action.txt`` (not in
    the pinned files): the complex prompts with a spatial preposition, and the others. Made from
    the prompts' wording for dry runs only; a real run gives the benchmark's own lists."""
    complex_prompts = prompt_sets.load("t2i_compbench", root).subset("complex").prompts
    spatial = [p for p in complex_prompts if any(r in p.lower() for r in RELATIONS)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"complex_spatial": folder / "complex_val_spatial.txt", "complex_action": folder / "complex_val_action.txt"}
    paths["complex_spatial"].write_text("\n".join(spatial) + "\n", encoding="utf-8")
    paths["complex_action"].write_text("\n".join(p for p in complex_prompts if p not in spatial) + "\n", encoding="utf-8")
    return {key: str(path) for key, path in paths.items()}


def benchmark_spec(work: Path, prompts: int) -> tuple[dict, dict, list]:
    """(paper/02's ``benchmarks``, extra graders, paper/03's ``tab4_benchmarks``): ``prompts`` of each
    benchmark where its files are here; else one prompt file of the script's own (``file:``, graded
    by CLIP and BLIP-2), so the run goes on and says so."""
    root = benchmarks_root()
    if root is not None:
        os.environ["DPT_BENCHMARKS_DIR"] = str(root)
        extra = {"tifa_questions": str(root / "TIFA-v1.0" / "sample_question_answers.json"),  # the full file is not pinned upstream
                 **write_complex_lists(work / "complex-lists", root)}
        benchmarks = {name: prompts for name in ("coco_nss1k", "cc500", "abc6k", "t2i_compbench")}
        return {**benchmarks, "tifa": 1}, extra, ["coco_nss1k", "cc500"]  # TIFA: the sample file has questions for its first caption
    LOGGER.info("  the benchmarks' files are not here ($DPT_BENCHMARKS_DIR, ../shared/benchmarks): one prompt file of our own instead")
    path = work / "dry-run-prompts.txt"
    path.write_text("\n".join((FALLBACK_PROMPTS * prompts)[:prompts]) + "\n")
    return {f"file:{path}": None}, {}, [f"custom:{path.stem}"]


def notebook_runs(models: dict, manifest: str, prompts: int, tiny: bool, work: Path, scale: str | None = None) -> list[tuple[str, dict]]:
    """(notebook, parameters) of 01 -> paper/02 -> paper/03 at the real sizes, a few steps each, at
    ``scale`` (None: paper-sd21, or smoke with ``tiny``)."""
    benchmarks, extra, tab4 = benchmark_spec(work, prompts)
    models = {**models, "graders": {**models["graders"], **extra}}
    scale = scale or ("smoke" if tiny else "paper-sd21")
    side = None if scale == "smoke" else (128 if tiny else 512)  # the toy-sized check: small images, the same path
    stage1 = dict(model=models["model"], data=manifest, evaluator=models["evaluator"], blocks="mid", candidate_blocks=["mid"],
                  comparison_steps=2, steps=4, batch_size=8, control_steps=2, n_train_images=24, n_val_images=12, n_test_images=12,
                  n_rec_expressions=24, denoising_timesteps=2, timesteps=[250], image_size=side)
    stage2 = dict(model=models["model"], data=manifest, evaluator=models["evaluator"], graders=models["graders"], benchmarks=benchmarks,
                  steps=2, batch_size=8, validate_every=1, n_validation_prompts=2, n_train_images=24, seeds=[0], num_inference_steps=10,
                  generation_batch_size=16, noun_chunks="auto", image_size=side)
    stage3 = dict(data=manifest, graders=models["graders"], etas=[0.0, 0.5], n_sweep_prompts=2, sweep_seeds=[0],
                  noun_chunks="auto", tab4_benchmarks=tab4)
    return [(name, {"scale": scale, **parameters}) for name, parameters in
            (("01_probing", stage1), ("paper/02_tuning", stage2), ("paper/03_self_correction", stage3))]


def run_notebooks(work: Path, device: str, prompts: int, tiny: bool, scale: str | None = None) -> dict:
    """Models and data written under ``work``, the three notebooks run there (runs and tables in
    ``work``, never over the repo's), each notebook's seconds and the GPU's peak memory."""
    import papermill  # deferred: heavy


    start = time.perf_counter()
    models = write_models(work / "models", device, tiny, own_size_clip=tiny and scale not in (None, "smoke"))
    paths = export_world(ToyWorld(ToyWorldConfig()), work / "data", splits=("train", "val", "test"), n=24)
    manifest = str(write_manifest(paths, work / "data" / "manifest.yaml"))
    report = {"models_s": round(time.perf_counter() - start, 1), "notebooks": {}}
    os.environ.update(DPT_RUNS_DIR=str(work / "runs"), DPT_FIGURES_DIR=str(work / "figures"), TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    runs = notebook_runs(models, manifest, prompts, tiny, work, scale)
    for notebook, parameters in runs:
        output = work / "executed" / f"{notebook}.ipynb"
        output.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{notebook}.ipynb"), str(output), parameters=parameters,
                                   kernel_name=kernel_name(), cwd=str(ROOT / "notebooks"), progress_bar=False)
        report["notebooks"][notebook] = round(time.perf_counter() - start, 1)
        LOGGER.info(f"  {notebook}: {report['notebooks'][notebook]:.0f} s")
    scale = runs[0][1]["scale"]
    report["images"] = sum(1 for _ in (work / "runs" / scale / "benchmark_images").rglob("*.png"))
    report["benchmarks"] = runs[1][1]["benchmarks"]
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the full run) or cpu")
    parser.add_argument("--reduced", action="store_true", help="the U-Net for one step and each grader on 2 images (no notebooks)")
    parser.add_argument("--tiny", action="store_true", help="the full run's path with the toy-sized random models (a CPU check of this script)")
    parser.add_argument("--prompts", type=int, default=10, help="prompts per benchmark in the full run")
    parser.add_argument("--scale", default=None, help="the notebooks' scale (default: paper-sd21; smoke with --tiny)")
    parser.add_argument("--work", default=None, help="where models, data and runs go (default: a temporary folder)")
    parser.add_argument("--out", default="runs/paper-dry-run/paper_dry_run.json")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("paper dry run: no CUDA device here; on a CPU run `make paper-dry-run-cpu` (--device cpu --reduced)")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    report = {"device": machine, "mode": "reduced" if args.reduced else ("tiny" if args.tiny else "full")}
    LOGGER.info(f"paper dry run on {machine} ({report['mode']})")
    if args.reduced:
        report["unet"] = unet_step(args.device)
        report["graders"] = time_graders(args.device, n_images=2)
    else:
        work = Path(args.work or tempfile.mkdtemp(prefix="dpt-paper-dry-run-"))
        report.update(run_notebooks(work, args.device, args.prompts, args.tiny, args.scale))
        report["graders"] = time_graders(args.device, n_images=16 if args.device == "cuda" else 2, side=512)
    if args.device == "cuda":
        report["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["peak_rss_gib"] = round(peak_rss_gib(), 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"paper dry run: {report['seconds']:.0f} s in all, peak memory {report['peak_rss_gib']:.1f} GiB of host memory; "
          f"report in {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
