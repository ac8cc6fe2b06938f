# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (dpt)
#     language: python
#     name: dpt
# ---

# %% [markdown]
# *Exercise version of `notebooks/00_toy_world.py`, written by `make exercises`: do not edit it here.
# Where a cell says `# Write your code here.`, write the code; the check after it says
# "not attempted yet" until you do, then whether your answer agrees with the library.*

# %% [markdown]
# # 00 · The toy world
#
# DPT (Qu et al., CVPR 2024) probes and tunes a text-to-image diffusion model with two
# discriminative tasks: **image-text matching** on MS-COCO captions and **referring-expression
# comprehension** on RefCOCO/+/g, and it grades generated images with detector-based scores
# (GLIP, UniDet) and CLIP/BLIP similarities. None of those data sets or models can be downloaded
# on the machines this repository is tested on, so the repository carries a world of its own:
#
# | paper | toy world |
# |---|---|
# | MS-COCO images + captions | scenes of 1-3 coloured shapes, each with ≥ 4 captions made from its description |
# | RefCOCO/+/g | referring expressions that pick out one object uniquely, with its box |
# | GLIP / UniDet detection scores | an **oracle** that reads an image back into objects and checks a prompt exactly |
# | CC-500 (out of distribution) | colour-shape pairs never seen in training, used only in prompts |
# | ABC-6K, COCO-NSS1K, T2I-CompBench | toy-ABC, toy-NSS, toy-CompBench (every prompt with its exact spec) |
#
# Everything below is produced by `dptlib.toy.world` and `dptlib.toy.prompts`; this notebook only
# calls them and shows the results. The same downstream code reads real COCO / RefCOCO files.

# %% [markdown]
# **In this lesson you will**
# - see what each of the paper's data sets and graders becomes in the toy world (the table above);
# - turn one scene into its captions, referring expressions and image, and write them in the real
#   formats (COCO captions, MDETR refexp) that the rest of the repository reads;
# - read images back with the **oracle** and check that it is exact on renders;
# - find out, in the exercise, why every hard negative must be checked before it is called false;
# - judge whether the oracle is exact enough to grade a generated image.
#
# *Prerequisites:* Python and numpy; no earlier notebook. *Time on 2 CPU cores:* toy scale
# 1-1.5 min, smoke scale 16 s. *GPU:* not needed.

# %% tags=["parameters"]
scale = None  # "smoke" | "toy"; None reads $DPT_SCALE (default "toy")
seed = 0
image_size = 32
max_objects = 3
n_oracle_scenes = None  # None: the scale's preset (toy: 1000)
noise_levels = [0.0, 0.05, 0.1, 0.2]
blur_levels = [0.0, 0.5, 1.0]
n_benchmark_prompts = None
export_scenes = None

# %% tags=["nbval-ignore-output"]
# The run's settings, checked before any work, in one line
from dptlib import checks, config
from dptlib.experiments import report

params = checks.notebook_parameters("00_toy_world", globals())
report.set_theme()
print(config.run_summary(params))

# %%
# The libraries this lesson uses: the toy world, its prompts, and the real formats' readers
import dataclasses
import json

import numpy as np
import pandas as pd
from IPython.display import display

from dptlib.data.coco import read_coco_captions, read_refexp
from dptlib.teaching import checks as teaching
from dptlib.teaching import quiz
from dptlib.toy.model import colour_swap
from dptlib.toy.prompts import TOY_BENCHMARKS, toy_benchmark
from dptlib.toy.world import ToyWorld, ToyWorldConfig, corrupt, export_world, oracle_accuracy, parse_image, score

# %% [markdown]
# ## Scenes and captions
#
# A scene is a structured description (shape, colour, size and box of each object); the renderer
# draws it and the caption generator speaks about it. Every caption is a `PromptSpec`, the exact
# meaning the oracle checks later: single object, single object with size, counting, two-object
# conjunction, and a spatial relation (between two objects, or one object's place in the image).

# %%
world = ToyWorld(ToyWorldConfig(image_size=params.image_size, max_objects=params.max_objects, seed=params.seed))
scenes = world.scenes("train", 12)
for spec in world.captions(scenes[0]):
    print(f"{spec.category:12s} {spec.text}")

# %%
# The scenes drawn, each with its first captions
captions = [world.captions(s) for s in scenes]
figure = report.image_grid(
    [world.render(s) for s in scenes],
    titles=["\n".join(c.text for c in caps[-2:]) for caps in captions],
    ncols=6,
)
report.save_figure(figure, "toy_world_samples", params.scale)

