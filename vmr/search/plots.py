"""The ``--plot`` PNG of a localisation (matplotlib, Agg backend, no display needed).

Layout (one figure, about 11 x 6 inches):

- top left: frame thumbnails of the query clip, evenly spread over it (or the sentence, for a text query);
- top right: frame thumbnails of the best moment, evenly spread over ``[start, end)``, decoded from the target video;
- middle: one lane per moment over the whole target (the ground truth in green when given, then the top moments by
  rank with their scores, then the sliding windows as grey bars, alternating lanes so that overlaps show);
- bottom: on the same time axis (seconds, or m:ss for targets over two minutes), the model's per-row evidence (see
  :mod:`vmr.search.localizer`), the best moment shaded, the ground truth's ends as dashed green lines.

Thumbnails are decoded from the videos (remote ones spilled to a temporary local file first), only the few frames
shown. When a video cannot be read (features imported from npz files, the source moved) the panel says so and the
rest of the plot is drawn anyway.
"""
from __future__ import annotations

import io
import logging
import posixpath

import numpy as np

from vmr import storage

log = logging.getLogger(__name__)

N_THUMBS = 4


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def thumbnails(uri: str | None, start: float, end: float, n: int = N_THUMBS) -> tuple[np.ndarray, np.ndarray] | str:
    """``(times (k,) seconds, frames (k, H, W, 3) uint8)`` of ``n`` frames evenly spread over ``[start, end)`` of the
    video at ``uri`` (path or storage URI), or a short reason (str) why there are none."""
    from vmr.errors import InputError
    from vmr.features.extraction import spilled
    from vmr.features.video import VIDEO_EXTENSIONS, frames_at

    if not uri:
        return "no source video"
    if posixpath.splitext(storage.strip(uri))[1].lower() not in VIDEO_EXTENSIONS:
        return f"source {posixpath.basename(storage.strip(uri))} is not a video"
    try:
        if not storage.exists(uri):
            return f"source video not found: {uri}"
        times = start + (np.arange(n) + 0.5) * (end - start) / n
        with spilled(uri) as path:
            return frames_at(path, times)
    except (InputError, OSError) as e:
        log.warning("no thumbnails from %s: %s", uri, e)
        return f"cannot decode {posixpath.basename(storage.strip(uri))}"


def _clock(duration: float):
    from matplotlib.ticker import FuncFormatter

    if duration <= 120:
        return None
    return FuncFormatter(lambda x, _pos: f"{int(x // 60)}:{int(x % 60):02d}" if x >= 0 else "")


def _strip(fig, spec, frames, title: str, message: str = "") -> None:
    """A row of thumbnails (or a message) in the gridspec cell ``spec``."""
    if isinstance(frames, tuple):
        times, imgs = frames
        sub = spec.subgridspec(1, max(1, len(imgs)), wspace=0.04)
        for k, (t, img) in enumerate(zip(times, imgs)):
            ax = fig.add_subplot(sub[0, k])
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{t:.1f} s", fontsize=7)
            if k == 0:
                ax.set_title(title, fontsize=8, loc="left")
    else:
        ax = fig.add_subplot(spec)
        ax.axis("off")
        ax.set_title(title, fontsize=8, loc="left")
        ax.text(0.5, 0.5, message or str(frames), ha="center", va="center", fontsize=9, wrap=True,
                transform=ax.transAxes)


