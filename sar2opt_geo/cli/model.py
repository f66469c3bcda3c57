"""``model info``, ``model convert``, ``model export-onnx`` and ``model merge-lora``: model interop.

All commands follow the CLI contract: problems are :class:`~sar2opt_geo.errors.Sar2OptError` subclasses (one
line, exit 1; 2 for usage errors), an existing output needs ``--overwrite``, and outputs are written
atomically (temporary name + rename) so nothing is left at the output path when a command fails. Foreign
PyTorch checkpoints are only ever read with ``torch.load(..., weights_only=True)`` (see
:mod:`sar2opt_geo.models.convert`), so a crafted pickle is refused before any payload runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import click

from sar2opt_geo import __version__
from sar2opt_geo.cli.base import check_model_channels, cli
from sar2opt_geo.cli.options import model_path, overwrite_opt, quiet_opt
from sar2opt_geo.defaults import TILE_SIZE
from sar2opt_geo.errors import ModelError, OutputError, Sar2OptError, UsageError

_TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar")
#: Largest |ORT − torch| accepted by ``export-onnx``'s check on one random tile.
EXPORT_TOLERANCE = 1e-3


@cli.group("model")
def model_group():
    """Inspect, convert, export (ONNX) and merge (LoRA) generator checkpoints."""


# ---------------------------------------------------------------------------------------------- helpers


def _check_output(path: str, overwrite: bool, suffix: str, inputs=()) -> Path:
    """The output path, refused when it would destroy one of ``inputs`` (``(what, path)`` pairs), exists
    without ``overwrite``, has another suffix or cannot be written."""
    from sar2opt_geo.io import check_output_path
    from sar2opt_geo.safety import refuse_collisions

    refuse_collisions(path, inputs)
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise UsageError(f"{p}: the output must be a {suffix} file")
    p = check_output_path(p, overwrite)
    if p.is_dir():
        raise OutputError(f"{p}: is a directory")
    return p


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _radiometry_summary(radiometry: dict[str, Any]) -> str | None:
    """``Radiometry.describe()`` when the dict is a valid radiometry, else ``None``."""
    from sar2opt_geo.radiometry import Radiometry

    if not radiometry:
        return None
    try:
        return Radiometry.from_dict(radiometry).describe()
    except (Sar2OptError, TypeError, ValueError, IndexError):
        return None


def _parameter_count(architecture: str, arch_args: dict[str, Any]) -> int | None:
    """Parameters of the architecture, counted on the meta device (no memory, no weights read)."""
    import torch

    from sar2opt_geo.models import count_parameters, create_model

    try:
        with torch.device("meta"):
            return count_parameters(create_model(architecture, **arch_args))
    except Exception:  # unknown architecture or arguments: the info command still shows the rest
        return None


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _checkpoint_info(meta_dict: dict[str, Any]) -> dict[str, Any]:
    arch = meta_dict.get("architecture")
    return {
        "name": meta_dict.get("name"),
        "format": meta_dict.get("format"),
        "architecture": meta_dict.get("architecture"),
        "arch_args": meta_dict.get("arch_args"),
        "parameters": _parameter_count(arch, dict(meta_dict.get("arch_args") or {})) if arch else None,
        "input_bands": meta_dict.get("input_bands"),
        "radiometry": meta_dict.get("radiometry") or {},
        "radiometry_summary": _radiometry_summary(dict(meta_dict.get("radiometry") or {})),
        "preprocess": meta_dict.get("preprocess"),
        "lora": meta_dict.get("lora"),
        "provenance": meta_dict.get("provenance") or {},
    }


def describe_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """What ``model info`` prints: a native checkpoint, a LoRA adapter, an ``.onnx`` export or (read with
    ``weights_only=True``) a foreign PyTorch checkpoint."""
    from sar2opt_geo.models.checkpoint import META_KEY, checkpoint_hash
    from sar2opt_geo.models.lora import ADAPTER_META_KEY, read_adapter_metadata
    from sar2opt_geo.models.metadata import read_header_metadata

    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file not found: {p}")
    if not p.is_file():
        raise ModelError(f"model path is not a file: {p}")
    base = {"path": str(p), "size_bytes": p.stat().st_size}
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return {**base, **_onnx_info(p)}
    if suffix in _TORCH_SUFFIXES:
        return {**base, **_foreign_info(p)}
    header = read_header_metadata(p)  # one-line ModelError for pickles, truncated or corrupt files
    base["sha256_16"] = checkpoint_hash(p)
    if META_KEY in header:
        from sar2opt_geo.models.checkpoint import read_metadata

        meta = read_metadata(p)
        return {**base, "kind": "checkpoint", **_checkpoint_info(meta.to_dict())}
    if ADAPTER_META_KEY in header:
        info = read_adapter_metadata(p)
        shapes = _tensor_shapes(p)
        return {
            **base,
            "kind": "lora-adapter",
            "format": info.get("format"),
            "rank": info.get("rank"),
            "alpha": info.get("alpha"),
            "dropout": info.get("dropout"),
            "target": info.get("target"),
            "targets": info.get("targets"),
            "parameters": sum(_numel(s) for s in shapes.values()),
            "base_checkpoint_hash": info.get("base_checkpoint_hash"),
            "base_checkpoint_name": info.get("base_checkpoint_name"),
            "extra": info.get("extra") or {},
        }
    return {**base, **_foreign_info(p)}  # plain safetensors state dict


def _onnx_info(p: Path) -> dict[str, Any]:
    from sar2opt_geo.models.onnx_export import load_onnx_proto, proto_metadata

    proto = load_onnx_proto(p)
    meta = proto_metadata(proto)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    out: dict[str, Any] = {
        "kind": "onnx",
        "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": {i.name: dims(i) for i in proto.graph.input},
        "outputs": {o.name: dims(o) for o in proto.graph.output},
        "initializer_values": sum(_numel(t.dims) for t in proto.graph.initializer),
        "embedded_metadata": meta is not None,
    }
    if isinstance(meta, dict):
        info = _checkpoint_info(meta)
        info.pop("parameters", None)
        out.update(info)
    return out


def _foreign_info(p: Path) -> dict[str, Any]:
    from sar2opt_geo.models.convert import detect_format, infer_arch_args, load_foreign_state_dict

    sd = load_foreign_state_dict(p)  # weights_only: refuses code-carrying pickles
    fmt = detect_format(sd)
    args = infer_arch_args(sd, fmt)
    return {
        "kind": "foreign",
        "detected_format": fmt,
        "arch_args": args,
        "tensors": len(sd),
        "tensor_values": sum(int(v.numel()) for v in sd.values()),
        "note": "not a native checkpoint: convert it with `sar2opt-geo model convert`",
    }


def _lora_summary(lora: dict[str, Any]) -> str:
    parts = [f"rank {lora.get('rank')}", f"alpha {lora.get('alpha')}"]
    if lora.get("targets"):
        parts.append(f"{len(lora['targets'])} layers")
    if lora.get("adapter_file"):
        parts.append(f"adapter {lora['adapter_file']} ({lora.get('adapter_hash')})")
    if lora.get("base_checkpoint_hash"):
        parts.append(f"base {lora.get('base_checkpoint_name') or ''}@{lora['base_checkpoint_hash']}")
    if lora.get("merged_before"):
        parts.append("earlier adapters merged too")
    return "merged: " + ", ".join(parts)


def _print_info(d: dict[str, Any]) -> None:
    skip = {"radiometry_summary"}
    rows = []
    for k, v in d.items():
        if k in skip or v is None or v == {} or v == []:
            continue
        if k == "radiometry" and d.get("radiometry_summary"):
            v = d["radiometry_summary"]
        elif k == "lora" and isinstance(v, dict):
            v = _lora_summary(v)
        elif k == "targets" and isinstance(v, list):
            v = f"{len(v)} layers: " + ", ".join(v[:4]) + (", ..." if len(v) > 4 else "")
        elif k == "parameters" and isinstance(v, int):
            v = f"{v:,}"
        elif isinstance(v, (dict, list)):
            v = json.dumps(v, ensure_ascii=False, sort_keys=False)
        rows.append((k.replace("_", " "), v))
    if d.get("kind") in ("checkpoint", "onnx") and d.get("lora") is None:
        rows.append(("lora", "none"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")


def load_merged(ckpt: str | os.PathLike, adapter: str | os.PathLike | None):
    """``(model, meta)``: the checkpoint, with ``adapter`` applied and merged exactly when given
    (``meta.lora`` and ``meta.provenance`` then record the adapter)."""
    from sar2opt_geo.models.checkpoint import CheckpointMeta, checkpoint_hash, file_sha256, load_generator
    from sar2opt_geo.models.lora import apply_adapter, merge_lora, read_adapter_metadata

    model, meta = load_generator(ckpt, "cpu")
    if adapter is None:
        return model, meta
    info = read_adapter_metadata(adapter)
    apply_adapter(model, adapter, expected_base_hash=checkpoint_hash(ckpt))
    merge_lora(model)
    model.eval()
    lora = {
        **info,
        "adapter_file": Path(adapter).name,
        "adapter_hash": checkpoint_hash(adapter),
    }
    if meta.lora is not None:  # adapters merged earlier stay on record
        lora["merged_before"] = meta.lora
    prov = dict(meta.provenance)
    prov["lora_merged"] = {
        "adapter": Path(adapter).name,
        "adapter_sha256": file_sha256(adapter),
        "base": Path(ckpt).name,
        "base_sha256": file_sha256(ckpt),
        "created": _now(),
        "tool": f"sar2opt-geo {__version__}",
    }
    meta = CheckpointMeta.from_dict({**meta.to_dict(), "lora": lora, "provenance": prov})
    return model, meta


def _load_radiometry(spec: str | None) -> dict[str, Any] | None:
    from sar2opt_geo.models.convert import SEN12_DB_PRESET
    from sar2opt_geo.radiometry import Radiometry

    if spec is None:
        return None
    if spec.lower() in ("sen12-db", "sen12_db", "sen12"):
        return dict(SEN12_DB_PRESET)
    p = Path(spec)
    if not p.is_file():
        raise UsageError(f"--radiometry must be 'sen12-db' or a JSON file (no file {spec})")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--radiometry {p.name}: not a readable JSON file ({exc})") from None
    if not isinstance(d, dict):
        raise UsageError(f"--radiometry {p.name}: the JSON must be an object")
    try:
        Radiometry.from_dict(d)
    except (TypeError, ValueError, IndexError) as exc:
        raise UsageError(f"--radiometry {p.name}: invalid radiometry ({exc})") from None
    return d


def _parse_bands(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    bands = [b.strip() for b in spec.split(",") if b.strip()]
    if not bands:
        raise UsageError("--bands must list band names, e.g. VV or VV,VH")
    return bands


# --------------------------------------------------------------------------------------------- commands


@model_group.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def model_info(path, as_json):
    """Describe a checkpoint (.safetensors), a LoRA adapter, an .onnx export or a foreign .pth file."""
    d = describe_model_file(path)
    if as_json:
        click.echo(json.dumps(d, indent=2, ensure_ascii=False))
    else:
        _print_info(d)
    if d.get("kind") == "checkpoint" or str(path).lower().endswith(".onnx"):
        check_model_channels(path)  # shown, then one line saying what disagrees


@model_group.command("convert")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option(
    "--radiometry",
    default=None,
    help="sen12-db (the default for foreign checkpoints) or a JSON file with the radiometry dict.",
)
@click.option("--bands", default=None, help="Scene bands the model takes, e.g. VV or VV,VH (default VV).")
@click.option("--name", default=None, help="Model name (default: the source file's stem).")
@click.option(
    "--upsample-mode",
    type=click.Choice(["nearest", "bilinear"]),
    default=None,
    help="Interpolation of SAR2Optical's upsampling-decoder variant (not stored in its weights).",
)
@overwrite_opt
@quiet_opt
def model_convert(src, dst, radiometry, bands, name, upsample_mode, overwrite, quiet):
    """Convert a SAR2Optical or pytorch-CycleGAN-and-pix2pix generator (SRC) to a native checkpoint DST.

    SRC is read with PyTorch's weights-only unpickler: a checkpoint holding anything but tensors and plain
    containers is refused without running it.
    """
    from sar2opt_geo.models.convert import convert_checkpoint

    out = _check_output(dst, overwrite, ".safetensors", [("source checkpoint", src)])
    if not Path(src).is_file():
        raise ModelError(f"checkpoint not found: {src}")
    rad = _load_radiometry(radiometry)
    band_list = _parse_bands(bands)
    if name is not None and not name.strip():
        raise UsageError("--name must not be empty")
    meta = convert_checkpoint(
        src, out, radiometry=rad, bands=band_list, name=name, upsample_mode=upsample_mode
    )
    if not quiet:
        n = _parameter_count(meta.architecture, meta.arch_args)
        click.echo(
            f"wrote {out}: {meta.architecture} {json.dumps(meta.arch_args)}, {n:,} parameters, "
            f"bands {','.join(meta.input_bands)}",
            err=True,
        )


@model_group.command("export-onnx")
@click.argument("ckpt", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--lora", type=model_path, default=None, help="LoRA adapter merged into the weights before export."
)
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset version.")
@click.option("--tile-size", type=int, default=TILE_SIZE, show_default=True, help="Traced tile size.")
@click.option("--dynamic-spatial", is_flag=True, help="Also make height and width dynamic.")
@overwrite_opt
@quiet_opt
def model_export_onnx(ckpt, out, lora, opset, tile_size, dynamic_spatial, overwrite, quiet):
    """Export CKPT (with an optional LoRA adapter merged) to ONNX with a dynamic batch axis.

    The export is checked with ONNX Runtime against torch on one random tile before it is kept.
    """
    import numpy as np
    import torch

    from sar2opt_geo.models.onnx_export import OnnxGenerator, export_onnx

    dst = _check_output(out, overwrite, ".onnx", [("checkpoint", ckpt), ("LoRA adapter", lora)])
    if not 7 <= opset <= 23:
        raise UsageError(f"--opset must be between 7 and 23 (got {opset})")
    if tile_size < 256 or tile_size % 256:
        raise UsageError(f"--tile-size must be a positive multiple of 256 (got {tile_size})")
    model, meta = load_merged(ckpt, lora)
    in_ch = int(meta.arch_args.get("in_channels", 3))
    from sar2opt_geo.io import remove_path, temporary_sibling

    tmp = temporary_sibling(dst, "export")
    tmp = tmp.with_name(tmp.name + ".onnx")
    try:
        export_onnx(
            model,
            tmp,
            opset=opset,
            tile_size=tile_size,
            meta=meta,
            in_channels=in_ch,
            dynamic_spatial=dynamic_spatial,
        )
        x = np.random.default_rng(0).uniform(-1, 1, (2, in_ch, tile_size, tile_size)).astype(np.float32)
        with torch.inference_mode():
            want = model(torch.from_numpy(x)).numpy()
        got = OnnxGenerator(tmp, providers=["CPUExecutionProvider"])(x)
        diff = float(np.abs(got - want).max())
        if not diff <= EXPORT_TOLERANCE:
            raise ModelError(
                f"ONNX export of {Path(ckpt).name} does not reproduce torch: max |diff| {diff:.3g} > "
                f"{EXPORT_TOLERANCE:g}"
            )
        os.replace(tmp, dst)
    finally:
        remove_path(tmp)
    if not quiet:
        click.echo(
            f"wrote {dst}: opset {opset}, input 'sar' (batch, {in_ch}, "
            f"{'height, width' if dynamic_spatial else f'{tile_size}, {tile_size}'}), "
            f"lora {Path(lora).name if lora else 'none'}, max |ORT − torch| {diff:.2g}",
            err=True,
        )


@model_group.command("merge-lora")
@click.argument("base", type=click.Path(dir_okay=False))
@click.argument("adapter", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Model name (default: <base name>+<adapter file stem>).")
@overwrite_opt
@quiet_opt
def model_merge_lora(base, adapter, out, name, overwrite, quiet):
    """Merge the LoRA ADAPTER into BASE exactly and write the native checkpoint OUT.

    OUT's metadata records the adapter (``lora``: its configuration, file and hash; ``provenance``: the
    files merged).
    """
    from sar2opt_geo.models.checkpoint import save_checkpoint

    inputs = [("base checkpoint", base), ("LoRA adapter", adapter)]
    dst = _check_output(out, overwrite, ".safetensors", inputs)
    model, meta = load_merged(base, adapter)
    meta.name = name or f"{meta.name}+{Path(adapter).stem}"
    save_checkpoint(dst, model, meta)
    if not quiet:
        click.echo(
            f"wrote {dst}: {meta.name} (rank {meta.lora.get('rank')}, {len(meta.lora.get('targets') or [])} "
            "layers merged)",
            err=True,
        )
