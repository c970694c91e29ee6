"""MATR, the Moment Alignment TRansformer (Kumar et al., "Aligning Moments in Time using Video Queries"): find the
moment of a target video that matches a query video clip.

Data flow for one batch (layout of :func:`vmr.data.samples.collate`; B items, M target rows, N query rows, d channels)::

    target (B, M, 512), query (B, N, 512)                      CLIP ViT-B/32 frame features, one row per 2 s
      -> shared InputProjection -> E_t (B, M, d), E_q (B, N, d)  ... pre-fusion soft-DTW loss on (E_t, E_q)
      -> + token-type embedding, sine positions (per video, at every attention) -> k encoder layers over [E_t; E_q]
      -> E_t^g (B, M, d), E_q^g (B, N, d)                          ... post-fusion soft-DTW loss on (E_t^g, E_q^g)
      -> hard subsequence alignment of E_q^g to E_t^g -> target rows [s, e) per item (no gradient through the choice)
      -> k decoder layers: l learnable query slots cross-attend to E_t^g[s:e] only -> E_t^l (B, l, d)
      -> E_f from (E_t^g, E_t^l) -> conv heads -> per target row: foreground logit, left/right boundary offsets

Choices where the paper is silent (each also noted at the code that makes it):

* **Soft-DTW**: ``gamma = 0.1`` on the cosine cost ``1 - cos`` (in [0, 2]), so the soft-min is close to the hard
  minimum (a 0.1 cost difference per cell is one e-fold) yet smooth. Both alignment losses are *subsequence*
  soft-DTW of the whole query against the whole (unpadded) target: the target is longer than the query and the paper
  asks that "aligned frames in the target are contiguous"; no ground truth is used, so the same losses serve
  self-supervised pre-training. Each item's value is divided by its number of query rows
  (:func:`vmr.models.losses.alignment_loss`), which keeps the scale independent of the target's length. The
  value can go below 0 (soft-min over many near-equal paths): its floor is not 0, so read its trend, not its level.
* **Centring the inputs** (``center="target"``, our addition): before the projection, the mean of the target's
  real rows is subtracted from every target *and* query row. CLIP frame features of one match share a large common
  component (pitch, broadcast graphics; with random CLIP weights the cosine of any two frames is 0.96-0.99), so the
  differences that tell a moment from the background are a few percent of each vector. LayerNorm removes only the
  per-row mean over channels, not this shared direction, and the small demo model then sits at the constant
  foreground predictor for ~15 epochs. Subtracting the shared part leaves the differences for the projection to
  scale up. Both videos use the *target's* mean, so a query clip cut from the target keeps its rows' exact match;
  nothing is learned or stored for it. ``center="none"`` is the paper's literal input. Measured on the demo over 3
  class splits (``benchmarks/matr_vs_baseline.py``): pretraining val mIoU 65.2 at epoch 8 (13.5 without
  centring); test mIoU 39.8 (34.1 without) against 27.6 for the cosine baseline, R1@0.5 52.6 (39.7) against 24.9.
* **Similarity prior** (``prior="similarity"``, our addition): the foreground logit of each target row gets
  ``prior_scale * (z_i - 0.5)`` added, where ``z`` is the cosine baseline's similarity curve (the row's cosine with
  its best query row, both centred on the target's mean, rescaled so that the median row is 0 and the best row 1:
  :func:`similarity_prior`). ``prior_scale`` is a learned scalar starting at 8, so an untrained model already ranks
  rows as the cosine run of :class:`vmr.models.baseline.CosineBaseline` does, and training learns what to add to or
  take from it. Without it the model must rediscover query-target similarity from a few thousand synthetic pairs and
  lost to the cosine run on real footage it had never seen. ``prior="none"`` is the paper's head.
* **Run proposals** (``proposals="offsets+runs"``, our addition): besides every row's ``[c - left, c + right]``
  span, ``predict`` proposes each maximal run of rows with foreground probability >= 0.5, scored by its peak; the
  moment's length then follows the foreground curve where the boundary head, trained on a few moment lengths, has
  not seen such a length (a replay slowed 4x). ``proposals="offsets"`` is the paper's decoding.
* **Pre-fusion features** are the projection outputs ``E_t``, ``E_q`` before the token-type and positional terms
  (those add the same vector to every row of a video and would bias the cosine cost).
* **One projection** serves both videos: both are CLIP image features, and a shared map keeps identical frames
  identical, so pre-fusion alignment is meaningful from the first step (and for clips cut from the target).
* **Decoder crop**: the span ``[s, e)`` is the target side of the hard subsequence DTW path of the post-fusion cost
  (:func:`vmr.alignment.aligned_span`), at training *and* inference time. Training on the ground-truth span instead
  would teach the decoder on crops it never sees at inference (exposure bias), and pre-training has no other
  ground truth than the clip itself anyway. The crop is a cross-attention key mask over ``E_t^g`` (batched, no
  copies); gradients reach the encoder through the cropped rows' keys/values; the choice of rows is not
  differentiable (it is trained through the post-fusion loss). The span is clamped to at least one real row, so an
  empty crop cannot happen. Crop rows keep their absolute sine positions.
* **Heads reading E_f = [E_t^g; E_t^l]**: read literally, E_f is the sequence concatenation (M + l rows) and the
  conv heads' outputs are read at the M target rows; with three kernel-3 convs only the last three target rows would
  ever see a decoder feature, so the decoder could not inform most positions. By default (``fusion="attend"``) every
  target row instead attends (one multi-head attention, target row + its position as query) to the l decoder
  outputs and the result is concatenated to the row's channels: ``E_f = [E_t^g, attend(E_t^g, E_t^l)]``
  (B, M, 2d). This keeps the paper's ingredients (encoder features, decoder features, temporal convs per target
  position) and lets the decoder reach every position. ``fusion="sequence"`` is the literal reading, kept for
  ablation: per item, the l decoder rows are placed right after its real target rows (so padding changes nothing).
* **Conv heads**: c = 3 Conv1d (kernel 3, "same" padding) along the rows, the first two with d channels + ReLU, the
  third to the outputs (1 foreground logit; 2 boundary offsets).
* **Foreground** rows are the batch's ``fg`` (row centre inside a ground-truth span, :func:`vmr.timeline.span_to_mask`).
* **Offsets**: for a foreground row i (centre at position i + 0.5), the distances from its centre to the start and
  end positions of the ground-truth span containing it (the first such span), divided by the item's number of real
  target rows, so both lie in [0, 1]; predicted through a sigmoid (the normalised-coordinate convention of
  Moment-DETR/UniVTG). Smooth L1 uses ``l1_beta = 0.1`` (a tenth of the video) because PyTorch's default of 1 would
  make the term purely quadratic, and tiny, at this scale. A span narrower than a row can leave its one foreground
  row's centre outside it; that row's negative distance is clamped to 0.
* **Loss weights**: all lambdas 1 (paper); the GIoU term is ``1 - GIoU``.
* **Predict**: every real row proposes ``[c - left, c + right]`` (clipped to the video), scored by its foreground
  probability (nothing added), greedy 1-D NMS at IoU 0.7, best first; positions become seconds through
  :func:`vmr.timeline.position_to_seconds` on the item's own ``target_times`` and ``step``.
* **Decoder input**: the l learnable query vectors *are* the decoder's input (the paper: "the input to the decoder
  comprises l learnable query vectors"), and the fixed sine encodings of slot indices 0..l-1 are added to their
  queries/keys at every attention ("positional encodings applied at each attention layer"). (DETR instead starts
  from zero content with learnable positions, which leaves the first self-attention without any gradient.)
* **Unstated sizes**: 8 attention heads, feed-forward width 2048, DETR-style post-norm layers.

The authors' public code (vl2g/MATR, read for reference only) departs from the paper in places (e.g. its heads read
the encoder output alone, its alignment uses Drop-DTW code); this module follows the paper's text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from vmr import timeline
from vmr.alignment import aligned_span, cosine_cost
from vmr.data.pretrain_clips import is_reversed
from vmr.errors import ConfigError
from vmr.models import losses
from vmr.models.baseline import similarity_curves
from vmr.models.layers import ConvHead, DecoderLayer, EncoderLayer, InputProjection, sine_positions, xavier_init
from vmr.spans import nms_1d


@dataclass
class MATRConfig:
    """MATR sizes and loss weights; defaults are the paper's (Sec. 5.2) where it states them."""

    in_dim: int = 512                 # CLIP ViT-B/32 frame features
    d_model: int = 1024               # hidden size d
    heads: int = 8                    # not in the paper
    ff_dim: int = 2048                # not in the paper
    enc_layers: int = 4               # k
    dec_layers: int = 4               # k (paper: "k layers" for the decoder too)
    queries: int = 10                 # l learnable decoder queries
    dropout: float = 0.1              # inside the transformer
    proj_layers: int = 2              # input projection: LayerNorm -> Dropout -> Linear blocks
    proj_dropout: float = 0.5         # inside the input projection
    head_layers: int = 3              # c conv layers per head
    head_kernel: int = 3
    fusion: Literal["attend", "sequence"] = "attend"   # how the heads read E_f (module docstring)
    center: Literal["target", "none"] = "target"  # subtract the target's mean frame feature first (docstring)
    prior: Literal["similarity", "none"] = "similarity"  # add the query-target cosine curve to the fg logit (docstring)
    prior_scale: float = 8.0          # initial weight of the similarity prior on the fg logit (learned)
    proposals: Literal["offsets", "offsets+runs"] = "offsets+runs"  # predict's candidate spans (docstring)
    gamma: float = 0.1                # soft-DTW smoothing
    lambda_fg: float = 1.0
    lambda_seg: float = 1.0           # multiplies (lambda_l1 * smooth L1 + lambda_giou * (1 - GIoU))
    lambda_l1: float = 1.0
    lambda_giou: float = 1.0
    lambda_align_pre: float = 1.0
    lambda_align_post: float = 1.0
    align: Literal["subsequence", "ground_truth"] = "ground_truth"  # what the soft-DTW losses align (docstring)
    align_margin: float = 0.1         # ground_truth only: hinge against the best background alignment (0 = off)
    train_crop: Literal["aligned", "ground_truth"] = "aligned"  # the decoder's crop while training (docstring)
    l1_beta: float = 0.1              # smooth-L1 beta, in offsets normalised by the video's row count
    nms_iou: float = 0.7


