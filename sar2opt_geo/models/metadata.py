"""Reading safetensors files safely (the header metadata and the tensors, never unpickling) and writing them
atomically with the usual file permissions.

Shared by native checkpoints (:mod:`~sar2opt_geo.models.checkpoint`), LoRA adapters
(:mod:`~sar2opt_geo.models.lora`), conversion and ``model info``, so none of them imports another for it.
Written by hand here: the sniffing that turns "this is a pickle / a truncated file" into one-line
:class:`~sar2opt_geo.errors.ModelError` messages; parsing is the ``safetensors`` library's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from sar2opt_geo.errors import ModelError

if TYPE_CHECKING:  # torch is imported only to read or write tensors (reading metadata needs none)
    import torch

__all__ = ["read_header_metadata", "read_state_dict", "write_safetensors"]


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: dict) -> Path:
    """Write ``tensors`` and the string ``metadata`` as a safetensors file at ``path``, atomically (a temp
    file in the same folder, then ``os.replace``: a failure or a kill mid-write keeps the previous file).

    The bytes come from ``safetensors.torch.save`` and are written through ``open()``, so the file gets the
    permissions of any other output (0666 minus the umask): ``safetensors.torch.save_file`` creates its file
    with mode 0600 whatever the umask, which leaves a checkpoint on a shared project folder unreadable by the
    group's Dask workers or colleagues."""
    from safetensors.torch import save

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = save(dict(tensors), metadata=metadata)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def _sniff(path: Path) -> None:
    """Raise a one-line ModelError for files that are obviously not safetensors (before parsing them)."""
    if not path.exists():
        raise ModelError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise ModelError(f"checkpoint is not a file: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"PK":
        raise ModelError(
            f"{path.name} is a PyTorch (zip/pickle) checkpoint, not a native .safetensors one; "
            "convert it with `convert_checkpoint` (it is never unpickled here)"
        )
    n = int.from_bytes(head[:8], "little")
    looks_safetensors = len(head) > 8 and head[8:9] == b"{" and 0 < n and 8 + n <= size
    # a pickle starts with PROTO (0x80) and a protocol number; a safetensors header length may also start
    # with the byte 0x80 (1 file in 32), so only a file that is not a plausible safetensors header is one
    if head[:1] == b"\x80" and not looks_safetensors:
        raise ModelError(
            f"{path.name} is a Python pickle, not a native .safetensors checkpoint; refusing to load"
        )
    if size < 10:
        raise ModelError(f"{path.name} is not a safetensors checkpoint (file too small: {size} bytes)")
    if n <= 0 or 8 + n > size:
        raise ModelError(f"{path.name} is not a valid safetensors file (corrupt or truncated header)")


def _safe_error(path: Path, exc: BaseException) -> ModelError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelError(f"{path.name} is not a readable safetensors checkpoint (corrupt or truncated?): {msg}")


def read_header_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file's header, without loading its tensors (one-line
    :class:`ModelError` for pickles, truncated or corrupt files)."""
    path = Path(path)
    _sniff(path)
    try:
        with safe_open(str(path), framework="numpy") as f:  # the header only: no torch needed
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _safe_error(path, exc) from None


def read_state_dict(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (never unpickles); errors become :class:`ModelError`."""
    from safetensors.torch import load_file

    p = Path(path)
    _sniff(p)
    try:
        return load_file(str(p), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _safe_error(p, exc) from None
