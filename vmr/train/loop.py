"""The plain PyTorch training loop (no Ray, no MLflow): optimizer and schedule from config, one epoch of training,
evaluation with the task's metrics, the same evaluation for the cosine baseline, and the plots logged with a run.

Batches are the :func:`vmr.data.samples.collate` layout, from :func:`vmr.data.specs.make_loader` or from Ray Data
(:func:`vmr.pipeline.datasets.iter_model_batches`); the model follows :mod:`vmr.models` (forward / loss / predict).

Choices where the papers are silent (all in :class:`TrainConfig`):

- MATR: AdamW, lr 1e-4, weight decay 1e-4 (paper), a constant learning rate (the paper names no schedule).
- A2FA: Adam, lr 1e-4, a linear warm-up then cosine decay (paper); the warm-up length is not given: one epoch by
  default (``warmup_epochs``), the cosine decays to 0 at the last step. The schedule steps per batch.
- Gradient clipping at norm ``grad_clip`` = 1.0 (0 disables it): the soft-DTW terms can spike early in training.
- Mixed precision (``amp``) only on CUDA: bf16 autocast where the GPU supports it (no loss scaling needed), else fp16
  with a GradScaler. On a CPU training runs in float32.
- Evaluation (:func:`evaluate`): every item's top-``top_k`` predictions; video queries are scored with R1@0.3/0.5/0.7
  and mIoU (:mod:`vmr.metrics.video_query`), text queries with Moment-DETR's MR metrics (:mod:`vmr.metrics.moment_detr`,
  full bucket, R1@0.5/0.7, mAP@0.5/0.75 and the average mAP). The query id of an item is its ``sample_id`` (unique per
  sample; several samples may share a query clip).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal

import numpy as np
import torch
from torch import nn

from vmr.models.checkpoint import unwrap


@dataclass
class TrainConfig:
    """Optimisation settings; defaults are MATR's (AdamW 1e-4 / 1e-4). Epoch counts are passes over the training
    set; ``batch_size`` is per worker."""

    epochs: int = 40
    batch_size: int = 40
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    schedule: Literal["constant", "warmup_cosine"] = "constant"
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    amp: bool = True
    seed: int = 0
    torch_threads: int = 0          # 0 = leave PyTorch's default; set it when several workers share a machine
    eval_top_k: int = 5
    eval_batch_size: int = 0        # 0 = batch_size
    plot_items: int = 4             # validation items drawn in the plots of the last epoch
    shuffle_buffer: int = 256       # rows in Ray Data's local shuffle buffer (0 = read order)


# ---- optimisation -------------------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adamw or adam")


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if schedule == "constant":
        return 1.0
    if schedule != "warmup_cosine":
        raise ValueError(f"unknown schedule {schedule!r}; use constant or warmup_cosine")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    rest = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / rest)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-step ``LambdaLR`` for ``cfg.schedule`` over ``cfg.epochs * steps_per_epoch`` steps."""
    total = max(1, cfg.epochs * max(1, steps_per_epoch))
    warmup = int(round(cfg.warmup_epochs * max(1, steps_per_epoch))) if cfg.schedule == "warmup_cosine" else 0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, cfg.schedule))


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA GPUs that support it, else fp16 on CUDA, None (no autocast) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def move_batch(batch: dict, device: torch.device | str) -> dict:
    device = torch.device(device)
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@dataclass
class EpochStats:
    """Mean of every loss term over the epoch's batches (weighted by items), items seen, optimizer steps, seconds."""

    losses: dict = field(default_factory=dict)
    samples: int = 0
    steps: int = 0
    seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def train_one_epoch(model: nn.Module, batches: Iterable[dict], optimizer: torch.optim.Optimizer, scheduler=None, *,
                    device: torch.device | str = "cpu", amp: bool = True, scaler: "torch.amp.GradScaler | None" = None,
                    grad_clip: float = 0.0, step_hook: Callable[[int], None] | None = None,
                    start_step: int = 0) -> EpochStats:
    """One pass over ``batches``: forward, ``loss(...)["total"]`` backward, clip, step, schedule step.

    ``model`` may be wrapped in DDP (the loss is taken from the unwrapped model). ``amp``: autocast on CUDA (see the
    module docstring); pass a ``GradScaler`` for fp16. ``step_hook(global_step)`` is called before each step
    (``start_step`` + steps so far): progress reporting, or a test's fault injection. Returns :class:`EpochStats`."""
    device = torch.device(device)
    core = unwrap(model)
    model.train()
    dtype = autocast_dtype(device) if amp else None
    sums: dict[str, float] = {}
    stats = EpochStats()
    t0 = time.perf_counter()
    for batch in batches:
        if step_hook is not None:
            step_hook(start_step + stats.steps)
        batch = move_batch(batch, device)
        n = int(batch["target"].shape[0])
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(batch)
            terms = core.loss(out, batch)
        loss = terms["total"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {start_step + stats.steps} "
                                     f"(samples {batch.get('sample_id', [])[:3]}...)")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
        stats.samples += n
        stats.steps += 1
    stats.seconds = time.perf_counter() - t0
    stats.losses = {k: v / max(1, stats.samples) for k, v in sums.items()}
    return stats


