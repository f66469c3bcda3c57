"""Paired SAR/optical tile datasets for training and evaluation (``torch.utils.data.Dataset``).

Layouts (detected from the folder):

* **QXSLAB-SAROPT**: ``ROOT/sar_256_oc_0.2/*.png`` ↔ ``ROOT/opt_256_oc_0.2/*.png``, paired by identical stem
  (also what :func:`sar2opt_geo.synth.write_pairs` writes);
* **SEN1-2**: ``ROOT/<terrain>/s1/<...>_s1_<...>.png`` ↔ ``ROOT/<terrain>/s2/<...>_s2_<...>.png`` (the
  optical name is the SAR name with ``_s1_`` replaced by ``_s2_``, in the sibling ``s2`` folder);
* **Zarr tile pairs** written by ``sar2opt-geo tile-pairs`` (:mod:`sar2opt_geo.training.pairs`): arrays
  ``sar`` (N, 1, T, T) uint8, ``optical`` (N, 3, T, T) uint8; its items are named ``sar/000000`` ...

Splits are SAR2Optical-compatible JSON, ``{"data": {"train": [...], "val": [...], "test": [...]}}`` listing
SAR paths relative to ROOT with forward slashes. When no split file is given, a deterministic split is
computed from the sorted pair list with ``numpy.random.default_rng(split_seed)`` (fractions
``val_fraction``/``test_fraction``, at least one val and one test item when there are 3 pairs or more); the
trainer writes it to ``RUN/split.json`` (the dataset folder is never modified) and reuses it on ``--resume``.
``evaluate`` uses ``--split-file``, else ``ROOT/split.json`` if present, else the same deterministic split
(default seed 0) — i.e. the split a training run with default settings used.

Images become float32 ``(3, H, W)`` in [−1, 1] (``v / 255 · 2 − 1``); grayscale SAR is replicated to 3
channels; RGBA optical tiles lose alpha. Augmentation (random flips and 90° rotations) applies the same
transform to both images; an item index may be an ``(index, aug_code)`` pair so that the trainer's sampler
decides augmentation deterministically (resumable runs). Corrupt PNGs are skipped with one warning counting
them; an empty folder, unpaired files, tiles of mixed sizes are :class:`~sar2opt_geo.errors.DatasetError`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sar2opt_geo.errors import DatasetError, InputError

log = logging.getLogger(__name__)

QX_SAR, QX_OPT = "sar_256_oc_0.2", "opt_256_oc_0.2"
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SPLITS = ("train", "val", "test")


def _short(items, limit=3) -> str:
    items = [str(i) for i in items]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT)


def detect_layout(root: str | os.PathLike) -> str:
    """``"qxslab"``, ``"sen12"`` or ``"zarr"``; DatasetError otherwise."""
    r = Path(root)
    if not r.exists():
        raise DatasetError(f"dataset not found: {r}")
    if r.suffix == ".zarr" or (r / "zarr.json").exists() or (r / ".zgroup").exists():
        return "zarr"
    if not r.is_dir():
        raise DatasetError(f"dataset is not a folder: {r}")
    if (r / QX_SAR).is_dir() or (r / QX_OPT).is_dir():
        return "qxslab"
    if any(d.is_dir() and (d / "s1").is_dir() for d in r.iterdir()):
        return "sen12"
    raise DatasetError(
        f"{r}: unknown dataset layout (expected {QX_SAR}/ + {QX_OPT}/ (QXSLAB-SAROPT), "
        "<terrain>/s1/ + <terrain>/s2/ (SEN1-2) or a tile-pairs .zarr)"
    )


def find_pairs(root: str | os.PathLike) -> tuple[str, list[tuple[str, str]]]:
    """``(layout, [(sar_rel, opt_rel), ...])`` sorted, relative to ROOT with forward slashes."""
    r = Path(root)
    layout = detect_layout(r)
    if layout == "zarr":
        from sar2opt_geo.training.pairs import zarr_count

        n = zarr_count(r)
        if n == 0:
            raise DatasetError(f"{r}: the tile-pairs store holds no tiles")
        return layout, [(f"sar/{i:06d}", f"optical/{i:06d}") for i in range(n)]
    pairs, unpaired = [], []
    if layout == "qxslab":
        sdir, odir = r / QX_SAR, r / QX_OPT
        for d in (sdir, odir):
            if not d.is_dir():
                raise DatasetError(f"{r}: QXSLAB layout lacks the folder {d.name}/")
        sar = {p.stem: p for p in _images(sdir)}
        opt = {p.stem: p for p in _images(odir)}
        if not sar and not opt:
            raise DatasetError(f"{r}: empty dataset (no images in {QX_SAR}/ and {QX_OPT}/)")
        unpaired += [f"{QX_SAR}/{sar[s].name}" for s in sorted(set(sar) - set(opt))]
        unpaired += [f"{QX_OPT}/{opt[s].name}" for s in sorted(set(opt) - set(sar))]
        pairs = [(f"{QX_SAR}/{sar[s].name}", f"{QX_OPT}/{opt[s].name}") for s in sorted(set(sar) & set(opt))]
    else:
        for terrain in sorted(d for d in r.iterdir() if d.is_dir()):
            s1, s2 = terrain / "s1", terrain / "s2"
            s1_files = _images(s1) if s1.is_dir() else []
            s2_files = {p.name: p for p in _images(s2)} if s2.is_dir() else {}
            matched = set()
            for p in s1_files:
                oname = p.name.replace("_s1_", "_s2_", 1) if "_s1_" in p.name else None
                if oname and oname in s2_files:
                    matched.add(oname)
                    pairs.append((f"{terrain.name}/s1/{p.name}", f"{terrain.name}/s2/{oname}"))
                else:
                    unpaired.append(f"{terrain.name}/s1/{p.name}")
            unpaired += [f"{terrain.name}/s2/{n}" for n in sorted(set(s2_files) - matched)]
        if not pairs and not unpaired:
            raise DatasetError(f"{r}: empty dataset (no images under */s1/ and */s2/)")
    if unpaired:
        raise DatasetError(f"{r}: {len(unpaired)} unpaired file(s): {_short(unpaired)}")
    return layout, sorted(pairs)


# ---------------------------------------------------------------------------------------------- splits


def make_split(
    sar_names: list[str], seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict:
    """Deterministic split of the (sorted) SAR names: ``{"data": {"train", "val", "test"}}``."""
    names = sorted(sar_names)
    n = len(names)
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction))
    if n >= 3:
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
    n_val = min(n_val, max(n - 1, 0))
    n_test = min(n_test, max(n - 1 - n_val, 0))
    pick = [names[i] for i in order]
    test, val, train = pick[:n_test], pick[n_test : n_test + n_val], pick[n_test + n_val :]
    return {"data": {"train": sorted(train), "val": sorted(val), "test": sorted(test)}}


def write_split(path: str | os.PathLike, split: dict) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(split, indent=1))
    return p


def read_split(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise DatasetError(f"split file not found: {p}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{p}: not a valid JSON split file ({exc})") from None
    data = d.get("data") if isinstance(d, dict) else None
    if not isinstance(data, dict) or not all(isinstance(data.get(k, []), list) for k in SPLITS):
        raise DatasetError(
            f'{p}: a split file must look like {{"data": {{"train": [...], "val": [...], "test": [...]}}}}'
        )
    return {"data": {k: [str(x).replace("\\", "/") for x in data.get(k, [])] for k in SPLITS}}


# --------------------------------------------------------------------------------------------- dataset


def to_model_range(u8: np.ndarray) -> np.ndarray:
    """uint8 ``(C, H, W)`` → float32 in [−1, 1] (``v / 255 · 2 − 1``)."""
    return u8.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def _to3(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.shape[0] == 1:
        return np.repeat(arr, 3, axis=0)
    if arr.shape[0] == 2:  # gray + alpha
        return np.repeat(arr[:1], 3, axis=0)
    if arr.shape[0] >= 3:
        return arr[:3]
    raise DatasetError(f"{what}: unexpected channel count {arr.shape[0]}")


#: Sub-pixel phases of the resampling augmentation per axis (offsets ``q / RESAMPLE_PHASES − ½`` px).
RESAMPLE_PHASES = 16


def resample_code(qy, qx):
    """The augmentation-code bits (above the dihedral bits 0-2) of a resampling at phases (qy, qx) (integers
    or integer arrays)."""
    return 8 * (1 + qy * RESAMPLE_PHASES + qx)


def resample_offsets(code: int) -> tuple[float, float] | None:
    """The sub-pixel offsets (dy, dx) in ``[−½, ½)`` px that ``code``'s resampling bits ask for, or None."""
    phase = (code >> 3) - 1
    if phase < 0:
        return None
    qy, qx = divmod(phase, RESAMPLE_PHASES)
    return qy / RESAMPLE_PHASES - 0.5, qx / RESAMPLE_PHASES - 0.5


