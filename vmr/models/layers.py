"""Building blocks shared by the models: sine positional encodings, the input projection, DETR-style transformer
layers (positional encodings added to queries and keys of every attention), masked temporal conv heads, Xavier init.

Shapes use B = batch, L = sequence rows, D/d = channels. Masks are bool with True = a real row (the layout of
:func:`vmr.data.samples.collate`); ``nn.MultiheadAttention`` wants the opposite (True = ignore), which these layers
convert internally so callers never flip masks themselves.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def sine_positions(length: int, dim: int, device=None, dtype=torch.float32, base: float = 10000.0) -> torch.Tensor:
    """(length, dim) fixed sine/cosine encodings of row indices 0..length-1 (Vaswani et al.): channel ``2k`` is
    ``sin(i / base^(2k/dim))`` and ``2k+1`` the matching cosine. Row ``i`` always gets the same vector, whatever the
    padded length, so padding never changes a real row's encoding. ``dim`` must be even."""
    if dim % 2:
        raise ValueError(f"sine positional encoding needs an even dimension, got {dim}")
    pos = torch.arange(length, device=device, dtype=torch.float64)[:, None]
    freq = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim)
    out = torch.zeros(length, dim, device=device, dtype=torch.float64)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)
    return out.to(dtype)


class InputProjection(nn.Module):
    """Frame features (B, L, in_dim) -> (B, L, out_dim): ``layers`` blocks of LayerNorm -> Dropout -> Linear, with a
    ReLU between blocks (not after the last), as in MATR's "two-layer perceptron, each with layer normalization and
    dropout" (the Moment-DETR ``LinearLayer`` layout). Row-wise, so padding rows never affect real rows."""

    def __init__(self, in_dim: int, out_dim: int, layers: int = 2, dropout: float = 0.5):
        super().__init__()
        if layers < 1:
            raise ValueError("InputProjection needs at least one layer")
        blocks = []
        dims = [in_dim] + [out_dim] * layers
        for i in range(layers):
            blocks += [nn.LayerNorm(dims[i]), nn.Dropout(dropout), nn.Linear(dims[i], dims[i + 1])]
            if i < layers - 1:
                blocks.append(nn.ReLU())
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _ignore(mask: torch.Tensor | None) -> torch.Tensor | None:
    """True = real row (our convention) -> True = padding (``nn.MultiheadAttention``'s key_padding_mask)."""
    return None if mask is None else ~mask


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer whose positional encodings are added to the queries and keys of the
    self-attention (not the values), as in DETR/Moment-DETR: ``x (B, L, d)``, ``pos (B or 1, L, d)``,
    ``mask (B, L)`` True = real row."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x, pos=None, mask=None):
        q = _with_pos(x, pos)
        x = self.norm1(x + self.drop1(self.attn(q, q, x, key_padding_mask=_ignore(mask), need_weights=False)[0]))
        return self.norm2(x + self.drop2(self.ff(x)))


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer: self-attention over the ``l`` query slots, cross-attention into ``memory``, a
    feed-forward block. ``query_pos`` (l, d) is added to the slots' queries/keys, ``memory_pos`` (B, L, d) to the
    memory keys; ``memory_mask (B, L)`` True = a row the slots may attend to."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, tgt, memory, query_pos=None, memory_pos=None, memory_mask=None):
        q = _with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.drop1(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attn = self.cross_attn(_with_pos(tgt, query_pos), _with_pos(memory, memory_pos), memory,
                               key_padding_mask=_ignore(memory_mask), need_weights=False)[0]
        tgt = self.norm2(tgt + self.drop2(attn))
        return self.norm3(tgt + self.drop3(self.ff(tgt)))


class ConvHead(nn.Module):
    """Temporal conv head (B, L, in_dim) -> (B, L, out_dim): ``layers`` Conv1d of ``kernel`` (odd, "same" padding)
    along the rows, the first ``layers - 1`` with ``hidden`` channels and a ReLU, the last to ``out_dim`` raw outputs
    (logits / pre-activations: the caller applies sigmoid). Padding rows (``mask`` False) are zeroed before every
    conv, so a real row sees exactly the zeros it would see at the end of an unpadded sequence."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int = 3, kernel: int = 3):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"ConvHead needs an odd kernel, got {kernel}")
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.convs = nn.ModuleList(nn.Conv1d(dims[i], dims[i + 1], kernel, padding=kernel // 2) for i in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        keep = None if mask is None else mask[:, None, :].to(x.dtype)
        h = x.transpose(1, 2)
        for i, conv in enumerate(self.convs):
            if keep is not None:
                h = h * keep
            h = conv(h)
            if i < len(self.convs) - 1:
                h = F.relu(h)
        return h.transpose(1, 2)


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform init of every weight matrix/kernel (parameters with 2+ dims), as MATR and DETR do; biases and
    norms keep PyTorch's defaults."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = [
    "sine_positions", "InputProjection", "EncoderLayer", "DecoderLayer", "ConvHead", "xavier_init",
    "count_parameters",
]