# ---- evaluation ---------------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """``metrics`` (floats; ``loss`` when the model has one), the Moment-DETR-layout ``predictions`` and
    ``ground_truth`` rows, and ``examples``: the first items with what the plots need (numpy, real rows only)."""

    metrics: dict
    predictions: list
    ground_truth: list
    examples: list


def _gt_windows(batch: dict, b: int) -> list[list[float]]:
    spans = batch["spans"][b].detach().cpu().numpy()
    mask = batch["span_mask"][b].detach().cpu().numpy().astype(bool)
    return spans[mask].tolist()


def task_metrics(predictions: list[dict], ground_truth: list[dict], task: str) -> dict:
    """``{"R1@0.3", "R1@0.5", "R1@0.7", "mIoU"}`` (video) or Moment-DETR's full-bucket MR metrics (text), percent."""
    if task == "video":
        from vmr.metrics.video_query import video_query_metrics

        m = video_query_metrics(predictions, ground_truth)
        return {k: m[k] for k in ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU")}
    from vmr.metrics.moment_detr import eval_moment_retrieval

    full = eval_moment_retrieval(predictions, ground_truth)["full"]
    return {"R1@0.5": full["MR-R1"]["0.5"], "R1@0.7": full["MR-R1"]["0.7"], "mAP@0.5": full["MR-mAP"]["0.5"],
            "mAP@0.75": full["MR-mAP"]["0.75"], "mAP": full["MR-mAP"]["average"]}


def _example(model: nn.Module, out: dict, batch: dict, b: int, preds: np.ndarray) -> dict:
    """What the plots need about item ``b``: seconds, ground truth, predictions, and the model's matrices."""
    m = int(batch["target_mask"][b].sum())
    n = int(batch["query_mask"][b].sum())
    ex = {"sample_id": batch["sample_id"][b], "target_id": batch["target_id"][b],
          "target_times": batch["target_times"][b, :m].detach().cpu().numpy(), "step": float(batch["step"][b]),
          "spans": np.asarray(_gt_windows(batch, b)).reshape(-1, 2), "predictions": np.asarray(preds).reshape(-1, 3)}
    kind = getattr(model, "kind", "")
    if kind == "matr" and "target_fused" in out:
        from vmr.alignment import cosine_cost

        t = out["target_fused"][b, :m].detach().float()
        q = out["query_fused"][b, :n].detach().float()
        ex["alignment"] = (1.0 - cosine_cost(t, q)).cpu().numpy()  # (m, n) cosine similarity after fusion
        ex["crop"] = out["crop"][b].detach().cpu().numpy()
        ex["foreground"] = torch.sigmoid(out["fg_logits"][b, :m].detach().float()).cpu().numpy()
    elif kind == "a2fa" and "similarity" in out:
        ex["similarity"] = out["similarity"][b, :m, :m].detach().float().cpu().numpy()
        ex["vertex"] = out["vertex"][b, :m, :m].detach().float().cpu().numpy()
        ex["bounds"] = out["bounds"][b].detach().cpu().numpy()
    elif kind == "cosine":
        q = batch["query"][b, :n].float()
        t = batch["target"][b, :m].float()
        ex["alignment"] = (torch.nn.functional.normalize(t, dim=-1)
                           @ torch.nn.functional.normalize(q, dim=-1).T).cpu().numpy()
    return ex


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict], task: str = "video", *, top_k: int = 5,
             device: torch.device | str = "cpu", keep_examples: int = 0, amp: bool = False) -> EvalResult:
    """Predict every item of ``batches`` and score them (see the module docstring). ``model`` is a vmr model or the
    cosine baseline (anything with forward / predict; ``loss`` when it has one adds ``metrics["loss"]``, the
    item-weighted mean of ``total``). ``keep_examples``: how many items to keep for :func:`save_plots`."""
    device = torch.device(device)
    core = unwrap(model)
    core.eval()
    dtype = autocast_dtype(device) if amp else None
    preds, gts, examples = [], [], []
    loss_sum, n_items = 0.0, 0
    has_loss = hasattr(core, "loss") and getattr(core, "kind", "") != "cosine"
    for batch in batches:
        batch = move_batch(batch, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = core(batch)
            if has_loss:
                loss_sum += float(core.loss(out, batch)["total"]) * len(batch["sample_id"])
        out = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in out.items()}
        items = core.predict(out, batch, top_k=top_k)
        for b, p in enumerate(items):
            sid = batch["sample_id"][b]
            windows = _gt_windows(batch, b)
            times = batch["target_times"][b][batch["target_mask"][b].bool()]
            preds.append({"qid": sid, "vid": batch["target_id"][b], "pred_relevant_windows": np.asarray(p).tolist()})
            gts.append({"qid": sid, "vid": batch["target_id"][b], "relevant_windows": windows,
                        "duration": float(times[-1] + batch["step"][b]) if len(times) else 0.0})
            if len(examples) < keep_examples:
                examples.append(_example(core, out, batch, b, p))
        n_items += len(items)
    if not n_items:
        raise ValueError("nothing to evaluate: the batches were empty")
    metrics = task_metrics(preds, gts, task)
    if has_loss:
        metrics["loss"] = loss_sum / n_items
    metrics["n"] = n_items
    return EvalResult(metrics=metrics, predictions=preds, ground_truth=gts, examples=examples)


