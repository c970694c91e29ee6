"""soft-DTW: agreement with tslearn and with the definition (softmin over every path), gradients, padding,
properties."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from tslearn.metrics import SoftDTW

from vmr.alignment import cosine_cost, dtw, dtw_path, expected_alignment, soft_dtw


def _paths(M, N, subsequence):
    """Every alignment path of an (M, N) grid as a list of cells (brute force; tiny grids only)."""
    def walk(i, j):  # paths from (i, j) to the end column/row
        done = (j == N - 1) if subsequence else (i == M - 1 and j == N - 1)
        out = [[(i, j)]] if done else []  # a subsequence path may also go on down the last column
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            a, b = i + di, j + dj
            if a < M and b < N:
                out += [[(i, j)] + rest for rest in walk(a, b)]
        return out
    starts = [(i, 0) for i in range(M)] if subsequence else [(0, 0)]
    return [p for s in starts for p in walk(*s)]


def _softmin_over_paths(C, gamma, subsequence):
    costs = np.array([sum(C[i, j] for i, j in p) for p in _paths(*C.shape, subsequence)])
    m = costs.min()
    return m - gamma * math.log(np.exp(-(costs - m) / gamma).sum()), costs


def _random_lengths(B, M, N, gen):
    return torch.stack([torch.randint(1, M + 1, (B,), generator=gen), torch.randint(1, N + 1, (B,), generator=gen)], 1)


@pytest.mark.parametrize("gamma", [0.01, 0.1, 1.0])
def test_value_and_gradient_match_tslearn_float64(gamma):
    gen = torch.Generator().manual_seed(0)
    B, M, N = 6, 13, 7
    cost = cosine_cost(torch.randn(B, M, 16, generator=gen, dtype=torch.float64),
                       torch.randn(B, N, 16, generator=gen, dtype=torch.float64)).requires_grad_()
    lengths = _random_lengths(B, M, N, gen)
    lengths[0] = torch.tensor([M, N])
    value = soft_dtw(cost, gamma, lengths)
    value.sum().backward()
    for b in range(B):
        m, n = lengths[b].tolist()
        ref = SoftDTW(cost[b, :m, :n].detach().numpy(), gamma=gamma)
        assert value[b].item() == pytest.approx(ref.compute(), rel=1e-6, abs=1e-12)
        np.testing.assert_allclose(cost.grad[b, :m, :n].numpy(), ref.grad(), rtol=1e-6, atol=1e-12)
        assert cost.grad[b, m:].abs().sum() == 0 and cost.grad[b, :, n:].abs().sum() == 0


@pytest.mark.parametrize("subsequence", [False, True])
def test_value_is_softmin_over_all_paths(subsequence):
    """Checks the definition itself (including the subsequence boundary) against brute-force path enumeration."""
    rng = np.random.default_rng(1)
    for M, N in [(1, 1), (3, 1), (1, 3), (4, 3), (5, 2)]:
        C = rng.uniform(0, 2, size=(M, N))
        for gamma in (0.05, 0.5):
            ref, _ = _softmin_over_paths(C, gamma, subsequence)
            got = soft_dtw(torch.tensor(C)[None], gamma, subsequence=subsequence).item()
            assert got == pytest.approx(ref, rel=1e-10, abs=1e-12), (M, N, gamma)


@pytest.mark.parametrize("subsequence", [False, True])
def test_gradcheck_float64(subsequence):
    gen = torch.Generator().manual_seed(2)
    cost = torch.rand(3, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([[5, 3], [3, 2], [4, 1]])
    for gamma in (0.1, 1.0):
        assert torch.autograd.gradcheck(lambda c: soft_dtw(c, gamma, lengths, subsequence), (cost,), fast_mode=True)


def test_gradcheck_through_cosine_cost():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: soft_dtw(cosine_cost(a, b), 0.1, subsequence=True), (x, y))


def test_cosine_cost_matches_normalised_dot_products_and_their_gradient():
    """The hand-written backward of cosine_cost equals autograd through F.normalize, zero (padding) rows included."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(3, 6, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
    x[1, 4:] = 0
    y[2, 3:] = 0
    weights = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (cosine_cost, lambda a, b: 1 - F.normalize(a, dim=-1, eps=1e-8) @ F.normalize(b, dim=-1, eps=1e-8).mT):
        a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
        c = fn(a, b)
        (c * weights).sum().backward()
        grads.append((c.detach(), a.grad, b.grad))
    for mine, ref in zip(*grads):
        torch.testing.assert_close(mine, ref, rtol=1e-9, atol=1e-9)
    assert cosine_cost(x[0], y[0]).shape == (6, 4)


@pytest.mark.parametrize("subsequence", [False, True])
def test_padding_never_changes_value_or_gradient(subsequence):
    gen = torch.Generator().manual_seed(4)
    B, M, N = 8, 20, 9
    lengths = _random_lengths(B, M, N, gen)
    items = [torch.rand(int(m), int(n), generator=gen, dtype=torch.float64) * 2 for m, n in lengths]
    for trial in range(3):
        # pad to a random larger size with garbage, including huge values
        Mp, Np = M + trial * 3, N + trial
        padded = torch.randn(B, Mp, Np, generator=gen, dtype=torch.float64) * 1e3
        for b, c in enumerate(items):
            padded[b, : c.shape[0], : c.shape[1]] = c
        padded.requires_grad_()
        value = soft_dtw(padded, 0.1, lengths, subsequence)
        (value * torch.arange(1, B + 1)).sum().backward()
        for b, c in enumerate(items):
            c = c.clone().requires_grad_()
            alone = soft_dtw(c[None], 0.1, subsequence=subsequence)
            (alone * (b + 1)).sum().backward()
            assert value[b].item() == pytest.approx(alone.item(), rel=1e-12)
            g = padded.grad[b]
            torch.testing.assert_close(g[: c.shape[0], : c.shape[1]], c.grad, rtol=1e-10, atol=1e-14)
            # nothing leaks into padding
            assert g.abs().sum().item() == pytest.approx(c.grad.abs().sum().item(), rel=1e-12)