def _shift_axis(x: np.ndarray, f: float, axis: int) -> np.ndarray:
    """Linear interpolation of ``x`` at ``i + f`` (``−½ ≤ f < ½``) along ``axis``, edges replicated."""
    n = x.shape[axis]
    idx = np.arange(n)
    if f >= 0:
        nb, w = np.minimum(idx + 1, n - 1), f
    else:
        nb, w = np.maximum(idx - 1, 0), -f
    return (1 - w) * x + w * np.take(x, nb, axis=axis)


def resample_levels(
    sar: np.ndarray, dy: float, dx: float, clip_db: tuple[float, float] = (-25.0, 0.0)
) -> np.ndarray:
    """8-bit dB levels ``(C, H, W)`` resampled bilinearly at sub-pixel offsets (dy, dx) in ``[−½, ½)`` px.

    What a map projection of radar-geometry data does to a tile: the levels go back to linear intensity
    (``clip_db`` is the 8-bit stretch: level 0 = low dB, 255 = high dB), are interpolated there (bilinear on
    linear intensity, as ``--warp`` does), and return to levels rounded as
    :func:`sar2opt_geo.synth.sar_to_uint8` rounds. Interpolation averages neighbouring speckle: the
    texture becomes smoother (higher ENL) and more correlated by an amount that depends on the phase, which
    differs from tile to tile, as it varies across a warped scene. A model trained with it does not depend on
    one speckle texture.
    """
    lo, hi = (float(v) for v in clip_db)
    db = sar.astype(np.float64) * ((hi - lo) / 255.0) + lo
    lin = np.power(10.0, db / 10.0)
    lin = _shift_axis(_shift_axis(lin, float(dy), axis=1), float(dx), axis=2)
    back = 10.0 * np.log10(np.maximum(lin, 1e-30))
    val = (np.clip(back, lo, hi) - lo) * (255.0 / (hi - lo))
    return (val + 0.5).astype(np.uint8)


