#!/usr/bin/env python
"""Speed of ``translate`` (issue #15): every goal row that can be measured on this machine, in one run.

Rows (each translate is the real CLI in a fresh subprocess, wall time; scenes are seeded synthetic
Sentinel-1-like scenes; exports/quantisations are made once beforehand, as a user's cache holds them):

1. default options (``--backend auto``) vs ``--backend torch`` — bundled model, the large scene;
2. ``--precision int8`` vs default — wall time, and its quality cost (PSNR of the RGB output, max DN);
   ``--precision bf16`` likewise (torch autocast on CPU);
3. pipeline alone — a near-null model (the bundled U-Net at ngf 1; and, as a second row, an identity ONNX
   graph with the same metadata, so no model cost at all), default options, *marginal* between the
   small and the large scene (fixed costs — imports, model load, probe, COG overview pass of a tiny scene —
   cancel): tiles/s, Mpx/s and Mpx/s per core; against the I/O floor measured in the same run, marginal over
   the same two sizes: GDAL writing the same RGB output (with its mask) as a deflate COG with overviews from
   memory, with the same creation options as the pipeline's final COG;
4. end-to-end ÷ model-only for the bundled model on the default engine, marginal (tiles/s between the two
   scenes ÷ the engine's own tiles/s on the same batch size and threads).

GPU rows are not run here (no GPU on this machine); the comparison with NRCan geo-inference is
``scripts/bench_geoinference.py`` (geo-inference runs in its own virtual environment).

    python scripts/bench_speed.py [--small 1024] [--large 3072] [--repeat 2] [--skip-slow] [--pipeline-only]
    python scripts/bench_speed.py --profile [--input KIND] [--small 1024] [--large 3072] [--repeat 2]
    python scripts/bench_speed.py --tasks [--large 3072] [--repeat 5]
    python scripts/bench_speed.py --cog-step [--large 3072] [--repeat 10]
    python scripts/bench_speed.py --startup [--small 1024] [--repeat 5] [--checkout PATH ...]
    python scripts/bench_speed.py --compare [--input KIND] [--small 1024] [--large 3072] [--repeat 5]
                                  --checkout PATH ...

``--pipeline-only`` runs row 3 alone (the near-null model against the I/O floor): what a change to the
pipeline around the model is measured with, without the minutes of bundled-model runs. ``--profile`` prints
where the pipeline's time goes instead (cProfile, marginal between the two sizes, both near-null models);
with ``BENCH_SPEED_PACKAGE_FROM_PATH=1 PYTHONPATH=<other checkout>`` the same table for another commit.
``--cog-step`` times the output stage alone (:class:`sar2opt_geo.io.CogAssembler`: blocks → staging → COG)
with the blocks' own overview levels against GDAL building them. ``--startup`` times a whole default
``translate`` of the small scene (fixed costs: imports, model load, engine choice) for each ``--checkout``, in
alternation; ``--compare`` the pipeline alone (identity model, marginal) of each ``--checkout``, in
alternation: the before/after figure of a pipeline change that separate runs on a drifting machine cannot
give. ``--input product`` makes both read a Sentinel-1 GRD product (calibration, thermal noise removal and
the warp onto UTM, window by window) instead of a GeoTIFF; ``--input product-map`` its map-projected σ⁰.

Marginal figures take the fastest of ``--repeat`` alternated runs of each size (other processes' load only
ever adds time); wall times of single runs are single runs.

Prints Markdown tables with the load average before and after, and the command.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if os.environ.get("BENCH_SPEED_PACKAGE_FROM_PATH") != "1":  # else: the package PYTHONPATH gives (--profile
    sys.path.insert(0, str(ROOT))  # of another commit's sar2opt_geo, for a before/after table)

from sar2opt_geo.defaults import BUNDLED_MODEL, ENGINE_BATCH_SIZE  # noqa: E402


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def seeded_checkpoint(path: Path, ngf: int, name: str) -> str:
    """The bundled model's architecture and radiometry at width ``ngf`` (random weights, seed 0): at ngf 64
    the SAR2Optical U-Net itself (54.5 M parameters), at ngf 1 a near-null model."""
    import torch

    from sar2opt_geo.models.checkpoint import CheckpointMeta, read_metadata, save_checkpoint
    from sar2opt_geo.models.registry import create_model

    meta = read_metadata(BUNDLED_MODEL)
    args = {**meta.arch_args, "ngf": ngf}
    torch.manual_seed(0)
    model = create_model(meta.architecture, **args).eval()
    d = {**meta.to_dict(), "arch_args": args, "name": name}
    save_checkpoint(path, model, CheckpointMeta.from_dict(d))
    return str(path)


def null_checkpoint(path: Path) -> str:
    """The bundled model's architecture and radiometry at ngf 1 (random weights): a near-null model."""
    return seeded_checkpoint(path, 1, "near-null-ngf1")


