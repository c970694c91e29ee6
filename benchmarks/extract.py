"""Benchmark of `vmr extract` (run from the repo root: ``python benchmarks/extract.py``). Everything is measured in
this one run, so the ratios compare like with like on a noisy, shared machine.

1. Pipeline vs bare tower: frames embedded per second by the Ray Data pipeline (decode + preprocess tasks -> CLIP
   actor -> feature store) against the bare CLIP image tower (``ClipEncoder.encode_images`` on already preprocessed
   tensors) on the same device, batch size and torch threads as the pipeline's actor (ViT-B-32, random weights).
   Excluded from the pipeline's time: Ray start-up and the driver's one-off weights check (done before the clock
   starts). Reported end to end (listing to the last write, the actor's model load included) and in steady state
   (from the first embedded block the driver receives to the last: the start-up fill excluded; coarse, as blocks
   arrive every ~50 frames). The machine is shared, so wall-clock ratios depend on the CPU share each process gets;
   the CPU-time ratio (bare tower CPU seconds per frame / the CLIP actor's, sampled with psutil over the Ray
   processes, its start-up subtracted) is the throughput ratio each would reach on a dedicated core.
2. Where the preprocessing goes: per-frame cost of decode, preprocess and tower (1 thread each), and bytes per frame
   before/after preprocessing (what would cross the object store if the actor preprocessed).
3. Sampled decoding (only the frames nearest each sample time) against decoding every frame, same files, same decord.
4. Memory of a decode task on long 1080p videos (synthesised into /tmp: a 20 s 1080p H.264 clip remuxed end to end
   to 3 minutes and to ``--long-minutes``): the peak RSS (VmHWM) of a child process running the pipeline's decode UDF
   over the whole file (``--long-fps`` samples/s), split into the imports and the decoding, against the file size;
   the same decoding memory for both lengths shows nothing grows with the video, and chunk 16 against the default
   shows what the chunk costs. Ray adds at most one output block (block_mb) on top.

Videos come from ../shared/data/videos (read-only); nothing is written into the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
PIPELINE_VIDEOS = ["intel-sample-videos/one-by-one-person-detection.mp4", "intel-sample-videos/bottle-detection.mp4",
                   "intel-sample-videos/car-detection.mp4", "opencv/box.mp4"]
DECODE_VIDEOS = ["intel-sample-videos/one-by-one-person-detection.mp4", "intel-sample-videos/car-detection.mp4",
                 "intel-sample-videos/bottle-detection.mp4"]


def log(msg: str) -> None:
    print(msg, flush=True)


# -- 1. pipeline vs bare tower --------------------------------------------------------------------------------------
def bare_tower(encoder, pixels: np.ndarray, batch_size: int, threads: int, seconds: float) -> tuple[float, float]:
    """(frames/s, CPU seconds per frame) of encode_images on preprocessed pixels, cycling through them for at least
    ``seconds``. With one thread the tower runs in the calling thread, so its thread CPU time is the tower's."""
    import torch

    torch.set_num_threads(threads)
    x = torch.from_numpy(pixels)
    encoder.encode_images(x[:batch_size])  # warm-up
    n, t0, c0 = 0, time.perf_counter(), time.thread_time() if threads == 1 else time.process_time()
    while True:
        for i in range(0, len(x) - batch_size + 1, batch_size):
            encoder.encode_images(x[i:i + batch_size])
            n += batch_size
        if time.perf_counter() - t0 >= seconds:
            cpu = (time.thread_time() if threads == 1 else time.process_time()) - c0
            return n / (time.perf_counter() - t0), cpu / n


class CpuSampler(threading.Thread):
    """Samples the CPU seconds (user + system) of every process below this one (the local Ray cluster: the CLIP
    actor, the decode workers, Ray's own daemons) every ``period`` seconds, by process title."""

    def __init__(self, period: float = 0.25):
        super().__init__(daemon=True)
        self.period, self.samples, self.halt = period, [], threading.Event()

    def snapshot(self) -> dict[int, tuple[str, float]]:
        out = {}
        for p in psutil.Process().children(recursive=True):
            try:
                t = p.cpu_times()
                out[p.pid] = (" ".join(p.cmdline())[:80], t.user + t.system)
            except psutil.Error:
                pass
        return out

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append((time.perf_counter(), self.snapshot()))
            self.halt.wait(self.period)

    def cpu(self, title: str, start: float, end: float) -> float:
        """CPU seconds spent between ``start`` and ``end`` by processes whose title ever contained ``title`` (a Ray
        worker's title names the task it runs, and IDLE between tasks)."""
        def at(t):
            return min(self.samples, key=lambda s: abs(s[0] - t))[1]
        pids = {pid for _, snap in self.samples for pid, (name, _) in snap.items() if title in name}  # titles change
        a, b = at(start), at(end)
        return sum(c - a.get(pid, ("", 0.0))[1] for pid, (_, c) in b.items() if pid in pids)


