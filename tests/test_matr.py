"""MATR: shapes, padding invariance, gradients, seconds in predictions, and overfitting a tiny batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vmr import config, timeline
from vmr.data.samples import Sample, collate
from vmr.errors import ConfigError
from vmr.metrics.video_query import summarize_ious, top1_iou
from vmr.models.matr import MATR, MATRConfig
from vmr.spans import temporal_iou


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models on a shared 2-core machine: a second OpenMP thread mostly spins (10x slower steps under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clip_sample(rng: np.random.Generator, m: int, rows: tuple[int, int], dim: int = 16, noise: float = 0.1,
                t0: float = 0.0, step: float = 2.0, name: str = "s") -> Sample:
    """A target of ``m`` random unit rows whose query is a noisy copy of target rows ``[r0, r1)``; the ground truth
    is those rows' interval in seconds (target clock starting at ``t0``)."""
    target = _unit(rng.normal(size=(m, dim)))
    r0, r1 = rows
    query = _unit(target[r0:r1] + noise * rng.normal(size=(r1 - r0, dim)))
    times = t0 + step * np.arange(m)
    return Sample(name, f"v_{name}", target, times, step, query, spans=[[times[r0], times[r0] + step * (r1 - r0)]])


def small_config(**kw) -> MATRConfig:
    base = dict(in_dim=16, d_model=32, heads=4, ff_dim=64, enc_layers=2, dec_layers=2, queries=4,
                dropout=0.0, proj_dropout=0.0)
    base.update(kw)
    return MATRConfig(**base)


def test_paper_size_shapes_and_crop():
    torch.manual_seed(0)
    model = MATR(MATRConfig()).eval()
    rng = np.random.default_rng(0)
    batch = collate([clip_sample(rng, 75, (10, 25), dim=512, name="a"), clip_sample(rng, 60, (40, 52), dim=512, name="b")])
    with torch.no_grad():
        out = model(batch)
    assert out["fg_logits"].shape == (2, 75)
    assert out["offsets"].shape == (2, 75, 2)
    assert out["target_fused"].shape == (2, 75, 1024) and out["query_fused"].shape == (2, 15, 1024)
    assert bool(((out["offsets"] >= 0) & (out["offsets"] <= 1)).all())
    s, e = out["crop"][:, 0], out["crop"][:, 1]
    assert bool((0 <= s).all()) and bool((s < e).all()) and bool((e <= torch.tensor([75, 60])).all())
    preds = model.predict(out, batch, top_k=5)
    assert [p.shape[1] for p in preds] == [3, 3] and all(1 <= len(p) <= 5 for p in preds)
    assert all(np.all(np.diff(p[:, 2]) <= 0) for p in preds)  # best first


