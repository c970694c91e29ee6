"""A synthetic "match archive" for the offline demo and the tests: videos of a panning pitch in which a few classes of
recurring actions happen at annotated times.

``render_demo_archive(out)`` writes::

    {out}/videos/match01.mp4 ...            H.264 (PyAV/libx264), 320x240, 10 frames/s by default
    {out}/annotations/matches.csv           video_id,action_class,start,end (seconds, one row per action instance)
    {out}/annotations/classes.txt           the action classes, one per line

Each action class is a synthetic shape with its own colour, form and motion (a red ball driven across the pitch, a
yellow square looping while it spins, ...), named like a sports action. Instances of a class differ in speed, size,
position, direction and colour shade, so finding them is not a matter of matching identical frames; the pitch pans,
carries sensor noise and has "players" wandering about, so background frames differ too. The shape is on screen
exactly during ``[start, end)`` of its annotation.

Deterministic for a seed: the same seed gives the same annotations and the same decoded pictures.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from vmr import storage
from vmr.errors import InputError

# name -> (RGB colour, shape, motion); shapes/motions are drawn in _draw_action.
ACTION_CLASSES: dict[str, tuple[tuple[int, int, int], str, str]] = {
    "cover_drive": ((220, 30, 30), "disc", "sweep"),  # red ball driven across the pitch
    "bicycle_kick": ((250, 220, 0), "square", "loop"),  # yellow square looping while it spins
    "slam_dunk": ((255, 130, 0), "disc", "drop"),  # orange ball falling through a white hoop, again and again
    "penalty_kick": ((245, 245, 245), "disc", "shot"),  # small white ball shot into a goal frame
    "tennis_serve": ((30, 60, 230), "triangle", "bob"),  # blue triangle bobbing up and down
    "high_jump": ((150, 40, 200), "bar", "jump"),  # purple bar, a ball jumping over it in arcs
    "header_goal": ((0, 220, 230), "ring", "pulse"),  # cyan ring pulsing in size
    "corner_kick": ((230, 0, 160), "checker", "diagonal"),  # magenta checkerboard crossing diagonally
}


@dataclass
class _Instance:
    video_id: str
    action_class: str
    start: float  # seconds
    end: float  # seconds
    speed: float  # motion speed factor
    scale: float  # size factor
    shade: np.ndarray  # (3,) colour jitter
    x: float  # anchor position, fraction of width
    y: float  # anchor position, fraction of height
    direction: int  # +1 / -1


def _schedule(rng: np.random.Generator, video_id: str, duration: float, deck: list[str],
              length_range: tuple[float, float], max_instances: int) -> list[_Instance]:
    """Non-overlapping action instances in ``[0, duration)``, classes taken from ``deck`` (refilled when empty)."""
    out: list[_Instance] = []
    cursor = round(float(rng.uniform(2.0, 8.0)), 1)
    while len(out) < max_instances:
        length = round(float(rng.uniform(*length_range)), 1)
        if cursor + length > duration - 1.0:
            break
        if not deck:
            deck.extend(rng.permutation(list(ACTION_CLASSES)).tolist())
        out.append(_Instance(
            video_id=video_id, action_class=deck.pop(), start=cursor, end=round(cursor + length, 1),
            speed=float(rng.uniform(0.6, 1.6)), scale=float(rng.uniform(0.75, 1.3)),
            shade=rng.integers(-35, 36, size=3), x=float(rng.uniform(0.3, 0.7)), y=float(rng.uniform(0.35, 0.65)),
            direction=int(rng.choice([-1, 1])),
        ))
        cursor = round(out[-1].end + float(rng.uniform(4.0, 14.0)), 1)
    return out


class _Canvas:
    """Cheap numpy drawing on one (H, W, 3) uint8 frame, restricted to each shape's bounding box."""

    def __init__(self, width: int, height: int):
        self.w, self.h = width, height
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self.frame = np.zeros((height, width, 3), np.uint8)

    def _box(self, cx, cy, r):
        y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, self.h)
        x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, self.w)
        return (slice(y0, y1), slice(x0, x1)) if y1 > y0 and x1 > x0 else None

    def paint(self, box, mask, colour):
        self.frame[box][mask] = colour

    def disc(self, cx, cy, r, colour, inner=0.0):
        box = self._box(cx, cy, r)
        if box is None:
            return
        d2 = (self.xx[box] - cx) ** 2 + (self.yy[box] - cy) ** 2
        mask = d2 < r * r
        if inner:
            mask &= d2 >= inner * inner
        self.paint(box, mask, colour)

    def square(self, cx, cy, half, angle, colour, checker=0):
        box = self._box(cx, cy, half * 1.42)
        if box is None:
            return
        dx, dy = self.xx[box] - cx, self.yy[box] - cy
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * dx + s * dy, -s * dx + c * dy
        mask = (np.abs(u) < half) & (np.abs(v) < half)
        if checker:
            cells = (np.floor((u + half) / checker) + np.floor((v + half) / checker)) % 2 == 0
            self.paint(box, mask & ~cells, (15, 15, 15))
            mask &= cells
        self.paint(box, mask, colour)

    def triangle(self, cx, cy, r, colour):
        box = self._box(cx, cy, r)
        if box is None:
            return
        dx, dy = self.xx[box] - cx, self.yy[box] - cy
        mask = (dy < r * 0.5) & (dy > -r + 2 * np.abs(dx) * 0.87)  # an upward-pointing triangle
        self.paint(box, mask, colour)

    def rect(self, x0, y0, x1, y1, colour, outline=0):
        xa, xb = max(int(x0), 0), min(int(x1), self.w)
        ya, yb = max(int(y0), 0), min(int(y1), self.h)
        if xb <= xa or yb <= ya:
            return
        if outline:
            self.frame[ya:yb, xa:min(xa + outline, xb)] = colour
            self.frame[ya:yb, max(xb - outline, xa):xb] = colour
            self.frame[ya:min(ya + outline, yb), xa:xb] = colour
        else:
            self.frame[ya:yb, xa:xb] = colour