def identity_onnx(path: Path) -> str:
    """An ONNX graph whose output is its input (one Identity node), carrying the near-null checkpoint's
    metadata (bands, radiometry, 3 input channels): the model costs nothing, what is left is the pipeline.
    A second near-null row beside the ngf-1 U-Net's (issue #15 allows either)."""
    import onnx
    from onnx import TensorProto, helper

    from sar2opt_geo.models.checkpoint import read_metadata
    from sar2opt_geo.models.onnx_export import META_KEY, OPSET

    meta = read_metadata(BUNDLED_MODEL)
    c = int(meta.arch_args.get("in_channels", 3))
    if c != 3:
        raise SystemExit(f"identity model: the bundled model takes {c} channels, the identity needs 3")
    shape = ["batch", 3, 256, 256]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["sar"], ["optical"])],
        "identity",
        [helper.make_tensor_value_info("sar", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("optical", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    d = {**meta.to_dict(), "name": "identity"}
    helper.set_model_props(model, {META_KEY: json.dumps(d)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def make_scene(outdir: Path, size: int, seed: int = 11) -> str:
    from sar2opt_geo.synth import SceneSpec, write_scene

    sar, _ = write_scene(outdir, SceneSpec(width=size, height=size, seed=seed))
    return str(sar)


#: ``--input`` of ``--compare`` and ``--profile``: what the pipeline reads. ``product``: a synthetic
#: Sentinel-1 IW GRDH product (VV, random thermal noise, ascending) of the side's lines and samples, as a
#: SAFE folder: DN → calibrated, denoised σ⁰ → warped onto UTM window by window. ``product-map``: the same
#: product's map-projected σ⁰ GeoTIFF from the simulator (the same footprint, ~1.16× the radar side on its
#: 10 m grid): what the product costs beyond a GeoTIFF of the same scene. ``geotiff-strips``: the
#: ``geotiff`` scene rewritten in GDAL's default layout (uncompressed strips, as ``gdalwarp`` writes them
#: without ``TILED=YES``); ``geotiff-deflate-strips``: the same strips DEFLATE-compressed.
INPUTS = ("geotiff", "geotiff-strips", "geotiff-deflate-strips", "product", "product-map")


def make_input(kind: str, outdir: Path, size: int, seed: int = 11) -> str:
    """The input file (or SAFE folder) of ``--input kind`` at side ``size``."""
    if kind == "geotiff":
        return make_scene(outdir, size, seed)
    if kind in ("geotiff-strips", "geotiff-deflate-strips"):
        import rasterio.shutil

        tiled = make_scene(outdir, size, seed)
        strips = str(Path(tiled).with_name(f"strips_{Path(tiled).name}"))
        opts = {"compress": "deflate"} if kind == "geotiff-deflate-strips" else {}
        rasterio.shutil.copy(tiled, strips, driver="GTiff", **opts)  # otherwise GDAL's default layout
        return strips
    from sar2opt_geo.sentinel1.synth import ProductSpec, write_product

    spec = ProductSpec(width=size, height=size, polarisations=("VV",), seed=seed, thermal_noise="random")
    paths = write_product(outdir, spec)
    return str(paths.safe if kind == "product" else paths.sar_map)


def translate(
    scene: str, out: Path, model: str, *extra: str, env: dict, cwd: Path | None = None, device: str = "cpu"
) -> tuple[float, int, float]:
    """Wall seconds of one CLI run, the model evaluations it reports, and its CPU seconds (user + system, all
    threads: the figure other processes' load disturbs least). ``cwd``: where it runs (``python -m`` puts the
    working directory first on ``sys.path``: outside any checkout when ``PYTHONPATH`` names one)."""
    cmd = [
        sys.executable,
        "-m",
        "sar2opt_geo",
        "translate",
        scene,
        str(out),
        "--model",
        model,
        "--device",
        device,
        "--overwrite",
        *extra,
    ]
    c0 = _children_cpu()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    dt = time.perf_counter() - t0
    cpu = _children_cpu() - c0
    if r.returncode != 0:
        raise SystemExit(f"translate failed: {' '.join(cmd)}\n{r.stderr}")
    last = [ln for ln in r.stderr.splitlines() if ln.startswith("wrote ")][-1]
    n_eval = int(last.split(": ", 1)[1].split(" of ")[0])
    return dt, n_eval, cpu


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def io_floor(path: Path, out: Path, gdal_default_tmp: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds GDAL takes to write the RGB (and mask) of ``path`` as a deflate COG with
    overviews, from memory (reading is not timed), with the pipeline's COG creation options and GDAL
    configuration (``io.COG_OPTIONS``, ``io.COG_ENV``). ``gdal_default_tmp``: with GDAL's own default for
    the COG driver's temporary overview files (ZSTD) instead, as the floor was measured before that setting
    (the same COG, byte for byte, at more CPU)."""
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    from sar2opt_geo.io import COG_ENV, COG_OPTIONS

    with rasterio.open(path) as src:
        data, mask, profile = src.read(), src.dataset_mask(), src.profile
    profile.update(driver="GTiff", compress=None, tiled=True, blockxsize=512, blockysize=512)
    t0, c0 = time.perf_counter(), time.process_time()
    env = {k: v for k, v in COG_ENV.items() if not (gdal_default_tmp and k == "COG_TMP_COMPRESSION")}
    with rasterio.Env(**env), MemoryFile() as mem:
        with mem.open(**{k: v for k, v in profile.items() if k not in ("compress",)}) as dst:
            dst.write(data)
            dst.write_mask(mask)
        with mem.open() as src:
            rasterio.shutil.copy(src, str(out), driver="COG", BLOCKSIZE=512, **COG_OPTIONS)
    return time.perf_counter() - t0, time.process_time() - c0


def model_only(model: str, n_tiles: int, batch: int, backend: str) -> tuple[float, float]:
    """Tiles/s of the engine alone (same export and thread count as the pipeline), on ``n_tiles`` tiles,
    and its CPU seconds per tile."""
    from sar2opt_geo.models.checkpoint import read_metadata
    from sar2opt_geo.translate import make_model_ref, predict, probe_batch

    c = int(read_metadata(model).arch_args.get("in_channels", 3))
    x = np.concatenate([probe_batch(c, 256, n=min(16, n_tiles), seed=s) for s in range(-(-n_tiles // 16))])
    x = x[:n_tiles]
    ref = make_model_ref(model, "cpu", backend, tile_size=256)
    predict(ref, x[:batch], batch)  # warm-up (load + first pass)
    t0, c0 = time.perf_counter(), time.process_time()
    predict(ref, x, batch)
    return n_tiles / (time.perf_counter() - t0), (time.process_time() - c0) / n_tiles


def model_only_subprocess(model: str, n_tiles: int, batch: int, env: dict) -> tuple[float, float]:
    """:func:`model_only` with the ONNX engine in a fresh process (as the translate runs are)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from bench_speed import model_only; "
        "print(*model_only(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), 'onnx'))"
    )
    cmd = [sys.executable, "-c", code, str(Path(__file__).parent), model, str(n_tiles), str(batch)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    tps, cpt = r.stdout.strip().splitlines()[-1].split()
    return float(tps), float(cpt)


class SyncExecutor:
    """Dask's synchronous scheduler behind the executor interface of ``sar2opt_geo.distributed``: every task
    runs in this thread, so cProfile sees the whole pipeline but the engine's and GDAL's own threads."""

    name = "threads"
    num_workers = 1

    def run(self, dsk, keys, on_result=None, resources=None):
        import dask
        from dask.callbacks import Callback

        wanted = set(keys)

        def posttask(key, result, dsk_, state, worker_id):
            if on_result is not None and key in wanted:
                on_result(key, result)

        with Callback(posttask=posttask):
            values = dask.get(dsk, list(keys))
        return dict(zip(keys, values, strict=True))


#: Rows of the profile table: (label, file suffix, function, cumulative or own time).
PROFILE_ROWS = [
    ("whole run", "run.py", "run_translate", "cum"),
    ("acc tasks (read, radiometry, fill, model, blend, spill)", "tasks.py", "resumable_partial", "cum"),
    ("· read (`io.read_window`, GDAL decode; also the statistics samples)", "io.py", "read_window", "cum"),
    (
        "· warp onto the map grid (`warp.warp_window`, products and GCP inputs; their reads included)",
        "warp.py",
        "warp_window",
        "cum",
    ),
    (
        "· · a product's DN read, calibrated, denoised (`S1Product.read_window`)",
        "product.py",
        "read_window",
        "cum",
    ),
    ("· · · of which calibration and noise (`S1Product.calibrate`)", "product.py", "calibrate", "cum"),
    ("· · exact transformation at the 16-px nodes (`warp._nodes`)", "warp.py", "_nodes", "cum"),
    ("· · interpolation between the nodes (`warp._lerp_axis`)", "warp.py", "_lerp_axis", "cum"),
    (
        "· · bilinear resampling in strips (`warp._bilinear_strip`; before 2275b06 inside `warp_window`)",
        "warp.py",
        "_bilinear_strip",
        "cum",
    ),
    ("· radiometry (`normalize`)", "radiometry.py", "normalize", "cum"),
    ("· nodata fill", "tasks.py", "fill_nodata", "cum"),
    ("· · of which scipy's distance transform", "_morphology.py", "distance_transform_edt", "cum"),
    ("· blending (Σw·y, Σw)", "blend.py", "add", "cum"),
    ("· the block's own corner finished (normalise, uint8), strips copied out", "blend.py", "take", "cum"),
    ("· waiting for the model (its own thread)", "~", "<method 'acquire' of '_thread.lock' objects>", "own"),
    ("· spill strips for --resume", "workstate.py", "save_spill", "cum"),
    ("out tasks (overlap-add, normalise, uint8, overviews, block file)", "tasks.py", "finish_block", "cum"),
    ("· overlap-add", "tasks.py", "overlap_add", "cum"),
    ("· normalise (Σw·y / Σw; also the acc tasks' corners)", "blend.py", "normalise", "cum"),
    ("· to uint8 (also the acc tasks' corners)", "radiometry.py", "output_to_uint8", "cum"),
    ("· the block's overview levels (`pyramid.block_pyramid`)", "pyramid.py", "block_pyramid", "cum"),
    ("· block file (`WorkState.save_block`)", "workstate.py", "save_block", "cum"),
    ("client: block (and its levels) → staging GeoTIFFs", "run.py", "add", "cum"),
    ("COG step (GDAL CreateCopy)", "io.py", "staging_to_cog", "cum"),
]


def profile_pipeline(scenes: dict[int, str], model: str, tmp: Path, repeat: int, **options):
    """cProfile of ``run_translate`` in this process under Dask's synchronous scheduler, default options:
    per size the run of least process CPU time (all threads) out of ``repeat``. Returns ``{size: (cpu
    seconds, pstats dict)}``. ``options``: other :class:`~sar2opt_geo.plan.TranslateOptions` (tests: a chunk
    size that splits a small scene into several blocks)."""
    import cProfile
    import pstats

    from sar2opt_geo.plan import TranslateOptions
    from sar2opt_geo.run import run_translate

    opts = TranslateOptions(model=model, device="cpu", **options)
    ex = SyncExecutor()
    small = min(scenes)
    run_translate(scenes[small], str(tmp / "pw.tif"), opts, ex, overwrite=True)  # engine load, caches
    out = {}
    for size, scene in scenes.items():
        for _ in range(repeat):
            pr = cProfile.Profile()
            c0 = time.process_time()
            pr.enable()
            run_translate(scene, str(tmp / f"p{size}.tif"), opts, ex, overwrite=True)
            pr.disable()
            cpu = time.process_time() - c0
            if size not in out or cpu < out[size][0]:
                out[size] = (cpu, pstats.Stats(pr).stats)
    return out


def _profile_value(stats: dict, suffix: str, func: str, kind: str) -> float:
    i = 3 if kind == "cum" else 2
    return sum(v[i] for k, v in stats.items() if k[0].endswith(suffix) and k[2] == func)


def run_profile(args) -> None:
    """``--profile``: the marginal profile table of the pipeline with the near-null models."""
    import sar2opt_geo

    print(f"load average before: {loadavg()}  (package: {Path(sar2opt_geo.__file__).parent})", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp:
        tmp = Path(tmp)
        os.environ["SAR2OPT_GEO_CACHE_DIR"] = str(tmp / "cache")
        models = {
            "ngf-1": null_checkpoint(tmp / "null.safetensors"),
            "identity": identity_onnx(tmp / "identity.onnx"),
        }
        scenes = {s: make_input(args.input, tmp / f"s{s}", s) for s in (args.small, args.large)}
        S, L = args.small, args.large
        cols = {name: profile_pipeline(scenes, m, tmp, args.repeat) for name, m in models.items()}
    print()
    print(f"| marginal {L}² − {S}², seconds | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    cpu = [f"{c[L][0] - c[S][0]:.2f}" for c in cols.values()]
    print("| process CPU (user + system, all threads) | " + " | ".join(cpu) + " |")
    for label, suffix, func, kind in PROFILE_ROWS:
        vals = [
            _profile_value(c[L][1], suffix, func, kind) - _profile_value(c[S][1], suffix, func, kind)
            for c in cols.values()
        ]
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    print()
    print("rows: main-thread seconds in cProfile (Dask's synchronous scheduler), best run of each size")
    print(f"load average after: {loadavg()}")
    print(
        f"command: python scripts/bench_speed.py --profile --input {args.input} --small {S} --large {L} "
        f"--repeat {args.repeat}"
    )


#: The task functions ``--tasks`` times (module, attribute, label); nested ones are inside the row above.
TASK_ROWS = [
    ("tasks", "model_input", "model input (read + radiometry)"),
    ("tasks", "read_linear", "· read (GDAL decode, linear intensity)"),
    ("tasks", "normalize", "· radiometry (`normalize`)"),
    ("tasks", "model_tile", "tiles into the batch (copy, nodata fill)"),
    ("tasks", "fill_nodata", "· nodata fill (partial tiles)"),
    ("tasks", "predict_async", "model (identity ONNX graph)"),
    ("blend.Accumulator", "add", "blending (Σw·y, Σw)"),
    ("blend.Accumulator", "take", "the block's own corner finished (normalise, uint8), strips copied out"),
    ("workstate.WorkState", "save_spill", "spill strips for --resume"),
    ("tasks", "overlap_add", "overlap-add"),
    ("tasks", "normalise", "normalise (Σw·y / Σw)"),
    ("tasks", "output_to_uint8", "to uint8"),
    ("tasks", "block_pyramid", "the block's overview levels"),
    ("workstate.WorkState", "save_block", "block file"),
]


@contextlib.contextmanager
def _restored_env(name: str):
    old = os.environ.get(name)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _task_passes(args, spent: dict) -> tuple[dict, object]:
    """``--repeat`` passes of every task of the large scene; ``(best pass's seconds per row, the job)``."""
    from dataclasses import replace

    from sar2opt_geo import tasks
    from sar2opt_geo.plan import TranslateOptions, prepare_translate
    from sar2opt_geo.run import open_work_state
    from sar2opt_geo.sampling import measure_scene

    try:
        from sar2opt_geo import pyramid
    except ImportError:  # a checkout from before the block-wise overviews
        pyramid = None
    L = args.large
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp, _restored_env("SAR2OPT_GEO_CACHE_DIR"):
        tmp = Path(tmp)
        os.environ["SAR2OPT_GEO_CACHE_DIR"] = str(tmp / "cache")
        scene = make_scene(tmp / "s", L)
        ex = SyncExecutor()
        prep = prepare_translate(
            scene, TranslateOptions(model=identity_onnx(tmp / "id.onnx"), device="cpu"), ex
        )
        job = measure_scene(ex, prep)
        if pyramid is not None and hasattr(job, "overview_levels"):  # a checkout with block-wise overviews
            job = replace(job, overview_levels=pyramid.block_levels(prep.plan.chunk, L, L))
        ws = open_work_state(job, tmp / "o.tif", "cog", False)
        # checkouts before the acc tasks finished their blocks cut the strips from the block's whole partial
        old_strips = len(inspect.signature(tasks.partial_strips).parameters) > 1
        best = None
        for _ in range(args.repeat):
            spent.clear()
            for d in ("blocks", "done", "spill"):
                for f in (ws.root / d).glob("*"):
                    f.unlink()
            c0 = time.thread_time()
            parts = {b.key: tasks.resumable_partial(job, str(ws.root), b.bi, b.bj) for b in job.plan.blocks}
            c1 = time.thread_time()
            for b in job.plan.blocks:
                deps = [
                    parts[c.key]
                    if c.key == b.key
                    else tasks.partial_strips(parts[c.key], *([c] if old_strips else []))
                    for c in job.plan.contributors(b)
                ]
                tasks.finish_block(job, str(ws.root), b.bi, b.bj, *deps)
            c2 = time.thread_time()
            row = {**spent, "acc": c1 - c0, "out": c2 - c1}
            if best is None or row["acc"] + row["out"] < best["acc"] + best["out"]:
                best = row
    return best, job


def run_tasks(args) -> None:
    """``--tasks``: single-thread CPU time (``time.thread_time``) of every ``acc`` and ``out`` task of the
    large scene run one after another in this process (identity ONNX model, default options), best of
    ``--repeat`` passes, with the task functions of :data:`TASK_ROWS` timed inside them. No threads, no
    subprocesses, no COG step: the figure other processes' load disturbs least, for before/after
    comparisons of the task code (``BENCH_SPEED_PACKAGE_FROM_PATH=1 PYTHONPATH=<checkout>`` for another
    commit's)."""
    import collections
    import importlib

    import sar2opt_geo

    print(f"load average before: {loadavg()}  (package: {Path(sar2opt_geo.__file__).parent})", flush=True)
    spent: dict[str, float] = collections.defaultdict(float)
    originals = []

    def timed(owner, name):
        f = getattr(owner, name)
        originals.append((owner, name, f))

        def wrapper(*a, **k):
            c = time.thread_time()
            try:
                return f(*a, **k)
            finally:
                spent[name] += time.thread_time() - c
                if name == "fill_nodata" and a[1].any() and not a[1].all():
                    spent["partial tiles"] += 1

        setattr(owner, name, wrapper)

    for mod, name, _ in TASK_ROWS:
        top, _, cls = mod.partition(".")
        owner = importlib.import_module(f"sar2opt_geo.{top}")
        if cls:
            owner = getattr(owner, cls)
        if hasattr(owner, name):
            timed(owner, name)
    try:
        best, job = _task_passes(args, spent)
    finally:  # the package's functions as they were (the bench may run inside a test process)
        for owner, name, f in reversed(originals):
            setattr(owner, name, f)
    L = args.large
    print()
    print(f"| {L}² scene, {job.grid.count} tiles, {job.plan.n_blocks} blocks: ms of single-thread CPU | ms |")
    print("|---|---:|")
    print(f"| acc + out tasks | {1e3 * (best['acc'] + best['out']):.0f} |")
    print(f"| acc tasks | {1e3 * best['acc']:.0f} |")
    for _, name, label in TASK_ROWS:
        if name in best:
            print(f"| {label} | {1e3 * best[name]:.0f} |")
        if name == "save_spill":
            print(f"| out tasks | {1e3 * best['out']:.0f} |")
    n_partial = int(best.get("partial tiles", 0))
    if n_partial:
        per = 1e3 * best.get("fill_nodata", 0.0) / n_partial
        print(f"| partial tiles (nodata filled) | {n_partial} of {job.grid.count}: {per:.2f} ms each |")
    print()
    print(f"best of {args.repeat} passes; load average after: {loadavg()}")
    print(f"command: python scripts/bench_speed.py --tasks --large {L} --repeat {args.repeat}")


def psnr_maxdn(a_path: Path, b_path: Path) -> tuple[float, int]:
    from sar2opt_geo import io

    a, ma = io.read_raster(a_path, masked=True)
    b, _ = io.read_raster(b_path, masked=True)
    d = (a.astype(np.float64) - b.astype(np.float64))[:, ma["mask"] > 0]
    mse = float((d**2).mean())
    return (float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)), int(np.abs(d).max())


def run_cog_step(args) -> None:
    """``--cog-step``: the output stage of the large scene's identity-model output alone, in this process —
    every block (the plan's block size) written into :class:`sar2opt_geo.io.CogAssembler`, then the COG —
    with the blocks' overview levels (:mod:`sar2opt_geo.pyramid`, computed here and timed apart) and without
    (GDAL builds them in the COG step), alternated ``--repeat`` times; medians."""
    import resource
    import statistics

    import rasterio

    from sar2opt_geo import io, pyramid
    from sar2opt_geo.defaults import CHUNK_SIZE, OVERLAP, TILE_SIZE
    from sar2opt_geo.tiling import BlockPlan, TileGrid

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    L = args.large
    print(f"load average before: {loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp, _restored_env("SAR2OPT_GEO_CACHE_DIR"):
        tmp = Path(tmp)
        os.environ["SAR2OPT_GEO_CACHE_DIR"] = str(tmp / "cache")
        out = tmp / "rgb.tif"
        translate(make_scene(tmp / "s", L), out, identity_onnx(tmp / "id.onnx"), env=dict(os.environ))
        with rasterio.open(out) as src:
            rgb, valid = src.read(), src.dataset_mask() > 0
            geo = io.GeoProfile(src.width, src.height, src.crs.to_wkt(), tuple(src.transform)[:6])
        chunk = BlockPlan.create(TileGrid(L, L, TILE_SIZE, OVERLAP), CHUNK_SIZE).chunk  # the default blocks
        blocks = []
        for r in range(0, L, chunk):
            for c in range(0, L, chunk):
                part = np.ascontiguousarray(rgb[:, r : r + chunk, c : c + chunk])
                blocks.append((r, c, part, valid[r : r + chunk, c : c + chunk]))
        n = pyramid.block_levels(chunk, L, L)
        rows: dict[int, list] = {0: [], n: []}
        for i in range(args.repeat):
            for levels in (0, n) if i % 2 else (n, 0):
                t0, c0 = time.perf_counter(), cpu()
                pyr = [pyramid.block_pyramid(b, v, levels) for _, _, b, v in blocks]
                t1, c1 = time.perf_counter(), cpu()
                with io.CogAssembler(tmp / "o.tif", geo, 3, "uint8", overview_levels=levels) as cog:
                    for (r, c, b, v), p in zip(blocks, pyr, strict=True):
                        cog.write(r, c, b, v, p or None)
                    t2, c2 = time.perf_counter(), cpu()
                    cog.finish()
                t3, c3 = time.perf_counter(), cpu()
                rows[levels].append((t1 - t0, c1 - c0, t2 - t1, c2 - c1, t3 - t2, c3 - c2))
    med = {k: [statistics.median(col) for col in zip(*v, strict=True)] for k, v in rows.items()}
    print()
    print(
        f"| {L}² identity-model output, {len(blocks)} blocks of {chunk}², medians of {args.repeat} | "
        f"GDAL builds the overviews | the blocks' levels ({n}) |"
    )
    print("|---|---:|---:|")
    for label, i in (
        ("blocks' overview levels (pyramid), s wall / CPU-s", 0),
        ("blocks (and levels) → staging GeoTIFFs", 2),
        ("COG step (GDAL CreateCopy)", 4),
    ):
        print(f"| {label} | {med[0][i]:.3f} / {med[0][i + 1]:.3f} | {med[n][i]:.3f} / {med[n][i + 1]:.3f} |")
    tot = [sum(m[i] for i in (0, 2, 4)) for m in (med[0], med[n])]
    tot_c = [sum(m[i] for i in (1, 3, 5)) for m in (med[0], med[n])]
    print(f"| total | {tot[0]:.3f} / {tot_c[0]:.3f} | {tot[1]:.3f} / {tot_c[1]:.3f} |")
    print()
    print(f"load average after: {loadavg()}")
    print(f"command: python scripts/bench_speed.py --cog-step --large {L} --repeat {args.repeat}")


def run_compare(args) -> None:
    """``--compare``: the pipeline alone (identity ONNX model, default options, whole CLI runs in fresh
    processes) of each ``--checkout``, marginal between the small and the large scene, the runs alternated
    checkout by checkout within each size and round (the order reversed every other round), ``--repeat``
    rounds; fastest run of each. On a machine whose speed drifts over minutes, every checkout sees the same
    conditions, so the ratios between them hold where separate bench runs do not."""
    checkouts = [str(Path(c).resolve()) for c in (args.checkout or [ROOT])]
    print(f"load average before: {loadavg()}", flush=True)
    S, L = args.small, args.large
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp:
        tmp = Path(tmp)
        base = {**os.environ, "SAR2OPT_GEO_CACHE_DIR": str(tmp / "cache")}
        model = identity_onnx(tmp / "identity.onnx")
        scenes = {s: make_input(args.input, tmp / f"s{s}", s) for s in (S, L)}
        runs: dict[str, dict[int, list]] = {c: {S: [], L: []} for c in checkouts}

        def once(c: str, size: int):
            return translate(scenes[size], tmp / "o.tif", model, env={**base, "PYTHONPATH": c}, cwd=tmp)

        for c in checkouts:  # the engine's first load (untimed)
            once(c, S)
        out_px = {size: _pixels(scenes[size]) for size in (S, L)}  # a warped product: its map grid
        for i in range(args.repeat):
            for size in (S, L):
                for c in checkouts if i % 2 == 0 else checkouts[::-1]:
                    runs[c][size].append(once(c, size))
    mpx = (out_px[L] - out_px[S]) / 1e6
    print()
    print(
        f"| pipeline alone (identity model), --input {args.input}, marginal {S}² → {L}², fastest of "
        f"{args.repeat} alternated rounds | wall s | CPU s | ms CPU a tile | Mpx/s per core (output) | "
        "÷ first (wall, CPU) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    first = None
    for c in checkouts:
        wall = min(r[0] for r in runs[c][L]) - min(r[0] for r in runs[c][S])
        cpu = min(r[2] for r in runs[c][L]) - min(r[2] for r in runs[c][S])
        tiles = runs[c][L][0][1] - runs[c][S][0][1]
        first = first or (wall, cpu)
        print(
            f"| {c} | {wall:.2f} | {cpu:.2f} | {1e3 * cpu / tiles:.2f} | {mpx / cpu:.2f} | "
            f"{wall / first[0]:.2f}, {cpu / first[1]:.2f} |"
        )
    print()
    print(f"load average after: {loadavg()}")
    cmd = " ".join(f"--checkout {c}" for c in checkouts)
    print(
        f"command: python scripts/bench_speed.py --compare --input {args.input} --small {S} --large {L} "
        f"--repeat {args.repeat} {cmd}"
    )


def _pixels(scene: str) -> int:
    """Pixels of the grid ``translate`` writes for ``scene`` (a warped product's map grid)."""
    from sar2opt_geo.source import open_source

    src = open_source(scene)
    return src.width * src.height


def run_startup(args) -> None:
    """``--startup``: a whole default ``translate`` of the small scene (bundled model, its cached ONNX export
    and parity verdict warm) in a fresh process, for each ``--checkout`` (a folder holding ``sar2opt_geo``,
    put first on ``PYTHONPATH``; default this checkout) in alternation, ``--repeat`` rounds; medians, and
    which heavy modules each run loaded. Then the import time of torch and of onnx alone, in fresh
    processes."""
    import statistics

    checkouts = [str(Path(c).resolve()) for c in (args.checkout or [ROOT])]
    code = (
        "import sys; from sar2opt_geo.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('LOADED=' + ','.join(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))"
    )
    print(f"load average before: {loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp:
        tmp = Path(tmp)
        scene = make_scene(tmp / "s", args.small)
        base = {**os.environ, "SAR2OPT_GEO_CACHE_DIR": str(tmp / "cache")}
        times: dict[str, list[float]] = {c: [] for c in checkouts}
        loaded: dict[str, str] = {}

        def once(c: str) -> float:
            cmd = [sys.executable, "-c", code, "translate", scene, str(tmp / "o.tif"), "--overwrite", "-q"]
            t0 = time.perf_counter()
            # cwd: `python -c` puts the working directory before PYTHONPATH on sys.path
            r = subprocess.run(cmd, capture_output=True, text=True, env={**base, "PYTHONPATH": c}, cwd=tmp)
            if r.returncode:
                raise SystemExit(f"translate failed with {c}:\n{r.stderr}")
            loaded[c] = r.stdout.strip().splitlines()[-1].removeprefix("LOADED=")
            return time.perf_counter() - t0

        for c in checkouts:  # fill the export cache and the parity verdict (untimed)
            once(c)
        for i in range(args.repeat):
            for c in checkouts if i % 2 == 0 else checkouts[::-1]:
                times[c].append(once(c))
        imports = {}
        for mod in ("torch", "onnx"):
            t = f"import time; t = time.perf_counter(); import {mod}; print(time.perf_counter() - t)"
            runs = [
                float(
                    subprocess.run(
                        [sys.executable, "-c", t], capture_output=True, text=True, check=True
                    ).stdout
                )
                for _ in range(3)
            ]
            imports[mod] = statistics.median(runs)
    print()
    print(
        f"| default translate of a {args.small}² scene, warm model cache, {args.repeat} alternated rounds "
        "| median s | runs | modules loaded |"
    )
    print("|---|---:|---|---|")
    for c in checkouts:
        runs = " ".join(f"{t:.2f}" for t in times[c])
        print(f"| {c} | {statistics.median(times[c]):.2f} | {runs} | {loaded[c] or '—'} |")
    print()
    print(", ".join(f"import {m} alone: {t:.2f} s" for m, t in imports.items()) + " (medians of 3 processes)")
    print(f"load average after: {loadavg()}")
    extra = "".join(f" --checkout {c}" for c in (args.checkout or []))
    print(
        f"command: python scripts/bench_speed.py --startup --small {args.small} --repeat {args.repeat}{extra}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=1024, help="small scene side (px)")
    ap.add_argument("--large", type=int, default=3072, help="large scene side (px)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each marginal pair (fastest kept)")
    ap.add_argument(
        "--input",
        choices=INPUTS,
        default="geotiff",
        help="with --compare or --profile: what the pipeline reads (a σ⁰ GeoTIFF scene; a Sentinel-1 GRD "
        "product, SAFE, of --small/--large lines and samples; or that product's map-projected σ⁰ GeoTIFF)",
    )
    ap.add_argument(
        "--skip-slow", action="store_true", help="skip the torch and bf16 runs of the bundled model"
    )
    ap.add_argument(
        "--pipeline-only",
        action="store_true",
        help="only the pipeline-alone rows (near-null model vs I/O floor)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="only the marginal cProfile table of the pipeline with the near-null models (in-process, "
        "Dask's synchronous scheduler); BENCH_SPEED_PACKAGE_FROM_PATH=1 profiles the sar2opt_geo on "
        "PYTHONPATH (another commit's) instead of this checkout's",
    )
    ap.add_argument(
        "--tasks",
        action="store_true",
        help="only the single-thread CPU table of the acc/out task functions on the large scene (identity "
        "model, in-process, best of --repeat passes)",
    )
    ap.add_argument(
        "--cog-step",
        action="store_true",
        help="only the output stage (blocks → COG) with and without the blocks' overview levels",
    )
    ap.add_argument(
        "--startup",
        action="store_true",
        help="only whole default translate runs of the small scene (fixed costs), per --checkout",
    )
    ap.add_argument(
        "--compare",
        action="store_true",
        help="only the pipeline alone (identity model, marginal) of each --checkout, runs alternated",
    )
    ap.add_argument(
        "--checkout",
        action="append",
        help="with --startup or --compare: a folder holding sar2opt_geo to time (repeatable; default this "
        "checkout)",
    )
    args = ap.parse_args()
    if args.compare:
        run_compare(args)
        return
    if args.cog_step:
        run_cog_step(args)
        return
    if args.startup:
        run_startup(args)
        return
    if args.profile:
        run_profile(args)
        return
    if args.tasks:
        run_tasks(args)
        return
    cores = os.cpu_count() or 1
    print(f"load average before: {loadavg()}  ({cores} cores)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "SAR2OPT_GEO_CACHE_DIR": str(tmp / "cache")}
        os.environ["SAR2OPT_GEO_CACHE_DIR"] = env["SAR2OPT_GEO_CACHE_DIR"]
        null = null_checkpoint(tmp / "null.safetensors")
        ident = identity_onnx(tmp / "identity.onnx")
        bundled = str(BUNDLED_MODEL)
        scenes = {s: make_scene(tmp / f"s{s}", s) for s in (args.small, args.large)}
        S, L = args.small, args.large
        mpx = (L * L - S * S) / 1e6

        # one-time costs, untimed in the rows: export + parity probe, int8 calibration
        t0 = time.perf_counter()
        if not args.pipeline_only:
            translate(scenes[S], tmp / "w1.tif", bundled, env=env)
        translate(scenes[S], tmp / "w2.tif", null, env=env)
        translate(scenes[S], tmp / "w4.tif", ident, env=env)
        t_first = time.perf_counter() - t0
        if not args.pipeline_only:
            # the int8 graph is cached per calibration-tile digest, i.e. per scene: warm the timed scene's
            translate(scenes[L], tmp / "w3.tif", bundled, "--precision", "int8", env=env)
        print(f"(first runs with ONNX export + probe: {t_first:.1f} s)", flush=True)

        rows = []
        # 3. pipeline alone: near-null model, marginal, vs the I/O floor
        # (small, large, floors) alternated --repeat times; the fastest of each: load from other processes
        # only ever adds time
        tn_s, tn_l, ti_s, ti_l, f_s, f_l, g_s, g_l, h_s, h_l = ([] for _ in range(10))
        for _ in range(args.repeat):
            t, en_s, c = translate(scenes[S], tmp / "ns.tif", null, env=env)
            tn_s.append((t, c))
            t, en_l, c = translate(scenes[L], tmp / "nl.tif", null, env=env)
            tn_l.append((t, c))
            t, ei_s, c = translate(scenes[S], tmp / "is.tif", ident, env=env)
            ti_s.append((t, c))
            t, ei_l, c = translate(scenes[L], tmp / "il0.tif", ident, env=env)
            ti_l.append((t, c))
            f_s.append(io_floor(tmp / "ns.tif", tmp / "fs.tif"))
            f_l.append(io_floor(tmp / "nl.tif", tmp / "fl.tif"))
            g_s.append(io_floor(tmp / "ns.tif", tmp / "gs.tif", gdal_default_tmp=True))
            g_l.append(io_floor(tmp / "nl.tif", tmp / "gl.tif", gdal_default_tmp=True))
            # the identity model's output is the speckled input itself: it compresses unlike the ngf-1
            # model's smooth output, so its floor is measured on its own output
            h_s.append(io_floor(tmp / "is.tif", tmp / "hs.tif"))
            h_l.append(io_floor(tmp / "il0.tif", tmp / "hl.tif"))
        pipe = min(tn_l)[0] - min(tn_s)[0]
        floor = min(f_l)[0] - min(f_s)[0]
        pipe_cpu = min(c for _, c in tn_l) - min(c for _, c in tn_s)
        floor_cpu = min(c for _, c in f_l) - min(c for _, c in f_s)
        rows.append(
            (
                f"pipeline alone (ngf-1 model, default options), marginal {S}²→{L}²",
                f"{pipe:.2f} s for {en_l - en_s} tiles: {(en_l - en_s) / pipe:.1f} tiles/s, "
                f"{mpx / pipe:.2f} Mpx/s ({mpx / pipe / cores:.2f} Mpx/s per core)",
            )
        )
        rows.append(
            (
                "I/O floor (GDAL: same RGB + mask → deflate COG with overviews), marginal",
                f"{floor:.2f} s ({mpx / floor:.2f} Mpx/s)",
            )
        )
        gfloor = min(g_l)[0] - min(g_s)[0]
        gfloor_cpu = min(c for _, c in g_l) - min(c for _, c in g_s)
        rows.append(
            (
                "I/O floor as measured before (GDAL's default ZSTD temporary overview files), marginal",
                f"{gfloor:.2f} s, {gfloor_cpu:.2f} CPU-s: ngf-1 pipeline ÷ it {pipe / gfloor:.2f} (wall), "
                f"{pipe_cpu / gfloor_cpu:.2f} (CPU)",
            )
        )
        rows.append(("pipeline alone ÷ I/O floor (goal ≤ 1.5)", f"**{pipe / floor:.2f}**"))
        rows.append(
            (
                "same in CPU seconds (user + system, all threads; least disturbed by other load)",
                f"pipeline {pipe_cpu:.2f} s ({mpx / pipe_cpu:.2f} Mpx per CPU-second), "
                f"floor {floor_cpu:.2f} s: **{pipe_cpu / floor_cpu:.2f}**",
            )
        )

        # the same with the identity ONNX model (a second near-null row, beside the ngf-1 one)
        ipipe = min(ti_l)[0] - min(ti_s)[0]
        ipipe_cpu = min(c for _, c in ti_l) - min(c for _, c in ti_s)
        ifloor = min(h_l)[0] - min(h_s)[0]
        ifloor_cpu = min(c for _, c in h_l) - min(c for _, c in h_s)
        rows.append(
            (
                f"pipeline alone (identity ONNX model, default options), marginal {S}²→{L}²",
                f"{ipipe:.2f} s for {ei_l - ei_s} tiles: {(ei_l - ei_s) / ipipe:.1f} tiles/s, "
                f"{mpx / ipipe:.2f} Mpx/s ({mpx / ipipe / cores:.2f} Mpx/s per core); "
                f"CPU {ipipe_cpu:.2f} s ({ipipe_cpu / (ei_l - ei_s) * 1e3:.2f} ms a tile); "
                f"I/O floor of its own "
                f"output {ifloor:.2f} s, {ifloor_cpu:.2f} CPU-s: ÷ floor **{ipipe / ifloor:.2f}** (wall), "
                f"**{ipipe_cpu / ifloor_cpu:.2f}** (CPU)",
            )
        )

        if args.pipeline_only:
            _print(rows, args)
            return
        # 1./4. bundled model: default (auto) marginal vs model-only (measured before, between and after the
        # two end-to-end runs, in a subprocess like them; the best of the three is the ceiling)
        bs = ENGINE_BATCH_SIZE["onnx"]
        mo = [model_only_subprocess(bundled, 64, bs, env)]
        ta_s, ta_l = [], []
        for _ in range(args.repeat):
            t, ea_s, c = translate(scenes[S], tmp / "as.tif", bundled, env=env)
            ta_s.append((t, c))
            mo.append(model_only_subprocess(bundled, 64, bs, env))
            t, ea_l, c = translate(scenes[L], tmp / "al.tif", bundled, env=env)
            ta_l.append((t, c))
            mo.append(model_only_subprocess(bundled, 64, bs, env))
        e2e_cpt = (min(c for _, c in ta_l) - min(c for _, c in ta_s)) / (ea_l - ea_s)
        ta_s, ta_l = min(ta_s)[0], min(ta_l)[0]
        e2e = (ea_l - ea_s) / (ta_l - ta_s)
        mo_tps = [v for v, _ in mo]
        mo_cpt = min(c for _, c in mo)
        rows.append((f"bundled model, default options ({L}²)", f"{ta_l:.1f} s, {ea_l} tiles"))
        rows.append((f"bundled model end-to-end, marginal (onnx, batch {bs})", f"{e2e:.1f} tiles/s"))
        rows.append(
            (
                "bundled model alone (ONNX Runtime, same export, batch and threads; 64 tiles per run)",
                f"{max(mo_tps):.1f} tiles/s (runs: {', '.join(f'{v:.1f}' for v in mo_tps)})",
            )
        )
        rows.append(("end-to-end ÷ best model-only run (goal ≥ 0.90)", f"**{e2e / max(mo_tps):.2f}**"))
        rows.append(
            (
                "same in CPU seconds per tile (model-only ÷ end-to-end marginal)",
                f"{mo_cpt:.3f} ÷ {e2e_cpt:.3f}: **{mo_cpt / e2e_cpt:.2f}**",
            )
        )

        # 2. int8
        ti_l, _, _ = translate(scenes[L], tmp / "il.tif", bundled, "--precision", "int8", env=env)
        rows.append((f"`--precision int8` ({L}²)", f"{ti_l:.1f} s: **{ti_l / ta_l:.2f}×** default"))
        if not args.skip_slow:
            tt_l, _, _ = translate(scenes[L], tmp / "tl.tif", bundled, "--backend", "torch", env=env)
            rows.insert(
                next(i for i, r in enumerate(rows) if r[0].startswith("bundled model, default")),
                (
                    f"bundled model, `--backend torch` ({L}²)",
                    f"{tt_l:.1f} s: default is **{ta_l / tt_l:.2f}×** torch's wall time",
                ),
            )
            p, m = psnr_maxdn(tmp / "tl.tif", tmp / "al.tif")
            rows.append(("default (onnx) vs torch output", f"PSNR {p:.1f} dB, max {m} DN"))
            p, m = psnr_maxdn(tmp / "tl.tif", tmp / "il.tif")
            rows.append(("int8 vs torch fp32 output", f"PSNR {p:.1f} dB, max {m} DN"))
            tb_l, _, _ = translate(scenes[L], tmp / "bl.tif", bundled, "--precision", "bf16", env=env)
            p, m = psnr_maxdn(tmp / "tl.tif", tmp / "bl.tif")
            rows.append(
                (
                    f"`--precision bf16` (torch autocast, {L}²)",
                    f"{tb_l:.1f} s ({tb_l / tt_l:.2f}× torch fp32); PSNR {p:.1f} dB, max {m} DN vs fp32",
                )
            )
        else:
            p, m = psnr_maxdn(tmp / "al.tif", tmp / "il.tif")
            rows.append(("int8 vs default (fp32) output", f"PSNR {p:.1f} dB, max {m} DN"))

    _print(rows, args)


def _print(rows: list[tuple[str, str]], args) -> None:
    print()
    print("| row | measured |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print()
    print(f"load average after: {loadavg()}")
    print(
        f"command: python scripts/bench_speed.py --small {args.small} --large {args.large} "
        f"--repeat {args.repeat}"
        + (" --skip-slow" if args.skip_slow else "")
        + (" --pipeline-only" if args.pipeline_only else "")
    )


if __name__ == "__main__":
    main()
