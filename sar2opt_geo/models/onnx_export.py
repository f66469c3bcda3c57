"""ONNX export of generators and an onnxruntime runner.

:func:`export_onnx` traces the model in eval mode with ``torch.onnx.export`` (TorchScript-based exporter,
``dynamo=False``: it needs no ``onnxscript`` and handles these plain conv nets), with input ``sar`` and output
``optical`` of shape ``(N, C, tile, tile)`` and a dynamic batch axis (optionally dynamic height/width),
embeds the checkpoint metadata JSON in the model's ``metadata_props`` (key ``sar2opt_geo``), validates the
result with ``onnx.checker`` and writes it atomically (temporary name + ``os.replace``). Models with unmerged
LoRA layers are merged on a copy first.

:class:`OnnxGenerator` wraps an ``onnxruntime.InferenceSession`` (CUDA execution provider when available, CPU
otherwise). :func:`get_cached_onnx_generator` is the per-process cache the translation tasks use: it exports a
native checkpoint (with its LoRA adapter merged) once to a content-addressed file in the temporary directory
and keeps one runner per (checkpoint hash, device, adapter hash). Hand-written parts: only this glue.
"""

from __future__ import annotations

import copy
import io
import json
import os
import tempfile
import threading
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from sar2opt_geo.errors import ModelError
from sar2opt_geo.models.checkpoint import META_KEY, CheckpointMeta

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "export_onnx",
    "read_onnx_metadata",
    "OnnxGenerator",
    "get_cached_onnx_generator",
    "clear_onnx_cache",
]

INPUT_NAME = "sar"
OUTPUT_NAME = "optical"


