"""The GPU check: ``make gpu-check`` (``python -m dptlib.perf.gpu_check``).

One prepared script for a CUDA machine, meant to finish in under 8 minutes:

1. the unit tests, with the device tests (``tests/test_device.py``) on CUDA;
2. at the SD-2.1 U-Net size with random weights (64x64 latents, bf16, PyTorch SDPA attention):
   - **stage-1 throughput**: septuples per second at the largest batch that fits, where one
     sample is one septuple = its 6 text-conditioned passes through the U-Net up to the probed
     block (early exit), plus the adapter's forward and backward and the optimizer step;
   - a **stage-2 step** (LoRA on the cross-attention + the adapter trainable), with and without
     the denoising (MSE) term;
   - a **self-correction step** (Eq. 9: gradient pass + CFG U-Net call) against a plain CFG step,
     beside its counted bound (the ratio of the two steps' FLOPs) and the gradient pass's speed;
   - **whole images** through ``generate`` (a random SD-2.1-sized pipeline, 20 DDIM steps),
     plainly and self-corrected, in images/s, and the BLIP-M / BLIP-C grader at the
     ``blip2-itm-vit-g`` architecture in images/s;
   - peak memory of each, and model-FLOPs utilisation (FLOPs counted by
     ``torch.utils.flop_counter`` on one step, over the card's dense bf16 peak).

Everything is written as JSON (``--out``). On a machine without CUDA the script says so and
exits 0. ``--device cpu --tiny`` runs the same code on a small U-Net, for the tests.

The paper's budget, 60k steps x 220 septuples in three days on one A100, is about 51 samples/s;
the goal here is >= 400 on one H100.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dptlib.evaluation.graders.blip2 import Blip2Match
from dptlib.evaluation.graders.tiny import WORDS, write_tiny_evaluators
from dptlib.method.adapter import AdapterConfig, DiscriminativeAdapter
from dptlib.method.backbone import block_channels, extract_features
from dptlib.method.losses import matching_similarity
from dptlib.method.sampling import correction_gradient, generate
from dptlib.method.train import PAIRS_PER_SEPTUPLE, DPTModel, StepBatch, TuneConfig, add_lora
from dptlib.perf.timing import SD21_UNET
from dptlib.toy.model import ToyModelConfig, assemble_pipeline, build_random_pipeline, build_tokenizer

TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 64, 64),
    down_block_types=SD21_UNET["down_block_types"], up_block_types=SD21_UNET["up_block_types"],
    attention_head_dim=(2, 4, 4, 4), cross_attention_dim=32, use_linear_projection=True,
)

# dense bf16 peak of a card (FLOP/s), for model-FLOPs utilisation; None where unknown
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "RTX 4090": 165e12}


def _peak_flops(name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


class Clock:
    """Wall time of a callable on the device: synchronised, median of ``repeats`` after a warm-up."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def median(self, fn, repeats: int = 5) -> float:
        fn()
        self.sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def _reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _flops(fn) -> float:
    """FLOPs of one call of ``fn`` (matrix products, convolutions, attention; forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode  # deferred: heavy

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def build_unet(tiny: bool, device: torch.device, dtype: torch.dtype):
    """A frozen U-Net of the SD-2.1 architecture (or the tiny one) with random weights."""
    from diffusers import UNet2DConditionModel  # deferred: heavy
    from diffusers.models.attention_processor import AttnProcessor2_0  # deferred: heavy

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD21_UNET))
    unet.set_attn_processor(AttnProcessor2_0())  # PyTorch's scaled_dot_product_attention
    return unet.to(device, dtype).eval().requires_grad_(False)


def synthetic_batch(septuples: int, side: int, text_len: int, text_dim: int, device, dtype) -> StepBatch:
    """A stage-1 step's tensors with random values: 6 pairs per septuple (the shapes are what count)."""
    n = PAIRS_PER_SEPTUPLE * septuples
    return StepBatch(
        latents=torch.randn(n, 4, side, side, device=device, dtype=dtype),
        timesteps=torch.randint(0, 1000, (n,), device=device),
        text_hidden=torch.randn(n, text_len, text_dim, device=device, dtype=dtype),
        text_pooled=torch.randn(n, text_dim, device=device),
        boxes=torch.rand(septuples, 4, device=device) * 0.5 + 0.25,
        noise=torch.randn(septuples, 4, side, side, device=device, dtype=dtype),
        positives=torch.arange(septuples, device=device) * PAIRS_PER_SEPTUPLE,
    )


