"""Model registry in the style of timm: ``@register_model``, ``create_model(name, **kw)``, ``list_models()``.

Checkpoints record an architecture *name* and its ``arch_args``; :func:`create_model` turns them back into a
module. A dozen lines of hand-written code instead of a dependency on timm (whose registry only knows timm's
own models). The built-in entry points are defined at the bottom of this module, so importing the registry is
enough to have them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from sar2opt_geo.errors import ModelError

if TYPE_CHECKING:  # torch is imported when a model is built (an entry point's own import), not here
    from torch import nn

__all__ = ["register_model", "create_model", "list_models", "is_model", "GENERATOR_ARCHITECTURES"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_LOCK = threading.Lock()


def register_model(fn_or_name: Callable[..., nn.Module] | str | None = None):
    """Register a model entry point (a function or class returning an ``nn.Module``).

    Usable as ``@register_model`` (the registered name is the function's ``__name__``) or
    ``@register_model("name")``. Re-registering an existing name raises :class:`ModelError`.
    """

    def deco(fn: Callable[..., nn.Module], name: str | None = None) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        with _LOCK:
            if key in _REGISTRY and _REGISTRY[key] is not fn:
                raise ModelError(f"model {key!r} is already registered")
            _REGISTRY[key] = fn
        return fn

    if callable(fn_or_name):
        return deco(fn_or_name)
    return lambda fn: deco(fn, fn_or_name)


def list_models() -> list[str]:
    """Sorted names of the registered architectures."""
    return sorted(_REGISTRY)


def is_model(name: str) -> bool:
    return name in _REGISTRY


def create_model(name: str, **kwargs) -> nn.Module:
    """Instantiate the registered architecture ``name`` with ``kwargs`` (randomly initialised weights)."""
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise ModelError(
            f"unknown model architecture {name!r}; valid names: {', '.join(list_models())}"
        ) from None
    try:
        return fn(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build architecture {name!r} with arguments {kwargs}: {exc}") from None


# --------------------------------------------------------------------------------------------- built-ins

#: Architectures that translate SAR to optical (as opposed to the discriminator).
GENERATOR_ARCHITECTURES = ("unet_sar2optical", "unet_sar2optical_upsample", "pix2pix_unet256")


@register_model
def unet_sar2optical(in_channels: int = 3, out_channels: int = 3, ngf: int = 64) -> nn.Module:
    """SAR2Optical U-Net generator with transposed-convolution decoder."""
    from sar2opt_geo.models.unet import UnetGenerator

    return UnetGenerator(in_channels, out_channels, ngf)


@register_model
def unet_sar2optical_upsample(
    in_channels: int = 3, out_channels: int = 3, ngf: int = 64, upsample_mode: str = "nearest"
) -> nn.Module:
    """SAR2Optical U-Net generator with the ``Upsample`` + ``Conv2d`` decoder."""
    from sar2opt_geo.models.unet import UnetGeneratorUpsample

    return UnetGeneratorUpsample(in_channels, out_channels, ngf, upsample_mode=upsample_mode)


@register_model
def pix2pix_unet256(
    in_channels: int = 3, out_channels: int = 3, ngf: int = 64, norm: str = "batch", use_dropout: bool = True
) -> nn.Module:
    """pytorch-CycleGAN-and-pix2pix ``unet_256`` generator (argument names harmonised with the others)."""
    from sar2opt_geo.models.pix2pix_unet256 import Pix2PixUnet256

    return Pix2PixUnet256(in_channels, out_channels, ngf, norm=norm, use_dropout=use_dropout)


@register_model
def patchgan70(in_channels: int = 6, ndf: int = 64) -> nn.Module:
    """70×70 PatchGAN discriminator on concat(SAR, optical)."""
    from sar2opt_geo.models.patchgan import PatchGAN

    return PatchGAN(in_channels, ndf)
