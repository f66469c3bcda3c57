"""Classical speckle filters: each against a slow per-pixel reference of its formula (mirror borders,
nodata), chunk invariance with reflect-padded halos, nodata handling, ENL estimation and option checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sar2opt_geo.errors import InputError, UsageError
from sar2opt_geo.filters import (
    FILTER_NAMES,
    REFINED_LEE_WINDOWS,
    FilterSpec,
    apply_filter,
    estimate_enl,
    filter_halo,
    gaussian_sigma,
    make_filter_spec,
)

# ----------------------------------------------------------------------------------- test scenes


def _scene(h=12, w=15, seed=0, looks=4.4, nodata=True):
    """Piecewise-constant backscatter × Gamma speckle, with nodata blocks, isolated nodata pixels and an
    isolated valid pixel surrounded by nodata."""
    rng = np.random.default_rng(seed)
    base = np.full((h, w), 0.05)
    base[:, w // 2 :] = 0.4
    base[h // 2 :, : w // 3] = 0.01
    img = (base * rng.gamma(looks, 1.0 / looks, size=(h, w))).astype(np.float32)
    valid = np.ones((h, w), dtype=bool)
    if nodata:
        valid[0:3, 0:4] = False  # corner block
        valid[rng.random((h, w)) < 0.08] = False  # scattered
        valid[h - 8 : h, w - 8 : w] = False  # block at the opposite corner...
        valid[h - 3, w - 3] = True  # ...with one isolated valid pixel inside
        img[~valid] = np.where(rng.random(np.count_nonzero(~valid)) < 0.5, np.nan, -9999.0)
    return img, valid


# ------------------------------------------------------------------------- slow references (loops)


def _mirror(i: int, n: int) -> int:
    """np.pad(mode="reflect") / scipy "mirror" index."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i %= period
    return period - i if i > n - 1 else i


def _neigh(img, valid, r, c, window):
    """[(dy, dx, value, valid)] for the window around (r, c), mirror-extended."""
    h = window // 2
    out = []
    for dy in range(-h, h + 1):
        for dx in range(-h, h + 1):
            rr, cc = _mirror(r + dy, img.shape[0]), _mirror(c + dx, img.shape[1])
            ok = bool(valid[rr, cc]) and math.isfinite(float(img[rr, cc]))
            out.append((dy, dx, float(img[rr, cc]), ok))
    return out


def _stats(vals):
    n = len(vals)
    mean = sum(vals) / n
    var = sum((v - mean) ** 2 for v in vals) / (n - 1) if n > 1 else 0.0
    return mean, var


def _ci2(mean, var):
    return var / mean**2 if mean > 0 else 0.0


def _ref_pixel(name, nb, centre, spec):
    vals = [v for _, _, v, ok in nb if ok]
    mean, var = _stats(vals)
    L = spec.enl
    cu2 = 1.0 / L
    cu, cmax = math.sqrt(cu2), math.sqrt(1 + 2 / L)
    ci2 = _ci2(mean, var)
    ci = math.sqrt(ci2)
    if name == "boxcar":
        return mean
    if name == "median":
        return float(np.median(vals))
    if name == "gaussian":
        s = gaussian_sigma(spec.window)
        num = den = 0.0
        for dy, dx, v, ok in nb:
            if ok:
                wgt = math.exp(-(dy * dy) / (2 * s * s)) * math.exp(-(dx * dx) / (2 * s * s))
                num += wgt * v
                den += wgt
        return num / den
    if name == "bilateral":
        s = gaussian_sigma(spec.window)
        sr2 = mean * mean * 2.0 / L  # σr = μ √(2/L)
        num = den = 0.0
        for dy, dx, v, ok in nb:
            if ok:
                wgt = math.exp(-(dy * dy + dx * dx) / (2 * s * s))
                if sr2 > 0:
                    wgt *= math.exp(-((v - centre) ** 2) / (2 * sr2))
                num += wgt * v
                den += wgt
        return num / den
    if name == "lee":
        if ci2 <= cu2:
            return mean
        return mean + (1 - cu2 / ci2) * (centre - mean)
    if name == "kuan":
        wgt = (1 - cu2 / ci2) / (1 + cu2) if ci2 > 0 else 0.0
        wgt = min(max(wgt, 0.0), 1.0)
        return mean + wgt * (centre - mean)
    if name == "enhanced_lee":
        if ci <= cu:
            return mean
        if ci >= cmax:
            return centre
        wgt = math.exp(-spec.damping * (ci - cu) / (cmax - ci))
        return mean * wgt + centre * (1 - wgt)
    if name == "frost":
        num = den = 0.0
        for dy, dx, v, ok in nb:
            if ok:
                wgt = math.exp(-spec.damping * ci2 * math.hypot(dy, dx))
                num += wgt * v
                den += wgt
        return num / den
    if name == "gamma_map":
        if ci <= cu:
            return mean
        if ci >= cmax:
            return centre
        alpha = (1 + cu2) / (ci2 - cu2)
        b = alpha - L - 1
        d = mean * mean * b * b + 4 * alpha * L * mean * centre
        return (b * mean + math.sqrt(d)) / (2 * alpha)
    raise AssertionError(name)


