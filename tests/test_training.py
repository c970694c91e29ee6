"""The plain PyTorch training loop and the checkpoint format (no Ray, no MLflow)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from vmr.data.pretrain_clips import PretrainConfig, sample_clip_specs, video_extents
from vmr.data.specs import SpecDataset, make_loader
from vmr.errors import InputError
from vmr.features.settings import FeatureSettings
from vmr.features.store import FeatureStore
from vmr.models.a2fa import A2FA, A2FAConfig
from vmr.models.checkpoint import (
    CARD_FILE,
    FeatureMismatchError,
    check_features,
    find_checkpoint,
    load_model,
    load_train_state,
    read_card,
    save_checkpoint,
)
from vmr.models.matr import MATR, MATRConfig
from vmr.train.loop import (
    TrainConfig,
    evaluate,
    evaluate_baseline,
    lr_factor,
    make_optimizer,
    make_scheduler,
    save_plots,
    train_one_epoch,
)

DIM = 32
SETTINGS = FeatureSettings(model="ViT-B-32", pretrained="none", fps=1.0)


def _tiny_matr() -> MATR:
    torch.manual_seed(0)
    return MATR(MATRConfig(in_dim=DIM, d_model=32, ff_dim=64, enc_layers=1, dec_layers=1, heads=2, queries=4))


@pytest.fixture(scope="module")
def clip_store(tmp_path_factory) -> FeatureStore:
    """Four 40-row videos (1 row per second) of random unit features with the SETTINGS above."""
    store = FeatureStore(str(tmp_path_factory.mktemp("train_store")))
    rng = np.random.default_rng(0)
    for i in range(4):
        f = rng.normal(size=(40, DIM)).astype(np.float32)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        store.write(f"v{i}", np.arange(40) + 0.5, f, dict(
            source_uri=f"synthetic://v{i}", source_size=40, source_etag="1", duration=40.0, fps=1.0,
            model=SETTINGS.model, pretrained=SETTINGS.pretrained, extractor_version=SETTINGS.extractor_version))
    return store


@pytest.fixture(scope="module")
def clip_dataset(clip_store) -> SpecDataset:
    specs = sample_clip_specs(video_extents(clip_store), PretrainConfig(clip_min=4, clip_max=8, clips_per_video=3))
    return SpecDataset(specs, clip_store, max_target=40, max_query=12)


def test_training_lowers_the_loss_on_the_same_batches(clip_dataset):
    torch.set_num_threads(1)
    model = _tiny_matr()
    cfg = TrainConfig(epochs=4, batch_size=8, lr=1e-3)
    opt = make_optimizer(model, cfg)
    before = evaluate(model, make_loader(clip_dataset, 12)).metrics["loss"]
    for epoch in range(4):
        stats = train_one_epoch(model, make_loader(clip_dataset, 8, shuffle=True, seed=epoch), opt, grad_clip=1.0)
        assert stats.samples == len(clip_dataset) and stats.steps == -(-len(clip_dataset) // 8)
        assert set(stats.losses) >= {"total", "fg", "align_pre", "align_post"}
    after = evaluate(model, make_loader(clip_dataset, 12)).metrics["loss"]
    assert after < 0.9 * before


def test_evaluate_scores_the_baseline_on_its_own_clips(clip_dataset):
    # the un-augmented queries are cut from their targets: frame matching finds them (nearly) exactly
    originals = SpecDataset([s for s in clip_dataset.specs if s.augmentation == "none"], clip_dataset.features,
                            max_target=40, max_query=12)
    res = evaluate_baseline(make_loader(originals, 8), keep_examples=2)
    assert res.metrics["n"] == len(originals)
    assert res.metrics["R1@0.7"] == 100.0
    assert [p["qid"] for p in res.predictions] == [s.sample_id for s in originals.specs]
    assert len(res.examples) == 2 and res.examples[0]["alignment"].shape[1] == len(originals[0].query)


def test_plots_are_written(clip_dataset, tmp_path):
    res = evaluate(_tiny_matr(), make_loader(clip_dataset, 8), keep_examples=2)
    paths = save_plots(res.examples, str(tmp_path), "val")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["val_moments.png", "val_matrix_0.png", "val_matrix_1.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_warmup_cosine_schedule():
    assert lr_factor(0, 100, 10, "warmup_cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "warmup_cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "warmup_cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "warmup_cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "warmup_cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(7, 100, 10, "constant") == 1.0
    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(epochs=2, optimizer="adam", lr=1e-4, weight_decay=0.0, schedule="warmup_cosine", warmup_epochs=1)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, steps_per_epoch=4)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([2.5e-5, 5e-5, 7.5e-5, 1e-4])
    assert lrs[4] == pytest.approx(1e-4) and lrs[7] < lrs[5] < lrs[4]
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)


# ---- checkpoints ------------------------------------------------------------------------------------------------


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_round_trip_keeps_weights_config_and_feature_settings(tmp_path, clip_dataset):
    model = _tiny_matr()
    batch = clip_dataset.collate([clip_dataset[i] for i in range(3)])
    model.eval()
    with torch.no_grad():
        expected = model.predict(model(batch), batch)
    card = save_checkpoint(str(tmp_path / "ck"), model, SETTINGS, metrics={"val/mIoU": np.float32(12.5)},
                           extra={"epoch": 3}, train_state={"epoch": 3, "optimizer": {"x": 1}})
    assert card.features.dim == DIM  # filled in from the model's input width
    loaded, card2 = load_model(tmp_path / "ck")
    assert not loaded.training and isinstance(loaded, MATR)
    assert _same_weights(model, loaded)
    assert card2.kind == "matr" and card2.task == "video" and card2.config["d_model"] == 32
    assert card2.features == FeatureSettings("ViT-B-32", "none", 1.0, SETTINGS.extractor_version, DIM)
    assert card2.metrics == {"val/mIoU": 12.5} and card2.extra == {"epoch": 3}
    with torch.no_grad():
        got = loaded.predict(loaded(batch), batch)
    for a, b in zip(expected, got):
        np.testing.assert_allclose(a, b)
    assert load_train_state(str(tmp_path / "ck"))["epoch"] == 3
    # a file inside the checkpoint, and a Ray Train run folder (its newest checkpoint_*), name it too
    assert find_checkpoint(str(tmp_path / "ck" / CARD_FILE)) == str(tmp_path / "ck")
    for epoch in (0, 2, 1):
        save_checkpoint(str(tmp_path / "run" / f"checkpoint_epoch{epoch:04d}"), model, SETTINGS, extra={"epoch": epoch})
    assert read_card(str(tmp_path / "run")).extra["epoch"] == 2


def test_a2fa_checkpoint_and_a_half_written_one(tmp_path):
    torch.manual_seed(0)
    model = A2FA(A2FAConfig(dim=DIM, kernel_size=5, cnn_channels=(4, 4), mlp_hidden=8))
    save_checkpoint(str(tmp_path / "a"), model, SETTINGS)
    loaded, card = load_model(str(tmp_path / "a"))
    assert card.task == "text" and card.config["kernel_size"] == 5 and _same_weights(model, loaded)
    (tmp_path / "a" / CARD_FILE).unlink()  # a save killed before its card: not a checkpoint
    with pytest.raises(InputError, match="not a vmr checkpoint"):
        load_model(str(tmp_path / "a"))
    with pytest.raises(InputError, match="not found"):
        load_model(str(tmp_path / "nowhere"))


def test_weights_that_do_not_fit_the_card_are_refused(tmp_path):
    save_checkpoint(str(tmp_path / "ck"), _tiny_matr(), SETTINGS)
    card = json.loads((tmp_path / "ck" / CARD_FILE).read_text())
    card["config"]["d_model"] = 64
    (tmp_path / "ck" / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(InputError, match="do not fit"):
        load_model(str(tmp_path / "ck"))


def test_a_checkpoint_saved_before_input_centring_loads_without_it(tmp_path, clip_dataset):
    # the first checkpoints were trained without MATR's input centring and their cards have no "center": loading one
    # must not switch centring on (the new default), or it would predict something it was never trained for
    torch.manual_seed(0)
    old = MATR(dataclasses.replace(_tiny_matr().config, center="none"))
    save_checkpoint(str(tmp_path / "ck"), old, SETTINGS)
    card = json.loads((tmp_path / "ck" / CARD_FILE).read_text())
    del card["config"]["center"]
    (tmp_path / "ck" / CARD_FILE).write_text(json.dumps(card))
    loaded, card2 = load_model(str(tmp_path / "ck"))
    assert loaded.config.center == "none" and card2.config["center"] == "none"
    batch = clip_dataset.collate([clip_dataset[i] for i in range(3)])
    old.eval()
    with torch.no_grad():
        for a, b in zip(old.predict(old(batch), batch), loaded.predict(loaded(batch), batch)):
            np.testing.assert_allclose(a, b)
    assert _tiny_matr().config.center == "target"  # while new models centre by default


def test_features_made_otherwise_are_refused(tmp_path, clip_store):
    card = save_checkpoint(str(tmp_path / "ck"), _tiny_matr(), SETTINGS)
    check_features(card, clip_store)  # the store it was trained on: fine
    check_features(card, SETTINGS)
    for other, what in ((FeatureSettings("ViT-B-32", "openai", 1.0), "pretrained"),
                        (FeatureSettings("ViT-B-32", "none", 0.5), "fps"),
                        (FeatureSettings("ViT-L-14", "none", 1.0), "model"),
                        (FeatureSettings("ViT-B-32", "none", 1.0, "2"), "extractor_version"),
                        (FeatureSettings("ViT-B-32", "none", 1.0, SETTINGS.extractor_version, 768), "dim")):
        with pytest.raises(FeatureMismatchError, match=f"different: {what}") as e:
            check_features(card, other)
        assert "vmr extract --model ViT-B-32 --pretrained none --fps 1" in str(e.value)


def test_checkpoint_in_object_storage(s3_server, clip_store):
    base = s3_server.bucket() + "/runs/x/checkpoint_epoch0001"
    model = _tiny_matr()
    save_checkpoint(base, model, clip_store, metrics={"loss": 1.0})
    loaded, card = load_model(base)
    assert _same_weights(model, loaded) and card.source == base
    check_features(card, clip_store)
