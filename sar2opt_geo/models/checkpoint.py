"""Native checkpoint format: one ``.safetensors`` file with the model description embedded in its header.

The safetensors header metadata holds one key, ``"sar2opt_geo"``, whose value is the JSON of
:class:`CheckpointMeta` (format ``sar2opt-geo/1``): architecture name and arguments (to rebuild the module
from the :mod:`~sar2opt_geo.models.registry`), the scene bands the model takes, an opaque ``radiometry``
dict and ``preprocess`` dict interpreted elsewhere, optional ``lora`` information (set when an adapter was
merged into the weights) and free-form ``provenance``.

Why safetensors: loading never unpickles (no code execution from a downloaded file), the metadata can be read
without touching the tensors, and files are memory-mappable. Written by hand here: the metadata schema, the
strict key/shape check (:class:`~sar2opt_geo.errors.CheckpointKeyError` lists every problem), atomic writes
(temporary name + ``os.replace``) and the file-hash cache. Safe reading of safetensors headers and tensors
lives in :mod:`~sar2opt_geo.models.metadata` (shared with LoRA adapters); the per-process model cache used
by worker processes in :mod:`~sar2opt_geo.models.cache`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sar2opt_geo.errors import CheckpointKeyError, ModelError
from sar2opt_geo.models.metadata import read_header_metadata, read_state_dict, write_safetensors
from sar2opt_geo.models.registry import create_model, is_model, list_models

if TYPE_CHECKING:  # reading metadata and hashing need no torch; building a model imports it
    import torch
    from torch import nn

__all__ = [
    "FORMAT",
    "META_KEY",
    "CheckpointMeta",
    "save_checkpoint",
    "read_metadata",
    "read_state_dict",
    "load_generator",
    "load_state_dict_strict",
    "checkpoint_hash",
    "file_sha256",
    "clean_state_dict",
    "count_parameters",
]

FORMAT = "sar2opt-geo/1"
META_KEY = "sar2opt_geo"
_PREFIXES = ("module.", "_orig_mod.", "gen.", "generator.")


@dataclass
class CheckpointMeta:
    """What a native checkpoint says about its model (stored as JSON under the header key ``sar2opt_geo``)."""

    name: str
    architecture: str = "unet_sar2optical"
    arch_args: dict[str, Any] = field(
        default_factory=lambda: {"in_channels": 3, "out_channels": 3, "ngf": 64}
    )
    input_bands: list[str] = field(default_factory=lambda: ["VV"])
    radiometry: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] | None = None
    lora: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"format": d.pop("format"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckpointMeta:
        if not isinstance(d, Mapping):
            raise ModelError("checkpoint metadata is not a JSON object")
        fmt = d.get("format")
        if fmt != FORMAT:
            raise ModelError(f"unsupported checkpoint format {fmt!r} (expected {FORMAT!r})")
        for key in ("name", "architecture", "arch_args"):
            if key not in d:
                raise ModelError(f"checkpoint metadata lacks the required field {key!r}")
        if not isinstance(d["arch_args"], Mapping):
            raise ModelError("checkpoint metadata field 'arch_args' must be an object")
        bands = d.get("input_bands", ["VV"])
        if not isinstance(bands, list) or not all(isinstance(b, str) for b in bands):
            raise ModelError("checkpoint metadata field 'input_bands' must be a list of band names")
        return cls(
            name=str(d["name"]),
            architecture=str(d["architecture"]),
            arch_args=dict(d["arch_args"]),
            input_bands=list(bands),
            radiometry=dict(d.get("radiometry") or {}),
            preprocess=None if d.get("preprocess") is None else dict(d["preprocess"]),
            lora=None if d.get("lora") is None else dict(d["lora"]),
            provenance=dict(d.get("provenance") or {}),
            format=fmt,
        )

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"checkpoint metadata is not valid JSON: {exc}") from None
        return cls.from_dict(d)


# ------------------------------------------------------------------------------------------ utilities


def clean_state_dict(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Strip prefixes ``module.``, ``_orig_mod.``, ``gen.``, ``generator.`` (repeatedly, timm-style)."""
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k = k[len(p) :]
                    changed = True
        out[k] = v
    return out


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _has_lora(model: nn.Module) -> bool:
    return any(hasattr(m, "lora_A") and hasattr(m, "base") for m in model.modules())


def load_state_dict_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], context: str = "") -> None:
    """Load ``sd`` into ``model`` requiring identical keys and shapes; else :class:`CheckpointKeyError`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatch = [
        f"{k} {tuple(sd[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatch:
        raise CheckpointKeyError(missing, unexpected, mismatch, context=context)
    model.load_state_dict(sd, strict=True)


_HASH_CACHE: dict[tuple[str, int, int, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def file_sha256(path: str | os.PathLike) -> str:
    """Full hex sha256 of a file.

    Cached by (absolute path, mtime, size), plus inode and ctime: mtime granularity can be coarse, and atomic
    rewrites (``os.replace``) always give a new inode.
    """
    p = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(p)
    except OSError as exc:
        raise ModelError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    key = (p, st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
    with _HASH_LOCK:
        cached = _HASH_CACHE.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = digest
    return digest


def checkpoint_hash(path: str | os.PathLike) -> str:
    """Short identity of a checkpoint file: the first 16 hex characters of its sha256."""
    return file_sha256(path)[:16]


# -------------------------------------------------------------------------------------------- reading


def read_metadata(path: str | os.PathLike) -> CheckpointMeta:
    """Read a native checkpoint's metadata without loading its tensors."""
    p = Path(path)
    md = read_header_metadata(p)
    if META_KEY not in md:
        raise ModelError(
            f"{p.name} is a safetensors file without sar2opt-geo metadata (not a native checkpoint); "
            "convert it with `convert_checkpoint`"
        )
    return CheckpointMeta.from_json(md[META_KEY])


def load_generator(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, CheckpointMeta]:
    """Build the checkpoint's architecture, load its weights strictly, move to ``device``, set eval mode."""
    p = Path(path)
    meta = read_metadata(p)
    if not is_model(meta.architecture):
        raise ModelError(
            f"{p.name}: unknown architecture {meta.architecture!r}; valid names: {', '.join(list_models())}"
        )
    model = create_model(meta.architecture, **meta.arch_args)
    sd = read_state_dict(p)
    load_state_dict_strict(model, sd, context=p.name)
    model.to(device)
    model.eval()
    return model, meta


# -------------------------------------------------------------------------------------------- writing


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write ``model``'s state dict and ``meta`` to a native checkpoint, atomically.

    Tensors are stored contiguous on CPU; BatchNorm ``num_batches_tracked`` is kept. A model with injected
    (unmerged) LoRA layers is refused: call :func:`sar2opt_geo.models.lora.merge_lora` first, or save only
    the adapter with :func:`~sar2opt_geo.models.lora.save_adapter`.
    """
    p = Path(path)
    if _has_lora(model):
        raise ModelError("model has unmerged LoRA layers; merge_lora() it or save_adapter() the adapter")
    if not is_model(meta.architecture):
        raise ModelError(
            f"unknown architecture {meta.architecture!r}; valid names: {', '.join(list_models())}"
        )
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return write_safetensors(p, tensors, {META_KEY: meta.to_json()})