def evaluate_baseline(batches: Iterable[dict], task: str = "video", *, top_k: int = 5, keep_examples: int = 0,
                      config=None) -> EvalResult:
    """:func:`evaluate` for the training-free cosine baseline (:class:`vmr.models.baseline.CosineBaseline`) on the same
    batches. Video queries only: a random-weight CLIP sentence has nothing to be cosine-similar to."""
    if task != "video":
        raise ValueError("the cosine baseline compares frames with frames: video queries only")
    from vmr.models.baseline import CosineBaseline

    return evaluate(CosineBaseline(config), batches, task, top_k=top_k, keep_examples=keep_examples)


def metric_key(name: str) -> str:
    """A metric name MLflow accepts: ``R1@0.5`` -> ``R1-0.5`` (``@`` is not allowed in MLflow keys)."""
    return name.replace("@", "-")


def prefixed(metrics: dict, prefix: str) -> dict:
    """``{"R1@0.5": x}`` -> ``{"val/R1-0.5": x}`` (numbers only; ``n`` kept)."""
    return {f"{prefix}/{metric_key(k)}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ---- plots --------------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_moments(examples: list[dict], path: str, title: str = "") -> str:
    """One timeline per example (seconds on the target's clock): ground-truth spans (green) above the top
    predictions (blue, opacity = rank). Writes a PNG at ``path`` and returns it."""
    plt = _plt()
    n = max(1, len(examples))
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.1 * n + 0.8), squeeze=False)
    for ax, ex in zip(axes[:, 0], examples):
        t = ex["target_times"]
        t0, t1 = float(t[0]), float(t[-1] + ex["step"])
        for s, e in ex["spans"]:
            ax.axvspan(s, e, ymin=0.55, ymax=0.95, color="tab:green", alpha=0.8)
        preds = ex["predictions"]
        for rank, (s, e, _score) in enumerate(preds[:5]):
            ax.axvspan(s, e, ymin=0.05 + 0.09 * rank, ymax=0.13 + 0.09 * rank, color="tab:blue",
                       alpha=max(0.25, 1.0 - 0.18 * rank))
        if "foreground" in ex:
            ax.plot(t + ex["step"] / 2, 0.5 * ex["foreground"], color="tab:orange", lw=0.8)
        ax.set_xlim(t0, t1)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_title(f"{ex['sample_id']}  (green: ground truth, blue: top predictions, best lowest)", fontsize=7,
                     loc="left")
    axes[-1, 0].set_xlabel("seconds")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_matrix(ex: dict, path: str) -> str:
    """MATR: the post-fusion cosine similarity of target rows (y, seconds) and query rows (x), with the decoder's
    aligned crop and the ground truth marked. A2FA: the frame-frame similarity S and vertex scores P (seconds on both
    axes), the ground-truth cells marked, the anchor segment outlined. Writes a PNG at ``path``."""
    plt = _plt()
    t = ex["target_times"]
    step = ex["step"]
    t0, t1 = float(t[0]), float(t[-1] + step)
    if "similarity" in ex:
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
        for ax, key, name in ((axes[0], "similarity", "S: frame-frame similarity after alignment"),
                              (axes[1], "vertex", "P: vertex scores (start row, end row)")):
            im = ax.imshow(ex[key], origin="lower", extent=(t0, t1, t0, t1), cmap="viridis", aspect="auto")
            fig.colorbar(im, ax=ax, fraction=0.046)
            for s, e in ex["spans"]:
                ax.plot([e], [s], marker="x", color="red", ms=8)  # cell (start row, end row) drawn at (x=end, y=start)
            bl, br = ex.get("bounds", (0, len(t) - 1))
            ax.axhline(t0 + bl * step, color="white", lw=0.6, ls="--")
            ax.axhline(t0 + (br + 1) * step, color="white", lw=0.6, ls="--")
            ax.set_title(name, fontsize=8)
            ax.set_xlabel("end (s)")
            ax.set_ylabel("start (s)")
    else:
        fig, ax = plt.subplots(figsize=(5, 6))
        mat = ex["alignment"]
        im = ax.imshow(mat, origin="lower", extent=(0, mat.shape[1], t0, t1), cmap="magma", aspect="auto")
        fig.colorbar(im, ax=ax, fraction=0.046)
        for s, e in ex["spans"]:
            ax.axhspan(s, e, xmin=0.0, xmax=0.04, color="tab:green")
        if "crop" in ex:
            c0, c1 = ex["crop"]
            ax.axhline(t0 + c0 * step, color="cyan", lw=0.8, ls="--")
            ax.axhline(t0 + c1 * step, color="cyan", lw=0.8, ls="--")
        ax.set_xlabel("query row")
        ax.set_ylabel("target (s)")
        ax.set_title("cosine similarity target x query\n(green: ground truth, cyan: aligned crop)", fontsize=8)
    fig.suptitle(ex["sample_id"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_plots(examples: list[dict], folder: str, prefix: str = "val") -> list[str]:
    """``{prefix}_moments.png`` and one ``{prefix}_matrix_{i}.png`` per example under ``folder``; returns the
    paths."""
    import os

    if not examples:
        return []
    os.makedirs(folder, exist_ok=True)
    paths = [plot_moments(examples, os.path.join(folder, f"{prefix}_moments.png"))]
    for i, ex in enumerate(examples):
        if any(k in ex for k in ("alignment", "similarity")):
            paths.append(plot_matrix(ex, os.path.join(folder, f"{prefix}_matrix_{i}.png")))
    return paths


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


__all__ = [
    "TrainConfig", "EpochStats", "EvalResult", "make_optimizer", "make_scheduler", "lr_factor", "autocast_dtype",
    "train_one_epoch", "evaluate", "evaluate_baseline", "task_metrics", "metric_key", "prefixed", "plot_moments",
    "plot_matrix", "save_plots", "seed_everything", "move_batch",
]
