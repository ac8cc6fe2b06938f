"""What a U-Net block's features hold: cheap linear probes before any adapter is trained.

The adapter can only find what the probed block's map carries. Before blaming the method for a
weak result, ask each block directly: pool its features over an object's box (or over the whole
map), fit a linear classifier on one part of the images, and read its accuracy on the rest.

    features of block l at t:  F (B, C, h, w) --pool over a box--> (B, C) --linear--> label

One U-Net pass yields every block's map (the hooks of :func:`dptlib.method.backbone.extract_features`),
so probing all blocks costs one forward per (image, text).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dptlib.method.backbone import add_noise, encode_text, extract_features, image_noise


def box_pool(features: torch.Tensor, boxes: torch.Tensor | None) -> torch.Tensor:
    """Mean of a feature map (B, C, h, w) over each box (B, 4) (normalised cx, cy, w, h): the
    cells whose centres fall inside, or the nearest cell for a box smaller than a cell.
    ``boxes=None`` pools the whole map. Returns (B, C)."""
    if boxes is None:
        return features.mean((2, 3))
    _, _, h, w = features.shape
    ys = ((torch.arange(h, device=features.device) + 0.5) / h)[None, :, None]
    xs = ((torch.arange(w, device=features.device) + 0.5) / w)[None, None, :]
    cx, cy, bw, bh = (v[:, None, None] for v in boxes.to(features.device).unbind(-1))
    inside = ((xs - cx).abs() <= bw / 2) & ((ys - cy).abs() <= bh / 2)  # (B, h, w)
    nearest = ((xs - cx).abs() + (ys - cy).abs()).flatten(1).argmin(1)  # fallback cell
    inside.view(len(boxes), -1)[torch.arange(len(boxes)), nearest] |= ~inside.flatten(1).any(1)
    mask = inside[:, None].float()
    return (features * mask).sum((2, 3)) / mask.sum((2, 3))


@torch.no_grad()
def pooled_block_features(backbone, latents: torch.Tensor, texts: list[str], blocks: list[str], timestep: int,
                          boxes: list[torch.Tensor | None], seed: int = 0, noise_ids: list[int] | None = None,
                          batch: int = 128) -> dict[str, list[torch.Tensor]]:
    """Features of every block in ``blocks`` for images at one timestep, pooled over boxes.

    latents (N, 4, h, w) clean VAE latents; texts: N conditioning texts (``""`` for none).
    Row n's noise is seeded by ``noise_ids[n]`` (default: n) and ``seed``: give the rows of one
    image the same id and it sees the same z_t under every text. ``boxes``: N tensors (K_n, 4)
    of boxes to pool row n's map over, or None for the whole map. Returns per block N tensors
    (K_n, C) (K_n = 1 for None).
    """
    noise_ids = list(range(len(latents))) if noise_ids is None else noise_ids
    out: dict[str, list[torch.Tensor]] = {b: [] for b in blocks}
    for start in range(0, len(latents), batch):
        rows = range(start, min(start + batch, len(latents)))
        noise = image_noise(latents.shape[1:], seed, [noise_ids[r] for r in rows])
        t = torch.full((len(rows),), timestep)
        z = add_noise(backbone, latents[start : rows.stop], t, noise).to(backbone.device)
        hidden, _ = encode_text(backbone, texts[start : rows.stop])
        features = extract_features(backbone.unet, z, t.to(backbone.device), hidden, blocks)
        for block, fmap in zip(blocks, features):
            for offset, row in enumerate(rows):
                row_boxes = boxes[row]
                out[block].append(box_pool(fmap[offset : offset + 1].expand(1 if row_boxes is None else len(row_boxes), -1, -1, -1),
                                           row_boxes).float().cpu())
    return out


def linear_probe_accuracy(features: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, test_fraction: float = 0.3,
                          weight_decay: float = 1e-3, seed: int = 0, max_iter: int = 50) -> dict[str, float]:
    """Held-out accuracy (%) of a multinomial logistic regression on standardised features.

    features (N, C), labels (N,) integer classes, groups (N,): rows of one group (e.g. one image)
    stay on the same side of the split, so a probe cannot recognise an image it trained on.
    Trained with ``max_iter`` L-BFGS iterations (enough for a linear model this small). Returns ``accuracy``, ``chance`` (the majority class's
    share of the test rows) and ``n_test``.
    """
    rng = np.random.default_rng(seed)
    unique = np.unique(groups.numpy())
    test_groups = set(rng.permutation(unique)[: max(1, round(test_fraction * len(unique)))].tolist())
    is_test = torch.tensor([int(g) in test_groups for g in groups])
    x_train, y_train = features[~is_test], labels[~is_test]
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    standardise = lambda x: (x - mean) / std  # noqa: E731
    classes = int(labels.max()) + 1
    torch.manual_seed(seed)
    linear = torch.nn.Linear(features.shape[1], classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(standardise(x_train)), y_train) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = linear(standardise(features[is_test])).argmax(1)
    y_test = labels[is_test]
    chance = float(torch.bincount(y_test, minlength=classes).max()) / max(1, len(y_test))
    return {"accuracy": 100 * float((predicted == y_test).float().mean()), "chance": 100 * chance, "n_test": int(is_test.sum())}


def held_out_r2(x: torch.Tensor, y: torch.Tensor, n_train: int) -> float:
    """R^2 on rows ``n_train:`` of a least-squares fit (with intercept) of y (N, K) from x (N, C)
    on rows ``:n_train``: the share of y's held-out variance a linear read-out of x explains."""
    x = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    y = y.double()
    weights = torch.linalg.lstsq(x[:n_train], y[:n_train]).solution
    residual = y[n_train:] - x[n_train:] @ weights
    return float(1 - residual.pow(2).sum() / (y[n_train:] - y[n_train:].mean(0)).pow(2).sum())


