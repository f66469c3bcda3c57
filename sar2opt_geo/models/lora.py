"""LoRA adapters for ``Conv2d`` and ``ConvTranspose2d`` layers, with exact merging.

Hand-written because peft has no LoRA for ``ConvTranspose2d`` (the U-Net decoders are made of them) and its
``Conv2d`` variant does not cover the merge we need for transposed layers.

Design, for a base layer with ``C_in → C_out`` channels:

* ``A`` is a convolution *of the same class as the base* (``Conv2d`` or ``ConvTranspose2d``) with the base's
  kernel size, stride, padding, dilation (and ``output_padding`` for transposed layers), ``groups=1``,
  ``C_in → r`` channels, no bias, Kaiming-uniform initialised;
* ``B`` is a 1×1 ``Conv2d`` ``r → C_out``, no bias, initialised to **zero** (the adapter starts as a no-op);
* ``y = base(x) + (α / r) · B(A(dropout(x)))``; the base layer and everything else in the model is frozen.

Exact merge: ``B`` is pointwise, so ``B ∘ A`` is a single convolution of ``A``'s geometry whose kernel is
``W[o, i, h, w] = Σ_r B[o, r] · A[r, i, h, w]`` for ``Conv2d`` (weights laid out ``(C_out, C_in, kh, kw)``)
and ``W[i, o, h, w] = Σ_r A[i, r, h, w] · B[o, r]`` for ``ConvTranspose2d`` (weights laid out
``(C_in, C_out, kh, kw)``). :func:`merge_lora` adds ``(α / r) · W`` to the base weight (computed in float64)
and puts the plain base layers back; the merged model equals the adapted one in eval mode (dropout off).

BatchNorm during fine-tuning: its affine parameters **and** running statistics are frozen — BN layers stay in
eval mode even when the trainer calls ``model.train()`` (:func:`freeze_batchnorm`, applied by
:func:`inject_lora`, swaps them to a subclass whose ``train()`` keeps eval mode; state-dict keys are
unchanged).
Reasons: an adapter file stores only the A/B weights, so the base model it is applied to must be exactly the
one it was trained against (updated running statistics would be lost, or would silently change the base); the
small fine-tuning batches (and ``enc8``'s 1×1 maps at 256² tiles) give useless batch statistics; and the
adapted model then behaves identically in training and inference apart from dropout.
:func:`unfreeze_batchnorm` restores the plain classes (:func:`merge_lora` does so).

Adapter files are small safetensors files holding only the A/B weights, with the JSON description under the
header key ``"sar2opt_geo_lora"`` (rank, alpha, dropout, the exact target module names, base checkpoint
hash and name).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sar2opt_geo.errors import CheckpointKeyError, ModelError
from sar2opt_geo.models.metadata import read_header_metadata, read_state_dict, write_safetensors

__all__ = [
    "ADAPTER_FORMAT",
    "ADAPTER_META_KEY",
    "LoRAConfig",
    "LoRAConv2d",
    "LoRAConvTranspose2d",
    "FrozenBatchNorm1d",
    "FrozenBatchNorm2d",
    "FrozenBatchNorm3d",
    "inject_lora",
    "freeze_batchnorm",
    "unfreeze_batchnorm",
    "lora_modules",
    "lora_state_dict",
    "save_adapter",
    "read_adapter_metadata",
    "load_adapter",
    "apply_adapter",
    "merge_lora",
    "remove_lora",
    "trainable_fraction",
]

ADAPTER_FORMAT = "sar2opt-geo-lora/1"
ADAPTER_META_KEY = "sar2opt_geo_lora"


@dataclass
class LoRAConfig:
    """LoRA hyper-parameters.

    ``target`` is ``"all"`` (every ``Conv2d``/``ConvTranspose2d`` with ``groups=1``) or a list of module-name
    patterns matched with :func:`fnmatch.fnmatchcase` against qualified names (``"decoder.*"``,
    ``"encoder.enc8.conv_block.0"``); a pattern also selects the layers *under* a matching module
    (``"decoder.dec1"`` selects ``decoder.dec1.conv_block.0``).
    """

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.1
    target: str | list[str] = field(default="all")

    def __post_init__(self):
        if int(self.rank) < 1:
            raise ModelError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ModelError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.target, str) and self.target != "all":
            self.target = [self.target]
        if not isinstance(self.target, str):
            self.target = [str(t) for t in self.target]
            if not self.target:
                raise ModelError("LoRA target list is empty")

    @property
    def scaling(self) -> float:
        return float(self.alpha) / float(self.rank)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": int(self.rank),
            "alpha": float(self.alpha),
            "dropout": float(self.dropout),
            "target": self.target,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoRAConfig:
        return cls(
            rank=int(d.get("rank", 16)),
            alpha=float(d.get("alpha", 32.0)),
            dropout=float(d.get("dropout", 0.1)),
            target=d.get("target", "all"),
        )


# --------------------------------------------------------------------------------------------- layers


class _LoRAConvBase(nn.Module):
    """``base(x) + scaling · B(A(dropout(x)))``; subclasses build ``A`` and know how to merge."""

    base_cls: type[nn.Module] = nn.Conv2d

    def __init__(self, base: nn.Module, rank: int = 16, alpha: float = 32.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, self.base_cls):
            raise ModelError(
                f"{type(self).__name__} wraps {self.base_cls.__name__}, got {type(base).__name__}"
            )
        if base.groups != 1:
            raise ModelError("LoRA on grouped convolutions is not supported")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.rank
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base.weight
        self.lora_A = self._make_a(base, self.rank).to(device=w.device, dtype=w.dtype)
        self.lora_B = nn.Conv2d(self.rank, base.out_channels, kernel_size=1, bias=False).to(
            device=w.device, dtype=w.dtype
        )
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def _make_a(self, base: nn.Module, rank: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The base layer with ``scaling · (B ∘ A)`` added to its weight (modified in place and returned)."""
        w = self.base.weight
        w.copy_((w.double() + self.delta_weight()).to(w.dtype))
        return self.base

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


