"""ONNX export of generators and an onnxruntime runner.

:func:`export_onnx` traces the model in eval mode with ``torch.onnx.export`` (TorchScript-based exporter,
``dynamo=False``: it needs no ``onnxscript`` and handles these plain conv nets), with input ``sar`` and output
``optical`` of shape ``(N, C, tile, tile)`` and a dynamic batch axis (optionally dynamic height/width),
embeds the checkpoint metadata JSON in the model's ``metadata_props`` (key ``sar2opt_geo``), validates the
result with ``onnx.checker`` and writes it atomically (temporary name + ``os.replace``). Models with unmerged
LoRA layers are merged on a copy first.

:class:`OnnxGenerator` wraps an ``onnxruntime.InferenceSession`` (CUDA execution provider when available, CPU
otherwise). :func:`get_cached_onnx_generator` is the per-process cache the translation tasks use: it exports a
native checkpoint (with its LoRA adapter merged) once to a content-addressed file in the user cache directory
(:func:`cache_dir`) and keeps one runner per (checkpoint hash, adapter hash, tile size, opset, precision,
device). The file name holds every part of that key, and files are written under a unique temporary name and
renamed into place, so worker processes racing for the same export all end with the same complete file.

:func:`quantize_int8` makes the ``--precision int8`` graph: ONNX Runtime static quantisation (QDQ,
per-channel int8 weights, uint8 activations, percentile calibration) with calibration tiles the caller draws
from the scene, cached under a name that includes a digest of those tiles; native checkpoints are quantised
from a graph whose transposed convolutions are exported as sub-pixel convolutions
(:mod:`sar2opt_geo.models.subpixel`), so that every convolution runs in int8.

Hand-written parts: this glue, and :func:`cache_dir` (the XDG / platform cache conventions in a few lines,
rather than a new dependency on platformdirs).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import sys
import threading
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sar2opt_geo.errors import ModelError
from sar2opt_geo.models.checkpoint import META_KEY, CheckpointMeta

if TYPE_CHECKING:  # torch and onnx are imported where a graph is exported, inspected or quantised: running
    import onnx  # a cached export needs neither (import onnx ~1.3 s, torch ~1.4 s: bench_speed.py --startup)
    from torch import nn

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "export_onnx",
    "read_onnx_metadata",
    "OnnxGenerator",
    "get_cached_onnx_generator",
    "clear_onnx_cache",
    "cache_dir",
    "cached_export_path",
    "quantize_int8",
]

INPUT_NAME = "sar"
OUTPUT_NAME = "optical"


def _in_channels(model: nn.Module) -> int:
    from torch import nn

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
    subpixel: bool = False,
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
        subpixel: export the transposed convolutions as sub-pixel convolutions
            (:mod:`sar2opt_geo.models.subpixel`; same outputs up to float rounding), for int8 quantisation.
    """
    import onnx
    import torch

    from sar2opt_geo.models.lora import lora_modules, merge_lora

    p = Path(path)
    c = in_channels or _in_channels(model)
    was_training = model.training
    target = model
    if lora_modules(model):
        target = merge_lora(copy.deepcopy(model))
    if subpixel:
        from sar2opt_geo.models.subpixel import subpixel_rewrite

        target, _ = subpixel_rewrite(target)
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
    import onnx

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

    ``spinning`` (default off): whether ONNX Runtime's intra-op threads spin-wait between operators. Off,
    because the pipeline's own threads (reading, radiometry, blending, writing) share the cores with the
    model: measured on 2 cores under load, the bundled model on a 3072² scene took 9.2/9.6 s end to end
    without spinning against 14.4/17.4 s with it, and the model alone ran 23 tiles/s against 17.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int | None = None,
        spinning: bool = False,
    ):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"ONNX model not found: {self.path}")
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
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


#: ONNX opset of the cached exports (part of the cache key).
OPSET = 17

#: Activation ranges of the int8 graph: each tensor's calibration values cut at this percentile (half of the
#: remaining 0.01 % on each side, from a histogram) rather than at min/max, so that a few extreme activations
#: do not coarsen every other value's steps.
#: Chosen on 32 validation tiles (``scripts/bench_int8.py``, bundled model, 8 other calibration tiles): vs
#: fp32 max 28 DN (MinMax 43), against the optical truth −0.008 dB (MinMax −0.030); checked on 48 test tiles
#: of another seed (``--seed 31337 --tiles 48``): max 29 vs 33 DN, 42.87 vs 42.72 dB PSNR vs fp32, −0.021 vs
#: −0.039 dB against the truth.
CALIBRATION_PERCENTILE = 99.99

#: Node types :func:`quantize_int8` quantises.
INT8_OP_TYPES = ("Conv", "Relu", "LeakyRelu", "Concat", "Slice", "DepthToSpace")