def _mmse(vals, centre, cu2):
    mean, var = _stats(vals)
    if var == 0:
        return mean
    varx = max((var - mean * mean * cu2) / (1 + cu2), 0.0)
    return mean + varx / var * (centre - mean)


def _ref_refined_lee_pixel(nb, centre, spec):
    """SNAP RefinedLee written out with loops (windows of SNAP's table)."""
    w = spec.window
    cu2 = 1.0 / spec.enl
    if not all(ok for *_, ok in nb):
        return _mmse([v for _, _, v, ok in nb if ok], centre, cu2)
    nv = [[0.0] * w for _ in range(w)]
    for dy, dx, v, _ in nb:
        nv[dy + w // 2][dx + w // 2] = v
    sub, stride = REFINED_LEE_WINDOWS[w]
    m = [[0.0] * 3 for _ in range(3)]
    for j in range(3):
        for i in range(3):
            tot = 0.0
            for y in range(j * stride, j * stride + sub):
                for x in range(i * stride, i * stride + sub):
                    tot += nv[y][x]
            m[j][i] = tot / (sub * sub)
    grads = [abs(m[1][0] - m[1][2]), abs(m[0][2] - m[2][0]), abs(m[0][1] - m[2][1]), abs(m[0][0] - m[2][2])]
    direction, best = 0, grads[0]
    for k in range(1, 4):
        if grads[k] > best:
            direction, best = k, grads[k]
    c = m[1][1]
    if direction == 0:
        d = 4 if abs(m[1][0] - c) < abs(c - m[1][2]) else 0
    elif direction == 1:
        d = 1 if abs(m[0][2] - c) < abs(c - m[2][0]) else 5
    elif direction == 2:
        d = 2 if abs(m[0][1] - c) < abs(c - m[2][1]) else 6
    else:
        d = 3 if abs(m[0][0] - c) < abs(c - m[2][2]) else 7
    h = w // 2
    pix = []
    for y in range(w):
        for x in range(w):
            inside = {
                0: x >= h,
                1: x >= y,
                2: y <= h,
                3: x < w - y,
                4: x <= h,
                5: x < y + 1,
                6: y >= h,
                7: x >= w - 1 - y,
            }[d]
            if inside:
                pix.append(nv[y][x])
    assert len(pix) == w * (w + 1) // 2
    return _mmse(pix, centre, cu2)


def _reference(img, valid, spec):
    out = np.zeros(img.shape, dtype=np.float64)
    for r in range(img.shape[0]):
        for c in range(img.shape[1]):
            if not (valid[r, c] and math.isfinite(float(img[r, c]))):
                continue
            nb = _neigh(img, valid, r, c, spec.window)
            centre = float(img[r, c])
            if spec.name == "refined_lee":
                out[r, c] = _ref_refined_lee_pixel(nb, centre, spec)
            else:
                out[r, c] = _ref_pixel(spec.name, nb, centre, spec)
    return out


def _assert_close(got, ref, rtol=1e-5):
    scale = float(np.max(np.abs(ref))) or 1.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * 1e-2 * scale)


# ------------------------------------------------------------------------------- formula tests


@pytest.mark.parametrize("name", FILTER_NAMES)
def test_filter_matches_slow_reference(name):
    img, valid = _scene()
    spec = make_filter_spec(name, window=7, enl=4.4, damping=2.0)
    got = apply_filter(img, valid, spec)
    assert got.dtype == np.float32 and got.shape == img.shape
    _assert_close(got, _reference(img, valid, spec))


@pytest.mark.parametrize(
    "name,window,enl,damping",
    [
        ("lee", 3, 1.0, 2.0),
        ("kuan", 5, 2.0, 2.0),
        ("enhanced_lee", 5, 1.0, 1.0),
        ("frost", 5, 1.0, 1.0),
        ("gamma_map", 3, 3.0, 2.0),
        ("median", 4 + 1, 4.4, 2.0),
        ("gaussian", 9, 4.4, 2.0),
        ("bilateral", 3, 1.0, 2.0),
        ("refined_lee", 5, 4.4, 2.0),
        ("refined_lee", 9, 1.0, 2.0),
    ],
)
def test_filter_options_match_reference(name, window, enl, damping):
    img, valid = _scene(h=13, w=11, seed=3, looks=enl)
    spec = make_filter_spec(name, window=window, enl=enl, damping=damping)
    _assert_close(apply_filter(img, valid, spec), _reference(img, valid, spec))