def _in_channels(model: nn.Module) -> int:
    c = getattr(model, "in_channels", None)
    if isinstance(c, int):
        return c
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return int(m.in_channels)
    raise ModelError("cannot determine the model's input channels; pass in_channels=")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    opset: int = 17,
    tile_size: int = 256,
    meta: CheckpointMeta | Mapping[str, Any] | None = None,
    in_channels: int | None = None,
    dynamic_spatial: bool = False,
) -> Path:
    """Export ``model`` to ONNX at ``path`` (input ``sar`` → output ``optical``, dynamic batch axis).

    Args:
        model: a generator (left unchanged: it is put back in its previous train/eval mode).
        path: output ``.onnx`` file, written atomically.
        opset: ONNX opset version.
        tile_size: spatial size of the traced input (multiple of 256 for the U-Nets); fixed in the graph.
        meta: checkpoint metadata embedded as JSON under ``metadata_props["sar2opt_geo"]``.
        in_channels: input channels (inferred from the model when omitted).
        dynamic_spatial: also make height and width dynamic (any multiple of 256 then runs).
    """
    from sar2opt_geo.models.lora import lora_modules, merge_lora

    p = Path(path)
    c = in_channels or _in_channels(model)
    was_training = model.training
    target = model
    if lora_modules(model):
        target = merge_lora(copy.deepcopy(model))
    device = next((t.device for t in target.parameters()), torch.device("cpu"))
    dummy = torch.zeros(1, c, tile_size, tile_size, device=device)
    buf = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_spatial else {0: "batch"}
    target.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                target,
                (dummy,),
                buf,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # exporter failures are reported as model errors, with their cause
        raise ModelError(
            f"ONNX export failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buf.getvalue())
    if meta is not None:
        text = (
            meta.to_json() if isinstance(meta, CheckpointMeta) else json.dumps(dict(meta), ensure_ascii=False)
        )
        onnx.helper.set_model_props(proto, {META_KEY: text})
    onnx.checker.check_model(proto)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        onnx.save(proto, str(tmp))
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def load_onnx_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """The ONNX graph of ``path`` (external data not loaded); one-line :class:`ModelError` when it is missing,
    not a file or not a readable ONNX model."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ONNX model not found: {p}" if not p.exists() else f"ONNX model is not a file: {p}")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have several types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{p.name} is not a readable ONNX model: {first[:200]}") from None
    if not proto.graph.node:
        raise ModelError(f"{p.name} is not a readable ONNX model (empty graph)")
    return proto


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """The embedded checkpoint metadata (dict) of an exported model, or ``None`` (absent or not JSON)."""
    return proto_metadata(load_onnx_proto(path))


def proto_metadata(proto: onnx.ModelProto) -> dict[str, Any] | None:
    """The checkpoint metadata (dict) embedded in a loaded ONNX graph, or ``None``."""
    for prop in proto.metadata_props:
        if prop.key == META_KEY:
            try:
                return json.loads(prop.value)
            except json.JSONDecodeError:
                return None
    return None


def read_onnx_checkpoint_meta(path: str | os.PathLike) -> CheckpointMeta:
    """The :class:`CheckpointMeta` embedded by :func:`export_onnx` (radiometry, bands, architecture), which
    ``translate --model X.onnx`` needs; :class:`ModelError` for an ONNX file exported elsewhere."""
    d = read_onnx_metadata(path)
    if not isinstance(d, dict):
        raise ModelError(
            f"{Path(path).name} has no sar2opt-geo metadata (radiometry, bands); export it with "
            "`sar2opt-geo model export-onnx CKPT OUT.onnx`"
        )
    try:
        return CheckpointMeta.from_dict(d)
    except ModelError as exc:
        raise ModelError(f"{Path(path).name}: {exc}") from None


class OnnxGenerator:
    """Run an exported generator with onnxruntime: ``gen(x: float32 (N, C, H, W)) -> (N, C_out, H, W)``.

    ``providers`` defaults to ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` when CUDA is available
    in this onnxruntime build, else ``["CPUExecutionProvider"]``. ``meta`` is the embedded checkpoint
    metadata (dict) or ``None``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int | None = None,
    ):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"ONNX model not found: {self.path}")
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        opts = ort.SessionOptions()
        if intra_op_num_threads:
            opts.intra_op_num_threads = int(intra_op_num_threads)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load ONNX model {self.path.name}: {str(exc).splitlines()[0]}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(inp.shape)
        self.output_name = self.session.get_outputs()[0].name
        custom = self.session.get_modelmeta().custom_metadata_map
        self.meta: dict[str, Any] | None = json.loads(custom[META_KEY]) if META_KEY in custom else None

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"expected an (N, C, H, W) array, got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]


_ONNX_CACHE: dict[tuple[str, str, str | None], OnnxGenerator] = {}
_ONNX_LOCK = threading.RLock()


def _providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def get_cached_onnx_generator(
    path: str | os.PathLike,
    device: str = "cpu",
    lora: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> OnnxGenerator:
    """Per-process cache of onnxruntime runners for a checkpoint (``.safetensors``) or an ``.onnx`` file.

    A native checkpoint is loaded (adapter ``lora`` applied and merged), exported once with dynamic batch,
    height and width to ``cache_dir`` (default: ``<tempdir>/sar2opt_geo_onnx``) under a name made of the
    checkpoint and adapter hashes (written atomically, so concurrent processes are safe), and wrapped in an
    :class:`OnnxGenerator` on ``device`` (``cuda*``: CUDA provider when this onnxruntime has it, else CPU).
    Thread-safe; the runner is shared, so callers serialise ``__call__`` if they need to.
    """
    from sar2opt_geo.models.checkpoint import checkpoint_hash, load_generator

    p = Path(path)
    lora_hash = checkpoint_hash(lora) if lora is not None else None
    key = (checkpoint_hash(p), str(device), lora_hash)
    with _ONNX_LOCK:
        hit = _ONNX_CACHE.get(key)
        if hit is not None:
            return hit
        if p.suffix.lower() == ".onnx":
            if lora is not None:
                raise ModelError(
                    "a LoRA adapter cannot be applied to an .onnx model; use the .safetensors checkpoint"
                )
            onnx_path = p
        else:
            folder = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "sar2opt_geo_onnx"
            onnx_path = folder / (key[0] + (f"+{lora_hash}" if lora_hash else "") + ".onnx")
            if not onnx_path.is_file():
                model, meta = load_generator(p, "cpu")
                if lora is not None:
                    from sar2opt_geo.models.lora import apply_adapter, merge_lora

                    apply_adapter(model, lora, expected_base_hash=key[0])
                    merge_lora(model)
                export_onnx(model, onnx_path, meta=meta, dynamic_spatial=True)
                del model
        runner = OnnxGenerator(onnx_path, providers=_providers_for(str(device)))
        _ONNX_CACHE[key] = runner
        return runner


def clear_onnx_cache() -> None:
    """Drop every cached onnxruntime runner."""
    with _ONNX_LOCK:
        _ONNX_CACHE.clear()
