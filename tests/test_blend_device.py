"""Blending on the model's device: Σw·y and Σw kept as torch tensors (on the GPU for torch on CUDA) give the
same pixels as the numpy blend (≤ 1 DN; in fact the same float32 operations). Checked here with torch tensors
on the CPU, directly and through the whole translate pipeline."""

from __future__ import annotations

import numpy as np
import torch
from conftest import translate_torch

from sar2opt_geo import tasks
from sar2opt_geo.blend import Accumulator, normalise
from sar2opt_geo.radiometry import output_to_uint8
from sar2opt_geo.tiling import TileGrid


def _positions(grid: TileGrid, rows: range, cols: range):
    S = grid.stride
    r0, c0 = rows.start * S, cols.start * S
    return [(i, j, i * S - r0, j * S - c0) for i in rows for j in cols]


def test_accumulator_on_torch_tensors_matches_numpy():
    grid = TileGrid(900, 1100, 256, 64)
    rows, cols = range(0, 3), range(1, 5)  # a block of 3 x 4 tiles, including the first row (edge windows)
    pos = _positions(grid, rows, cols)
    S, T = grid.stride, grid.tile
    shape = ((len(rows) - 1) * S + T, (len(cols) - 1) * S + T)
    y = np.tanh(np.random.default_rng(0).standard_normal((len(pos), 3, T, T))).astype(np.float32)
    host = Accumulator(grid, shape)
    dev = Accumulator(grid, shape, device="cpu")
    for k in range(0, len(pos), 5):  # batches of 5, as the pipeline feeds them
        host.add(pos[k : k + 5], y[k : k + 5])
        dev.add(pos[k : k + 5], torch.from_numpy(y[k : k + 5]))
    assert isinstance(dev.sum_wy, torch.Tensor)
    whole = [(0, shape[0], 0, shape[1])]
    [(hw, hs)], _ = host.take(whole, None, (-1.0, 1.0))
    [(dw, ds)], _ = dev.take(whole, None, (-1.0, 1.0))
    assert dw.dtype == np.float32 and dw.shape == hw.shape and ds.shape == hs.shape
    np.testing.assert_allclose(dw, hw, atol=1e-6)
    np.testing.assert_allclose(ds, hs, atol=1e-6)
    assert hs.min() > 0  # every pixel of the extent is covered
    u_host = output_to_uint8(normalise(hw, hs)[0])
    u_dev = output_to_uint8(normalise(dw, ds)[0])
    assert np.abs(u_host.astype(int) - u_dev.astype(int)).max() <= 1


def test_pipeline_with_device_blending_gives_the_same_pixels(
    small_scene, tiny_model_path, tmp_path, capsys, monkeypatch
):
    def run(name):
        return translate_torch(small_scene, tmp_path / name, tiny_model_path, capsys, "--chunk-size", "384")

    host, mh = run("host.tif")
    calls = []
    real = tasks.predict_async

    def spy(ref, x, batch_size, on_device=False):
        calls.append(on_device)
        return real(ref, x, batch_size, on_device=on_device)

    monkeypatch.setattr(tasks, "blend_device", lambda ref: "cpu")  # as torch on CUDA does, on CPU tensors
    monkeypatch.setattr(tasks, "predict_async", spy)
    dev, md = run("device.tif")
    assert calls and all(calls)  # every batch stayed a torch tensor and was blended as one
    assert (md["mask"] == mh["mask"]).all()
    assert np.abs(dev.astype(int) - host.astype(int)).max() <= 1
    assert host[:, mh["mask"] > 0].std() > 3


def test_take_finishes_the_corner_where_the_sums_are_and_copies_the_rest():
    """Accumulator.take on torch tensors (normalised and converted to uint8 on the device) gives the bytes
    the numpy path gives, and the float strips it copies out are the sums themselves."""
    grid = TileGrid(900, 1100, 256, 128)
    rows, cols = range(1, 4), range(1, 5)
    pos = _positions(grid, rows, cols)
    S, T = grid.stride, grid.tile
    shape = ((len(rows) - 1) * S + T, (len(cols) - 1) * S + T)
    y = np.tanh(np.random.default_rng(1).standard_normal((len(pos), 3, T, T))).astype(np.float32)
    keep = list(range(len(pos) - 1))  # the corner tile not evaluated (nodata): a hole in the coverage
    accs = {"host": Accumulator(grid, shape), "device": Accumulator(grid, shape, device="cpu")}
    for name, acc in accs.items():
        for k in keep:
            acc.add([pos[k]], torch.from_numpy(y[k : k + 1]) if name == "device" else y[k : k + 1])
    ref_wy, ref_w = accs["host"].sum_wy.copy(), accs["host"].sum_w.copy()
    rects = [(0, 128, 0, shape[1]), (128, shape[0], 0, 128)]
    fin = (128, shape[0], 128, shape[1])
    out = {name: acc.take(rects, fin, (-1.0, 1.0)) for name, acc in accs.items()}
    for acc in accs.values():  # the pieces are copies: the block's buffers can go
        acc.sum_wy[...] = 0
        acc.sum_w[...] = 0
    for name, (pieces, (rgb, covered)) in out.items():
        for (r0, r1, c0, c1), (wy, w) in zip(rects, pieces, strict=True):
            assert isinstance(wy, np.ndarray) and wy.flags.c_contiguous, name
            np.testing.assert_allclose(wy, ref_wy[:, r0:r1, c0:c1], atol=1e-6)
            np.testing.assert_allclose(w, ref_w[r0:r1, c0:c1], atol=1e-6)
        r0, r1, c0, c1 = fin
        want_y, want_cov = normalise(ref_wy[:, r0:r1, c0:c1], ref_w[r0:r1, c0:c1])
        assert rgb.dtype == np.uint8 and rgb.shape == (3, r1 - r0, c1 - c0), name
        assert np.array_equal(covered, want_cov), name
        assert not covered.all()  # the hole is there, and 0 in the output
        assert np.abs(rgb.astype(int) - output_to_uint8(want_y).astype(int)).max() <= 1, name
    assert np.array_equal(out["host"][1][0], out["device"][1][0])  # in fact the same bytes
