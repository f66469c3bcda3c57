"""Areas of interest: a GeoJSON polygon in any CRS, brought into the scene's pixel space.

GeoJSON coordinates are WGS84 (RFC 7946) unless the file carries the legacy ``crs`` member
(``{"type": "name", "properties": {"name": "EPSG:32633"}}``), as GDAL/QGIS still write. The polygon is
clipped to the scene's surroundings and densified in its own CRS (``shapely.segmentize``, vertices every
:data:`DENSIFY_PIXELS` scene pixels: a straight edge in one CRS is a curve in another, and moving only its
end points would cut it short by many pixels), its vertices reprojected with PROJ
(:func:`io.transform_points`) and mapped to (col, row) pixel coordinates with the scene's affine transform,
or, for GCP-georeferenced scenes, with the thin-plate spline through the GCPs that map projection uses
(:func:`sar2opt_geo.warp.crs_to_src`; GDAL's default GCP polynomial is off by up to ~1.8 km on a real GRD).
Geometry work is shapely's, CRS and raster work io's (this module does not import rasterio).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import box, mapping, shape

from sar2opt_geo import io
from sar2opt_geo.errors import InputError
from sar2opt_geo.io import SceneInfo

#: Longest AOI edge, in scene pixels, that is reprojected as a straight segment (longer edges get vertices
#: this far apart first). A chord of a few pixels differs from the projected curve by far less than a pixel.
DENSIFY_PIXELS = 4.0


def load_aoi(path: str | Path) -> tuple[shapely.Geometry, str]:
    """Read a GeoJSON file: ``(union of its polygons, CRS string)``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such AOI file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a GeoJSON file ({exc})") from None
    crs = "EPSG:4326"
    if isinstance(doc, dict) and isinstance(doc.get("crs"), dict):
        crs = doc["crs"].get("properties", {}).get("name", crs)
    geoms = []
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "FeatureCollection":
        geoms = [f.get("geometry") for f in doc.get("features", [])]
    elif kind == "Feature":
        geoms = [doc.get("geometry")]
    elif kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        geoms = [doc]
    else:
        raise InputError(f"{path}: not a GeoJSON Polygon, Feature or FeatureCollection")
    polys = []
    for g in geoms:
        if not g:
            continue
        try:
            geom = shape(g)
        except Exception as exc:  # shapely raises several types for malformed input
            raise InputError(f"{path}: invalid geometry ({exc})") from None
        if geom.geom_type in ("Polygon", "MultiPolygon"):
            polys.append(shapely.make_valid(geom))
    if not polys:
        raise InputError(f"{path}: contains no polygon")
    return shapely.union_all(polys), crs


def aoi_to_pixels(geom: shapely.Geometry, crs: str, scene: SceneInfo) -> shapely.Geometry:
    """The AOI in the scene's pixel space (x = column, y = row), clipped to the scene."""
    from sar2opt_geo.warp import crs_to_src

    if not scene.georeferenced:
        raise InputError("--aoi needs a georeferenced input")
    target = scene.gcp_crs_wkt if scene.transform is None else scene.crs_wkt
    try:
        src = io.crs_wkt(crs)
        # an affine transform maps straight lines to straight lines: same CRS needs no densification
        if not io.same_crs(src, target) or scene.transform is None:
            geom = densify_for(geom, src, target, scene)
        if not io.same_crs(src, target):
            geom = shapely.transform(geom, lambda xy: _reproject(src, target, xy))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot reproject the AOI from {crs} ({exc})") from None
    if scene.transform is not None:
        inv = ~scene.affine
        pix = shapely.affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
    else:

        def to_pix(xy: np.ndarray) -> np.ndarray:
            rows, cols = crs_to_src(scene, xy[:, 0], xy[:, 1])
            return np.column_stack([cols, rows])

        pix = shapely.transform(geom, to_pix)
    pix = shapely.make_valid(pix).intersection(box(0, 0, scene.width, scene.height))
    if pix.is_empty or pix.area == 0:
        raise InputError("the AOI does not intersect the scene")
    return pix


def _reproject(src_wkt: str, dst_wkt: str, xy: np.ndarray) -> np.ndarray:
    xs, ys = io.transform_points(src_wkt, dst_wkt, xy[:, 0], xy[:, 1])
    out = np.column_stack([xs, ys]).astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError("some of its points have no coordinates in the scene's CRS")
    return out


def _scene_bounds(scene: SceneInfo) -> tuple[float, float, float, float]:
    """The scene's bounding box in its own CRS (from its corners, or from its GCPs)."""
    if scene.transform is not None:
        a = scene.affine
        xs, ys = zip(*(a * (c, r) for c in (0, scene.width) for r in (0, scene.height)), strict=True)
    else:
        xs, ys = [g[2] for g in scene.gcps], [g[3] for g in scene.gcps]
    return min(xs), min(ys), max(xs), max(ys)


def densify_for(geom: shapely.Geometry, src: str, dst: str, scene: SceneInfo) -> shapely.Geometry:
    """``geom`` (in ``src``, a WKT) clipped to the scene's surroundings and with vertices at most
    :data:`DENSIFY_PIXELS` scene pixels apart, so that moving its vertices into ``dst`` follows the curves
    its edges become there. The clip (the scene's box in ``src`` plus 10 % on every side) bounds the work
    for AOIs much larger than the scene."""
    left, bottom, right, top = io.transform_bounds(dst, src, _scene_bounds(scene), densify_pts=21)
    span_x = right - left if right > left else right + 360.0 - left  # a box across the antimeridian
    span = max(span_x, top - bottom)
    if not span > 0:
        return geom
    if right > left:
        m = 0.1 * span
        geom = geom.intersection(box(left - m, bottom - m, right + m, top + m))
        if geom.is_empty:
            raise InputError("the AOI does not intersect the scene")
    step = span / max(scene.width, scene.height) * DENSIFY_PIXELS
    return shapely.segmentize(geom, step)


def tile_intersects(aoi_prepared: shapely.Geometry, row0: int, col0: int, size: int) -> bool:
    return aoi_prepared.intersects(box(col0, row0, col0 + size, row0 + size))


def rasterize_pixels(aoi: shapely.Geometry, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
    """Boolean mask of the pixels of a window whose centres lie inside the AOI."""
    return io.rasterize_window(mapping(aoi), row0, row1, col0, col1)
