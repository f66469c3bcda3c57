"""Running a generator on batches of tiles (torch on CPU/GPU, or ONNX Runtime), once per worker process.

Tasks never carry weights: they carry a small :class:`ModelRef` (path + content hash + device + engine +
precision), and the weights are loaded once per process through the models package's per-process cache and
reused by every task that process runs. The generator always runs in eval mode under
``torch.inference_mode``. Where forward passes run:

* torch (CPU or CUDA) and ONNX Runtime on CUDA: one at a time on a single dedicated thread per process — on
  CPU one torch pass already uses every core (concurrent passes would only oversubscribe them, and OpenMP
  teams of several calling threads spin against each other), and a GPU runs one stream of work;
* ONNX Runtime on CPU: single-threaded passes (``intra_op_num_threads`` 1), side by side. A batch is a few
  tiles, and splitting its ~100 small operators over the cores costs a synchronisation per operator; whole
  batches side by side cost none. A call of one batch runs in the calling thread — in the pipeline a Dask
  thread, of which there is one per core — and a call of several batches spreads them over a pool of
  :func:`~sar2opt_geo.defaults.usable_cores` threads. Measured with ``scripts/bench_geoinference.py`` (4096²
  scene, ngf-32 U-Net, 2 cores): 0.65× geo-inference's time with one 2-thread pass at a time, 0.58× with
  1-thread passes on a pool, 0.57× with single batches in the calling thread (int8: 0.45×, 0.42×, 0.36×);
  ``scripts/bench_speed.py`` pipeline alone ÷ I/O floor 3.25 on the pool, 1.86 in the calling thread.

Engine choice (:func:`select_engine`, ``--backend auto``, the default): an ``.onnx`` model runs on ONNX
Runtime; on CUDA torch runs (with fp16/bf16 autocast when ``--precision`` asks); on CPU the checkpoint is
exported once to the user cache (see :mod:`sar2opt_geo.models.onnx_export`) and ONNX Runtime runs it when its
output matches torch within 1 DN (after the uint8 quantisation of the output) on a seeded probe batch, else
torch runs, with the reason logged. Batch size: ``--batch-size`` when given, else per engine
(:data:`~sar2opt_geo.defaults.ENGINE_BATCH_SIZE`, measured); on CUDA from free device memory, and an
out-of-memory error halves the batch and retries.

``--precision int8`` quantises the ONNX graph statically, per process and lazily (:func:`calibrated`), with
calibration tiles the caller draws from the scene; the quantised graph is cached under a digest of them.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sar2opt_geo.defaults import (
    BACKEND_CHOICES,
    BACKENDS,
    ENGINE_BATCH_SIZE,
    PRECISION,
    PRECISIONS,
    usable_cores,
)
from sar2opt_geo.errors import ModelError, UsageError

log = logging.getLogger(__name__)

_FORWARD_LOCK = threading.Lock()
_FORWARD_POOLS: dict[str, ThreadPoolExecutor] = {}


def _forward_pool(kind: str) -> ThreadPoolExecutor:
    """The forward-pass threads of this process: ``"device"`` — one thread (torch; ONNX Runtime on CUDA);
    ``"onnx-cpu"`` — one thread per usable core, each running single-threaded ONNX Runtime passes."""
    with _FORWARD_LOCK:
        pool = _FORWARD_POOLS.get(kind)
        if pool is None:
            n = usable_cores() if kind == "onnx-cpu" else 1
            pool = _FORWARD_POOLS[kind] = ThreadPoolExecutor(n, thread_name_prefix=f"sar2opt-forward-{kind}")
        return pool


def _onnx_on_cpu(ref: ModelRef) -> bool:
    return ref.backend == "onnx" and not str(ref.device).startswith("cuda")


def _run_now(fn, *args) -> Future:
    """``fn(*args)`` run in this thread, as a done future (its result or its exception)."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args))
    except Exception as exc:  # noqa: BLE001 - handed to the caller through the future, as a pool would
        fut.set_exception(exc)
    return fut


def _concatenated(futures: list[Future]) -> Future:
    """A future of the concatenation of ``futures``' arrays, in order, once all are done (the first error
    otherwise)."""
    out: Future = Future()
    lock = threading.Lock()
    left = [len(futures)]

    def done(_):
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            try:
                out.set_result(np.concatenate([f.result() for f in futures]))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                out.set_exception(exc)

    for f in futures:
        f.add_done_callback(done)
    return out


