"""Box operations, the query matcher (Eq. 5), the matching loss (Eq. 3-4) and the grounding loss (Eq. 6-7).

Boxes are (cx, cy, w, h) normalised to [0, 1] unless a name says ``xyxy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """lambda_0..3 of Eq. 7, also the matcher's cost weights of Eq. 5 (App. B.3.2: 1, 5, 2, 1)."""

    probability: float = 1.0
    l1: float = 5.0
    giou: float = 2.0
    text_to_object: float = 1.0


WEIGHTS = LossWeights()


# --------------------------------------------------------------------------------------------
# Box operations
# --------------------------------------------------------------------------------------------
def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def box_area(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]).clamp(min=0) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1]).clamp(min=0)


def box_iou(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise IoU and union of boxes (..., 4) and (..., 4) (broadcasting)."""
    top_left = torch.maximum(a_xyxy[..., :2], b_xyxy[..., :2])
    bottom_right = torch.minimum(a_xyxy[..., 2:], b_xyxy[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = box_area(a_xyxy) + box_area(b_xyxy) - inter
    return inter / union.clamp(min=1e-9), union


def generalized_box_iou(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor) -> torch.Tensor:
    """Elementwise GIoU (Rezatofighi et al.) of boxes (..., 4) and (..., 4), in [-1, 1]."""
    iou, union = box_iou(a_xyxy, b_xyxy)
    enclosing = (torch.maximum(a_xyxy[..., 2:], b_xyxy[..., 2:]) - torch.minimum(a_xyxy[..., :2], b_xyxy[..., :2])).clamp(min=0).prod(-1)
    return iou - (enclosing - union) / enclosing.clamp(min=1e-9)


# --------------------------------------------------------------------------------------------
# The matcher (Eq. 5)
# --------------------------------------------------------------------------------------------
def matching_cost(grounding_logits: torch.Tensor, boxes: torch.Tensor, target: torch.Tensor, weights: LossWeights = WEIGHTS) -> torch.Tensor:
    """Cost of assigning each object query to the target, (B, K):
    -lambda_0 p_j + lambda_1 L1(b_j, b) + lambda_2 (1 - GIoU(b_j, b)), p = softmax over the K queries.

    grounding_logits (B, K), boxes (B, K, 4), target (B, 4).
    """
    probability = grounding_logits.softmax(-1)
    l1 = (boxes - target[:, None, :]).abs().sum(-1)
    giou = generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(target)[:, None, :])
    return -weights.probability * probability + weights.l1 * l1 + weights.giou * (1 - giou)


@torch.no_grad()
def match_queries(grounding_logits: torch.Tensor, boxes: torch.Tensor, target: torch.Tensor, weights: LossWeights = WEIGHTS) -> torch.Tensor:
    """psi(i) of Eq. 5: index (B,) of the object query that best fits the one referred object.

    With one target per image the Hungarian assignment is the arg-min of the cost (a test checks
    that it agrees with ``scipy.optimize.linear_sum_assignment``)."""
    return matching_cost(grounding_logits, boxes, target, weights).argmin(-1)


# --------------------------------------------------------------------------------------------
# Global matching (Eq. 3-4)
# --------------------------------------------------------------------------------------------
def matching_similarity(match_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """s(z, y) = max over the M matching queries of cos(CLIP(y), h_i): (P,) from (P, M, D) and (P, D)."""
    text_embeddings = text_embeddings.to(match_embeddings.dtype)  # e.g. an fp16 text encoder's
    cosine = F.cosine_similarity(match_embeddings, text_embeddings[:, None, :], dim=-1)  # (P, M)
    return cosine.max(-1).values


def matching_loss(image_to_text: torch.Tensor, text_to_image: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """L^match = L^{T->I} + L^{I->T} (Eq. 3-4) with the positive in column 0.

    image_to_text (B, 1 + K): s(z, y) then s(z, y_j) for the image's negative captions;
    text_to_image (B, 1 + K'): s(z, y) then s(z_j, y) for the caption's negative images;
    logit_scale: log(1 / tau), learnable.
    """
    scale = logit_scale.exp()
    target = torch.zeros(image_to_text.shape[0], dtype=torch.long, device=image_to_text.device)
    return F.cross_entropy(scale * text_to_image, target) + F.cross_entropy(scale * image_to_text, target)


def denoising_loss(prediction: torch.Tensor, noise: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """The noise-prediction MSE of Eq. 8 (the "MSE" of Tab. 5, 9), on the true pairs only.

    prediction (B, C, h, w): the U-Net's noise prediction for every (image, caption) row of a
    batch; noise (P, C, h, w): the noise added to each true pair's latent; positives (P,): the row
    of each true pair in ``prediction``. Rows with a negative caption are left out: a U-Net is not
    taught to denoise an image towards a caption it does not show.
    """
    return F.mse_loss(prediction[positives], noise.to(prediction.device))


# --------------------------------------------------------------------------------------------
# Local grounding (Eq. 6-7)
# --------------------------------------------------------------------------------------------
@dataclass
class GroundingLoss:
    """The four terms of Eq. 7 (each averaged over the batch) and their weighted sum."""

    total: torch.Tensor
    probability: torch.Tensor
    l1: torch.Tensor
    giou: torch.Tensor
    text_to_object: torch.Tensor
    matched: torch.Tensor  # (B,) psi


def grounding_loss(
    grounding_logits: torch.Tensor,
    boxes: torch.Tensor,
    semantic_embeddings: torch.Tensor,
    target: torch.Tensor,
    expression_embeddings: torch.Tensor,
    logit_scale: torch.Tensor,
    weights: LossWeights = WEIGHTS,
) -> GroundingLoss:
    """L^ground of Eq. 7 for one referred object per image.

    grounding_logits (B, K), boxes (B, K, 4), semantic_embeddings (B, K, D), target (B, 4),
    expression_embeddings (B, D) = CLIP(y').

    The probability term: Eq. 7 writes -lambda_0 p_psi; we use -lambda_0 log p_psi with p a
    softmax over the object queries (the cross-entropy DETR-style heads train with). Both reward
    the matched query; only the log-softmax also pushes the other queries down, which the
    arg-max-p box chosen at test time needs. Eq. 6's denominator runs over the object queries.
    """
    matched = match_queries(grounding_logits, boxes, target, weights)  # (B,)
    rows = torch.arange(len(matched), device=matched.device)
    probability = F.cross_entropy(grounding_logits, matched)
    box = boxes[rows, matched]  # (B, 4)
    l1 = (box - target).abs().sum(-1).mean()
    giou = (1 - generalized_box_iou(cxcywh_to_xyxy(box), cxcywh_to_xyxy(target))).mean()
    cosine = F.cosine_similarity(semantic_embeddings, expression_embeddings[:, None, :], dim=-1)  # (B, K)
    text_to_object = F.cross_entropy(logit_scale.exp() * cosine, matched)
    total = weights.probability * probability + weights.l1 * l1 + weights.giou * giou + weights.text_to_object * text_to_object
    return GroundingLoss(total, probability, l1, giou, text_to_object, matched)


REC_RULES = ("grounding+text", "grounding")


def query_choice_scores(grounding_logits: torch.Tensor, semantic_embeddings: torch.Tensor, expression_embeddings: torch.Tensor,
                        logit_scale: torch.Tensor, rule: str = "grounding+text") -> torch.Tensor:
    """How strongly each object query claims to be the referred object, (B, K).

    ``"grounding+text"`` (default): log p_j + log q_j, with p the grounding probability (the
    softmax of W_p's logits that Eq. 7 trains) and q the text-to-object probability of Eq. 6
    (softmax over the queries of cos(o_j, CLIP(y')) / tau), so the expression chooses among the
    object queries. ``"grounding"``: log p_j alone, the most probable object query; the
    expression then reaches the choice only through the U-Net's cross-attention.
    semantic_embeddings (B, K, D), expression_embeddings (B, D).
    """
    if rule not in REC_RULES:
        raise ValueError(f"unknown REC rule {rule!r}; rules: {list(REC_RULES)}")
    score = grounding_logits.log_softmax(-1)
    if rule == "grounding+text":
        cosine = F.cosine_similarity(semantic_embeddings, expression_embeddings[:, None, :], dim=-1)
        score = score + (logit_scale.exp() * cosine).log_softmax(-1)
    return score


def predicted_boxes(grounding_logits: torch.Tensor, boxes: torch.Tensor, semantic_embeddings: torch.Tensor | None = None,
                    expression_embeddings: torch.Tensor | None = None, logit_scale: torch.Tensor | None = None,
                    rule: str = "grounding+text") -> torch.Tensor:
    """REC prediction: the box (B, 4) of the query that :func:`query_choice_scores` ranks first.
    The ``"grounding"`` rule needs only the logits and boxes."""
    if rule == "grounding":
        score = grounding_logits
    elif semantic_embeddings is None or expression_embeddings is None or logit_scale is None:
        raise ValueError(f"rule {rule!r} needs the semantic embeddings, the expression embeddings and the logit scale")
    else:
        score = query_choice_scores(grounding_logits, semantic_embeddings, expression_embeddings, logit_scale, rule)
    return boxes[torch.arange(len(boxes), device=boxes.device), score.argmax(-1)]
