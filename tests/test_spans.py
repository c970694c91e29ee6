import numpy as np
import pytest
import torch

from vmr.spans import cxw_to_se, generalized_iou_1d, nms_1d, pairwise_iou, se_to_cxw, temporal_iou


def test_iou_known_values():
    a = np.array([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0], [5.0, 5.0]])
    b = np.array([[5.0, 15.0], [0.0, 10.0], [10.0, 20.0], [5.0, 5.0]])
    np.testing.assert_allclose(temporal_iou(a, b), [5 / 15, 1.0, 0.0, 0.0])


def test_iou_is_symmetric_and_bounded():
    rng = np.random.default_rng(0)
    s = rng.uniform(0, 100, (200, 2))
    a = np.sort(s, axis=1)
    b = np.sort(rng.uniform(0, 100, (200, 2)), axis=1)
    iou = temporal_iou(a, b)
    np.testing.assert_allclose(iou, temporal_iou(b, a))
    assert (iou >= 0).all() and (iou <= 1).all()
    np.testing.assert_allclose(temporal_iou(a, a), 1.0)


def test_torch_and_numpy_agree_and_keep_kind():
    rng = np.random.default_rng(1)
    a = np.sort(rng.uniform(0, 50, (30, 2)), axis=1)
    b = np.sort(rng.uniform(0, 50, (20, 2)), axis=1)
    p_np = pairwise_iou(a, b)
    p_t = pairwise_iou(torch.from_numpy(a), torch.from_numpy(b))
    assert p_np.shape == (30, 20) and isinstance(p_t, torch.Tensor)
    np.testing.assert_allclose(p_t.numpy(), p_np)
    # element (i, j) is the IoU of a[i] with b[j]
    assert p_np[3, 7] == pytest.approx(float(temporal_iou(a[3], b[7])))


def test_giou_matches_definition_and_has_gradient_when_disjoint():
    pred = torch.tensor([[0.0, 2.0], [0.0, 10.0], [0.0, 10.0]], requires_grad=True)
    gt = torch.tensor([[4.0, 6.0], [0.0, 10.0], [5.0, 15.0]])
    g = generalized_iou_1d(pred, gt)
    # disjoint: IoU 0, hull 6, union 4 -> -2/6; identical: 1; overlap 5/15 with hull 15 = union -> 1/3
    torch.testing.assert_close(g, torch.tensor([-2 / 6, 1.0, 1 / 3]))
    (1 - g).sum().backward()
    assert pred.grad[0].abs().sum() > 0
    # pairwise matching-cost layout
    assert generalized_iou_1d(pred[:, None], gt[None]).shape == (3, 3)


def test_nms_sorts_suppresses_and_limits():
    spans = np.array([
        [0.0, 10.0, 0.5],
        [0.0, 9.0, 0.9],   # the best; IoU 0.9 with the first, which it suppresses
        [20.0, 30.0, 0.7],
        [21.0, 30.0, 0.1],  # IoU 0.9 with [20, 30): suppressed
        [40.0, 50.0, 0.3],
    ])
    out = nms_1d(spans, iou_threshold=0.7)
    np.testing.assert_array_equal(out[:, 2], [0.9, 0.7, 0.3])
    assert (np.diff(out[:, 2]) <= 0).all()
    assert len(nms_1d(spans, iou_threshold=0.7, top_k=2)) == 2
    # threshold 1.0 only sorts
    assert len(nms_1d(spans, iou_threshold=1.0)) == 5
    # torch in, torch out
    out_t = nms_1d(torch.from_numpy(spans).float(), 0.7)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), out, rtol=1e-6)


def test_nms_keeps_no_pair_above_threshold():
    rng = np.random.default_rng(2)
    s = np.sort(rng.uniform(0, 60, (300, 2)), axis=1)
    spans = np.column_stack([s, rng.uniform(size=300)])
    out = nms_1d(spans, iou_threshold=0.5)
    iou = pairwise_iou(out[:, :2], out[:, :2])
    np.fill_diagonal(iou, 0)
    assert iou.max() <= 0.5
    # the best span always survives
    np.testing.assert_array_equal(out[0], spans[np.argmax(spans[:, 2])])


def test_nms_rejects_bad_shape_and_handles_empty():
    with pytest.raises(ValueError, match="K, 3"):
        nms_1d(np.zeros((4, 2)))
    assert nms_1d(np.zeros((0, 3))).shape == (0, 3)


def test_cxw_round_trip():
    se = np.array([[2.0, 6.0], [0.0, 1.0]])
    np.testing.assert_allclose(se_to_cxw(se), [[4.0, 4.0], [0.5, 1.0]])
    np.testing.assert_allclose(cxw_to_se(se_to_cxw(se)), se)
    t = torch.tensor([[4.0, 4.0]])
    torch.testing.assert_close(cxw_to_se(t), torch.tensor([[2.0, 6.0]]))


def test_nms_equals_the_plain_greedy_definition():
    rng = np.random.default_rng(3)
    s = np.sort(rng.integers(0, 40, (120, 2)).astype(float), axis=1)
    spans = np.column_stack([s, rng.integers(0, 10, 120) / 10.0])  # many score ties
    expected = []
    for k in np.argsort(-spans[:, 2], kind="stable"):
        if all(temporal_iou(spans[k, :2], e[:2]) <= 0.4 for e in expected):
            expected.append(spans[k])
    np.testing.assert_array_equal(nms_1d(spans, 0.4), np.array(expected))
    np.testing.assert_array_equal(nms_1d(spans, 0.4, top_k=3), np.array(expected[:3]))
