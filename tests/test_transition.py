"""Semantic transition points (A2FA Eqs. 3-4 as resolved in vmr.alignment.transition) against a brute force."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vmr.alignment.transition import segment_mask, transition_points


def _cos(x: np.ndarray, y: np.ndarray) -> float:
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def brute_force(v: np.ndarray, a: int) -> tuple[int, int]:
    """Enumerate every split of one unpadded item (n, D); ties to the wider segment."""
    n = len(v)
    best_l, arg_l = -np.inf, None
    for b in range(0, a + 1):
        s = sum(_cos(v[0], v[i]) for i in range(0, b)) + sum(_cos(v[a], v[i]) for i in range(b, a + 1))
        if s > best_l + 1e-9:
            best_l, arg_l = s, b
    best_r, arg_r = -np.inf, None
    for b in range(n - 1, a - 1, -1):
        s = sum(_cos(v[a], v[i]) for i in range(a, b + 1)) + sum(_cos(v[n - 1], v[i]) for i in range(b + 1, n))
        if s > best_r + 1e-9:
            best_r, arg_r = s, b
    return arg_l, arg_r


@st.composite
def batches(draw):
    B = draw(st.integers(1, 4))
    M = draw(st.integers(1, 12))
    D = draw(st.integers(1, 6))
    lengths = [draw(st.integers(1, M)) for _ in range(B)]
    anchors = [draw(st.integers(0, n - 1)) for n in lengths]
    seed = draw(st.integers(0, 2**31 - 1))
    return lengths, anchors, M, D, seed


@settings(max_examples=150, deadline=None)
@given(batches())
def test_matches_brute_force_on_padded_batches(case):
    lengths, anchors, M, D, seed = case
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(len(lengths), M, D))
    # padded rows hold garbage: they must not influence anything
    mask = np.arange(M)[None, :] < np.array(lengths)[:, None]
    feats[~mask] = rng.normal(size=((~mask).sum(), D)) * 100
    bl, br = transition_points(torch.from_numpy(feats), torch.tensor(anchors), torch.from_numpy(mask))
    for b, (n, a) in enumerate(zip(lengths, anchors)):
        assert (int(bl[b]), int(br[b])) == brute_force(feats[b, :n], a)
        assert 0 <= bl[b] <= a <= br[b] <= n - 1


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 15), st.integers(0, 2**31 - 1))
def test_reversing_time_mirrors_the_segment(n, seed):
    rng = np.random.default_rng(seed)
    v = torch.from_numpy(rng.normal(size=(1, n, 5)))
    a = int(rng.integers(0, n))
    bl, br = transition_points(v, torch.tensor([a]))
    rbl, rbr = transition_points(v.flip(1), torch.tensor([n - 1 - a]))
    assert (int(rbl), int(rbr)) == (n - 1 - int(br), n - 1 - int(bl))


def test_finds_a_planted_segment():
    """Frames 5..11 share the anchor's direction, the rest share the two ends': the segment is recovered exactly."""
    rng = np.random.default_rng(0)
    e = np.eye(8)
    rows = [e[0]] * 5 + [e[1]] * 7 + [e[2]] * 6
    v = torch.from_numpy(np.stack(rows) + 0.05 * rng.normal(size=(18, 8)))[None]
    bl, br = transition_points(v, torch.tensor([8]))
    assert (int(bl), int(br)) == (5, 11)
    assert segment_mask(bl, br, 18)[0].nonzero().flatten().tolist() == list(range(5, 12))


def test_bad_input_is_refused():
    v = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="prefix"):
        transition_points(v, torch.tensor([0, 0]), torch.tensor([[True, False, True, False], [True] * 4]))
    with pytest.raises(ValueError, match="anchor"):
        transition_points(v, torch.tensor([0, 3]), torch.tensor([[True] * 4, [True, True, False, False]]))
    with pytest.raises(ValueError, match="valid row"):
        transition_points(v, torch.tensor([0, 0]), torch.tensor([[True] * 4, [False] * 4]))


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 12), st.integers(0, 2**31 - 1))
def test_right_split_is_hard_dtw_against_anchor_and_last_frame(n, seed):
    """Rows a..n-1 aligned by hard DTW (cost 1 - cos) to the two-frame sequence (v_a, v_{n-1}) split where our bR
    does: the transition point is a DTW path's change of column."""
    from vmr.alignment import cosine_cost, dtw_path

    rng = np.random.default_rng(seed)
    v = torch.from_numpy(rng.normal(size=(n, 4)))
    a = int(rng.integers(0, n - 1))
    _, br = transition_points(v[None], torch.tensor([a]))
    path = dtw_path(cosine_cost(v[a:], v[[a, n - 1]]))
    assert int(br) == a + max(row for row, col in path if col == 0)
