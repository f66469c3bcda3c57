"""Options shared by several subcommands (one place, as rasterio's ``rio`` does it)."""

from __future__ import annotations

import click

overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
quiet_opt = click.option("-q", "--quiet", is_flag=True, help="No progress bar; warnings and errors only.")
verbose_opt = click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
workers_opt = click.option(
    "--workers", type=int, default=None, help="Run on a local Dask cluster of N worker processes (127.0.0.1)."
)
scheduler_opt = click.option(
    "--scheduler", default=None, metavar="ADDRESS", help="Run on an existing Dask cluster (tcp://host:8786)."
)
chunk_opt = click.option(
    "--chunk-size",
    type=int,
    default=1024,
    show_default=True,
    help="Pixels per Dask block side (rounded to a multiple of the tile stride).",
)
tile_opt = click.option(
    "--tile-size", type=int, default=256, show_default=True, help="Model tile size in pixels."
)
overlap_opt = click.option(
    "--overlap",
    type=int,
    default=64,
    show_default=True,
    help="Tile overlap in pixels (stride = tile − overlap).",
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
    type=click.Choice(["auto", "linear", "db", "amplitude", "dn"]),
    default="auto",
    show_default=True,
    help="Scale of the input values (auto: integers are DN, negatives mean dB, else linear).",
)
filter_opts = [
    click.option("--filter", "filter_name", default=None, help="Speckle filter applied on linear intensity."),
    click.option("--window", type=int, default=7, show_default=True, help="Filter window (odd, >= 3)."),
    click.option("--enl", default="4.4", show_default=True, help="Equivalent number of looks, or 'auto'."),
    click.option("--damping", type=float, default=2.0, show_default=True, help="Frost/enhanced Lee damping."),
]


def apply(options):
    """Decorator applying a list of click options in order."""

    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco
