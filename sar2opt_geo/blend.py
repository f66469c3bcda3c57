"""Blending of overlapping tile predictions: Σ(w·y) / Σ(w) with a separable raised-cosine window.

Per axis the window ramps up over the first ``overlap`` pixels and down over the last ``overlap`` pixels
(``0.5·(1 − cos(π(k + ½)/overlap))``), flat in between; at 50 % overlap that is a Hann window. Opposite ramps
sum to exactly 1, so in the interior the weights form a partition of unity. Tiles on the first/last row or
column of the grid keep weight 1 on their outer side, so weights are never 0 (nor tiny) at the scene border.

Hand-written: a few lines of numpy; partial sums are combined by :mod:`sar2opt_geo.tasks`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from sar2opt_geo.tiling import TileGrid


@lru_cache(maxsize=64)
def axis_window(tile: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    w = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        k = np.arange(overlap, dtype=np.float64)
        ramp = (0.5 * (1.0 - np.cos(np.pi * (k + 0.5) / overlap))).astype(np.float32)
        if not first:
            w[:overlap] = ramp
        if not last:
            w[tile - overlap :] = ramp[::-1]
    w.setflags(write=False)
    return w


def tile_window(grid: TileGrid, i: int, j: int) -> np.ndarray:
    """The ``(tile, tile)`` blending weights of tile ``(i, j)`` of ``grid``."""
    wr = axis_window(grid.tile, grid.overlap, i == 0, i == grid.n_rows - 1)
    wc = axis_window(grid.tile, grid.overlap, j == 0, j == grid.n_cols - 1)
    return np.outer(wr, wc)


def normalise(sum_wy: np.ndarray, sum_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Σw·y / Σw, covered)``; pixels no evaluated tile covered get 0 and ``covered`` False."""
    covered = sum_w > 0
    y = np.zeros_like(sum_wy)
    np.divide(sum_wy, sum_w[None], out=y, where=covered[None])
    return y, covered
