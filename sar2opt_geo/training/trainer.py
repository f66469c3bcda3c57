"""The pix2pix trainer: pretraining, full fine-tuning and LoRA fine-tuning of the U-Net generator.

Objective (Isola et al. 2017): ``D`` minimises ``½·[BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)]`` and ``G``
minimises ``BCE(D(x, G(x)), 1) + λ·|G(x) − y|₁`` (BCE with logits, λ = ``lambda_l1`` = 100; plus
``lambda_mse``·mean((G(x) − y)²) when set, 0 by default); Adam with
``lr`` (2e-4) for pretraining, ``finetune_lr`` (1e-5) for full fine-tuning, ``lora_lr`` (2e-4) for LoRA,
betas (0.5, 0.999); optional
linear decay to 0 over the last ``lr_decay_steps`` steps; mixed precision (``torch.autocast`` float16 +
``GradScaler``) on CUDA when ``amp``.

Determinism and exact resume: the batch of step ``s`` is a slice of a per-epoch permutation drawn from
``default_rng([seed, epoch])`` (with per-item augmentation codes from the same generator), and the global
torch RNG (dropout, LoRA dropout) is re-seeded from ``(seed, s)`` at every step. The step counter therefore
determines everything; RNG states (torch, CUDA, numpy, python) are saved and restored as well, with the
sampler's position (epoch, position, training-split size: a resume on a different split is refused). The LR
schedule is a function of the step (no scheduler object to save). A run interrupted at any step and resumed
gives bitwise the same weights and optimiser states as an uninterrupted one (CPU; tested).

Interruptions: SIGINT (Ctrl-C, also a script's ``kill -INT`` to a background run, whose inherited "ignore
SIGINT" is overridden) and SIGTERM (Slurm, Kubernetes) only set a flag; the loop finishes the current step,
writes a full checkpoint and returns ``summary["interrupted"]`` and the exact resume command. A second signal
stops at once. DataLoader workers ignore both signals (the main process shuts them down). ``--resume`` also
continues a run killed before its first checkpoint (``run.json`` without ``training_state.pt``: from step 0).
Every checkpoint file is written atomically (temporary file in the same folder, fsync, ``os.replace``, fsync
of the folder), so a kill during a save leaves the previous checkpoint intact.

Progress: steps/s and an ETA from a moving window of training time after warm-up, with validation and
checkpoint costs added per remaining occurrence (:class:`_Progress`). DataLoader workers default to the
usable cores (:func:`default_loader_workers`); pinned memory and mixed precision only on CUDA.

Run folder (``RUN/``):

* ``generator.safetensors`` — native checkpoint (:class:`~sar2opt_geo.models.CheckpointMeta` with
  radiometry, input bands, provenance incl. config, data, steps, seed); for LoRA runs the merged model;
* ``adapter.safetensors`` + ``adapter.json`` — LoRA runs only: the adapter (A/B weights) and its config;
* ``training_state.pt`` — discriminator, full generator state (incl. LoRA wrappers), optimisers, scalers,
  step/epoch and RNG states, stored as tensors/lists so ``torch.load(weights_only=True)`` reads it;
* ``run.json`` (mode, data, base checkpoint, config), ``split.json``, ``losses.csv``, ``metrics.csv``
  (validation L1/PSNR/SSIM), ``plots/losses.png``, ``plots/val.png``, ``log.txt``, ``summary.json``.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import random
import shlex
import signal
import sys
import threading
import time
import warnings
from collections import deque
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from sar2opt_geo.defaults import usable_cores
from sar2opt_geo.errors import ModelError, OutputError, UsageError
from sar2opt_geo.models.checkpoint import (
    CheckpointMeta,
    checkpoint_hash,
    count_parameters,
    load_generator,
    read_metadata,
    save_checkpoint,
)
from sar2opt_geo.models.lora import LoRAConfig, inject_lora, save_adapter, trainable_fraction
from sar2opt_geo.models.registry import create_model
from sar2opt_geo.training.config import TrainConfig, load_config
from sar2opt_geo.training.datasets import (
    RESAMPLE_PHASES,
    PairedTileDataset,
    check_tiles_fit,
    find_pairs,
    make_split,
    read_split,
    resample_code,
    tiles_are_composite,
    write_split,
)

log = logging.getLogger(__name__)

FINETUNABLE = ("unet_sar2optical", "unet_sar2optical_upsample")
STATE_FILE = "training_state.pt"


# ------------------------------------------------------------------------------------------ helpers


def step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step) * 7_919 + 12_345) % (2**63 - 1)


def batch_indices(
    n: int, batch_size: int, seed: int, step: int, augment: bool, resample: float = 0.0
) -> list[tuple[int, int]]:
    """``[(index, aug_code), ...]`` of step ``step``: a slice of the seeded permutation of its epoch.

    With ``augment``, each item's dihedral code (bits 0-2) comes from the epoch's generator and, with
    probability ``resample``, a sub-pixel resampling phase
    (:func:`~sar2opt_geo.training.datasets.resample_code`) from a second generator of the epoch (so runs
    without it keep their codes)."""
    bs = min(batch_size, n)
    per_epoch = max(n // bs, 1)
    epoch, pos = divmod(step, per_epoch)
    rng = np.random.default_rng([int(seed), int(epoch)])
    perm = rng.permutation(n)
    codes = rng.integers(0, 8, size=n) if augment else np.zeros(n, dtype=np.int64)
    if augment and resample > 0:
        rs = np.random.default_rng([int(seed), int(epoch), 1])
        chosen = rs.random(n) < resample
        q = rs.integers(0, RESAMPLE_PHASES, size=(2, n))
        codes = codes + np.where(chosen, resample_code(q[0], q[1]), 0)
    return [(int(i), int(codes[i])) for i in perm[pos * bs : (pos + 1) * bs]]


class _StepBatches(torch.utils.data.Sampler):
    def __init__(self, n, cfg: TrainConfig, start: int, end: int):
        self.n, self.cfg, self.start, self.end = n, cfg, start, end

    def __iter__(self):
        for s in range(self.start, self.end):
            yield batch_indices(
                self.n, self.cfg.batch_size, self.cfg.seed, s, self.cfg.augment, self.cfg.resample_augment
            )

    def __len__(self):
        return max(self.end - self.start, 0)


def _collate(batch):
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


def _rng_state() -> dict:
    np_state = np.random.get_state()
    py = random.getstate()
    d = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python_version": int(py[0]),
        "python_state": torch.tensor(py[1], dtype=torch.int64),
        "python_gauss": py[2],
    }
    if torch.cuda.is_available():
        d["cuda"] = torch.cuda.get_rng_state_all()
    return d


def _set_rng_state(d: dict) -> None:
    torch.set_rng_state(d["torch"])
    np.random.set_state(
        (
            "MT19937",
            d["numpy_keys"].numpy().astype(np.uint32),
            d["numpy_pos"],
            d["numpy_has_gauss"],
            d["numpy_gauss"],
        )
    )
    random.setstate(
        (d["python_version"], tuple(int(v) for v in d["python_state"].tolist()), d["python_gauss"])
    )
    if "cuda" in d and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(d["cuda"])


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _replace_atomically(path: Path, mode: str, write) -> None:
    """Write ``path`` atomically: ``write(f)`` into a temporary file in the same folder (opened with
    ``mode``), flush and fsync it, then ``os.replace``. An error or a kill during the write leaves the
    previous file at ``path`` intact and no temporary file behind (except after SIGKILL: a stale
    ``.NAME.*.tmp`` that nothing reads)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save_torch(obj, path: Path) -> None:
    """``torch.save`` atomically (:func:`_replace_atomically`), then fsync the folder."""
    _replace_atomically(path, "wb", lambda f: torch.save(obj, f))
    _fsync_dir(path.parent)


