"""Per-process cache of loaded generators (weights read once per worker process, adapter merged).

Kept apart from :mod:`~sar2opt_geo.models.checkpoint` and :mod:`~sar2opt_geo.models.lora` because it uses
both (a checkpoint plus an optional adapter merged into it): neither of those imports the other.
"""

from __future__ import annotations

import os
import threading

import torch
from torch import nn

from sar2opt_geo.models import checkpoint
from sar2opt_geo.models.checkpoint import CheckpointMeta, checkpoint_hash
from sar2opt_geo.models.lora import apply_adapter, merge_lora, read_adapter_metadata

__all__ = ["get_cached_generator", "clear_model_cache"]

_MODEL_CACHE: dict[tuple[str, str, str | None], tuple[nn.Module, CheckpointMeta]] = {}
_MODEL_LOCK = threading.RLock()


def _device_key(device: str | torch.device) -> str:
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return str(d)


def get_cached_generator(
    path: str | os.PathLike, device: str | torch.device = "cpu", lora: str | os.PathLike | None = None
) -> tuple[nn.Module, CheckpointMeta]:
    """Per-process cache of loaded generators, keyed by (checkpoint hash, device, adapter hash).

    Worker processes call this for every task; the weights are read once per process. With ``lora`` (an
    adapter file) the adapter is applied and merged exactly into the weights, and the returned ``meta.lora``
    describes it. The returned model is shared and in eval mode: callers must not modify or train it.
    Thread-safe (loading happens under a lock, so concurrent first calls load once).
    """
    key = (checkpoint_hash(path), _device_key(device), checkpoint_hash(lora) if lora is not None else None)
    with _MODEL_LOCK:
        hit = _MODEL_CACHE.get(key)
        if hit is not None:
            return hit
        model, meta = checkpoint.load_generator(path, device="cpu")
        if lora is not None:
            apply_adapter(model, lora, expected_base_hash=key[0])
            merge_lora(model)
            info = read_adapter_metadata(lora)
            meta = CheckpointMeta.from_dict({**meta.to_dict(), "lora": {**info, "adapter_hash": key[2]}})
        model.to(device).eval()
        _MODEL_CACHE[key] = (model, meta)
        return model, meta


def clear_model_cache() -> None:
    """Drop every cached model (e.g. between tests or to release GPU memory)."""
    with _MODEL_LOCK:
        _MODEL_CACHE.clear()