def similarity_prior(target: torch.Tensor, query: torch.Tensor, tmask: torch.Tensor, qmask: torch.Tensor) -> torch.Tensor:
    """(B, M) the cosine baseline's similarity curve (:func:`vmr.models.baseline.similarity_curves`: each target row
    (B, M, D) against its best query row (B, N, D), centred on the target's mean) on the scale the fg logit adds it
    at: rescaled per item so that the median real row is -0.5 and the best is +0.5 (``z - 0.5`` with
    ``z = (c - median) / (max - median)``). Its zero crossing is the similarity run's threshold (the midpoint of max
    and median). Padded rows are 0. It has no parameters (the inputs are fixed features)."""
    c = similarity_curves(target, query, tmask, qmask)
    top = c.masked_fill(~tmask, -torch.finfo(c.dtype).max).max(1, keepdim=True).values
    med = torch.stack([c[b, tmask[b]].median() for b in range(len(c))])[:, None]
    z = (c - med) / (top - med).clamp(min=1e-6)
    return ((z - 0.5) * tmask).to(target.dtype)


class MATR(nn.Module):
    """MATR over padded batches of :func:`vmr.data.samples.collate` (see the module docstring for the data flow and the
    documented choices). ``forward(batch)`` returns:

    * ``fg_logits`` (B, M): foreground logit per target row (probability = sigmoid)
    * ``offsets`` (B, M, 2): left/right distances from each row's centre to the moment's start/end, in target rows
      divided by the item's real row count (in [0, 1])
    * ``crop`` (B, 2) long: target rows ``[s, e)`` the decoder attended to (post-fusion alignment)
    * ``target_proj``/``query_proj`` (E_t, E_q) and ``target_fused``/``query_fused`` (E_t^g, E_q^g) for the
      alignment losses; ``target_mask`` (B, M), ``query_mask`` (B, N) bool on the model's device.
    """

    kind = "matr"

    def __init__(self, config: MATRConfig | None = None):
        super().__init__()
        cfg = self.config = config or MATRConfig()
        if cfg.fusion not in ("attend", "sequence"):
            raise ConfigError(f"MATRConfig.fusion must be 'attend' or 'sequence', got {cfg.fusion!r}")
        if cfg.d_model % 2 or cfg.d_model % cfg.heads:
            raise ConfigError(f"MATRConfig.d_model={cfg.d_model} must be even and divisible by heads={cfg.heads}")
        if cfg.center not in ("target", "none"):
            raise ConfigError(f"MATRConfig.center must be 'target' or 'none', got {cfg.center!r}")
        if cfg.prior not in ("similarity", "none"):
            raise ConfigError(f"MATRConfig.prior must be 'similarity' or 'none', got {cfg.prior!r}")
        if cfg.proposals not in ("offsets", "offsets+runs"):
            raise ConfigError(f"MATRConfig.proposals must be 'offsets' or 'offsets+runs', got {cfg.proposals!r}")
        if cfg.align not in ("subsequence", "ground_truth"):
            raise ConfigError(f"MATRConfig.align must be 'subsequence' or 'ground_truth', got {cfg.align!r}")
        if cfg.train_crop not in ("aligned", "ground_truth"):
            raise ConfigError(f"MATRConfig.train_crop must be 'aligned' or 'ground_truth', got {cfg.train_crop!r}")
        if cfg.gamma <= 0:
            raise ConfigError(f"MATRConfig.gamma must be positive, got {cfg.gamma}")
        d = cfg.d_model
        self.project = InputProjection(cfg.in_dim, d, cfg.proj_layers, cfg.proj_dropout)
        self.token_type = nn.Embedding(2, d)  # 0 = target row, 1 = query row
        self.encoder = nn.ModuleList(EncoderLayer(d, cfg.heads, cfg.ff_dim, cfg.dropout) for _ in range(cfg.enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d, cfg.heads, cfg.ff_dim, cfg.dropout) for _ in range(cfg.dec_layers))
        self.query_slots = nn.Embedding(cfg.queries, d)
        head_in = d
        if cfg.fusion == "attend":
            self.fuse = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
            self.fuse_norm = nn.LayerNorm(d)
            head_in = 2 * d
        self.fg_head = ConvHead(head_in, d, 1, cfg.head_layers, cfg.head_kernel)
        self.boundary_head = ConvHead(head_in, d, 2, cfg.head_layers, cfg.head_kernel)
        xavier_init(self)
        if cfg.prior == "similarity":  # after xavier_init, which would overwrite a scalar's value
            self.prior_scale = nn.Parameter(torch.tensor(float(cfg.prior_scale)))

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict) -> dict:
        p = next(self.parameters())
        target = batch["target"].to(p.device, p.dtype)
        query = batch["query"].to(p.device, p.dtype)
        tmask = batch["target_mask"].to(p.device).bool()
        qmask = batch["query_mask"].to(p.device).bool()
        B, M, _ = target.shape
        N = query.shape[1]
        t_len, q_len = tmask.sum(1), qmask.sum(1)
        if (t_len == 0).any() or (q_len == 0).any():
            bad = [batch.get("sample_id", [str(i) for i in range(B)])[i]
                   for i in torch.nonzero((t_len == 0) | (q_len == 0)).flatten().tolist()]
            raise ValueError(f"MATR needs at least one target row and one query row per item; empty in {bad}")
        d = self.config.d_model
        prior = similarity_prior(target, query, tmask, qmask) if self.config.prior == "similarity" else None
        if self.config.center == "target":
            mean = (target * tmask[..., None]).sum(1, keepdim=True) / t_len[:, None, None]
            target, query = (target - mean) * tmask[..., None], (query - mean) * qmask[..., None]

        e_t, e_q = self.project(target), self.project(query)
        pos_t = sine_positions(M, d, p.device, p.dtype)
        pos_q = sine_positions(N, d, p.device, p.dtype)
        x = torch.cat([e_t + self.token_type.weight[0], e_q + self.token_type.weight[1]], dim=1)
        pos = torch.cat([pos_t, pos_q])[None]
        mask = torch.cat([tmask, qmask], dim=1)
        for layer in self.encoder:
            x = layer(x, pos, mask)
        t_g, q_g = x[:, :M], x[:, M:]

        aligned = self._crop(t_g, q_g, t_len, q_len)
        crop = aligned
        if self.training and self.config.train_crop == "ground_truth" and "fg" in batch:
            crop = self._ground_truth_crop(batch["fg"].to(p.device) > 0.5, tmask, aligned)
        rows = torch.arange(M, device=p.device)
        in_crop = (rows[None] >= crop[:, :1]) & (rows[None] < crop[:, 1:]) & tmask
        slots_pos = sine_positions(self.config.queries, d, p.device, p.dtype)[None]
        h = self.query_slots.weight[None].expand(B, -1, -1)
        for layer in self.decoder:
            h = layer(h, t_g, slots_pos, pos_t[None], in_crop)
        t_l = h  # E_t^l (B, l, d)

        feats, head_mask = self._fuse(t_g, t_l, pos_t, slots_pos, tmask, t_len)
        fg_logits = self.fg_head(feats, head_mask)[:, :M, 0]
        if prior is not None:
            fg_logits = fg_logits + self.prior_scale * prior
        offsets = torch.sigmoid(self.boundary_head(feats, head_mask)[:, :M])
        return {
            "fg_logits": fg_logits, "offsets": offsets, "crop": crop, "aligned_crop": aligned,
            "target_proj": e_t, "query_proj": e_q, "target_fused": t_g, "query_fused": q_g,
            "target_mask": tmask, "query_mask": qmask, "prior": prior,
        }

    @torch.no_grad()
    def _crop(self, t_g, q_g, t_len, q_len) -> torch.Tensor:
        """(B, 2) long target rows ``[s, e)`` that the query aligns to after fusion (hard subsequence DTW path of
        the post-fusion cosine cost), clamped to ``0 <= s < e <= t_len`` so the decoder always has a row."""
        lengths = torch.stack([t_len, q_len], dim=1).long()
        span = aligned_span(cosine_cost(t_g.detach(), q_g.detach()), lengths).to(t_g.device).long()
        s = torch.minimum(span[:, 0].clamp(min=0), t_len - 1)
        e = torch.maximum(torch.minimum(span[:, 1], t_len), s + 1)
        return torch.stack([s, e], dim=1)

    @torch.no_grad()
    def _ground_truth_crop(self, fg: torch.Tensor, tmask: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
        """(B, 2) rows ``[s, e)`` from the first to the last foreground row, each end moved by a random -1..+1 rows
        (so the decoder does not learn that a crop's edges are the moment's); items without one keep ``aligned``."""
        fg = fg & tmask
        rows = torch.arange(fg.shape[1], device=fg.device)[None]
        has = fg.any(1)
        s = torch.where(fg, rows, fg.shape[1]).min(1).values
        e = torch.where(fg, rows + 1, 0).max(1).values
        jitter = torch.randint(-1, 2, (len(fg), 2), device=fg.device)
        t_len = tmask.sum(1)
        s = (s + jitter[:, 0]).clamp(min=0)
        e = torch.minimum(torch.maximum(e + jitter[:, 1], s + 1), t_len)
        s = torch.minimum(s, e - 1)
        return torch.where(has[:, None], torch.stack([s, e], 1), aligned)

    def _fuse(self, t_g, t_l, pos_t, slots_pos, tmask, t_len):
        """E_f and its row mask for the conv heads; the first M output rows are the target positions."""
        if self.config.fusion == "attend":
            ctx = self.fuse(t_g + pos_t[None], t_l + slots_pos, t_l, need_weights=False)[0]  # (B, M, d)
            return torch.cat([t_g, self.fuse_norm(ctx)], dim=-1), tmask
        # literal: per item, [its real target rows; the n_dec decoder rows; zeros]
        B, M, d = t_g.shape
        n_dec = t_l.shape[1]
        p = torch.arange(M + n_dec, device=t_g.device)[None].expand(B, -1)
        n = t_len[:, None]
        src_row = torch.where(p < n, p, torch.where(p < n + n_dec, M + p - n, torch.zeros_like(p)))
        src = torch.cat([t_g, t_l], dim=1)
        feats = src.gather(1, src_row[..., None].expand(-1, -1, d))
        return feats, p < n + n_dec

    # --------------------------------------------------------------------- loss
    def boundary_targets(self, batch: dict, M: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth ``(offsets (B, M, 2) float64, fg (B, M) bool)`` in the units of ``forward``'s ``offsets``:
        for each foreground row, distances from its centre to the ends of the first ground-truth span containing it
        (span ends outside the target are clipped to it, as predictions are)."""
        times = batch["target_times"].cpu().numpy()
        steps = batch["step"].cpu().numpy()
        spans = batch["spans"].cpu().numpy()
        smask = batch["span_mask"].cpu().numpy().astype(bool)
        n_rows = batch["target_mask"].cpu().numpy().sum(1)
        fg = batch["fg"].cpu().numpy() > 0.5
        out = np.zeros((len(times), M, 2))
        assigned = np.zeros((len(times), M), dtype=bool)
        for b in range(len(times)):
            m = int(n_rows[b])
            t, centre = times[b, :m], np.arange(m) + 0.5
            for s, e in spans[b][smask[b]]:
                rows = timeline.span_to_mask(t, steps[b], s, e) & ~assigned[b, :m]
                ps, pe = np.clip(timeline.seconds_to_position(t, steps[b], [s, e]), 0, m)  # spans past the ends
                out[b, :m][rows] = np.stack([centre - ps, pe - centre], axis=1)[rows] / m
                assigned[b, :m] |= rows
        return torch.from_numpy(np.clip(out, 0.0, None)), torch.from_numpy(fg & assigned)

    def loss(self, out: dict, batch: dict) -> dict:
        """Loss terms (scalars): ``fg`` (BCE), ``l1`` (smooth L1) and ``giou`` (1 - GIoU) on foreground rows,
        ``seg`` = lambda_l1 * l1 + lambda_giou * giou, ``align_pre``/``align_post`` (per-query-row subsequence
        soft-DTW), and ``total`` = the lambda-weighted sum. A zero-weighted alignment term is not computed."""
        cfg = self.config
        logits, offsets = out["fg_logits"], out["offsets"]
        tmask, qmask = out["target_mask"], out["query_mask"]
        gt_off, fg_rows = self.boundary_targets(batch, logits.shape[1])
        gt_off, fg_rows = gt_off.to(offsets.device, offsets.dtype), fg_rows.to(offsets.device)
        fg_target = batch["fg"].to(logits.device, logits.dtype)
        terms = {"fg": losses.binary_cross_entropy(logits, fg_target, tmask)}
        terms["l1"], terms["giou"] = losses.boundary_losses(offsets, gt_off, fg_rows & tmask, beta=cfg.l1_beta)
        terms["seg"] = cfg.lambda_l1 * terms["l1"] + cfg.lambda_giou * terms["giou"]
        zero = logits.sum() * 0
        terms["align_pre"] = (self._alignment(out["target_proj"], out["query_proj"], batch, tmask, qmask)
                              if cfg.lambda_align_pre else zero)
        terms["align_post"] = (self._alignment(out["target_fused"], out["query_fused"], batch, tmask, qmask)
                               if cfg.lambda_align_post else zero)
        terms["crop_iou"] = self._crop_iou(out["aligned_crop"], batch["fg"].to(logits.device) > 0.5, tmask) \
            if "aligned_crop" in out else zero
        terms["total"] = (cfg.lambda_fg * terms["fg"] + cfg.lambda_seg * terms["seg"]
                          + cfg.lambda_align_pre * terms["align_pre"] + cfg.lambda_align_post * terms["align_post"])
        return terms

    @staticmethod
    def _run_proposals(prob: np.ndarray, times: np.ndarray, step: float) -> np.ndarray:
        """(R, 3) ``[start_s, end_s, score]``: each maximal run of rows with foreground probability >= 0.5, scored by
        its peak probability plus a tie-break towards it over a row's own span (so an equally confident row span does
        not shadow the run through NMS)."""
        fg = prob >= 0.5
        if not fg.any():
            return np.zeros((0, 3))
        edges = np.flatnonzero(np.diff(np.concatenate([[0], fg.astype(np.int8), [0]])))
        rows = edges.reshape(-1, 2).astype(np.float64)  # [s, e) row ranges
        sec = timeline.position_to_seconds(times, step, rows)
        peak = np.array([prob[int(s):int(e)].max() for s, e in rows]) + 1e-6
        return np.concatenate([sec, peak[:, None]], axis=1)

    @staticmethod
    @torch.no_grad()
    def _crop_iou(crop: torch.Tensor, fg: torch.Tensor, tmask: torch.Tensor) -> torch.Tensor:
        """Mean IoU (in rows) of the post-fusion aligned crop with the foreground rows, over items that have any: a
        diagnostic of how well the alignment finds the moment (not part of ``total``)."""
        rows = torch.arange(fg.shape[1], device=fg.device)[None]
        in_crop = (rows >= crop[:, :1]) & (rows < crop[:, 1:]) & tmask
        fg = fg & tmask
        inter, union = (in_crop & fg).sum(1).float(), (in_crop | fg).sum(1).float()
        has = fg.any(1)
        return (inter[has] / union[has]).mean() if bool(has.any()) else inter.sum() * 0

    def _alignment(self, x, y, batch: dict, tmask, qmask) -> torch.Tensor:
        """One soft-DTW alignment term (module docstring): the query against the ground-truth rows (``fg``), reversed
        for reversed-clip samples, with the background hinge; or the paper-literal subsequence over the whole target."""
        cfg = self.config
        if cfg.align == "subsequence":
            return losses.alignment_loss(x, y, tmask, qmask, cfg.gamma)
        fg = batch["fg"].to(x.device) > 0.5
        reverse = torch.tensor([is_reversed(s) for s in batch.get("sample_id", [""] * len(x))], device=x.device)
        return losses.ground_truth_alignment_loss(x, y, fg & tmask, qmask, cfg.gamma, reverse=reverse,
                                                  margin=cfg.align_margin, x_mask=tmask)

    # ------------------------------------------------------------------ predict
    @torch.no_grad()
    def predict(self, out: dict, batch: dict, top_k: int = 5) -> list[np.ndarray]:
        """Per item a (K, 3) float64 array ``[start_s, end_s, score]`` on the item's ``target_times`` clock, best
        first, K <= top_k: every real row's span scored by its foreground probability, 1-D NMS at ``nms_iou``."""
        prob = torch.sigmoid(out["fg_logits"]).double().cpu().numpy()
        offsets = out["offsets"].double().cpu().numpy()
        n_rows = out["target_mask"].sum(1).cpu().numpy()
        times = batch["target_times"].cpu().numpy()
        steps = batch["step"].cpu().numpy()
        results = []
        for b in range(len(prob)):
            m = int(n_rows[b])
            centre = np.arange(m) + 0.5
            pos = np.stack([centre - offsets[b, :m, 0] * m, centre + offsets[b, :m, 1] * m], axis=1).clip(0, m)
            sec = timeline.position_to_seconds(times[b, :m], float(steps[b]), pos)
            scored = np.concatenate([sec, prob[b, :m, None]], axis=1)
            if self.config.proposals == "offsets+runs":
                scored = np.concatenate([scored, self._run_proposals(prob[b, :m], times[b, :m], float(steps[b]))])
                scored = scored[np.argsort(-scored[:, 2], kind="stable")]
            results.append(nms_1d(scored, self.config.nms_iou, top_k))
        return results
