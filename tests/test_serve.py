"""Endpoint tests of ``sar2opt-geo serve`` (no browser): tiles with known pixels, nodata transparency, 404
outside the scene, point values, the upload → translate → download round trip, jobs, system, every refusal
(path traversal, /vsicurl/, non-raster and oversized uploads), tiles answering while a translate runs, and
the temporary folder removed at shutdown.

The known-pixel scene is written in Web Mercator exactly on the zoom-13 tile grid (512² px = one zoom-12
tile), so a zoom-13 tile is a plain quadrant of the raster and every tile pixel is predictable.
"""

from __future__ import annotations

import io as _io
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("rio_tiler")
pytest.importorskip("httpx")

import morecantile  # noqa: E402
from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from sar2opt_geo import io  # noqa: E402
from sar2opt_geo.serve import chips  # noqa: E402
from sar2opt_geo.serve.app import AppState, create_app  # noqa: E402

TMS = morecantile.tms.get("WebMercatorQuad")
Z12 = TMS.tile(15.0, 49.6, 12)
SIZE = 512
COLLAR = 64  # SAR columns 0..63 are nodata
MASKED_ROWS = 32  # translated rows 0..31 are masked


def _grid_profile() -> io.GeoProfile:
    b = TMS.xy_bounds(Z12)
    res = (b.right - b.left) / SIZE
    return io.GeoProfile(
        SIZE, SIZE, crs_wkt=TMS.rasterio_crs.to_wkt(), transform=(res, 0, b.left, 0, -res, b.top)
    )


def _sar_db() -> np.ndarray:
    cols = np.arange(SIZE, dtype=np.float32)
    return np.broadcast_to(-25 + 25 * cols / (SIZE - 1), (SIZE, SIZE)).astype(np.float32)


