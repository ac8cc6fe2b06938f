"""Benchmarks (not tests): ``python -m dptlib.timing probe`` and ``python -m dptlib.timing sample``.

Prints ratios measured in one run, medians of repeated timings, on this machine:

(a) a stage-1 step (U-Net features for one septuple batch + adapter forward/backward):
    early exit and one batched U-Net call, against the full U-Net called once per septuple member;
(b) ITM scoring time per image with 4 candidate captions: DPT (one early-exit pass per pair)
    against DiffusionITM (10 timesteps, normalised) and Diffusion Classifier (500 timesteps per
    candidate, its zero-shot default).

Both at the SD-2.1 U-Net architecture (random weights; 32x32 latents to stay within CPU time) and
on the toy model. Where a baseline would take minutes at SD-2.1 size, its time is the measured
time of one U-Net forward times the number of forwards it needs; the output says so.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from .adapter import AdapterConfig, DiscriminativeAdapter
from .backbone import block_channels, extract_features
from .sampling import correction_gradient

SD21_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
)


def _unets(sd21: bool, toy: bool, sd21_latent: int):
    """(name, frozen U-Net, latent side, text width, text length) of each model to time."""
    if sd21:
        from diffusers import UNet2DConditionModel

        torch.manual_seed(0)
        yield "SD-2.1 U-Net (random weights)", UNet2DConditionModel(**SD21_UNET).eval().requires_grad_(False), sd21_latent, 1024, 77
    if toy:
        from .toy.model import load_toy_pipeline

        pipe = load_toy_pipeline()
        yield ("toy U-Net", pipe.unet.eval().requires_grad_(False), 16, pipe.text_encoder.config.hidden_size,
               pipe.tokenizer.model_max_length)


def _median_time(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
        fast = _median_time(_stage1_step(unet, adapter, ["mid"], latents, t, hidden, early_exit=True, batched=True))
        slow = _median_time(_stage1_step(unet, adapter, ["mid"], latents, t, hidden, early_exit=False, batched=False))
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

        dpt = _median_time(dpt_score)
        forward = _median_time(one_forward)
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

        a, b, c = _median_time(plain), _median_time(corrected), _median_time(reused)
        print(f"[sampling step] {name}, {batch} images, {side}x{side} latents, CFG: plain {a:.3f} s, with self-correction "
              f"at the mid block {b:.3f} s -> {b / a:.2f}x plain; gradient refreshed every 2nd step (refresh_every=2): "
              f"{(b + c) / 2:.3f} s per step on average -> {(b + c) / 2 / a:.2f}x plain")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["probe", "sample"])
    parser.add_argument("--no-sd21", action="store_true", help="skip the SD-2.1-sized U-Net")
    parser.add_argument("--septuples", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(__import__("os").environ.get("DPT_THREADS", "2")))
    if args.what == "probe":
        bench_probe(sd21=not args.no_sd21, septuples=args.septuples)
    else:
        bench_sample(sd21=not args.no_sd21)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
