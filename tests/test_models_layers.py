"""Shared model building blocks: positions, masks, padding invariance."""
from __future__ import annotations

import pytest
import torch

from vmr.models.layers import ConvHead, DecoderLayer, EncoderLayer, InputProjection, sine_positions, xavier_init


def test_sine_positions_do_not_depend_on_padded_length():
    short, long = sine_positions(5, 16), sine_positions(40, 16)
    assert short.shape == (5, 16)
    torch.testing.assert_close(short, long[:5])
    assert torch.allclose(short[:, 1::2][0], torch.ones(8))  # cos(0) = 1 on every odd channel of row 0
    # distinct rows get distinct codes, so order is recoverable
    assert torch.cdist(long, long).add(torch.eye(40) * 10).min() > 1e-3


def test_sine_positions_need_even_dim():
    with pytest.raises(ValueError, match="even"):
        sine_positions(4, 7)


def test_input_projection_is_row_wise_and_has_paper_layout():
    torch.manual_seed(0)
    proj = InputProjection(12, 8, layers=2, dropout=0.5).eval()
    kinds = [type(m).__name__ for m in proj.net]
    assert kinds == ["LayerNorm", "Dropout", "Linear", "ReLU", "LayerNorm", "Dropout", "Linear"]
    x = torch.randn(2, 5, 12)
    torch.testing.assert_close(proj(x)[:, :3], proj(x[:, :3]))


def _pad(x: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([x, torch.randn(x.shape[0], extra, x.shape[2]) * 5], dim=1)


def test_conv_head_ignores_padding_rows():
    torch.manual_seed(0)
    head = ConvHead(6, 8, 2, layers=3, kernel=3)
    x = torch.randn(1, 7, 6)
    alone = head(x, torch.ones(1, 7, dtype=torch.bool))
    padded = head(_pad(x, 4), torch.tensor([[True] * 7 + [False] * 4]))
    assert alone.shape == (1, 7, 2)
    torch.testing.assert_close(padded[:, :7], alone)


def test_conv_head_needs_odd_kernel():
    with pytest.raises(ValueError, match="odd"):
        ConvHead(4, 4, 1, kernel=4)


def test_encoder_and_decoder_layers_ignore_masked_rows():
    torch.manual_seed(0)
    enc, dec = EncoderLayer(8, 2, 16, 0.0).eval(), DecoderLayer(8, 2, 16, 0.0).eval()
    xavier_init(enc), xavier_init(dec)
    x, pos = torch.randn(1, 5, 8), sine_positions(9, 8)[None]
    alone = enc(x, pos[:, :5], torch.ones(1, 5, dtype=torch.bool))
    mask = torch.tensor([[True] * 5 + [False] * 4])
    padded = enc(_pad(x, 4), pos, mask)
    torch.testing.assert_close(padded[:, :5], alone)
    slots = torch.randn(1, 3, 8)
    out_alone = dec(torch.zeros(1, 3, 8), alone, slots, pos[:, :5], torch.ones(1, 5, dtype=torch.bool))
    out_padded = dec(torch.zeros(1, 3, 8), padded, slots, pos, mask)
    torch.testing.assert_close(out_padded, out_alone)
