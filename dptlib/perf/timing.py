"""Benchmarks (not tests): ``python -m dptlib.perf.timing probe``, ``sample``, ``float-paths`` and
``profile`` (where a toy run's seconds go: :mod:`dptlib.perf.profiling`).

Prints ratios measured in one run, medians of repeated timings, on this machine:

(a) a stage-1 step (U-Net features for one septuple batch + adapter forward/backward):
    early exit and one batched U-Net call, against the full U-Net called once per septuple member;
(b) ITM scoring time per image with 4 candidate captions: DPT (one early-exit pass per pair)
    against DiffusionITM (10 timesteps, normalised) and Diffusion Classifier (500 timesteps per
    candidate, its zero-shot default).

(c) ``queries``: the toy stage-1 step with the preset's 40 adapter queries against 16 (the
    ``cosine-*-q16`` arms of :mod:`dptlib.experiments.convergence`): the frozen U-Net part once, the adapter's
    forward, backward and AdamW per query count, timed in turns on the same batch.

(d) ``float-paths``: what pinning the CPU's float path would cost. The same toy stage-1 steps
    run in a fresh process per setting (the pins are read when torch loads): the median step time
    against the default path, and a checksum of the adapter's weights after the steps. Equal
    checksums on two CPUs mean that setting rounds identically there, which strict ``make verify``
    of trained numbers needs across CPUs.

(e) ``jobs``: toy stage-1 steps in one process, then in ``--jobs`` processes at once: what running
    variants at once (``python -m dptlib.experiments.ablations ... --jobs N``) can gain on this device.

(a) and (b) at the SD-2.1 U-Net architecture (random weights; 32x32 latents to stay within CPU time) and
on the toy model. Where a baseline would take minutes at SD-2.1 size, its time is the measured
time of one U-Net forward times the number of forwards it needs; the output says so.
"""

from __future__ import annotations

import argparse
import hashlib
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

from dptlib.checks import UserInputError, check_names, cli_errors, command_line
from dptlib.config import device
from dptlib.data.discrimination import sample_septuple
from dptlib.method.adapter import AdapterConfig, DiscriminativeAdapter
from dptlib.method.backbone import block_channels, extract_features, load_backbone
from dptlib.method.sampling import correction_gradient
from dptlib.method.train import ProbeConfig, build_adapter, cache_latents, dpt_losses, septuple_batch
from dptlib.perf.profiling import median_time, profile
from dptlib.toy.data import toy_discrimination_data
from dptlib.toy.model import load_toy_pipeline

SD21_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
)


def _unets(sd21: bool, toy: bool, sd21_latent: int):
    """(name, frozen U-Net, latent side, text width, text length) of each model to time."""
    if sd21:
        from diffusers import UNet2DConditionModel  # deferred: heavy

        torch.manual_seed(0)
        yield "SD-2.1 U-Net (random weights)", UNet2DConditionModel(**SD21_UNET).eval().requires_grad_(False), sd21_latent, 1024, 77
    if toy:

        pipe = load_toy_pipeline()
        yield ("toy U-Net", pipe.unet.eval().requires_grad_(False), 16, pipe.text_encoder.config.hidden_size,
               pipe.tokenizer.model_max_length)


def _stage1_step(unet, adapter, blocks, latents, t, hidden, early_exit: bool, batched: bool):
    def run():
        with torch.no_grad():
            if batched:
                features = extract_features(unet, latents, t, hidden, blocks, early_exit=early_exit)
            else:  # one call per septuple member, as a loop over (x, y), (x, y_neg), ... would do
                parts = [extract_features(unet, z, tt, h, blocks, early_exit=early_exit)
                         for z, tt, h in zip(latents.chunk(6), t.chunk(6), hidden.chunk(6))]
                features = [torch.cat(f) for f in zip(*parts)]
        out = adapter(features, t)
        (out.match_embeddings.sum() + out.boxes.sum()).backward()

    return run


