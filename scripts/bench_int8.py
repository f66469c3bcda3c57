"""The int8 graph's variants, side by side (issue #15): model-only speed and output quality.

Graphs of one generator (the bundled model, or a random SAR2Optical U-Net at ``--ngf``): fp32 (the default
export), fp32 of the sub-pixel export, int8 of the plain export with only its Conv nodes quantised (the int8
graph before 2026-12-01), int8 of the sub-pixel export with MinMax activation ranges, and the shipped int8
graph (:func:`sar2opt_geo.models.onnx_export.quantize_int8`: sub-pixel export, percentile ranges).
Calibration on 8 synthetic Sentinel-1 tiles (seed 4242); quality on ``--tiles`` others (``--seed``: 777 was
used to choose the percentile, 31337 to check it): PSNR and max DN of the uint8 output vs fp32, and PSNR
against the optical truth. Speed: ONNX Runtime, 2 intra-op threads, batch 2, ``--rounds`` rounds of 3 s.

    python scripts/bench_int8.py [--ngf 32] [--seed 777] [--tiles 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sar2opt_geo import synth  # noqa: E402
from sar2opt_geo.defaults import BUNDLED_MODEL  # noqa: E402
from sar2opt_geo.models.checkpoint import load_generator  # noqa: E402
from sar2opt_geo.models.onnx_export import INT8_OP_TYPES, export_onnx, quantize_int8  # noqa: E402
from sar2opt_geo.radiometry import output_to_uint8  # noqa: E402
from sar2opt_geo.training.datasets import to_model_range  # noqa: E402


def tiles(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (n, 3, 256, 256) of synthetic pair tiles and their optical truth (n, 3, 256, 256)."""
    xs, ys = [], []
    for spec, r0, c0 in synth.pair_windows(n, seed=seed):
        sar, opt, _ = synth.render_window(spec, r0, c0, 256, 256)
        x = to_model_range(synth.sar_to_uint8(sar[0], "s1"))[None]
        xs.append(np.repeat(x, 3, 0))
        ys.append(opt)
    return np.stack(xs).astype(np.float32), np.stack(ys)


def quantize_minmax(src: Path, dst: Path, cal: np.ndarray, ops) -> Path:
    """quantize_int8 with MinMax activation ranges and the given node types (the variants it replaced)."""
    return quantize_int8(src, cal, dst, op_types=ops, ranges="minmax")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ngf", type=int, default=0, help="random U-Net at this width (0: the bundled model)")
    ap.add_argument("--seed", type=int, default=777, help="seed of the quality tiles")
    ap.add_argument("--tiles", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import onnxruntime as ort
    import torch

    logging.getLogger().setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    if args.ngf:
        from sar2opt_geo.models.registry import create_model

        torch.manual_seed(0)
        model = create_model("unet_sar2optical", ngf=args.ngf)
    else:
        model, _ = load_generator(BUNDLED_MODEL, "cpu")
    model.eval()
    cal, _ = tiles(8, 4242)
    xs, ys = tiles(args.tiles, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        plain, sp = export_onnx(model, w / "fp32.onnx"), export_onnx(model, w / "sp.onnx", subpixel=True)
        graphs = {
            "fp32": plain,
            "fp32, sub-pixel export": sp,
            "int8, plain export, Conv only, MinMax (before)": quantize_minmax(
                plain, w / "old.onnx", cal, ["Conv"]
            ),
            "int8, sub-pixel export, MinMax": quantize_minmax(sp, w / "mm.onnx", cal, INT8_OP_TYPES),
            "int8 as shipped (sub-pixel, percentile)": quantize_int8(sp, cal, w / "int8.onnx"),
        }
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        sessions = {
            k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
            for k, p in graphs.items()
        }

        def run(s):
            out = np.concatenate([s.run(None, {"sar": xs[i : i + 2]})[0] for i in range(0, len(xs), 2)])
            return np.stack([output_to_uint8(o) for o in out])

        def psnr(a, b):
            return 10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2))

        ref = run(sessions["fp32"])
        speed = {k: [] for k in sessions}
        for _ in range(args.rounds):
            for k, s in sessions.items():
                t, n = time.perf_counter(), 0
                while time.perf_counter() - t < 3:
                    s.run(None, {"sar": xs[n % (len(xs) - 1) : n % (len(xs) - 1) + 2]})
                    n += 2
                speed[k].append(n / (time.perf_counter() - t))
        what = f"random U-Net ngf {args.ngf}" if args.ngf else "bundled model"
        print(f"\n{what}; quality on {args.tiles} tiles of seed {args.seed}, calibration on 8 of seed 4242\n")
        print("| graph | tiles/s (rounds) | vs fp32: PSNR dB, max DN | vs optical truth, dB |")
        print("|---|---|---|---|")
        for k, s in sessions.items():
            u = run(s)
            d = np.abs(u.astype(int) - ref).max()
            vs = "—" if k == "fp32" else f"{psnr(u, ref):.2f}, {d}"
            rates = ", ".join(f"{v:.0f}" for v in speed[k])
            print(f"| {k} | {rates} | {vs} | {psnr(u, ys):.3f} |")
    print(f"\ncommand: python scripts/bench_int8.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
