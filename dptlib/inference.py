"""Inference with a trained adapter: ITM scores s(z_t, y) (Eq. 3) and REC boxes (§3.1) for the
images of a :class:`dptlib.data.DiscriminationData`, as the discrimination tables use them."""

from __future__ import annotations

import torch

from .backbone import add_noise, encode_text, extract_features, image_noise
from .losses import matching_similarity, predicted_boxes


class DPTScorer:
    """ITM scores s(z_t, y) and REC boxes from a probed (or tuned) model at a fixed timestep.

    Each image gets one fixed noise sample (seeded by its index), so all candidates of a query are
    compared on the same z_t. ``rec_rule``: how the object query is chosen
    (:func:`dptlib.losses.query_choice_scores`)."""

    def __init__(self, backbone, adapter, blocks, data, latents, timestep: int = 250, seed: int = 0,
                 rec_rule: str = "grounding+text"):
        # the adapter goes where the backbone is (a checkpoint loads on the CPU)
        self.backbone, self.adapter, self.blocks, self.data = backbone, adapter.eval().to(backbone.device), blocks, data
        self.latents, self.timestep, self.seed, self.rec_rule = latents, timestep, seed, rec_rule

    def noisy_latents(self, images: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """z_t (n, 4, h, w) of the images at the scorer's timestep, and the timesteps (n,)."""
        noise = image_noise(self.latents.shape[1:], self.seed, images)
        t = torch.full((len(images),), self.timestep)
        return add_noise(self.backbone, self.latents[images], t, noise).to(self.backbone.device), t.to(self.backbone.device)

    @torch.no_grad()
    def _outputs(self, images: list[int], texts: list[str]):
        z, t = self.noisy_latents(images)
        hidden, pooled = encode_text(self.backbone, texts)
        features = extract_features(self.backbone.unet, z, t, hidden, self.blocks)
        return self.adapter(features, t), pooled

    def score_pairs(self, images: list[int], captions: list[int]) -> torch.Tensor:
        out, pooled = self._outputs(images, [self.data.captions[c] for c in captions])
        return matching_similarity(out.match_embeddings, pooled).cpu()

    def predict_boxes(self, expressions: list[int], rule: str | None = None) -> torch.Tensor:
        images = [int(self.data.expression_image[e]) for e in expressions]
        out, pooled = self._outputs(images, [self.data.expressions[e] for e in expressions])
        return predicted_boxes(out.grounding_logits, out.boxes, out.semantic_embeddings, pooled, self.adapter.logit_scale,
                               rule or self.rec_rule).cpu()