def bench_probe(sd21: bool = True, toy: bool = True, septuples: int = 2, sd21_latent: int = 32) -> None:
    for name, unet, side, text_dim, length in _unets(sd21, toy, sd21_latent):
        n = 6 * septuples
        latents, t = torch.randn(n, 4, side, side), torch.randint(0, 1000, (n,))
        hidden = torch.randn(n, length, text_dim)
        adapter = DiscriminativeAdapter(AdapterConfig(dropout=0.0), [block_channels(unet, "mid")], text_dim)
        fast = median_time(_stage1_step(unet, adapter, ["mid"], latents, t, hidden, early_exit=True, batched=True))
        slow = median_time(_stage1_step(unet, adapter, ["mid"], latents, t, hidden, early_exit=False, batched=False))
        print(f"[probe step] {name}, {septuples} septuples, {side}x{side} latents: early exit + one batched call "
              f"{fast:.3f} s, full U-Net per member {slow:.3f} s -> {slow / fast:.2f}x faster")

        # (b) ITM scoring of one image against 4 captions
        def dpt_score():
            with torch.no_grad():
                features = extract_features(unet, latents[:4], t[:4], hidden[:4], ["mid"])
                adapter(features, t[:4])

        def one_forward():
            with torch.no_grad():
                unet(latents[:1], t[:1], encoder_hidden_states=hidden[:1])

        dpt = median_time(dpt_score)
        forward = median_time(one_forward)
        diffusion_itm = forward * (4 * 10 + 10)  # 10 timesteps x (4 captions + unconditional)
        classifier = forward * 4 * 500
        print(f"[ITM scoring] {name}: DPT {dpt * 1000:.1f} ms per image (4 captions, measured); one full U-Net forward "
              f"{forward * 1000:.1f} ms -> DiffusionITM {diffusion_itm:.2f} s ({diffusion_itm / dpt:.0f}x DPT), Diffusion "
              f"Classifier {classifier:.1f} s ({classifier / dpt:.0f}x DPT) [forward time x forwards needed]")


def bench_sample(sd21: bool = True, toy: bool = True, batch: int = 2, sd21_latent: int = 32) -> None:
    """Per denoising step: plain classifier-free guidance (one U-Net call on 2B latents) against
    the same step with self-correction (Eq. 9: a pass up to the probed block, the adapter, the
    gradient back to z_t, then the same U-Net call), and the average step when the gradient is
    refreshed every 2nd step only. The rest of a sampling step (scheduler, text encoding once per
    image) is the same in all and cheap."""
    for name, unet, side, text_dim, length in _unets(sd21, toy, sd21_latent):
        adapter = DiscriminativeAdapter(AdapterConfig(dropout=0.0), [block_channels(unet, "mid")], text_dim).eval()
        z = torch.randn(batch, 4, side, side)
        t = torch.full((batch,), 500)
        hidden = torch.randn(2 * batch, length, text_dim)
        pooled = torch.randn(batch, text_dim)

        def plain():
            with torch.no_grad():
                unet(torch.cat([z, z]), t[0], encoder_hidden_states=hidden)

        def corrected():
            gradient = correction_gradient(unet, adapter, ["mid"], z, t, hidden[batch:], pooled)
            moved = z + 0.1 * gradient
            with torch.no_grad():
                unet(torch.cat([moved, moved]), t[0], encoder_hidden_states=hidden)

        def reused():  # a step between refreshes: the last gradient moves the latent, no gradient pass
            moved = z + 0.1 * z
            with torch.no_grad():
                unet(torch.cat([moved, moved]), t[0], encoder_hidden_states=hidden)

        a, b, c = median_time(plain), median_time(corrected), median_time(reused)
        print(f"[sampling step] {name}, {batch} images, {side}x{side} latents, CFG: plain {a:.3f} s, with self-correction "
              f"at the mid block {b:.3f} s -> {b / a:.2f}x plain; gradient refreshed every 2nd step (refresh_every=2): "
              f"{(b + c) / 2:.3f} s per step on average -> {(b + c) / 2 / a:.2f}x plain")


