"""Loss functions: masking, per-item reduction, boundary terms, alignment normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from vmr.models import losses


def test_masked_item_mean_averages_items_not_rows():
    values = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 99.0, 99.0, 99.0], [5.0, 5.0, 5.0, 5.0]])
    mask = torch.tensor([[True] * 4, [True, False, False, False], [False] * 4])
    # item 0 -> 1, item 1 -> 3 (padding ignored), item 2 has no rows and is left out
    assert float(losses.masked_item_mean(values, mask)) == 2.0
    empty = losses.masked_item_mean(values.requires_grad_(), torch.zeros_like(mask))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_bce_ignores_padding_and_matches_torch_on_real_rows():
    logits = torch.tensor([[2.0, -1.0, 0.5, 40.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    expected = F.binary_cross_entropy(torch.sigmoid(logits[:, :3]), targets[:, :3])
    torch.testing.assert_close(losses.binary_cross_entropy(logits, targets, mask), expected)


def test_focal_reduces_to_bce_and_down_weights_easy_rows():
    logits = torch.tensor([[3.0, -2.0, 0.1]])
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    bce = losses.binary_cross_entropy(logits, targets, mask)
    torch.testing.assert_close(losses.sigmoid_focal_loss(logits, targets, mask, alpha=-1, gamma=0.0), bce)
    assert float(losses.sigmoid_focal_loss(logits, targets, mask, alpha=-1, gamma=2.0)) < float(bce)


def test_boundary_losses_are_zero_when_exact_and_only_count_foreground():
    target = torch.tensor([[[0.1, 0.2], [0.3, 0.05], [0.0, 0.0]]])
    fg = torch.tensor([[True, True, False]])
    pred = target.clone()
    pred[0, 2] = torch.tensor([0.9, 0.9])  # a background row: wrong but must not count
    l1, giou = losses.boundary_losses(pred, target, fg)
    assert float(l1) == 0.0 and abs(float(giou)) < 1e-6
    worse = target.clone()
    worse[0, 0] = torch.tensor([0.4, 0.0])
    l1, giou = losses.boundary_losses(worse, target, fg, beta=0.1)
    assert float(l1) > 0 and float(giou) > 0


def test_giou_term_has_a_gradient_for_disjoint_spans():
    # offsets can only make spans around a shared centre, so they always overlap; check GIoU's hull term via a
    # prediction that is much too wide, whose IoU gradient alone would be small
    pred = torch.tensor([[[0.9, 0.9]]], requires_grad=True)
    target = torch.tensor([[[0.01, 0.01]]])
    _, giou = losses.boundary_losses(pred, target, torch.ones(1, 1, dtype=torch.bool))
    giou.backward()
    assert bool((pred.grad > 0).all())  # shrinking the span lowers the loss


def _unit(x):
    return F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1)


def test_alignment_loss_prefers_the_clip_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    target = _unit(torch.randn(1, 30, 16, generator=g))
    clip = _unit(target[:, 10:16] + 0.05 * torch.randn(1, 6, 16, generator=g))
    other = _unit(torch.randn(1, 6, 16, generator=g))
    ones_t, ones_q = torch.ones(1, 30, dtype=torch.bool), torch.ones(1, 6, dtype=torch.bool)
    matched = losses.alignment_loss(target, clip, ones_t, ones_q, gamma=0.1)
    unmatched = losses.alignment_loss(target, other, ones_t, ones_q, gamma=0.1)
    assert float(matched) < 0.1 < float(unmatched)
    # the same item padded with junk rows (target and query) gives the same value
    pt = torch.cat([target, torch.randn(1, 5, 16, generator=g)], 1)
    pq = torch.cat([clip, torch.randn(1, 3, 16, generator=g)], 1)
    mt = torch.cat([ones_t, torch.zeros(1, 5, dtype=torch.bool)], 1)
    mq = torch.cat([ones_q, torch.zeros(1, 3, dtype=torch.bool)], 1)
    torch.testing.assert_close(losses.alignment_loss(pt, pq, mt, mq, gamma=0.1), matched)


def test_alignment_loss_scale_does_not_grow_with_target_or_query_length():
    """Per query row: a 4x longer target or a 3x longer clip keeps the loss of an unrelated query on one scale."""
    g = torch.Generator().manual_seed(1)
    values = []
    for m, n in [(20, 4), (80, 4), (80, 12)]:
        t = _unit(torch.randn(1, m, 16, generator=g))
        q = _unit(torch.randn(1, n, 16, generator=g))
        values.append(float(losses.alignment_loss(t, q, torch.ones(1, m, dtype=torch.bool),
                                                  torch.ones(1, n, dtype=torch.bool), gamma=0.1)))
    assert np.ptp(values) < 0.25 * np.mean(values), values


def test_gather_rows_packs_the_moment_and_reverses_reversed_items():
    x = torch.arange(2 * 5, dtype=torch.float64).reshape(2, 5, 1)
    rows = torch.tensor([[False, True, True, True, False], [True, True, False, False, False]])
    packed, mask = losses.gather_rows(x, rows, reverse=torch.tensor([False, True]))
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    assert packed[..., 0].tolist() == [[1.0, 2.0, 3.0], [6.0, 5.0, 0.0]]


def _alignment_fixture(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(size=(2, 12, 8)))
    fg = torch.zeros(2, 12, dtype=torch.bool)
    fg[0, 3:7], fg[1, 6:11] = True, True
    y = torch.stack([torch.cat([x[0, 3:7] + 0.1 * torch.tensor(rng.normal(size=(4, 8))), torch.zeros(1, 8)]),
                     x[1, 6:11]]).clone()
    y_mask = torch.tensor([[True] * 4 + [False], [True] * 5])
    return x, y, fg, y_mask


def test_ground_truth_alignment_gradients_match_finite_differences():
    x, y, fg, y_mask = _alignment_fixture()
    x_mask = torch.ones(2, 12, dtype=torch.bool)
    for margin in (0.0, 1.0):
        def f(a, b):
            return losses.ground_truth_alignment_loss(a, b, fg, y_mask, 0.1, margin=margin, x_mask=x_mask)

        assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(), y.clone().requires_grad_()),
                                        eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_ground_truth_alignment_prefers_the_moment_and_follows_reversed_queries():
    x, y, fg, y_mask = _alignment_fixture()
    at_moment = losses.ground_truth_alignment_loss(x, y, fg, y_mask)
    elsewhere = losses.ground_truth_alignment_loss(x, y, torch.roll(fg, 4, dims=1), y_mask)
    assert float(at_moment) < float(elsewhere)
    backwards = torch.stack([torch.cat([y[0, :4].flip(0), y[0, 4:]]), torch.cat([y[1, :5].flip(0), y[1, 5:]])])
    both = torch.tensor([True, True])
    reversed_ok = losses.ground_truth_alignment_loss(x, backwards, fg, y_mask, reverse=both)
    reversed_as_forward = losses.ground_truth_alignment_loss(x, backwards, fg, y_mask)
    assert float(reversed_ok) == pytest.approx(float(at_moment), abs=1e-9) and float(reversed_as_forward) > float(reversed_ok)


def _spread_after_training(loss_fn, steps: int = 150) -> tuple[float, float]:
    """Train a linear map of fixed random rows with ``loss_fn(projected target, projected query)`` alone; return the
    rows' spread (mean cosine distance of target rows to their mean) before and after."""
    x, y, fg, y_mask = _alignment_fixture(1)
    x, y = x.float(), y.float()
    torch.manual_seed(0)
    proj = torch.nn.Linear(8, 8)
    opt = torch.optim.Adam(proj.parameters(), lr=0.05)

    def spread() -> float:
        with torch.no_grad():
            t = F.normalize(proj(x), dim=-1)
            return float((1 - (t * F.normalize(t.mean(1, keepdim=True), dim=-1)).sum(-1)).mean())

    before = spread()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(proj(x), proj(y), fg, y_mask).backward()
        opt.step()
    return before, spread()


def test_the_ground_truth_alignment_with_a_margin_does_not_collapse_the_features():
    x_mask = torch.ones(2, 12, dtype=torch.bool)
    before, after = _spread_after_training(
        lambda a, b, fg, ym: losses.ground_truth_alignment_loss(a, b, fg, ym, 0.1, margin=0.5, x_mask=x_mask))
    assert after > 0.5 * before, (before, after)
    # the subsequence loss over the whole target, with no ground truth, pulls every row together
    sub_before, sub_after = _spread_after_training(
        lambda a, b, fg, ym: losses.alignment_loss(a, b, x_mask, ym, 0.1))
    assert sub_after < sub_before and sub_after < after, (sub_before, sub_after, after)