def actor_start_cpu(model: str) -> float:
    """CPU seconds a fresh process spends importing vmr/torch/open_clip and building the CLIP model (1 thread): what
    the actor spends before its first batch, subtracted from its CPU time."""
    code = ("import time, torch; torch.set_num_threads(1); t = time.process_time(); "
            "from vmr.features.clip import ClipEncoder; ClipEncoder(%r, 'none', device='cpu'); "
            "print(time.process_time() - t)" % model)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def pipeline(videos: list[Path], fps: float, batch_size: int, model: str) -> dict:
    from vmr.pipeline.extract import ExtractConfig, _check_weights, run_extract
    from vmr.pipeline.ray_session import ensure_ray

    with tempfile.TemporaryDirectory(prefix="vmr-bench-") as tmp:
        src = Path(tmp) / "videos"
        src.mkdir()
        for v in videos:
            os.symlink(v, src / v.name)
        ensure_ray()  # excluded: Ray start-up
        _check_weights(model, "none", 0)  # excluded: the driver's one-off weights check (cached per process)
        stamps: list[tuple[float, int]] = []
        cfg = ExtractConfig(videos=str(src), out=str(Path(tmp) / "store"), fps=fps, model=model, pretrained="none",
                            batch_size=batch_size)
        sampler = CpuSampler()
        sampler.start()
        t_start = time.perf_counter()
        summary = run_extract(cfg, announce=lambda s: None, on_batch=lambda n: stamps.append((time.perf_counter(), n)))
        t_end = time.perf_counter()
        time.sleep(0.5)
        sampler.halt.set()
        sampler.join()
    if summary.failed:
        raise RuntimeError(f"pipeline failures: {summary.failed}")
    (t_first, n_first), (t_last, _) = stamps[0], stamps[-1]
    steady_frames = summary.frames - n_first
    steady = steady_frames / (t_last - t_first) if t_last > t_first else float("nan")
    return {"frames": summary.frames, "seconds": summary.seconds, "end_to_end_fps": summary.frames_per_second,
            "steady_fps": steady, "batches": len(stamps),
            # CPU seconds per frame over the whole run; the actor's without its start (imports + model construction)
            "actor_cpu": (sampler.cpu("ClipActor", t_start, t_end) - actor_start_cpu(model)) / summary.frames,
            "decode_cpu": sampler.cpu("decode_videos", t_start, t_end) / summary.frames,
            "all_cpu": (sampler.cpu("", t_start, t_end)) / summary.frames}


# -- 2. preprocessing placement ------------------------------------------------------------------------------------
def stage_costs(encoder, path: Path, fps: float) -> dict:
    """Per-frame seconds of decode (sampled), preprocess and tower, each on one torch thread."""
    import torch

    from vmr.features.extraction import FramePreprocessor, preprocess_config
    from vmr.features.video import iter_sampled_frames

    torch.set_num_threads(1)
    pre = FramePreprocessor(preprocess_config(encoder))
    t_dec = t_pre = 0.0
    n, pix, raw_bytes = 0, [], 0
    t = time.perf_counter()
    for ts, frames in iter_sampled_frames(str(path), fps):
        t_dec += time.perf_counter() - t
        t = time.perf_counter()
        pix.append(pre(frames))
        t_pre += time.perf_counter() - t
        n += len(ts)
        raw_bytes = frames[0].nbytes
        t = time.perf_counter()
    x = torch.from_numpy(np.concatenate(pix))
    t = time.perf_counter()
    for i in range(0, len(x), 32):
        encoder.encode_images(x[i:i + 32])
    t_tow = time.perf_counter() - t
    return {"frames": n, "decode_s": t_dec / n, "preprocess_s": t_pre / n, "tower_s": t_tow / n,
            "raw_bytes": raw_bytes, "pixel_bytes": int(x[0].numel() * 4), "pixels": x.numpy()}


# -- 3. sampled vs every frame --------------------------------------------------------------------------------------
def decode_all(path: Path, chunk: int = 16) -> tuple[int, float]:
    import decord

    t = time.perf_counter()
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    n = len(reader)
    for i in range(0, n, chunk):
        reader.get_batch(list(range(i, min(n, i + chunk)))).asnumpy()
    return n, time.perf_counter() - t


def decode_sampled_timed(path: Path, fps: float) -> tuple[int, float]:
    from vmr.features.video import iter_sampled_frames

    t = time.perf_counter()
    n = sum(len(ts) for ts, _ in iter_sampled_frames(str(path), fps))
    return n, time.perf_counter() - t


