"""Translate, part of step 4 (write) — the output COG's overview pyramid, computed block by block.

GDAL's COG driver builds the overviews itself, in the final step, after every block is computed: it reads
the whole full-resolution output back, averages it level from level (with the mask) into temporary files,
then compresses and copies them into the COG, serially, after the last block. Each output block can instead
compute its own part of the pyramid in the ``out`` task that finishes it — in parallel with the rest of the
scene, vectorised, from the block already in memory — and the COG driver then only copies the given levels
(``OVERVIEWS=FORCE_USE_EXISTING``, see :class:`sar2opt_geo.io.CogAssembler`). On the 3072² bench output
(16 blocks, 2 cores) the COG step took 0.412 s with GDAL building the overviews and 0.298 s copying the
blocks' levels, which cost 0.052 s to compute in the blocks and 0.037 s more of staging writes
(``python scripts/bench_speed.py --cog-step --repeat 10``, medians; issue #15).

Hand-written because no maintained library computes a masked 2 × 2 average pyramid of blocks with GDAL's
rounding (GDAL does it only over a whole dataset, at the end; ``xarray.coarsen``/``dask`` have no masked
mean with round-half-up on uint8). The arithmetic is GDAL's AVERAGE as the COG driver applies it, checked
pixel for pixel against GDAL in ``tests/test_pyramid.py``:

- level *k* is computed from level *k − 1* (not from full resolution), like GDAL with its temporary files;
- a pixel is the mean of the valid pixels of its 2 × 2 source window, rounded half up
  (``(Σ + n // 2) // n``), and 0 where none is valid; its mask is "any source pixel valid";
- a level has ``ceil(size / 2)`` pixels a side (GDAL's ``gdaladdo`` convention): the window of the last
  row/column of an odd-sized level holds one source row/column.

On even sizes this is GDAL's result byte for byte. On odd sizes GDAL's COG driver makes ``floor(size / 2)``
pixels and spreads the source over them with windows that drift by up to a pixel towards the far edge; here
every window stays aligned 2 × 2, so an overview pixel of an odd-sized output lies up to half an overview
pixel from where GDAL's would (overviews are for display; the full-resolution pixels are unaffected).

A block can compute levels up to *L* only if its origin is a multiple of 2^L pixels (so its level-*k*
window starts on a whole level-*k* pixel): :func:`block_levels` gives 0 — GDAL builds the overviews, as
before — when the block size is not a multiple of 2^L.
"""

from __future__ import annotations

import math

import numpy as np

#: GDAL's COG driver adds overview levels while either side is above its BLOCKSIZE (512 px here, see
#: :func:`sar2opt_geo.io.staging_to_cog`), halving both sides (integer division) each level.
COG_BLOCKSIZE = 512

# Exact division by n ∈ {1, 2, 3, 4} of x ≤ 1022 (= 4·255 + 2) as (x · _MUL[n]) >> 17; n = 0 gives 0.
_MUL = np.array([0, 131072, 65536, 43691, 32768], dtype=np.uint32)
_HALF = np.array([0, 0, 1, 1, 2], dtype=np.uint32)


def overview_count(width: int, height: int, blocksize: int = COG_BLOCKSIZE) -> int:
    """How many overview levels GDAL's COG driver makes for a ``width`` × ``height`` output."""
    n = 0
    while width > blocksize or height > blocksize:
        width, height, n = width // 2, height // 2, n + 1
    return n


def level_shape(height: int, width: int, level: int) -> tuple[int, int]:
    """Size of overview ``level`` (1 = half resolution) of a ``height`` × ``width`` raster."""
    f = 2**level
    return math.ceil(height / f), math.ceil(width / f)


def block_levels(chunk: int, width: int, height: int) -> int:
    """Overview levels the output blocks of side ``chunk`` can compute themselves for a ``width`` ×
    ``height`` COG: all of them when ``chunk`` is a multiple of 2^levels, else 0 (GDAL builds them)."""
    n = overview_count(width, height)
    return n if n and chunk % (2**n) == 0 else 0


def downsample(rgb: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One level down: the masked 2 × 2 mean of ``rgb`` (uint8 ``(bands, h, w)``, **0 where not valid**)
    with GDAL's rounding, and its mask; ``ceil(h / 2)`` × ``ceil(w / 2)``."""
    if rgb.dtype != np.uint8:
        raise TypeError(f"downsample: uint8 expected (got {rgb.dtype})")
    h, w = valid.shape
    if h % 2 or w % 2:  # the far edge of the raster: pad with an invalid (0) row/column
        ph, pw = h + h % 2, w + w % 2
        r = np.zeros(rgb.shape[:-2] + (ph, pw), np.uint8)
        r[..., :h, :w] = rgb
        v = np.zeros((ph, pw), bool)
        v[:h, :w] = valid
        rgb, valid = r, v
    rows = rgb[..., 0::2, :].astype(np.uint16)  # pairs of rows (contiguous), then pairs of columns
    rows += rgb[..., 1::2, :]
    total = rows[..., 0::2] + rows[..., 1::2]  # ≤ 1020
    if valid.all():  # most blocks: every window has 4 valid pixels
        total += np.uint16(2)
        total >>= 2
        return total.astype(np.uint8), np.ones(total.shape[-2:], bool)
    vr = valid[0::2].view(np.uint8) + valid[1::2].view(np.uint8)
    n = vr[:, 0::2] + vr[:, 1::2]
    x = total.astype(np.uint32)
    x += _HALF[n]
    x *= _MUL[n]
    x >>= 17
    return x.astype(np.uint8), n > 0


def block_pyramid(rgb: np.ndarray, valid: np.ndarray, levels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Levels 1..``levels`` of a block (its origin a multiple of 2^levels): ``[(rgb, valid), ...]``."""
    out = []
    for _ in range(levels):
        rgb, valid = downsample(rgb, valid)
        out.append((rgb, valid))
    return out
