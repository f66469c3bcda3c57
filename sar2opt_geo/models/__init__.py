"""Generators, discriminator, native checkpoints, conversion, LoRA and ONNX export.

This package knows nothing about rasters: models take ``(N, C, H, W)`` float tensors in [-1, 1] and return
the same. Architectures are looked up by name in :mod:`~sar2opt_geo.models.registry`; weights live in native
``.safetensors`` checkpoints (:mod:`~sar2opt_geo.models.checkpoint`) whose embedded metadata tells other
modules which bands and radiometry the model expects. Every name is imported lazily (torch and onnx take
seconds to import; see ``_SOURCES``).
"""

import importlib

#: Where each public name lives. Imported on first use (PEP 562): reading a checkpoint's metadata or hash
#: imports neither torch nor onnx, so a translate run on a cached ONNX export loads neither (issue #15).
_SOURCES = {
    "clear_model_cache": "cache",
    "get_cached_generator": "cache",
    "CheckpointMeta": "checkpoint",
    "checkpoint_hash": "checkpoint",
    "clean_state_dict": "checkpoint",
    "count_parameters": "checkpoint",
    "load_generator": "checkpoint",
    "read_metadata": "checkpoint",
    "save_checkpoint": "checkpoint",
    "SEN12_DB_PRESET": "convert",
    "convert_checkpoint": "convert",
    "detect_format": "convert",
    "LoRAConfig": "lora",
    "LoRAConv2d": "lora",
    "LoRAConvTranspose2d": "lora",
    "apply_adapter": "lora",
    "freeze_batchnorm": "lora",
    "inject_lora": "lora",
    "load_adapter": "lora",
    "lora_state_dict": "lora",
    "merge_lora": "lora",
    "save_adapter": "lora",
    "trainable_fraction": "lora",
    "export_onnx": "onnx_export",
    "OnnxGenerator": "onnx_export",
    "PatchGAN": "patchgan",
    "Pix2PixUnet256": "pix2pix_unet256",
    "create_model": "registry",
    "list_models": "registry",
    "register_model": "registry",
    "UnetGenerator": "unet",
    "UnetGeneratorUpsample": "unet",
}

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
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_SOURCES))
