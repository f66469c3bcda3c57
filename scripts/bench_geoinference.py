#!/usr/bin/env python
"""``sar2opt-geo translate`` against NRCan geo-inference 3.2.4 on the same work (issue #15, first goal).

The same work for both: a seeded synthetic 4096² scene (``sar2opt_geo.synth.write_scene``: float32 linear σ⁰,
nodata 0 outside a rotated footprint), the SAR2Optical U-Net (``unet_sar2optical``) at ngf 32 with one input
band, randomly initialised (seed 0), 256² tiles at 50 % overlap (stride 128), no speckle filter, on the CPU.

- sar2opt-geo: the real CLI in a fresh process, ``translate SCENE OUT --model CKPT --overlap 128`` with
  default options, with ``--precision int8`` and with ``--backend torch``; output: an RGB deflate COG with
  overviews.
- geo-inference 3.2.4 (``GeoInference(model, device="cpu", num_classes=3)(scene, patch_size=256,
  workers=N)``) in its own virtual environment (torch 2.13.0, torchvision 0.28.0 from PyPI), in a fresh
  process. It reads raw pixels into Dask chunks of 128², runs a TorchScript model on each 256² window (chunk +
  right/bottom neighbours, batch 1, Dask threads), blends with a periodic Hann window, argmaxes the classes
  and writes a uint8 LZW GeoTIFF. The TorchScript given to it is the same U-Net (same weights) wrapped with
  the checkpoint's radiometry (linear σ⁰ → dB, clip [−25, 0], 8-bit levels, [−1, 1]; nodata → −1, i.e.
  ``--nodata-fill constant``); its partial right/bottom edge chunks, whose predictions geo-inference discards,
  are answered with zeros without running the network (the U-Net needs 256² inputs), so it evaluates the
  same tiles as sar2opt-geo (both skip tiles without a valid pixel; both counts are printed).

Same threads: both processes see the same cores and leave torch's intra-op threads at their default; Dask
runs as many threads for geo-inference as sar2opt-geo runs (``--gi-configs N``). geo-inference is also run
with torch limited to one intra-op thread (``N:1``, tiles in parallel through Dask only), which is faster on
shared cores where a two-thread OpenMP team spin-waits for a descheduled partner; the ratios use the fastest
geo-inference configuration. (Its own default, cores − 1 = one Dask thread on 2 cores, is ``--gi-configs 1``.)

Order: an untimed geo-inference "check" run (its own code, with only its final argmax replaced by one
channel's 8-bit value, and its model evaluations counted) that also warms its imports; sar2opt-geo's first
run with an empty model cache (ONNX export + parity probe) and its first int8 run (calibration), both
reported and not counted; then ``--repeat`` interleaved rounds of every timed run. Wall times of each run,
CPU seconds (user + system of the process tree), and the 1-minute load average at each start are printed.
The outputs are compared: the check channel against the same channel of sar2opt-geo's default output (PSNR,
on all valid pixels and on pixels ≥ 255 px from nodata, where neither tool's nodata fill reaches), and the
argmax of sar2opt-geo's RGB against geo-inference's class map where the top channel leads by ≥ 2 DN.

    python scripts/bench_geoinference.py --venv /work/venvs/geoinf [--size 4096] [--repeat 2] \\
        [--gi-configs 2,2:1] [--skip-bundled]

The virtual environment (outside the repository; ignores this machine's pip find-links/constraints so that
torch comes from PyPI like torchvision):

    python3 -m venv /work/venvs/geoinf
    PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= /work/venvs/geoinf/bin/pip install \\
        torch==2.13.0 torchvision==0.28.0 geo-inference==3.2.4

Prints Markdown tables and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speed import loadavg, model_only_subprocess, psnr_maxdn, translate  # noqa: E402

from sar2opt_geo.defaults import BUNDLED_MODEL, ENGINE_BATCH_SIZE, SEED, TILE_SIZE  # noqa: E402

NGF = 32


# ------------------------------------------------------------------------------------ the same model


def make_checkpoint(path: Path, ngf: int = NGF, seed: int = SEED) -> Path:
    """The bundled model's architecture and radiometry at ``ngf`` with one input band (not replicated),
    randomly initialised with ``seed``."""
    from sar2opt_geo.models.checkpoint import CheckpointMeta, read_metadata, save_checkpoint
    from sar2opt_geo.models.registry import create_model

    meta = read_metadata(BUNDLED_MODEL)
    args = {**meta.arch_args, "in_channels": 1, "ngf": ngf}
    rad = {**meta.radiometry, "replicate_to": None}
    torch.manual_seed(seed)
    model = create_model(meta.architecture, **args).eval()
    d = {**meta.to_dict(), "arch_args": args, "radiometry": rad, "name": f"random-ngf{ngf}-1band"}
    d["provenance"] = {"note": f"random weights (torch seed {seed}) for scripts/bench_geoinference.py"}
    save_checkpoint(path, model, CheckpointMeta.from_dict(d))
    return path


class PeerModel(nn.Module):
    """What geo-inference runs: raw pixels ``(N, bands, H, W)`` in, the U-Net's output ``(N, 3, H, W)`` out.

    The checkpoint's radiometry as :func:`sar2opt_geo.radiometry.normalize` applies it (same float32
    operations): linear → dB (floor 1e-10), clip to [lo, hi], 8-bit levels when ``quantize``, to
    [a, b]; pixels equal to ``nodata`` (or not finite) in any band → a. Inputs other than ``tile``² (the
    partial edge chunks geo-inference discards) get zeros without running the network."""

    def __init__(
        self,
        net: nn.Module,
        tile: int,
        lo: float,
        hi: float,
        a: float,
        b: float,
        quantize: bool,
        nodata: float,
        out_channels: int = 3,
    ):
        super().__init__()
        self.net = net
        self.tile, self.lo, self.hi, self.a, self.b = tile, lo, hi, a, b
        self.quantize, self.nodata, self.out_channels = quantize, nodata, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        if h != self.tile or w != self.tile:
            return torch.zeros(n, self.out_channels, h, w, dtype=torch.float32)
        x = x.to(torch.float32)
        valid = (torch.isfinite(x) & (x != self.nodata)).all(dim=1, keepdim=True)
        v = torch.log10(torch.clamp(torch.clamp(x, min=0.0), min=1e-10)) * 10.0
        u = torch.clamp((v - self.lo) / (self.hi - self.lo), 0.0, 1.0)
        if self.quantize:
            u = torch.floor(u * 255.0) / 255.0
        u = u * (self.b - self.a) + self.a
        u = torch.where(valid, u, torch.full_like(u, self.a))
        return self.net(u)


def peer_torchscript(ckpt: Path, out: Path, nodata: float = 0.0) -> Path:
    """TorchScript of :class:`PeerModel` around the checkpoint's U-Net (traced at ``TILE_SIZE``²)."""
    from sar2opt_geo.models.checkpoint import load_generator
    from sar2opt_geo.radiometry import Radiometry

    net, meta = load_generator(ckpt)
    rad = Radiometry.from_dict(meta.radiometry)
    if rad.scale != "db" or rad.clip is None or rad.replicate_to:
        raise SystemExit(
            f"bench: PeerModel implements fixed-clip dB radiometry without replication, not {rad}"
        )
    c = int(meta.arch_args.get("in_channels", 3))
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.zeros(1, c, TILE_SIZE, TILE_SIZE))
    (lo, hi), (a, b) = rad.clip, rad.out_range
    peer = PeerModel(
        traced, TILE_SIZE, lo, hi, a, b, rad.quantize, nodata, int(meta.arch_args["out_channels"])
    )
    torch.jit.script(peer.eval()).save(str(out))
    return out


