#!/usr/bin/env python
"""ONNX Runtime (CPU) against torch (CPU) on the same 256² tiles, same number of threads.

Models: the bundled ``sar2opt_geo/weights/default.safetensors`` when it exists, else a freshly initialised
``unet_sar2optical`` with ngf=16, at batch sizes 1 and 8; plus the full-size generator (ngf=64) at batch 1.
The ONNX graph is the one ``translate --backend onnx`` runs (exported by the models package with dynamic
batch, height and width). torch uses ``torch.set_num_threads(T)`` and ONNX Runtime
``intra_op_num_threads=T`` with ``T = os.cpu_count()`` unless ``--threads`` says otherwise. Torch and ORT
passes are interleaved (one each per iteration) so that load from other processes hits both alike; the
figure is the median time per pass.

    python scripts/bench_onnx.py [--iters 8] [--full-iters 3] [--threads N] [--no-full]

Prints a Markdown table (tiles/s and the ORT/torch ratio) with the machine's load average.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sar2opt_geo.defaults import BUNDLED_MODEL as DEFAULT_MODEL  # noqa: E402


def build_model(kind: str):
    """``(label, torch model, meta)`` for ``bundled``, ``fresh16`` or ``full64``."""
    import torch

    from sar2opt_geo.models import CheckpointMeta, count_parameters, create_model, load_generator

    if kind == "bundled":
        model, meta = load_generator(DEFAULT_MODEL, "cpu")
        label = f"bundled {meta.name} (ngf={meta.arch_args.get('ngf')})"
    else:
        ngf = 16 if kind == "fresh16" else 64
        torch.manual_seed(0)
        args = {"in_channels": 3, "out_channels": 3, "ngf": ngf}
        model = create_model("unet_sar2optical", **args).eval()
        meta = CheckpointMeta(name=f"fresh-ngf{ngf}", arch_args=args)
        label = f"fresh unet_sar2optical ngf={ngf}" + (" (full size)" if ngf == 64 else "")
    label += f", {count_parameters(model) / 1e6:.1f} M params"
    return label, model.eval(), meta


def bench(label, model, meta, batches, iters, threads, workdir: Path) -> list[dict]:
    import torch

    from sar2opt_geo.models.onnx_export import OnnxGenerator, export_onnx

    path = export_onnx(model, workdir / f"{meta.name}.onnx", meta=meta, dynamic_spatial=True)
    runner = OnnxGenerator(path, providers=["CPUExecutionProvider"], intra_op_num_threads=threads)
    in_ch = int(meta.arch_args.get("in_channels", 3))
    rows = []
    for batch in batches:
        x = np.random.default_rng(batch).uniform(-1, 1, (batch, in_ch, 256, 256)).astype(np.float32)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            want = model(xt).numpy()  # warm-up
        got = runner(x)  # warm-up
        t_torch, t_ort = [], []
        for _ in range(iters):
            t0 = time.perf_counter()
            with torch.inference_mode():
                model(xt)
            t1 = time.perf_counter()
            runner(x)
            t2 = time.perf_counter()
            t_torch.append(t1 - t0)
            t_ort.append(t2 - t1)
        torch_rate = batch / statistics.median(t_torch)
        ort_rate = batch / statistics.median(t_ort)
        rows.append(
            {
                "model": label,
                "batch": batch,
                "iters": iters,
                "torch": torch_rate,
                "ort": ort_rate,
                "ratio": ort_rate / torch_rate,
                "diff": float(np.abs(got - want).max()),
            }
        )
        print(
            f"  {label}, batch {batch}: torch {torch_rate:.2f} tiles/s, ORT {ort_rate:.2f} tiles/s",
            file=sys.stderr,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=8, help="Timed passes per batch size (small model).")
    ap.add_argument("--full-iters", type=int, default=3, help="Timed passes of the ngf=64 model.")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and ORT threads.")
    ap.add_argument("--no-full", action="store_true", help="Skip the full-size ngf=64 model.")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    threads = max(1, int(args.threads or 1))
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp:
        first = "bundled" if DEFAULT_MODEL.exists() else "fresh16"
        rows += bench(*build_model(first), [1, 8], args.iters, threads, Path(tmp))
        if not args.no_full:
            rows += bench(*build_model("full64"), [1], args.full_iters, threads, Path(tmp))
    load_after = os.getloadavg()

    print(
        f"ONNX Runtime {ort.__version__} (CPUExecutionProvider, intra_op_num_threads={threads}) vs torch "
        f"{torch.__version__} (set_num_threads({threads})); {platform.processor() or platform.machine()}, "
        f"os.cpu_count()={os.cpu_count()}; 256² tiles, float32; median of interleaved passes.\n"
    )
    print("| model | batch | passes | torch tiles/s | ORT tiles/s | ORT / torch | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['batch']} | {r['iters']} | {r['torch']:.2f} | {r['ort']:.2f} | "
            f"{r['ratio']:.2f}× | {r['diff']:.1e} |"
        )
    fmt = ", ".join(f"{v:.2f}" for v in load_before)
    fmt2 = ", ".join(f"{v:.2f}" for v in load_after)
    print(f"\nLoad average (1, 5, 15 min): before {fmt}; after {fmt2}.")


if __name__ == "__main__":
    main()
