"""sar2opt-geo: georeferenced SAR-to-optical translation with Pix2Pix generators on Dask."""

__version__ = "0.1.0"