def training_step(model: DPTModel, optimizer, batch: StepBatch, device):
    """One optimizer step under bf16 autocast: forward (U-Net to the probed block, adapter,
    Eq. 8's losses), backward, AdamW."""

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _adapter(unet, block: str, text_dim: int, device) -> DiscriminativeAdapter:
    return DiscriminativeAdapter(AdapterConfig(dropout=0.0), [block_channels(unet, block)], text_dim).to(device)


def stage1_throughput(unet, block: str, side: int, text_len: int, text_dim: int, device, batches: list[int], clock: Clock) -> dict:
    """Septuples per second at each batch of ``batches`` until one does not fit; the largest
    batch that fits gives the headline number, and its FLOPs the utilisation."""
    adapter = _adapter(unet, block, text_dim, device)
    model = DPTModel(unet, adapter, [block])
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-4)
    rows = []
    for septuples in batches:
        _reset_peak(device)
        try:
            batch = synthetic_batch(septuples, side, text_len, text_dim, device, unet.dtype)
            seconds = clock.median(training_step(model, optimizer, batch, device), repeats=3)
        except torch.OutOfMemoryError:
            rows.append({"septuples": septuples, "fits": False})
            optimizer.zero_grad(set_to_none=True)
            break
        rows.append({"septuples": septuples, "fits": True, "step_s": seconds, "samples_per_s": septuples / seconds,
                     "peak_memory_gib": _peak_gib(device)})
        print(f"  stage 1 at {block}: {septuples} septuples per step, {seconds * 1000:.1f} ms -> "
              f"{septuples / seconds:.1f} samples/s", flush=True)
    best = max((r for r in rows if r["fits"]), key=lambda r: r["samples_per_s"])
    batch = synthetic_batch(best["septuples"], side, text_len, text_dim, device, unet.dtype)
    best["flops_per_step"] = _flops(training_step(model, optimizer, batch, device))
    return {"block": block, "batches": rows, "best": best}


def stage2_step(unet, block: str, side: int, text_len: int, text_dim: int, device, septuples: int, clock: Clock) -> dict:
    """A stage-2 step: LoRA (rank 4, cross-attention, as :class:`TuneConfig`) + adapter, the
    LoRA weights kept in fp32 as trainable weights are in the diffusers LoRA examples."""
    config = TuneConfig(lora_rank=4)
    lora = add_lora(unet, config)
    for p in lora:
        p.data = p.data.float()
    adapter = _adapter(unet, block, text_dim, device)
    out = {"block": block, "septuples": septuples, "lora_parameters": sum(p.numel() for p in lora)}
    try:
        for name, mse in (("dpt", 0.0), ("dpt+mse", 1.0)):
            model = DPTModel(unet, adapter, [block], mse_coef=mse)
            optimizer = torch.optim.AdamW(lora + list(adapter.parameters()), lr=1e-4)
            batch = synthetic_batch(septuples, side, text_len, text_dim, device, unet.dtype)
            _reset_peak(device)
            seconds = clock.median(training_step(model, optimizer, batch, device), repeats=3)
            out[name] = {"step_s": seconds, "samples_per_s": septuples / seconds, "peak_memory_gib": _peak_gib(device),
                         "flops_per_step": _flops(training_step(model, optimizer, batch, device))}
            print(f"  stage 2 ({name}) at {block}: {septuples} septuples, {seconds * 1000:.1f} ms per step", flush=True)
    finally:
        unet.delete_adapters(unet.active_adapters())
    return out


