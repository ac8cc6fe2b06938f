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
# # 01 · Stage 1: discriminative probing (§3.1)
#
# *How powerful are the discriminative abilities of a text-to-image model?* DPT answers by putting
# a small adapter on one U-Net block and training only the adapter, on two tasks: image-text
# matching (global) and referring-expression comprehension (local). The U-Net stays frozen, so what
# the adapter finds was already in the features.
#
# Here the model is the toy world's Stable Diffusion (`00b_base_model`), the ITM data are toy
# scenes with their captions (the MS-COCO role), and the REC data their referring expressions
# (RefCOCO/+/g). Hard negatives are mined with the evaluator CLIP (OpenCLIP ViT-H-14 in the paper).

# %% tags=["parameters"]
scale = None  # "smoke" | "toy"; None reads $DPT_SCALE (default "toy")
blocks = "mid"
steps = None
batch_size = None
eval_timestep = 250
timesteps = [0, 250, 500, 750, 999]
n_train_images = None
n_test_images = None
classifier_timesteps = None
itm_timesteps = 10
seed = 0

# %%
import time

import pandas as pd
import seaborn as sns

from dptlib import config, report
from dptlib.backbone import load_backbone
from dptlib.baselines import CLIPScorer, DenoisingScorer, evenly_spaced_timesteps, local_denoising_boxes, rec_chance
from dptlib.data import toy_discrimination_data
from dptlib.metrics import DPTScorer, itm_accuracy, itm_test_set, rec_precision
from dptlib.toymodel import TOY_SD_DIR
from dptlib.train import ProbeConfig, cache_latents, load_adapter, probe

params = config.notebook_parameters(
    "01_probing", scale=scale, blocks=blocks, steps=steps, batch_size=batch_size, eval_timestep=eval_timestep,
    timesteps=timesteps, n_train_images=n_train_images, n_test_images=n_test_images,
    classifier_timesteps=classifier_timesteps, itm_timesteps=itm_timesteps, seed=seed,
)
config.set_threads()
report.set_theme()
run_dir = config.runs_dir(params.scale) / "probe"
params

# %% [markdown]
# ## Data: ITM septuples and referring expressions (App. B.1)
#
# The toy world is written out in the real formats (COCO captions, MDETR refexp) and read back by
# the same reader a COCO user would use. For every image the evaluator CLIP retrieves the top-20
# most similar *other* captions, and for every caption the top-4 other images: the hard negatives.

# %%
train, test, embed = toy_discrimination_data(config.runs_dir(params.scale) / "toyworld", params.n_train_images,
                                            params.n_test_images, seed=params.seed)
pd.DataFrame({name: {"images": len(d), "captions": len(d.captions), "expressions": len(d.expressions)}
              for name, d in (("train", train), ("test", test))})

# %%
image = int(test.expression_image[0])
print("caption:       ", test.captions[int((test.caption_image == image).nonzero()[0])])
print("hard negatives:", [test.captions[int(c)] for c in test.hard_captions[image, :3]])

# %% [markdown]
# ## Probing
#
# Each step samples septuples $(x, y', y, y^{neg}, x^{neg}, y^{rand}, x^{rand})$ and sends all six
# image-text pairs through **one** U-Net call that stops after the probed block (Eq. 1). The adapter
# (Eq. 2) is trained with
#
# $$\mathcal{L} = \mathbb{E}_{x, \epsilon, t}\left(\mathcal{L}^{match}_t + \mathcal{L}^{ground}_t\right)$$
#
# (Eq. 8), where $\mathcal{L}^{match} = \mathcal{L}^{T\to I} + \mathcal{L}^{I\to T}$ contrasts
# $s(\mathbf{z}, y) = \max_i \cos(\mathrm{CLIP}(y), \mathbf{h}_i)$ over the septuple's negatives
# (Eq. 3-4) and $\mathcal{L}^{ground}$ matches one object query to the referred box (Eq. 5-7).

# %% [markdown]
# At the toy scale the adapter keeps the paper's structure (1 encoder + 1 decoder layer, learned
# 2-D position and timestep embeddings, M matching queries) but is narrower: d = 128, FFN 512,
# N = 40 queries of which M = 8 match; toy scenes hold at most 3 objects and the toy U-Net's
# middle block is 4×4. The paper-scale presets keep d = 256, FFN 2048, N = 110, M = 10.

