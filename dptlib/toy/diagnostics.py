"""Linear probes of the toy U-Net's blocks (:mod:`dptlib.evaluation.feature_probe`) on tasks the toy world labels exactly.

| task | pooled over | text | label |
|---|---|---|---|
| colour, shape, size | the object's box | none ("") | the object's attribute |
| count | the whole map | none | number of objects |
| position | the whole map | none | left or right half (one-object scenes) |
| referent | each of two objects' boxes | an expression naming one of them | named or not |

The referent task is paired: in a scene with two or more objects, two expressions that name two
different objects, and both objects pooled under each, so every object is once "named" and once
"not named". Its chance level is 50 % and nothing visible in one object alone can beat it; only
what the expression changed in the features can. The blocks are probed at fixed timesteps with
the same noise for an image under every text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from dptlib.data.images import to_model_images
from dptlib.evaluation.feature_probe import linear_probe_accuracy, map_statistics, pooled_block_features
from dptlib.method.train import cache_latents
from dptlib.toy.world import SIZES, Scene, ToyWorld

TASKS = ("colour", "shape", "size", "count", "position", "referent")


def _box(obj, image_size: int) -> list[float]:
    x0, y0, x1, y1 = obj.box
    return [(x0 + x1) / 2 / image_size, (y0 + y1) / 2 / image_size, (x1 - x0) / image_size, (y1 - y0) / image_size]


def probe_inputs(world: ToyWorld, scenes: list[Scene], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The U-Net passes the probes need and their labels: ``passes`` (one per image and text:
    scene index, text, boxes to pool or None) and ``rows`` (one per label: pass, pooled box
    index, task, label, group = scene)."""
    cfg = world.config
    rng = np.random.default_rng([seed, 31])
    passes, rows = [], []
    for s, scene in enumerate(scenes):
        boxes = torch.tensor([_box(o, cfg.image_size) for o in scene.objects])
        p = len(passes)
        passes += [{"scene": s, "text": "", "boxes": boxes}, {"scene": s, "text": "", "boxes": None}]
        for k, obj in enumerate(scene.objects):
            rows.append({"pass": p, "box": k, "task": "colour", "label": list(cfg.colours).index(obj.colour), "group": s})
            rows.append({"pass": p, "box": k, "task": "shape", "label": list(cfg.shapes).index(obj.shape), "group": s})
            rows.append({"pass": p, "box": k, "task": "size", "label": SIZES.index(obj.size), "group": s})
        rows.append({"pass": p + 1, "box": 0, "task": "count", "label": len(scene.objects) - 1, "group": s})
        if len(scene.objects) == 1:
            rows.append({"pass": p + 1, "box": 0, "task": "position", "label": int(scene.objects[0].center[0] > cfg.image_size / 2),
                         "group": s})
        named = [k for k, refs in enumerate(world.referring_expressions(scene)) if refs]
        if len(named) >= 2:
            a, b = (named[int(i)] for i in rng.choice(len(named), 2, replace=False))
            refs = world.referring_expressions(scene)
            pair = boxes[[a, b]]
            for target in (a, b):
                text = refs[target][int(rng.integers(len(refs[target])))].text
                q = len(passes)
                passes.append({"scene": s, "text": text, "boxes": pair})
                rows.append({"pass": q, "box": 0, "task": "referent", "label": int(target == a), "group": s})
                rows.append({"pass": q, "box": 1, "task": "referent", "label": int(target == b), "group": s})
    return passes, rows


def block_probe_table(backbone, world: ToyWorld, scenes: list[Scene], blocks: list[str], timesteps: list[int],
                      seed: int = 0) -> pd.DataFrame:
    """Held-out linear-probe accuracy (%) per (timestep, block, task), with each task's chance.

    ``scenes`` should be validation scenes: the table informs a choice (the probed block)."""


    passes, rows = probe_inputs(world, scenes, seed)
    latents = cache_latents(backbone, to_model_images(np.stack([world.render(s) for s in scenes])))
    pass_latents = latents[[p["scene"] for p in passes]]
    results = []
    for t in timesteps:
        # the noise of a pass is seeded by its scene, so an image sees one z_t under every text
        pooled = pooled_block_features(backbone, pass_latents, [p["text"] for p in passes], blocks, t,
                                       [p["boxes"] for p in passes], seed=seed, noise_ids=[p["scene"] for p in passes])
        for block in blocks:
            for task in TASKS:
                chosen = [r for r in rows if r["task"] == task]
                x = torch.stack([pooled[block][r["pass"]][r["box"]] for r in chosen])
                y = torch.tensor([r["label"] for r in chosen])
                g = torch.tensor([r["group"] for r in chosen])
                score = linear_probe_accuracy(x, y, g, seed=seed)
                results.append({"timestep": t, "block": block, "task": task, **score})
    return pd.DataFrame(results)


def block_map_table(backbone, world: ToyWorld, scenes: list[Scene], blocks: list[str], timestep: int, seed: int = 0) -> pd.DataFrame:
    """:func:`dptlib.evaluation.feature_probe.map_statistics` of each block, one row per block, for the
    rendered ``scenes`` noised at ``timestep`` and conditioned on each scene's first caption."""
    latents = cache_latents(backbone, to_model_images(np.stack([world.render(s) for s in scenes])))
    texts = [world.captions(s)[0].text for s in scenes]
    return pd.DataFrame(map_statistics(backbone, latents, texts, blocks, timestep, seed=seed)).T.rename_axis("block")
