"""Box ops, the matcher and the DPT losses against values computed by hand."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from dptlib.method.losses import (
    LossWeights,
    cxcywh_to_xyxy,
    generalized_box_iou,
    grounding_loss,
    match_queries,
    matching_cost,
    matching_loss,
    matching_similarity,
    predicted_boxes,
    query_choice_scores,
    xyxy_to_cxcywh,
)

SCALE = math.log(1 / 0.07)


def test_box_conversions_round_trip():
    boxes = torch.rand(10, 4) * 0.5 + 0.1
    torch.testing.assert_close(xyxy_to_cxcywh(cxcywh_to_xyxy(boxes)), boxes)


def test_giou_by_hand():
    a = torch.tensor([0.45, 0.4, 0.65, 0.6])  # xyxy
    b = torch.tensor([0.4, 0.4, 0.6, 0.6])
    # intersection 0.15 * 0.2 = 0.03, union 0.05, IoU 0.6, enclosing 0.25 * 0.2 = 0.05 -> GIoU 0.6
    assert generalized_box_iou(a, b).item() == pytest.approx(0.6)
    far = torch.tensor([0.1, 0.1, 0.3, 0.3])
    # disjoint: IoU 0, enclosing 0.25, union 0.08 -> -0.68
    assert generalized_box_iou(far, b).item() == pytest.approx(-0.68)
    assert generalized_box_iou(b, b).item() == pytest.approx(1.0)


def test_matching_similarity_is_the_max_cosine_over_queries():
    queries = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]]])
    text = torch.tensor([[0.0, 2.0]])
    assert matching_similarity(queries, text).item() == pytest.approx(0.8)


def test_matching_loss_by_hand():
    i2t = torch.tensor([[0.5, 0.2, -0.1]])
    t2i = torch.tensor([[0.5, 0.4, 0.0]])
    s = 1 / 0.07

    def nll(row):
        return -math.log(math.exp(s * row[0]) / sum(math.exp(s * v) for v in row))

    expected = nll([0.5, 0.2, -0.1]) + nll([0.5, 0.4, 0.0])
    assert matching_loss(i2t, t2i, torch.tensor(SCALE)).item() == pytest.approx(expected, rel=1e-5)


def test_grounding_loss_by_hand():
    logits = torch.tensor([[0.0, 1.0]])
    boxes = torch.tensor([[[0.55, 0.5, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2]]])
    semantic = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    target = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    expression = torch.tensor([[1.0, 0.0]])
    p0 = 1 / (1 + math.e)
    # cost q0 = -p0 + 5 * 0.05 + 2 * (1 - 0.6); cost q1 = -(1 - p0) + 5 * 0.6 + 2 * 1.68 -> psi = 0
    cost = matching_cost(logits, boxes, target)
    assert cost[0, 0].item() == pytest.approx(-p0 + 0.25 + 0.8, rel=1e-5)
    assert cost[0, 1].item() == pytest.approx(-(1 - p0) + 3.0 + 3.36, rel=1e-5)
    loss = grounding_loss(logits, boxes, semantic, target, expression, torch.tensor(SCALE))
    assert loss.matched.tolist() == [0]
    s = 1 / 0.07
    t2o = math.log(1 + math.exp(-s * 0.4))  # cos = (1, 0.6): -log(e^s / (e^s + e^0.6s))
    assert loss.probability.item() == pytest.approx(-math.log(p0), rel=1e-5)
    assert loss.l1.item() == pytest.approx(0.05, rel=1e-5)
    assert loss.giou.item() == pytest.approx(0.4, rel=1e-5)
    assert loss.text_to_object.item() == pytest.approx(t2o, rel=1e-3)
    assert loss.total.item() == pytest.approx(-math.log(p0) + 5 * 0.05 + 2 * 0.4 + t2o, rel=1e-5)


def test_matcher_picks_the_query_of_least_eq5_cost_by_hand():
    """Eq. 5 with lambda = (1, 5, 2) on three queries against the target (0.5, 0.5, 0.2, 0.2):

    q0: the target's box exactly (L1 0, GIoU 1); q1: moved right by 0.02 (L1 0.02, IoU = GIoU =
    0.036 / 0.044 = 9/11); q2: far away at (0.2, 0.2) (L1 0.6, GIoU -0.68).
    Row 0, logits (0, ln 18, 0) -> p = (0.05, 0.9, 0.05):
        cost = (-0.05, -0.9 + 0.1 + 2 * 2/11, -0.05 + 3 + 3.36) = (-0.05, -0.4364, 6.31) -> q1
    Row 1, logits (0, ln 2, 0) -> p = (0.25, 0.5, 0.25):
        cost = (-0.25, -0.5 + 0.1 + 4/11, -0.25 + 6.36) = (-0.25, -0.0364, 6.11) -> q0
    Without the probability term q0 (the exact box) wins both rows."""
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.52, 0.5, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2]]).expand(2, 3, 4)
    logits = torch.tensor([[0.0, math.log(18), 0.0], [0.0, math.log(2), 0.0]])
    target = torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 2)
    weights = LossWeights(probability=1.0, l1=5.0, giou=2.0)
    cost = matching_cost(logits, boxes, target, weights)
    expected = [[-0.05, -0.9 + 0.1 + 4 / 11, -0.05 + 3.0 + 3.36], [-0.25, -0.5 + 0.1 + 4 / 11, -0.25 + 3.0 + 3.36]]
    torch.testing.assert_close(cost, torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert match_queries(logits, boxes, target, weights).tolist() == [1, 0]
    assert match_queries(logits, boxes, target).tolist() == [1, 0]  # the default weights are App. B.3.2's
    assert match_queries(logits, boxes, target, LossWeights(probability=0.0)).tolist() == [0, 0]
    assert match_queries(logits, boxes, target, LossWeights(probability=1.0, l1=0.0, giou=0.0)).tolist() == [1, 1]


def _cost_by_hand(logits: np.ndarray, boxes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Eq. 5 for one target, (K,), with L1 and GIoU computed here in numpy, not by dptlib."""
    p = np.exp(logits - logits.max())
    p /= p.sum()

    def corners(b):
        return np.stack([b[..., 0] - b[..., 2] / 2, b[..., 1] - b[..., 3] / 2, b[..., 0] + b[..., 2] / 2, b[..., 1] + b[..., 3] / 2], -1)

    a, t = corners(boxes), corners(target)
    inter = np.clip(np.minimum(a[:, 2], t[2]) - np.maximum(a[:, 0], t[0]), 0, None) * \
        np.clip(np.minimum(a[:, 3], t[3]) - np.maximum(a[:, 1], t[1]), 0, None)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (t[2] - t[0]) * (t[3] - t[1]) - inter
    hull = (np.maximum(a[:, 2], t[2]) - np.minimum(a[:, 0], t[0])) * (np.maximum(a[:, 3], t[3]) - np.minimum(a[:, 1], t[1]))
    giou = inter / union - (hull - union) / hull
    l1 = np.abs(boxes - target).sum(-1)
    return -1.0 * p + 5.0 * l1 + 2.0 * (1 - giou)


