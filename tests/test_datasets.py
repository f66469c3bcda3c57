"""Paired-tile datasets: layouts, splits, augmentation, bad inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from sar2opt_geo.errors import DatasetError
from sar2opt_geo.training.datasets import (
    PairedTileDataset,
    augment_pair,
    find_pairs,
    make_split,
    open_dataset,
    read_split,
    write_split,
)


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _qx(root, n=5, size=32, seed=0, same=False):
    rng = np.random.default_rng(seed)
    for i in range(n):
        s = rng.integers(0, 256, (size, size), dtype=np.uint8)
        o = np.stack([s] * 3, -1) if same else rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        _png(root / "sar_256_oc_0.2" / f"{i:03d}.png", s)
        _png(root / "opt_256_oc_0.2" / f"{i:03d}.png", o)
    return root


def test_qxslab_layout_and_ranges(tmp_path):
    from sar2opt_geo.synth import write_pairs

    write_pairs(tmp_path, 3, seed=1, tile=32)
    layout, pairs = find_pairs(tmp_path)
    assert layout == "qxslab" and len(pairs) == 3
    assert pairs[0] == ("sar_256_oc_0.2/00000.png", "opt_256_oc_0.2/00000.png")
    ds = PairedTileDataset(tmp_path, "all")
    x, y = ds[0]
    assert x.shape == y.shape == (3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1 and y.min() >= -1 and y.max() <= 1
    assert np.array_equal(x[0].numpy(), x[2].numpy())  # grayscale replicated
    raw, _ = ds.read_uint8(0)
    assert np.allclose(x[0].numpy(), raw[0] / 255 * 2 - 1, atol=1e-6)


def test_sen12_layout(tmp_path):
    rng = np.random.default_rng(0)
    for terrain in ("ROIs1158_spring_1", "ROIs1868_summer_2"):
        for p in (1, 2):
            _png(
                tmp_path / terrain / "s1" / f"{terrain}_s1_p{p}.png",
                rng.integers(0, 255, (16, 16), dtype=np.uint8),
            )
            _png(
                tmp_path / terrain / "s2" / f"{terrain}_s2_p{p}.png",
                rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
            )
    layout, pairs = find_pairs(tmp_path)
    assert layout == "sen12" and len(pairs) == 4
    assert (
        "ROIs1158_spring_1/s1/ROIs1158_spring_1_s1_p1.png",
        "ROIs1158_spring_1/s2/ROIs1158_spring_1_s2_p1.png",
    ) in pairs
    assert len(PairedTileDataset(tmp_path, "all")) == 4
    (tmp_path / "ROIs1868_summer_2" / "s2" / "ROIs1868_summer_2_s2_p2.png").unlink()
    with pytest.raises(DatasetError, match="unpaired.*ROIs1868_summer_2_s1_p2.png"):
        find_pairs(tmp_path)


def test_split_deterministic_and_round_trip(tmp_path):
    names = [f"sar_256_oc_0.2/{i:03d}.png" for i in range(40)]
    a, b, c = make_split(names, 0), make_split(names, 0), make_split(names, 1)
    assert a == b and a != c
    d = a["data"]
    assert len(d["val"]) == 4 and len(d["test"]) == 4 and len(d["train"]) == 32
    assert sorted(d["train"] + d["val"] + d["test"]) == names
    p = write_split(tmp_path / "split.json", a)
    assert read_split(p) == a
    _qx(tmp_path / "ds", 6)
    write_split(
        tmp_path / "ds" / "split.json", {"data": {"train": ["sar_256_oc_0.2/000.png"], "val": [], "test": []}}
    )
    assert open_dataset(tmp_path / "ds", "train").names() == ["sar_256_oc_0.2/000.png"]
    write_split(tmp_path / "bad.json", {"data": {"train": ["sar_256_oc_0.2/zzz.png"]}})
    with pytest.raises(DatasetError, match="zzz.png"):
        open_dataset(tmp_path / "ds", "train", tmp_path / "bad.json")


def test_augmentation_same_for_both(tmp_path):
    _qx(tmp_path, 2, size=16, same=True)
    ds = PairedTileDataset(tmp_path, "all", augment=True)
    seen = set()
    for code in range(8):
        x, y = ds[(0, code)]
        assert np.array_equal(x.numpy(), y.numpy())
        seen.add(x.numpy().tobytes())
    assert len(seen) == 8  # the 8 dihedral transforms differ
    s = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    a, b = augment_pair(s, np.repeat(s, 3, 0), 5)
    assert np.array_equal(b[1], a[0])


def test_empty_unpaired_mixed_sizes(tmp_path):
    (tmp_path / "e" / "sar_256_oc_0.2").mkdir(parents=True)
    (tmp_path / "e" / "opt_256_oc_0.2").mkdir()
    with pytest.raises(DatasetError, match="empty dataset"):
        find_pairs(tmp_path / "e")
    _qx(tmp_path / "u", 3)
    (tmp_path / "u" / "opt_256_oc_0.2" / "001.png").unlink()
    with pytest.raises(DatasetError, match=r"1 unpaired file\(s\): sar_256_oc_0.2/001.png"):
        find_pairs(tmp_path / "u")
    _qx(tmp_path / "m", 3, size=32)
    _qx(tmp_path / "m2", 1, size=16)
    for sub in ("sar_256_oc_0.2", "opt_256_oc_0.2"):
        (tmp_path / "m2" / sub / "000.png").rename(tmp_path / "m" / sub / "009.png")
    with pytest.raises(DatasetError, match="mixed sizes"):
        PairedTileDataset(tmp_path / "m", "all")
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        find_pairs(tmp_path / "m" / "sar_256_oc_0.2")


def test_corrupt_png_skipped_with_count(tmp_path, caplog):
    _qx(tmp_path, 5)
    (tmp_path / "sar_256_oc_0.2" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "opt_256_oc_0.2" / "004.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        ds = PairedTileDataset(tmp_path, "all")
    assert len(ds) == 3
    assert "skipped 2 corrupt" in caplog.text


def _levels_to_linear(u8):
    return 10 ** ((u8.astype(float) * 25 / 255 - 25) / 10)


def test_resample_levels_is_bilinear_on_linear_intensity():
    from sar2opt_geo.training.datasets import resample_levels

    rng = np.random.default_rng(3)
    lin = rng.gamma(4.4, 0.05 / 4.4, size=(1, 64, 64))
    from sar2opt_geo.synth import sar_to_uint8

    u = sar_to_uint8(lin[0])[None]
    assert np.array_equal(resample_levels(u, 0.0, 0.0), u)  # zero offset: the same levels
    flat = np.full((1, 8, 8), 140, np.uint8)
    assert np.array_equal(resample_levels(flat, -0.5, 0.25), flat)  # a constant stays constant
    # one bright pixel on a dark floor: at offsets (+0.25, -0.5) its linear intensity spreads with the
    # bilinear weights (0.75 · 0.5 at its own place, 0.25 · 0.5 from below, ... ) and nothing else changes
    spot = np.zeros((1, 9, 9), np.uint8)
    spot[0, 4, 4] = 255
    out = _levels_to_linear(resample_levels(spot, 0.25, -0.5))[0]
    floor = _levels_to_linear(np.uint8(0))
    excess = (out - floor) / (1.0 - floor)
    want = np.zeros((9, 9))
    want[4, 4], want[4, 5], want[3, 4], want[3, 5] = 0.375, 0.375, 0.125, 0.125
    assert np.allclose(excess, want, atol=0.03)  # within the 8-bit rounding of the levels
    # interpolation averages speckle: its ENL rises, most at half a pixel
    half = _levels_to_linear(resample_levels(u, -0.5, -0.5))
    quarter = _levels_to_linear(resample_levels(u, 0.25, 0.0))
    lin_u = _levels_to_linear(u)

    def enl(x):
        return x.mean() ** 2 / x.var()

    assert enl(lin_u) < enl(quarter) < enl(half)
    assert enl(half) > 1.8 * enl(lin_u)


def test_resampling_codes_resample_the_sar_tile_only(tmp_path):
    from sar2opt_geo.training.datasets import (
        RESAMPLE_PHASES,
        resample_code,
        resample_levels,
        resample_offsets,
    )

    _qx(tmp_path, 2, size=16)
    ds = PairedTileDataset(tmp_path, "all", augment=True)
    sar, opt = ds.read_uint8(1)
    for code in (3, 5 + resample_code(0, 12), resample_code(RESAMPLE_PHASES - 1, 3)):
        x, y = ds[(1, code)]
        qy, qx = divmod((code >> 3) - 1, RESAMPLE_PHASES) if code >= 8 else (8, 8)  # (8, 8): no offset
        shifted = resample_levels(sar, qy / RESAMPLE_PHASES - 0.5, qx / RESAMPLE_PHASES - 0.5)
        assert resample_offsets(code) == (None if code < 8 else (qy / 16 - 0.5, qx / 16 - 0.5))
        xs, ys = augment_pair(np.repeat(shifted, 3, 0), opt, code & 7)
        assert np.allclose(x.numpy(), xs / 255 * 2 - 1, atol=1e-6)
        assert np.allclose(y.numpy(), ys / 255 * 2 - 1, atol=1e-6)  # optical: the dihedral transform only
    assert not np.array_equal(ds[(1, 0)][0].numpy(), ds[(1, resample_code(0, 0))][0].numpy())