def resample_composite(sar: np.ndarray, dy: float, dx: float, radiometry) -> np.ndarray:
    """:func:`resample_levels` for a dual-pol composite (VV, VH, VV/VH levels of ``radiometry``, a
    :class:`~sar2opt_geo.radiometry.Radiometry` with ``ratio_clip``): VV and VH go back to linear intensity,
    are interpolated there, and the composite of the result is formed again (its ratio channel from the
    interpolated bands, as a warped dual-pol scene gives it)."""
    from sar2opt_geo.radiometry import composite_levels

    clips = radiometry.band_clips
    (vlo, vhi), (hlo, hhi) = clips[0], clips[min(1, len(clips) - 1)]
    rlo, rhi = radiometry.ratio_clip
    level = sar.astype(np.float64) + 0.5  # the middle of each floor-quantised level
    vv = level[0] * ((vhi - vlo) / 255.0) + vlo
    vh = level[1] * ((hhi - hlo) / 255.0) + hlo
    ratio = level[2] * ((rhi - rlo) / 255.0) + rlo
    # a band clipped at its bound lost its value: the other band and the ratio channel still tell it
    ratio_ok = (sar[2] > 0) & (sar[2] < 255)
    vh = np.where(
        ((sar[1] == 0) | (sar[1] == 255)) & ratio_ok & (sar[0] > 0) & (sar[0] < 255), vv - ratio, vh
    )
    vv = np.where(((sar[0] == 0) | (sar[0] == 255)) & ratio_ok, vh + ratio, vv)
    lin = np.power(10.0, np.stack([vv, vh]) / 10.0)
    lin = _shift_axis(_shift_axis(lin, float(dy), axis=1), float(dx), axis=2)
    return composite_levels(lin.astype(np.float32), radiometry)


