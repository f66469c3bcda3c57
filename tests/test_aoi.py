"""AOI reprojection: edges that are straight in the AOI's CRS follow the curves they become in the scene's
CRS (densification), checked against a finely sampled reference; the GCP path and the clip keep working."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform
from shapely.geometry import Polygon, box

from sar2opt_geo import io
from sar2opt_geo.aoi import aoi_to_pixels, load_aoi
from sar2opt_geo.errors import InputError

PIXEL = 100.0  # metres
LON0, LON1, LAT0, LAT1 = 13.0, 17.0, 60.0, 60.9  # the AOI: a lon/lat box; its top edge is a parallel


def _utm_scene(tmp_path, width=2400, height=600):
    """An (empty, uint8) EPSG:32633 scene whose area holds the AOI's whole top edge: in UTM that parallel
    is a curve bowing about 16 pixels away from the chord between its end points."""
    (x0, x1), (y_mid,) = (
        warp_transform("EPSG:4326", "EPSG:32633", [LON0, LON1], [LAT1, LAT1])[0],
        (warp_transform("EPSG:4326", "EPSG:32633", [15.0], [LAT1])[1]),
    )
    left = round((x0 + x1) / 2 - width * PIXEL / 2, -2)
    top = round(y_mid + height * PIXEL / 2, -2)
    path = tmp_path / "utm.tif"
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8", crs="EPSG:32633")
    profile.update(transform=Affine(PIXEL, 0, left, 0, -PIXEL, top), tiled=True, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((1, height, width), np.uint8))
    return io.open_scene(path)


def _reference(scene, ring_lonlat: Polygon, step_deg: float = 2e-4) -> shapely.Geometry:
    """The AOI in pixel space, sampled every ``step_deg`` (≈ 1 pixel along the parallel) and clipped."""
    fine = shapely.segmentize(ring_lonlat, step_deg)
    lon, lat = np.asarray(fine.exterior.coords).T
    x, y = warp_transform("EPSG:4326", "EPSG:32633", lon, lat)
    cols, rows = ~scene.affine * (np.asarray(x), np.asarray(y))
    return Polygon(np.column_stack([cols, rows])).intersection(box(0, 0, scene.width, scene.height))


def _vertices_only(scene, ring_lonlat: Polygon) -> shapely.Geometry:
    lon, lat = np.asarray(ring_lonlat.exterior.coords).T
    x, y = warp_transform("EPSG:4326", "EPSG:32633", lon, lat)
    cols, rows = ~scene.affine * (np.asarray(x), np.asarray(y))
    return Polygon(np.column_stack([cols, rows])).intersection(box(0, 0, scene.width, scene.height))


def test_long_edge_follows_the_projected_curve(tmp_path):
    scene = _utm_scene(tmp_path)
    aoi = box(LON0, LAT0, LON1, LAT1)
    got = aoi_to_pixels(aoi, "EPSG:4326", scene)
    ref = _reference(scene, aoi)
    naive = _vertices_only(scene, aoi)
    print(
        f"hausdorff to the reference: densified {shapely.hausdorff_distance(got, ref):.2g} px, "
        f"vertices only {shapely.hausdorff_distance(naive, ref):.3g} px"
    )
    # moving the 4 corners only cuts the curved edge short by far more than a pixel...
    assert shapely.hausdorff_distance(naive, ref) > 10
    # ...densified, the AOI stays within a fraction of a pixel of the true curve
    assert shapely.hausdorff_distance(got, ref) < 0.25
    assert abs(got.area - ref.area) / ref.area < 1e-3


def test_aoi_much_larger_than_the_scene_is_clipped_before_densifying(tmp_path):
    """A continent-sized AOI is clipped to the scene's surroundings first: the work does not grow with it."""
    scene = _utm_scene(tmp_path)
    got = aoi_to_pixels(box(-30.0, 30.0, 60.0, 75.0), "EPSG:4326", scene)
    assert got.equals_exact(box(0, 0, scene.width, scene.height), 1e-6) or got.area == pytest.approx(
        scene.width * scene.height
    )
    assert shapely.get_num_coordinates(got) < 50


def test_same_crs_aoi_is_exact(tmp_path):
    scene = _utm_scene(tmp_path)
    a = scene.affine
    corners = [a * (100, 50), a * (700, 50), a * (700, 400), a * (100, 400)]
    got = aoi_to_pixels(Polygon(corners), "EPSG:32633", scene)
    assert got.normalize().equals_exact(box(100, 50, 700, 400).normalize(), 1e-6)


def test_geojson_crs_member_and_aoi_outside(tmp_path):
    """The legacy ``crs`` member is honoured; an AOI outside the scene is a one-line InputError."""
    scene = _utm_scene(tmp_path)
    a = scene.affine
    doc = {
        "type": "Polygon",
        "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
        "coordinates": [[list(a * (10, 10)), list(a * (50, 10)), list(a * (50, 40)), list(a * (10, 10))]],
    }
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(doc))
    geom, crs = load_aoi(path)
    assert crs == "EPSG:32633"
    assert aoi_to_pixels(geom, crs, scene).area == pytest.approx(0.5 * 40 * 30)
    with pytest.raises(InputError, match="does not intersect the scene"):
        aoi_to_pixels(box(100.0, -10.0, 101.0, -9.0), "EPSG:4326", scene)