def _per_position(a: torch.Tensor, side: tuple[int, int]) -> torch.Tensor:
    """(N, K, h', w') -> (N * h * w, K): one row per position, resized (bilinear) to ``side`` = (h, w)."""
    a = a if tuple(a.shape[-2:]) == side else F.interpolate(a, size=side, mode="bilinear", align_corners=False)
    return a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])


@torch.no_grad()
def map_statistics(backbone, latents: torch.Tensor, texts: list[str], blocks: list[str], timestep: int, seed: int = 0) -> dict[str, dict]:
    """What the adapter's 1x1 input projection is handed: the raw scale of each block's map.

    latents (N, 4, h, w) clean VAE latents, noised at ``timestep`` (row n seeded by n and ``seed``)
    and conditioned on ``texts`` (N). For each block's map F (N, C, h_l, w_l), with m_nc the mean
    of image n's channel c over positions:

        offset  = median_c |mean_{n,y,x} F|        (a constant per channel, the same for every image;
                                                    "largest offset" is the max over channels)
        spread  = median_c std_{n,y,x} F           (how much a channel varies at all)
        within  = mean_{n,c} var_{y,x} F           (variation across positions of one image)
        between = mean_c var_n m_nc                (variation of the image mean between images)
        image share = between / (between + within)
        noise R2 / z0 R2 = held-out R^2 of a per-position linear read-out of the noise eps / the
                           clean latent z0 (both resized to the map's side) from the map's channels
                           (fit on the first half of the images, scored on the rest)

    The linear probes of ``linear_probe_accuracy`` standardise every feature, so a block whose map
    is small or offset reads as well as any; an adapter without ``input_norm`` takes the raw map.
    Returns {block: {"channels", "side", "RMS", "offset", "largest offset", "spread", "within", "between",
    "image share", "noise R2", "z0 R2"}}.
    """
    noise = image_noise(latents.shape[1:], seed, range(len(latents)))
    t = torch.full((len(latents),), timestep)
    z = add_noise(backbone, latents, t, noise).to(backbone.device)
    hidden, _ = encode_text(backbone, texts)
    maps = extract_features(backbone.unet, z, t.to(backbone.device), hidden, blocks)
    out = {}
    for block, fmap in zip(blocks, maps):
        f = fmap.float().cpu()
        within = float(f.var((2, 3)).mean())
        between = float(f.mean((2, 3)).var(0).mean())
        side = tuple(f.shape[-2:])
        n_train = (len(f) // 2) * side[0] * side[1]  # the positions of the first half of the images
        rows = _per_position(f, side)
        read_out = {"noise R2": held_out_r2(rows, _per_position(noise.float(), side), n_train),
                    "z0 R2": held_out_r2(rows, _per_position(latents.float().cpu(), side), n_train)}
        out[block] = {"channels": f.shape[1], "side": f.shape[2], "RMS": float(f.pow(2).mean().sqrt()),
                      "offset": float(f.mean((0, 2, 3)).abs().quantile(0.5)), "largest offset": float(f.mean((0, 2, 3)).abs().max()),
                      "spread": float(f.std((0, 2, 3)).quantile(0.5)),
                      "within": within, "between": between, "image share": between / (between + within), **read_out}
    return out
