"""``sar2opt-geo filter``: a speckle-filtered float32 COG on the input's grid, block by block on Dask.

Reuses the translate path's reading (:func:`sar2opt_geo.tasks.read_linear`: each block reads its filter
halo, so the result equals filtering the whole scene) and its input-scale / ``--enl auto`` sampling
(:mod:`sar2opt_geo.sampling`); blocks go to a temporary Zarr block store, then into the COG.
"""

from __future__ import annotations

import numpy as np

from sar2opt_geo import __version__, defaults, io
from sar2opt_geo.errors import InputError
from sar2opt_geo.filters import FilterSpec
from sar2opt_geo.plan import Conditioning, select_bands
from sar2opt_geo.radiometry import from_linear
from sar2opt_geo.sampling import resolve_input_scale, with_auto_enl
from sar2opt_geo.tasks import read_linear


def filter_block(cond: Conditioning, store: str, row0: int, row1: int, col0: int, col1: int) -> int:
    """Filter one block (reading its halo, so the result equals filtering the whole scene) and store it
    in the input's own scale (dB in, dB out); returns the number of valid pixels."""
    linear, valid = read_linear(cond, row0, row1, col0, col1)
    scale = "amplitude" if cond.input_scale == "dn" else cond.input_scale
    out = from_linear(linear, scale)
    out[:, ~valid] = 0
    io.write_store_block(store, row0, col0, out.astype(np.float32), valid)
    return int(valid.sum())


def _filter_blocks(executor, cond: Conditioning, store, chunk: int, progress) -> int:
    """Run :func:`filter_block` over the scene into ``store``; refuse an all-nodata scene."""
    scene = cond.scene
    blocks = [
        (r, min(r + chunk, scene.height), c, min(c + chunk, scene.width))
        for r in range(0, scene.height, chunk)
        for c in range(0, scene.width, chunk)
    ]
    io.create_block_store(
        store, scene.height, scene.width, chunk, {}, bands=len(cond.bands), dtype="float32"
    )
    dsk = {("filter", k): (filter_block, cond, str(store), *b) for k, b in enumerate(blocks)}
    sizes = {("filter", k): (b[1] - b[0]) * (b[3] - b[2]) for k, b in enumerate(blocks)}
    done = {"px": 0}

    def on_result(key, n_valid):
        done["px"] += sizes[key]
        if progress is not None:
            progress(done["px"], scene.height * scene.width)

    res = executor.run(dsk, list(dsk), on_result)
    if sum(res.values()) == 0:
        raise InputError(f"{scene.path}: all pixels are nodata; nothing to filter")
    return len(blocks)


def run_filter(
    input_path: str,
    output_path: str,
    spec: FilterSpec,
    executor,
    *,
    input_scale: str = "auto",
    bands: str | None = None,
    chunk_size: int = defaults.CHUNK_SIZE,
    allow_ungeoreferenced: bool = False,
    overwrite: bool = False,
    progress=None,
) -> dict:
    """``sar2opt-geo filter``: a speckle-filtered float32 COG on the input's grid, block by block."""
    out = io.check_output_path(output_path, overwrite)
    scene = io.open_scene(input_path, allow_ungeoreferenced=allow_ungeoreferenced)
    band_idx = select_bands(scene, bands, scene.count if not bands else len(bands.split(",")), [])
    cond = Conditioning(scene=scene, bands=band_idx, input_scale="linear", filter=None)
    scale = resolve_input_scale(executor, cond, input_scale, lattice=None)
    cond = with_auto_enl(executor, Conditioning(scene, band_idx, scale, spec))
    chunk = max(64, chunk_size)
    store = io.temporary_sibling(out, "blocks.zarr")
    tmp_out = io.temporary_sibling(out, "partial")
    try:
        n_blocks = _filter_blocks(executor, cond, store, chunk, progress)
        tags = {
            "SAR2OPT_TOOL": f"sar2opt-geo {__version__}",
            "SAR2OPT_FILTER": cond.filter.to_dict(),
            "SAR2OPT_SCALE": "amplitude" if scale == "dn" else scale,
        }
        io.store_to_cog(
            store,
            tmp_out,
            io.GeoProfile.from_scene(scene, tags),
            chunk=chunk,
            band_descriptions=[scene.band_names()[i - 1] for i in band_idx],
            nodata=scene.nodata if scene.nodata is not None else 0.0,
        )
        io.replace_path(tmp_out, out)
    finally:
        io.remove_path(store)
        io.remove_path(tmp_out)
    return {"output": str(out), "filter": cond.filter.to_dict(), "scale": scale, "blocks": n_blocks}