class LoRAConv2d(_LoRAConvBase):
    """LoRA around an ``nn.Conv2d`` (``A``: Conv2d with the base geometry, ``B``: 1×1 Conv2d, zero-init)."""

    base_cls = nn.Conv2d

    def _make_a(self, base: nn.Conv2d, rank: int) -> nn.Module:
        return nn.Conv2d(
            base.in_channels,
            rank,
            kernel_size=base.kernel_size,
            stride=base.stride,
            padding=base.padding,
            dilation=base.dilation,
            groups=1,
            bias=False,
            padding_mode=base.padding_mode,
        )

    def delta_weight(self) -> torch.Tensor:
        b = self.lora_B.weight.double()[:, :, 0, 0]  # (C_out, r)
        a = self.lora_A.weight.double()  # (r, C_in, kh, kw)
        return torch.einsum("or,rihw->oihw", b, a) * self.scaling


class LoRAConvTranspose2d(_LoRAConvBase):
    """LoRA around an ``nn.ConvTranspose2d`` (``A``: ConvTranspose2d, base geometry; ``B``: 1×1 Conv2d)."""

    base_cls = nn.ConvTranspose2d

    def _make_a(self, base: nn.ConvTranspose2d, rank: int) -> nn.Module:
        return nn.ConvTranspose2d(
            base.in_channels,
            rank,
            kernel_size=base.kernel_size,
            stride=base.stride,
            padding=base.padding,
            output_padding=base.output_padding,
            dilation=base.dilation,
            groups=1,
            bias=False,
        )

    def delta_weight(self) -> torch.Tensor:
        b = self.lora_B.weight.double()[:, :, 0, 0]  # (C_out, r)
        a = self.lora_A.weight.double()  # (C_in, r, kh, kw)
        return torch.einsum("irhw,or->iohw", a, b) * self.scaling


_LORA_CLASSES: tuple[type[_LoRAConvBase], ...] = (LoRAConv2d, LoRAConvTranspose2d)


# ------------------------------------------------------------------------------------------- BatchNorm


class _FrozenBNMixin:
    """``train()`` keeps the layer in eval mode (running statistics used and never updated)."""

    def train(self, mode: bool = True):
        return super().train(False)


class FrozenBatchNorm1d(_FrozenBNMixin, nn.BatchNorm1d):
    pass


class FrozenBatchNorm2d(_FrozenBNMixin, nn.BatchNorm2d):
    pass


class FrozenBatchNorm3d(_FrozenBNMixin, nn.BatchNorm3d):
    pass