def _write_text(path: Path, text: str) -> None:
    """Write a small text file atomically (:func:`_replace_atomically`)."""
    _replace_atomically(path, "w", lambda f: f.write(text))


def save_generator(path: Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Native checkpoint, written atomically by :func:`save_checkpoint`, then fsynced."""
    out = save_checkpoint(path, model, meta)
    _fsync_file(out)
    _fsync_dir(out.parent)
    return out


def default_loader_workers(cores: int | None = None) -> int:
    """DataLoader worker processes when the config says ``num_workers: null``: none on 1-2 cores (the
    main process decodes the tiles; measured faster there, see :mod:`sar2opt_geo.training.throughput`),
    else ``min(4, cores - 1)`` so that one core stays with the training step."""
    cores = usable_cores() if cores is None else int(cores)
    return 0 if cores <= 2 else min(4, cores - 1)


def _loader_worker_init(_worker_id: int) -> None:
    """DataLoader workers ignore SIGINT/SIGTERM: a Ctrl-C (sent to the whole process group) or a scheduler's
    SIGTERM must reach only the main process, which checkpoints and then shuts the workers down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopFlag:
    """Signal handler that only records the signal; the training loop checkpoints at the end of the current
    step and exits. A second signal stops at once (``KeyboardInterrupt``; the last checkpoint stays intact
    because every checkpoint file is replaced atomically).

    Installed explicitly for SIGINT as well: Python leaves SIGINT ignored in a process started in the
    background (``cmd &``) by a non-interactive shell, so a script's ``kill -INT`` would do nothing."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __call__(self, signum, _frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (e.g. a notebook worker thread)
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``cfg.precision`` on ``device`` (None: fp32). ``auto`` is fp16 on CUDA when
    ``cfg.amp`` (pix2pix's mixed precision, with a gradient scaler), else fp32; fp16 needs CUDA; bf16 runs
    anywhere, with a warning on a CPU without native bf16 (oneDNN has no bf16 kernels there and the run can be
    slower than fp32)."""
    p = cfg.precision
    if p == "auto":
        return torch.float16 if cfg.amp and device.type == "cuda" else None
    if p == "fp32":
        return None
    if p == "fp16":
        if device.type != "cuda":
            raise UsageError(f"precision fp16 trains on CUDA only (device {device.type}); use bf16 or fp32")
        return torch.float16
    if device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "precision bf16 on a CPU without AVX512-BF16/AMX: oneDNN has no native bf16 kernels there "
            "and the run can be slower than fp32 (--set precision=fp32)",
            stacklevel=2,
        )
    return torch.bfloat16


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"invalid device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but CUDA is not available")
    return dev


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(int(round(seconds)), 0)
    h, rem = divmod(seconds, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class _Progress:
    """Steps/s and ETA of a run (``step n/N  losses  0.42 steps/s  ETA 1h02m`` on stderr; silent when quiet).

    The rate is measured over a moving window (the last ``window_s`` seconds, at least two marks) of pure
    training time, after a warm-up of ``warmup_steps`` steps (first batches: thread pools, allocator, loader
    start-up) that is left out. Validation and checkpoint time is kept apart and added back per remaining
    occurrence (``every`` steps each, and once more for the final phase, at their last measured cost), so a
    periodic validation neither inflates the rate nor is forgotten in the ETA. The ETA cannot foresee a change
    of speed (e.g. other processes starting on a shared machine); the window follows one within
    ``window_s``. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        total: int,
        start: int,
        quiet: bool,
        *,
        window_s: float = 120.0,
        warmup_steps: int = 3,
        clock=time.monotonic,
    ):
        self.total, self.start, self.quiet = total, start, quiet
        self.window_s, self.warmup_steps, self.clock = window_s, warmup_steps, clock
        self.tty = sys.stderr.isatty()
        self.marks: deque[tuple[float, int]] = deque()
        self.overhead = 0.0  # seconds spent in periodic work (validation, checkpoints) so far
        self.periodic: dict[str, tuple[int, float]] = {}  # name -> (every N steps, last cost in s)

    def step_done(self, step: int) -> None:
        if step - self.start < self.warmup_steps:
            return
        now = self.clock() - self.overhead
        self.marks.append((now, step))
        while len(self.marks) > 2 and self.marks[1][0] <= now - self.window_s:
            self.marks.popleft()

    def add_periodic(self, name: str, every: int, seconds: float) -> None:
        """Record that periodic work ``name`` (every ``every`` steps) just took ``seconds``."""
        self.overhead += seconds
        self.periodic[name] = (every, seconds)

    def rate(self) -> float | None:
        if len(self.marks) < 2:
            return None
        (t0, s0), (t1, s1) = self.marks[0], self.marks[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    def eta(self, step: int) -> float:
        """Seconds left: remaining steps at the windowed rate, the periodic work still to come, and the final
        phase (one more validation and save, at their last measured cost)."""
        if step >= self.total:
            return sum(cost for _, cost in self.periodic.values())  # the final phase only
        r = self.rate()
        if r is None or r <= 0:
            return float("nan")
        left = (self.total - step) / r
        for every, cost in self.periodic.values():
            left += max((self.total - 1) // every - step // every, 0) * cost  # before the last step
            left += cost  # the final phase validates and saves once more
        return left

    def update(self, step: int, losses: dict) -> None:
        if self.quiet:
            return
        r = self.rate()
        speed = "warming up" if r is None else f"{r:.2f} steps/s  ETA {_duration(self.eta(step))}"
        text = (
            f"step {step}/{self.total}  G_adv {losses['g_adv']:.3f}  G_L1 {losses['g_l1']:.4f}  "
            f"D {losses['d']:.3f}  {speed}"
        )
        sys.stderr.write(("\r" + text + "\033[K") if self.tty else text + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if not self.quiet and self.tty:
            sys.stderr.write("\n")


# ------------------------------------------------------------------------------------------ the run


def _trained_with_dropout(meta: CheckpointMeta) -> bool:
    """Whether a checkpoint was trained with dropout: its provenance says so (``dropout`` at the top level as
    the bundled model records it, or in the run's ``config``); unrecorded means on, as in pix2pix."""
    prov = meta.provenance or {}
    run_cfg = prov.get("config") if isinstance(prov.get("config"), dict) else {}
    return prov.get("dropout", run_cfg.get("dropout")) is not False


def _check_run_folder(out: Path, data: str | os.PathLike) -> None:
    """Refuse a run folder that is the data folder or inside it (checkpoints and logs would land among the
    tiles, and a later scan of the dataset would pick them up)."""
    o, d = Path(out).resolve(), Path(data).resolve()
    if o == d:
        raise UsageError(f"the run folder {out} is the data folder; choose a folder outside {data}")
    if d in o.parents:
        raise UsageError(f"the run folder {out} is inside the data folder {data}; choose a folder outside it")
    from sar2opt_geo.safety import refuse_collisions

    refuse_collisions(out, [("data folder", data)])  # the run folder holding the data, a hard link...


class Run:
    """One training run (fresh or resumed). Call :meth:`fit`."""

    def __init__(
        self,
        data: str | os.PathLike | None,
        out: str | os.PathLike,
        cfg: TrainConfig | None = None,
        *,
        mode: str = "pretrain",
        base: str | os.PathLike | None = None,
        resume: bool = False,
        split_file: str | os.PathLike | None = None,
        quiet: bool = True,
        overrides: dict | None = None,
    ):
        self.out = Path(out)
        self.quiet = quiet
        self.has_state = False  # a checkpoint to continue from (resume only)
        self.wall_before = 0.0
        if resume:
            self._load_run_info(data, overrides or {})
        else:
            if mode not in ("pretrain", "finetune"):
                raise UsageError(f"unknown training mode {mode!r}")
            if data is None:
                raise UsageError("--data is required")
            if (self.out / STATE_FILE).exists():
                raise OutputError(
                    f"{self.out} already holds a training run (use --resume {self.out} to continue it)"
                )
            if mode == "finetune" and base is None:
                raise UsageError("finetune needs --base CKPT")
            self.cfg = (cfg or TrainConfig()).validate()
            self.mode, self.data, self.base = mode, str(data), None if base is None else str(base)
        self.resume = resume
        _check_run_folder(self.out, self.data)
        if self.mode == "pretrain" and self.cfg.lora:
            raise UsageError("LoRA is for fine-tuning (train finetune --lora)")
        self.device = resolve_device(self.cfg.device)
        self.amp_dtype = autocast_dtype(self.cfg, self.device)
        self.use_amp = self.amp_dtype == torch.float16  # fp16 needs the gradient scaler; bf16 does not
        self._setup_data(split_file)
        self._setup_models()

    # -------------------------------------------------------------------------------------- set-up

    def _load_run_info(self, data, overrides: dict) -> None:
        info_path = self.out / "run.json"
        if not self.out.is_dir():
            raise UsageError(f"cannot resume {self.out}: no such run folder")
        if not info_path.is_file():
            raise UsageError(f"cannot resume {self.out}: not a training run (no run.json)")
        try:
            info = json.loads(info_path.read_text())
            info["mode"], info["config"]  # noqa: B018 - the keys every run.json has
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"cannot resume {self.out}: unreadable run.json ({exc})") from None
        # a run stopped before its first checkpoint (killed, or crashed) restarts from step 0 with its config
        self.has_state = (self.out / STATE_FILE).is_file()
        self.mode, self.base = info["mode"], info.get("base")
        self.data = str(data) if data is not None else info["data"]
        self.cfg = load_config(base=info["config"])
        from sar2opt_geo.training.config import apply_dict

        apply_dict(self.cfg, overrides, "--set")
        self.cfg.validate()

    def _setup_data(self, split_file) -> None:
        cfg = self.cfg
        split_path = self.out / "split.json"
        if split_file is not None:
            split = read_split(split_file)
        elif self.resume and split_path.is_file():
            split = read_split(split_path)
        else:
            _, pairs = find_pairs(self.data)
            split = make_split([s for s, _ in pairs], cfg.split_seed, cfg.val_fraction, cfg.test_fraction)
        self.split = split
        self.train_ds = PairedTileDataset(
            self.data, "train", split, augment=cfg.augment, resample_clip_db=cfg.tile_radiometry()
        )
        if len(self.train_ds) == 0:
            raise UsageError(f"{self.data}: the training split is empty")
        self.val_ds = PairedTileDataset(self.data, "val", split, augment=False)
        if self.val_ds.tile_size and min(self.val_ds.tile_size) < 11:
            self.val_ds.items = []
        th, tw = self.train_ds.tile_size or (256, 256)
        if th % 256 or tw % 256:
            raise UsageError(f"tiles are {tw}x{th}; the 8-level U-Net needs sides that are multiples of 256")
        self.split_path = split_path

    def _setup_models(self) -> None:
        cfg, dev = self.cfg, self.device
        self.base_meta = None
        if self.mode == "finetune":
            meta = read_metadata(self.base)
            if meta.architecture not in FINETUNABLE:
                kind = "a discriminator" if meta.architecture == "patchgan70" else "another architecture"
                raise ModelError(
                    f"{Path(self.base).name} is {kind} ({meta.architecture}); fine-tuning needs a "
                    f"{' or '.join(FINETUNABLE)} generator checkpoint"
                )
            G, meta = load_generator(self.base)
            self.base_meta = meta
            if meta.radiometry:  # the tiles are read (and resampled) as the base model reads them
                cfg.radiometry = dict(meta.radiometry)
                if self.train_ds is not None:
                    self.train_ds.resample_clip_db = cfg.tile_radiometry()
            self.arch = meta.architecture
            self.arch_args = dict(meta.arch_args)
            cfg.ngf = int(self.arch_args.get("ngf", cfg.ngf))
            if cfg.dropout is None:  # keep training the way the base was trained
                cfg.dropout = _trained_with_dropout(meta)
            self.base_hash = checkpoint_hash(self.base)
        else:
            if cfg.architecture not in FINETUNABLE:
                raise UsageError(f"architecture must be one of {', '.join(FINETUNABLE)}")
            self.arch = cfg.architecture
            self.arch_args = {"in_channels": 3, "out_channels": 3, "ngf": cfg.ngf}
            torch.manual_seed(cfg.seed)
            G = create_model(self.arch, **self.arch_args)
            self.base_hash = None
        self.lora_cfg = None
        if cfg.lora:
            self.lora_cfg = LoRAConfig(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target)
            torch.manual_seed(cfg.seed + 1)
            inject_lora(G, self.lora_cfg)
        if cfg.dropout is None:
            cfg.dropout = True
        if not cfg.dropout:
            for m in G.modules():
                if isinstance(m, nn.Dropout):
                    m.p = 0.0
        if self.base_meta is None and self.train_ds is not None:
            self._adopt_dual_pol_radiometry()
        if self.train_ds is not None:
            what = Path(self.base).name if self.base_meta else "the config's radiometry"
            check_tiles_fit(
                self.base_meta.radiometry if self.base_meta else cfg.radiometry, self.train_ds, what
            )
        torch.manual_seed(cfg.seed + 2)
        D = create_model("patchgan70", in_channels=6, ndf=cfg.ndf)
        self.G, self.D = G.to(dev), D.to(dev)
        if not cfg.lora and self.train_ds is not None and min(len(self.train_ds), cfg.batch_size) < 2:
            raise UsageError("batch_size (and the training split) must be >= 2: BatchNorm needs 2+ samples")
        self.base_lr = cfg.lora_lr if cfg.lora else (cfg.finetune_lr if self.mode == "finetune" else cfg.lr)
        self.opt_G = torch.optim.Adam(
            [p for p in G.parameters() if p.requires_grad], lr=self.base_lr, betas=(cfg.beta1, cfg.beta2)
        )
        self.opt_D = torch.optim.Adam(D.parameters(), lr=self.base_lr, betas=(cfg.beta1, cfg.beta2))
        self.scaler_G = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.scaler_D = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.bce = nn.BCEWithLogitsLoss()
        self.step = 0
        self.n_params = count_parameters(G)
        self.n_trainable = count_parameters(G, trainable_only=True)
        self.fraction = trainable_fraction(G)
        if self.resume and self.has_state:
            self._load_state()

    def _load_state(self) -> None:
        try:
            st = torch.load(self.out / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable state is a ModelError
            raise ModelError(f"{self.out / STATE_FILE}: cannot read the training state ({exc})") from None
        self.G.load_state_dict(st["G"])
        self.D.load_state_dict(st["D"])
        self.opt_G.load_state_dict(st["opt_G"])
        self.opt_D.load_state_dict(st["opt_D"])
        self.scaler_G.load_state_dict(st["scaler_G"])
        self.scaler_D.load_state_dict(st["scaler_D"])
        self.step = int(st["step"])
        self.wall_before = float(st.get("wall_time_s", 0.0))
        _set_rng_state(st["rng"])
        order = st.get("data_order")
        if order is not None and int(order["train_tiles"]) != len(self.train_ds):
            raise UsageError(
                f"cannot resume {self.out}: its training split had {int(order['train_tiles'])} tiles, "
                f"{self.data} gives {len(self.train_ds)} (the data order would differ)"
            )

    def _adopt_dual_pol_radiometry(self) -> None:
        """Pretraining on dual-pol composite tiles with the default (single-pol) radiometry and bands: the
        model reads what its tiles are, the composite (``radiometry.DUAL_POL_COMPOSITE``, bands VV and VH).
        A config that sets its own radiometry or bands is kept (and checked against the tiles)."""
        from sar2opt_geo.radiometry import DUAL_POL_COMPOSITE
        from sar2opt_geo.training.config import DEFAULT_RADIOMETRY

        cfg = self.cfg
        default = cfg.radiometry == DEFAULT_RADIOMETRY and list(cfg.input_bands) == ["VV"]
        if not (default and tiles_are_composite(self.train_ds)):
            return
        cfg.radiometry, cfg.input_bands = dict(DUAL_POL_COMPOSITE), ["VV", "VH"]
        self.train_ds.resample_clip_db = cfg.tile_radiometry()
        log.warning("the SAR tiles are the dual-pol composite: the model reads VV and VH")

    # ------------------------------------------------------------------------------------ writing

    def _log(self, msg: str) -> None:
        log.info(msg)
        with open(self.out / "log.txt", "a") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")

    def _meta(self, final: bool) -> CheckpointMeta:
        cfg = self.cfg
        radiometry = (
            dict(self.base_meta.radiometry)
            if self.base_meta and self.base_meta.radiometry
            else dict(cfg.radiometry)
        )
        bands = list(self.base_meta.input_bands) if self.base_meta else list(cfg.input_bands)
        prov = {
            "trainer": "sar2opt_geo.training.trainer",
            "mode": self.mode,
            "data": str(self.data),
            "steps": self.step,
            "seed": cfg.seed,
            "final": final,
            "config": cfg.to_dict(),
        }
        if self.base:
            prov["base_checkpoint"] = Path(self.base).name
            prov["base_checkpoint_hash"] = self.base_hash
        lora = None
        if self.lora_cfg is not None:
            lora = {**self.lora_cfg.to_dict(), "merged": True, "base_checkpoint_hash": self.base_hash}
        return CheckpointMeta(
            name=cfg.name,
            architecture=self.arch,
            arch_args=self.arch_args,
            input_bands=bands,
            radiometry=radiometry,
            lora=lora,
            provenance=prov,
        )

    def save(self, final: bool = False) -> None:
        out = self.out
        meta = self._meta(final)
        if self.lora_cfg is not None:
            extra = {"steps": self.step, "seed": self.cfg.seed, "data": str(self.data)}
            save_adapter(
                out / "adapter.safetensors",
                self.G,
                self.lora_cfg,
                self.base_hash,
                extra,
                base_name=Path(self.base).name if self.base else None,
            )
            _write_text(
                out / "adapter.json",
                json.dumps(
                    {
                        **self.lora_cfg.to_dict(),
                        "base_checkpoint": self.base,
                        "base_checkpoint_hash": self.base_hash,
                        "trainable_fraction": self.fraction,
                        "steps": self.step,
                    },
                    indent=2,
                ),
            )
            if final:
                from sar2opt_geo.models.lora import merge_lora

                merged = merge_lora(copy.deepcopy(self.G).cpu())
                save_generator(out / "generator.safetensors", merged, meta)
        else:
            save_generator(out / "generator.safetensors", self.G, meta)
        n = len(self.train_ds)
        per_epoch = max(n // min(self.cfg.batch_size, n), 1)
        st = {
            "step": self.step,
            "epoch": self.step // per_epoch,
            # the sampler's position: batch ``step`` is slice ``position`` of epoch ``epoch``'s permutation of
            # the ``train_tiles`` items, drawn from default_rng([seed, epoch]) (see batch_indices)
            "data_order": {"seed": self.cfg.seed, "train_tiles": n, "position": self.step % per_epoch},
            "lr": self._lr(self.step),
            "G": {k: v.detach().cpu() for k, v in self.G.state_dict().items()},
            "D": {k: v.detach().cpu() for k, v in self.D.state_dict().items()},
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "scaler_G": self.scaler_G.state_dict(),
            "scaler_D": self.scaler_D.state_dict(),
            "rng": _rng_state(),
            "wall_time_s": self.wall_before + (time.time() - self.t0),
        }
        _save_torch(st, out / STATE_FILE)

    # ----------------------------------------------------------------------------------- training

    def _lr(self, step: int) -> float:
        n = self.cfg.lr_decay_steps
        if n <= 0:
            return self.base_lr
        start = self.cfg.steps - n
        if step < start:
            return self.base_lr
        return self.base_lr * max(0.0, (self.cfg.steps - step) / n)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        G, D, dev = self.G, self.D, self.device
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        lr = self._lr(self.step)
        for o in (self.opt_G, self.opt_D):
            for g in o.param_groups:
                g["lr"] = lr
        torch.manual_seed(step_seed(self.cfg.seed, self.step))
        ac = torch.autocast(
            device_type=dev.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )
        with ac:
            fake = G(x)
        adversarial = self.cfg.lambda_gan > 0
        if adversarial:
            with ac:
                pr = D(torch.cat([x, y], 1))
                pf = D(torch.cat([x, fake.detach()], 1))
                loss_d = 0.5 * (self.bce(pr, torch.ones_like(pr)) + self.bce(pf, torch.zeros_like(pf)))
            self.opt_D.zero_grad(set_to_none=True)
            self.scaler_D.scale(loss_d).backward()
            self.scaler_D.step(self.opt_D)
            self.scaler_D.update()
        with ac:
            err = fake.float() - y
            g_l1 = err.abs().mean()
            loss_g = self.cfg.lambda_l1 * g_l1
            if adversarial:
                pf = D(torch.cat([x, fake], 1))
                g_adv = self.bce(pf, torch.ones_like(pf))
                loss_g = loss_g + self.cfg.lambda_gan * g_adv
            if self.cfg.lambda_mse:
                loss_g = loss_g + self.cfg.lambda_mse * err.square().mean()
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler_G.scale(loss_g).backward()
        self.scaler_G.step(self.opt_G)
        self.scaler_G.update()
        # D's parameters got gradients from the G step; they are cleared at D's next zero_grad
        self.step += 1
        losses = {  # without the discriminator (lambda_gan 0) its columns are 0: no adversarial term
            "g_adv": float(g_adv.detach()) if adversarial else 0.0,
            "g_l1": float(g_l1.detach()),
            "d": float(loss_d.detach()) if adversarial else 0.0,
            "lr": lr,
        }
        for k, v in losses.items():
            if not math.isfinite(v):
                raise ModelError(f"training diverged at step {self.step}: {k} = {v}")
        return losses

    @torch.no_grad()
    def validate(self) -> dict | None:
        if len(self.val_ds) == 0:
            return None
        from sar2opt_geo.training.evaluate import predict_metrics

        n = min(len(self.val_ds), self.cfg.val_max_images)
        self.G.eval()
        try:
            m = predict_metrics(self.G, self.val_ds, range(n), self.device, self.cfg.batch_size)
        finally:
            self.G.train()
        res = {"step": self.step, "n": n, **{k: float(np.mean(v)) for k, v in m.items()}}
        new = not (self.out / "metrics.csv").exists()
        with open(self.out / "metrics.csv", "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "n_images", "l1", "psnr", "ssim"])
            w.writerow([res["step"], n, f"{res['l1']:.4f}", f"{res['psnr']:.4f}", f"{res['ssim']:.5f}"])
        self._log(
            f"validation step {self.step}: L1 {res['l1']:.2f}  PSNR {res['psnr']:.2f} dB  "
            f"SSIM {res['ssim']:.4f}"
        )
        return res

    @torch.no_grad()
    def precise_bn(self, batches: int) -> None:
        """Re-estimate BatchNorm running statistics as a cumulative average over ``batches`` training batches
        (BN in train mode, dropout off, no gradients), so that eval-mode outputs match training behaviour."""
        bns = [m for m in self.G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns or batches <= 0:
            return
        saved = [(m, m.momentum) for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        self.G.eval()
        for m in bns:
            m.train()
        n = len(self.train_ds)
        for b in range(batches):
            idx = batch_indices(n, self.cfg.batch_size, self.cfg.seed + 99991, b, False)
            x = torch.stack([self.train_ds[i][0] for i, _ in idx]).to(self.device)
            self.G(x)
        for m, mom in saved:
            m.momentum = mom
        self.G.train()
        self._log(f"BatchNorm statistics re-estimated on {batches} batches")

    def resume_command(self) -> str:
        """The exact command that continues this run."""
        return f"sar2opt-geo train {self.mode} --resume {shlex.quote(str(self.out))}"

    def _prepare_folder(self) -> None:
        cfg, out = self.cfg, self.out
        out.mkdir(parents=True, exist_ok=True)
        if not self.resume:
            for name in ("losses.csv", "metrics.csv", "log.txt"):
                (out / name).unlink(missing_ok=True)
        else:  # drop rows written after the checkpoint we resume from
            for name in ("losses.csv", "metrics.csv"):
                p = out / name
                if p.exists():
                    lines = p.read_text().splitlines(keepends=True)
                    keep = lines[:1] + [ln for ln in lines[1:] if int(ln.split(",")[0]) <= self.step]
                    p.write_text("".join(keep))
        write_split(self.split_path, self.split)
        _write_text(
            out / "run.json",
            json.dumps(
                {"mode": self.mode, "data": self.data, "base": self.base, "config": cfg.to_dict()}, indent=2
            ),
        )

    def _loader(self, start: int) -> tuple[DataLoader, int]:
        """The training DataLoader from step ``start`` and its worker count (config, else from the cores);
        at most one warning when more workers than usable cores are asked for (torch warns twice)."""
        cfg = self.cfg
        workers = cfg.num_workers if cfg.num_workers is not None else default_loader_workers()
        cores = usable_cores()
        if workers > cores:
            log.warning(
                "num_workers=%d DataLoader processes on %d usable CPU core(s) will slow training down "
                "(default: %d)",
                workers,
                cores,
                default_loader_workers(cores),
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
            loader = DataLoader(
                self.train_ds,
                batch_sampler=_StepBatches(len(self.train_ds), cfg, start, cfg.steps),
                num_workers=workers,
                collate_fn=_collate,
                pin_memory=self.device.type == "cuda",
                worker_init_fn=_loader_worker_init if workers else None,
            )
        return loader, workers

    def fit(self) -> dict:
        """Train from the current step to ``cfg.steps``. SIGINT/SIGTERM stop the run at the end of the current
        step with a full checkpoint (``summary["interrupted"]`` names the signal, ``summary["resume"]`` the
        command that continues it). A signal after the last step lets the final phase (BN re-estimation,
        validation, final save) finish."""
        stop = _StopFlag()
        stop.install()
        try:
            return self._fit(stop)
        finally:
            stop.restore()

    def _fit(self, stop: _StopFlag) -> dict:
        cfg, out = self.cfg, self.out
        self._prepare_folder()
        self.t0 = time.time()
        start = self.step
        self.G.train()
        self.D.train()
        progress = _Progress(cfg.steps, start, self.quiet)
        new_losses = not (out / "losses.csv").exists()
        lf = open(out / "losses.csv", "a", newline="")
        lw = csv.writer(lf)
        if new_losses:
            lw.writerow(["step", "g_adv", "g_l1", "d", "lr"])
        last_val = None
        stopped_early = False
        try:
            loader, workers = self._loader(start)
            self._log(
                f"{'resuming' if self.resume else 'starting'} {self.mode} at step {self.step}/{cfg.steps} "
                f"on {self.device} ({len(self.train_ds)} train / {len(self.val_ds)} val tiles, "
                f"batch {cfg.batch_size}, {workers} loader workers); generator "
                f"{self.arch} ngf={cfg.ngf}: {self.n_trainable:,} of {self.n_params:,} parameters trainable "
                f"({100 * self.fraction:.3f} %)"
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
                batches = iter(loader)
            for x, y in batches:
                losses = self.train_step(x, y)
                progress.step_done(self.step)
                lw.writerow(
                    [
                        self.step,
                        f"{losses['g_adv']:.5f}",
                        f"{losses['g_l1']:.5f}",
                        f"{losses['d']:.5f}",
                        f"{losses['lr']:.3g}",
                    ]
                )
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    progress.update(self.step, losses)
                    lf.flush()
                if self.step % cfg.val_every == 0 and self.step < cfg.steps:
                    t = time.monotonic()
                    last_val = self.validate()
                    progress.add_periodic("validation", cfg.val_every, time.monotonic() - t)
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    t = time.monotonic()
                    lf.flush()
                    self.save()
                    self._plots()
                    progress.add_periodic("checkpoint", cfg.checkpoint_every, time.monotonic() - t)
                if stop.signum is not None and self.step < cfg.steps:
                    break
                if (
                    cfg.max_wall_s is not None
                    and time.time() - self.t0 > cfg.max_wall_s
                    and self.step < cfg.steps
                ):
                    self._log(f"stopping at step {self.step}: max_wall_s={cfg.max_wall_s} reached")
                    stopped_early = True
                    break
            del batches  # shut the loader workers down before the final phase
            if stop.signum is not None and self.step < cfg.steps:
                lf.flush()
                self.save()
                self._plots()
                self._log(
                    f"interrupted by {stop.name} at step {self.step}/{cfg.steps}; checkpoint saved; "
                    f"resume with: {self.resume_command()}"
                )
                return self._summary(last_val, stopped_early=True, interrupted=stop.name)
        finally:
            lf.close()
            progress.close()
        # a signal from here on (all steps done) lets the short final phase finish: its save is the checkpoint
        if cfg.precise_bn_batches > 0 and self.lora_cfg is None:
            self.precise_bn(cfg.precise_bn_batches)
        last_val = self.validate() or last_val
        self.save(final=True)
        self._plots()
        summary = self._summary(last_val, stopped_early=stopped_early)
        self._log(f"done: {self.step} steps in {summary['wall_time_s']:.0f} s")
        return summary

    def _summary(self, last_val, *, stopped_early: bool, interrupted: str | None = None) -> dict:
        cfg, out = self.cfg, self.out
        wall = self.wall_before + (time.time() - self.t0)
        summary = {
            "mode": self.mode,
            "steps": self.step,
            "planned_steps": cfg.steps,
            "stopped_early": stopped_early,
            "interrupted": interrupted,
            "resume": self.resume_command() if self.step < cfg.steps else None,
            "wall_time_s": round(wall, 1),
            "device": str(self.device),
            "architecture": self.arch,
            "arch_args": self.arch_args,
            "parameters": self.n_params,
            "trainable_parameters": self.n_trainable,
            "trainable_fraction": self.fraction,
            "lora": self.lora_cfg.to_dict() if self.lora_cfg else None,
            "train_tiles": len(self.train_ds),
            "val_tiles": len(self.val_ds),
            "validation": last_val,
            "generator": str(out / "generator.safetensors"),
            "adapter": str(out / "adapter.safetensors") if self.lora_cfg else None,
        }
        _write_text(out / "summary.json", json.dumps(summary, indent=2))
        return summary

    def _plots(self) -> None:
        try:
            from sar2opt_geo.training.plots import plot_run

            plot_run(self.out)
        except Exception as exc:  # noqa: BLE001 - plots must never stop training
            log.warning("could not draw the loss plots: %s", exc)


def train(data, out, cfg: TrainConfig | None = None, **kw) -> dict:
    """Convenience wrapper: ``Run(data, out, cfg, **kw).fit()``."""
    return Run(data, out, cfg, **kw).fit()