def _draw_action(cv: _Canvas, inst: _Instance, t: float) -> None:
    """Draw ``inst`` at time ``t`` (seconds, inside its span)."""
    colour, shape, motion = ACTION_CLASSES[inst.action_class]
    colour = tuple(int(c) for c in np.clip(np.array(colour) + inst.shade, 0, 255))
    p = (t - inst.start) / (inst.end - inst.start)  # progress 0..1 over the instance
    w, h = cv.w, cv.h
    size = min(w, h) * 0.15 * inst.scale
    phase = 2 * math.pi * inst.speed * (t - inst.start)  # oscillations: speed x 1 per second
    ax, ay = inst.x * w, inst.y * h
    if motion == "sweep":  # across the pitch with a small bounce
        x = w * (0.1 + 0.8 * (p if inst.direction > 0 else 1 - p))
        cv.disc(x, ay - abs(math.sin(phase * 1.5)) * h * 0.15, size, colour)
    elif motion == "loop":  # a circle while spinning
        rad = h * 0.22
        cv.square(ax + rad * math.cos(phase * inst.direction), ay + rad * math.sin(phase * inst.direction),
                  size * 0.9, phase * 2, colour)
    elif motion == "drop":  # falls through a hoop, repeatedly
        cv.rect(ax - size * 1.8, h * 0.62, ax + size * 1.8, h * 0.62 + 5, (250, 250, 250))
        fall = (phase / (2 * math.pi)) % 1.0
        cv.disc(ax, h * (0.05 + 0.8 * fall ** 2), size * 0.8, colour)
    elif motion == "shot":  # repeated shots into a goal frame on one side
        goal_x = w * (0.85 if inst.direction > 0 else 0.15)
        cv.rect(goal_x - 8, h * 0.3, goal_x + 8, h * 0.7, (250, 250, 250), outline=3)
        q = (phase / (2 * math.pi)) % 1.0
        start_x = w * (0.35 if inst.direction > 0 else 0.65)
        cv.disc(start_x + (goal_x - start_x) * q, ay + (h * 0.5 - ay) * q, size * 0.5, colour)
    elif motion == "bob":  # up and down in place
        cv.triangle(ax, ay + math.sin(phase) * h * 0.25, size * 1.3, colour)
    elif motion == "jump":  # a bar and a ball jumping over it in arcs
        cv.rect(ax - size * 2, ay, ax + size * 2, ay + size * 0.4, colour)
        q = (phase / (2 * math.pi)) % 1.0
        cv.disc(ax + inst.direction * (q - 0.5) * size * 4, ay - math.sin(math.pi * q) * h * 0.3, size * 0.5, colour)
    elif motion == "pulse":  # a ring breathing in size
        r = size * (1.2 + 0.6 * math.sin(phase))
        cv.disc(ax, ay, r, colour, inner=r * 0.6)
    elif motion == "diagonal":  # from one corner to the opposite one
        q = p if inst.direction > 0 else 1 - p
        cv.square(w * (0.1 + 0.8 * q), h * (0.15 + 0.7 * q), size * 1.1, 0.0, colour, checker=max(int(size * 0.5), 3))
    else:  # pragma: no cover - ACTION_CLASSES and this function go together
        raise AssertionError(motion)


