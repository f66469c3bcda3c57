"""Convert foreign generator checkpoints (SAR2Optical, pytorch-CycleGAN-and-pix2pix) to the native format.

Supported inputs:

* **SAR2Optical** generators (architectures ``unet_sar2optical`` / ``unet_sar2optical_upsample``): plain state
  dicts with keys ``encoder.enc1.conv_block.0.weight`` … ``head.0.bias``, optionally prefixed (``gen.``,
  ``_orig_mod.``, ``module.``, ``generator.``) and/or wrapped as ``{"state_dict": ...}``,
  ``{"gen_state_dict": ...}``, ``{"generator": ...}`` (and a few other common wrapper keys);
* **pytorch-CycleGAN-and-pix2pix** ``unet_256`` generators (``latest_net_G.pth``; architecture
  ``pix2pix_unet256``), keys ``model.model.0.weight``, ``model.model.1.model.1.weight`` …;
* plain or native ``.safetensors`` files holding one of the above.

``.pth``/``.pt``/``.ckpt``/``.bin`` files are read **only** with ``torch.load(path, map_location="cpu",
weights_only=True)``: PyTorch's restricted unpickler refuses any object that is not a tensor or a plain
container, so a crafted pickle whose ``__reduce__`` would run code is rejected (:class:`ModelError`) before
the payload executes. Channel counts and ``ngf`` are inferred from weight shapes; the weights are loaded
strictly (:class:`~sar2opt_geo.errors.CheckpointKeyError` lists missing/unexpected/mis-shaped keys)
and written with :func:`~sar2opt_geo.models.checkpoint.save_checkpoint`, provenance recording the source
file name and sha256.

Written by hand: format detection, argument inference and unwrapping — small, format-specific code.
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sar2opt_geo import __version__
from sar2opt_geo.errors import ModelError
from sar2opt_geo.models.checkpoint import (
    META_KEY,
    CheckpointMeta,
    clean_state_dict,
    file_sha256,
    load_state_dict_strict,
    read_state_dict,
    save_checkpoint,
)
from sar2opt_geo.models.metadata import read_header_metadata
from sar2opt_geo.models.registry import create_model

__all__ = [
    "SEN12_DB_PRESET",
    "FORMATS",
    "load_foreign_state_dict",
    "unwrap_state_dict",
    "detect_format",
    "infer_arch_args",
    "convert_state_dict",
    "convert_checkpoint",
]

#: Radiometry of the SAR2Optical / pix2pix SEN1-2 models (interpreted by another module; stored verbatim).
SEN12_DB_PRESET = {
    "scale": "db",
    "clip": [-25.0, 0.0],
    "out_range": [-1.0, 1.0],
    "replicate_to": 3,
    "description": (
        "linear σ⁰ → dB, clip [−25, 0] → 0..255 → [−1, 1], one band replicated to 3 channels "
        "(SEN1-2 preparation)"
    ),
}

#: Values :func:`detect_format` can return.
FORMATS = ("unet_sar2optical", "unet_sar2optical_upsample", "pix2pix_unet256", "patchgan70")

_WRAPPER_KEYS = (
    "state_dict",
    "gen_state_dict",
    "generator",
    "generator_state_dict",
    "netG",
    "G",
    "gen",
    "model_state_dict",
    "model",
    "params",
    "ema",
)
_TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar")


def _is_tensor_dict(d: Any) -> bool:
    return isinstance(d, Mapping) and bool(d) and all(torch.is_tensor(v) for v in d.values())


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Find the generator's tensor dict inside a loaded checkpoint object (several wrapper keys tried)."""
    if _is_tensor_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                try:
                    return unwrap_state_dict(inner)
                except ModelError:
                    continue
        # dicts mixing tensors and small metadata (e.g. epoch counters): keep the tensors
        tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
        if len(tensors) >= 4:
            return tensors
    raise ModelError(
        "no generator state dict found in the checkpoint (expected a tensor dict, or one under "
        f"{', '.join(repr(k) for k in _WRAPPER_KEYS[:4])}, ...)"
    )


