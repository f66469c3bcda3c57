"""Training configuration: a flat dataclass, loaded from YAML, with ``key=value`` overrides.

Unknown keys (in a YAML file or a ``--set``) are :class:`~sar2opt_geo.errors.UsageError` naming the key.
Values given with ``--set`` are parsed as YAML scalars (``--set lr=1e-4``, ``--set amp=false``,
``--set lora_target=[decoder.*]``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sar2opt_geo.errors import UsageError

#: Radiometry of SEN1-2/QXSLAB-style 8-bit tiles (and of ``synth.write_pairs`` s1 tiles).
DEFAULT_RADIOMETRY = {
    "scale": "db",
    "clip": [-25.0, 0.0],
    "out_range": [-1.0, 1.0],
    "quantize": True,
    "replicate_to": 3,
}


#: values of TrainConfig.precision
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class TrainConfig:
    """Every training knob. ``steps`` counts generator updates (one batch each)."""

    seed: int = 0
    architecture: str = "unet_sar2optical"
    ngf: int = 64
    ndf: int = 64
    batch_size: int = 4
    steps: int = 10000
    max_wall_s: float | None = None  # stop (and checkpoint) after this many seconds of this invocation
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_l1: float = 100.0
    # weight of the adversarial (BCE) term in the generator's loss (pix2pix: 1). 0 trains the generator on the
    # pixel losses alone and skips the discriminator entirely (no D forward, backward or update: ~30 % of a
    # step at ndf 16); its weights and optimiser stay as they were, so a later phase can turn it back on
    lambda_gan: float = 1.0
    # weight of a pixel MSE term beside L1 (0: pix2pix's loss). The L2-optimal output is the conditional mean,
    # the one that maximises PSNR; L1's is the median (sharper where the output is uncertain).
    lambda_mse: float = 0.0
    # the generator's Dropout(0.5) layers while training (false: p = 0; weights and keys unchanged).
    # null: on for pretraining (pix2pix); for fine-tuning, as the base checkpoint was trained (its provenance)
    dropout: bool | None = None
    lr_decay_steps: int = 0  # linear decay to 0 over the last N steps (0: constant LR)
    augment: bool = True
    # probability that a training item's SAR tile is first resampled bilinearly (on linear intensity) at a
    # random sub-pixel offset, as a map projection from radar geometry does (datasets.resample_levels): a
    # model that does not depend on one speckle texture. Needs ``augment`` and a fixed dB clip radiometry.
    resample_augment: float = 0.0
    # DataLoader worker processes; null or "auto": from the usable cores (trainer.default_loader_workers)
    num_workers: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    checkpoint_every: int = 500
    val_every: int = 500
    val_max_images: int = 32
    log_every: int = 10
    amp: bool = True  # mixed precision, only on CUDA (what ``precision: auto`` does; false: fp32)
    # autocast dtype of the forward passes: auto (fp16 with a gradient scaler on CUDA when ``amp``, else
    # fp32), fp32, fp16 (CUDA only) or bf16 (CUDA, or a CPU with native bf16: AVX512-BF16 / AMX, where oneDNN
    # runs the convolutions ~2x faster; weights, optimiser and losses stay fp32)
    precision: str = "auto"
    device: str = "auto"
    precise_bn_batches: int = 0  # re-estimate BatchNorm statistics (no grad, dropout off) before saving
    radiometry: dict = field(default_factory=lambda: dict(DEFAULT_RADIOMETRY))
    input_bands: list = field(default_factory=lambda: ["VV"])
    name: str = "sar2opt-geo-pix2pix"
    # fine-tuning
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.1
    lora_target: Any = "all"
    lora_lr: float = 2e-4
    finetune_lr: float = 1e-5  # full fine-tuning (``lr`` is the pretraining rate)
    finetune_discriminator: str | None = None  # optional discriminator weights (training_state.pt of a run)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resample_clip_db(self) -> tuple[float, float]:
        """The 8-bit tiles' dB stretch (the radiometry's fixed clip), for ``resample_augment``."""
        rad = self.tile_radiometry()
        return rad.band_clips[0] if rad is not None else (-25.0, 0.0)

    def tile_radiometry(self):
        """The :class:`~sar2opt_geo.radiometry.Radiometry` of the 8-bit dB tiles (what ``resample_augment``
        undoes and redoes), or None when the radiometry is not a fixed dB clip (UsageError then if
        ``resample_augment`` is on)."""
        from sar2opt_geo.radiometry import Radiometry

        r = self.radiometry or {}
        rad = Radiometry.from_dict(r) if r else None
        if rad is None or rad.scale != "db" or rad.clip is None:
            if self.resample_augment > 0:
                raise UsageError(
                    "resample_augment needs the radiometry of 8-bit dB tiles (scale: db with a fixed clip), "
                    f"got {r!r}"
                )
            return None
        return rad

    def validate(self) -> TrainConfig:
        if self.batch_size < 1:
            raise UsageError("batch_size must be >= 1")
        if self.steps < 1:
            raise UsageError("steps must be >= 1")
        if not (self.lambda_l1 >= 0 and self.lambda_mse >= 0 and self.lambda_gan >= 0):
            raise UsageError("lambda_l1, lambda_mse and lambda_gan must be >= 0")
        if self.lambda_l1 == 0 and self.lambda_mse == 0 and self.lambda_gan == 0:
            raise UsageError("lambda_l1, lambda_mse and lambda_gan are all 0: nothing to train")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.ngf < 1 or self.ndf < 1:
            raise UsageError("ngf and ndf must be >= 1")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise UsageError("val_fraction and test_fraction must be in [0, 1)")
        if self.dropout is not None and not isinstance(self.dropout, bool):
            raise UsageError(f"config key 'dropout': expected true, false or null, got {self.dropout!r}")
        if not 0 <= self.resample_augment <= 1:
            raise UsageError(
                f"resample_augment must be a probability in [0, 1], got {self.resample_augment!r}"
            )
        if self.resample_augment > 0:
            self.tile_radiometry()  # a fixed dB clip is needed to undo the 8-bit stretch
        if self.num_workers == "auto":
            self.num_workers = None
        nw = self.num_workers
        if nw is not None and (isinstance(nw, bool) or not isinstance(nw, int) or nw < 0):
            raise UsageError(f"num_workers must be an integer >= 0 or auto, got {self.num_workers!r}")
        for k in ("checkpoint_every", "val_every", "log_every"):
            if getattr(self, k) < 1:
                raise UsageError(f"{k} must be >= 1")
        return self


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value: Any) -> Any:
    f = FIELDS[key]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if value is None or default is None:
        return value
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError("expected an integer")
            return value
        if isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError("expected a number")
            return float(value)
        if isinstance(default, dict) and not isinstance(value, dict):
            raise ValueError("expected a mapping")
        if isinstance(default, list) and not isinstance(value, list):
            raise ValueError("expected a list")
    except ValueError as exc:
        raise UsageError(f"config key {key!r}: {exc}, got {value!r}") from None
    return value


def apply_dict(cfg: TrainConfig, d: dict, source: str = "config") -> TrainConfig:
    if not isinstance(d, dict):
        raise UsageError(f"{source}: expected a mapping of config keys")
    for k, v in d.items():
        if k not in FIELDS:
            raise UsageError(f"{source}: unknown config key {k!r}")
        setattr(cfg, k, _coerce(k, v))
    return cfg


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict:
    out = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got {item!r}")
        if key not in FIELDS:
            raise UsageError(f"--set: unknown config key {key!r}")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), base: dict | None = None
) -> TrainConfig:
    """Defaults ← ``base`` (e.g. a resumed run's config) ← YAML ``path`` ← ``overrides``."""
    cfg = TrainConfig()
    if base:
        apply_dict(cfg, base, "run config")
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        apply_dict(cfg, data, str(p))
    apply_dict(cfg, parse_overrides(overrides), "--set")
    return cfg.validate()


def config_json(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2)
