"""Sentinel-1 GRD products: discovery (SAFE folder, manifest, zip, measurement tiff, cloud layouts),
calibration, thermal noise removal, geolocation, and synthetic products for tests and demos.

This package (with :mod:`sar2opt_geo.io`) is allowed to open rasters.
"""

from sar2opt_geo.sentinel1.calibration import CALIBRATIONS, DEFAULT_CALIBRATION
from sar2opt_geo.sentinel1.noise import NOISE_FLOOR_FRACTION
from sar2opt_geo.sentinel1.product import S1Band, S1Product, open_product

__all__ = [
    "CALIBRATIONS",
    "DEFAULT_CALIBRATION",
    "NOISE_FLOOR_FRACTION",
    "S1Band",
    "S1Product",
    "open_product",
]