def _rgb() -> np.ndarray:
    r, c = np.mgrid[0:SIZE, 0:SIZE]
    return np.stack([c // 2, r // 2, np.full_like(r, 200)]).astype(np.uint8)


def write_known_scene(folder: Path) -> Path:
    """``folder/sar.tif`` (linear σ⁰, dB ramp along columns, nodata collar), ``translated.tif`` (RGB with a
    masked top strip) and ``optical.tif`` (RGB), all on the same Web-Mercator grid."""
    folder.mkdir(parents=True, exist_ok=True)
    geo = _grid_profile()
    lin = np.power(10, _sar_db() / 10).astype(np.float32)
    lin[:, :COLLAR] = 0
    with io.GeoTiffWriter(folder / "sar.tif", geo, 1, "float32", nodata=0.0, band_descriptions=["VV"]) as w:
        w.write(0, 0, lin[None])
    valid = np.ones((SIZE, SIZE), bool)
    valid[:MASKED_ROWS] = False
    tr = io.GeoProfile(**{**geo.__dict__, "tags": {"SAR2OPT_MODEL": "test"}})
    with io.GeoTiffWriter(folder / "translated.tif", tr, 3, "uint8", internal_mask=True) as w:
        w.write(0, 0, _rgb(), valid)
    with io.GeoTiffWriter(folder / "optical.tif", geo, 3, "uint8", internal_mask=True) as w:
        w.write(0, 0, 255 - _rgb(), np.ones((SIZE, SIZE), bool))
    return folder


def _png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(_io.BytesIO(content)).convert("RGBA"))


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    return write_known_scene(tmp_path_factory.mktemp("serve") / "demo")


@pytest.fixture()
def client(scene_dir):
    app = create_app([str(scene_dir)])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def _scene(client) -> dict:
    (scene,) = [s for s in client.get("/api/scenes").json() if s["name"] == "demo"]
    return scene


def _wait(client, jid: str, timeout: float = 120) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        job = client.get(f"/api/translate/{jid}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"translate job {jid} did not finish")


# ----------------------------------------------------------------------------------------------- scenes


def test_demo_folder_is_one_scene_with_three_layers(client):
    scene = _scene(client)
    assert [lay["name"] for lay in scene["layers"]] == ["sar", "translated", "optical"]
    assert scene["layers"][0]["kind"] == "sar" and scene["layers"][1]["kind"] == "rgb"
    w, s, e, n = TMS.bounds(Z12)
    assert scene["bounds"] == pytest.approx([w, s, e, n], abs=1e-6)


def test_sar_tile_has_the_expected_grey_and_a_transparent_collar(client):
    sid = _scene(client)["id"]
    r = client.get(f"/tiles/{sid}/sar/13/{2 * Z12.x}/{2 * Z12.y}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    px = _png(r.content)
    assert px.shape == (256, 256, 4)
    assert (px[:, :COLLAR, 3] == 0).all()  # nodata collar transparent
    assert (px[:, COLLAR:, 3] == 255).all()
    expected = np.clip((_sar_db()[:256, :256] + 25) * 255 / 25, 0, 255)
    got = px[:, :, 0].astype(float)
    assert np.abs(got[:, COLLAR:] - expected[:, COLLAR:]).max() <= 1
    assert (px[:, :, 0] == px[:, :, 1]).all() and (px[:, :, 1] == px[:, :, 2]).all()  # grey


def test_sar_tile_stretch_and_colormap(client):
    sid = _scene(client)["id"]
    t = f"/tiles/{sid}/sar/13/{2 * Z12.x + 1}/{2 * Z12.y}.png"
    narrow = _png(client.get(t + "?min=-10&max=-5").content)
    db = _sar_db()[:256, 256:]
    expected = np.clip((db + 10) * 255 / 5, 0, 255)
    assert np.abs(narrow[:, :, 0] - expected).max() <= 1
    coloured = _png(client.get(t + "?cmap=viridis").content)
    assert not (coloured[:, :, 0] == coloured[:, :, 2]).all()  # not grey any more
    stats = client.get(f"/api/scenes/{sid}/stats").json()
    assert stats["input_scale"] == "linear"
    lo, hi = stats["auto"][0]
    valid = _sar_db()[:, COLLAR:]
    assert lo == pytest.approx(np.percentile(valid, 2), abs=0.5)
    assert hi == pytest.approx(np.percentile(valid, 98), abs=0.5)
    assert client.get(t + "?stretch=auto").status_code == 200


def test_dual_polarisation_false_colour(tmp_path):
    """VV/VH: one band grey, or R = VV, G = VH, B = VV − VH (0..15 dB), each stretched to 0..255."""
    geo = _grid_profile()
    vv, vh = (
        np.full((SIZE, SIZE), 0.1, np.float32),
        np.full((SIZE, SIZE), 10**-1.8, np.float32),
    )  # −10, −18 dB
    (tmp_path / "dual").mkdir()
    path = tmp_path / "dual" / "s1.tif"
    with io.GeoTiffWriter(path, geo, 2, "float32", nodata=0.0, band_descriptions=["VV", "VH"]) as w:
        w.write(0, 0, np.stack([vv, vh]))
    with TestClient(create_app([str(tmp_path / "dual")]), base_url="http://127.0.0.1") as c:
        (scene,) = c.get("/api/scenes").json()
        assert scene["layers"][0]["bands"] == ["VV", "VH"]
        t = f"/tiles/{scene['id']}/sar/13/{2 * Z12.x}/{2 * Z12.y}.png"
        fc = _png(c.get(t + "?mode=false").content)
        assert np.abs(fc[:, :, :3].astype(int) - [153, 71, 136]).max() <= 1
        vh_grey = _png(c.get(t + "?mode=b2").content)
        assert np.abs(vh_grey[:, :, :3].astype(int) - 71).max() <= 1


def test_rgb_tile_pixels_and_mask(client):
    sid = _scene(client)["id"]
    px = _png(client.get(f"/tiles/{sid}/translated/13/{2 * Z12.x}/{2 * Z12.y}.png").content)
    rgb = _rgb()[:, :256, :256]
    assert (px[:MASKED_ROWS, :, 3] == 0).all()
    assert (px[MASKED_ROWS:, :, 3] == 255).all()
    assert (np.moveaxis(px[MASKED_ROWS:, :, :3], -1, 0) == rgb[:, MASKED_ROWS:]).all()


def test_overview_zoom_tile_and_tile_outside_the_scene(client):
    sid = _scene(client)["id"]
    z10 = TMS.tile(15.0, 49.6, 10)
    px = _png(client.get(f"/tiles/{sid}/optical/10/{z10.x}/{z10.y}.png").content)
    assert 0 < (px[:, :, 3] > 0).mean() < 0.2  # the scene is a small part of a zoom-10 tile
    r = client.get(f"/tiles/{sid}/sar/13/{2 * Z12.x + 5}/{2 * Z12.y}.png")
    assert r.status_code == 404 and r.json() == {"error": "tile outside the scene"}
    assert client.get(f"/tiles/{sid}/sar/13/{2**13}/0.png").status_code == 404
    assert client.get(f"/tiles/{sid}/elevation/13/{2 * Z12.x}/{2 * Z12.y}.png").status_code == 404


def test_large_rasters_without_overviews_get_a_cog_copy_for_tiles(scene_dir):
    state = AppState([str(scene_dir)], overview_min_side=256)
    with TestClient(create_app(state=state), base_url="http://127.0.0.1") as c:
        sid = _scene(c)["id"]
        full = f"/tiles/{sid}/sar/13/{2 * Z12.x}/{2 * Z12.y}.png"
        before = _png(c.get(full).content)
        assert state.overviews_done.wait(120)
        layers = {lay["name"]: lay["overviews"] for lay in _scene(c)["layers"]}
        assert layers == {"sar": "ready", "translated": "ready", "optical": "ready"}
        assert (_png(c.get(full).content) == before).all()  # full resolution: the same pixels
        coarse = _png(c.get(f"/tiles/{sid}/sar/11/{Z12.x // 2}/{Z12.y // 2}.png").content)
        # zoom 11: the 512² scene is a 128² quarter of the tile, from the 4× overview (average of linear σ⁰)
        inside = coarse[coarse[:, :, 3] == 255]
        assert 100 <= len(inside) <= 128 * 128
        lin = np.power(10, _sar_db()[:, COLLAR:] / 10)
        mean_grey = (10 * np.log10(lin.mean(axis=0)) + 25) * 255 / 25
        assert inside[:, 0].max() <= mean_grey.max() + 2 and inside[:, 0].min() >= mean_grey.min() - 2
        rgb = _png(c.get(f"/tiles/{sid}/translated/11/{Z12.x // 2}/{Z12.y // 2}.png").content)
        # the 512² scene is 128² of this tile; its masked top 32 rows are 8 transparent rows in the overview
        assert abs(int((rgb[:, :, 3] == 255).sum()) - 128 * (128 - MASKED_ROWS // 4)) <= 3 * 128
    assert not state.tmp.exists()


def test_point_values(client):
    sid = _scene(client)["id"]
    b = TMS.xy_bounds(Z12)
    res = (b.right - b.left) / SIZE
    x, y = b.left + (300.5) * res, b.top - (100.5) * res  # pixel row 100, col 300
    lon, lat = TMS.lnglat(x, y)
    v = client.get(f"/api/scenes/{sid}/point?lon={lon}&lat={lat}").json()
    assert v["layers"]["sar"]["db"]["VV"] == pytest.approx(_sar_db()[100, 300], abs=0.01)
    assert v["layers"]["translated"]["rgb"] == _rgb()[:, 100, 300].tolist()
    x2 = b.left + 10.5 * res  # inside the SAR collar, inside the translated mask? no: row 100 is valid
    lon2, _ = TMS.lnglat(x2, y)
    v2 = client.get(f"/api/scenes/{sid}/point?lon={lon2}&lat={lat}").json()
    assert v2["layers"]["sar"] == {"nodata": True}
    assert client.get(f"/api/scenes/{sid}/point?lon=-120&lat=10").status_code == 404
    assert client.get(f"/api/scenes/{sid}/point?lon=abc&lat=10").status_code == 400


def test_gcp_only_input_is_warped_on_the_fly(tmp_path):
    """A GCP-only SAR raster (as raw GRD) is placed on the map like the same scene with CRS + transform."""
    from sar2opt_geo.synth import SceneSpec, write_scene

    spec = SceneSpec(width=512, height=512, seed=3)
    write_scene(tmp_path / "gcp", spec, gcps=True)
    write_scene(tmp_path / "grid", spec, gcps=False)
    app = create_app([str(tmp_path / "gcp"), str(tmp_path / "grid")])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        scenes = {s["name"]: s for s in c.get("/api/scenes").json()}
        sar = scenes["gcp"]["layers"][0]
        assert sar["name"] == "sar" and sar["gcps"] is True
        assert sar["bounds"] == pytest.approx(scenes["grid"]["layers"][0]["bounds"], abs=2e-4)
        w, s, e, n = sar["bounds"]
        z = sar["maxzoom"] - 1
        t = TMS.tile((w + e) / 2, (s + n) / 2, z)
        a = _png(c.get(f"/tiles/{scenes['gcp']['id']}/sar/{z}/{t.x}/{t.y}.png").content)
        b = _png(c.get(f"/tiles/{scenes['grid']['id']}/sar/{z}/{t.x}/{t.y}.png").content)
    both = (a[:, :, 3] == 255) & (b[:, :, 3] == 255)
    assert both.sum() > 1000

    def blocks(img):  # 8 x 8 block means (speckle averaged out), only fully valid blocks
        v = np.where(both, img[:, :, 0], 0).astype(float).reshape(32, 8, 32, 8).mean(axis=(1, 3))
        return v[both.reshape(32, 8, 32, 8).all(axis=(1, 3))]

    assert blocks(a).size >= 50
    assert np.corrcoef(blocks(a), blocks(b))[0, 1] > 0.9


# ------------------------------------------------------------------- the input scale, decided as translate


def _write_sar(path: Path, data: np.ndarray, nodata=None) -> Path:
    """A SAR raster on the known zoom-13 grid (tile pixel = raster pixel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.GeoTiffWriter(path, _grid_profile(), data.shape[0], str(data.dtype), nodata=nodata) as w:
        w.write(0, 0, data)
    return path


def _lonlat(row: int, col: int) -> tuple[float, float]:
    b = TMS.xy_bounds(Z12)
    res = (b.right - b.left) / SIZE
    return TMS.lnglat(b.left + (col + 0.5) * res, b.top - (row + 0.5) * res)


def _point_db(c, sid: str, row: int, col: int):
    lon, lat = _lonlat(row, col)
    return c.get(f"/api/scenes/{sid}/point?lon={lon}&lat={lat}").json()["layers"]["sar"]


def test_uint8_sar_is_shown_as_the_models_8bit_levels(tmp_path):
    """A uint8 SAR GeoTIFF holds the 8-bit levels of the model's radiometry (as translate reads it), not DN:
    on the default dB stretch level L is grey L, and its point value is the dB its level stands for."""
    from sar2opt_geo.radiometry import from_linear, to_linear

    levels = np.broadcast_to((np.arange(SIZE) // 2).astype(np.uint8), (SIZE, SIZE))[None].copy()
    _write_sar(tmp_path / "s" / "levels.tif", levels)
    with TestClient(create_app([str(tmp_path / "s")]), base_url="http://127.0.0.1") as c:
        (scene,) = c.get("/api/scenes").json()
        sid = scene["id"]
        assert scene["layers"][0]["kind"] == "sar"
        assert c.get(f"/api/scenes/{sid}/stats").json()["input_scale"] == "levels"
        px = _png(c.get(f"/tiles/{sid}/sar/13/{2 * Z12.x}/{2 * Z12.y}.png").content)
        assert (px[:, :, 3] == 255).all() and np.array_equal(px[:, :, 0], levels[0, :256, :256])
        east = _png(c.get(f"/tiles/{sid}/sar/13/{2 * Z12.x + 1}/{2 * Z12.y}.png").content)
        assert np.array_equal(east[:, :, 0], levels[0, :256, 256:])  # read as DN, levels ≥ 1 would be white
        for col in (0, 300, 511):
            want = float(from_linear(to_linear(np.array([col // 2], np.float32), "levels"), "db")[0])
            assert _point_db(c, sid, 100, col)["db"]["band1"] == pytest.approx(want, abs=0.01)
        assert _point_db(c, sid, 100, 300)["db"]["band1"] == pytest.approx(-25 + 150.5 * 25 / 255, abs=0.01)


@pytest.mark.parametrize("code,scale", [("gafmnh", "amplitude"), ("gdfmnh", "db")])
def test_hyp3_named_sar_is_read_in_its_named_scale_also_from_its_overview_copy(tmp_path, code, scale):
    """An ASF HyP3 RTC file is read in the scale its name says (amplitude floats ≥ 0 are not linear σ⁰),
    and so are tiles from its overview copy in the temp folder (whose name says nothing)."""
    from sar2opt_geo.radiometry import from_linear, to_linear

    db = _sar_db()
    raw = from_linear(to_linear(db, "db"), scale)[None]
    _write_sar(tmp_path / "s" / f"S1A_IW_20180128T161201_DVP_RTC30_G_{code}_FD6A_VV.tif", raw)
    expected = np.clip((db[:256, :256] + 25) * 255 / 25, 0, 255)
    state = AppState([str(tmp_path / "s")], overview_min_side=256)
    with TestClient(create_app(state=state), base_url="http://127.0.0.1") as c:
        (scene,) = c.get("/api/scenes").json()
        sid = scene["id"]
        assert c.get(f"/api/scenes/{sid}/stats").json()["input_scale"] == scale
        tile = f"/tiles/{sid}/sar/13/{2 * Z12.x}/{2 * Z12.y}.png"
        assert np.abs(_png(c.get(tile).content)[:, :, 0] - expected).max() <= 1
        assert _point_db(c, sid, 100, 300)["db"]["band1"] == pytest.approx(db[100, 300], abs=0.01)
        assert state.overviews_done.wait(120)
        assert _scene_layers(c)[0]["overviews"] == "ready"
        assert np.abs(_png(c.get(tile).content)[:, :, 0] - expected).max() <= 1  # from the copy


def _scene_layers(c) -> list[dict]:
    (scene,) = c.get("/api/scenes").json()
    return scene["layers"]


def test_bare_uint16_sar_is_refused_at_start_up_unless_its_job_gives_the_scale(tmp_path):
    """translate refuses a bare uint16 raster (raw DN?), so the map does too, at start-up with the reason;
    a job spec giving input_scale dn and its calibration constant has it read as its translate reads it."""
    import yaml

    dn = np.random.default_rng(4).integers(30, 3000, (1, SIZE, SIZE)).astype(np.uint16)
    _write_sar(tmp_path / "scenes" / "dn.tif", dn)
    with TestClient(create_app([str(tmp_path / "scenes")]), base_url="http://127.0.0.1") as c:
        assert c.get("/api/scenes").json() == []
        (skipped,) = c.get("/api/system").json()["skipped"]
        assert skipped.startswith(str(tmp_path / "scenes" / "dn.tif") + ": uint16 values without calibration")
        assert skipped.count("dn.tif") == 1 and "\n" not in skipped
    spec = tmp_path / "job.yaml"
    doc = {
        "version": 1,
        "inputs": ["scenes/dn.tif"],
        "output": {"dir": "out/", "pattern": "{stem}_optical.tif", "format": "cog"},
        "input_scale": "dn",
        "calibration_constant": 100.0,
    }
    spec.write_text(yaml.safe_dump(doc))
    with TestClient(create_app(job_specs=[str(spec)]), base_url="http://127.0.0.1") as c:
        (scene,) = c.get("/api/scenes").json()
        sid = scene["id"]
        assert [lay["name"] for lay in scene["layers"]] == ["sar"]
        assert c.get(f"/api/scenes/{sid}/stats").json()["input_scale"] == "dn"
        want = 10 * np.log10(float(dn[0, 100, 300]) ** 2 / 100.0**2)
        assert _point_db(c, sid, 100, 300)["db"]["band1"] == pytest.approx(want, abs=0.01)


def test_undeclared_nodata_value_is_nodata_on_the_map(tmp_path):
    """A value found in the wild (−9999 in a file that declares no nodata) is nodata, as translate takes it:
    transparent in tiles, "nodata" at a point, and outside the auto stretch."""
    db = _sar_db().copy()
    db[:, :COLLAR] = -9999.0
    _write_sar(tmp_path / "s" / "wild.tif", db[None])
    with TestClient(create_app([str(tmp_path / "s")]), base_url="http://127.0.0.1") as c:
        (scene,) = c.get("/api/scenes").json()
        sid = scene["id"]
        stats = c.get(f"/api/scenes/{sid}/stats").json()
        assert stats["input_scale"] == "db" and stats["auto"][0][0] > -25
        px = _png(c.get(f"/tiles/{sid}/sar/13/{2 * Z12.x}/{2 * Z12.y}.png").content)
        assert (px[:, :COLLAR, 3] == 0).all() and (px[:, COLLAR:, 3] == 255).all()
        assert _point_db(c, sid, 100, 10) == {"nodata": True}
        assert _point_db(c, sid, 100, 300)["db"]["band1"] == pytest.approx(db[100, 300], abs=0.01)


# --------------------------------------------------------------------------------------------- security


@pytest.mark.parametrize(
    "url",
    [
        "/tiles/..%2F..%2Fetc%2Fpasswd/sar/13/0/0.png",
        "/tiles/%2Fetc%2Fpasswd/sar/13/0/0.png",
        "/tiles/%2Fvsicurl%2Fhttp%3A%2F%2Fexample.com%2Fa.tif/sar/1/0/0.png",
        "/api/scenes/..%2F..%2Fetc%2Fpasswd/stats",
        "/api/scenes/%2Fvsicurl%2Fhttp:%2F%2Fexample.com%2Fx.tif/point?lon=0&lat=0",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/app.py",
        "/api/translate/..%2F..%2Fetc/result.png",
        "/api/samples/..%2F0.png",
    ],
)
def test_paths_and_urls_from_requests_are_never_opened(client, monkeypatch, url):
    import rasterio

    opened = []
    real_open = rasterio.open

    def spy(path, *a, **k):
        opened.append(str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(rasterio, "open", spy)
    r = client.get(url)
    assert r.status_code in (400, 404)
    assert "root:" not in r.text
    assert not [p for p in opened if "passwd" in p or "vsicurl" in p or "example.com" in p]


def test_model_ids_are_identifiers_not_paths(client, tmp_path):
    for model in ("/etc/passwd", "../weights/default.safetensors", "/vsicurl/http://example.com/m.onnx"):
        r = client.post("/api/translate", data={"sample": "0", "model": model})
        assert r.status_code == 404 and "unknown model" in r.json()["error"]
    r = client.post("/api/translate", data={"sample": "0", "lora": "/tmp/adapter.safetensors"})
    assert r.status_code == 404
    assert client.get("/api/system?model=/etc/passwd").status_code == 404


def test_foreign_host_header_is_refused(client):
    assert client.get("/api/scenes", headers={"host": "evil.example.com"}).status_code == 400
    assert client.get("/api/scenes", headers={"host": "127.0.0.1:8765"}).status_code == 200


def test_page_and_security_headers(client):
    r = client.get("/")
    assert r.status_code == 200 and "leaflet.js" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for src in ("http://", "https://", "//unpkg", "//cdn"):
        assert src not in r.text
    for asset in ("/static/app.js", "/static/vendor/leaflet-1.9.4/leaflet.js", "/static/VENDORED.md"):
        assert client.get(asset).status_code == 200


# ------------------------------------------------------------------------------------- translate / upload


def _chip_png(size=96, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(40, 220, size=(size, size), dtype=np.uint8)
    buf = _io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_jpeg_chip_upload(client):
    buf = _io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (80, 72, 3), dtype=np.uint8)).save(buf, "JPEG")
    job = _wait(client, client.post("/api/translate", files={"file": ("c.jpg", buf.getvalue())}).json()["id"])
    assert job["state"] == "done" and (job["width"], job["height"]) == (72, 80)
    assert _png(client.get(job["download"]).content).shape == (80, 72, 4)


def test_chip_upload_translate_download_round_trip(client):
    r = client.post("/api/translate", files={"file": ("my chip.png", _chip_png(), "image/png")})
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["id"])
    assert job["state"] == "done", job
    assert (job["width"], job["height"]) == (96, 96)
    d = client.get(job["download"])
    assert d.status_code == 200 and d.headers["content-type"] == "image/png"
    assert "my%20chip_result.png" in d.headers["content-disposition"]
    out = np.asarray(Image.open(_io.BytesIO(d.content)))
    assert out.shape == (96, 96, 3) and out.std() > 1
    assert client.get(job["files"]["input.png"]).status_code == 200
    tif = client.get(job["files"]["result.tif"])
    assert tif.status_code == 200 and tif.content[:4] in (b"II*\x00", b"II+\x00")


@pytest.mark.parametrize("fmt", ["png", "jpg", "tif"])
def test_uint8_chip_upload_gives_the_pixels_of_translate(client, tmp_path, capsys, fmt):
    """An uploaded 8-bit single-band SAR chip (SEN1-2 levels of a seeded synthetic σ⁰) gives the pixels of
    ``sar2opt-geo translate chip out.tif`` with default options (which reads it with the ``levels`` scale:
    level L ↔ the centre of its interval of the model's dB range) within 1 DN."""
    from conftest import run_cli

    from sar2opt_geo.synth import SceneSpec, render_window

    sar, _, _ = render_window(SceneSpec(width=160, height=144, seed=4, footprint=False), 0, 0, 144, 160)
    levels = np.floor(np.clip((10 * np.log10(sar[0]) + 25.0) / 25.0, 0, 1) * 255).astype(np.uint8)
    chip = tmp_path / f"chip.{fmt}"
    Image.fromarray(levels).save(chip)
    r = client.post("/api/translate", files={"file": (chip.name, chip.read_bytes())})
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["id"])
    assert job["state"] == "done", job
    served = tmp_path / "served.tif"
    served.write_bytes(client.get(job["files"]["result.tif"]).content)
    args = ["translate", chip, tmp_path / "cli.tif", "-q"] + (
        ["--allow-ungeoreferenced"] if fmt == "tif" else []
    )
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    a, am = io.read_raster(served)
    b, bm = io.read_raster(tmp_path / "cli.tif")
    assert am["tags"]["SAR2OPT_INPUT_SCALE"] == bm["tags"]["SAR2OPT_INPUT_SCALE"] == "levels"
    assert a.shape == b.shape == (3, 144, 160)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    # the served PNG is the same pixels
    png = np.asarray(Image.open(_io.BytesIO(client.get(job["download"]).content)))
    assert np.abs(np.moveaxis(png[..., :3], -1, 0).astype(int) - b.astype(int)).max() <= 1


def test_sample_translate_with_preprocessing(client):
    samples = client.get("/api/samples").json()
    assert len(samples) == chips.SAMPLE_COUNT
    assert client.get(samples[0]["url"]).headers["content-type"] == "image/png"
    r = client.post("/api/translate", data={"sample": "1", "preprocess": "filter"})
    job = _wait(client, r.json()["id"])
    assert job["state"] == "done" and job["preprocess"] == "filter"
    assert _png(client.get(job["download"]).content).shape == (256, 256, 4)


def test_geotiff_upload_gives_a_cog_on_the_same_grid_and_a_map_scene(client, tmp_path):
    from sar2opt_geo.synth import SceneSpec, write_scene

    sar, _ = write_scene(tmp_path / "up", SceneSpec(width=300, height=260, seed=5))
    r = client.post("/api/translate", files={"file": ("scene.tif", sar.read_bytes(), "image/tiff")})
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["id"])
    assert job["state"] == "done" and job["kind"] == "geotiff", job
    assert job["download"].endswith("result.tif")
    got = tmp_path / "result.tif"
    got.write_bytes(client.get(job["download"]).content)
    data, meta = io.read_raster(got)
    _, src_meta = io.read_raster(sar)
    assert data.shape == (3, 260, 300) and meta["crs"] == src_meta["crs"]
    assert meta["transform"] == src_meta["transform"] and meta["overviews"] is not None
    scene = [s for s in client.get("/api/scenes").json() if s["id"] == job["scene_id"]]
    assert scene and [lay["name"] for lay in scene[0]["layers"]] == ["sar", "translated"]


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (b"hello, this is text", 400, "not a PNG, JPEG or TIFF"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, 400, "not a readable image"),
        (b"II*\x00" + b"\x00" * 64, 400, "not a readable raster"),
        (b"", 400, "empty upload"),
    ],
)
def test_bad_uploads_are_refused_with_a_message(client, payload, status, message):
    r = client.post("/api/translate", files={"file": ("x.bin", payload, "application/octet-stream")})
    assert r.status_code == status and message in r.json()["error"], r.text
    assert "/" not in r.json()["error"].split(":")[0]  # no server path in the message


def test_bare_uint16_tiff_is_refused_at_upload_as_translate_refuses_it(client):
    """translate's scale decision refuses a bare uint16 image (raw DN?); the app says so at upload."""
    buf = _io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(1, 4000, (40, 48), dtype=np.uint16)).save(buf, "TIFF")
    r = client.post("/api/translate", files={"file": ("dn.tif", buf.getvalue(), "image/tiff")})
    assert r.status_code == 400 and "uint16 values without calibration" in r.json()["error"], r.text
    assert "/" not in r.json()["error"].split(":")[0]


def test_oversized_uploads_point_to_translate(scene_dir):
    app = create_app([str(scene_dir)], max_upload_bytes=50_000)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        big = np.random.default_rng(1).integers(0, 255, (400, 400), dtype=np.uint8)
        buf = _io.BytesIO()
        Image.fromarray(big).save(buf, format="PNG")
        r = c.post("/api/translate", files={"file": ("big.png", buf.getvalue(), "image/png")})
        assert r.status_code == 413 and "sar2opt-geo translate" in r.json()["error"]

        def chunked():  # no Content-Length: the body is counted as it arrives
            yield b"--x\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n"
            for _ in range(20):
                yield b"\0" * 10_000

        r = c.post(
            "/api/translate", content=chunked(), headers={"content-type": "multipart/form-data; boundary=x"}
        )
        assert r.status_code == 413 and "limit" in r.json()["error"]
    with TestClient(create_app([str(scene_dir)]), base_url="http://127.0.0.1") as c:
        wide = Image.fromarray(np.zeros((8, chips.MAX_CHIP_SIDE + 1), np.uint8))
        buf = _io.BytesIO()
        wide.save(buf, format="PNG")
        r = c.post("/api/translate", files={"file": ("wide.png", buf.getvalue(), "image/png")})
        assert r.status_code == 413 and "sar2opt-geo translate" in r.json()["error"]


def test_geotiff_over_the_pixel_limit_points_to_translate(client, tmp_path):
    side = int(chips.MAX_SCENE_PIXELS**0.5) + 1
    geo = io.GeoProfile(side, side, crs_wkt=TMS.rasterio_crs.to_wkt(), transform=(10, 0, 0, 0, -10, 0))
    path = tmp_path / "large.tif"
    with io.GeoTiffWriter(path, geo, 1, "float32", nodata=0.0) as w:
        w.write(0, 0, np.zeros((1, side, side), np.float32))
    assert path.stat().st_size < chips.MAX_UPLOAD_BYTES
    r = client.post("/api/translate", files={"file": ("large.tif", path.read_bytes())})
    assert r.status_code == 413 and "use `sar2opt-geo translate" in r.json()["error"]


def test_bad_form_values_are_refused(client):
    assert client.post("/api/translate", data={"sample": "0", "preprocess": "magic"}).status_code == 400
    assert client.post("/api/translate", data={"sample": "99"}).status_code == 404
    assert client.post("/api/translate", data={"sample": "x"}).status_code == 400
    assert client.post("/api/translate", data={}).status_code == 400
    assert client.get("/api/translate/nope").status_code == 404
    sid = _scene(client)["id"]
    t = f"/tiles/{sid}/sar/13/{2 * Z12.x}/{2 * Z12.y}.png"
    for q in ("?cmap=jet2", "?stretch=log", "?min=0&max=-5", "?min=nan", "?mode=b7", "?mode=false"):
        assert client.get(t + q).status_code == 400, q


def test_tiles_keep_answering_while_a_translate_runs(client, monkeypatch):
    import sar2opt_geo.run as run

    release, started = threading.Event(), threading.Event()
    real = run.run_translate

    def held(*a, **k):
        started.set()
        assert release.wait(60)
        return real(*a, **k)

    monkeypatch.setattr(run, "run_translate", held)
    sid = _scene(client)["id"]
    jid = client.post("/api/translate", data={"sample": "2"}).json()["id"]
    assert started.wait(30)
    try:
        t0 = time.perf_counter()
        for dx in range(2):
            for layer in ("sar", "translated", "optical"):
                r = client.get(f"/tiles/{sid}/{layer}/13/{2 * Z12.x + dx}/{2 * Z12.y}.png")
                assert r.status_code == 200
        assert time.perf_counter() - t0 < 30
        assert client.get(f"/api/translate/{jid}").json()["state"] == "running"
    finally:
        release.set()
    assert _wait(client, jid)["state"] == "done"


# ----------------------------------------------------------------------------------------- jobs, system


def test_jobs_table_reports_status_and_links_finished_outputs(tmp_path):
    """The same states as ``sar2opt-geo status``: a scene translated by ``run_job`` is done (with a link
    to the map), a broken input failed with its error."""
    import yaml

    from sar2opt_geo.distributed import ThreadedExecutor
    from sar2opt_geo.jobs import job_status, load_job, run_job
    from sar2opt_geo.synth import SceneSpec, write_scene

    (tmp_path / "scenes").mkdir()
    write_scene(tmp_path / "s", SceneSpec(width=256, height=256, seed=4))
    shutil.copy(tmp_path / "s" / "sar.tif", tmp_path / "scenes" / "a.tif")
    (tmp_path / "scenes" / "b.tif").write_bytes(b"II*\x00 not really a tiff")
    spec = tmp_path / "job.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "inputs": ["scenes/*.tif"],
                "output": {"dir": "out/", "pattern": "{stem}_optical.tif", "format": "cog"},
            }
        )
    )
    run_job(load_job(spec), ThreadedExecutor())
    expected = {r.key: r for r in job_status(load_job(spec))}
    assert expected["scenes/a.tif"].state == "done" and expected["scenes/b.tif"].state == "failed"
    with TestClient(create_app(job_specs=[str(spec)]), base_url="http://127.0.0.1") as c:
        (job,) = c.get("/api/jobs").json()
        rows = {r["key"]: r for r in job["scenes"]}
        for key, st in expected.items():
            assert (rows[key]["state"], rows[key]["progress"], rows[key]["error"]) == (
                st.state,
                st.progress(),
                st.error,
            )
        assert rows["scenes/a.tif"]["scene_id"] and rows["scenes/b.tif"]["scene_id"] is None
        sid = rows["scenes/a.tif"]["scene_id"]
        (scene,) = [s for s in c.get("/api/scenes").json() if s["id"] == sid]
        assert [lay["name"] for lay in scene["layers"]] == ["sar", "translated"]
        lay = scene["layers"][1]
        w, s, e, n = lay["bounds"]
        t = TMS.tile((w + e) / 2, (s + n) / 2, lay["maxzoom"])
        px = _png(c.get(f"/tiles/{sid}/translated/{t.z}/{t.x}/{t.y}.png").content)
        assert (px[:, :, 3] == 255).any()


def test_system_panel(client):
    s = client.get("/api/system").json()
    assert "cpu" in s["devices"] and s["versions"]["gdal"] and s["versions"]["torch"]
    assert s["model"]["id"] == "bundled" and s["model"]["architecture"] == "unet_sar2optical"
    assert s["model"]["radiometry"] and s["model"]["input_bands"] == ["VV"]
    assert s["adapter"] is None


def _make_adapter(base: Path, out: Path) -> None:
    """A rank-2 LoRA adapter for ``base`` with small random B weights (changes the output a little)."""
    import torch

    from sar2opt_geo.models import LoRAConfig, checkpoint_hash, inject_lora, load_generator, save_adapter
    from sar2opt_geo.models.lora import lora_modules

    model, meta = load_generator(base)
    cfg = LoRAConfig(rank=2, alpha=4.0, dropout=0.0)
    inject_lora(model, cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in lora_modules(model).values():
            mod.lora_B.weight.copy_(torch.randn(mod.lora_B.weight.shape, generator=g) * 0.01)
    save_adapter(out, model, cfg, checkpoint_hash(base), base_name=meta.name)


def test_models_folder_offers_checkpoints_and_adapters(scene_dir, tmp_path):
    from sar2opt_geo.defaults import BUNDLED_MODEL

    (tmp_path / "m").mkdir()
    shutil.copy(BUNDLED_MODEL, tmp_path / "m" / "copy.safetensors")
    (tmp_path / "m" / "broken.safetensors").write_bytes(b"not a checkpoint")
    _make_adapter(tmp_path / "m" / "copy.safetensors", tmp_path / "m" / "adapter.safetensors")
    from sar2opt_geo.models import load_generator
    from sar2opt_geo.models.onnx_export import export_onnx

    model, meta = load_generator(BUNDLED_MODEL)
    export_onnx(model, tmp_path / "m" / "exported.onnx", meta=meta)
    with TestClient(create_app([], models_dir=str(tmp_path / "m")), base_url="http://127.0.0.1") as c:
        m = c.get("/api/models").json()
        labels = {x["label"]: x for x in m["models"]}
        assert "copy.safetensors" in labels and "broken.safetensors" not in labels
        mid = labels["copy.safetensors"]["id"]
        (adapter,) = m["adapters"]
        assert adapter["label"] == "adapter.safetensors" and adapter["meta"]["rank"] == 2
        plain = _wait(c, c.post("/api/translate", data={"sample": "0", "model": mid}).json()["id"])
        tuned = _wait(
            c,
            c.post("/api/translate", data={"sample": "0", "model": mid, "lora": adapter["id"]}).json()["id"],
        )
        assert plain["state"] == tuned["state"] == "done" and tuned["lora"] == "adapter.safetensors"
        a = _png(c.get(plain["download"]).content).astype(int)
        b = _png(c.get(tuned["download"]).content).astype(int)
        assert 0 < np.abs(a - b).mean() < 40  # the adapter changes the output, a little
        onnx = labels["exported.onnx"]
        assert onnx["kind"] == "onnx"
        via_onnx = _wait(c, c.post("/api/translate", data={"sample": "0", "model": onnx["id"]}).json()["id"])
        assert via_onnx["state"] == "done", via_onnx
        assert np.abs(_png(c.get(via_onnx["download"]).content).astype(int) - a).max() <= 2  # same model
        sys_ = c.get(f"/api/system?model={mid}&lora={adapter['id']}").json()
        assert sys_["adapter"]["rank"] == 2 and sys_["model"]["label"] == "copy.safetensors"
        assert any("broken.safetensors" in s for s in sys_["skipped"])


def test_temporary_folder_is_removed_at_shutdown(scene_dir):
    state = AppState([str(scene_dir)])
    with TestClient(create_app(state=state), base_url="http://127.0.0.1") as c:
        r = c.post("/api/translate", files={"file": ("c.png", _chip_png(64), "image/png")})
        _wait(c, r.json()["id"])
        assert state.tmp.exists() and any(state.tmp.rglob("result.png"))
    assert not state.tmp.exists()


# -------------------------------------------------------------------------------------------------- CLI


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    from sar2opt_geo.cli import main

    def run(args):
        with pytest.raises(SystemExit) as e:
            main(args)
        return e.value.code

    assert run(["serve", str(tmp_path / "missing")]) == 1
    assert run(["serve", "--jobs", str(tmp_path / "nojob.yaml")]) == 1
    assert run(["serve", "--port", "0"]) == 2
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "rio_tiler" else real(n, *a))
    assert run(["serve", str(tmp_path)]) == 1


def test_cli_port_in_use_and_non_loopback_warning(tmp_path, monkeypatch, capsys):
    import socket

    import uvicorn

    from sar2opt_geo.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SystemExit) as e:
            main(["serve", str(tmp_path), "--port", str(port)])
        assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: cannot listen on 127.0.0.1:") and err.count("\n") == 1
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    with pytest.raises(SystemExit) as e:
        main(["serve", str(tmp_path), "--host", "0.0.0.0", "--port", str(port)])
    assert e.value.code == 0 and calls[0]["host"] == "0.0.0.0"
    assert "Warning: binding 0.0.0.0" in capsys.readouterr().err
