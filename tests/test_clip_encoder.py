"""vmr.features.clip: open_clip's eval preprocessing, normalised image/text/token embeddings, random weights seeded
identically in every process, checkpoints from a local path and from S3, the random-weights notice, `vmr embed-text`.

ViT-S-32 (random weights) keeps the towers fast on a CPU while exercising the same code as ViT-B-32.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from vmr import cli
from vmr.errors import ConfigError, InputError
from vmr.features.clip import ClipEncoder

MODEL = "ViT-S-32"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def encoder():
    """The seed-0 random-weights encoder; ``.logged`` holds the warnings logged while it was built."""
    torch.set_num_threads(2)
    handler = _Records()
    logging.getLogger("vmr.features.clip").addHandler(handler)
    try:
        enc = ClipEncoder(MODEL, "none", device="cpu", seed=0)
    finally:
        logging.getLogger("vmr.features.clip").removeHandler(handler)
    enc.logged = handler.records
    return enc


@pytest.fixture(scope="module")
def frames(rendered_videos):
    from vmr.features.video import decode_sampled

    _, f = decode_sampled(str(rendered_videos / "ntsc.mp4"), 1.0)
    return f  # 5 frames of 144x176


def test_preprocess_is_open_clips_eval_transform(encoder, frames):
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    # what open_clip.create_model_and_transforms builds as its eval transform for this model
    val = image_transform_v2(PreprocessCfg(**encoder.model.visual.preprocess_cfg), is_train=False)
    pixels = encoder.preprocess(frames)
    assert pixels.shape == (5, 3, 224, 224) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels, torch.stack([val(Image.fromarray(f)) for f in frames]), rtol=0, atol=0)
    with pytest.raises(InputError):
        encoder.preprocess(frames.astype(np.float32))


def test_image_embeddings_are_normalised_and_follow_the_pictures(encoder, frames):
    emb = encoder.encode_frames(frames)
    assert emb.shape == (5, encoder.dim) and emb.dtype == np.float32 and encoder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_frames(frames[:2]), emb[:2], atol=1e-5)  # batching changes nothing
    flipped = encoder.encode_frames(np.ascontiguousarray(frames[:, :, ::-1]))
    assert np.abs(flipped - emb).max() > 1e-3  # different pictures, different embeddings
    assert encoder.encode_frames(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, encoder.dim)


def test_text_and_token_embeddings(encoder):
    sentences = ["a red ball crosses the pitch", "a goalkeeper dives"]
    emb = encoder.encode_text(sentences)
    assert emb.shape == (2, encoder.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert abs(float(emb[0] @ emb[1])) < 0.9999

    tokens = encoder.encode_text_tokens(sentences[0])
    n_pieces = len(encoder._tokenizer.encode(sentences[0]))
    assert tokens.shape == (n_pieces + 2, encoder.dim)  # start token, word pieces, end token
    np.testing.assert_allclose(np.linalg.norm(tokens, axis=1), 1.0, atol=1e-5)
    # open_clip pools the end token: the sentence embedding is the last token row, in the same joint space
    np.testing.assert_allclose(tokens[-1], emb[0], atol=1e-5)
    with pytest.raises(InputError):
        encoder.encode_text("not a list")


_CHILD = """
import sys, json, numpy as np, torch
torch.set_num_threads(1)
from vmr.features.clip import ClipEncoder
e = ClipEncoder(sys.argv[1], "none", device="cpu", seed=int(sys.argv[2]))
img = np.random.default_rng(0).integers(0, 256, size=(2, 120, 160, 3), dtype=np.uint8)
print(json.dumps({"text": e.encode_text(["a bicycle kick"]).tolist(), "image": e.encode_frames(img).tolist()}))
"""


def test_random_weights_are_identical_in_every_process(encoder, checkpoint):
    """Ray workers and the driver build their own encoders: with --pretrained none they must agree exactly."""
    out = subprocess.run([sys.executable, "-c", _CHILD, MODEL, "0"], check=True, capture_output=True, text=True)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    img = np.random.default_rng(0).integers(0, 256, size=(2, 120, 160, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.array(child["text"]), encoder.encode_text(["a bicycle kick"]), atol=1e-5)
    np.testing.assert_allclose(np.array(child["image"]), encoder.encode_frames(img), atol=1e-5)
    _, seed7_text = checkpoint  # another seed, other weights
    assert np.abs(seed7_text - encoder.encode_text(["a corner kick"])).max() > 1e-2


def test_random_weights_notice(encoder):
    assert encoder.random_weights and encoder.pretrained == "none"
    assert "RANDOM weights" in encoder.notice()
    assert any("RANDOM weights" in r.getMessage() for r in encoder.logged)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint file of seed-7 random weights, and the text embedding those weights give."""
    enc = ClipEncoder(MODEL, "none", device="cpu", seed=7)
    path = tmp_path_factory.mktemp("ckpt") / "clip-seed7.pt"
    torch.save({"state_dict": enc.model.state_dict()}, path)
    return path, enc.encode_text(["a corner kick"])


def test_local_checkpoint(checkpoint, caplog):
    path, expected = checkpoint
    with caplog.at_level(logging.WARNING, logger="vmr.features.clip"):
        enc = ClipEncoder(MODEL, str(path), device="cpu")
    assert not enc.random_weights and enc.notice() == "" and enc.pretrained == str(path)
    assert not any("RANDOM" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(enc.encode_text(["a corner kick"]), expected, atol=1e-6)


@pytest.mark.slow
def test_s3_checkpoint(checkpoint, s3_server):
    path, expected = checkpoint
    uri = s3_server.bucket() + "/models/clip-seed7.pt"
    s3_server.upload(path, uri)
    enc = ClipEncoder(MODEL, uri, device="cpu")
    assert enc.pretrained == uri and not enc.random_weights
    np.testing.assert_allclose(enc.encode_text(["a corner kick"]), expected, atol=1e-6)


def test_bad_weights_and_models_are_user_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        ClipEncoder(MODEL, str(tmp_path / "missing.pt"), device="cpu")
    with pytest.raises(ConfigError, match="unknown CLIP model"):
        ClipEncoder("ViT-Q-99", "none", device="cpu")


def test_embed_text_cli(encoder, capsys):
    assert cli.main(["embed-text", "a red ball", "a blue triangle", "--model", MODEL, "--pretrained", "none",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    emb = np.array(out["embeddings"], dtype=np.float32)
    assert emb.shape == (2, out["dim"]) and out["dim"] == encoder.dim
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb, encoder.encode_text(["a red ball", "a blue triangle"]), atol=1e-5)
    assert out["random_weights"] is True and "RANDOM weights" in out["notice"]

    assert cli.main(["embed-text", "a red ball", "--model", MODEL, "--pretrained", "none"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("WARNING: CLIP model") and "'a red ball': 384-d unit vector" in text

    assert cli.main(["embed-text", "x", "--model", "ViT-Q-99"]) == 2  # a user error: one line, no traceback
    assert "unknown CLIP model" in capsys.readouterr().err
