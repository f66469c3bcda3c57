"""Side-by-side previews (SAR | translated | optical truth) of whole scenes, from decimated reads."""

from __future__ import annotations

import numpy as np

from sar2opt_geo import io
from sar2opt_geo.radiometry import from_linear


def sar_display(linear: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear σ⁰ to an 8-bit grey image (dB clipped to [−25, 0]), nodata black."""
    db = np.clip(from_linear(np.maximum(linear, 0), "db"), -25, 0)
    u8 = np.round((db + 25) / 25 * 255).astype(np.uint8)
    u8[~valid] = 0
    return u8


def aligned_overview(grid_path: str, path: str, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A decimated read of raster ``path`` on the grid of raster ``grid_path`` (warped onto it when the grids
    differ), at the decimation :func:`io.read_overview` uses for ``grid_path``: ``(data, mask)``."""
    grid, other = io.open_scene(grid_path), io.open_scene(path)
    f = max(1, int(np.ceil(max(grid.width, grid.height) / max_size)))
    w = io.read_aligned_window(grid, other, 0, 0, grid.height, grid.width, resampling="nearest")
    return w.optical[:, ::f, ::f], w.optical_valid[::f, ::f].astype(np.uint8) * 255


def side_by_side(
    sar_path: str,
    translated_path: str,
    truth_path: str | None,
    out_png: str,
    max_size: int = 900,
    align_truth: bool = False,
):
    """Write a PNG with the SAR input, the translation and (when given) the optical truth side by side;
    ``align_truth`` reads the truth on the translation's grid (when its extent differs)."""
    sar, smask = io.read_overview(sar_path, max_size)
    grey = sar_display(sar[0].astype(np.float32), smask > 0)
    panels = [np.repeat(grey[None], 3, axis=0)]
    for path in (translated_path, truth_path):
        if path is None:
            continue
        if align_truth and path == truth_path:
            rgb, mask = aligned_overview(translated_path, path, max_size)
        else:
            rgb, mask = io.read_overview(path, max_size)
        rgb = rgb[:3].astype(np.uint8)
        rgb[:, mask == 0] = 0
        h, w = panels[0].shape[1:]
        panels.append(rgb[:, :h, :w])
    h = min(p.shape[1] for p in panels)
    gap = np.full((3, h, 8), 255, np.uint8)
    row = []
    for i, p in enumerate(panels):
        if i:
            row.append(gap)
        row.append(p[:, :h])
    io.write_png(out_png, np.concatenate(row, axis=2))
