#!/usr/bin/env python
"""Benchmark of the translate pipeline, all figures measured in one run on one machine:

1. pipeline efficiency: end-to-end tiles/s ÷ model-only tiles/s (same model, batch size, device);
2. peak RSS of a translate of a 1× and a 4× scene (each in a fresh subprocess), and their ratio;
3. speed against a naive loop (a rasterio window read per tile, batch 1, same model and overlap, blended
   in a whole-scene array in memory).

    python scripts/bench_translate.py [--size 2048] [--model PATH] [--device cpu] [--batch-size 8]

Prints a Markdown table (paste it into the README).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sar2opt_geo.defaults import BUNDLED_MODEL as DEFAULT_MODEL  # noqa: E402


def full_size_checkpoint(path: Path) -> str:
    """The SAR2Optical architecture at full size (ngf 64, 54.5 M parameters), random weights: its speed is
    what matters here, and no trained full-size weights can be downloaded."""
    import torch

    from sar2opt_geo.models.checkpoint import CheckpointMeta, save_checkpoint
    from sar2opt_geo.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("unet_sar2optical", in_channels=3, out_channels=3, ngf=64).eval()
    meta = CheckpointMeta(
        name="unet_sar2optical-ngf64-random",
        arch_args={"in_channels": 3, "out_channels": 3, "ngf": 64},
        radiometry={"scale": "db", "clip": [-25.0, 0.0], "out_range": [-1.0, 1.0], "replicate_to": 3},
    )
    save_checkpoint(path, model, meta)
    return str(path)


def make_scene(outdir: Path, size: int, seed: int = 11) -> str:
    from sar2opt_geo.synth import SceneSpec, write_scene

    sar, _ = write_scene(outdir, SceneSpec(width=size, height=size, seed=seed))
    return str(sar)


def model_only_rate(model: str, device: str, batch: int, n_tiles: int) -> float:
    from sar2opt_geo.translate import make_model_ref, predict

    ref = make_model_ref(model, device)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(n_tiles, 3, 256, 256)).astype(np.float32)
    predict(ref, x[:batch], batch)  # warm-up (load + first pass)
    t0 = time.perf_counter()
    predict(ref, x, batch)
    return n_tiles / (time.perf_counter() - t0)


def pipeline_rate(scene: str, model: str, device: str, batch: int, out: Path) -> tuple[float, int]:
    from sar2opt_geo.distributed import ThreadedExecutor
    from sar2opt_geo.plan import TranslateOptions
    from sar2opt_geo.run import run_translate

    opts = TranslateOptions(model=model, device=device, batch_size=batch)
    run_translate(scene, str(out), opts, ThreadedExecutor(), overwrite=True)  # warm-up (imports, model cache)
    t0 = time.perf_counter()
    s = run_translate(scene, str(out), opts, ThreadedExecutor(), overwrite=True)
    dt = time.perf_counter() - t0
    return s.evaluations / dt, s.evaluations


def naive_loop(scene: str, model: str, device: str, out: Path) -> tuple[float, int]:
    """The obvious script: one rasterio window per tile, batch 1, whole-scene accumulators in memory."""
    import rasterio
    import torch
    from rasterio.windows import Window

    from sar2opt_geo.blend import tile_window
    from sar2opt_geo.models.checkpoint import load_generator
    from sar2opt_geo.radiometry import Radiometry, SceneStats, normalize, output_to_uint8
    from sar2opt_geo.tiling import TileGrid

    gen, meta = load_generator(model, device)
    rad = Radiometry.from_dict(meta.radiometry)
    stats = SceneStats(lo=(rad.clip[0],), hi=(rad.clip[1],))
    t0 = time.perf_counter()
    n = 0
    with rasterio.open(scene) as src:
        g = TileGrid(src.height, src.width, 256, 64)
        acc = np.zeros((3, src.height, src.width), np.float32)
        wsum = np.zeros((src.height, src.width), np.float32)
        for i in range(g.n_rows):
            for j in range(g.n_cols):
                r, c = g.origin(i, j)
                a = src.read(1, window=Window(c, r, 256, 256), boundless=True, fill_value=0)
                valid = a > 0
                if not valid.any():
                    continue
                x = normalize(a[None], valid, rad, stats)
                with torch.inference_mode():
                    y = gen(torch.from_numpy(x[None]).to(device)).float().cpu().numpy()[0]
                n += 1
                w = tile_window(g, i, j)
                h, wd = min(256, src.height - r), min(256, src.width - c)
                acc[:, r : r + h, c : c + wd] += (y * w)[:, :h, :wd]
                wsum[r : r + h, c : c + wd] += w[:h, :wd]
        rgb = output_to_uint8(acc / np.maximum(wsum, 1e-6))
        profile = src.profile | {"count": 3, "dtype": "uint8", "nodata": None, "driver": "GTiff"}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(rgb)
    return n / (time.perf_counter() - t0), n


def peak_rss_mb(scene: str, model: str, device: str, out: Path) -> float:
    code = (
        "import resource, sys;"
        "from sar2opt_geo.cli import main;"
        f"sys.argv=['sar2opt-geo','translate',{scene!r},{str(out)!r},'--model',{model!r},'--device',{device!r},"
        "'--overwrite','-q'];"
        "\ntry:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(res.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048, help="1× scene side (4× scene: twice the side)")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--full-size", type=int, default=768, help="scene side for the ngf-64 rows (0: skip)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        s1 = make_scene(tmp / "s1", args.size)
        s4 = make_scene(tmp / "s4", 2 * args.size)
        e2e, n_eval = pipeline_rate(s1, args.model, args.device, args.batch_size, tmp / "o1.tif")
        model_rate = model_only_rate(args.model, args.device, args.batch_size, min(n_eval, 96))
        naive, _ = naive_loop(s1, args.model, args.device, tmp / "naive.tif")
        rss1 = peak_rss_mb(s1, args.model, args.device, tmp / "r1.tif")
        rss4 = peak_rss_mb(s4, args.model, args.device, tmp / "r4.tif")
        full = {}
        if args.full_size:
            big = full_size_checkpoint(tmp / "ngf64.safetensors")
            sf = make_scene(tmp / "sf", args.full_size)
            f_e2e, f_n = pipeline_rate(sf, big, args.device, args.batch_size, tmp / "of.tif")
            f_model = model_only_rate(big, args.device, args.batch_size, f_n)
            f_naive, _ = naive_loop(sf, big, args.device, tmp / "naivef.tif")
            full = {
                "full_size_scene": f"{args.full_size}² (ngf 64, 54.5 M parameters)",
                "full_size_tiles_evaluated": f_n,
                "full_size_model_only_tiles_per_s": round(f_model, 3),
                "full_size_end_to_end_tiles_per_s": round(f_e2e, 3),
                "full_size_pipeline_efficiency": round(f_e2e / f_model, 3),
                "full_size_naive_loop_tiles_per_s": round(f_naive, 3),
                "full_size_speedup_vs_naive": round(f_e2e / f_naive, 2),
            }
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, device {args.device}",
        "model": Path(args.model).name,
        "scene_1x": f"{args.size}²",
        "tiles_evaluated_1x": n_eval,
        "model_only_tiles_per_s": round(model_rate, 2),
        "end_to_end_tiles_per_s": round(e2e, 2),
        "pipeline_efficiency": round(e2e / model_rate, 3),
        "naive_loop_tiles_per_s": round(naive, 2),
        "speedup_vs_naive": round(e2e / naive, 2),
        "peak_rss_1x_mb": round(rss1),
        "peak_rss_4x_mb": round(rss4),
        "rss_ratio_4x_1x": round(rss4 / rss1, 3),
        **full,
    }
    _ = resource  # (peak RSS is measured inside the subprocesses)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print("| figure | value | goal |\n|---|---|---|")
    goals = {
        "pipeline_efficiency": "≥ 0.90",
        "speedup_vs_naive": "≥ 2×",
        "rss_ratio_4x_1x": "≤ 1.2",
        "full_size_pipeline_efficiency": "≥ 0.90",
        "full_size_speedup_vs_naive": "≥ 2×",
    }
    for k, v in res.items():
        print(f"| {k} | {v} | {goals.get(k, '')} |")


if __name__ == "__main__":
    main()