# %%
probe_config = ProbeConfig.preset(params.scale if params.scale in ProbeConfig.PRESETS else "toy", blocks=params.blocks,
                                   steps=params.steps, batch_size=params.batch_size, seed=params.seed)
backbone = load_backbone(str(TOY_SD_DIR))
start = time.time()
result = probe(probe_config, train, run_dir, backbone=backbone)
print(f"{probe_config.steps} steps in {time.time() - start:.0f} s; probed block(s): {result['blocks']}")

# %%
log = pd.DataFrame(result["log"]).melt(id_vars="step", value_vars=["matching", "grounding"], var_name="loss")
grid = sns.relplot(data=log, x="step", y="value", col="loss", kind="line", height=2.6, facet_kws={"sharey": False})
report.save_figure(grid.figure, "probe_loss", params.scale)

# %% [markdown]
# ## Tab. 3 analogue: discrimination of the frozen model
#
# ITM follows the paper's HN-MSCOCO protocol: each image against its caption and 3 of its mined
# hard negatives (I→T), each caption against its image and 3 hard-negative images (T→I).
# REC is precision@1 at IoU ≥ 0.5. Baselines: Diffusion Classifier (denoising error over
# timesteps, same noise for every candidate), DiffusionITM (minus the unconditional error),
# local denoising for REC, and the evaluator CLIP (cosine for ITM, crop-and-match for REC).
# The REC baselines choose among ground-truth object proposals, DPT predicts a box freely.

# %%
adapter, probed_blocks, _ = load_adapter(run_dir)
test_latents = cache_latents(backbone, test.images)
itm_test = itm_test_set(test, n_negatives=3, seed=params.seed)
dpt = DPTScorer(backbone, adapter, probed_blocks, test, test_latents, timestep=params.eval_timestep, seed=params.seed)
classifier = DenoisingScorer(backbone, test, test_latents, evenly_spaced_timesteps(params.classifier_timesteps), seed=params.seed)
diffusion_itm = DenoisingScorer(backbone, test, test_latents, evenly_spaced_timesteps(params.itm_timesteps), normalize=True,
                                seed=params.seed)
clip = CLIPScorer(embed, test)
rows = {
    "Random chance": {"I->T": 25.0, "T->I": 25.0, "overall": 25.0, "REC P@1": rec_chance(test)},
    "CLIP (evaluator, zero-shot)": {**itm_accuracy(clip.score_pairs, itm_test), "REC P@1": rec_precision(clip.predict_boxes, test)},
    f"Diffusion Classifier ({params.classifier_timesteps} t)": itm_accuracy(classifier.score_pairs, itm_test),
    f"DiffusionITM ({params.itm_timesteps} t)": itm_accuracy(diffusion_itm.score_pairs, itm_test),
    f"Local denoising ({params.itm_timesteps} t)": {
        "REC P@1": rec_precision(lambda e: local_denoising_boxes(diffusion_itm, e), test)},
    f"DPT stage 1 (t = {params.eval_timestep})": {**itm_accuracy(dpt.score_pairs, itm_test),
                                                   "REC P@1": rec_precision(dpt.predict_boxes, test)},
}
tab3 = pd.DataFrame(rows).T[["I->T", "T->I", "overall", "REC P@1"]]
report.save_table(tab3.rename_axis("method"), "tab3_discrimination", params.scale, floatfmt=".1f")
tab3.round(1)

# %% [markdown]
# ## Tab. 10 analogue: the timestep at which the model is asked
#
# Larger $t$ means more noise on the image. The paper trains and tests at each timestep; here one
# adapter, trained on $t \sim U[0, 1000)$, is tested at each fixed $t$ (a cheaper variant).

# %%
rows = {}
for t in params.timesteps:
    scorer = DPTScorer(backbone, adapter, probed_blocks, test, test_latents, timestep=t, seed=params.seed)
    rows[t] = {**itm_accuracy(scorer.score_pairs, itm_test), "REC P@1": rec_precision(scorer.predict_boxes, test)}
tab10 = pd.DataFrame(rows).T.rename_axis("timestep")
report.save_table(tab10, "tab10_timesteps", params.scale, floatfmt=".1f")
tab10.round(1)