def _pitch(rng: np.random.Generator, width: int, height: int, pan: int) -> np.ndarray:
    """A wide striped pitch with white lines, (height, width + pan, 3) uint8; frames are windows that pan over it."""
    total = width + pan
    base = np.array([40, 140, 50]) + rng.integers(-8, 9, size=3)
    stripe = max(int(width / 8), 8)
    xs = np.arange(total)
    light = ((xs // stripe) % 2 == 0)[None, :, None]
    img = np.where(light, base + 18, base - 10) * np.ones((height, 1, 1))
    img[:, :, :] += rng.normal(0, 3, size=(height, 1, 3))  # faint row-wise grain of the turf
    img[:, total // 2 - 1: total // 2 + 2] = 235  # halfway line
    yy, xx = np.mgrid[0:height, 0:total]
    d = np.hypot(xx - total / 2, yy - height / 2)
    img[np.abs(d - height * 0.22) < 1.3] = 235  # centre circle
    img[:3], img[-3:] = 235, 235  # touchlines
    return np.clip(img, 0, 255).astype(np.uint8)


def _render_video(path: str, rng: np.random.Generator, duration: float, instances: list[_Instance],
                  width: int, height: int, fps: int) -> None:
    import av

    pan = width // 2
    pitch = _pitch(rng, width, height, pan)
    noise = rng.integers(-4, 5, size=(4, height, width, 3), dtype=np.int16)
    pan_period = float(rng.uniform(12, 30))
    players = [
        dict(x=float(rng.uniform(0, width)), y=float(rng.uniform(20, height - 20)),
             colour=tuple(int(c) for c in rng.integers(60, 200, size=3)), vx=0.0, vy=0.0)
        for _ in range(int(rng.integers(2, 5)))
    ]
    cv = _Canvas(width, height)
    n_frames = int(round(duration * fps))
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28", "g": str(2 * fps)}
        active = 0
        for k in range(n_frames):
            t = k / fps
            off = int(round(pan / 2 * (1 - math.cos(2 * math.pi * t / pan_period))))
            cv.frame[:] = np.clip(pitch[:, off:off + width].astype(np.int16) + noise[k % len(noise)], 0, 255)
            for pl in players:  # wandering "players", unrelated to the actions
                pl["vx"] = 0.9 * pl["vx"] + float(rng.normal(0, 0.6))
                pl["vy"] = 0.9 * pl["vy"] + float(rng.normal(0, 0.6))
                pl["x"] = (pl["x"] + pl["vx"]) % width
                pl["y"] = float(np.clip(pl["y"] + pl["vy"], 15, height - 15))
                cv.rect(pl["x"] - 3, pl["y"] - 8, pl["x"] + 3, pl["y"] + 8, pl["colour"])
            while active < len(instances) and instances[active].end <= t:
                active += 1
            if active < len(instances) and instances[active].start <= t:
                _draw_action(cv, instances[active], t)
            frame = av.VideoFrame.from_ndarray(cv.frame, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _plan(n_videos: int, seed: int, duration_range: tuple[float, float], length_range: tuple[float, float],
          max_instances: int) -> list[tuple[str, float, list[_Instance], int]]:
    """(video_id, duration, instances, render seed) per video; all randomness of the archive's layout."""
    if n_videos < 1:
        raise InputError(f"--videos must be >= 1, got {n_videos}")
    lo, hi = duration_range
    if not 0 < lo <= hi:
        raise InputError(f"bad duration range {duration_range}")
    if not 0 < length_range[0] <= length_range[1] or length_range[1] + 3.0 > lo:
        raise InputError(f"videos of {lo} s are too short for action instances of {length_range[0]}-{length_range[1]} s")
    rng = np.random.default_rng(seed)
    deck: list[str] = []
    plan = []
    for i in range(n_videos):
        vid = f"match{i + 1:02d}"
        duration = float(rng.integers(int(lo), int(hi) + 1))
        insts = _schedule(rng, vid, duration, deck, length_range, max_instances)
        plan.append((vid, duration, insts, int(rng.integers(2 ** 31))))
    return plan


def plan_demo_archive(n_videos: int = 12, seed: int = 0, *, duration_range: tuple[float, float] = (60.0, 120.0),
                      length_range: tuple[float, float] = (6.0, 16.0), max_instances: int = 6) -> dict[str, dict]:
    """What :func:`render_demo_archive` with these arguments renders, without rendering it:
    ``{video_id: {"duration": seconds, "instances": [{video_id, action_class, start, end}]}}``."""
    return {
        vid: dict(duration=duration, instances=[dict(video_id=vid, action_class=x.action_class, start=x.start, end=x.end)
                                                for x in insts])
        for vid, duration, insts, _ in _plan(n_videos, seed, duration_range, length_range, max_instances)
    }


def render_demo_archive(out_uri: str, n_videos: int = 12, seed: int = 0, *,
                        duration_range: tuple[float, float] = (60.0, 120.0), size: tuple[int, int] = (320, 240),
                        fps: int = 10, length_range: tuple[float, float] = (6.0, 16.0), max_instances: int = 6,
                        progress: Callable[[str], None] | None = None) -> dict:
    """Render the demo archive under ``out_uri`` (a path or storage URI); returns what was written::

        {"out", "videos": {video_id: uri}, "annotations": uri, "classes": [...], "durations": {video_id: seconds},
         "instances": [{video_id, action_class, start, end}], "seconds": render time}

    ``duration_range`` (seconds, integers drawn inclusive), ``size`` (width, height), ``fps`` (frames per second of
    the footage) and ``length_range`` (seconds per action instance) shrink it for fast tests. Instances start and
    end on tenths of a second, at least 4 s apart, at most ``max_instances`` per video."""
    width, height = size
    began = time.perf_counter()
    plan = _plan(n_videos, seed, duration_range, length_range, max_instances)

    videos, durations, rows = {}, {}, []
    work = tempfile.mkdtemp(prefix="vmr-demo-")
    try:
        for n, (vid, duration, insts, vseed) in enumerate(plan, 1):
            local = os.path.join(work, f"{vid}.mp4")
            _render_video(local, np.random.default_rng(vseed), duration, insts, width, height, fps)
            uri = storage.join(out_uri, "videos", f"{vid}.mp4")
            with open(local, "rb") as f:
                storage.write_bytes_atomic(uri, f.read())
            os.unlink(local)
            videos[vid], durations[vid] = uri, duration
            rows += [dict(video_id=vid, action_class=x.action_class, start=x.start, end=x.end) for x in insts]
            if progress:
                progress(f"[{n}/{len(plan)}] {vid}: {duration:.0f} s, {len(insts)} actions")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    csv = "video_id,action_class,start,end\n" + "".join(
        f"{r['video_id']},{r['action_class']},{r['start']:.1f},{r['end']:.1f}\n" for r in rows)
    ann = storage.join(out_uri, "annotations", "matches.csv")
    storage.write_text_atomic(ann, csv)
    storage.write_text_atomic(storage.join(out_uri, "annotations", "classes.txt"), "\n".join(ACTION_CLASSES) + "\n")
    return dict(out=out_uri, videos=videos, annotations=ann, classes=list(ACTION_CLASSES), durations=durations,
                instances=rows, seconds=time.perf_counter() - began)