def test_refined_lee_edge_directions_on_clean_edges():
    """Clean edges in all orientations: all 8 directional windows are used and match SNAP's loops."""
    yy, xx = np.mgrid[0:15, 0:15]
    img = np.where(xx + 2 * yy > 18, 1.0, 0.1) + np.where(xx - yy > 3, 0.5, 0.0)
    img = (img * np.random.default_rng(7).gamma(30, 1 / 30, size=img.shape)).astype(np.float32)
    valid = np.ones(img.shape, dtype=bool)
    spec = make_filter_spec("refined_lee", window=7, enl=30.0)
    _assert_close(apply_filter(img, valid, spec), _reference(img, valid, spec))


def test_bands_filtered_independently():
    a, valid = _scene(seed=1)
    b, _ = _scene(seed=2)
    stack = np.stack([a, b])
    spec = make_filter_spec("lee")
    out = apply_filter(stack, valid, spec)
    assert out.shape == stack.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], apply_filter(a, valid, spec))
    np.testing.assert_array_equal(out[1], apply_filter(b, valid, spec))


# ----------------------------------------------------------------------------- chunk invariance


def _chunked(img, valid, spec, bh, bw):
    """Pipeline-style: block + halo read with np.pad(mode="reflect") outside the scene, filter, crop."""
    h = filter_halo(spec)
    ip = np.pad(img, h, mode="reflect")
    vp = np.pad(valid, h, mode="reflect")
    out = np.zeros(img.shape, dtype=np.float32)
    for r0 in range(0, img.shape[0], bh):
        for c0 in range(0, img.shape[1], bw):
            r1, c1 = min(r0 + bh, img.shape[0]), min(c0 + bw, img.shape[1])
            blk = apply_filter(
                ip[r0 : r1 + 2 * h, c0 : c1 + 2 * h], vp[r0 : r1 + 2 * h, c0 : c1 + 2 * h], spec
            )
            out[r0:r1, c0:c1] = blk[h : h + r1 - r0, h : h + c1 - c0]
    return out


@pytest.mark.parametrize("name", FILTER_NAMES)
def test_chunk_invariance(name):
    img, valid = _scene(h=40, w=47, seed=5)
    for window in (3, 7) if name != "refined_lee" else (5, 7):
        spec = make_filter_spec(name, window=window, enl=4.4)
        whole = apply_filter(img, valid, spec)
        for bh, bw in ((16, 16), (7, 20), (40, 5), (13, 47)):
            got = _chunked(img, valid, spec, bh, bw)
            rel = np.abs(got - whole) / np.maximum(np.abs(whole), 1e-12)
            assert float(rel.max()) <= 1e-5, (name, window, bh, bw, float(rel.max()))