# (c) Float paths. MKL_CBWR asks MKL for the same results on every CPU that has the named ISA;
# ATEN_CPU_CAPABILITY picks torch's own vector kernels; oneDNN (convolutions) is capped by
# ONEDNN_MAX_CPU_ISA or switched off (DPT_NO_ONEDNN, read by float_step). "portable" pins all
# three to their CPU-independent paths; "AVX2-pinned" keeps oneDNN, whose kernels may size their
# blocking by the CPU's caches.
FLOAT_PATHS = {
    "default": {},
    "AVX2-pinned": {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "AVX2-pinned, no oneDNN": {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "DPT_NO_ONEDNN": "1"},
    "portable": {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "DPT_NO_ONEDNN": "1"},
}


def float_step(steps: int = 12, septuples: int | None = None, seed: int = 0, device: str = "cpu", queries: int | None = None) -> dict:
    """``steps`` AdamW steps of a toy stage-1 adapter (the toy preset's shape, probing up1; a batch
    of ``septuples``, default the preset's; ``queries`` adapter queries, default the preset's) on
    fixed random latents and text states, on ``device``. Returns the median step time (s, after
    one warm-up step) and a sha256 prefix of the adapter's weights."""

    if os.environ.get("DPT_NO_ONEDNN"):
        torch.backends.mkldnn.enabled = False
    preset = ProbeConfig.preset("toy")
    adapter_config = AdapterConfig(**{**vars(preset.adapter), **({"num_queries": queries} if queries else {})})
    _, unet, side, text_dim, length = next(_unets(sd21=False, toy=True, sd21_latent=0))
    unet.to(device)
    n = 6 * (septuples or preset.batch_size)
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(n, 4, side, side, generator=generator).to(device)
    t = torch.randint(0, 1000, (n,), generator=generator).to(device)
    hidden = torch.randn(n, length, text_dim, generator=generator).to(device)
    torch.manual_seed(seed)
    adapter = DiscriminativeAdapter(adapter_config, [block_channels(unet, "up1")], text_dim).to(device)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.no_grad():
            features = extract_features(unet, latents, t, hidden, ["up1"])
        out = adapter(features, t)
        (out.match_embeddings.square().mean() + out.boxes.square().mean()).backward()
        optimizer.step()
        optimizer.zero_grad()
        sync()
        times.append(time.perf_counter() - start)
    digest = hashlib.sha256()
    for name, value in sorted(adapter.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return {"seconds_per_step": statistics.median(times[1:]), "checksum": digest.hexdigest()[:16],
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "onednn": torch.backends.mkldnn.enabled}


def bench_jobs(jobs: int, steps: int = 60, queries: int = 16) -> dict:
    """What ``python -m dptlib.experiments.ablations ... --jobs N`` can gain: toy stage-1 steps (16 adapter
    queries, the ``seeds`` arms') in one process, then in ``jobs`` processes at once, on
    ``config.device()``. Prints the median step time of each and the speed-up of running ``jobs``
    at once over running them one after another (jobs x one step's time / the slowest concurrent
    process's step time)."""

    command = [sys.executable, "-m", "dptlib.perf.timing", "float-step", "--steps", str(steps), "--queries", str(queries),
               "--device", device()]

    def run(count: int) -> list[float]:
        processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(count)]
        outputs = [process.communicate()[0] for process in processes]
        if any(process.returncode for process in processes):
            raise RuntimeError(f"a float-step process failed: {command}")
        return [json.loads(out.strip().splitlines()[-1])["seconds_per_step"] for out in outputs]

    alone = run(1)[0]
    together = run(jobs)
    speedup = jobs * alone / max(together)
    print(f"[jobs] toy stage-1 step on {device()}: {alone * 1000:.1f} ms alone; {jobs} processes at once "
          f"{statistics.median(together) * 1000:.1f} ms (slowest {max(together) * 1000:.1f} ms) -> {speedup:.2f}x the throughput "
          f"of running them one after another", flush=True)
    return {"device": device(), "jobs": jobs, "alone_s": alone, "together_s": together, "speedup": speedup}


def bench_float_paths(steps: int = 12) -> list[dict]:
    """Runs :func:`float_step` under each of :data:`FLOAT_PATHS` in its own process and prints
    its step time against the default path's and its checksum."""
    rows = []
    for name, pins in FLOAT_PATHS.items():
        env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DPT_NO_ONEDNN")}
        result = subprocess.run([sys.executable, "-m", "dptlib.perf.timing", "float-step", "--steps", str(steps)],
                                env={**env, **pins}, capture_output=True, text=True, check=True)
        rows.append({"float path": name, **json.loads(result.stdout.strip().splitlines()[-1])})
        ratio = rows[-1]["seconds_per_step"] / rows[0]["seconds_per_step"]
        print(f"[float path] {name}: {rows[-1]['seconds_per_step']:.3f} s per toy stage-1 step ({ratio:.2f}x default), "
              f"weights after {steps} steps {rows[-1]['checksum']} ({rows[-1]['cpu_capability']}, oneDNN "
              f"{'on' if rows[-1]['onednn'] else 'off'}; pins: {' '.join(f'{k}={v}' for k, v in pins.items()) or 'none'})")
    return rows


def bench_queries(counts: tuple[int, ...] = (40, 16), repeats: int = 7) -> dict[int, float]:
    """Seconds per toy stage-1 step (16 septuples, block ``up1``) for each adapter query count:
    the frozen U-Net part (the same for every count) plus the adapter part, each a median of
    ``repeats`` timings taken in turns, so that a slower minute of the machine hits every count."""


    with tempfile.TemporaryDirectory() as folder:
        splits, _ = toy_discrimination_data(Path(folder), {"train": 160}, seed=0)
    train = splits["train"]
    backbone = load_backbone("toy")
    base = ProbeConfig.preset("toy", blocks="up1")
    latents = cache_latents(backbone, train.images)
    rng = np.random.default_rng(0)
    septuples = [sample_septuple(train, rng) for _ in range(base.batch_size)]
    step = septuple_batch(backbone, train, latents, septuples, [[0, 0, 0, i] for i in range(base.batch_size)], base.timesteps)
    parts = {}
    for n in counts:
        torch.manual_seed(0)
        config = ProbeConfig.preset("toy", blocks="up1", adapter={**ProbeConfig.PRESETS["toy"]["adapter"], "num_queries": n})
        adapter, blocks = build_adapter(config, backbone)
        parts[n] = (adapter, torch.optim.AdamW(adapter.parameters(), lr=config.lr))

    def unet_part():
        with torch.no_grad():
            return extract_features(backbone.unet, step.latents, step.timesteps, step.text_hidden, blocks)

    features = unet_part()

    def adapter_part(n):
        adapter, optimizer = parts[n]
        dpt_losses(adapter, features, step)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()

    unet_seconds = median_time(unet_part, repeats)
    times = {n: [] for n in counts}
    for n in counts:
        adapter_part(n)  # warm-up
    for _ in range(repeats):
        for n in counts:
            start = time.perf_counter()
            adapter_part(n)
            times[n].append(time.perf_counter() - start)
    seconds = {n: unet_seconds + statistics.median(times[n]) for n in counts}
    print(f"toy stage-1 step ({base.batch_size} septuples, up1), medians of {repeats}: U-Net part {unet_seconds:.3f} s")
    for n in counts:
        print(f"  {n:3d} queries: adapter part {statistics.median(times[n]):.3f} s, step {seconds[n]:.3f} s, "
              f"{seconds[counts[0]] / seconds[n]:.2f}x the {counts[0]}-query step's speed")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["probe", "sample", "queries", "float-paths", "float-step", "jobs", "profile"])
    parser.add_argument("--scale", default="toy", help="profile: the scale whose finished runs are read")
    parser.add_argument("--no-measure", action="store_true", help="profile: only read what finished runs recorded")
    parser.add_argument("--no-sd21", action="store_true", help="skip the SD-2.1-sized U-Net")
    parser.add_argument("--septuples", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12, help="float-paths: stage-1 steps per float path")
    parser.add_argument("--jobs", type=int, default=8, help="jobs: processes at once")
    parser.add_argument("--queries", type=int, default=None, help="float-step: adapter queries (default the preset's)")
    parser.add_argument("--device", default="cpu", help="float-step: where the steps run")
    argv, debug = command_line(argv)
    args = parser.parse_args([a for a in argv if a != "--debug"])
    with cli_errors(debug, "dptlib.perf.timing"):
        check_names("scale", [args.scale], ("smoke", "toy"))
        check_names("device", [args.device], ("cpu", "cuda"))
        if args.device == "cuda" and not torch.cuda.is_available():
            raise UserInputError("--device cuda: no CUDA device on this machine (--device cpu)")
    torch.set_num_threads(int(os.environ.get("DPT_THREADS", "2")))
    if args.what == "probe":
        bench_probe(sd21=not args.no_sd21, septuples=args.septuples)
    elif args.what == "sample":
        bench_sample(sd21=not args.no_sd21)
    elif args.what == "queries":
        bench_queries()
    elif args.what == "profile":
        profile(args.scale, measure=not args.no_measure)
    elif args.what == "float-paths":
        bench_float_paths(steps=args.steps)
    elif args.what == "jobs":
        print(json.dumps(bench_jobs(args.jobs, steps=args.steps)))
    else:  # one float path, in this process (float-paths and jobs run it once per setting)
        print(json.dumps(float_step(steps=args.steps, device=args.device, queries=args.queries)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