@dataclass(frozen=True)
class ModelRef:
    """A picklable reference to a generator: where its weights are and how to run them."""

    path: str
    digest: str
    device: str = "cpu"
    backend: str = "torch"
    lora: str | None = None
    precision: str = PRECISION
    tile_size: int | None = None  # ONNX export with this fixed tile side (None: dynamic height and width)
    quantized: str | None = None  # the int8 graph, once calibrated (see calibrated())

    @property
    def label(self) -> str:
        return f"{os.path.basename(self.path)}@{self.digest}"

    @property
    def engine(self) -> str:
        """The engine as recorded in output tags: ``torch``, ``onnx``, or with a precision: ``onnx int8``."""
        return self.backend if self.precision == PRECISION else f"{self.backend} {self.precision}"


def cuda_may_be_visible() -> bool:
    """False when torch cannot see a CUDA GPU here, decided without importing torch (~1.4 s): a CPU-only torch
    build (its version ends in ``+cpu``), macOS, or Linux without an NVIDIA driver device (``/dev/nvidiactl``,
    ``/proc/driver/nvidia``; WSL's ``/dev/dxg``). True means "ask torch"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        if version("torch").endswith("+cpu"):
            return False
    except PackageNotFoundError:
        pass
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg"))
    return True


def _cuda_available() -> bool:
    if not cuda_may_be_visible():
        return False
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str, executor=None) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is a usage error.

    On a remote cluster (``--scheduler``) the workers' GPUs count, not the client's: ``auto`` means cuda when
    some worker advertises a ``GPU`` resource, and ``cuda`` is accepted only then. torch is imported only
    when a GPU may be there (:func:`cuda_may_be_visible`)."""
    if device != "cpu" and getattr(executor, "remote", False):
        n_gpu = executor.gpu_workers()
        if device == "auto":
            return "cuda" if n_gpu else "cpu"
        if device.startswith("cuda") and not n_gpu:
            raise UsageError(
                "--device cuda: no worker of the cluster advertises a GPU resource "
                "(start them with `dask worker ... --resources GPU=1`)"
            )
        if device.startswith("cuda"):
            return device
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    if device.startswith("cuda") and not _cuda_available():
        raise UsageError("--device cuda requested but no CUDA GPU is visible to torch")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda[:N] (got {device!r})")
    return device


def make_model_ref(
    path: str,
    device: str = "cpu",
    backend: str = "torch",
    lora: str | None = None,
    precision: str = PRECISION,
    tile_size: int | None = None,
) -> ModelRef:
    from sar2opt_geo.models.checkpoint import checkpoint_hash

    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    digest = checkpoint_hash(path)
    if lora:
        digest = f"{digest}+{checkpoint_hash(lora)}"
    return ModelRef(
        path=str(path),
        digest=digest,
        device=device,
        backend=backend,
        lora=lora,
        precision=precision,
        tile_size=tile_size,
    )


# ------------------------------------------------------------------------------------------ engine choice


@dataclass(frozen=True)
class EngineChoice:
    """The engine a run uses, its batch size (0: from free device memory) and why it was chosen."""

    backend: str
    batch_size: int
    reason: str


def is_onnx_path(path) -> bool:
    return str(path).lower().endswith(".onnx")


