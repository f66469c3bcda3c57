"""``sar2opt-geo info``: what a scene is and the work ``translate`` would do on it (no model is run).

Reads the metadata and a decimated overview through :mod:`sar2opt_geo.io`. Every size and grid is printed
width first: ``W x H`` pixels, ``columns x rows`` of tiles or blocks.
"""

from __future__ import annotations

import math

import numpy as np

from sar2opt_geo import io
from sar2opt_geo.tiling import BlockPlan, TileGrid


def estimated_evaluations(grid: TileGrid, valid: np.ndarray) -> int:
    """Tiles of ``grid`` holding a valid pixel, judged on ``valid``, a decimated mask of the scene."""
    fy, fx = valid.shape[0] / grid.height, valid.shape[1] / grid.width
    n_eval = 0
    for i in range(grid.n_rows):
        for j in range(grid.n_cols):
            r0, c0 = grid.origin(i, j)
            r1, c1 = min(r0 + grid.tile, grid.height), min(c0 + grid.tile, grid.width)
            a0, a1 = int(r0 * fy), max(int(r0 * fy) + 1, int(math.ceil(r1 * fy)))
            b0, b1 = int(c0 * fx), max(int(c0 * fx) + 1, int(math.ceil(c1 * fx)))
            n_eval += bool(valid[a0:a1, b0:b1].any())
    return n_eval


def describe_scene(input_path: str, tile: int, overlap: int, chunk: int, allow_ungeoreferenced: bool) -> dict:
    """What ``sar2opt-geo info`` prints: metadata, nodata share and the tile grid for the given options."""
    scene = io.open_scene(input_path, allow_ungeoreferenced=allow_ungeoreferenced)
    grid = TileGrid(scene.height, scene.width, tile, overlap)
    plan = BlockPlan.create(grid, chunk, scene.block_shape if scene.tiled else None)
    _, mask = io.read_overview(scene.path, max_size=1024)
    valid = mask > 0
    return {
        "path": scene.path,
        "size": f"{scene.width} x {scene.height}",
        "bands": ", ".join(scene.band_names()),
        "dtype": scene.dtype,
        "nodata": scene.nodata,
        "crs": (scene.crs.to_string() if scene.crs else None) if not scene.gcps else None,
        "transform": list(scene.transform) if scene.transform else None,
        "gcps": f"{len(scene.gcps)} GCPs in {io.CRS.from_wkt(scene.gcp_crs_wkt).to_string()}"
        if scene.gcps
        else None,
        "block_shape": f"{scene.block_shape[1]} x {scene.block_shape[0]}",
        "nodata_share": round(1.0 - float(valid.mean()), 4),
        "tile_grid": f"{grid.n_cols} x {grid.n_rows} tiles (columns x rows) of {tile} px, overlap {overlap}, "
        f"stride {grid.stride}",
        "tiles": grid.count,
        "dask_blocks": f"{plan.n_bcols} x {plan.n_brows} blocks (columns x rows) of {plan.chunk} px",
        "estimated_model_evaluations": estimated_evaluations(grid, valid),
    }
