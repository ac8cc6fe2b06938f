"""Baselines. Zero-shot discrimination (Tab. 3): generative scoring by denoising error, and CLIP;
generation (Tab. 1): Attend-and-Excite.

* **Diffusion Classifier** (Li et al., 2023): s(x, y) = -E_t ||eps - eps_theta(z_t, t, y)||^2 over a
  set of timesteps, with the same noise for every candidate.
* **DiffusionITM** (Krojer et al., 2023): the same error minus the unconditional one,
  err(x, y) - err(x, empty), which removes how hard an image is to denoise at all (it matters for
  text -> image retrieval; for image -> text the term is a constant).
* **Local denoising** (App. B.3.3): for REC, the denoising error conditioned on the expression,
  measured inside each proposal's region of the latent; the proposal with the smallest error wins.
* **CLIP**: cosine similarity (ITM) and crop-and-match over proposals (REC). In the toy world the
  evaluator CLIP stands in for CLIP / OpenCLIP.
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import torch
import torch.nn.functional as F

from dptlib.method.backbone import add_noise, encode_text, image_noise


def evenly_spaced_timesteps(n: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """``n`` timesteps spread over [0, T) (centres of n equal bins)."""
    return ((torch.arange(n) + 0.5) * num_train_timesteps / n).long()


class DenoisingScorer:
    """Denoising-error scores of (image, caption) pairs with a frozen Stable Diffusion.

    ``timesteps``: the timesteps averaged over (Diffusion Classifier's default is 500 per
    candidate in its zero-shot setting; DiffusionITM uses 10). ``normalize=True`` gives
    DiffusionITM, False the Diffusion Classifier. Noise is seeded by (image, timestep) only, so
    every candidate of a query sees the same noise.
    """

    def __init__(self, backbone, data, latents, timesteps: torch.Tensor, normalize: bool = False, seed: int = 0, batch: int = 128):
        self.backbone, self.data, self.latents = backbone, data, latents
        self.timesteps, self.normalize, self.seed, self.batch = timesteps, normalize, seed, batch
        self._unconditional: dict[int, float] = {}
        self._conditional: dict[tuple[int, int], float] = {}  # (image, caption) -> error, shared by normalized()

    def normalized(self) -> DenoisingScorer:
        """DiffusionITM on this Diffusion Classifier's errors: the same timesteps and noise, and
        the (image, caption) errors already computed are not computed again."""
        twin = copy.copy(self)
        twin.normalize = True
        return twin

    def _noise(self, image: int, t: int) -> torch.Tensor:
        return image_noise(self.latents.shape[1:], self.seed, [image * 1009 + int(t)])[0]  # one draw per (image, t)

    @torch.no_grad()
    def errors(self, images: list[int], texts: list[str], region: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared denoising error (P,) of each (image, text) over the timesteps.
        ``region`` (P, h, w), if given, restricts the error to a mask of the latent; (P, K, h, w)
        gives K masked errors of each pair from its one denoising pass: (P, K)."""
        unet, device = self.backbone.unet, self.backbone.device
        pairs = [(p, int(t)) for p in range(len(images)) for t in self.timesteps]
        total = torch.zeros(len(images), *(region.shape[1:-2] if region is not None else ()))
        hidden, _ = encode_text(self.backbone, texts)
        for start in range(0, len(pairs), self.batch):
            chunk = pairs[start : start + self.batch]
            index = torch.tensor([p for p, _ in chunk])
            t = torch.tensor([t for _, t in chunk])
            noise = torch.stack([self._noise(images[p], t) for p, t in chunk])
            z = add_noise(self.backbone, self.latents[[images[p] for p, _ in chunk]], t, noise)
            predicted = unet(z.to(device), t.to(device), encoder_hidden_states=hidden[index.to(device)]).sample.cpu()
            squared = (predicted - noise).pow(2).mean(1)  # (n, h, w)
            if region is not None:
                mask = region[index].float()  # (n, h, w) or (n, K, h, w)
                squared = squared if mask.dim() == 3 else squared[:, None]
                error = (squared * mask).flatten(-2).sum(-1) / mask.flatten(-2).sum(-1).clamp(min=1)
            else:
                error = squared.flatten(1).mean(1)
            total.index_add_(0, index, error)
        return total / len(self.timesteps)

    def score_pairs(self, images: list[int], captions: list[int]) -> torch.Tensor:
        """Higher is better: minus the (normalised) denoising error."""
        missing = list(dict.fromkeys((i, c) for i, c in zip(images, captions) if (i, c) not in self._conditional))
        if missing:
            found = self.errors([i for i, _ in missing], [self.data.captions[c] for _, c in missing])
            self._conditional.update(zip(missing, found.tolist()))
        error = torch.tensor([self._conditional[i, c] for i, c in zip(images, captions)])
        if self.normalize:
            missing = sorted({i for i in images if i not in self._unconditional})
            if missing:
                for i, e in zip(missing, self.errors(missing, [""] * len(missing))):
                    self._unconditional[i] = float(e)
            error = error - torch.tensor([self._unconditional[i] for i in images])
        return -error


def proposals(data) -> dict[int, torch.Tensor]:
    """Candidate boxes per image for REC baselines: the distinct boxes of its referred objects
    (ground-truth object proposals, as crop-based REC evaluations use)."""
    return data.object_boxes()


