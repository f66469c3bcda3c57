"""Running a generator on batches of tiles (torch on CPU/GPU, or ONNX Runtime), once per worker process.

Tasks never carry weights: they carry a small :class:`ModelRef` (path + content hash + device + backend), and
the weights are loaded once per process through the models package's per-process cache and reused by every
task that process runs. The generator always runs in eval mode under ``torch.inference_mode``. On CUDA
out-of-memory the batch is halved and retried. Forward passes inside one process run one at a time on a
single dedicated thread: on CPU one pass already uses every core, concurrent passes would only oversubscribe
them, and one calling thread means one OpenMP thread team (teams of several calling threads spin against
each other).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from sar2opt_geo.defaults import BACKENDS
from sar2opt_geo.errors import UsageError

log = logging.getLogger(__name__)

_FORWARD_LOCK = threading.Lock()
_FORWARD_THREAD: ThreadPoolExecutor | None = None


def _forward_thread() -> ThreadPoolExecutor:
    global _FORWARD_THREAD
    with _FORWARD_LOCK:
        if _FORWARD_THREAD is None:
            _FORWARD_THREAD = ThreadPoolExecutor(1, thread_name_prefix="sar2opt-forward")
        return _FORWARD_THREAD


@dataclass(frozen=True)
class ModelRef:
    """A picklable reference to a generator: where its weights are and how to run them."""

    path: str
    digest: str
    device: str = "cpu"
    backend: str = "torch"
    lora: str | None = None

    @property
    def label(self) -> str:
        return f"{os.path.basename(self.path)}@{self.digest}"


def resolve_device(device: str, executor=None) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is a usage error.

    On a remote cluster (``--scheduler``) the workers' GPUs count, not the client's: ``auto`` means cuda when
    some worker advertises a ``GPU`` resource, and ``cuda`` is accepted only then."""
    import torch

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
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA GPU is visible to torch")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda[:N] (got {device!r})")
    return device


def make_model_ref(
    path: str, device: str = "cpu", backend: str = "torch", lora: str | None = None
) -> ModelRef:
    from sar2opt_geo.models.checkpoint import checkpoint_hash

    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    digest = checkpoint_hash(path)
    if lora:
        digest = f"{digest}+{checkpoint_hash(lora)}"
    return ModelRef(path=str(path), digest=digest, device=device, backend=backend, lora=lora)


def _torch_model(ref: ModelRef):
    from sar2opt_geo.models.cache import get_cached_generator

    model, _meta = get_cached_generator(ref.path, ref.device, lora=ref.lora)
    if model.training:  # the cache hands out eval-mode models; never run BatchNorm/Dropout in train mode
        model.eval()
    return model


def _onnx_model(ref: ModelRef):
    from sar2opt_geo.models.onnx_export import get_cached_onnx_generator

    return get_cached_onnx_generator(ref.path, ref.device, lora=ref.lora)


def predict(ref: ModelRef, x: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Run the generator on ``x`` ``(N, C, T, T)`` float32 in batches; returns ``(N, 3, T, T)`` float32."""
    return predict_async(ref, x, batch_size).result()


def predict_async(ref: ModelRef, x: np.ndarray, batch_size: int = 8):
    """:func:`predict` on the forward thread, returning a future: the caller prepares the next batch or
    blends the previous one while this one runs."""
    if len(x) == 0:
        done = Future()
        done.set_result(np.zeros((0, 3) + x.shape[2:], dtype=np.float32))
        return done
    if ref.backend == "onnx":
        return _forward_thread().submit(_predict_onnx, ref, x, batch_size)
    return _forward_thread().submit(_predict_torch, ref, x, batch_size)


def _predict_onnx(ref: ModelRef, x: np.ndarray, batch_size: int) -> np.ndarray:
    runner = _onnx_model(ref)
    return np.concatenate([runner(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _predict_torch(ref: ModelRef, x: np.ndarray, batch_size: int) -> np.ndarray:
    import torch

    model = _torch_model(ref)
    device = torch.device(ref.device)
    outs = []
    i = 0
    bs = max(1, batch_size)
    with torch.inference_mode():
        while i < len(x):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + bs])).to(device, non_blocking=True)
            try:
                yb = model(xb)
            except torch.cuda.OutOfMemoryError:
                if bs == 1:
                    raise
                bs = max(1, bs // 2)
                torch.cuda.empty_cache()
                log.warning("CUDA out of memory; batch size halved to %d", bs)
                continue
            outs.append(yb.float().cpu().numpy())
            i += len(xb)
    return np.concatenate(outs)