def test_float32_close_to_float64():
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(4, 75, 32, generator=gen), torch.randn(4, 30, 32, generator=gen)
    for subsequence in (False, True):
        c64 = cosine_cost(x.double(), y.double()).requires_grad_()
        c32 = cosine_cost(x, y).requires_grad_()
        v64, v32 = soft_dtw(c64, 0.1, subsequence=subsequence), soft_dtw(c32, 0.1, subsequence=subsequence)
        v64.sum().backward(), v32.sum().backward()
        assert v32.dtype == torch.float32
        torch.testing.assert_close(v32.double(), v64, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(c32.grad.double(), c64.grad, rtol=0, atol=1e-3)


def test_expected_alignment_is_the_gradient_and_a_probability():
    gen = torch.Generator().manual_seed(6)
    cost = torch.rand(3, 10, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([[10, 6], [7, 4], [4, 6]])
    for subsequence in (False, True):
        A = expected_alignment(cost, 0.2, lengths, subsequence)
        (grad,) = torch.autograd.grad(soft_dtw(cost, 0.2, lengths, subsequence).sum(), cost)
        torch.testing.assert_close(A, grad)
        assert A.min() >= 0 and A.max() <= 1 + 1e-12
        for b, (m, n) in enumerate(lengths.tolist()):
            # every query column is visited at least once by every path
            assert (A[b, :m, :n].sum(0) >= 1 - 1e-9).all()
            if not subsequence:
                assert A[b, 0, 0].item() == pytest.approx(1) and A[b, m - 1, n - 1].item() == pytest.approx(1)


def test_small_gamma_alignment_concentrates_on_the_hard_path():
    gen = torch.Generator().manual_seed(7)
    cost = torch.rand(2, 12, 5, generator=gen, dtype=torch.float64)
    for subsequence in (False, True):
        A = expected_alignment(cost, 1e-4, subsequence=subsequence)
        for b, path in enumerate(dtw_path(cost, subsequence=subsequence)):
            hard = torch.zeros(12, 5, dtype=torch.float64)
            hard[tuple(zip(*path))] = 1
            torch.testing.assert_close(A[b], hard, rtol=0, atol=1e-6)


costs = st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(0, 2**31 - 1)).map(
    lambda t: torch.rand(2, t[0], t[1], generator=torch.Generator().manual_seed(t[2]), dtype=torch.float64) * 2)


@settings(max_examples=40, deadline=None)
@given(cost=costs, gamma=st.floats(1e-3, 2.0))
def test_full_alignment_is_symmetric(cost, gamma):
    """Swapping target and query (transposing the cost) leaves full soft-DTW unchanged; subsequence is not symmetric."""
    torch.testing.assert_close(soft_dtw(cost, gamma), soft_dtw(cost.transpose(1, 2), gamma), rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(cost=costs, gamma=st.floats(1e-4, 1.0), subsequence=st.booleans())
def test_soft_dtw_is_within_gamma_log_paths_below_hard_dtw(cost, gamma, subsequence):
    """min - gamma*log(#paths) <= soft-DTW <= min, so soft-DTW -> hard DTW as gamma -> 0."""
    _, M, N = cost.shape
    log_paths = (M + N) * math.log(3) + math.log(M)  # a bound on the number of (subsequence) paths
    hard, soft = dtw(cost, subsequence=subsequence), soft_dtw(cost, gamma, subsequence=subsequence)
    assert (soft <= hard + 1e-9).all()
    assert (soft >= hard - gamma * log_paths - 1e-9).all()


@settings(max_examples=30, deadline=None)
@given(cost=costs, gamma=st.floats(1e-3, 2.0))
def test_subsequence_never_exceeds_full(cost, gamma):
    """Full paths are a subset of subsequence paths, so the subsequence soft-min is never larger."""
    assert (soft_dtw(cost, gamma, subsequence=True) <= soft_dtw(cost, gamma) + 1e-9).all()


def test_subsequence_finds_a_query_hidden_in_a_long_target():
    """A query cut from the target aligns at low cost under subsequence, not under full alignment."""
    gen = torch.Generator().manual_seed(8)
    target = torch.randn(1, 60, 64, generator=gen)
    query = target[:, 20:30] + 0.05 * torch.randn(1, 10, 64, generator=gen)
    c = cosine_cost(target, query)
    sub, full = soft_dtw(c, 0.01, subsequence=True).item(), soft_dtw(c, 0.01).item()
    assert sub < 0.1 < full


@pytest.mark.parametrize(
    "cost,kwargs,msg",
    [
        (torch.rand(4, 3), {}, "(B, M, N)"),
        (torch.rand(2, 4, 3), {"gamma": 0.0}, "gamma"),
        (torch.rand(2, 4, 3), {"lengths": torch.tensor([[4, 3]])}, "lengths must have shape"),
        (torch.rand(2, 4, 3), {"lengths": torch.tensor([[4, 3], [5, 3]])}, "lengths must lie"),
        (torch.rand(2, 4, 3), {"lengths": torch.tensor([[4, 3], [0, 3]])}, "lengths must lie"),
        (torch.zeros(2, 4, 3, dtype=torch.long), {}, "floating point"),
    ],
)
def test_bad_input_is_a_clear_error(cost, kwargs, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        soft_dtw(cost, **kwargs)
