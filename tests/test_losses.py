"""Box ops, the matcher and the DPT losses against values computed by hand."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from dptlib.losses import (
    cxcywh_to_xyxy,
    generalized_box_iou,
    grounding_loss,
    match_queries,
    matching_cost,
    matching_loss,
    matching_similarity,
    predicted_boxes,
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


def test_matcher_agrees_with_hungarian_on_one_target():
    torch.manual_seed(0)
    for _ in range(20):
        logits, boxes = torch.randn(1, 30), torch.rand(1, 30, 4) * 0.5 + 0.1
        target = torch.rand(1, 4) * 0.5 + 0.1
        cost = matching_cost(logits, boxes, target)[0].numpy()  # (K,)
        rows, cols = linear_sum_assignment(cost[None, :])  # one target (row) against K queries
        assert match_queries(logits, boxes, target).item() == cols[0]


def test_losses_have_gradients_for_every_input():
    logits = torch.randn(3, 5, requires_grad=True)
    boxes = (torch.rand(3, 5, 4) * 0.5 + 0.2).requires_grad_()
    semantic = torch.randn(3, 5, 8, requires_grad=True)
    scale = torch.tensor(SCALE, requires_grad=True)
    loss = grounding_loss(logits, boxes, semantic, torch.rand(3, 4) * 0.5 + 0.2, torch.randn(3, 8), scale)
    loss.total.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (logits, boxes, semantic, scale))
    assert predicted_boxes(logits, boxes).shape == (3, 4)