def check_precision(backend: str | None, precision: str, device: str) -> None:
    """Refuse precision/engine/device combinations no engine runs (one-line usage errors)."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    cuda = str(device).startswith("cuda")
    if precision == "int8":
        if cuda:
            raise UsageError("--precision int8 runs on CPU (ONNX Runtime); use fp16 or bf16 on CUDA")
        if backend == "torch":
            raise UsageError("--precision int8 runs on ONNX Runtime: use --backend onnx or auto")
    if precision in ("fp16", "bf16") and backend == "onnx":
        raise UsageError(f"--precision {precision} runs on torch (autocast): use --backend torch or auto")
    if precision == "fp16" and not cuda:
        raise UsageError("--precision fp16 needs a CUDA device; on CPU use bf16 or int8")


def probe_batch(in_channels: int, tile: int, n: int = 2, seed: int = 0) -> np.ndarray:
    """A seeded SAR-like batch in the model's input range [-1, 1]: blocky fields plus speckle-like noise."""
    rng = np.random.default_rng(seed)
    cells = max(1, tile // 16)
    base = rng.uniform(-1.0, 0.5, size=(n, 1, cells, cells)).repeat(16, axis=2).repeat(16, axis=3)
    base = np.pad(base, ((0, 0), (0, 0), (0, tile - base.shape[2]), (0, tile - base.shape[3])), mode="edge")
    x = np.clip(base + rng.normal(0.0, 0.25, size=(n, 1, tile, tile)), -1.0, 1.0)
    return np.repeat(x, in_channels, axis=1).astype(np.float32)


def output_dn_diff(y0: np.ndarray, y1: np.ndarray, out_range: tuple[float, float] = (-1.0, 1.0)) -> int:
    """Largest difference in DN between two model outputs after the output's uint8 quantisation."""
    from sar2opt_geo.radiometry import output_to_uint8

    a = output_to_uint8(y0, out_range).astype(np.int16)
    b = output_to_uint8(y1, out_range).astype(np.int16)
    return int(np.abs(a - b).max()) if a.size else 0


def onnx_parity(
    path: str, lora: str | None, tile: int, out_range: tuple[float, float] = (-1.0, 1.0)
) -> tuple[int | None, str]:
    """``(max DN difference, reason)`` between ONNX Runtime and torch on a probe batch on CPU; ``None`` when
    the model does not export or the ONNX graph does not run (the reason says why).

    The verdict is kept beside the cached export (``<export>.parity.json``, with the onnxruntime and torch
    versions and the output range it holds for), so later runs skip loading the torch model for the probe
    (measured with the bundled model on 2 loaded cores: engine choice 0.89 s with the probe, 0.24 s with
    the kept verdict)."""
    import json
    from importlib.metadata import version

    import onnxruntime

    from sar2opt_geo.models.onnx_export import get_cached_onnx_generator

    try:
        runner = get_cached_onnx_generator(path, "cpu", lora=lora, tile_size=tile)
    except ModelError as exc:
        from sar2opt_geo.models.cache import get_cached_generator

        # a checkpoint (or adapter) that does not load is an error, not a reason to fall back to torch
        get_cached_generator(path, "cpu", lora=lora)
        return None, f"the model does not export to ONNX ({exc})"
    verdict = runner.path.with_name(runner.path.name + ".parity.json")
    # torch's version from its package metadata: a kept verdict spares importing torch (~1.4 s) too
    key = {"onnxruntime": onnxruntime.__version__, "torch": version("torch"), "out_range": list(out_range)}
    try:
        saved = json.loads(verdict.read_text())
        if {k: saved.get(k) for k in key} == key and isinstance(saved.get("max_dn"), int):
            dn = saved["max_dn"]
            return dn, f"ONNX Runtime vs torch on a probe batch: max {dn} DN (cached)"
    except (OSError, ValueError):
        pass
    import torch

    from sar2opt_geo.models.cache import get_cached_generator

    model, _meta = get_cached_generator(path, "cpu", lora=lora)
    c = next(int(m.in_channels) for m in model.modules() if hasattr(m, "in_channels"))
    x = probe_batch(c, tile)
    try:
        y_onnx = runner(x)
    except Exception as exc:  # onnxruntime raises its own exception types
        return None, f"the ONNX graph does not run ({str(exc).splitlines()[0] if str(exc) else exc!r})"
    with torch.inference_mode():
        y_torch = model(torch.from_numpy(x)).float().numpy()
    dn = output_dn_diff(y_torch, y_onnx, out_range)
    if verdict.parent != Path(path).parent:  # only beside cached exports, never beside a user's file
        tmp = verdict.with_name(f".{verdict.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps({**key, "max_dn": dn}))
            os.replace(tmp, verdict)
        except OSError:  # a read-only cache only costs the probe next time
            tmp.unlink(missing_ok=True)
    return dn, f"ONNX Runtime vs torch on a probe batch: max {dn} DN"


def select_engine(
    path: str,
    device: str,
    backend: str | None = None,
    precision: str = PRECISION,
    tile_size: int = 256,
    lora: str | None = None,
    batch_size: int | None = None,
    out_range: tuple[float, float] = (-1.0, 1.0),
    remote: bool = False,
) -> EngineChoice:
    """Resolve ``--backend`` (``auto``/``None``, ``torch``, ``onnx``), ``--precision`` and the batch size for
    ``device``, loading the model once (so a bad checkpoint fails here). ``remote``: the workers of a remote
    cluster own the device; the client checks on CPU."""
    if backend not in (None, *BACKEND_CHOICES):
        raise UsageError(f"--backend must be one of {', '.join(BACKEND_CHOICES)} (got {backend!r})")
    auto = backend in (None, "auto")
    if is_onnx_path(path) and precision in ("fp16", "bf16"):
        raise UsageError(f"--precision {precision} runs on torch: give the .safetensors checkpoint")
    check_precision(None if auto else backend, precision, device)
    cuda = str(device).startswith("cuda")
    local = "cpu" if remote else device
    if is_onnx_path(path):
        if not auto and backend != "onnx":
            raise UsageError(
                f"{os.path.basename(path)} is an ONNX model: it runs with --backend onnx "
                "(give the .safetensors checkpoint to run it with torch)"
            )
        chosen, reason = "onnx", "an .onnx model runs on ONNX Runtime"
    elif not auto:
        chosen, reason = backend, f"--backend {backend}"
    elif precision == "int8":
        chosen, reason = "onnx", "--precision int8 runs on ONNX Runtime"
    elif cuda or precision in ("fp16", "bf16"):
        chosen, reason = "torch", "CUDA device" if cuda else f"--precision {precision} runs on torch"
    else:
        dn, why = onnx_parity(path, lora, tile_size, out_range)
        if dn is not None and dn <= 1:
            chosen, reason = "onnx", why
        else:
            chosen, reason = "torch", (why + " (over 1 DN)" if dn is not None else why)
            log.warning("--backend auto: torch, because %s", reason)
    if chosen == "torch":
        from sar2opt_geo.models.cache import get_cached_generator

        get_cached_generator(path, local, lora=lora)
    else:
        from sar2opt_geo.models.onnx_export import get_cached_onnx_generator

        runner = get_cached_onnx_generator(path, local, lora=lora, tile_size=tile_size)
        h, w = runner.input_shape[2:4]
        if isinstance(h, int) and isinstance(w, int) and (h, w) != (tile_size, tile_size):
            raise UsageError(
                f"{os.path.basename(path)} was exported for {w}x{h} tiles: translate with --tile-size {h}, "
                "or re-export it with `model export-onnx --dynamic-spatial`"
            )
    if batch_size is None:
        batch_size = 0 if (cuda and chosen == "torch") else ENGINE_BATCH_SIZE[chosen]
    log.info("engine: %s %s, batch %s (%s)", chosen, precision, batch_size or "from free memory", reason)
    return EngineChoice(chosen, int(batch_size), reason)


def batch_from_memory(free_bytes: int, per_tile_bytes: int, cap: int = 64, share: float = 0.6) -> int:
    """Tiles per forward pass that fit in ``share`` of the free device memory (1..``cap``)."""
    if per_tile_bytes <= 0:
        return cap
    return int(max(1, min(cap, (free_bytes * share) // per_tile_bytes)))


_AUTO_BATCH: dict[ModelRef, int] = {}


def _cuda_auto_batch(ref: ModelRef, model, x: np.ndarray) -> int:
    """Batch size for ``ref`` on its CUDA device, from the peak memory of one tile and the free memory."""
    import torch

    hit = _AUTO_BATCH.get(ref)
    if hit:
        return hit
    device = torch.device(ref.device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.inference_mode(), _autocast(ref):
        model(torch.from_numpy(np.ascontiguousarray(x[:1])).to(device))
    per_tile = torch.cuda.max_memory_allocated(device) - base
    free, _total = torch.cuda.mem_get_info(device)
    bs = batch_from_memory(free, per_tile)
    log.info("CUDA batch size %d (%.0f MiB per tile, %.0f MiB free)", bs, per_tile / 2**20, free / 2**20)
    _AUTO_BATCH[ref] = bs
    return bs


_CALIBRATED: dict[ModelRef, ModelRef] = {}
_CALIBRATE_LOCK = threading.Lock()


def calibrated(ref: ModelRef, tiles_fn) -> ModelRef:
    """``ref`` with its int8 graph (``--precision int8``): quantised once per process with the calibration
    tiles ``tiles_fn()`` returns (``(N, C, T, T)`` float32, drawn from the scene), cached on disk under the
    checkpoint hash, tile size and a digest of those tiles. Other precisions: ``ref`` unchanged."""
    if ref.precision != "int8" or ref.quantized or ref.backend != "onnx":
        return ref
    with _CALIBRATE_LOCK:
        hit = _CALIBRATED.get(ref)
        if hit is not None:
            return hit
        from sar2opt_geo.models.onnx_export import (
            _loads,
            cached_export_path,
            calibration_digest,
            export_cached,
            quantize_int8,
        )

        tiles = np.ascontiguousarray(tiles_fn(), dtype=np.float32)
        if not len(tiles):
            raise ModelError("--precision int8: no valid tile to calibrate the quantisation on")
        # a native checkpoint is quantised from its sub-pixel graph (every convolution in int8); an ONNX
        # file as it is (its transposed convolutions, if any, stay float)
        subpixel = not is_onnx_path(ref.path)
        src = export_cached(ref.path, ref.lora, ref.tile_size, subpixel=True) if subpixel else ref.path
        out = cached_export_path(
            ref.digest,
            None,
            ref.tile_size,
            precision="int8",
            calibration=calibration_digest(tiles),
            subpixel=subpixel,
        )
        if not (out.is_file() and _loads(out)):
            quantize_int8(src, tiles, out)
            log.info("int8 graph calibrated on %d scene tiles: %s", len(tiles), out)
        new = replace(ref, quantized=str(out))
        _CALIBRATED[ref] = new
        return new


def _autocast(ref: ModelRef):
    import contextlib

    import torch

    if ref.precision in ("fp16", "bf16"):
        dtype = torch.float16 if ref.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=torch.device(ref.device).type, dtype=dtype)
    return contextlib.nullcontext()


def _torch_model(ref: ModelRef):
    from sar2opt_geo.models.cache import get_cached_generator

    model, _meta = get_cached_generator(ref.path, ref.device, lora=ref.lora)
    if model.training:  # the cache hands out eval-mode models; never run BatchNorm/Dropout in train mode
        model.eval()
    return model


def _onnx_model(ref: ModelRef):
    from sar2opt_geo.models.onnx_export import get_cached_onnx_generator

    return get_cached_onnx_generator(
        ref.path,
        ref.device,
        lora=ref.lora,
        tile_size=ref.tile_size,
        quantized=ref.quantized,
        intra_op_num_threads=1 if _onnx_on_cpu(ref) else None,
    )


def predict(ref: ModelRef, x: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Run the generator on ``x`` ``(N, C, T, T)`` float32 in batches; returns ``(N, 3, T, T)`` float32.
    ``batch_size`` 0: from free device memory on CUDA (else the engine's default)."""
    return predict_async(ref, x, batch_size).result()


def predict_async(ref: ModelRef, x: np.ndarray, batch_size: int = 8, on_device: bool = False):
    """:func:`predict` on the forward thread, returning a future: the caller prepares the next batch or
    blends the previous one while this one runs. ``on_device`` (torch only): the result is a float32 torch
    tensor left on the model's device (for blending there) instead of a numpy array."""
    if len(x) == 0:
        done = Future()
        done.set_result(np.zeros((0, 3) + x.shape[2:], dtype=np.float32))
        return done
    if _onnx_on_cpu(ref):  # each batch on its own single-threaded pass, side by side on the cores
        bs = batch_size if batch_size > 0 else ENGINE_BATCH_SIZE["onnx"]
        if len(x) <= bs:  # one pass: in the calling thread (the pipeline's Dask threads, one per core)
            return _run_now(_predict_onnx, ref, x, bs)
        pool = _forward_pool("onnx-cpu")
        return _concatenated(
            [pool.submit(_predict_onnx, ref, x[i : i + bs], bs) for i in range(0, len(x), bs)]
        )
    if ref.backend == "onnx":
        return _forward_pool("device").submit(_predict_onnx, ref, x, batch_size)
    return _forward_pool("device").submit(_predict_torch, ref, x, batch_size, on_device)


def _predict_onnx(ref: ModelRef, x: np.ndarray, batch_size: int) -> np.ndarray:
    runner = _onnx_model(ref)
    bs = batch_size if batch_size > 0 else ENGINE_BATCH_SIZE["onnx"]
    return np.concatenate([runner(x[i : i + bs]) for i in range(0, len(x), bs)])


def _predict_torch(ref: ModelRef, x: np.ndarray, batch_size: int, on_device: bool = False):
    import torch

    model = _torch_model(ref)
    device = torch.device(ref.device)
    if batch_size <= 0:
        batch_size = _cuda_auto_batch(ref, model, x) if device.type == "cuda" else ENGINE_BATCH_SIZE["torch"]
    outs = []
    i = 0
    bs = max(1, batch_size)
    pin = device.type == "cuda"
    with torch.inference_mode(), _autocast(ref):
        while i < len(x):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + bs]))
            xb = (xb.pin_memory() if pin else xb).to(device, non_blocking=True)
            try:
                yb = model(xb)
            except torch.cuda.OutOfMemoryError:
                if bs == 1:
                    raise
                bs = max(1, bs // 2)
                _AUTO_BATCH[ref] = bs
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.warning("CUDA out of memory; batch size halved to %d", bs)
                continue
            outs.append(yb.float() if on_device else yb.float().cpu().numpy())
            i += len(xb)
    return torch.cat(outs) if on_device else np.concatenate(outs)