def plot_localization(loc, path: str, gt: tuple[float, float] | None = None, *, title: str = "",
                      n_thumbs: int = N_THUMBS, max_moments: int = 5) -> str:
    """Draw :class:`vmr.search.localizer.Localization` ``loc`` (module doc) into a PNG at ``path`` (a local path or storage
    URI); ``gt`` is a ground-truth ``(start, end)`` in seconds. Returns ``path``."""
    plt = _plt()
    q = loc.query
    moments = loc.moments[:max_moments]
    windows = loc.windows if len(loc.windows) > 1 else []
    lanes = (["ground truth"] if gt is not None else []) + [f"#{r} ({m.score:.3g})" for r, m in
                                                             enumerate(moments, 1)] + (["windows"] if windows else [])
    fig = plt.figure(figsize=(11, 6.2))
    grid = fig.add_gridspec(3, 2, height_ratios=[1.0, 0.25 + 0.16 * max(1, len(lanes)), 1.3], hspace=0.12,
                            wspace=0.06)

    top = grid[0, :].subgridspec(1, 2, wspace=0.06)
    if q.kind == "text":
        _strip(fig, top[0, 0], "", "text query", message=f"\u201c{q.text}\u201d")
    else:
        shots = thumbnails(q.uri, 0.0, q.duration, n_thumbs) if q.uri else "query given as features"
        _strip(fig, top[0, 0], shots, f"query: {posixpath.basename(storage.strip(q.source)) or q.source}")
    if moments:
        best = moments[0]
        shots = thumbnails(loc.target_uri, best.start, best.end, n_thumbs)
        _strip(fig, top[0, 1], shots, f"best moment: {best.start:.1f}-{best.end:.1f} s (score {best.score:.3g})")
    else:
        _strip(fig, top[0, 1], "no moment found", "best moment")

    t0 = float(loc.times[0]) if len(loc.times) else 0.0
    t1 = max(loc.duration, float(loc.times[-1] + loc.step) if len(loc.times) else 0.0)
    lane_ax = fig.add_subplot(grid[1, :])
    curve_ax = fig.add_subplot(grid[2, :], sharex=lane_ax)
    y = len(lanes)
    if gt is not None:
        y -= 1
        lane_ax.barh(y, gt[1] - gt[0], left=gt[0], height=0.6, color="tab:green")
    for rank, m in enumerate(moments, 1):
        y -= 1
        lane_ax.barh(y, m.end - m.start, left=m.start, height=0.6, color="tab:blue",
                     alpha=max(0.35, 1.0 - 0.15 * (rank - 1)))
    if windows:
        y -= 1
        for k, (ws, we) in enumerate(windows):
            off = 0.17 if k % 2 else -0.17
            lane_ax.plot([ws, we], [y + off, y + off], color="0.55", lw=1.5, marker="|", ms=7,
                         solid_capstyle="butt")
    lane_ax.set_yticks(range(len(lanes)))
    lane_ax.set_yticklabels(list(reversed(lanes)), fontsize=7)
    lane_ax.set_ylim(-0.6, len(lanes) - 0.4)
    lane_ax.tick_params(axis="x", labelbottom=False)
    lane_ax.grid(axis="x", color="0.9")
    n_win = f", {len(windows)} sliding windows" if windows else ""
    lane_ax.set_title(f"{loc.target_id}: {loc.duration:.0f} s{n_win} - top moments (1 = best)", fontsize=9,
                      loc="left")

    if loc.curve is not None:
        curve_ax.plot(loc.times + loc.step / 2.0, loc.curve, color="tab:orange", lw=1.0)
    else:
        curve_ax.text(0.5, 0.5, "this model has no per-frame score", ha="center", va="center",
                      transform=curve_ax.transAxes, fontsize=9)
    if moments:
        curve_ax.axvspan(moments[0].start, moments[0].end, color="tab:blue", alpha=0.15, lw=0)
    if gt is not None:
        for x in gt:
            curve_ax.axvline(x, color="tab:green", lw=1.0, ls="--")
    curve_ax.set_xlim(t0, t1)
    curve_ax.grid(axis="x", color="0.9")
    fmt = _clock(t1 - t0)
    if fmt is not None:
        curve_ax.xaxis.set_major_formatter(fmt)
        curve_ax.set_xlabel("time (m:ss)")
    else:
        curve_ax.set_xlabel("time (s)")
    curve_ax.set_ylabel(loc.curve_label or "score", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    storage.write_bytes_atomic(path, buf.getvalue())
    return path


__all__ = ["plot_localization", "thumbnails"]
