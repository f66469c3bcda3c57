#!/usr/bin/env python
"""GPU figures of issue #15 in one short run, for a lent GPU machine (the device tool's budget is 15 minutes
of device time in all: this takes ~5 on one GPU with the defaults).

Rows (torch on ``--device``; scenes are the seeded synthetic scenes of ``bench_speed.py``; models: the seed
SAR2Optical U-Net at ngf 64 — 54.5 M parameters, random weights, the bundled model's bands and radiometry —
and the bundled model):

1. model only: tiles/s of the engine as the pipeline runs it (``translate.predict_async`` with the batch
   size from free device memory, inputs copied to the device, outputs left there as for device-side
   blending), best of 3 passes over ``--tiles`` tiles, for each ``--precisions`` entry (fp32, and torch
   autocast fp16 / bf16);
2. end to end: the CLI in fresh processes (default options but ``--device``, ``--backend torch`` and the
   precision), marginal between the small and the large scene: tiles/s, ÷ model only (issue #15's goal:
   ≥ 0.85 for the ngf-64 model), and the CPU seconds a tile of the whole process tree — times the model-only
   rate, the CPU cores the pipeline needs to keep the GPU busy;
3. the pipeline alone on the machine's cores (an identity ONNX model on CPU, marginal): the most tiles/s the
   CPU side can feed a GPU there — from the GeoTIFF scenes, and from Sentinel-1 GRD products (a synthetic
   IW GRDH SAFE of ``--product-small``/``--product-large`` lines and samples: calibration, noise removal
   and the warp onto UTM on the CPU too);
4. the machine: GPU name and memory, CPU cores, torch and CUDA versions.

    python scripts/bench_gpu.py [--device cuda] [--small 2048] [--large 6144] [--tiles 512] \\
        [--precisions fp32,fp16,bf16] [--e2e-precisions fp32,bf16] [--product-small 1024] \\
        [--product-large 3072] [--json OUT.json]
    python scripts/bench_gpu.py --device cpu --quick      # the same code path, tiny, on CPU (tests)

Prints Markdown tables, the load average before and after, and the command; ``--json`` also writes every
figure to a file (under ``$OUT`` on the device machine, so it comes back).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_speed as bs  # noqa: E402  (the scene, checkpoint and CLI-run helpers)


def machine(device: str) -> dict:
    import torch

    info = {"cpu_cores": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_mem_gib=round(props.total_memory / 2**30, 1))
    return info


def model_only(path: str, device: str, precision: str, n_tiles: int, passes: int = 3) -> dict:
    """Tiles/s of the engine on ``device`` (batch from free memory on CUDA), best of ``passes``."""
    import torch

    from sar2opt_geo.models.checkpoint import read_metadata
    from sar2opt_geo.translate import make_model_ref, predict_async, probe_batch

    c = int(read_metadata(path).arch_args.get("in_channels", 3))
    x = np.concatenate([probe_batch(c, 256, n=min(16, n_tiles), seed=s) for s in range(-(-n_tiles // 16))])
    x = x[:n_tiles]
    ref = make_model_ref(path, device, "torch", precision=precision)
    batch = 0 if device.startswith("cuda") else 8

    def run() -> None:
        predict_async(ref, x, batch, on_device=True).result()
        if device.startswith("cuda"):
            torch.cuda.synchronize(torch.device(device))

    predict_async(ref, x[:2], batch, on_device=True).result()  # load, autotune, batch size (untimed)
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return {"tiles_per_s": n_tiles / best, "tiles": n_tiles}


def end_to_end(
    scenes: dict, path: str, device: str, precision: str, tmp: Path, env: dict, backend: str = "torch"
) -> dict:
    """Marginal tiles/s and CPU seconds a tile between the two scenes (fastest of 2 runs of each)."""
    runs = {}
    for size, scene in scenes.items():
        extra = ("--backend", backend, "--precision", precision)
        runs[size] = [
            bs.translate(scene, tmp / f"o{size}.tif", path, *extra, env=env, device=device) for _ in range(2)
        ]
    small, large = min(runs), max(runs)
    wall = min(r[0] for r in runs[large]) - min(r[0] for r in runs[small])
    cpu = min(r[2] for r in runs[large]) - min(r[2] for r in runs[small])
    tiles = runs[large][0][1] - runs[small][0][1]
    return {"tiles_per_s": tiles / wall, "cpu_s_per_tile": cpu / tiles, "tiles": tiles, "wall_s": wall}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", type=int, default=2048, help="small scene side (px)")
    ap.add_argument("--large", type=int, default=6144, help="large scene side (px)")
    ap.add_argument("--tiles", type=int, default=512, help="tiles per model-only pass")
    ap.add_argument("--seed-ngf", type=int, default=64, help="width of the seed U-Net (64: SAR2Optical's)")
    ap.add_argument("--precisions", default="fp32,fp16,bf16", help="model-only rows")
    ap.add_argument("--e2e-precisions", default="fp32,bf16", help="end-to-end rows")
    ap.add_argument("--product-small", type=int, default=1024, help="small product side (radar px)")
    ap.add_argument("--product-large", type=int, default=3072, help="large product side (radar px)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, fp32, seed ngf 8 (tests, CPU)")
    args = ap.parse_args(argv)
    if args.quick:
        args.small, args.large, args.tiles, args.seed_ngf = 256, 512, 4, 8
        args.product_small, args.product_large = 192, 448
        args.precisions = args.e2e_precisions = "fp32"
    precisions = [p for p in args.precisions.split(",") if p]
    e2e_precisions = [p for p in args.e2e_precisions.split(",") if p]
    print(f"load average before: {bs.loadavg()}", flush=True)
    out: dict = {"machine": machine(args.device), "model_only": {}, "end_to_end": {}}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "SAR2OPT_GEO_CACHE_DIR": str(tmp / "cache")}
        models = {
            f"seed U-Net ngf {args.seed_ngf}": bs.seeded_checkpoint(
                tmp / "seed.safetensors", args.seed_ngf, f"seed-ngf{args.seed_ngf}"
            ),
            "bundled": str(bs.BUNDLED_MODEL),
        }
        for name, path in models.items():
            for p in precisions:
                out["model_only"][f"{name}, {p}"] = model_only(path, args.device, p, args.tiles)
                print(f"  model only, {name}, {p}: {out['model_only'][f'{name}, {p}']}", flush=True)
        scenes = {s: bs.make_scene(tmp / f"s{s}", s) for s in (args.small, args.large)}
        for name, path in models.items():
            bs.translate(scenes[args.small], tmp / "w.tif", path, env=env, device=args.device)  # warm-up
            for p in e2e_precisions:
                e = end_to_end(scenes, path, args.device, p, tmp, env)
                mo = out["model_only"].get(f"{name}, {p}")
                if mo:
                    e["efficiency"] = e["tiles_per_s"] / mo["tiles_per_s"]
                    e["cores_to_feed"] = mo["tiles_per_s"] * e["cpu_s_per_tile"]
                out["end_to_end"][f"{name}, {p}"] = e
                print(f"  end to end, {name}, {p}: {e}", flush=True)
        # the pipeline alone on this machine's cores: an identity model (ONNX Runtime on CPU, no model cost)
        ident = bs.identity_onnx(tmp / "identity.onnx")
        bs.translate(scenes[args.small], tmp / "w.tif", ident, env=env)  # export cache, probe (untimed)
        out["pipeline_alone"] = end_to_end(scenes, ident, "cpu", "fp32", tmp, env, backend="onnx")
        print(f"  pipeline alone (identity model, CPU): {out['pipeline_alone']}", flush=True)
        try:  # the last row: whatever goes wrong here, the rows above still reach the table and the JSON
            sides = (args.product_small, args.product_large)
            products = {s: bs.make_input("product", tmp / f"p{s}", s) for s in sides}
            bs.translate(products[sides[0]], tmp / "w.tif", ident, env=env)  # first product run (untimed)
            pp = end_to_end(products, ident, "cpu", "fp32", tmp, env, backend="onnx")
        except Exception as exc:  # reported, not raised: device time is scarce
            pp = {"error": f"{type(exc).__name__}: {exc}"}
        out["pipeline_alone_product"] = pp
        print(f"  pipeline alone, Sentinel-1 product: {pp}", flush=True)
    m = out["machine"]
    print()
    gpu = f"{m.get('gpu', args.device)} ({m.get('gpu_mem_gib', '-')} GiB)"
    print(f"machine: {gpu}, {m['cpu_cores']} CPU cores, torch {m['torch']}, CUDA {m['cuda']}")
    print()
    print(
        "| model, precision | model only, tiles/s | end to end, tiles/s (marginal) | ÷ model only | "
        "CPU s a tile (all processes) | CPU cores to keep the GPU busy |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for key, mo in out["model_only"].items():
        e = out["end_to_end"].get(key, {})
        cells = [
            f"{mo['tiles_per_s']:.1f}",
            f"{e['tiles_per_s']:.1f}" if e else "—",
            f"**{e['efficiency']:.2f}**" if e else "—",
            f"{1e3 * e['cpu_s_per_tile']:.1f} ms" if e else "—",
            f"{e['cores_to_feed']:.1f}" if e else "—",
        ]
        print(f"| {key} | " + " | ".join(cells) + " |")
    pa = out["pipeline_alone"]
    print()
    print(
        f"pipeline alone (identity model on this machine's {m['cpu_cores']} cores, marginal): "
        f"{pa['tiles_per_s']:.1f} tiles/s, {1e3 * pa['cpu_s_per_tile']:.1f} ms of CPU a tile — the most "
        "tiles/s the CPU side can feed a GPU here"
    )
    pp = out["pipeline_alone_product"]
    figures = (
        pp["error"]
        if "error" in pp
        else f"{pp['tiles_per_s']:.1f} tiles/s, {1e3 * pp['cpu_s_per_tile']:.1f} ms of CPU a tile"
    )
    print(
        f"the same from Sentinel-1 GRD products (radar {args.product_small}² → {args.product_large}², "
        f"calibrated and warped on the CPU): {figures}"
    )
    print()
    print(f"load average after: {bs.loadavg()}")
    print("command: python scripts/bench_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