_ONNX_CACHE: dict[tuple, OnnxGenerator] = {}
_ONNX_LOCK = threading.RLock()


def cache_dir() -> Path:
    """Where exported/quantised graphs are cached: ``$SAR2OPT_GEO_CACHE_DIR/onnx`` when set, else the user
    cache directory of the platform (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on
    macOS, ``%LOCALAPPDATA%`` on Windows) ``/sar2opt-geo/onnx``."""
    env = os.environ.get("SAR2OPT_GEO_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "onnx"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "sar2opt-geo" / "Cache" / "onnx"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "sar2opt-geo" / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or ""
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "sar2opt-geo" / "onnx"


def cached_export_path(
    ckpt_hash: str,
    lora_hash: str | None = None,
    tile_size: int | None = None,
    opset: int = OPSET,
    precision: str = "fp32",
    calibration: str | None = None,
    folder: str | os.PathLike | None = None,
    subpixel: bool = False,
) -> Path:
    """The cache file of one export:
    ``<ckpt>[+<adapter>]-t<tile|dyn>-bdyn-op<opset>[-sp]-<precision>[-c<cal>]`` (the batch axis is always
    dynamic; ``tile_size`` ``None`` means dynamic height and width; ``-sp``: transposed convolutions exported
    as sub-pixel convolutions)."""
    name = ckpt_hash + (f"+{lora_hash}" if lora_hash else "")
    name += f"-t{tile_size if tile_size else 'dyn'}-bdyn-op{opset}{'-sp' if subpixel else ''}-{precision}"
    if calibration:
        name += f"-c{calibration}"
    return Path(folder if folder is not None else cache_dir()) / f"{name}.onnx"


def _loads(path: Path) -> bool:
    """Whether a cached file is a complete ONNX graph (a stray truncated file is exported again): it parses
    as a protobuf message (a truncated one does not) holding a non-empty ``graph`` (ModelProto field 7).
    Checked with protobuf's generic parser, not ``onnx.load``, so that a run on a cached export does not
    import onnx (~1.3 s)."""
    try:
        from google.protobuf import empty_pb2
        from google.protobuf.unknown_fields import UnknownFieldSet

        msg = empty_pb2.Empty()
        msg.ParseFromString(path.read_bytes())
        return any(f.field_number == 7 and len(f.data) > 0 for f in UnknownFieldSet(msg))
    except ImportError:  # an older protobuf: the onnx package's parser
        import onnx

        try:
            return bool(onnx.load(str(path), load_external_data=False).graph.node)
        except Exception:
            return False
    except Exception:  # any decode error: not usable
        return False


def export_cached(
    path: str | os.PathLike,
    lora: str | os.PathLike | None = None,
    tile_size: int | None = None,
    opset: int = OPSET,
    folder: str | os.PathLike | None = None,
    subpixel: bool = False,
) -> Path:
    """The fp32 export of a native checkpoint (adapter merged) in the cache, exported now if missing;
    ``subpixel``: the graph with sub-pixel convolutions that the int8 graph is quantised from."""
    from sar2opt_geo.models.checkpoint import checkpoint_hash, load_generator

    p = Path(path)
    ckpt = checkpoint_hash(p)
    lora_hash = checkpoint_hash(lora) if lora is not None else None
    out = cached_export_path(ckpt, lora_hash, tile_size, opset, folder=folder, subpixel=subpixel)
    if out.is_file() and _loads(out):
        return out
    model, meta = load_generator(p, "cpu")
    if lora is not None:
        from sar2opt_geo.models.lora import apply_adapter, merge_lora

        apply_adapter(model, lora, expected_base_hash=ckpt)
        merge_lora(model)
    export_onnx(
        model,
        out,
        opset=opset,
        meta=meta,
        tile_size=tile_size or 256,
        dynamic_spatial=tile_size is None,
        subpixel=subpixel,
    )
    return out


class _TileReader:
    """Calibration batches for onnxruntime's quantiser (one tile per batch)."""

    def __init__(self, input_name: str, tiles: np.ndarray):
        self.input_name, self.tiles, self.i = input_name, tiles, 0

    def get_next(self):
        if self.i >= len(self.tiles):
            return None
        self.i += 1
        return {self.input_name: np.ascontiguousarray(self.tiles[self.i - 1 : self.i], dtype=np.float32)}

    def rewind(self):
        self.i = 0


def calibration_digest(tiles: np.ndarray) -> str:
    """Short content digest of calibration tiles (part of the int8 cache key)."""
    return hashlib.sha256(np.ascontiguousarray(tiles, dtype=np.float32).tobytes()).hexdigest()[:12]


def quantize_int8(
    fp32_path: str | os.PathLike,
    tiles: np.ndarray,
    out: str | os.PathLike,
    *,
    op_types=INT8_OP_TYPES,
    ranges: str = "percentile",
) -> Path:
    """Static int8 quantisation of an exported graph with calibration ``tiles`` ``(N, C, T, T)``; written
    atomically to ``out``. ``op_types`` and ``ranges`` (``"percentile"`` or ``"minmax"``) are there for
    ``scripts/bench_int8.py``, which measures the variants this replaced; translate uses the defaults.

    The graph is first pre-processed by onnxruntime (shape inference and graph optimisation), then quantised
    in QDQ format: per-channel int8 weights, uint8 activations with percentile ranges
    (:data:`CALIBRATION_PERCENTILE`), on the node types of
    :data:`INT8_OP_TYPES` (convolutions and the data-movement and activation nodes between them, so that
    activations stay int8 from one convolution to the next; the final Tanh stays float). A graph exported
    with ``subpixel=True`` has no transposed convolution left, so every convolution runs in int8; in another
    graph the ConvTranspose nodes stay float (ONNX Runtime has no fused int8 kernel for them: quantised, they
    cost quantise/dequantise round trips and were slower than float).

    Measured by ``scripts/bench_int8.py`` (speed: see :mod:`sar2opt_geo.models.subpixel`). Output vs fp32 on
    32 synthetic Sentinel-1 tiles (bundled model, calibrated on 8 other tiles): int8 of the plain graph (Conv
    nodes only, MinMax: the earlier int8) 46.5 dB PSNR, max 39 DN; sub-pixel graph with MinMax ranges 42.7 dB,
    max 43 DN; with the percentile ranges now used 42.7 dB, max 28 DN; against the optical truth 20.960,
    20.949 and 20.971 dB vs fp32's 20.979."""
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(fp32_path), Path(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    pre = dst.with_name(f".{dst.name}.{tag}.pre.tmp")
    tmp = dst.with_name(f".{dst.name}.{tag}.tmp")
    if ranges == "percentile":
        calibration = {
            "calibrate_method": CalibrationMethod.Percentile,
            "extra_options": {"CalibPercentile": CALIBRATION_PERCENTILE},
        }
    elif ranges == "minmax":
        calibration = {"calibrate_method": CalibrationMethod.MinMax}
    else:
        raise ValueError(f"ranges must be 'percentile' or 'minmax', got {ranges!r}")
    import onnx

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice on the root logger
    try:
        # the histogram calibrator prints its settings on stdout, which belongs to the command's own output
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(pre))
            quantize_static(
                str(pre),
                str(tmp),
                _TileReader(name, tiles),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(op_types),
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                **calibration,
            )
        os.replace(tmp, dst)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise ModelError(f"int8 quantisation failed: {first}") from exc
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
        pre.unlink(missing_ok=True)
    return dst


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
    tile_size: int | None = None,
    quantized: str | os.PathLike | None = None,
    intra_op_num_threads: int | None = None,
) -> OnnxGenerator:
    """Per-process cache of onnxruntime runners for a checkpoint (``.safetensors``) or an ``.onnx`` file.

    A native checkpoint is loaded (adapter ``lora`` applied and merged) and exported once to ``cache_dir``
    (default: :func:`cache_dir`) under a name made of the checkpoint and adapter hashes, the tile size
    (``None``: dynamic height and width), opset and precision — see :func:`export_cached` — and wrapped in an
    :class:`OnnxGenerator` on ``device`` (``cuda*``: CUDA provider when this onnxruntime has it, else CPU).
    ``quantized``: an int8 graph made by :func:`quantize_int8` to run instead. ``intra_op_num_threads``:
    threads of one pass (``None``: onnxruntime's default, every physical core).
    Thread-safe, and so is the shared runner: ONNX Runtime sessions take concurrent ``run`` calls.
    """
    from sar2opt_geo.models.checkpoint import checkpoint_hash

    p = Path(path)
    lora_hash = checkpoint_hash(lora) if lora is not None else None
    key = (
        checkpoint_hash(p),
        str(device),
        lora_hash,
        tile_size,
        str(quantized) if quantized else None,
        intra_op_num_threads,
    )
    with _ONNX_LOCK:
        hit = _ONNX_CACHE.get(key)
        if hit is not None:
            return hit
        if quantized is not None:
            onnx_path = Path(quantized)
        elif p.suffix.lower() == ".onnx":
            if lora is not None:
                raise ModelError(
                    "a LoRA adapter cannot be applied to an .onnx model; use the .safetensors checkpoint"
                )
            onnx_path = p
        else:
            onnx_path = export_cached(p, lora, tile_size, folder=cache_dir)
        runner = OnnxGenerator(
            onnx_path, providers=_providers_for(str(device)), intra_op_num_threads=intra_op_num_threads
        )
        _ONNX_CACHE[key] = runner
        return runner


def clear_onnx_cache() -> None:
    """Drop every cached onnxruntime runner."""
    with _ONNX_LOCK:
        _ONNX_CACHE.clear()
