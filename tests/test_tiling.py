import numpy as np
import pytest

from sar2opt_geo.blend import axis_window, tile_window
from sar2opt_geo.errors import UsageError
from sar2opt_geo.io import reflect_index
from sar2opt_geo.tiling import BlockPlan, TileGrid


@pytest.mark.parametrize("h,w", [(1, 1), (100, 300), (256, 256), (257, 1000), (2500, 3000)])
def test_grid_covers_scene(h, w):
    g = TileGrid(h, w, 256, 64)
    ph, pw = g.padded_shape()
    assert ph >= h and pw >= w
    # the last tile starts inside the scene: no tile is pure padding
    assert (g.n_rows - 1) * g.stride < h and (g.n_cols - 1) * g.stride < w


@pytest.mark.parametrize("chunk", [192, 500, 768, 2048])
def test_every_tile_owned_exactly_once(chunk):
    g = TileGrid(2500, 3000, 256, 64)
    plan = BlockPlan.create(g, chunk)
    assert plan.chunk % g.stride == 0
    owned = np.zeros((g.n_rows, g.n_cols), dtype=int)
    for b in plan.blocks:
        owned[b.ti0 : b.ti1, b.tj0 : b.tj1] += 1
        # contributors cover the block and include the block itself when it owns tiles
        cons = plan.contributors(b)
        assert (b in cons) == (b.n_tiles > 0)
    assert (owned == 1).all()


def test_contributors_reach_every_pixel_of_every_tile():
    g = TileGrid(1000, 900, 256, 128)
    plan = BlockPlan.create(g, 128)  # chunk smaller than the spill: reach > 1 block
    cover = np.zeros((1000, 900), dtype=int)
    for b in plan.blocks:
        for c in plan.contributors(b):
            r0, r1, c0, c1 = c.acc_bounds
            a0, a1 = max(r0, b.row0), min(r1, b.row1)
            b0, b1 = max(c0, b.col0), min(c1, b.col1)
            cover[a0:a1, b0:b1] += 1
    # every pixel receives the partial sums of all blocks owning tiles over it
    expected = np.zeros_like(cover)
    for b in plan.blocks:
        if b.n_tiles:
            r0, r1, c0, c1 = b.acc_bounds
            expected[r0:r1, c0:c1] += 1
    assert (cover == expected).all()


def test_bad_grid_options():
    with pytest.raises(UsageError):
        TileGrid(100, 100, 256, 256)
    with pytest.raises(UsageError):
        TileGrid(100, 100, 250, 10)
    with pytest.raises(UsageError):
        BlockPlan.create(TileGrid(100, 100), 0)


def test_window_partition_of_unity_and_hann():
    g = TileGrid(1000, 1000, 256, 64)
    acc = np.zeros((1000 + 256, 1000 + 256))
    for i in range(g.n_rows):
        for j in range(g.n_cols):
            r, c = g.origin(i, j)
            acc[r : r + 256, c : c + 256] += tile_window(g, i, j)
    assert np.allclose(acc[:1000, :1000], 1.0, atol=1e-6)
    # 50 % overlap: a Hann window, never 0
    w = axis_window(256, 128, False, False)
    assert np.allclose(w, np.sin(np.pi * (np.arange(256) + 0.5) / 256) ** 2, atol=1e-6)
    assert w.min() > 0
    # outer sides of edge tiles keep weight 1 at the scene border
    assert axis_window(256, 64, True, False)[0] == 1.0
    assert axis_window(256, 64, False, True)[-1] == 1.0


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_reflect_index_matches_numpy_pad(n):
    a = np.arange(n)
    pad = 40
    ref = np.pad(a, pad, mode="reflect") if n > 1 else np.zeros(n + 2 * pad, dtype=int)
    got = a[reflect_index(np.arange(-pad, n + pad), n)]
    assert (got == ref).all()