def self_correction_step(unet, block: str, side: int, text_len: int, text_dim: int, device, images: int, clock: Clock) -> dict:
    """One denoising step with classifier-free guidance, plain and with self-correction (Eq. 9)."""
    adapter = _adapter(unet, block, text_dim, device).eval()
    z = torch.randn(images, 4, side, side, device=device, dtype=unet.dtype)
    t = torch.full((images,), 500, device=device)
    hidden = torch.randn(2 * images, text_len, text_dim, device=device, dtype=unet.dtype)
    pooled = torch.randn(images, text_dim, device=device)

    def plain():
        with torch.no_grad():
            unet(torch.cat([z, z]), t[0], encoder_hidden_states=hidden)

    def corrected():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            gradient = correction_gradient(unet, adapter, [block], z, t, hidden[images:], pooled)
        moved = z + 0.03 * gradient.to(z.dtype)
        with torch.no_grad():
            unet(torch.cat([moved, moved]), t[0], encoder_hidden_states=hidden)

    def gradient_only():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            correction_gradient(unet, adapter, [block], z, t, hidden[images:], pooled)

    def gradient_counted():
        # correction_gradient's FLOPs, by .backward(): FlopCounterMode's hooks cannot follow autograd.grad
        with torch.autocast(device.type, dtype=torch.bfloat16):
            latent = z.detach().requires_grad_(True)
            features = extract_features(unet, latent, t, hidden[images:], [block])
            matching_similarity(adapter(features, t).match_embeddings, pooled).sum().backward()

    def corrected_counted():
        gradient_counted()
        plain()

    _reset_peak(device)
    a = clock.median(plain)
    b = clock.median(corrected)
    g = clock.median(gradient_only)
    # the counted bound: what the corrected step costs if each FLOP ran as fast as in the plain step
    flops_plain, flops_corrected, flops_gradient = _flops(plain), _flops(corrected_counted), _flops(gradient_counted)
    bound = flops_corrected / flops_plain
    print(f"  sampling step, {images} images: plain CFG {a * 1000:.1f} ms, with self-correction at {block} "
          f"{b * 1000:.1f} ms -> {b / a:.2f}x measured, {bound:.2f}x counted bound (FLOPs); the gradient pass alone "
          f"{g * 1000:.1f} ms for {flops_gradient / flops_plain:.2f}x the plain step's FLOPs "
          f"(refresh_every=2: {(a + b) / 2 / a:.2f}x)", flush=True)
    return {"block": block, "images": images, "plain_s": a, "corrected_s": b, "gradient_s": g, "ratio": b / a,
            "counted_bound": bound, "measured_over_bound": (b / a) / bound,
            "flops": {"plain": flops_plain, "corrected": flops_corrected, "gradient": flops_gradient},
            # where the time beyond the bound goes: the gradient pass's speed (FLOP/s) against the plain step's
            "gradient_speed_vs_plain": (flops_gradient / g) / (flops_plain / a),
            "ratio_refresh_every_2": (a + b) / 2 / a, "peak_memory_gib": _peak_gib(device)}


