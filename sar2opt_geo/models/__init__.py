"""Generators, discriminator, native checkpoints, conversion, LoRA and ONNX export.

This package knows nothing about rasters: models take ``(N, C, H, W)`` float tensors in [-1, 1] and return
the same. Architectures are looked up by name in :mod:`~sar2opt_geo.models.registry`; weights live in native
``.safetensors`` checkpoints (:mod:`~sar2opt_geo.models.checkpoint`) whose embedded metadata tells other
modules which bands and radiometry the model expects. ``onnx_export`` names are imported lazily (onnx is
heavy to import).
"""

from sar2opt_geo.models.cache import clear_model_cache, get_cached_generator
from sar2opt_geo.models.checkpoint import (
    CheckpointMeta,
    checkpoint_hash,
    clean_state_dict,
    count_parameters,
    load_generator,
    read_metadata,
    save_checkpoint,
)
from sar2opt_geo.models.convert import SEN12_DB_PRESET, convert_checkpoint, detect_format
from sar2opt_geo.models.lora import (
    LoRAConfig,
    LoRAConv2d,
    LoRAConvTranspose2d,
    apply_adapter,
    freeze_batchnorm,
    inject_lora,
    load_adapter,
    lora_state_dict,
    merge_lora,
    save_adapter,
    trainable_fraction,
)
from sar2opt_geo.models.patchgan import PatchGAN
from sar2opt_geo.models.pix2pix_unet256 import Pix2PixUnet256
from sar2opt_geo.models.registry import create_model, list_models, register_model
from sar2opt_geo.models.unet import UnetGenerator, UnetGeneratorUpsample

__all__ = [
    "CheckpointMeta",
    "LoRAConfig",
    "LoRAConv2d",
    "LoRAConvTranspose2d",
    "OnnxGenerator",
    "PatchGAN",
    "Pix2PixUnet256",
    "SEN12_DB_PRESET",
    "UnetGenerator",
    "UnetGeneratorUpsample",
    "apply_adapter",
    "checkpoint_hash",
    "clean_state_dict",
    "clear_model_cache",
    "convert_checkpoint",
    "count_parameters",
    "create_model",
    "detect_format",
    "export_onnx",
    "freeze_batchnorm",
    "get_cached_generator",
    "inject_lora",
    "list_models",
    "load_adapter",
    "load_generator",
    "lora_state_dict",
    "merge_lora",
    "read_metadata",
    "register_model",
    "save_adapter",
    "save_checkpoint",
    "trainable_fraction",
]


def __getattr__(name):
    if name in ("export_onnx", "OnnxGenerator"):
        from sar2opt_geo.models import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