# %% [markdown]
# ## Referring expressions
#
# For every object, the expressions that pick it out and nothing else ("the red circle", "the
# square on the left", "the large triangle"), each with the object's box: the RefCOCO role.

# %%
shown, titles, boxes = [], [], []
for scene in scenes[:6]:
    for obj, refs in zip(scene.objects, world.referring_expressions(scene)):
        shown.append(world.render(scene))
        titles.append(refs[-1].text)
        boxes.append([obj.box])
figure = report.image_grid(shown[:12], titles[:12], boxes[:12], ncols=6)
report.save_figure(figure, "toy_world_refexp", params.scale)

# %% [markdown]
# ## Held-out pairs: the out-of-distribution setting
#
# Some colour-shape pairs never occur in training, validation or test scenes nor in their
# captions; toy-CC asks for them (the CC-500 role). The `ood` split shows what they look like.

# %%
print("held out:", ", ".join(f"{c} {s}" for c, s in world.config.held_out))
ood = world.scenes("ood", 6)
figure = report.image_grid([world.render(s) for s in ood], [world.captions(s)[0].text for s in ood], ncols=6)

# %% [markdown]
# ## The real formats
#
# The world writes itself out as MS-COCO captions, COCO instances and MDETR's RefCOCO JSON, and the
# readers in `dptlib.data` (the ones that read the real files) read it back.

# %%
export_root = config.runs_dir(params.scale) / "toyworld"
paths = export_world(world, export_root, splits=("train", "val", "test"), n=params.export_scenes)
read_back = pd.DataFrame(
    {
        split: {
            "images": len(read_coco_captions(p["captions"])),
            "captions": sum(len(i.captions) for i in read_coco_captions(p["captions"])),
            "referring expressions": len(read_refexp(p["refexp"])),
        }
        for split, p in paths.items()
    }
).T
read_back

# %%
# One image record of the exported refexp file, as MDETR writes it
print(json.dumps(json.loads(paths["train"]["refexp"].read_text())["images"][0], indent=1))

# %% [markdown]
# ## The oracle
#
# `parse_image` reads an RGB image back into objects: a pixel's colour is the palette colour whose
# direction from the background is closest (so a colour faded into the background keeps its name),
# connected regions are objects, and each region's shape and size come from the blurred template
# that fits it best in least squares. `score(spec, image)` then checks a prompt's spec:
# **presence** (every asked-for shape is there), **binding** (every asked-for object is there with
# all its attributes), **count** (exactly as many as asked) and **spatial** (the relation holds).
#
# Generated images are not clean renders, so the oracle is tested on blurred and noisy renders too.

# %%
# One scene read back from its clean render and from a blurred, noisy one; then a caption scored on the noisy one
scene = scenes[1]
clean, noisy = world.render(scene), corrupt(world.render(scene), noise_std=0.1, blur_sigma=1.0, seed=1)
for name, image in (("clean", clean), ("blur 1 px + noise 0.1", noisy)):
    print(name, [o.describe() for o in parse_image(image, world.config)])
print("truth", [o.describe() for o in scene.objects])
spec = world.captions(scene)[-1]
print(spec.text, score(spec, noisy, world.config))

# %%
# The oracle on the test scenes at each blur and noise level: scenes read exactly, and captions scored correct
test_scenes = world.scenes("test", params.n_oracle_scenes)
rows = []
for blur in params.blur_levels:
    for noise in params.noise_levels:
        accuracy = oracle_accuracy(world, test_scenes, noise_std=noise, blur_sigma=blur)
        rows.append({"blur (px)": blur, "noise std": noise, "scenes read exactly": accuracy["scene"],
                     "captions scored correct": accuracy["captions"]})
oracle_table = pd.DataFrame(rows).set_index(["blur (px)", "noise std"])
report.save_table(oracle_table, "oracle_noise", params.scale)
oracle_table

# %% [markdown]
# On clean renders the oracle must be exact (a unit test checks 100 % on 1,000 scenes);
# the table shows how it degrades as images get blurrier and noisier.

# %%
# Exact on clean renders
assert oracle_table.loc[(0.0, 0.0), "scenes read exactly"] == 1.0