def _unpickling_reason(exc: BaseException) -> str:
    """The informative line of torch's weights-only refusal (e.g. 'unsupported GLOBAL posix.system ...')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        low = ln.lower()
        if ("unsupported" in low or "global" in low) and "weights_only" not in low:
            return ln.rstrip(".")[:200]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def load_foreign_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt`` (``weights_only`` load) or ``.safetensors`` file; unwrapped, cleaned."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint not found: {p}")
    if p.suffix.lower() == ".safetensors":
        sd = read_state_dict(p)
    elif p.suffix.lower() in _TORCH_SUFFIXES:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ModelError(
                f"{p.name} refused: it holds objects other than tensors and plain containers "
                f"({_unpickling_reason(exc)}); it was not unpickled"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{p.name} is not a readable PyTorch checkpoint: {first[:200]}") from None
        sd = unwrap_state_dict(obj)
    else:
        raise ModelError(
            f"{p.name}: unsupported checkpoint type (expected .pth, .pt, .ckpt, .bin or .safetensors)"
        )
    return clean_state_dict(sd)


def detect_format(state_dict: Mapping[str, Any]) -> str:
    """Architecture a state dict belongs to: one of :data:`FORMATS`, else :class:`ModelError`."""
    sd = clean_state_dict(state_dict)
    if "encoder.enc1.conv_block.0.weight" in sd and "head.0.weight" in sd:
        if "decoder.dec1.conv_block.0.1.weight" in sd:
            return "unet_sar2optical_upsample"
        if "decoder.dec1.conv_block.0.weight" in sd:
            return "unet_sar2optical"
    if "model.model.0.conv_block.0.weight" in sd and "model.model.4.weight" in sd:
        return "patchgan70"
    if "model.model.0.weight" in sd and "model.model.1.model.1.weight" in sd:
        depth = max(k.count("model.") for k in sd)  # outermost "model.model." counts 2, each level adds 1
        levels = depth - 1
        if levels != 8:
            raise ModelError(
                f"pytorch-CycleGAN-and-pix2pix U-Net with {levels} levels is not supported "
                "(only unet_256, 8 levels)"
            )
        return "pix2pix_unet256"
    sample = ", ".join(list(sd)[:5])
    raise ModelError(
        f"unrecognised checkpoint layout (first keys: {sample}); supported: {', '.join(FORMATS)}"
    )


def infer_arch_args(state_dict: Mapping[str, torch.Tensor], fmt: str) -> dict[str, Any]:
    """Constructor arguments (channels, widths, norm) read off the weight shapes."""
    sd = clean_state_dict(state_dict)
    try:
        if fmt in ("unet_sar2optical", "unet_sar2optical_upsample"):
            w = sd["encoder.enc1.conv_block.0.weight"]
            return {
                "in_channels": int(w.shape[1]),
                "out_channels": int(sd["head.0.weight"].shape[0]),
                "ngf": int(w.shape[0]),
            }
        if fmt == "pix2pix_unet256":
            w = sd["model.model.0.weight"]
            up = sd["model.model.3.weight"]  # outermost ConvTranspose2d, (2·ngf, output_nc, 4, 4)
            norm = "batch" if "model.model.1.model.2.running_mean" in sd else "instance"
            return {
                "in_channels": int(w.shape[1]),
                "out_channels": int(up.shape[1]),
                "ngf": int(w.shape[0]),
                "norm": norm,
            }
        if fmt == "patchgan70":
            w = sd["model.model.0.conv_block.0.weight"]
            return {"in_channels": int(w.shape[1]), "ndf": int(w.shape[0])}
    except KeyError as exc:
        raise ModelError(f"cannot infer the {fmt} architecture: key {exc} is missing") from None
    raise ModelError(f"unknown format {fmt!r}; supported: {', '.join(FORMATS)}")


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], upsample_mode: str | None = None, context: str = ""
) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """Build the detected architecture, load ``state_dict`` strictly: ``(model, fmt, arch_args)``."""
    sd = clean_state_dict(state_dict)
    fmt = detect_format(sd)
    args = infer_arch_args(sd, fmt)
    if fmt == "unet_sar2optical_upsample":  # not stored in the weights: always record it explicitly
        args["upsample_mode"] = upsample_mode or "nearest"
    model = create_model(fmt, **args)
    load_state_dict_strict(model, sd, context=context)
    model.eval()
    return model, fmt, args


def _default_bands(in_channels: int) -> list[str]:
    """Scene bands a foreign model takes by default: VV (replicated when it has 3 input channels), VV+VH for
    2 channels, else numbered bands."""
    if in_channels in (1, 3):
        return ["VV"]
    if in_channels == 2:
        return ["VV", "VH"]
    return [f"band{i + 1}" for i in range(in_channels)]


def channel_handling(radiometry: Mapping[str, Any], in_channels: int, n_bands: int) -> dict[str, Any]:
    """The radiometry with its channel handling derived from the weights: one band is replicated to the
    model's input channels only when it has more than one (a 1-channel model gets no replication); as many
    bands as channels need none."""
    rad = dict(radiometry)
    replicate = in_channels if (n_bands == 1 and in_channels > 1) else None
    if rad.get("replicate_to") != replicate:
        rad["replicate_to"] = replicate
        if rad.get("description") == SEN12_DB_PRESET["description"]:
            rad["description"] = "linear σ⁰ → dB, clip [−25, 0] → 0..255 → [−1, 1]" + (
                f", one band replicated to {replicate} channels" if replicate else ""
            )
    if rad.get("replicate_to") is None:
        rad.pop("replicate_to", None)
    return rad


def convert_checkpoint(
    src_path: str | os.PathLike,
    dst_path: str | os.PathLike,
    radiometry: Mapping[str, Any] | None = None,
    bands: list[str] | tuple[str, ...] | None = None,
    name: str | None = None,
    *,
    preprocess: Mapping[str, Any] | None = None,
    upsample_mode: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> CheckpointMeta:
    """Convert a foreign (or native) generator checkpoint into a native ``.safetensors`` checkpoint.

    Args:
        src_path: ``.pth``/``.pt``/``.ckpt``/``.bin`` (read with ``weights_only=True`` only) or
            ``.safetensors``.
        dst_path: output ``.safetensors`` path (written atomically).
        radiometry: stored verbatim; defaults to :data:`SEN12_DB_PRESET` (or the source's, for native input).
        bands: scene band names the model takes (default ``["VV"]``, or the source's for native input).
        name: model name (default: the source file's stem, or the source's for native input).
        preprocess: opaque preprocessing dict stored verbatim (default ``None``).
        upsample_mode: interpolation of the upsampling-decoder variant (not stored in SAR2Optical weights;
            default ``"nearest"`` as in SAR2Optical).
        provenance: extra provenance entries merged into the generated ones.

    Returns the written :class:`CheckpointMeta`. Discriminator checkpoints are refused (:class:`ModelError`).
    """
    src = Path(src_path)
    native: CheckpointMeta | None = None
    if src.suffix.lower() == ".safetensors" and src.is_file():
        header = read_header_metadata(src)
        if META_KEY in header:
            native = CheckpointMeta.from_json(header[META_KEY])
    sd = load_foreign_state_dict(src)
    fmt = detect_format(sd)
    if fmt == "patchgan70":
        raise ModelError(f"{src.name} is a PatchGAN discriminator, not a generator")
    if native is not None and native.architecture == "unet_sar2optical_upsample" and upsample_mode is None:
        upsample_mode = native.arch_args.get("upsample_mode")
    model, fmt, args = convert_state_dict(sd, upsample_mode=upsample_mode, context=src.name)

    prov: dict[str, Any] = dict(native.provenance) if native is not None else {}
    prov.update(
        {
            "source": prov.get("source", src.name),
            "source_format": "sar2opt-geo" if native is not None else fmt,
            "converted_from": {"file": src.name, "sha256": file_sha256(src)},
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "tool": f"sar2opt-geo {__version__}",
        }
    )
    prov.update(dict(provenance or {}))
    if radiometry is None:
        radiometry = native.radiometry if native is not None else SEN12_DB_PRESET
    if bands is None:
        bands = native.input_bands if native is not None else _default_bands(int(args.get("in_channels", 3)))
    if native is None:  # foreign weights: the channel handling follows them (a native file keeps its own)
        radiometry = channel_handling(radiometry, int(args.get("in_channels", 3)), len(bands))
    if name is None:
        name = native.name if native is not None else src.stem
    if preprocess is None and native is not None:
        preprocess = native.preprocess
    meta = CheckpointMeta(
        name=name,
        architecture=fmt,
        arch_args=args,
        input_bands=list(bands),
        radiometry=dict(radiometry),
        preprocess=None if preprocess is None else dict(preprocess),
        lora=native.lora if native is not None else None,
        provenance=prov,
    )
    save_checkpoint(dst_path, model, meta)
    return meta
