"""A2FA + F2SGD: text-query moment retrieval by anchor-aware feature alignment and frame-frame similarity guided
detection (Tan et al., "Anchor-Aware Similarity Cohesion in Target Frames Enables Predicting Temporal Moment
Boundaries in 2D"). Equation numbers below are the paper's.

Batch (:func:`vmr.data.samples.collate`): ``target`` (B, M, D) L2-normalised frame features, one row per sampled frame
(the paper's N is our M), ``target_mask`` (B, M); ``query`` (B, Nq, D) with ``query_mask``: the CLIP sentence
embedding, one row per item.

Pipeline, per item, over its valid rows only:
  1. query-embedded frames  v^e_i = c_i q + (1 - c_i) v_i,  c_i = cos(q, v_i)                          (Eq. 1)
  2. anchor  A = argmax_i cos(v^e_i, q)                                                                (Eq. 2)
  3. transition points [bL, bR] around A on V^e (:mod:`vmr.alignment.transition`), mask m               (Eqs. 3-6)
  4. query-aggregated feature g by cross-attention of q over the frames in [bL, bR]                     (Eqs. 7-8)
  5. relevance r_i = tanh(w (W1r v_i)·(W2r g) + β), re-weighted frames v^r_i = r_i v_i                  (Eqs. 9-10)
  6. alignment α_i = sigmoid((W1a v^r_i)·(W2a q)) inside [bL, bR], 0 outside; v^a_i = α_i q + (1-α_i) v^r_i (11-12)
  7. S_ij = cos(v^a_i, v^a_j); P = MLP(CNNs(S)), a vertex score per cell (i, j)                        (Eq. 13)
  8. loss ||P - G||² (Eq. 14); prediction: top-k cells with i <= j (Eq. 15), cell (i, j) = rows [i, j].

Choices where the paper is silent (each a config field where it is a size or a switch):
- Query: the masked mean of the valid query rows, L2-normalised; for the intended single sentence embedding this is
  the embedding itself. Token features (several rows) are therefore mean-pooled, which is not CLIP's sentence feature.
- Attention logits (Eq. 7) and the bilinear scores (Eqs. 9, 11) are not divided by sqrt(d): the inputs are
  L2-normalised, so the logits are already O(1/sqrt(d)) at Xavier init. Q^g, K^g, V^g, W^r, W^a are bias-free
  matrices ("learnable matrices"); w starts at 1 and β at ``reweight_bias_init``.
- F2SGD: ``Conv(1 -> c1, C) -> ReLU -> Conv(c1 -> c2, C) -> ReLU`` with "same" zero padding (C odd) so P is M x M,
  then a per-cell MLP ``c2 -> mlp_hidden -> 1`` with a ReLU between and a sigmoid at the end (P is "the probability
  of each position being the top-right vertex"). The last bias starts at logit(``vertex_prior``) = logit(0.01), as
  RetinaNet does for rare positives: with P = 0.5 at init the sum over n² negative cells drives every logit deep
  into the sigmoid's flat tail within a few steps and the single positive cell per item is never learnt (seen on
  the overfit test: stuck at loss = 1 per item, i.e. P = 0 everywhere). Cells outside an item's valid n x n block
  are zeroed in the CNN's input and after its first layer, so a valid cell's score is exactly what the unpadded
  n x n matrix gives. Channels default to (16, 16) and the MLP to 32 wide; on CPU the convs' backward runs as forward
  convolutions (:class:`SameConv2d`), which the benchmark shows is markedly faster than PyTorch's for 21x21 kernels.
- Ground truth G (Eq. 14): each window ``[s, e)`` seconds covers rows ``[i0, i1)`` (:func:`vmr.timeline.span_to_rows`,
  rows whose centre lies inside); G is 1 at cell ``(i0, i1 - 1)`` of *every* window and 0 elsewhere (several windows
  give several 1s, the paper's point target applied to each). The loss sums ``(P - G)²`` over the item's valid
  n x n cells (the whole matrix, as in Eq. 14, not only i <= j) and averages over items.
- Prediction: cell (i, j), i <= j, is the span from the start of row i to the end of row j in seconds on the item's
  own ``target_times`` clock (:func:`vmr.timeline.position_to_seconds` of positions i and j + 1); its score is
  P[i, j], nothing added. Neighbouring cells of one peak are near-duplicate spans, so by default greedy 1-D NMS
  (:func:`vmr.spans.nms_1d`, IoU > ``nms_iou`` dropped) runs over the cells in score order until ``top_k`` are kept;
  ``nms_iou=None`` gives the paper's plain top-k with no post-processing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vmr import timeline
from vmr.alignment.transition import segment_mask, transition_points
from vmr.models.layers import xavier_init
from vmr.spans import nms_1d


class _SameConvFunction(torch.autograd.Function):
    """Stride-1 "same" 2-D convolution with an odd square kernel whose backward is written as two forward convolutions:
    grad_input = conv(grad, flipped transposed kernel), grad_weight = conv of the batch-transposed input with the
    batch-transposed grad. Same values as PyTorch's backward (checked against it in the tests); on CPU with F2SGD's
    21x21 kernels it is faster (benchmarks/train_step_a2fa.py measures both in one run)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        pad = weight.shape[-1] // 2
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = F.conv2d(grad, weight.flip(2, 3).transpose(0, 1), padding=pad)
        if ctx.needs_input_grad[1]:
            gw = F.conv2d(x.transpose(0, 1), grad.transpose(0, 1), padding=pad).transpose(0, 1)
        if ctx.needs_input_grad[2]:
            gb = grad.sum(dim=(0, 2, 3))
        return gx, gw, gb


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d(cin, cout, k, padding=k // 2)`` (k odd); on CPU its backward is :class:`_SameConvFunction`'s unless
    ``fast_cpu_backward`` is False. Same parameters and state-dict keys as ``nn.Conv2d``."""

    fast_cpu_backward = True

    def __init__(self, cin: int, cout: int, kernel: int):
        if kernel % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel}")
        super().__init__(cin, cout, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_cpu_backward and x.device.type == "cpu" and torch.is_grad_enabled():
            return _SameConvFunction.apply(x, self.weight, self.bias)
        return super().forward(x)


@dataclass
class A2FAConfig:
    """Sizes and switches of A2FA + F2SGD; defaults are the paper's QVHighlights settings where it gives them."""

    dim: int = 512                      # d: CLIP ViT-B/32 feature size (frames and sentence)
    kernel_size: int = 21               # C: F2SGD conv kernel (21 QVHighlights; 27 Charades-STA, ActivityNet)
    cnn_channels: tuple[int, int] = (16, 16)   # output channels of the two conv layers (unspecified in the paper)
    mlp_hidden: int = 32                # hidden width of the per-cell MLP (unspecified)
    reweight_bias_init: float = 0.0     # initial β of Eq. 9 (unspecified)
    vertex_prior: float = 0.01          # P at init: the last MLP bias starts at logit(vertex_prior) (unspecified)
    top_k: int = 10                     # k of Eq. 15 (10 QVHighlights, 1 otherwise)
    nms_iou: float | None = 0.7         # drop a cell's span whose IoU with a better kept one exceeds this; None = off


class A2FA(nn.Module):
    """A2FA alignment + F2SGD detector. ``forward(batch)`` returns, with B items of M padded rows:

    ``query`` (B, D) pooled sentence feature; ``anchor`` (B,) long row; ``bounds`` (B, 2) long inclusive rows
    ``[bL, bR]``; ``anchor_mask`` (B, M) bool (True = unmasked, m_i = 0); ``relevance`` r (B, M); ``alpha`` (B, M);
    ``similarity`` S (B, M, M); ``vertex`` P (B, M, M) in [0, 1], zero outside each item's valid block.
    """

    kind = "a2fa"

    def __init__(self, config: A2FAConfig | None = None):
        super().__init__()
        cfg = config or A2FAConfig()
        if cfg.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {cfg.kernel_size}")
        if not 0 < cfg.vertex_prior < 1:
            raise ValueError(f"vertex_prior must be in (0, 1), got {cfg.vertex_prior}")
        if cfg.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {cfg.top_k}")
        self.config = cfg
        d = cfg.dim
        self.attn_q = nn.Linear(d, d, bias=False)      # Q^g
        self.attn_k = nn.Linear(d, d, bias=False)      # K^g
        self.attn_v = nn.Linear(d, d, bias=False)      # V^g
        self.rel_frame = nn.Linear(d, d, bias=False)   # W^r_1
        self.rel_global = nn.Linear(d, d, bias=False)  # W^r_2
        self.align_frame = nn.Linear(d, d, bias=False)  # W^a_1
        self.align_query = nn.Linear(d, d, bias=False)  # W^a_2
        c1, c2 = cfg.cnn_channels
        k = cfg.kernel_size
        self.conv1 = SameConv2d(1, c1, k)
        self.conv2 = SameConv2d(c1, c2, k)
        self.mlp = nn.Sequential(nn.Conv2d(c2, cfg.mlp_hidden, 1), nn.ReLU(), nn.Conv2d(cfg.mlp_hidden, 1, 1))
        xavier_init(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.bias)
        prior = cfg.vertex_prior
        nn.init.constant_(self.mlp[-1].bias, float(np.log(prior / (1 - prior))))
        self.rel_scale = nn.Parameter(torch.tensor(1.0))                  # w
        self.rel_bias = nn.Parameter(torch.tensor(cfg.reweight_bias_init))  # β

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, batch: dict) -> dict:
        p = self.conv1.weight
        v = batch["target"].to(device=p.device, dtype=p.dtype)
        valid = batch["target_mask"].to(device=p.device, dtype=torch.bool)
        B, M, D = v.shape
        if D != self.config.dim:
            raise ValueError(f"target features have {D} channels, the model expects dim={self.config.dim}")
        if (valid.sum(1) == 0).any():
            raise ValueError("an item has no valid target rows")
        v = v * valid[..., None]
        q = self._pool_query(batch, p)
        keep = valid.to(v.dtype)

        # Eq. 1-2: query-embedded frames and the anchor (no gradient through the argmax)
        c = torch.einsum("bmd,bd->bm", F.normalize(v, dim=-1), q)
        ve = c[..., None] * q[:, None, :] + (1 - c[..., None]) * v
        anchor_score = torch.einsum("bmd,bd->bm", F.normalize(ve, dim=-1), q)
        anchor = anchor_score.detach().masked_fill(~valid, float("-inf")).argmax(dim=1)
        # Eq. 3-6
        b_left, b_right = transition_points(ve.detach(), anchor, valid)
        seg = segment_mask(b_left, b_right, M)

        # Eq. 7-8: cross-attention of q over the anchor segment
        logits = torch.einsum("bd,bmd->bm", self.attn_q(q), self.attn_k(v)).masked_fill(~seg, float("-inf"))
        g = torch.einsum("bm,bmd->bd", logits.softmax(dim=1), self.attn_v(v))
        # Eq. 9-10: re-weighting by relevance to g
        r = torch.tanh(self.rel_scale * torch.einsum("bmd,bd->bm", self.rel_frame(v), self.rel_global(g))
                       + self.rel_bias) * keep
        vr = r[..., None] * v
        # Eq. 11-12: alignment inside the segment
        a_logit = torch.einsum("bmd,bd->bm", self.align_frame(vr), self.align_query(q))
        alpha = torch.where(seg, torch.sigmoid(a_logit), torch.zeros_like(a_logit))
        va = alpha[..., None] * q[:, None, :] + (1 - alpha[..., None]) * vr

        # Eq. 13: frame-frame cosine matrix -> masked CNN -> per-cell MLP
        un = F.normalize(va, dim=-1)
        cell = (keep[:, :, None] * keep[:, None, :])[:, None]  # (B, 1, M, M)
        sim = torch.einsum("bid,bjd->bij", un, un) * cell[:, 0]
        h = F.relu(self.conv1(sim[:, None])) * cell
        h = F.relu(self.conv2(h))
        vertex = torch.sigmoid(self.mlp(h))[:, 0] * cell[:, 0]
        return {
            "query": q, "anchor": anchor, "bounds": torch.stack([b_left, b_right], dim=1), "anchor_mask": seg,
            "relevance": r, "alpha": alpha, "similarity": sim, "vertex": vertex,
        }

    @staticmethod
    def _pool_query(batch: dict, like: torch.Tensor) -> torch.Tensor:
        """(B, Nq, D) query rows -> (B, D): masked mean of the valid rows, L2-normalised."""
        qry = batch["query"].to(device=like.device, dtype=like.dtype)
        qmask = batch.get("query_mask")
        qmask = torch.ones(qry.shape[:2], dtype=torch.bool, device=like.device) if qmask is None \
            else qmask.to(device=like.device, dtype=torch.bool)
        if (qmask.sum(1) == 0).any():
            raise ValueError("an item has no valid query rows")
        q = (qry * qmask[..., None]).sum(1) / qmask.sum(1, keepdim=True)
        return F.normalize(q, dim=-1)

    # -------------------------------------------------------------------------------------------------- loss
    def loss(self, out: dict, batch: dict) -> dict:
        """``mse``: Eq. 14, the sum of (P - G)² over each item's valid n x n cells, averaged over items."""
        P = out["vertex"]
        G = self.ground_truth(batch).to(device=P.device, dtype=P.dtype)
        valid = batch["target_mask"].to(device=P.device, dtype=P.dtype)
        cell = valid[:, :, None] * valid[:, None, :]
        mse = (((P - G) ** 2) * cell).sum(dim=(1, 2)).mean()
        return {"mse": mse, "total": mse}

    @staticmethod
    def ground_truth(batch: dict) -> torch.Tensor:
        """(B, M, M) float G: 1 at the (first row, last row) cell of every ground-truth window, 0 elsewhere."""
        times = batch["target_times"].cpu().numpy()
        steps = batch["step"].cpu().numpy()
        spans = batch["spans"].cpu().numpy()
        smask = batch["span_mask"].cpu().numpy()
        n_rows = batch["target_mask"].sum(1).cpu().numpy()
        B, M = times.shape
        G = np.zeros((B, M, M), np.float32)
        for b in range(B):
            n = int(n_rows[b])
            for s, e in spans[b][smask[b]]:
                try:
                    i0, i1 = timeline.span_to_rows(times[b, :n], float(steps[b]), float(s), float(e))
                except ValueError as err:
                    sid = batch.get("sample_id", ["?"] * B)[b]
                    raise ValueError(f"{sid}: ground-truth window [{s}, {e}) s: {err}") from None
                G[b, i0, i1 - 1] = 1.0
        return torch.from_numpy(G)

    # ----------------------------------------------------------------------------------------------- predict
    def predict(self, out: dict, batch: dict, top_k: int | None = None) -> list[np.ndarray]:
        """Per item a (K, 3) float64 array ``[start_s, end_s, score]``, best first: the top-``top_k`` (default
        ``config.top_k``) cells (i, j), i <= j, of P, de-duplicated by NMS unless ``config.nms_iou`` is None."""
        k = self.config.top_k if top_k is None else int(top_k)
        P = out["vertex"].detach().double().cpu().numpy()
        times = batch["target_times"].cpu().numpy()
        steps = batch["step"].cpu().numpy()
        n_rows = batch["target_mask"].sum(1).cpu().numpy()
        preds = []
        for b in range(P.shape[0]):
            n = int(n_rows[b])
            i, j = np.triu_indices(n)
            score = P[b, i, j]
            order = np.argsort(-score, kind="stable")
            if self.config.nms_iou is None:
                order = order[:k]
            i, j, score = i[order], j[order], score[order]
            start = timeline.position_to_seconds(times[b, :n], float(steps[b]), i)
            end = timeline.position_to_seconds(times[b, :n], float(steps[b]), j + 1)
            cand = np.stack([start, end, score], axis=1)
            if self.config.nms_iou is not None:
                cand = nms_1d(cand, self.config.nms_iou, top_k=k)
            preds.append(cand)
        return preds
