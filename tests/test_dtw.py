"""Hard DTW: values and paths against brute force and tslearn, path validity, and the aligned target span that
crops MATR's decoder input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tslearn.metrics import dtw_subsequence_path

from vmr.alignment import aligned_span, cosine_cost, dtw, dtw_path


def _sq_euclidean(x, y):
    return ((x[:, None] - y[None]) ** 2).sum(-1)


def _all_full_paths(M, N, i=0, j=0):
    """Every monotone path from (0, 0) to (M-1, N-1) (brute force; tiny grids only)."""
    if (i, j) == (M - 1, N - 1):
        return [[(i, j)]]
    out = []
    for a, b in ((i + 1, j), (i, j + 1), (i + 1, j + 1)):
        if a < M and b < N:
            out += [[(i, j)] + rest for rest in _all_full_paths(M, N, a, b)]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_full_path_and_value_are_the_cheapest_of_all_paths(seed):
    rng = np.random.default_rng(seed)
    M, N = rng.integers(1, 7), rng.integers(1, 6)
    cost = torch.tensor(rng.uniform(0, 2, size=(M, N)))
    paths = _all_full_paths(M, N)
    costs = [sum(cost[i, j].item() for i, j in p) for p in paths]
    best = int(np.argmin(costs))
    assert dtw_path(cost) == paths[best]
    assert dtw(cost[None]).item() == pytest.approx(costs[best], rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_subsequence_path_and_value_match_tslearn(seed):
    rng = np.random.default_rng(seed)
    target, query = rng.normal(size=(rng.integers(1, 20), 3)), rng.normal(size=(rng.integers(1, 6), 3))
    cost = torch.tensor(_sq_euclidean(target, query))
    ref_path, ref_dist = dtw_subsequence_path(query, target)  # tslearn: (query index, target index) pairs
    assert dtw(cost[None], subsequence=True).item() == pytest.approx(ref_dist**2, rel=1e-10)
    assert dtw_path(cost, subsequence=True) == [(int(t), int(q)) for q, t in ref_path]


costs = st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31 - 1)).map(
    lambda t: torch.rand(t[0], t[1], generator=torch.Generator().manual_seed(t[2]), dtype=torch.float64))


@settings(max_examples=50, deadline=None)
@given(cost=costs, subsequence=st.booleans())
def test_path_is_a_valid_alignment_whose_cost_is_the_dtw_value(cost, subsequence):
    M, N = cost.shape
    path = dtw_path(cost, subsequence=subsequence)
    steps = {(b[0] - a[0], b[1] - a[1]) for a, b in zip(path, path[1:])}
    assert steps <= {(1, 0), (0, 1), (1, 1)}
    assert path[0][1] == 0 and path[-1][1] == N - 1  # the whole query, always
    if not subsequence:
        assert path[0] == (0, 0) and path[-1] == (M - 1, N - 1)
    assert sum(cost[i, j].item() for i, j in path) == pytest.approx(dtw(cost[None], subsequence=subsequence).item())
    if subsequence:
        start, end = aligned_span(cost).tolist()
        assert (start, end) == (path[0][0], path[-1][0] + 1)


def test_batched_with_padding_equals_each_item_alone():
    gen = torch.Generator().manual_seed(0)
    B, M, N = 6, 25, 8
    lengths = torch.stack([torch.randint(1, M + 1, (B,), generator=gen),
                           torch.randint(1, N + 1, (B,), generator=gen)], 1)
    padded = torch.rand(B, M, N, generator=gen) - 5.0  # padding far cheaper than any real cell: must still be ignored
    items = []
    for b, (m, n) in enumerate(lengths.tolist()):
        items.append(torch.rand(m, n, generator=gen))
        padded[b, :m, :n] = items[-1]
    for subsequence in (False, True):
        paths = dtw_path(padded, subsequence=subsequence, lengths=lengths)
        values = dtw(padded, lengths, subsequence)
        for b, c in enumerate(items):
            assert paths[b] == dtw_path(c, subsequence=subsequence)
            assert values[b].item() == pytest.approx(dtw(c[None], subsequence=subsequence).item(), rel=1e-6)
    spans = aligned_span(padded, lengths)
    assert spans.dtype == torch.long and spans.shape == (B, 2)
    for b, c in enumerate(items):
        assert spans[b].tolist() == aligned_span(c).tolist()
        assert 0 <= spans[b, 0] < spans[b, 1] <= lengths[b, 0]


def test_aligned_span_recovers_a_time_warped_clip_cut_from_the_target():
    """The MATR use: a query clip played at another speed is found at its place in the target."""
    gen = torch.Generator().manual_seed(1)
    B, M, D = 4, 80, 128
    target = torch.randn(B, M, D, generator=gen)
    truth = [(10, 30), (45, 58), (0, 12), (60, 80)]
    queries = []
    for b, (s, e) in enumerate(truth):
        rows = torch.linspace(s, e - 1, 15).round().long()  # resampled to 15 frames: slowed down or sped up
        queries.append(target[b, rows] + 0.1 * torch.randn(15, D, generator=gen))
    spans = aligned_span(cosine_cost(target, torch.stack(queries)))
    assert spans.tolist() == [list(t) for t in truth]


def test_lengths_not_allowed_with_a_single_matrix():
    with pytest.raises(ValueError, match="lengths"):
        aligned_span(torch.rand(5, 3), lengths=torch.tensor([[5, 3]]))