def _latent_masks(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(K, h, w) masks of normalised (cx, cy, w, h) boxes on an h x w latent grid."""
    ys = (torch.arange(h) + 0.5)[:, None] / h
    xs = (torch.arange(w) + 0.5)[None, :] / w
    cx, cy, bw, bh = boxes.unbind(-1)
    return ((xs[None] >= (cx - bw / 2)[:, None, None]) & (xs[None] <= (cx + bw / 2)[:, None, None])
            & (ys[None] >= (cy - bh / 2)[:, None, None]) & (ys[None] <= (cy + bh / 2)[:, None, None]))


def local_denoising_boxes(scorer: DenoisingScorer, expressions: list[int]) -> torch.Tensor:
    """REC by local denoising: the proposal whose region the expression denoises best. The
    expression's denoising pass over its image is one; each proposal's mask reads its error map."""
    candidates = proposals(scorer.data)
    h, w = scorer.latents.shape[-2:]
    out = []
    for e in expressions:
        image = int(scorer.data.expression_image[e])
        boxes = candidates[image]
        errors = scorer.errors([image], [scorer.data.expressions[e]], _latent_masks(boxes, h, w)[None])[0]  # (K,)
        out.append(boxes[errors.argmin()])
    return torch.stack(out)


class CLIPScorer:
    """ITM by CLIP cosine, REC by crop-and-match; ``embed`` from :func:`dptlib.data.embedders.clip_embedder`."""

    def __init__(self, embed, data):
        self.embed, self.data = embed, data

    def score_pairs(self, images: list[int], captions: list[int]) -> torch.Tensor:
        image_emb, text_emb = self.embed(self.data.images[images], [self.data.captions[c] for c in captions])
        return (image_emb * text_emb).sum(-1)

    def predict_boxes(self, expressions: list[int]) -> torch.Tensor:
        candidates = proposals(self.data)
        out = []
        for e in expressions:
            image = int(self.data.expression_image[e])
            boxes = candidates[image]
            crops = crop_and_resize(self.data.images[image], boxes)
            image_emb, text_emb = self.embed(crops, [self.data.expressions[e]])
            out.append(boxes[(image_emb @ text_emb[0]).argmax()])
        return torch.stack(out)


def crop_and_resize(image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crops (K, 3, H, W) of image (3, H, W) at normalised (cx, cy, w, h) boxes, resized to H x W."""
    _, h, w = image.shape
    crops = []
    for cx, cy, bw, bh in boxes.tolist():
        x0, x1 = int(np.floor((cx - bw / 2) * w)), int(np.ceil((cx + bw / 2) * w))
        y0, y1 = int(np.floor((cy - bh / 2) * h)), int(np.ceil((cy + bh / 2) * h))
        crop = image[:, max(0, y0) : max(y0 + 1, y1), max(0, x0) : max(x0 + 1, x1)]
        crops.append(F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False)[0])
    return torch.stack(crops)


def rec_chance(data, expressions: list[int] | None = None) -> float:
    """Precision@1 (%) of picking one of an image's proposals at random."""
    candidates = proposals(data)
    expressions = list(range(len(data.expressions))) if expressions is None else expressions
    return 100 * float(np.mean([1 / len(candidates[int(data.expression_image[e])]) for e in expressions]))


# --------------------------------------------------------------------------------------------
# Attend-and-Excite (Chefer et al., 2023): a generation baseline of Tab. 1
# --------------------------------------------------------------------------------------------
def attend_and_excite_pipeline(pipe):
    """diffusers' ``StableDiffusionAttendAndExcitePipeline`` on the same modules as ``pipe`` (shared,
    not copied): the same base model, only the sampling loop differs."""
    from diffusers import StableDiffusionAttendAndExcitePipeline  # deferred: heavy

    accepted = inspect.signature(StableDiffusionAttendAndExcitePipeline.__init__).parameters
    parts = {k: v for k, v in pipe.components.items() if k in accepted}
    excite = StableDiffusionAttendAndExcitePipeline(**parts, requires_safety_checker=False)
    excite.set_progress_bar_config(disable=True)  # generate() has its own bar
    return excite


def subject_token_indices(tokenizer, prompt: str, subjects: list[str]) -> list[int]:
    """Positions of the subject words (singular or plural) in ``prompt``'s token ids: the tokens
    whose cross-attention Attend-and-Excite strengthens."""
    tokens = [t.removesuffix("</w>") for t in tokenizer.convert_ids_to_tokens(tokenizer(prompt).input_ids)]
    forms = {form for word in subjects for form in (word, word + "s", word + "es")}
    indices = [i for i, token in enumerate(tokens) if token in forms]
    if not indices:
        raise ValueError(f"none of {subjects} is a token of {prompt!r}")
    return indices


def attend_and_excite_arguments(tokenizer, prompts, num_inference_steps: int, attn_res: tuple[int, int] | None = None) -> dict:
    """Keyword arguments of :func:`dptlib.method.sampling.generate` for Attend-and-Excite on benchmark
    prompts with specs: the object (shape) tokens of each prompt, and the paper's schedule
    (refinement at 0 %, 20 %, 40 % of the steps, gradient steps during the first half) scaled
    to ``num_inference_steps``."""
    steps = num_inference_steps
    thresholds = {0: 0.05, round(0.2 * steps): 0.5, round(0.4 * steps): 0.8}
    indices = [subject_token_indices(tokenizer, p.prompt, [o.shape for o in p.spec.objects]) for p in prompts]
    return dict(per_prompt={"token_indices": indices}, max_iter_to_alter=steps // 2, thresholds=thresholds,
                **({"attn_res": attn_res} if attn_res else {}))