def test_internal_strips_are_exact(monkeypatch):
    """apply_filter splits large arrays into row strips; the result must not depend on it."""
    import sar2opt_geo.filters as f

    img, valid = _scene(h=60, w=33, seed=9)
    for name in ("refined_lee", "median", "frost", "bilateral"):
        spec = make_filter_spec(name)
        whole = apply_filter(img, valid, spec)
        monkeypatch.setattr(f, "_STRIP_PIXELS", 33 * 5)
        strips = apply_filter(img, valid, spec)
        monkeypatch.undo()
        np.testing.assert_allclose(strips, whole, rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------------------- nodata


@pytest.mark.parametrize("name", FILTER_NAMES)
def test_nodata_stays_nodata(name):
    img, valid = _scene(seed=11)
    out = apply_filter(img, valid, make_filter_spec(name))
    assert np.all(out[~valid] == 0)
    assert np.all(np.isfinite(out))
    # the isolated valid pixel inside the nodata block keeps its own value
    r, c = img.shape[0] - 3, img.shape[1] - 3
    assert out[r, c] == pytest.approx(img[r, c], rel=1e-6)


def test_all_nodata_and_nan_inputs():
    img = np.full((9, 9), np.nan, dtype=np.float32)
    out = apply_filter(img, np.ones((9, 9), bool), make_filter_spec("lee"))
    assert np.all(out == 0)
    img2 = np.ones((9, 9), dtype=np.float32)
    out2 = apply_filter(img2, np.zeros((9, 9), bool), make_filter_spec("gamma_map"))
    assert np.all(out2 == 0)


def test_constant_image_is_preserved():
    img = np.full((10, 12), 0.3, dtype=np.float32)
    valid = np.ones(img.shape, bool)
    for name in FILTER_NAMES:
        np.testing.assert_allclose(apply_filter(img, valid, make_filter_spec(name)), 0.3, rtol=1e-6)


def test_small_arrays_smaller_than_window():
    img, valid = _scene(h=4, w=5, seed=4, nodata=False)
    for name in FILTER_NAMES:
        spec = make_filter_spec(name, window=7)
        _assert_close(apply_filter(img, valid, spec), _reference(img, valid, spec))


# -------------------------------------------------------------------------------------------- ENL


@pytest.mark.parametrize("looks", [1.0, 4.4, 10.0])
def test_estimate_enl_on_gamma_speckle(looks):
    rng = np.random.default_rng(int(looks * 10))
    base = np.full((256, 256), 0.1)
    base[:, 128:] = 0.6
    base[64:160, 40:200] = 0.02
    base[200:, :] *= np.linspace(0.5, 2.0, 256)[None, :]  # a ramp (mild texture)
    img = (base * rng.gamma(looks, 1.0 / looks, size=base.shape)).astype(np.float32)
    valid = np.ones(base.shape, bool)
    valid[:30, :30] = False
    enl = estimate_enl(img, valid)
    assert abs(enl - looks) / looks < 0.15, enl


def test_enl_pooled_over_sample_windows():
    from sar2opt_geo.filters import enl_from_ci2_samples, local_ci2_samples

    rng = np.random.default_rng(1)
    wins = [(0.1 * (k + 1) * rng.gamma(4.4, 1 / 4.4, size=(64, 64))).astype(np.float32) for k in range(4)]
    ok = np.ones((64, 64), bool)
    pooled = np.concatenate([local_ci2_samples(w, ok) for w in wins])
    assert abs(enl_from_ci2_samples(pooled) - 4.4) / 4.4 < 0.15
    assert enl_from_ci2_samples(pooled) == estimate_enl(np.stack(wins), ok)


def test_estimate_enl_needs_data():
    img = np.ones((20, 20), np.float32)
    with pytest.raises(InputError):
        estimate_enl(img, np.zeros((20, 20), bool))
    with pytest.raises(UsageError):
        estimate_enl(img, np.ones((20, 20), bool), window=4)


# ---------------------------------------------------------------------------------------- options


def test_bad_options():
    with pytest.raises(UsageError) as e:
        make_filter_spec("sigma_lee")
    for name in FILTER_NAMES:
        assert name in str(e.value)
    for window in (2, 4, 1, 0, -3, 6.0, True):
        with pytest.raises(UsageError):
            make_filter_spec("lee", window=window)
    for enl in (0, -1.0, float("nan"), "many", None):
        with pytest.raises(UsageError):
            make_filter_spec("lee", enl=enl)
    with pytest.raises(UsageError):
        make_filter_spec("frost", damping=-1)
    for window in (3, 19, 21):
        with pytest.raises(UsageError, match="refined_lee supports"):
            make_filter_spec("refined_lee", window=window)
    with pytest.raises(UsageError):
        FilterSpec("median", window=8)


def test_auto_enl_must_be_resolved():
    spec = make_filter_spec("lee", enl="auto")
    assert spec.enl == "auto"
    img, valid = _scene()
    with pytest.raises(UsageError, match="auto"):
        apply_filter(img, valid, spec)
    # boxcar ignores the ENL, so an unresolved "auto" is fine there
    apply_filter(img, valid, make_filter_spec("boxcar", enl="auto"))


def test_spec_dict_roundtrip_and_halo():
    spec = make_filter_spec("frost", window=9, enl=2, damping=1.5)
    d = spec.to_dict()
    assert d == {"name": "frost", "window": 9, "enl": 2.0, "damping": 1.5}
    assert FilterSpec.from_dict(d) == spec
    assert FilterSpec.from_dict({"name": "lee", "enl": "auto"}).enl == "auto"
    with pytest.raises(UsageError):
        FilterSpec.from_dict({"name": "lee", "windw": 5})
    assert filter_halo(make_filter_spec("refined_lee")) == 3
    assert filter_halo(make_filter_spec("frost", window=11)) == 5
    assert filter_halo(make_filter_spec("lee", window=3)) == 1


def test_input_shape_errors():
    with pytest.raises(InputError):
        apply_filter(np.zeros((2, 3, 4, 5), np.float32), np.ones((4, 5), bool), make_filter_spec("lee"))
    with pytest.raises(InputError):
        apply_filter(np.zeros((4, 5), np.float32), np.ones((5, 4), bool), make_filter_spec("lee"))


def test_bench_script_smoke(capsys):
    """scripts/bench_filters.py runs end to end on a tiny scene (findpeaks not needed)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_filters.py"
    mod_spec = importlib.util.spec_from_file_location("bench_filters", path)
    bench = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(bench)
    assert bench.main(["--size", "192", "--no-findpeaks", "--filters", "lee,refined_lee"]) == 0
    out = capsys.readouterr().out
    assert "| lee |" in out and "| refined_lee |" in out and "ENL homog." in out
