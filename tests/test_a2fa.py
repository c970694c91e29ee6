"""A2FA + F2SGD text-query model: shapes, masks, equations, gradients, overfitting a tiny batch, seconds out."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from vmr.alignment.transition import transition_points
from vmr.data.samples import Sample, collate
from vmr.models.a2fa import A2FA, A2FAConfig, SameConv2d
from vmr.spans import pairwise_iou, temporal_iou

TINY = dict(dim=16, kernel_size=5, cnn_channels=(4, 4), mlp_hidden=8)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tensors are tiny: one thread is fastest, and on a busy CI machine two OpenMP threads that spin-wait for
    each other made the overfit test 20x slower. Restored afterwards for other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def text_sample(rng, i: int, n: int, dim: int, rows: tuple[int, int] | None = None, t0: float = 0.0,
                step: float = 2.0) -> Sample:
    """A sentence query q and n unit frame features; frames ``rows = [s, e)`` are pulled towards q (the moment)."""
    q = rng.normal(size=dim)
    q /= np.linalg.norm(q)
    v = rng.normal(size=(n, dim))
    if rows is None:
        s = int(rng.integers(0, n - 2))
        rows = (s, int(rng.integers(s + 2, min(n, s + 8) + 1)))
    s, e = rows
    v[s:e] = 0.5 * v[s:e] / np.linalg.norm(v[s:e], axis=1, keepdims=True) + q
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    times = t0 + step * np.arange(n)
    return Sample(f"s{i}", f"video{i}", v, times, step, q[None], spans=[[times[s], times[e - 1] + step]],
                  query_id=f"q{i}", query_kind="text")


def eval_model(seed=0, **cfg) -> A2FA:
    torch.manual_seed(seed)
    return A2FA(A2FAConfig(**{**TINY, **cfg})).eval()


def test_forward_shapes_and_masks():
    rng = np.random.default_rng(0)
    samples = [text_sample(rng, i, n, 16) for i, n in enumerate([9, 14, 6])]
    batch = collate(samples)
    model = eval_model()
    assert model.kind == "a2fa"
    with torch.no_grad():
        out = model(batch)
    B, M = 3, 14
    assert out["query"].shape == (B, 16)
    assert out["anchor"].shape == (B,) and out["anchor"].dtype == torch.long
    assert out["bounds"].shape == (B, 2)
    for key in ("anchor_mask", "relevance", "alpha"):
        assert out[key].shape == (B, M), key
    assert out["similarity"].shape == out["vertex"].shape == (B, M, M)
    for b, n in enumerate([9, 14, 6]):
        a, (bl, br) = int(out["anchor"][b]), out["bounds"][b].tolist()
        assert 0 <= bl <= a <= br < n
        seg = torch.zeros(M, dtype=torch.bool)
        seg[bl:br + 1] = True
        assert torch.equal(out["anchor_mask"][b], seg)
        assert torch.all(out["alpha"][b][~seg] == 0) and torch.all(out["alpha"][b][seg] > 0)
        P = out["vertex"][b]
        assert torch.all(P[n:] == 0) and torch.all(P[:, n:] == 0)
        assert torch.all((P[:n, :n] > 0) & (P[:n, :n] < 1))
        assert torch.all(out["similarity"][b, n:] == 0)
        assert torch.allclose(out["similarity"][b, :n, :n].diagonal(), torch.ones(n), atol=1e-5)


def test_anchor_and_segment_follow_eqs_1_to_4():
    """Recompute Eq. 1 (query-embedded frames), Eq. 2 (anchor) and Eqs. 3-4 independently of the model."""
    rng = np.random.default_rng(1)
    samples = [text_sample(rng, i, n, 16) for i, n in enumerate([12, 7])]
    batch = collate(samples)
    with torch.no_grad():
        out = eval_model()(batch)
    for b, s in enumerate(samples):
        q, v = s.query[0].astype(np.float64), s.target.astype(np.float64)
        c = v @ q / np.linalg.norm(v, axis=1) / np.linalg.norm(q)
        ve = c[:, None] * q + (1 - c[:, None]) * v
        a = int(np.argmax(ve @ q / np.linalg.norm(ve, axis=1)))
        assert int(out["anchor"][b]) == a
        bl, br = transition_points(torch.from_numpy(ve[None]), torch.tensor([a]))
        assert out["bounds"][b].tolist() == [int(bl), int(br)]


def test_padding_does_not_change_an_items_outputs():
    """Each item alone equals the same item inside a padded batch (valid cells), and so do its predictions."""
    rng = np.random.default_rng(2)
    samples = [text_sample(rng, i, n, 16, t0=100.0 * i) for i, n in enumerate([8, 13, 5])]
    model = eval_model(kernel_size=7)
    with torch.no_grad():
        padded = collate(samples, max_target=20)
        out = model(padded)
        preds = model.predict(out, padded, top_k=3)
        for b, s in enumerate(samples):
            alone = collate([s])
            one = model(alone)
            n = len(s.target)
            assert torch.allclose(one["vertex"][0], out["vertex"][b, :n, :n], atol=1e-6)
            assert torch.allclose(one["similarity"][0], out["similarity"][b, :n, :n], atol=1e-6)
            for key in ("anchor", "bounds"):
                assert torch.equal(one[key][0], out[key][b])
            for key in ("relevance", "alpha"):
                assert torch.allclose(one[key][0], out[key][b, :n], atol=1e-6)
            np.testing.assert_allclose(model.predict(one, alone, top_k=3)[0], preds[b], atol=1e-6)


def test_ground_truth_marks_every_window_and_rejects_windows_outside_the_video():
    rng = np.random.default_rng(3)
    s = text_sample(rng, 0, 20, 16, rows=(2, 5), t0=50.0)
    s.spans = np.array([[54.0, 60.0], [70.0, 71.0], [80.0, 90.0]])  # rows [2, 5), [10, 11), [15, 20)
    G = A2FA.ground_truth(collate([s]))[0]
    assert sorted(map(tuple, G.nonzero().tolist())) == [(2, 4), (10, 10), (15, 19)]
    s.spans = np.array([[500.0, 510.0]])
    with pytest.raises(ValueError, match="s0"):
        A2FA.ground_truth(collate([s]))


def test_loss_is_eq_14_over_valid_cells_only():
    rng = np.random.default_rng(4)
    samples = [text_sample(rng, i, n, 16) for i, n in enumerate([10, 6])]
    batch = collate(samples)
    model = eval_model()
    out = model(batch)
    G = A2FA.ground_truth(batch)
    expected = sum(((out["vertex"][b, :n, :n] - G[b, :n, :n]) ** 2).sum() for b, n in enumerate([10, 6])) / 2
    loss = model.loss(out, batch)
    assert torch.allclose(loss["total"], expected) and torch.allclose(loss["mse"], expected)


def _float64_case():
    rng = np.random.default_rng(5)
    samples = [text_sample(rng, i, n, 6) for i, n in enumerate([7, 5])]
    batch = collate(samples)
    torch.manual_seed(0)
    model = A2FA(A2FAConfig(dim=6, kernel_size=3, cnn_channels=(3, 2), mlp_hidden=4, reweight_bias_init=0.5)).double()
    with torch.no_grad():  # biases start at 0, which puts ReLUs of all-zero cells exactly on their kink
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    batch["target"] = batch["target"].double()
    batch["query"] = batch["query"].double()
    return model, batch


def test_gradients_match_finite_differences_wrt_inputs():
    model, batch = _float64_case()

    def f(target, query):
        b = {**batch, "target": target, "query": query}
        out = model(b)
        return model.loss(out, b)["total"], out["vertex"]

    inputs = (batch["target"].clone().requires_grad_(), batch["query"].clone().requires_grad_())
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


def test_gradients_match_finite_differences_wrt_parameters():
    model, batch = _float64_case()
    names = [n for n, _ in model.named_parameters()]

    def f(*params):
        out = functional_call(model, dict(zip(names, params)), (batch,))
        return model.loss(out, batch)["total"]

    params = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6, fast_mode=True)
    grads = torch.autograd.grad(f(*params), params)
    assert all(g.abs().sum() > 0 for g in grads), "every parameter takes part in the loss"


def test_same_conv_backward_matches_pytorchs():
    """F2SGD's conv layers compute their CPU backward as forward convolutions: same gradients as nn.Conv2d's."""
    torch.manual_seed(0)
    conv = SameConv2d(3, 2, 5).double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 2, 7, 6, dtype=torch.float64)
    grads = {}
    for fast in (True, False):
        conv.fast_cpu_backward = fast
        y = conv(x)
        assert y.shape == (2, 2, 7, 6)
        grads[fast] = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    for ours, torchs in zip(grads[True], grads[False]):
        assert torch.allclose(ours, torchs, atol=1e-10)


def test_overfits_a_tiny_batch():
    """Frames of each moment are correlated with its sentence feature; 400 Adam steps fit G almost exactly and the
    top-1 prediction of every item has IoU >= 0.7 with its moment (R@1@0.7 = 1)."""
    rng = np.random.default_rng(0)
    samples = [text_sample(rng, i, n, 32, t0=10.0 * i) for i, n in enumerate([20, 16, 18, 12])]
    batch = collate(samples)
    torch.manual_seed(0)
    model = A2FA(A2FAConfig(dim=32, kernel_size=5, cnn_channels=(8, 8), mlp_hidden=16, top_k=1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(400):
        loss = model.loss(model(batch), batch)["total"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(batch)
    final = float(model.loss(out, batch)["total"])
    assert final < 0.01 < first
    preds = model.predict(out, batch)
    ious = [float(temporal_iou(p[0, :2], s.spans[0])) for p, s in zip(preds, samples)]
    assert all(iou >= 0.7 for iou in ious), ious


def _planted(P_cells: dict, n: int, M: int, t0: float, step: float, nms_iou=None, top_k=10):
    """A batch of one item with n valid rows (padded to M) and a hand-made P."""
    rng = np.random.default_rng(6)
    s = text_sample(rng, 0, n, 16, t0=t0, step=step)
    batch = collate([s], max_target=M)
    P = torch.zeros(1, M, M)
    for (i, j), v in P_cells.items():
        P[0, i, j] = v
    model = eval_model(nms_iou=nms_iou, top_k=top_k)
    return model, {"vertex": P}, batch


def test_predictions_are_seconds_on_the_items_clock():
    model, out, batch = _planted({(3, 6): 0.9, (1, 1): 0.5}, n=10, M=10, t0=1000.0, step=2.0)
    pred = model.predict(out, batch, top_k=2)[0]
    np.testing.assert_allclose(pred, [[1006.0, 1014.0, 0.9], [1002.0, 1004.0, 0.5]], rtol=0, atol=1e-6)


def test_top_k_is_over_valid_cells_with_i_le_j_best_first():
    """Lower-triangle and padded cells are never returned, even when they score highest."""
    rng = np.random.default_rng(7)
    model, out, batch = _planted({}, n=8, M=12, t0=0.0, step=1.0, nms_iou=None, top_k=5)
    out["vertex"] = torch.from_numpy(rng.random((1, 12, 12)).astype(np.float32))
    out["vertex"][0, 5, 2] = out["vertex"][0, 10, 11] = 2.0
    pred = model.predict(out, batch)[0]
    P = out["vertex"][0].numpy()
    cells = sorted(((P[i, j], i, j) for i in range(8) for j in range(i, 8)), reverse=True)[:5]
    expected = [[i, j + 1, p] for p, i, j in cells]
    np.testing.assert_allclose(pred, expected, rtol=1e-6)


def test_nms_removes_near_duplicate_cells_and_can_be_switched_off():
    peak = {(4, 9): 0.9, (4, 10): 0.85, (5, 9): 0.8, (12, 14): 0.3}
    model, out, batch = _planted(peak, n=20, M=20, t0=0.0, step=2.0, nms_iou=0.7, top_k=2)
    pred = model.predict(out, batch)[0]
    np.testing.assert_allclose(pred, [[8.0, 20.0, 0.9], [24.0, 30.0, 0.3]], atol=1e-6)
    model.config.nms_iou = None
    dup = model.predict(out, batch)[0]
    np.testing.assert_allclose(dup[:, 2], [0.9, 0.85], atol=1e-6)
    assert pairwise_iou(dup[:1, :2], dup[1:, :2])[0, 0] > 0.7


def test_bad_configs_and_inputs_are_refused():
    with pytest.raises(ValueError, match="odd"):
        A2FA(A2FAConfig(**{**TINY, "kernel_size": 4}))
    rng = np.random.default_rng(8)
    batch = collate([text_sample(rng, 0, 6, 8)])
    with pytest.raises(ValueError, match="dim=16"):
        eval_model()(batch)