_FROZEN = {
    nn.BatchNorm1d: FrozenBatchNorm1d,
    nn.BatchNorm2d: FrozenBatchNorm2d,
    nn.BatchNorm3d: FrozenBatchNorm3d,
}
_UNFROZEN = {v: k for k, v in _FROZEN.items()}


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Put every BatchNorm layer in eval mode for good and freeze its affine parameters.

    The layers' classes are swapped (in place) to ``FrozenBatchNorm{1,2,3}d``, subclasses whose ``train()``
    keeps eval mode, so a trainer's ``model.train()`` no longer updates running statistics. Keys and
    weights are unchanged.
    """
    for m in model.modules():
        if type(m) in _FROZEN:
            m.__class__ = _FROZEN[type(m)]
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
    return model


def unfreeze_batchnorm(model: nn.Module) -> nn.Module:
    """Give frozen BatchNorm layers back their plain class (mode and ``requires_grad`` left as they are)."""
    for m in model.modules():
        if type(m) in _UNFROZEN:
            m.__class__ = _UNFROZEN[type(m)]
    return model


# ------------------------------------------------------------------------------------------- injection


def lora_modules(model: nn.Module) -> dict[str, _LoRAConvBase]:
    """Qualified name → LoRA wrapper, for every wrapper in ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _LORA_CLASSES)}


def _matches(name: str, patterns: list[str]) -> bool:
    for pat in patterns:
        if fnmatch.fnmatchcase(name, pat):
            return True
        # a pattern naming a module selects the layers under it
        parts = name.split(".")
        if any(fnmatch.fnmatchcase(".".join(parts[:i]), pat) for i in range(1, len(parts))):
            return True
    return False


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def inject_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Wrap the targeted convolutions of ``model`` (in place) and freeze everything but the LoRA weights.

    Returns ``model`` (the same object). The base layers stay reachable as ``<name>.base``; state-dict keys
    of the base weights become ``<name>.base.weight``. BatchNorm layers are frozen (:func:`freeze_batchnorm`).
    Raises :class:`ModelError` when the model already has LoRA layers or a target list matches nothing.
    """
    if lora_modules(model):
        raise ModelError("model already has LoRA layers (merge_lora() it first)")
    if isinstance(model, (nn.Conv2d, nn.ConvTranspose2d)):
        raise ModelError("inject_lora needs a container module, not a bare convolution")
    targets = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) or not name:
            continue
        if config.target == "all":
            if m.groups == 1:
                targets.append(name)
        elif _matches(name, config.target):
            if m.groups != 1:
                raise ModelError(f"LoRA target {name} is a grouped convolution (not supported)")
            targets.append(name)
    if not targets:
        raise ModelError(f"LoRA target {config.target!r} matches no Conv2d/ConvTranspose2d layer")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in targets:
        base = model.get_submodule(name)
        cls = LoRAConvTranspose2d if isinstance(base, nn.ConvTranspose2d) else LoRAConv2d
        wrapper = cls(base, config.rank, config.alpha, config.dropout)
        wrapper.train(base.training)
        _set_submodule(model, name, wrapper)
    freeze_batchnorm(model)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA A/B weights (``<name>.lora_A.weight``, ``<name>.lora_B.weight``), detached on CPU."""
    out = {}
    for name, m in lora_modules(model).items():
        for part in ("lora_A", "lora_B"):
            out[f"{name}.{part}.weight"] = getattr(m, part).weight.detach().to("cpu").contiguous()
    return out


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weights, exactly, and put the plain layers back (in place).

    Returns the model (or the merged base layer when ``model`` itself is a LoRA wrapper). Frozen BatchNorm
    layers get their plain class back (:func:`unfreeze_batchnorm`); ``requires_grad`` flags are unchanged.
    """
    if isinstance(model, _LORA_CLASSES):
        return model.merged()
    for name, m in list(lora_modules(model).items()):
        _set_submodule(model, name, m.merged())
    unfreeze_batchnorm(model)
    return model


def trainable_fraction(model: nn.Module) -> float:
    """Trainable parameters / all parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable / total if total else 0.0


# --------------------------------------------------------------------------------------------- files


