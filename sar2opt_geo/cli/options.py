"""Options shared by several subcommands (one place, as rasterio's ``rio`` does it).

Defaults come from :mod:`sar2opt_geo.defaults`, so the same option has the same default in every command.
"""

from __future__ import annotations

import click

from sar2opt_geo import defaults
from sar2opt_geo.filters import FILTER_NAMES

overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
quiet_opt = click.option("-q", "--quiet", is_flag=True, help="No progress bar; warnings and errors only.")
verbose_opt = click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
workers_opt = click.option(
    "--workers",
    type=int,
    default=None,
    help="Number of Dask worker processes: run on a local Dask cluster of N worker processes (127.0.0.1). "
    "Default: threads in this process.",
)
scheduler_opt = click.option(
    "--scheduler", default=None, metavar="ADDRESS", help="Run on an existing Dask cluster (tcp://host:8786)."
)
chunk_opt = click.option(
    "--chunk-size",
    type=int,
    default=defaults.CHUNK_SIZE,
    show_default=True,
    help="Pixels per Dask block side (rounded to a multiple of the tile stride).",
)
tile_opt = click.option(
    "--tile-size", type=int, default=defaults.TILE_SIZE, show_default=True, help="Model tile size in pixels."
)
overlap_opt = click.option(
    "--overlap",
    type=int,
    default=defaults.OVERLAP,
    show_default=True,
    help="Tile overlap in pixels (stride = tile − overlap).",
)
batch_opt = click.option(
    "--batch-size", type=int, default=defaults.BATCH_SIZE, show_default=True, help="Tiles per forward pass."
)
device_opt = click.option(
    "--device", default="auto", show_default=True, help="auto (cuda when a GPU is visible), cpu or cuda[:N]."
)
bands_opt = click.option(
    "--bands", default=None, help="Input bands by name or 1-based index, e.g. VV,VH or 1,2."
)
allow_ungeo_opt = click.option(
    "--allow-ungeoreferenced",
    is_flag=True,
    help="Accept inputs without CRS/transform/GCPs (pixel space output).",
)
input_scale_opt = click.option(
    "--input-scale",
    type=click.Choice(defaults.INPUT_SCALES),
    default="auto",
    show_default=True,
    help="Scale of the input values. auto: Sentinel-1 products are calibrated; else file name (ASF "
    "HyP3), band names/units (dB), uint8 = the model's 8-bit levels, floats below 0 = dB, else linear; "
    "other integers are refused (use dn with --calibration-constant).",
)
format_opt = click.option(
    "--format",
    "fmt",
    type=click.Choice(defaults.OUTPUT_FORMATS),
    default="cog",
    show_default=True,
    help="Output format: a Cloud-Optimized GeoTIFF, or a Zarr store (georeferenced, with a `valid` mask).",
)
seed_opt = click.option("--seed", type=int, default=defaults.SEED, show_default=True, help="Random seed.")
model_path = click.Path(exists=True, dir_okay=False)


def filter_name_opt(required: bool, help_prefix: str):
    return click.option(
        "--filter",
        "filter_name",
        type=click.Choice(FILTER_NAMES),
        required=required,
        default=None,
        help=f"{help_prefix} Filters are applied on linear intensity.",
    )


filter_params = [
    click.option(
        "--window",
        type=int,
        default=defaults.FILTER_WINDOW,
        show_default=True,
        help="Filter window (odd, >= 3).",
    ),
    click.option(
        "--enl", default=defaults.FILTER_ENL, show_default=True, help="Equivalent number of looks, or 'auto'."
    ),
    click.option(
        "--damping",
        type=float,
        default=defaults.FILTER_DAMPING,
        show_default=True,
        help="Frost/enhanced Lee damping.",
    ),
]
filter_opts = [filter_name_opt(False, "Speckle filter before the model (default: none)."), *filter_params]


def apply(options):
    """Decorator applying a list of click options in order."""

    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco
