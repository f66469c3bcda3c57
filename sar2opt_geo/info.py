"""``sar2opt-geo info``: what a scene is and the work ``translate`` would do on it (no model is run).

Reads the metadata and a decimated overview through :mod:`sar2opt_geo.io` (for a Sentinel-1 product: its
annotation, and the footprint on the warp grid), and a few sample windows for the input-scale decision.
Every size and grid is printed width first: ``W x H`` pixels, ``columns x rows`` of tiles or blocks.
"""

from __future__ import annotations

import math

import numpy as np

from sar2opt_geo import defaults, io
from sar2opt_geo.errors import InputError
from sar2opt_geo.plan import Conditioning, open_input, select_bands
from sar2opt_geo.sampling import sample_lattice
from sar2opt_geo.source import SourceScene, decide_input_scale, is_product_path, open_source
from sar2opt_geo.tasks import sample_windows
from sar2opt_geo.tiling import BlockPlan, TileGrid
from sar2opt_geo.warp import footprint_mask


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


def _valid_overview(scene: io.SceneInfo) -> np.ndarray:
    """A decimated validity mask: the raster's overview mask, or for a product / warped scene the
    footprint of the source image on the grid (DN-0 borders are not counted)."""
    if isinstance(scene, SourceScene):
        if scene.warp is not None:
            return footprint_mask(scene.warp)
        return np.ones((min(scene.height, 1024), min(scene.width, 1024)), dtype=bool)
    _, mask = io.read_overview(scene.path, max_size=1024)
    return mask > 0


def scale_decision(scene: io.SceneInfo, bands: tuple[int, ...], requested: str = "auto") -> str:
    """``scale (reason)`` as translate decides it, from a 3 x 3 lattice of sample windows read here."""
    if requested != "auto":
        return f"{requested} (given by --input-scale)"
    if isinstance(scene, SourceScene) and scene.product is not None:
        raw = np.zeros((len(bands), 0), dtype=np.float32)  # decided from the product, not its pixels
    else:
        cond = Conditioning(scene=scene, bands=bands, input_scale="linear")
        corners = sample_lattice(scene.height, scene.width, n=3)
        try:
            raw, _, _ = sample_windows(cond, corners, 64)
        finally:
            io.close_readers()  # the datasets the sample reads kept open
    try:
        d = decide_input_scale(scene, bands, raw)
    except InputError as exc:
        return f"refused: {exc}"
    extra = f"; value {d.nodata:g} taken as nodata" if d.nodata is not None else ""
    return f"{d.scale} ({d.reason}{extra})"


def product_facts(scene: io.SceneInfo) -> dict:
    """What ``info`` adds for a Sentinel-1 product or a warped scene."""
    if not isinstance(scene, SourceScene):
        return {}
    out = {}
    if scene.product is not None:
        p = scene.product
        out.update(
            {
                "product": p.name,
                "product_type": f"{p.mission} {p.mode} {p.product_type}{p.resolution or ''}",
                "polarisations": ", ".join(p.polarisations),
                "pass": p.pass_direction.lower(),
                "radar_size": f"{p.width} x {p.height} (range {p.range_spacing:g} m, azimuth "
                f"{p.azimuth_spacing:g} m)",
                "geolocation": f"{len(p.gcps)} GCPs from the {p.gcp_source}",
                "calibration": f"{scene.calibration}, "
                + ("thermal noise removed" if scene.denoise else "no thermal noise removal"),
            }
        )
    out["warp"] = scene.warp.describe() if scene.warp is not None else "none (radar geometry + GCPs)"
    return out


def _block_shape(scene: io.SceneInfo) -> str | None:
    """The input file's block shape (a warped raster's own; none for a product, whose scene is computed)."""
    raster = scene.raster if isinstance(scene, SourceScene) else scene
    return None if raster is None else f"{raster.block_shape[1]} x {raster.block_shape[0]}"


def reading(scene: io.SceneInfo) -> str:
    """How ``translate`` and ``filter``/``calibrate`` read the input, and what they copy beside the output
    first (:func:`sar2opt_geo.source.open_source`'s ``copy_dir``)."""
    if isinstance(scene, SourceScene) and scene.product is not None:
        from sar2opt_geo.sentinel1.safe import discover

        files = discover(scene.product.path)
        c = files.container
        members = [bf.measurement for bf in files.bands if bf.measurement]
        deflated = [m for m in members if c.is_deflated(m)]
        if deflated:
            return (
                f"{len(deflated)} deflated zip member(s): inflated once beside the output "
                f"({io.human_bytes(c.member_bytes(deflated))}) and read from there"
            )
        where = "stored zip members" if c.is_zip else "measurement TIFFs"
        return f"{where}: in place (GDAL's direct I/O where uncompressed)"
    raster = scene.raster if isinstance(scene, SourceScene) else scene
    if io.wants_tiled_copy(raster):
        size = io.human_bytes(io.tiled_copy_bytes(raster))
        return (
            f"compressed strips: copied once into tiled form beside the output ({size}); read in place, "
            "every window would decode whole rows"
        )
    if raster.direct_io:
        return "uncompressed strips: in place, with GDAL's direct I/O"
    if raster.compressed_strips:
        return f"compressed strips, narrower than {io.TILED_COPY_MIN_WIDTH} px: in place"
    return "tiled: in place" if raster.tiled else "in place"


def describe_scene(
    input_path: str,
    tile: int,
    overlap: int,
    chunk: int,
    allow_ungeoreferenced: bool,
    *,
    calibration: str = defaults.CALIBRATION,
    denoise: bool = True,
    warp: str = defaults.WARP,
    resolution: float | None = None,
    bands: str | None = None,
    input_scale: str = "auto",
    resampling: str = defaults.RESAMPLING,
) -> dict:
    """What ``sar2opt-geo info`` prints: metadata, nodata share and the tile grid for the given options."""
    kw = dict(
        calibration=calibration, denoise=denoise, warp=warp, resolution=resolution, resampling=resampling
    )
    unreadable = None
    try:
        scene = open_input(input_path, allow_ungeoreferenced=allow_ungeoreferenced, **kw)
    except InputError as exc:
        if not is_product_path(input_path):
            raise
        # a product whose measurement tiffs are absent or unreadable: describe it from its metadata
        scene = open_source(input_path, metadata_only=True, **kw)
        unreadable = str(exc)
    grid = TileGrid(scene.height, scene.width, tile, overlap)
    plan = BlockPlan.create(grid, chunk, scene.block_shape if scene.tiled else None)
    valid = _valid_overview(scene)
    band_idx = select_bands(scene, bands, len(bands.split(",")) if bands else scene.count, [])
    return {
        **product_facts(scene),
        **({"measurement": f"not readable ({unreadable}); metadata only"} if unreadable else {}),
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
        "block_shape": _block_shape(scene),
        "reading": None if unreadable else reading(scene),
        "nodata_share": round(1.0 - float(valid.mean()), 4),
        "tile_grid": f"{grid.n_cols} x {grid.n_rows} tiles (columns x rows) of {tile} px, overlap {overlap}, "
        f"stride {grid.stride}",
        "tiles": grid.count,
        "dask_blocks": f"{plan.n_bcols} x {plan.n_brows} blocks (columns x rows) of {plan.chunk} px",
        "estimated_model_evaluations": estimated_evaluations(grid, valid),
        "input_scale": scale_decision(scene, band_idx, input_scale),
    }