# %% [markdown]
# ### Exercise: a negative that is false
#
# `01_probing` teaches the adapter to tell a caption from its *hard negative*, a minimal edit of
# it, and a negative teaches something only if it is false of the image. Write
# `swap_colours(spec)`: the same prompt spec with the colours of its two objects swapped
# (`dataclasses.replace(x, colour=...)` makes a changed copy of a frozen dataclass such as an
# `ObjectSpec`). The check tries it on every two-colour caption of 50 test scenes that the oracle
# scores correct, and asks the oracle how many swapped captions are still true of their scene.
# Which are they, and why?

# %%
def swap_colours(spec):
    """The PromptSpec of a two-object prompt with the two objects' colours swapped."""
    # Write your code here.


# %%
# The check, and how many swapped captions the oracle still finds true
teaching.check_swap_colours(swap_colours, world, world.scenes("test", 50))

# %% [markdown]
# ### Exercise: when is a box a hit?
#
# REC P@1 (Tab. 3) counts a referring expression as grounded when the predicted box overlaps the
# referred object's box with an intersection over union
# $\mathrm{IoU}(a, b) = |a \cap b| \,/\, |a \cup b| \ge 0.5$. Write `iou(a, b)` for two boxes
# $(x_0, y_0, x_1, y_1)$; the check compares it with `dptlib.method.losses.box_iou`, which the grounding
# loss (Eq. 7) and REC P@1 use. The table then slides the first object's box sideways: how far
# off may a predicted box be and still count?

# %%
def iou(a, b):
    """|a ∩ b| / |a ∪ b| of two (x0, y0, x1, y1) boxes."""
    # Write your code here.


# %%
# The check, then one object's box slid sideways
if teaching.check_iou(iou) == teaching.CORRECT:
    box = scenes[0].objects[0].box
    side = box[2] - box[0]
    shifts = sorted({round(side * f) for f in (0, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 1)})
    slid = pd.DataFrame({"IoU": [iou(box, (box[0] + s, box[1], box[2] + s, box[3])) for s in shifts]},
                        index=pd.Index(shifts, name=f"shift in pixels (box {side} wide)"))
    display(slid.assign(hit=slid["IoU"] >= 0.5).round(3))

# %% [markdown]
# ## Toy benchmarks
#
# Each prompt carries its spec. `world.realize(spec)` draws a scene that satisfies it; the oracle
# must score every such "real image" correct, a check that the prompts are well-formed.

# %%
# Every toy benchmark's prompts, each realized as a scene and scored by the oracle (which must find every one correct)
benchmarks = {name: toy_benchmark(name, world.config, n=params.n_benchmark_prompts, seed=params.seed) for name in TOY_BENCHMARKS}
realized = {
    name: np.mean([score(p.spec, world.render(world.realize(p.spec, i)), world.config)["correct"] for i, p in enumerate(prompts)])
    for name, prompts in benchmarks.items()
}
print("oracle on realized prompts:", realized)

# %%
# The benchmarks' prompts per distribution and category
benchmark_table = (
    pd.DataFrame([{"benchmark": n, "category": p.category, "distribution": p.distribution} for n, ps in benchmarks.items() for p in ps])
    .groupby(["benchmark", "distribution", "category"]).size().rename("prompts").to_frame()
)
report.save_table(benchmark_table, "toy_benchmarks", params.scale)
benchmark_table

# %%
# Three prompts of each benchmark
for name, prompts in benchmarks.items():
    print(f"{name:14s}", " | ".join(p.prompt for p in prompts[:: max(1, len(prompts) // 3)][:3]))

# %% [markdown]
# ### Exercise (judgement): can the oracle grade a generated image?
#
# Generated images are not clean renders: edges blur and colours speckle. Look only at the two
# extremes of the oracle table above (clean, and the blurriest, noisiest corner) and predict: in
# the corner, does the oracle still read *most* scenes exactly (*yes* or *no*)? Then run the next
# cell and explain which of the oracle's readings (colour, shape, size) you think fails first.

# %%
# Your prediction, before the result
prediction = None  # "yes" or "no"
reason = ""
# Write your code here.

# %%
# The corner of the table, beside the clean renders
teaching.check_prediction(prediction, ["yes", "no"])
corner = (max(params.blur_levels), max(params.noise_levels))
oracle_table.loc[[(0.0, 0.0), corner]]

# %% [markdown]
# ## Quiz
#
# Three questions; answer each with its letter.

# %%
# The questions
print(quiz.show("00_toy_world"))

# %%
# Your answers
answers = {1: None, 2: None, 3: None}  # your letters, e.g. {1: "a", ...}
# Write your code here.

# %%
# The check: one line per question
quiz.check("00_toy_world", answers)
