"""Figures drawn for the lessons (not results): the architecture of DPT.

``architecture_figure()`` draws the path of §3.1-3.3 as boxes and arrows, from the noisy latent
through the U-Net's early exit (Eq. 1) and the adapter (Eq. 2) to the ITM and REC heads (Eq. 3-7),
with the LoRA of stage 2 and the gradient of self-correction (Eq. 9) marked. ``01_probing`` and
``03_self_correction`` show it; ``figures/dpt_architecture.png`` is its committed drawing.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# (x, y) of each box's centre, its label and its colour role, in a 16 x 7 canvas
BOXES = {
    "z": ((1.3, 4.6), "noisy latent\n$\\mathbf{z}_t$", "input"),
    "y": ((1.3, 1.6), "text $y$", "input"),
    "text": ((4.6, 1.6), "text encoder\n$c_y$ (frozen)", "frozen"),
    "unet": ((4.6, 4.6), "U-Net blocks\ndown0 .. up1\n(+ LoRA, stage 2)", "tuned"),
    "F": ((7.9, 4.6), "feature map\n$\\mathbf{F}_t$ (Eq. 1)", "data"),
    "adapter": ((11.2, 4.6), "adapter (Eq. 2)\n+ position, $t$ embeddings\nencoder $\\to$ decoder\nwith $N$ queries", "adapter"),
    "itm": ((15.0, 5.7), "$M$ matching queries $\\mathbf{h}_i$\n$s$ = max$_i$ cos(CLIP($y$), $\\mathbf{h}_i$)\nITM (Eq. 3-4)", "head"),
    "rec": ((15.0, 3.2), "$N - M$ object queries\nboxes $\\hat b_j$, $p_j$, $\\mathbf{o}_j$\nREC (Eq. 5-7)", "head"),
    "clip": ((11.2, 1.6), "CLIP text embedding\n$\\mathrm{CLIP}(y)$, $\\mathrm{CLIP}(y')$", "frozen"),
}
COLOURS = {"input": "#f2f2f2", "frozen": "#d9e6f2", "tuned": "#d9e6f2", "data": "#ffffff", "adapter": "#fde2c8", "head": "#fde2c8"}
ARROWS = [("z", "unet"), ("y", "text"), ("text", "unet"), ("unet", "F"), ("F", "adapter"), ("adapter", "itm"),
          ("adapter", "rec"), ("clip", "itm"), ("clip", "rec")]


WIDTH, HEIGHT = 2.7, 1.45


def _edge(centre, towards):
    """Where the segment from a box's centre towards a point leaves the box."""
    (x, y), (u, v) = centre, towards
    dx, dy = u - x, v - y
    scale = min(WIDTH / 2 / abs(dx) if dx else float("inf"), HEIGHT / 2 / abs(dy) if dy else float("inf"))
    return x + dx * scale * 1.04, y + dy * scale * 1.04


def _box(ax, centre, text, role, width=WIDTH, height=HEIGHT):
    x, y = centre
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.05",
                                facecolor=COLOURS[role], edgecolor="#c0504d" if role == "tuned" else "#404040",
                                linestyle="--" if role == "tuned" else "-", linewidth=1.2))
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5)


def _arrow(ax, start, end, **style):
    ax.add_patch(FancyArrowPatch(_edge(start, end), _edge(end, start), arrowstyle="-|>", mutation_scale=12, shrinkA=0, shrinkB=0,
                                 **style))


def architecture_figure() -> plt.Figure:
    """DPT's path from latent and text to the ITM / REC heads, with stage 2's LoRA and Eq. 9's gradient."""
    figure, ax = plt.subplots(figsize=(12.5, 6))
    for centre, text, role in BOXES.values():
        _box(ax, centre, text, role)
    for start, end in ARROWS:
        _arrow(ax, BOXES[start][0], BOXES[end][0], color="#404040", linewidth=1.2)
    # self-correction (Eq. 9): the matching score's gradient flows back through adapter and U-Net to z_t
    ax.add_patch(FancyArrowPatch((15.0, 6.5), (1.3, 5.4), connectionstyle="arc3,rad=0.12", arrowstyle="-|>", mutation_scale=14,
                                 color="#c0504d", linewidth=1.6, linestyle="--"))
    ax.text(8.2, 7.25, "self-correction (Eq. 9): $\\mathbf{z}_t \\leftarrow \\mathbf{z}_t + \\eta\\, \\nabla_{\\mathbf{z}_t} s(\\mathbf{z}_t, y)$",
            ha="center", fontsize=9.5, color="#c0504d")
    ax.text(4.75, 3.6, "early exit after the probed block", ha="left", fontsize=7.5, style="italic")
    ax.text(0.1, 0.25, "stage 1 (probing): only the adapter and its heads train (orange); stage 2 (tuning): LoRA in the U-Net's "
            "attention (dashed red box) trains too", fontsize=8)
    ax.set(xlim=(-0.2, 16.6), ylim=(0, 8.1))
    ax.axis("off")
    return figure
