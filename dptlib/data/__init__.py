"""Data, below the method: the real annotation formats and what training draws from them.

- ``coco``: MS-COCO captions and MDETR's RefCOCO/+/g readers;
- ``images``: images as the models take them, and stores that stand in for a float tensor;
- ``discrimination``: one split of images, captions, expressions and hard negatives (App. B.1),
  and the septuples a training step draws;
- ``manifest``: the YAML manifest that names a user's real splits;
- ``embedders``: CLIP embedders (hard-negative mining, CLIP scores);
- ``prompt_sets``: the benchmark prompt sets (CC-500, ABC-6K, COCO-NSS1K, T2I-CompBench, TIFA).

Imports :mod:`dptlib.config` only.
"""
