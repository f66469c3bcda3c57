#!/usr/bin/env python
"""Distributed execution benchmark, all figures measured in one run on one machine:

1. scaling with worker processes: 1 worker × 1 thread against 2 workers × 1 thread (tiles/s), and, with
   every core used in both, 1 worker × 2 threads against 2 workers × 1 thread;
2. the distributed scheduler's overhead against dask's local threaded path on the same scene and cores
   (local threads, 2 threads, vs a local cluster of 1 worker × 2 threads).

Each configuration gets a warm-up translate (worker start, imports, model load), then ``--repeat`` timed runs
(default 3); the tables give the median and the range (min–max) of those runs, and each ratio is the ratio of
medians with the range of ratios the extreme runs allow. The load average is printed with the table: on a
shared machine the figures are only as good as the cores the benchmark actually got.

    python scripts/bench_distributed.py [--size 1536x1280] [--chunk 576] [--ngf 16] [--model M] [--repeat N]
    python scripts/bench_distributed.py --size 400x300 --chunk 192 --repeat 2     # smoke run (~1 min)

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_model(path: Path, ngf: int) -> str:
    """A generator with seeded random weights of the bundled architecture (``ngf`` sets its cost)."""
    import torch

    from sar2opt_geo.models.checkpoint import CheckpointMeta, save_checkpoint
    from sar2opt_geo.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("unet_sar2optical", in_channels=3, out_channels=3, ngf=ngf).eval()
    meta = CheckpointMeta(
        name=f"bench-unet-ngf{ngf}",
        architecture="unet_sar2optical",
        arch_args={"in_channels": 3, "out_channels": 3, "ngf": ngf},
        input_bands=["VV"],
        radiometry={"scale": "db", "clip": [-25.0, 0.0], "out_range": [-1.0, 1.0], "replicate_to": 3},
        provenance={"source": "scripts/bench_distributed.py: seeded random weights"},
    )
    save_checkpoint(path, model, meta)
    return str(path)


def timed(scene: str, warm: str, out_dir: Path, opts, executor, repeat: int) -> tuple[list[float], int]:
    """Seconds of each of ``repeat`` translates after one warm-up, and the tiles evaluated per run."""
    from sar2opt_geo.run import run_translate

    run_translate(warm, str(out_dir / "warm.tif"), opts, executor, overwrite=True)
    times, n = [], 0
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        s = run_translate(scene, str(out_dir / "out.tif"), opts, executor, overwrite=True)
        times.append(time.perf_counter() - t0)
        n = s.evaluations
    return times, n


def ratio(num: list[float], den: list[float], fmt=".2f", suffix="×", percent=False) -> str:
    """``median(num) / median(den)`` with the range the extreme runs allow (min/max, max/min)."""
    conv = (lambda r: 100 * (r - 1)) if percent else (lambda r: r)
    med = conv(statistics.median(num) / statistics.median(den))
    lo, hi = conv(min(num) / max(den)), conv(max(num) / min(den))
    return f"{med:{fmt}}{suffix} ({lo:{fmt}} to {hi:{fmt}})"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1536x1280", help="scene WIDTHxHEIGHT")
    p.add_argument("--chunk", type=int, default=576)
    p.add_argument("--ngf", type=int, default=16, help="generator width when no --model is given")
    p.add_argument("--model", default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per configuration (median and range)")
    a = p.parse_args(argv)

    from sar2opt_geo.distributed import ThreadedExecutor, make_executor
    from sar2opt_geo.plan import TranslateOptions
    from sar2opt_geo.synth import SceneSpec, write_scene

    cores = os.cpu_count() or 1
    w, h = (int(v) for v in a.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        tmp = Path(tmp)
        scene, _ = write_scene(tmp / "scene", SceneSpec(width=w, height=h, seed=11))
        warm, _ = write_scene(tmp / "warm", SceneSpec(width=300, height=300, seed=12, footprint=False))
        model = a.model or make_model(tmp / "model.safetensors", a.ngf)
        opts = TranslateOptions(model=model, device="cpu", chunk_size=a.chunk, batch_size=a.batch_size)
        load0 = os.getloadavg()
        rows = []  # (label, seconds of each run, evaluations)

        def run_cluster(workers, tpw, pin=False):
            with make_executor(workers=workers, threads_per_worker=tpw) as ex:
                torch_threads = set(ex.client.run(_torch_threads).values())
                if pin:  # worker i (all its threads) on core i: one core per worker process
                    for core, addr in enumerate(sorted(ex.client.scheduler_info()["workers"])):
                        ex.client.run(_pin_process, core, workers=[addr])
                sec, n = timed(str(scene), str(warm), tmp, opts, ex, a.repeat)
            label = f"local cluster, {workers} worker{'s' * (workers > 1)} × {tpw} thread{'s' * (tpw > 1)}"
            label += f" (torch threads {'/'.join(map(str, sorted(torch_threads)))})"
            if pin:
                label += ", each worker pinned to its own core"
            rows.append((label, sec, n))
            return sec, n

        import torch

        sec, n = timed(str(scene), str(warm), tmp, opts, ThreadedExecutor(cores), a.repeat)
        rows.append((f"local threads, {cores} threads (torch threads {torch.get_num_threads()})", sec, n))
        t_threads = sec
        t_1x1, _ = run_cluster(1, 1)
        t_1xc, _ = run_cluster(1, cores)
        t_cx1, _ = run_cluster(cores, 1)
        t_pin1, _ = run_cluster(1, 1, pin=True)
        t_pinc, _ = run_cluster(cores, 1, pin=True)
        load1 = os.getloadavg()

    print(
        f"Scene {w} × {h} px, chunk {a.chunk}, model {Path(model).name if a.model else f'ngf={a.ngf}'}, "
        f"batch {a.batch_size}, {cores} cores ({platform.processor() or platform.machine()}); "
        f"{a.repeat} timed runs per configuration after a warm-up; "
        f"load average before {load0[0]:.2f}, after {load1[0]:.2f} (1 min)"
    )
    print()
    print("| configuration | time (s), median | range (s) | tiles evaluated | tiles/s (median) |")
    print("|---|---:|---:|---:|---:|")
    for label, sec, n in rows:
        med = statistics.median(sec)
        print(f"| {label} | {med:.2f} | {min(sec):.2f}–{max(sec):.2f} | {n} | {n / med:.2f} |")
    print()
    print("| measure | median (range) | goal |")
    print("|---|---:|---:|")
    print(f"| scaling: {cores} workers × 1 thread vs 1 worker × 1 thread | {ratio(t_1x1, t_cx1)} | ≥ 1.6× |")
    print(
        f"| scaling, one core per worker process: {cores} pinned workers vs 1 pinned worker | "
        f"{ratio(t_pin1, t_pinc)} | ≥ 1.6× |"
    )
    print(
        f"| same cores: {cores} workers × 1 thread vs 1 worker × {cores} threads | {ratio(t_1xc, t_cx1)} | |"
    )
    print(
        f"| distributed overhead: 1 worker × {cores} threads vs local threads | "
        f"{ratio(t_1xc, t_threads, '+.1f', ' %', percent=True)} | ≤ 10 % |"
    )
    best = t_1xc if statistics.median(t_1xc) <= statistics.median(t_cx1) else t_cx1
    print(
        f"| distributed overhead: best cluster (by median) vs local threads | "
        f"{ratio(best, t_threads, '+.1f', ' %', percent=True)} | ≤ 10 % |"
    )


def _pin_process(core: int) -> None:
    """Pin every thread of this worker process to one core (taskset -a)."""
    import subprocess

    subprocess.run(["taskset", "-a", "-cp", str(core), str(os.getpid())], check=True, capture_output=True)


def _torch_threads():
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