# ------------------------------------------------------------------------------------ geo-inference side

#: Run by the virtual environment's python: ``MODE SCENE MODEL WORKDIR WORKERS PATCH [CHANNEL]``; prints one
#: JSON line with the output path (and, in "check" mode, the model evaluations whose predictions were kept).
GI_DRIVER = r'''
import json, sys, threading
import numpy as np
import geo_inference.geo_dask as gd
import geo_inference.geo_inference as gim
from geo_inference.geo_inference import GeoInference

mode, scene, model, workdir, workers, patch = sys.argv[1:7]
workers, patch = int(workers), int(patch)
evaluations = [0]
if mode == "check":
    channel = int(sys.argv[7])
    lock = threading.Lock()
    run_model = gim.runModel

    def counting(chunk_data, model, patch_size, device, no_data, num_classes=5, block_info=None):
        out = run_model(chunk_data, model, patch_size, device, no_data, num_classes, block_info=block_info)
        if out is not None and np.any(out[-1]):
            with lock:
                evaluations[0] += 1
        return out

    class ChannelNumpy:
        """numpy, except that argmax over the blended classes returns one channel's 8-bit value."""
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def argmax(a, axis=None):
            unit = (np.asarray(a[channel], dtype=np.float32) + np.float32(1.0)) / np.float32(2.0)
            return np.clip(np.rint(unit * np.float32(255.0)), 0, 255).astype(np.uint8)

    gim.runModel = counting
    gd.np = ChannelNumpy()
gi = GeoInference(model=model, work_dir=workdir, device="cpu", num_classes=3)
name = gi(inference_input=scene, patch_size=patch, workers=workers)
print(json.dumps({"output": str(gi.work_dir / name), "evaluations": evaluations[0]}))
'''