def test_gcp_scene_edges_follow_the_curve(tmp_path, monkeypatch):
    """A GCP-georeferenced scene (GCPs in lon/lat, as raw GRD products carry them): the AOI is in the GCP
    CRS already, but lon/lat lines are curves in pixel space, so it is densified there too."""
    utm = _utm_scene(tmp_path)
    a = utm.affine
    cols, rows = np.meshgrid(np.linspace(0, utm.width, 7), np.linspace(0, utm.height, 4))
    x, y = a * (cols.ravel(), rows.ravel())
    lon, lat = warp_transform("EPSG:32633", "EPSG:4326", x, y)
    gcps = [
        rasterio.control.GroundControlPoint(row=r, col=c, x=lo, y=la)
        for r, c, lo, la in zip(rows.ravel(), cols.ravel(), lon, lat, strict=True)
    ]
    path = tmp_path / "gcp.tif"
    profile = dict(driver="GTiff", width=utm.width, height=utm.height, count=1, dtype="uint8")
    with rasterio.open(path, "w", **profile) as dst:
        dst.gcps = (gcps, rasterio.crs.CRS.from_epsg(4326))
        dst.write(np.ones((1, utm.height, utm.width), np.uint8))
    scene = io.open_scene(path)
    assert scene.transform is None and scene.gcps
    aoi = box(LON0, LAT0, LON1, LAT1)
    ref = _reference(utm, aoi)  # the true curve (the GCPs sample the same UTM grid)
    got = aoi_to_pixels(aoi, "EPSG:4326", scene)
    assert shapely.hausdorff_distance(_vertices_only(utm, aoi), ref) > 10
    assert shapely.hausdorff_distance(got, ref) < 1.0  # GCP polynomial fit error included
    # the same path without densification moves the corners only and misses the curve
    monkeypatch.setattr("sar2opt_geo.aoi.densify_for", lambda geom, *args: geom)
    assert shapely.hausdorff_distance(aoi_to_pixels(aoi, "EPSG:4326", scene), ref) > 10


def test_gcp_scene_uses_the_thin_plate_spline_of_map_projection(tmp_path):
    """On a GCP scene the AOI is placed with the thin-plate spline that map projection uses (exact at the
    GCPs), not GDAL's default GCP polynomial: with GCPs that are not a smooth field (terrain and orbit make
    real GRD geolocation grids so; the polynomial misses their own points by up to 70–138 px on the two real
    IW grids of shared/s1-products), AOI vertices at GCP ground positions land on those GCPs' pixels."""
    from sar2opt_geo.warp import crs_to_src

    rng = np.random.default_rng(7)
    width, height = 800, 600
    cols, rows = np.meshgrid(np.linspace(0, width, 9), np.linspace(0, height, 7))
    lon = 15.0 + cols * 1e-4 + rng.normal(0, 4e-4, cols.shape)  # ~4 px of non-polynomial jitter
    lat = 60.0 - rows * 5e-5 + rng.normal(0, 2e-4, rows.shape)
    gcps = [
        rasterio.control.GroundControlPoint(row=r, col=c, x=lo, y=la)
        for r, c, lo, la in zip(rows.ravel(), cols.ravel(), lon.ravel(), lat.ravel(), strict=True)
    ]
    path = tmp_path / "gcp.tif"
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8") as dst:
        dst.gcps = (gcps, rasterio.crs.CRS.from_epsg(4326))
        dst.write(np.ones((1, height, width), np.uint8))
    scene = io.open_scene(path)
    corners = [(2, 2), (2, 6), (5, 6), (5, 2)]  # interior GCPs (grid row, grid column)
    got = aoi_to_pixels(Polygon([(lon[i, j], lat[i, j]) for i, j in corners]), "EPSG:4326", scene)
    vertices = shapely.points(np.asarray(got.exterior.coords))
    for i, j in corners:
        assert shapely.distance(shapely.Point(cols[i, j], rows[i, j]), vertices).min() < 1e-3
    # every vertex is where map projection's transformer puts it
    r, c = crs_to_src(scene, lon[2:6, 2:7].ravel(), lat[2:6, 2:7].ravel())
    assert np.abs(c - cols[2:6, 2:7].ravel()).max() < 1e-3 and np.abs(r - rows[2:6, 2:7].ravel()).max() < 1e-3
    # GDAL's default polynomial through the same GCPs misses them by pixels
    with rasterio.transform.GCPTransformer(gcps) as poly:
        pr, pc = poly.rowcol(lon[2, 2:7], lat[2, 2:7], op=lambda v: v)
    assert np.hypot(np.asarray(pr) - rows[2, 2:7], np.asarray(pc) - cols[2, 2:7]).max() > 1