def build_pipeline(tiny: bool, device: torch.device, dtype: torch.dtype, unet):
    """A stock ``StableDiffusionPipeline`` around ``unet``: at the SD-2.1 architecture a VAE and an
    OpenCLIP-H-sized text encoder with random weights (the toy tokenizer's ids; the cost is the
    shapes'), or the toy architecture's random pipeline with ``tiny``."""
    from diffusers import AutoencoderKL  # deferred: heavy
    from transformers import CLIPTextConfig, CLIPTextModel  # deferred: heavy


    if tiny:
        return build_random_pipeline().to(device)
    config = ToyModelConfig.preset("smoke")
    tokenizer = build_tokenizer(config.world, 77)
    torch.manual_seed(0)
    with torch.device(device):  # random initialisation on the card: seconds, not minutes
        text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                                    num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                                                    projection_dim=1024, eos_token_id=tokenizer.eos_token_id,
                                                    bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id))
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2,
                            sample_size=512)
    pipe = assemble_pipeline(tokenizer, text_encoder, vae, unet).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sampling_pass(pipe, block: str, text_dim: int, device, images: int, steps: int) -> dict:
    """Whole images through ``dptlib.method.sampling.generate`` (DDIM, CFG 7.5, VAE decode), plainly and
    with self-correction at every step (Eq. 9, an untrained adapter at ``block``): images per
    second and the ratio, as a user's sampling run sees them."""

    adapter = _adapter(pipe.unet, block, text_dim, device).eval()
    prompts = ["a red circle and a blue square"] * images
    options = dict(num_inference_steps=steps, batch_size=images, progress=False)
    corrected = dict(self_correct=dict(adapter=adapter, blocks=[block], eta=0.03))
    generate(pipe, prompts[:1], **options)  # warm-up, both ways
    generate(pipe, prompts[:1], **options, **corrected)
    times = {}
    for name, extra in (("plain", {}), ("self-corrected", corrected)):
        start = time.perf_counter()
        generate(pipe, prompts, **options, **extra)
        Clock(device).sync()
        times[name] = time.perf_counter() - start
    print(f"  sampling {images} images x {steps} steps: plain {images / times['plain']:.2f} images/s, self-corrected "
          f"{images / times['self-corrected']:.2f} images/s ({times['self-corrected'] / times['plain']:.2f}x)", flush=True)
    return {"images": images, "steps": steps, "plain_images_per_s": images / times["plain"],
            "corrected_images_per_s": images / times["self-corrected"], "ratio": times["self-corrected"] / times["plain"]}


def evaluator_pass(tiny: bool, device: torch.device, images: int) -> dict:
    """BLIP-M / BLIP-C (``Blip2Match``) at the ``blip2-itm-vit-g`` architecture with random weights
    (the tiny one with ``tiny``) on ``images`` generated-size images: images graded per second."""


    if tiny:

        folder = write_tiny_evaluators(tempfile.mkdtemp())["blip2"]
        scorer = Blip2Match.from_folder(folder, device=str(device))
        side = 64
    else:
        from transformers import (  # deferred: heavy
            BertTokenizer,
            Blip2Config,
            Blip2ForImageTextRetrieval,
            Blip2Processor,
            BlipImageProcessor,
        )


        with torch.device(device):
            model = Blip2ForImageTextRetrieval(Blip2Config(qformer_config=dict(use_qformer_text_input=True)))
        tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}, do_lower_case=True)
        scorer = Blip2Match(model.to(torch.float16), Blip2Processor(BlipImageProcessor(size={"height": 224, "width": 224}), tokenizer),
                            batch_size=32, name="blip2-itm-vit-g architecture, random weights")
        side = 512
    pictures = [np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8) for i in range(images)]
    prompts = ["a red car and a blue bench"] * images
    scorer.pair_scores(pictures[:2], prompts[:2])  # warm-up
    start = time.perf_counter()
    scorer.pair_scores(pictures, prompts)
    Clock(device).sync()
    seconds = time.perf_counter() - start
    print(f"  BLIP-M / BLIP-C on {images} images: {images / seconds:.1f} images/s", flush=True)
    return {"grader": scorer.name, "images": images, "images_per_s": images / seconds}


def _pytest(args: list[str], env: dict, timeout: int) -> dict:
    root = Path(__file__).resolve().parent.parent
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "--tb=short", "-p", "no:cacheprovider", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as stopped:
        tail = (stopped.stdout or b"").decode(errors="replace") if isinstance(stopped.stdout, bytes) else (stopped.stdout or "")
        print(tail[-3000:], flush=True)
        return {"finished": False, "seconds": timeout, "progress": tail.strip().splitlines()[-1:]}
    lines = proc.stdout.strip().splitlines()
    print("\n".join(lines[-60:]), flush=True)
    return {"finished": True, "returncode": proc.returncode, "summary": lines[-1] if lines else "",
            "seconds": time.perf_counter() - start}