def save_adapter(
    path: str | os.PathLike,
    model: nn.Module,
    config: LoRAConfig,
    base_hash: str | None,
    meta_extra: Mapping[str, Any] | None = None,
    *,
    base_name: str | None = None,
) -> Path:
    """Write the adapter weights and their description to a small safetensors file (atomically).

    The header key ``sar2opt_geo_lora`` holds JSON: ``format``, ``rank``, ``alpha``, ``dropout``, ``target``
    (as configured), ``targets`` (the exact wrapped module names), ``base_checkpoint_hash``,
    ``base_checkpoint_name`` and ``extra`` (``meta_extra``, free-form).
    """
    mods = lora_modules(model)
    if not mods:
        raise ModelError("model has no LoRA layers to save")
    state = lora_state_dict(model)
    info = {
        "format": ADAPTER_FORMAT,
        "rank": int(config.rank),
        "alpha": float(config.alpha),
        "dropout": float(config.dropout),
        "target": config.target,
        "targets": list(mods),
        "base_checkpoint_hash": base_hash,
        "base_checkpoint_name": base_name,
        "extra": dict(meta_extra or {}),
    }
    return write_safetensors(path, state, {ADAPTER_META_KEY: json.dumps(info, ensure_ascii=False)})


def read_adapter_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The adapter's JSON description, without loading its tensors."""
    p = Path(path)
    md = read_header_metadata(p)
    if ADAPTER_META_KEY not in md:
        raise ModelError(f"{p.name} is not a sar2opt-geo LoRA adapter (no {ADAPTER_META_KEY!r} metadata)")
    try:
        info = json.loads(md[ADAPTER_META_KEY])
    except json.JSONDecodeError as exc:
        raise ModelError(f"{p.name}: adapter metadata is not valid JSON: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != ADAPTER_FORMAT:
        raise ModelError(
            f"{p.name}: unsupported adapter format {info.get('format') if isinstance(info, dict) else info!r}"
        )
    return info


def load_adapter(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], LoRAConfig]:
    """Adapter weights and a :class:`LoRAConfig` whose ``target`` lists the exact wrapped module names."""
    info = read_adapter_metadata(path)
    state = read_state_dict(path)
    config = LoRAConfig(
        rank=int(info["rank"]),
        alpha=float(info["alpha"]),
        dropout=float(info["dropout"]),
        target=info["targets"],
    )
    return state, config


def _same_hash(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a.startswith(b) or b.startswith(a)


def apply_adapter(
    model: nn.Module, adapter_path: str | os.PathLike, expected_base_hash: str | None = None
) -> nn.Module:
    """Inject LoRA layers as recorded in the adapter file and load its weights strictly (in place).

    With ``expected_base_hash`` (the base checkpoint's :func:`checkpoint_hash`), an adapter trained against
    another base checkpoint is refused. Returns ``model``; call :func:`merge_lora` for fast inference.
    """
    info = read_adapter_metadata(adapter_path)
    recorded = info.get("base_checkpoint_hash")
    if expected_base_hash and recorded and not _same_hash(expected_base_hash, recorded):
        raise ModelError(
            f"adapter {Path(adapter_path).name} was trained on base checkpoint {recorded}, "
            f"not on {expected_base_hash}"
        )
    state, config = load_adapter(adapter_path)
    names = dict(model.named_modules())
    missing_targets = [t for t in config.target if t not in names]
    if missing_targets:
        raise CheckpointKeyError(
            missing_targets, [], context=f"adapter {Path(adapter_path).name} target layers"
        )
    wanted = [f"{t}.{part}.weight" for t in config.target for part in ("lora_A", "lora_B")]
    missing = [k for k in wanted if k not in state]
    unexpected = [k for k in state if k not in set(wanted)]
    if missing or unexpected:
        raise CheckpointKeyError(missing, unexpected, context=f"adapter {Path(adapter_path).name}")
    inject_lora(model, config)
    expected = lora_state_dict(model)
    mismatch = [
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if state[k].shape != expected[k].shape
    ]
    if mismatch:
        remove_lora(model)
        raise CheckpointKeyError([], [], mismatch, context=f"adapter {Path(adapter_path).name}")
    model.load_state_dict(state, strict=False)
    return model


def remove_lora(model: nn.Module) -> nn.Module:
    """Undo :func:`inject_lora` without merging: put the untouched base layers back (in place)."""
    for name, m in list(lora_modules(model).items()):
        _set_submodule(model, name, m.base)
    unfreeze_batchnorm(model)
    return model