# -- 4. a long 1080p video ------------------------------------------------------------------------------------------
_MAKE_LONG = r'''
import sys, av, numpy as np
dst, minutes = sys.argv[1], float(sys.argv[2])
clip, fps, w, h = 20, 25, 1920, 1080
tmp = dst + ".clip.mp4"
rng = np.random.default_rng(0)
with av.open(tmp, "w") as out:
    s = out.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.bit_rate = 6_000_000
    s.options = {"preset": "ultrafast", "g": "50"}
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 96)], -1).astype(np.uint8)
    for i in range(clip * fps):
        f = base.copy()
        x0 = (i * 23) % (w - 320); y0 = (i * 11) % (h - 240)
        f[y0:y0 + 240, x0:x0 + 320] = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)  # a moving noisy patch
        frame = av.VideoFrame.from_ndarray(f, format="rgb24")
        frame.pts = i
        for p in s.encode(frame):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
reps = int(round(minutes * 60 / clip))
with av.open(tmp) as inp, av.open(dst, "w", format="mp4") as out:
    ins = inp.streams.video[0]
    os_ = out.add_stream_from_template(ins)
    packets = [p for p in inp.demux(ins) if p.size]
    span = max(p.pts for p in packets) - min(p.pts for p in packets) + packets[0].duration
    for r in range(reps):
        for p in packets:
            q = av.Packet(bytes(p))
            q.pts, q.dts, q.duration = p.pts + r * span, p.dts + r * span, p.duration
            q.is_keyframe = p.is_keyframe
            q.time_base = p.time_base
            q.stream = os_
            out.mux(q)
import os; os.unlink(tmp)
'''

_DECODE_TASK = r'''
import json, sys, time
import numpy as np
def status(key):  # kB from /proc/self/status (VmHWM: this process's peak RSS; ru_maxrss would survive the exec)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
path, fps, cfg, chunk = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
import torch, decord, open_clip  # the imports a decode task has anyway
from vmr.pipeline.extract import decode_videos
base = status("VmHWM")
batch = {"uri": np.array([path], dtype=object), "video_id": np.array(["long"], dtype=object),
         "size": np.array([0]), "etag": np.array(["-"], dtype=object)}
t, n, err = time.perf_counter(), 0, ""
for out in decode_videos(batch, fps=fps, preprocess_cfg=cfg, chunk=chunk):
    if out["error"][0]:
        err = out["error"][0]
    n += len(out["t"])
print(json.dumps({"rows": n, "error": err, "seconds": time.perf_counter() - t, "import_rss_kb": base,
                  "peak_rss_kb": status("VmHWM")}))
'''


def long_video(minutes: float) -> Path:
    path = Path(tempfile.gettempdir()) / f"vmr-bench-long-1080p-{minutes:g}min.mp4"
    if not path.exists():
        log(f"  synthesising {path} ({minutes:g} min of 1080p H.264; cached for later runs)")
        subprocess.run([sys.executable, "-c", _MAKE_LONG, str(path) + ".part", str(minutes)], check=True)
        os.replace(str(path) + ".part", path)
    return path