def run_unit_tests(device: str, timeout: int) -> dict:
    """The device tests (``tests/test_device.py``) on ``device``, then the rest of the unit suite
    (which trains on the CPU on every machine, as in CI) in what is left of ``timeout``."""
    env = {**os.environ, "DPT_TEST_DEVICE": device, "DPT_SCALE": "smoke", "HF_HUB_OFFLINE": "1"}
    on_device = _pytest(["tests/test_device.py", "tests/test_gpu_check.py"], env, timeout)
    rest = _pytest(["--durations=10", "tests", "--ignore=tests/test_device.py", "--ignore=tests/test_gpu_check.py"], env,
                   max(30, timeout - int(on_device["seconds"])))
    return {"device_tests": on_device, "rest_of_suite": rest}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/gpu-check/gpu_check.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a small U-Net (for the tests; not a measurement)")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--test-timeout", type=int, default=300, help="seconds for all the unit tests together")
    parser.add_argument("--skip-bench", action="store_true", help="the tests only")
    parser.add_argument("--blocks", default="mid,up1", help="probed blocks to time stage 1 at (comma-separated)")
    parser.add_argument("--max-septuples", type=int, default=256)
    args = parser.parse_args(argv)
    out = Path(args.out)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine; nothing to check (exit 0).")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.skip_tests and args.skip_bench:
        raise SystemExit("--skip-tests and --skip-bench leave nothing to do")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {"device": name, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "tiny": args.tiny,
              "unet": "tiny" if args.tiny else "SD-2.1 architecture, random weights"}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if not args.skip_tests:
        print("gpu-check: unit tests", flush=True)
        report["unit_tests"] = run_unit_tests(args.device, args.test_timeout)
        json_dump(report, out)
    if args.skip_bench:
        return 0
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    side, text_len, text_dim = (8, 8, 32) if args.tiny else (64, 77, 1024)
    clock = Clock(device)
    unet = build_unet(args.tiny, device, dtype)
    report.update(latent_side=side, dtype=str(dtype))
    peak = _peak_flops(name)
    batches = [2**k for k in range(0, 20) if 2**k <= args.max_septuples] if not args.tiny else [1, 2]
    report["stage1"] = []
    for block in args.blocks.split(","):
        print(f"gpu-check: stage 1 at {block}", flush=True)
        result = stage1_throughput(unet, block, side, text_len, text_dim, device, batches, clock)
        best = result["best"]
        best["mfu"] = best["flops_per_step"] / best["step_s"] / peak if peak else None
        report["stage1"].append(result)
        json_dump(report, out)
    block = args.blocks.split(",")[-1]
    print("gpu-check: stage 2 step", flush=True)
    report["stage2"] = stage2_step(unet, block, side, text_len, text_dim, device, 2 if args.tiny else 8, clock)
    for part in ("dpt", "dpt+mse"):
        step = report["stage2"][part]
        step["mfu"] = step["flops_per_step"] / step["step_s"] / peak if peak else None
    print("gpu-check: self-correction step", flush=True)
    report["self_correction"] = self_correction_step(unet, block, side, text_len, text_dim, device, 2 if args.tiny else 8, clock)
    json_dump(report, out)
    print("gpu-check: sampling and grading whole images", flush=True)
    pipe = build_pipeline(args.tiny, device, dtype, unet)
    report["sampling"] = sampling_pass(pipe, block, text_dim, device, 2 if args.tiny else 8, 3 if args.tiny else 20)
    del pipe
    report["evaluator"] = evaluator_pass(args.tiny, device, 4 if args.tiny else 64)
    report["goal_samples_per_s"] = 400
    report["best_samples_per_s"] = max(r["best"]["samples_per_s"] for r in report["stage1"])
    json_dump(report, out)
    print(f"gpu-check: wrote {out}")
    return 0


def json_dump(report: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