def test_matcher_agrees_with_hungarian_on_an_independent_cost():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 30)) * 3
    boxes = rng.uniform(0.1, 0.6, size=(40, 30, 4))
    target = rng.uniform(0.1, 0.6, size=(40, 4))
    matched = match_queries(torch.tensor(logits, dtype=torch.float64), torch.tensor(boxes), torch.tensor(target)).tolist()
    for row in range(40):
        cost = _cost_by_hand(logits[row], boxes[row], target[row])
        np.testing.assert_allclose(matching_cost(torch.tensor(logits[row : row + 1]), torch.tensor(boxes[row : row + 1]),
                                                 torch.tensor(target[row : row + 1]))[0].numpy(), cost, rtol=1e-9, atol=1e-12)
        _, cols = linear_sum_assignment(cost[None, :])  # one target (row) against K queries
        assert matched[row] == cols[0]


def test_query_choice_scores_by_hand():
    """log p_j + log q_j: p = softmax(logits), q = softmax(exp(logit_scale) * cos(o_j, e))."""
    logits = torch.tensor([[0.0, math.log(3)]])  # p = (1/4, 3/4)
    semantic = torch.tensor([[[2.0, 0.0], [0.0, 5.0]]])  # cos with e = (1, 0): (1, 0)
    expression = torch.tensor([[3.0, 0.0]])
    scale = torch.tensor(math.log(2.0))  # exp(scale) = 2: q = softmax(2, 0)
    q_norm = math.log(math.exp(2) + 1)
    text = query_choice_scores(logits, semantic, expression, scale, "grounding+text")
    torch.testing.assert_close(text, torch.tensor([[math.log(1 / 4) + 2 - q_norm, math.log(3 / 4) - q_norm]]))
    assert text.argmax().item() == 0  # the text outweighs the grounding logits here ...
    grounding = query_choice_scores(logits, semantic, expression, scale, "grounding")
    torch.testing.assert_close(grounding, torch.tensor([[math.log(1 / 4), math.log(3 / 4)]]))
    assert grounding.argmax().item() == 1  # ... and only the logits count without it
    with pytest.raises(ValueError, match="unknown REC rule"):
        query_choice_scores(logits, semantic, expression, scale, "text")


