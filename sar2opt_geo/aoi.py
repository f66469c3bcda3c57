"""Areas of interest: a GeoJSON polygon in any CRS, brought into the scene's pixel space.

GeoJSON coordinates are WGS84 (RFC 7946) unless the file carries the legacy ``crs`` member
(``{"type": "name", "properties": {"name": "EPSG:32633"}}``), as GDAL/QGIS still write. The polygon is
reprojected with ``rasterio.warp.transform_geom`` and mapped to (col, row) pixel coordinates with the scene's
affine transform, or with GDAL's GCP transformer for GCP-georeferenced scenes. Geometry work is shapely's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import box, mapping, shape

from sar2opt_geo.errors import InputError
from sar2opt_geo.io import SceneInfo


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
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    target = scene.crs_wkt or scene.gcp_crs_wkt
    if target is None:
        raise InputError("--aoi needs a georeferenced input")
    try:
        g = shape(transform_geom(CRS.from_user_input(crs), CRS.from_wkt(target), mapping(geom)))
    except Exception as exc:
        raise InputError(f"cannot reproject the AOI from {crs} ({exc})") from None
    if scene.transform is not None:
        inv = ~scene.affine
        mat = [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f]
        pix = shapely.affinity.affine_transform(g, mat)
    else:
        from rasterio.transform import GCPTransformer

        with GCPTransformer(scene.gcp_objects()) as tr:

            def to_pix(coords: np.ndarray) -> np.ndarray:
                rows, cols = tr.rowcol(coords[:, 0], coords[:, 1], op=lambda v: v)
                return np.column_stack([cols, rows])

            pix = shapely.transform(g, to_pix)
    pix = shapely.make_valid(pix).intersection(box(0, 0, scene.width, scene.height))
    if pix.is_empty or pix.area == 0:
        raise InputError("the AOI does not intersect the scene")
    return pix


def tile_intersects(aoi_prepared: shapely.Geometry, row0: int, col0: int, size: int) -> bool:
    return aoi_prepared.intersects(box(col0, row0, col0 + size, row0 + size))


def rasterize_pixels(aoi: shapely.Geometry, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
    """Boolean mask of the pixels of a window whose centres lie inside the AOI."""
    from rasterio.features import geometry_mask
    from rasterio.transform import Affine

    return geometry_mask(
        [mapping(aoi)],
        out_shape=(row1 - row0, col1 - col0),
        transform=Affine.translation(col0, row0),
        invert=True,
    )
