"""The paper's method, standing alone: it imports :mod:`dptlib.config`, :mod:`dptlib.checks`
and :mod:`dptlib.data`, and nothing of the evaluation, the toy world or the experiments.

- ``adapter``: the discriminative adapter (a DETR-like decoder on one U-Net feature map);
- ``losses``: matching (Eq. 2-4), grounding (Eq. 5-7), denoising (Eq. 8);
- ``backbone``: the Stable Diffusion pieces, the U-Net run up to the probed block (early exit);
- ``train``: stage 1 (probing, Sec. 3.2) and stage 2 (tuning with LoRA, Sec. 3.3);
- ``sampling``: generation, and self-correction (Eq. 9);
- ``inference``: the adapter as a scorer (ITM, REC);
- ``checkpoint``: what is saved and how a killed run resumes.
"""