def augment_pair(sar: np.ndarray, opt: np.ndarray, code: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply the same dihedral transform (``code`` bits 0-2: bit 2 = horizontal flip, bits 0-1 = 90° turns).

    Bits above (``code >> 3``, see :func:`resample_code`) are the SAR-only resampling of
    :meth:`PairedTileDataset.__getitem__`, ignored here."""
    k, flip = code & 3, (code >> 2) & 1
    out = []
    for a in (sar, opt):
        if flip:
            a = a[:, :, ::-1]
        if k:
            a = np.rot90(a, k, axes=(1, 2))
        out.append(np.ascontiguousarray(a))
    return out[0], out[1]


class PairedTileDataset(Dataset):
    """SAR/optical tile pairs of one split. Items: ``(sar, optical)``, float32 ``(3, H, W)`` in [−1, 1].

    ``split`` is ``"train"``, ``"val"``, ``"test"`` or ``"all"``; ``split_data`` a split dict (see module doc)
    or None for the deterministic default split. ``augment=True`` draws a random dihedral transform per item
    (from ``np.random``) unless the index is an ``(index, aug_code)`` pair. A code with resampling bits
    (:func:`resample_code`, drawn by the trainer's sampler with probability ``resample_augment``) first
    resamples the SAR tile at that sub-pixel phase (:func:`resample_levels`, in the dB stretch
    ``resample_clip_db``); the optical tile is left as it is (a shift of at most ½ px).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        split_data: dict | None = None,
        augment: bool = False,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        check: bool = True,
        resample_clip_db=(-25.0, 0.0),
    ):
        self.root = Path(root)
        self.layout, pairs = find_pairs(self.root)
        self.augment = augment
        # the 8-bit tiles' dB stretch: a (lo, hi) pair, or the tiles' Radiometry (a dual-pol composite)
        self.resample_clip_db = resample_clip_db
        by_sar = dict(pairs)
        if split_data is None:
            split_data = make_split(list(by_sar), split_seed, val_fraction, test_fraction)
        self.split_data = split_data
        if split == "all":
            names = sorted(by_sar)
        else:
            if split not in SPLITS:
                raise DatasetError(f"unknown split {split!r} (train, val, test or all)")
            names = list(split_data["data"].get(split, []))
            missing = [n for n in names if n not in by_sar]
            if missing:
                raise DatasetError(
                    f"{self.root}: the split lists {len(missing)} SAR tile(s) not in the dataset: "
                    f"{_short(missing)}"
                )
        self.split = split
        self.items = [(n, by_sar[n]) for n in names]
        self._zarr = None
        self.tile_size = None
        if check:
            self._check()

    def _check(self) -> None:
        if self.layout == "zarr":
            from sar2opt_geo.training.pairs import zarr_tile_shape

            self.tile_size = zarr_tile_shape(self.root)
            return
        from sar2opt_geo.io import probe_image

        good, bad, sizes = [], [], {}
        for sar_rel, opt_rel in self.items:
            try:
                _, sh, sw = probe_image(self.root / sar_rel)
                _, oh, ow = probe_image(self.root / opt_rel)
            except InputError:
                bad.append(sar_rel)
                continue
            if (sh, sw) != (oh, ow):
                raise DatasetError(
                    f"{self.root}: {sar_rel} is {sw}x{sh} but its optical tile {opt_rel} is {ow}x{oh}"
                )
            sizes.setdefault((sh, sw), sar_rel)
            good.append((sar_rel, opt_rel))
        if bad:
            log.warning(
                "skipped %d corrupt/unreadable image pair(s) in %s: %s", len(bad), self.root, _short(bad)
            )
        if len(sizes) > 1:
            desc = "; ".join(f"{w}x{h} (e.g. {n})" for (h, w), n in sizes.items())
            raise DatasetError(f"{self.root}: tiles of mixed sizes: {desc}")
        self.items = good
        self.skipped = bad
        self.tile_size = next(iter(sizes)) if sizes else None

    def __len__(self) -> int:
        return len(self.items)

    def names(self) -> list[str]:
        return [s for s, _ in self.items]

    def read_uint8(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(sar (1|3, H, W), optical (3, H, W))`` uint8 arrays of item ``i``."""
        sar_rel, opt_rel = self.items[i]
        if self.layout == "zarr":
            from sar2opt_geo.training.pairs import open_pairs_store

            if self._zarr is None:
                self._zarr = open_pairs_store(self.root)
            idx = int(sar_rel.split("/")[-1])
            return np.asarray(self._zarr["sar"][idx]), np.asarray(self._zarr["optical"][idx])
        from sar2opt_geo.io import read_png

        try:
            return read_png(self.root / sar_rel), read_png(self.root / opt_rel)
        except InputError as exc:
            raise DatasetError(str(exc)) from None

    def __getitem__(self, index):
        code = None
        if isinstance(index, (tuple, list)):
            index, code = int(index[0]), int(index[1])
        sar, opt = self.read_uint8(index)
        return self.prepare(sar, opt, index, code)

    def prepare(self, sar: np.ndarray, opt: np.ndarray, index: int, code: int | None = None):
        """Item ``index``'s uint8 arrays → augmented model-range tensors (``code``: see the class doc)."""
        sar, opt = _to3(sar, self.items[index][0]), _to3(opt, self.items[index][1])
        if self.augment:
            if code is None:
                code = int(np.random.randint(0, 8))
            offsets = resample_offsets(code)
            if offsets is not None:
                sar = self._resample(sar, offsets)
            sar, opt = augment_pair(sar, opt, code)
        return torch.from_numpy(to_model_range(sar)), torch.from_numpy(to_model_range(opt))

    def _resample(self, sar: np.ndarray, offsets: tuple[float, float]) -> np.ndarray:
        rad = self.resample_clip_db
        if rad is None or isinstance(rad, tuple):
            return resample_levels(sar, *offsets, rad or (-25.0, 0.0))
        if rad.ratio_clip is not None:
            return resample_composite(sar, *offsets, rad)
        return resample_levels(sar, *offsets, rad.band_clips[0])

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_zarr"] = None
        return d


def tiles_are_composite(ds: PairedTileDataset) -> bool:
    """Whether the SAR tiles are a dual-pol composite: three channels that differ (judged on the first tile;
    grey tiles saved as RGB have equal channels)."""
    if len(ds) == 0:
        return False
    sar, _ = ds.read_uint8(0)
    return sar.shape[0] >= 3 and not (np.array_equal(sar[0], sar[1]) and np.array_equal(sar[0], sar[2]))


def check_tiles_fit(radiometry: dict | None, ds: PairedTileDataset, what: str = "the model") -> None:
    """DatasetError when the SAR tiles are not what a model of ``radiometry`` reads: the dual-pol composite
    (three different channels) for a model with a ``ratio_clip``, one grey band otherwise (grey tiles saved
    as RGB, with equal channels, are grey). Judged on the first tile."""
    if len(ds) == 0:
        return
    composite_tiles = tiles_are_composite(ds)
    composite_model = bool((radiometry or {}).get("ratio_clip"))
    if composite_model and not composite_tiles:
        raise DatasetError(
            f"{what} reads the dual-pol composite (VV, VH, VV/VH) but the SAR tiles of {ds.root} are one "
            "grey band; write dual-pol tiles (synth pairs --dual-pol, tile-pairs --dual-pol) or use a "
            "single-pol model"
        )
    if composite_tiles and not composite_model:
        raise DatasetError(
            f"the SAR tiles of {ds.root} have three different channels (a dual-pol composite?) but {what} "
            "reads one grey band; use a dual-pol model (radiometry with ratio_clip) or grey tiles"
        )


def open_dataset(
    root: str | os.PathLike,
    split: str = "train",
    split_file: str | os.PathLike | None = None,
    augment: bool = False,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> PairedTileDataset:
    """A split of ``root``: from ``split_file``, else ``ROOT/split.json``, else the default split."""
    split_data = None
    if split_file is not None:
        split_data = read_split(split_file)
    elif Path(root).is_dir() and (Path(root) / "split.json").is_file():
        split_data = read_split(Path(root) / "split.json")
    ds = PairedTileDataset(root, split, split_data, augment, split_seed, val_fraction, test_fraction)
    if len(ds) == 0:
        raise DatasetError(f"{root}: the {split!r} split is empty")
    return ds
