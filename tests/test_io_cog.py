"""The COG step's GDAL configuration (issue #15): PACKBITS for the COG driver's temporary overview files
instead of its ZSTD default gives the same file, byte for byte, and a valid COG with mask overviews."""

from __future__ import annotations

import hashlib

import numpy as np
import rasterio

from sar2opt_geo import io


def staging(path, seed: int = 0, h: int = 1300, w: int = 1100) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx + yy) % 256, (3 * xx) % 256, rng.integers(0, 256, (h, w))]).astype(np.uint8)
    valid = xx + 0.4 * yy > 180  # a slanted nodata collar: the overviews average only valid pixels
    rgb[:, ~valid] = 0
    geo = io.GeoProfile(w, h, io.crs_wkt("EPSG:32631"), (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0))
    with io.GeoTiffWriter(path, geo, 3, "uint8", internal_mask=True, compress="none") as dst:
        dst.write(0, 0, rgb, valid)


def test_cog_env_gives_the_zstd_default_file_byte_for_byte(tmp_path):
    src = tmp_path / "staging.tif"
    staging(src)
    io.staging_to_cog(src, tmp_path / "fast.tif")
    with rasterio.Env(**{**io.COG_ENV, "COG_TMP_COMPRESSION": "ZSTD"}):
        rasterio.shutil.copy(
            str(src), str(tmp_path / "zstd.tif"), driver="COG", BLOCKSIZE=512, **io.COG_OPTIONS
        )
    a, b = (hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("fast.tif", "zstd.tif"))
    assert a == b
    assert io.validate_cog(tmp_path / "fast.tif")[0]
    _, meta = io.read_raster(tmp_path / "fast.tif", masked=True)
    assert meta["overviews"] == [2, 4] and not meta["mask"].all() and meta["mask"].any()