def ours(scene: str, out: Path, ckpt: Path, *extra: str, env: dict) -> tuple[float, float, int]:
    """Wall and CPU seconds of one ``sar2opt-geo translate`` run (50 % overlap) and its model evaluations."""
    dt, n_eval, cpu = translate(scene, out, str(ckpt), "--overlap", str(TILE_SIZE // 2), *extra, env=env)
    return dt, cpu, n_eval


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def venv_env(torch_threads: int | None = None) -> dict:
    """The environment for the virtual environment's python: this one without PYTHONPATH/PYTHONHOME; with
    ``torch_threads``, OpenMP/MKL (torch's intra-op threads) limited to that many."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    if torch_threads:
        env |= {k: str(torch_threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return env


def peer_configs(spec: str) -> list[tuple[int, int | None]]:
    """``"2,2:1"`` → ``[(2, None), (2, 1)]``: geo-inference's Dask threads, and torch's intra-op threads
    (None: torch's default)."""
    out = []
    for item in spec.split(","):
        dask_threads, _, torch_threads = item.strip().partition(":")
        out.append((int(dask_threads), int(torch_threads) if torch_threads else None))
    return out


def peer_name(cfg: tuple[int, int | None]) -> str:
    d, t = cfg
    return f"{d} Dask thread(s), " + (f"{t} torch thread(s)" if t else "torch's default threads")


def geo_inference(
    python: str,
    driver: Path,
    scene: str,
    model: Path,
    workdir: Path,
    workers: int,
    channel: int | None = None,
    torch_threads: int | None = None,
) -> tuple[float, float, dict]:
    """Wall and CPU seconds of one geo-inference run in a fresh process, and the driver's JSON line."""
    mode = ["run"] if channel is None else ["check"]
    cmd = [python, str(driver), *mode, scene, str(model), str(workdir), str(workers), str(TILE_SIZE)]
    cmd += [] if channel is None else [str(channel)]
    c0, t0 = _children_cpu(), time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=venv_env(torch_threads))
    dt, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if r.returncode != 0:
        raise SystemExit(f"geo-inference failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return dt, cpu, json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ comparisons


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (8-bit peak) of ``a`` against ``b`` on ``mask`` (NaN for an empty mask)."""
    if not mask.any():
        return float("nan")
    d = a[mask].astype(np.float64) - b[mask].astype(np.float64)
    mse = float((d**2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of ``a`` and ``b`` on ``mask``: near 1 for the same network, whatever the
    (small) spread of a randomly initialised network's output; near 0 for unrelated ones."""
    return float(np.corrcoef(a[mask].astype(np.float64), b[mask].astype(np.float64))[0, 1])


def far_from_nodata(valid: np.ndarray, tile: int) -> np.ndarray:
    """Valid pixels with no nodata pixel within ``tile - 1`` px (Chebyshev): every tile that covers them is
    fully valid, so no nodata fill reaches them."""
    from scipy.ndimage import minimum_filter

    return minimum_filter(valid.astype(np.uint8), size=2 * tile - 1, mode="nearest").astype(bool)


def argmax_agreement(
    rgb: np.ndarray, classes: np.ndarray, mask: np.ndarray, margin: int = 2
) -> tuple[float, float]:
    """Share of ``mask`` pixels whose RGB top channel leads the others by ≥ ``margin`` DN, and among those the
    share where it equals ``classes`` (geo-inference's argmax)."""
    s = np.sort(rgb.astype(np.int16), axis=0)
    clear = mask & (s[-1] - s[-2] >= margin)
    agree = np.argmax(rgb, axis=0) == classes
    n = int(clear.sum())
    return n / max(1, int(mask.sum())), (float(agree[clear].mean()) if n else float("nan"))


def read_band(path: Path, band: int) -> np.ndarray:
    from sar2opt_geo import io

    return io.read_raster(path)[0][band]


def ratio_line(name: str, ours: list[float], peer: list[float]) -> str:
    best = min(ours) / min(peer)
    rounds = ", ".join(f"{o / p:.2f}" for o, p in zip(ours, peer, strict=True))
    return f"**{best:.2f}** (fastest ÷ fastest; per round: {rounds})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", default="/work/venvs/geoinf", help="geo-inference 3.2.4 virtual environment")
    ap.add_argument("--size", type=int, default=4096, help="scene side (px)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds of the timed runs")
    ap.add_argument(
        "--gi-configs",
        default="",
        help="geo-inference configurations, comma-separated DASK_THREADS[:TORCH_THREADS] (default: N,N:1, "
        "N = sar2opt-geo's own Dask thread count; torch's default intra-op threads unless given)",
    )
    ap.add_argument("--check-channel", type=int, default=1, help="output channel compared (0-2)")
    ap.add_argument(
        "--skip-bundled",
        action="store_true",
        help="skip the int8 quality check with the bundled (trained) model on the same scene",
    )
    args = ap.parse_args()
    python = str(Path(args.venv) / "bin" / "python")
    if not Path(python).is_file():
        raise SystemExit(f"Error: no python in {args.venv} (see this script's docstring to make the venv)")
    ours_threads = max(2, os.cpu_count() or 1)  # sar2opt_geo.distributed.ThreadedExecutor's default
    gi_cfgs = peer_configs(args.gi_configs or f"{ours_threads},{ours_threads}:1")
    head = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    print(f"sar2opt-geo at {head}; load average before: {loadavg()} ({os.cpu_count()} cores)", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_gi_") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "SAR2OPT_GEO_CACHE_DIR": str(tmp / "cache")}
        from sar2opt_geo.synth import SceneSpec, write_scene

        t0 = time.perf_counter()
        scene = str(write_scene(tmp / "scene", SceneSpec(width=args.size, height=args.size, seed=11))[0])
        ckpt = make_checkpoint(tmp / "model.safetensors")
        ts = peer_torchscript(ckpt, tmp / "peer.pt")
        driver = tmp / "gi_driver.py"
        driver.write_text(GI_DRIVER)
        print(
            f"scene {args.size}², checkpoint and TorchScript made in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        log = []

        def timed(label, fn):
            la = loadavg().split()[0]
            res = fn()
            log.append((label, res[0], res[1], la))
            print(f"  {label}: {res[0]:.1f} s wall, {res[1]:.1f} CPU-s, load {la}", flush=True)
            return res

        # untimed: geo-inference check (one channel, counted evaluations), then our cold-cache runs
        _, _, chk = timed(
            "geo-inference check run (untimed)",
            lambda: geo_inference(
                python, driver, scene, ts, tmp / "gi_check", gi_cfgs[0][0], args.check_channel, gi_cfgs[0][1]
            ),
        )
        cold = timed(
            "sar2opt-geo default, empty model cache (untimed)",
            lambda: ours(scene, tmp / "default.tif", ckpt, env=env),
        )
        cold_i8 = timed(
            "sar2opt-geo --precision int8, first (calibrates; untimed)",
            lambda: ours(scene, tmp / "int8.tif", ckpt, "--precision", "int8", env=env),
        )
        n_ours = cold[2]

        def gi_run(cfg):
            return geo_inference(
                python, driver, scene, ts, tmp / f"gi{cfg[0]}_{cfg[1]}", cfg[0], None, cfg[1]
            )

        runs = {("gi", c): [] for c in gi_cfgs} | {"default": [], "int8": [], "torch": []}
        gi_out = None
        jobs = [(("gi", c), f"geo-inference, {peer_name(c)}", partial(gi_run, c)) for c in gi_cfgs] + [
            (key, f"sar2opt-geo {key}", partial(ours, scene, tmp / f"{key}.tif", ckpt, *extra, env=env))
            for key, extra in (
                ("default", ()),
                ("int8", ("--precision", "int8")),
                ("torch", ("--backend", "torch")),
            )
        ]
        for r in range(args.repeat):  # interleaved; every other round in reverse order (drift cancels)
            print(f"round {r + 1}", flush=True)
            for key, label, fn in jobs[::-1] if r % 2 else jobs:
                res = timed(label, fn)
                runs[key].append(res[:2])
                if key[0] == "gi":
                    gi_out = Path(res[2]["output"])
        # the model alone on each side (same threads, fresh processes): how much of each run is the network
        n_mo = 64
        mo_ours = model_only_subprocess(str(ckpt), n_mo, ENGINE_BATCH_SIZE["onnx"], env)
        load_after = loadavg()

        # comparisons
        from sar2opt_geo import io

        rgb, masks = io.read_raster(tmp / "default.tif", masked=True)
        valid = masks["mask"] > 0
        far = far_from_nodata(valid, TILE_SIZE)
        chan = read_band(Path(chk["output"]), 0)
        p_all = psnr(rgb[args.check_channel], chan, valid)
        p_far = psnr(rgb[args.check_channel], chan, far)
        share, agree = argmax_agreement(rgb, read_band(gi_out, 0), valid)
        p8, m8 = psnr_maxdn(tmp / "default.tif", tmp / "int8.tif")
        p8t, m8t = psnr_maxdn(tmp / "torch.tif", tmp / "int8.tif")
        pt, mt = psnr_maxdn(tmp / "torch.tif", tmp / "default.tif")
        c = args.check_channel
        r_all = correlation(rgb[c], chan, valid)
        spread = [float(rgb[k][valid].std()) for k in range(3)]
        bundled = None
        if (
            not args.skip_bundled
        ):  # int8's quality cost on a trained model (a random one's output is near flat)
            b_out = {}
            for key, extra in (("fp32", ()), ("int8", ("--precision", "int8"))):
                b_out[key] = tmp / f"bundled_{key}.tif"
                translate(
                    scene, b_out[key], str(BUNDLED_MODEL), "--overlap", str(TILE_SIZE // 2), *extra, env=env
                )
            bundled = psnr_maxdn(b_out["fp32"], b_out["int8"])

    peer_key = min((k for k in runs if k[0] == "gi"), key=lambda k: min(t for t, _ in runs[k]))
    peer = [t for t, _ in runs[peer_key]]
    peer_cpu = [c for _, c in runs[peer_key]]
    print()
    print(
        f"| run ({args.size}², ngf-{NGF} 1-band U-Net, 256² tiles, overlap 128) | wall s (rounds) | "
        "CPU s (rounds) | vs geo-inference (wall) | vs geo-inference (CPU s) |"
    )
    print("|---|---|---|---|---|")
    names = {
        "default": "sar2opt-geo, default options",
        "int8": "sar2opt-geo `--precision int8`",
        "torch": "sar2opt-geo `--backend torch`",
    }
    for k, v in runs.items():
        w, c = [t for t, _ in v], [x for _, x in v]
        name = names[k] if k in names else f"geo-inference 3.2.4, {peer_name(k[1])}"
        rw = "1.00 (reference)" if k == peer_key else ratio_line(k, w, peer)
        rc = "1.00" if k == peer_key else f"{min(c) / min(peer_cpu):.2f}"
        walls, cpus = " / ".join(f"{t:.1f}" for t in w), " / ".join(f"{t:.1f}" for t in c)
        print(f"| {name} | {walls} | {cpus} | {rw} | {rc} |")
    print()
    print("| check | measured |")
    print("|---|---|")
    print(
        f"| model evaluations | sar2opt-geo {n_ours}, geo-inference {chk['evaluations']} (kept predictions) |"
    )
    print(f"| sar2opt-geo first run, empty model cache (ONNX export + parity probe) | {cold[0]:.1f} s |")
    print(f"| sar2opt-geo first `--precision int8` run (calibration) | {cold_i8[0]:.1f} s |")
    print(
        f"| channel {args.check_channel}: geo-inference vs sar2opt-geo default | "
        f"PSNR {p_all:.1f} dB on valid pixels (correlation {r_all:.3f}), "
        f"{p_far:.1f} dB ≥ 255 px from nodata ({far.mean() * 100:.0f} % of the scene) |"
    )
    print(
        "| argmax of sar2opt-geo RGB vs geo-inference classes (top channel ≥ 2 DN ahead: "
        f"{share * 100:.0f} % "
        f"of valid pixels) | {agree * 100:.2f} % agree |"
    )
    tps, cpt = mo_ours
    print(
        f"| sar2opt-geo's default engine alone (ONNX Runtime fp32, batch {ENGINE_BATCH_SIZE['onnx']}, "
        f"{n_mo} tiles, fresh process) | {tps:.1f} tiles/s, {cpt:.3f} CPU-s per tile: × {n_ours} tiles = "
        f"{n_ours * cpt:.1f} CPU-s, {n_ours * cpt / min(c for _, c in runs['default']):.2f} of the default "
        "run's CPU-s |"
    )
    print(
        "| spread of sar2opt-geo's default output (std of R, G, B on valid pixels) | "
        + ", ".join(f"{v:.2f}" for v in spread)
        + " DN |"
    )
    print(f"| `--precision int8` vs default (ONNX fp32) | PSNR {p8:.1f} dB, max {m8} DN |")
    print(f"| `--precision int8` vs `--backend torch` (fp32) | PSNR {p8t:.1f} dB, max {m8t} DN |")
    print(f"| default (ONNX fp32) vs `--backend torch` | PSNR {pt:.1f} dB, max {mt} DN |")
    if bundled is not None:
        print(
            "| bundled (trained) model, same scene and overlap: `--precision int8` vs default | "
            f"PSNR {bundled[0]:.1f} dB, max {bundled[1]} DN |"
        )
    print()
    print(
        "load average (1 min) at each start: "
        + ", ".join(f"{lbl.split(' (')[0]} {la}" for lbl, _, _, la in log)
    )
    print(f"load average after: {load_after}")
    print(
        f"command: python scripts/bench_geoinference.py --venv {args.venv} --size {args.size} "
        f"--repeat {args.repeat}" + (f" --gi-configs {args.gi_configs}" if args.gi_configs else "")
    )


if __name__ == "__main__":
    main()
