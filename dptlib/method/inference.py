"""Inference with a trained adapter: ITM scores s(z_t, y) (Eq. 3) and REC boxes (§3.1) for the
images of a :class:`dptlib.data.discrimination.DiscriminationData`, as the discrimination tables use them."""

from __future__ import annotations

import torch

from dptlib.method.backbone import add_noise, encode_text, extract_features, image_noise
from dptlib.method.losses import matching_similarity, predicted_boxes


class DPTScorer:
    """ITM scores s(z_t, y) and REC boxes from a probed (or tuned) model at a fixed timestep.

    Each image gets one fixed noise sample (seeded by its index), so all candidates of a query are
    compared on the same z_t. ``rec_rule``: how the object query is chosen
    (:func:`dptlib.method.losses.query_choice_scores`).

    ``cache``: a dict shared by scorers of one frozen U-Net (stage 1, its validations, a control
    adapter on the same queries). The U-Net part of a batch of pairs, the features (Eq. 1) and the
    pooled text embedding, depends on the images, texts, block(s), timestep and seed only, not on the
    adapter; with a cache it is computed once and the adapter reads the kept tensors, so the
    scores are the same to the bit (the same batches go through the same kernels). Never share one
    across a change of the U-Net's weights (stage 2's LoRA)."""

    def __init__(self, backbone, adapter, blocks, data, latents, timestep: int = 250, seed: int = 0,
                 rec_rule: str = "grounding+text", cache: dict | None = None):
        # the adapter goes where the backbone is (a checkpoint loads on the CPU)
        self.backbone, self.adapter, self.blocks, self.data = backbone, adapter.eval().to(backbone.device), blocks, data
        self.latents, self.timestep, self.seed, self.rec_rule, self.cache = latents, timestep, seed, rec_rule, cache

    def noisy_latents(self, images: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """z_t (n, 4, h, w) of the images at the scorer's timestep, and the timesteps (n,)."""
        noise = image_noise(self.latents.shape[1:], self.seed, images)
        t = torch.full((len(images),), self.timestep)
        return add_noise(self.backbone, self.latents[images], t, noise).to(self.backbone.device), t.to(self.backbone.device)

    @torch.no_grad()
    def unet_part(self, images: list[int], texts: list[str]):
        """The U-Net's features of the pairs (Eq. 1; see :func:`dptlib.method.backbone.extract_features`),
        the timesteps (n,) and the pooled text embeddings (n, d): what the adapter reads."""
        key = (repr(self.blocks), self.timestep, self.seed, tuple(images), tuple(texts))
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        z, t = self.noisy_latents(images)
        hidden, pooled = encode_text(self.backbone, texts)
        found = extract_features(self.backbone.unet, z, t, hidden, self.blocks), t, pooled
        if self.cache is not None:
            self.cache[key] = found
        return found

    @torch.no_grad()
    def _outputs(self, images: list[int], texts: list[str]):
        features, t, pooled = self.unet_part(images, texts)
        return self.adapter(features, t), pooled

    def score_pairs(self, images: list[int], captions: list[int]) -> torch.Tensor:
        out, pooled = self._outputs(images, [self.data.captions[c] for c in captions])
        return matching_similarity(out.match_embeddings, pooled).cpu()

    def predict_boxes(self, expressions: list[int], rule: str | None = None) -> torch.Tensor:
        images = [int(self.data.expression_image[e]) for e in expressions]
        out, pooled = self._outputs(images, [self.data.expressions[e] for e in expressions])
        return predicted_boxes(out.grounding_logits, out.boxes, out.semantic_embeddings, pooled, self.adapter.logit_scale,
                               rule or self.rec_rule).cpu()
