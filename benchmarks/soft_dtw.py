"""Benchmark: batched soft-DTW forward+backward, vmr vs pysdtw (its CPU/numba path) vs tslearn (SoftDTWLossPyTorch).

Workload (issue 3): B=64 target/query pairs, M=75 target rows, N=30 query rows, d=256 features, float32, gamma=0.1.

- "features": every implementation gets the same leaf features and runs cost = 1 - cos (vmr.alignment.cosine_cost,
  the same function for all) -> soft-DTW -> sum -> backward to the features, so the cost computation is included
  equally (the issue's setting).
- "cost": soft-DTW alone on a precomputed (B, M, N) cost that requires grad (what differs between implementations).

Time: median over interleaved repeats after warm-up (numba JIT excluded), wall clock and process CPU time, in one
process; ratios are (faster baseline) / vmr, measured in this run. pysdtw and tslearn run their numba kernels over the
batch in parallel on all cores (numba's default); vmr runs torch with --threads intra-op threads (default 1).
OMP_WAIT_POLICY=PASSIVE (numba's OpenMP threads would otherwise spin after each call, on the core the next
implementation needs). Memory: each implementation runs once more in a fresh subprocess with glibc's mmap threshold
pinned low (so freed large blocks go back to the OS), and reports the peak-RSS increase of one warmed-up
forward+backward over the RSS just before it (Linux /proc/self/clear_refs + VmHWM). The "features" memory includes
the feature gradients (6.9 MiB) for all.

Run:  .venv/bin/python benchmarks/soft_dtw.py [--repeats 30] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

# numba's OpenMP workers otherwise spin for milliseconds after each parallel call, on the core the next implementation
# in the interleaved loop needs; passive waiting keeps each measurement to its own work (read at libgomp load time).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

B, M, N, D, GAMMA = 64, 75, 30, 256, 0.1
NAMES = ["vmr", "pysdtw", "tslearn"]
WORKLOADS = ["features", "cost"]


def make_inputs(workload: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Leaf tensors: (x (B, M, D), y (B, N, D)) for "features", (cost (B, M, N),) for "cost"."""
    from vmr.alignment import cosine_cost

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, M, D, generator=gen)
    y = torch.randn(B, N, D, generator=gen)
    if workload == "cost":
        return (cosine_cost(x, y).requires_grad_(),)
    return x.requires_grad_(), y.requires_grad_()


def build(name: str, workload: str):
    """A function(*leaves) -> (B,) soft-DTW values, for one implementation and workload."""
    from vmr.alignment import cosine_cost, soft_dtw

    if name == "vmr":
        sdtw = lambda c: soft_dtw(c, GAMMA)  # noqa: E731
    elif name == "pysdtw":
        from pysdtw.sdtw_cpu import SoftDTWcpu

        full = torch.tensor([[M, N]]).expand(B, 2)
        sdtw = lambda c: SoftDTWcpu.apply(c, full, GAMMA, 0.0)  # noqa: E731  (what pysdtw.SoftDTW(use_cuda=False) runs)
    elif name == "tslearn":
        from tslearn.metrics.soft_dtw_loss_pytorch import _SoftDTWLossPyTorch

        # what SoftDTWLossPyTorch(gamma, dist_func=...) runs; it writes inf into its input where a global constraint
        # masks cells (none here), so it gets a fresh cost tensor as it would from its dist_func
        def sdtw(c):
            return _SoftDTWLossPyTorch.apply(c if c.grad_fn is not None else c * 1.0, GAMMA, 0, None, None)
    else:
        raise ValueError(name)
    if workload == "cost":
        return sdtw
    return lambda x, y: sdtw(cosine_cost(x, y))


def step(fn, leaves):
    for t in leaves:
        t.grad = None
    value = fn(*leaves)
    value.sum().backward()
    return value


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def measure_memory(name: str, workload: str) -> int:
    """Child process body: peak RSS increase (KiB) of one warmed-up forward+backward."""
    import gc

    fn, leaves = build(name, workload), make_inputs(workload)
    for _ in range(3):
        step(fn, leaves)
    for t in leaves:
        t.grad = None
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    step(fn, leaves)
    return _status_kib("VmHWM") - before


def run_workload(workload: str, repeats: int, threads: int) -> dict:
    leaves = make_inputs(workload)
    fns = {name: build(name, workload) for name in NAMES}

    # correctness first: all three agree on values and gradients
    ref_val = step(fns["vmr"], leaves).detach().double()
    ref_grads = [t.grad.clone() for t in leaves]
    for name in NAMES[1:]:
        val = step(fns[name], leaves).detach().double()
        err_v = ((val - ref_val).abs() / ref_val.abs().clamp_min(1e-6)).max().item()
        err_g = max((t.grad - g).abs().max().item() for t, g in zip(leaves, ref_grads))
        print(f"  [{workload}] vmr vs {name}: max rel value diff {err_v:.1e}, max abs gradient diff {err_g:.1e}")

    for fn in fns.values():  # warm-up (numba JIT, allocator)
        for _ in range(3):
            step(fn, leaves)
    wall = {name: [] for name in NAMES}
    cpu = {name: [] for name in NAMES}
    for _ in range(repeats):
        for name, fn in fns.items():  # interleaved, so machine noise hits all alike
            t0, c0 = time.perf_counter(), time.process_time()
            step(fn, leaves)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - t0)

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    memory = {}
    for name in NAMES:
        cmd = [sys.executable, __file__, "--memory-child", f"{name}:{workload}", "--threads", str(threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        memory[name] = int(out.stdout.strip().splitlines()[-1])

    med_wall = {n: statistics.median(v) * 1e3 for n, v in wall.items()}
    med_cpu = {n: statistics.median(v) * 1e3 for n, v in cpu.items()}
    for name in NAMES:
        print(f"  [{workload}] {name:8s} wall median {med_wall[name]:7.2f} ms (p10 {_p10(wall[name]):6.2f})  "
              f"CPU median {med_cpu[name]:7.2f} ms  peak RSS +{memory[name] / 1024:5.1f} MiB")
    best = min(NAMES[1:], key=med_wall.get)
    best_cpu = min(NAMES[1:], key=med_cpu.get)
    print(f"  [{workload}] speed-up of vmr over the faster baseline: wall {med_wall[best] / med_wall['vmr']:.2f}x "
          f"(vs {best}), CPU time {med_cpu[best_cpu] / med_cpu['vmr']:.2f}x (vs {best_cpu})")
    return {"wall_ms": med_wall, "cpu_ms": med_cpu, "peak_rss_kib": memory}


def _p10(values: list[float]) -> float:
    return sorted(values)[len(values) // 10] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (numba keeps its default pool)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(measure_memory(*args.memory_child.split(":")))
        return

    import numba

    print(f"soft-DTW forward+backward, B={B} M={M} N={N} d={D} float32 gamma={GAMMA}; torch {torch.__version__} with "
          f"{args.threads} thread(s); numba {numba.__version__} with {numba.config.NUMBA_NUM_THREADS} thread(s); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for workload in WORKLOADS:
        run_workload(workload, args.repeats, args.threads)


if __name__ == "__main__":
    main()