def decode_task_memory(path: Path, fps: float, pp_cfg: dict, chunk: int) -> dict:
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in pp_cfg.items()}
    out = subprocess.run([sys.executable, "-c", _DECODE_TASK, str(path), str(fps), json.dumps(cfg), str(chunk)],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--fps", type=float, default=2.0, help="samples per second for the pipeline run")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--long-minutes", type=float, default=90.0)
    ap.add_argument("--long-fps", type=float, default=0.1, help="samples per second over the long video")
    ap.add_argument("--skip-long", action="store_true")
    ap.add_argument("--keep-long", action="store_true", help="keep the synthesised long video in /tmp")
    args = ap.parse_args()

    import torch

    from vmr.features.clip import ClipEncoder
    from vmr.features.extraction import preprocess_config
    from vmr.pipeline.extract import ExtractConfig

    threads = int(ExtractConfig().cpus_per_actor)
    log(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}; "
        f"model {args.model} (random weights), batch {args.batch_size}, actor threads {threads}")
    encoder = ClipEncoder(args.model, "none", device="cpu")

    log("\n[2] stage costs per frame (1 thread each), one-by-one-person-detection.mp4 at 0.5 samples/s")
    c = stage_costs(encoder, VIDEOS / DECODE_VIDEOS[0], 0.5)
    log(f"  decode {c['decode_s'] * 1e3:.1f} ms, preprocess {c['preprocess_s'] * 1e3:.1f} ms, "
        f"tower {c['tower_s'] * 1e3:.1f} ms  -> decode+preprocess = {(c['decode_s'] + c['preprocess_s']) / c['tower_s']:.2f}"
        f" x tower")
    log(f"  bytes per frame: decoded {c['raw_bytes'] / 1e6:.2f} MB at 768x432 ({1920 * 1080 * 3 / 1e6:.2f} MB at 1080p),"
        f" preprocessed {c['pixel_bytes'] / 1e6:.2f} MB")

    log(f"\n[1] bare tower vs pipeline, batch {args.batch_size}, {threads} thread(s)")
    pixels = np.concatenate([c["pixels"]] * max(1, -(-2 * args.batch_size // len(c["pixels"]))))
    bare, bare_cpu = bare_tower(encoder, pixels, args.batch_size, threads, seconds=20)
    log(f"  bare tower: {bare:.2f} frames/s, {bare_cpu * 1e3:.0f} ms CPU per frame")
    p = pipeline([VIDEOS / v for v in PIPELINE_VIDEOS], args.fps, args.batch_size, args.model)
    bare_after, bare_cpu_after = bare_tower(encoder, pixels, args.batch_size, threads, seconds=20)
    bare_mean, bare_cpu_mean = (bare + bare_after) / 2, (bare_cpu + bare_cpu_after) / 2
    log(f"  pipeline: {p['frames']} frames in {p['seconds']:.1f} s end to end = {p['end_to_end_fps']:.2f} frames/s; "
        f"steady state {p['steady_fps']:.2f} frames/s over {p['batches']} batches")
    log(f"  bare tower again: {bare_after:.2f} frames/s, {bare_cpu_after * 1e3:.0f} ms CPU per frame "
        f"(mean of both {bare_mean:.2f} frames/s, {bare_cpu_mean * 1e3:.0f} ms)")
    log(f"  RATIO pipeline/bare tower, wall clock: steady state {p['steady_fps'] / bare_mean:.2f}, "
        f"end to end {p['end_to_end_fps'] / bare_mean:.2f}  (goal >= 0.9; CPU share under contention varies)")
    log(f"  CPU per frame: CLIP actor {p['actor_cpu'] * 1e3:.0f} ms (its start-up subtracted), decode tasks "
        f"{p['decode_cpu'] * 1e3:.0f} ms, every Ray process together {p['all_cpu'] * 1e3:.0f} ms")
    log(f"  RATIO pipeline/bare tower, CPU time (throughput each reaches on a dedicated core): "
        f"{bare_cpu_mean / p['actor_cpu']:.2f}; decode/actor CPU {p['decode_cpu'] / p['actor_cpu']:.2f} "
        f"(< 1: one decode slot keeps the actor fed)")
    bare2, _ = bare_tower(encoder, pixels, args.batch_size, min(2, os.cpu_count() or 1), seconds=20)
    log(f"  for context, bare tower on {min(2, os.cpu_count() or 1)} threads: {bare2:.2f} frames/s")

    log("\n[3] sampled decoding vs decoding every frame (same decord)")
    for rel in DECODE_VIDEOS:
        path = VIDEOS / rel
        for fps in (0.5, 2.0):
            ns, ts = decode_sampled_timed(path, fps)
            na, ta = decode_all(path)
            log(f"  {path.name}: {fps:g}/s sampled {ns} frames in {ts:.2f} s; all {na} frames in {ta:.2f} s -> "
                f"RATIO all/sampled time {ta / ts:.1f}x")

    if not args.skip_long:
        log(f"\n[4] decode task memory: a 3-minute and a {args.long_minutes:g}-minute 1080p video, {args.long_fps:g} samples/s")
        paths = [long_video(3.0), long_video(args.long_minutes)]
        try:
            runs = [(paths[0], ExtractConfig().chunk), (paths[0], 16), (paths[1], ExtractConfig().chunk)]
            for path, chunk in runs:
                m = decode_task_memory(path, args.long_fps, preprocess_config(encoder), chunk)
                size = path.stat().st_size
                grow = (m["peak_rss_kb"] - m["import_rss_kb"]) / 1024
                log(f"  {path.name}, chunk {chunk}: file {size / 2**30:.2f} GiB, {m['rows']} rows in {m['seconds']:.0f} s"
                    f"{' ERROR ' + m['error'] if m['error'] else ''}; peak RSS {m['peak_rss_kb'] / 1024:.0f} MiB = "
                    f"{m['import_rss_kb'] / 1024:.0f} MiB after imports + {grow:.0f} MiB decoding "
                    f"-> RATIO decoding memory / file size {grow * 2**20 / size:.3f}")
        finally:
            if not args.keep_long:
                for path in paths:
                    path.unlink(missing_ok=True)
    log(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