@pytest.mark.parametrize("fusion", ["attend", "sequence"])
def test_padding_changes_nothing_for_an_item(fusion):
    torch.manual_seed(0)
    model = MATR(small_config(fusion=fusion)).eval()
    rng = np.random.default_rng(1)
    short = clip_sample(rng, 12, (3, 7), name="short")
    longer = clip_sample(rng, 20, (5, 14), name="long")
    with torch.no_grad():
        alone = model(collate([short]))
        both = model(collate([short, longer]))
    torch.testing.assert_close(both["fg_logits"][0, :12], alone["fg_logits"][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both["offsets"][0, :12], alone["offsets"][0], atol=1e-5, rtol=1e-4)
    assert both["crop"][0].tolist() == alone["crop"][0].tolist()
    np.testing.assert_allclose(model.predict(both, collate([short, longer]))[0],
                               model.predict(alone, collate([short]))[0], atol=1e-4)
    la, lb = model.loss(alone, collate([short])), model.loss(model(collate([short, short])), collate([short, short]))
    for k in ("fg", "l1", "giou", "align_pre", "align_post", "total"):
        torch.testing.assert_close(la[k], lb[k], atol=1e-5, rtol=1e-4)


def test_loss_gradients_match_finite_differences_in_float64():
    torch.manual_seed(0)
    cfg = small_config(in_dim=6, d_model=8, heads=2, ff_dim=12, enc_layers=1, dec_layers=1, queries=2)
    model = MATR(cfg).double().eval()
    rng = np.random.default_rng(2)
    batch = collate([clip_sample(rng, 7, (2, 5), dim=6, name="a"), clip_sample(rng, 5, (1, 3), dim=6, name="b")])

    def total(target, query):
        b = dict(batch, target=target, query=query)
        return model.loss(model(b), b)["total"]

    t = batch["target"].double().requires_grad_()
    q = batch["query"].double().requires_grad_()
    # fast mode checks a random directional derivative (v^T J u) against finite differences: 2 evaluations
    # instead of 2 per input element, the same test of the backward code paths
    assert torch.autograd.gradcheck(total, (t, q), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_every_part_gets_a_gradient():
    torch.manual_seed(0)
    model = MATR(small_config())
    rng = np.random.default_rng(3)
    batch = collate([clip_sample(rng, 14, (4, 9), name=str(i)) for i in range(2)])
    model.loss(model(batch), batch)["total"].backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert silent == []


def test_boundary_targets_rebuild_the_ground_truth_in_seconds():
    """Non-zero start and non-uniform steps: each foreground row's offsets reach exactly the span's ends."""
    rng = np.random.default_rng(4)
    times = np.array([100.0, 102.0, 104.5, 106.0, 108.0, 110.5, 112.0, 114.0])
    s = Sample("x", "v", _unit(rng.normal(size=(8, 16))), times, 2.0, _unit(rng.normal(size=(3, 16))),
               spans=[[102.0, 108.0]])
    batch = collate([s, clip_sample(rng, 11, (1, 4), name="pad")])
    model = MATR(small_config())
    gt, fg = model.boundary_targets(batch, 11)
    rows = np.flatnonzero(fg[0].numpy())
    assert rows.tolist() == [1, 2, 3]
    centre = rows + 0.5
    pos = np.stack([centre - gt[0, rows, 0].numpy() * 8, centre + gt[0, rows, 1].numpy() * 8], axis=1)
    np.testing.assert_allclose(timeline.position_to_seconds(times, 2.0, pos), [[102.0, 108.0]] * 3)


def test_boundary_targets_clip_a_span_that_runs_past_the_target():
    rng = np.random.default_rng(8)
    s = Sample("x", "v", _unit(rng.normal(size=(6, 16))), 50.0 + 2.0 * np.arange(6), 2.0,
               _unit(rng.normal(size=(2, 16))), spans=[[58.0, 90.0]])
    gt, fg = MATR(small_config()).boundary_targets(collate([s]), 6)
    assert fg[0].tolist() == [False] * 4 + [True] * 2
    np.testing.assert_allclose(gt[0, 4:].numpy() * 6, [[0.5, 1.5], [1.5, 0.5]])  # right edge at the video's end


def test_predict_reports_seconds_on_the_items_clock_with_probability_scores():
    times = np.array([10.0, 12.0, 14.5, 16.0, 18.0])
    rng = np.random.default_rng(5)
    s = Sample("x", "v", _unit(rng.normal(size=(5, 16))), times, 2.0, _unit(rng.normal(size=(2, 16))))
    batch = collate([s])
    logits = torch.tensor([[-4.0, 1.0, 3.0, 2.0, -3.0]])
    # rows 1..3 all propose positions [1, 4) -> [12.0, 18.0) s; rows 0 and 4 propose single rows
    left = torch.tensor([0.5, 0.5, 1.5, 2.5, 0.5]) / 5
    right = torch.tensor([0.5, 2.5, 1.5, 0.5, 0.5]) / 5
    out = {"fg_logits": logits, "offsets": torch.stack([left, right], -1)[None],
           "target_mask": batch["target_mask"]}
    pred = MATR(small_config(proposals="offsets")).predict(out, batch, top_k=5)[0]  # the paper's decoding
    np.testing.assert_allclose(pred[0], [12.0, 18.0, torch.sigmoid(torch.tensor(3.0)).item()], rtol=1e-6)
    # the two other proposals of the same span are suppressed (IoU 1 > 0.7); single-row spans survive
    np.testing.assert_allclose(pred[1:, :2], [[18.0, 20.0], [10.0, 12.0]])
    np.testing.assert_allclose(pred[:, 2], torch.sigmoid(torch.tensor([3.0, -3.0, -4.0])).numpy(), rtol=1e-6)


def test_run_proposals_follow_the_foreground_curve_past_the_offsets():
    """Rows 1..6 are foreground but every row proposes only itself: the run [1, 7) rows is the best moment."""
    times = 2.0 * np.arange(8)
    rng = np.random.default_rng(7)
    batch = collate([Sample("x", "v", _unit(rng.normal(size=(8, 16))), times, 2.0, _unit(rng.normal(size=(2, 16))))])
    logits = torch.tensor([[-4.0, 1.0, 2.0, 3.0, 2.0, 1.0, 0.5, -3.0]])
    half_row = torch.full((8,), 0.5 / 8)
    out = {"fg_logits": logits, "offsets": torch.stack([half_row, half_row], -1)[None],
           "target_mask": batch["target_mask"]}
    runs = MATR(small_config(proposals="offsets+runs")).predict(out, batch, top_k=3)[0]
    np.testing.assert_allclose(runs[0, :2], [2.0, 14.0])
    assert runs[0, 2] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item(), abs=1e-5)
    rows = MATR(small_config(proposals="offsets")).predict(out, batch, top_k=3)[0]
    np.testing.assert_allclose(rows[0, :2], [6.0, 8.0])  # the paper's decoding: the best row's own span


def test_similarity_prior_starts_the_model_at_the_cosine_run():
    """With the prior, an untrained model's foreground curve peaks where the query's mean row matches the target."""
    from vmr.models.matr import similarity_prior

    rng = np.random.default_rng(8)
    target = _unit(rng.normal(size=(30, 16)))
    query = _unit(target[12:16] + 0.05 * rng.normal(size=(4, 16)))
    batch = collate([Sample("x", "v", target, 2.0 * np.arange(30), 2.0, query, spans=[[24.0, 32.0]])])
    prior = similarity_prior(batch["target"], batch["query"], batch["target_mask"], batch["query_mask"])[0]
    assert float(prior.max()) == pytest.approx(0.5) and float(prior.median()) == pytest.approx(-0.5, abs=0.05)
    assert 12 <= int(prior.argmax()) < 16
    torch.manual_seed(0)
    with_prior = MATR(small_config()).eval()
    with torch.no_grad():
        fg = torch.sigmoid(with_prior(batch)["fg_logits"][0])
    assert 12 <= int(fg.argmax()) < 16 and float(fg[12:16].mean()) > 0.5 > float(fg[20:].mean())
    none = MATR(small_config(prior="none"))
    assert not hasattr(none, "prior_scale")


def test_config_overrides_and_bad_values():
    cfg = config.from_dict(MATRConfig, {"fusion": "sequence", "gamma": 0.5})
    assert cfg.fusion == "sequence" and cfg.d_model == 1024 and cfg.queries == 10
    with pytest.raises(ConfigError, match="fusion"):
        MATR(MATRConfig(fusion="mean"))
    with pytest.raises(ConfigError, match="overrides"):
        config.from_dict(MATRConfig, {"fusion": "mean"}, "overrides")
    with pytest.raises(ConfigError, match="heads"):
        MATR(small_config(d_model=30, heads=4))


def test_empty_query_is_a_clear_error():
    rng = np.random.default_rng(6)
    a = clip_sample(rng, 6, (1, 3), name="ok")
    b = Sample("empty", "v", _unit(rng.normal(size=(6, 16))), np.arange(6.0), 1.0, np.zeros((0, 16)))
    with pytest.raises(ValueError, match="empty"):
        MATR(small_config())(collate([a, b]))


def _recall_at_1(preds: list[np.ndarray], batch: dict, iou: float) -> float:
    """R@1 at ``iou`` in percent, by the project's video-query metric."""
    ious = [top1_iou(p, batch["spans"][b][batch["span_mask"][b]].numpy()) for b, p in enumerate(preds)]
    return summarize_ious(ious, thresholds=(iou,))[f"R1@{iou:g}"]


def test_overfits_a_tiny_batch():
    """Four targets, each with a noisy clip of itself as the query: training drives the localisation losses to ~0
    and every item's top prediction matches its ground truth at IoU >= 0.7."""
    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    samples = [clip_sample(rng, m, rows, t0=t0, name=str(i))
               for i, (m, rows, t0) in enumerate([(20, (3, 9), 0.0), (16, (8, 14), 30.0),
                                                  (24, (0, 5), 5.0), (18, (10, 17), 0.0)])]
    batch = collate(samples)
    model = MATR(small_config(d_model=64, ff_dim=128))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    first = None
    for _ in range(300):
        terms = model.loss(model(batch), batch)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        first = first or {k: float(v.detach()) for k, v in terms.items()}
    model.eval()
    with torch.no_grad():
        out = model(batch)
        terms = model.loss(out, batch)
    seen = {k: round(float(v), 4) for k, v in terms.items()}
    assert float(terms["fg"]) < 0.02 and float(terms["seg"]) < 0.1, seen
    assert float(terms["fg"] + terms["seg"]) < 0.05 * float(first["fg"] + first["seg"]), (first, seen)
    for k in ("align_pre", "align_post"):  # decreased, or the ground-truth alignment's hinge is met
        assert float(terms[k]) < first[k] or float(terms[k]) == 0.0, (k, first[k], float(terms[k]))
    assert _recall_at_1(model.predict(out, batch, top_k=5), batch, 0.7) == 100.0
    # the decoder's crop (post-fusion alignment) found each query's true rows
    gt_rows = torch.tensor([[3, 9], [8, 14], [0, 5], [10, 17]])
    assert bool((temporal_iou(out["crop"].double(), gt_rows.double()) >= 0.7).all()), out["crop"].tolist()


def test_a_component_shared_by_every_frame_does_not_change_the_prediction():
    """Footage of one match shares a large common feature component (see ``center`` in vmr.models.matr): adding the
    same vector to every target and query row must leave the predictions unchanged, and with ``center="none"`` (the
    paper's literal input) it does not."""
    rng = np.random.default_rng(3)
    plain = clip_sample(rng, 20, (5, 11), name="plain")
    shift = 3.0 * rng.normal(size=16)
    shifted = Sample("shifted", "v", plain.target + shift, plain.target_times, plain.step, plain.query + shift,
                     spans=plain.spans)
    for center, same in (("target", True), ("none", False)):
        torch.manual_seed(0)
        model = MATR(small_config(center=center)).eval()
        with torch.no_grad():
            a, b = model(collate([plain])), model(collate([shifted]))
        close = torch.allclose(a["fg_logits"], b["fg_logits"], atol=1e-4) and torch.equal(a["crop"], b["crop"])
        assert close == same, center