def test_predicted_box_follows_the_expression_when_the_logits_tie():
    """Two object queries with equal grounding logits, at two objects, their semantic embeddings
    along two different expressions: each expression gets the box of its own query."""
    boxes = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]]).expand(2, 2, 4)
    semantic = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    expressions = torch.tensor([[1.0, 0.1, 0.0], [0.1, 1.0, 0.0]])  # row 0 like query 0, row 1 like query 1
    scale = torch.tensor(SCALE)
    tied = torch.zeros(2, 2)
    picked = predicted_boxes(tied, boxes, semantic, expressions, scale, rule="grounding+text")
    assert picked.tolist() == [boxes[0, 0].tolist(), boxes[0, 1].tolist()]
    assert predicted_boxes(tied, boxes, semantic, expressions[[1, 0]], scale).tolist() == [boxes[0, 1].tolist(), boxes[0, 0].tolist()]
    # the grounding rule follows the logits only, whatever the expression
    leaning = torch.tensor([[0.0, 0.5], [0.0, 0.5]])
    assert predicted_boxes(leaning, boxes, rule="grounding").tolist() == [boxes[0, 1].tolist()] * 2
    assert predicted_boxes(leaning, boxes, semantic, expressions, scale, rule="grounding").tolist() == [boxes[0, 1].tolist()] * 2
    # with the text, a small lean of the logits does not override a clear expression
    assert predicted_boxes(leaning, boxes, semantic, expressions, scale).tolist() == [boxes[0, 0].tolist(), boxes[0, 1].tolist()]
    with pytest.raises(ValueError, match="unknown REC rule"):
        predicted_boxes(tied, boxes, semantic, expressions, scale, rule="text-only")
    with pytest.raises(ValueError, match="semantic embeddings"):
        predicted_boxes(tied, boxes)  # the default rule needs the text side


def test_losses_have_gradients_for_every_input():
    logits = torch.randn(3, 5, requires_grad=True)
    boxes = (torch.rand(3, 5, 4) * 0.5 + 0.2).requires_grad_()
    semantic = torch.randn(3, 5, 8, requires_grad=True)
    scale = torch.tensor(SCALE, requires_grad=True)
    loss = grounding_loss(logits, boxes, semantic, torch.rand(3, 4) * 0.5 + 0.2, torch.randn(3, 8), scale)
    loss.total.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (logits, boxes, semantic, scale))
    assert predicted_boxes(logits, boxes, rule="grounding").shape == (3, 4)
    assert predicted_boxes(logits, boxes, semantic, torch.randn(3, 8), scale).shape == (3, 4)
