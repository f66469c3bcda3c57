"""``filter``: speckle filtering of a scene through the same windowed Dask machinery as translate."""

from __future__ import annotations

import click

from sar2opt_geo.cli.base import Progress, cli, filter_spec_from, setup_logging
from sar2opt_geo.cli.options import (
    allow_ungeo_opt,
    apply,
    bands_opt,
    chunk_opt,
    filter_name_opt,
    filter_params,
    input_scale_opt,
    overwrite_opt,
    quiet_opt,
    scheduler_opt,
    verbose_opt,
    workers_opt,
)
from sar2opt_geo.cli.translate import product_opts
from sar2opt_geo.errors import UsageError


@cli.command("filter")
@click.argument("input", type=click.Path())
@click.argument("output", type=click.Path())
@filter_name_opt(True, "Speckle filter.")
@apply(filter_params)
@bands_opt
@input_scale_opt
@apply(product_opts)
@chunk_opt
@workers_opt
@scheduler_opt
@allow_ungeo_opt
@overwrite_opt
@quiet_opt
@verbose_opt
def filter_cmd(
    input,
    output,
    filter_name,
    window,
    enl,
    damping,
    bands,
    input_scale,
    calibration,
    no_denoise,
    warp,
    resolution,
    resampling,
    chunk_size,
    workers,
    scheduler,
    allow_ungeoreferenced,
    overwrite,
    quiet,
    verbose,
):
    """Speckle-filter INPUT into a georeferenced float32 COG OUTPUT on the same grid (same scale as the
    input: dB stays dB; filtering itself happens on linear intensity)."""
    from sar2opt_geo.distributed import make_executor
    from sar2opt_geo.filter_run import run_filter

    setup_logging(verbose, quiet)
    spec = filter_spec_from(filter_name, window, enl, damping)
    if spec is None:
        raise UsageError("--filter is required")
    progress = Progress("filtering", quiet)
    try:
        with make_executor(workers, scheduler, verbose=bool(verbose)) as ex:
            res = run_filter(
                input,
                output,
                spec,
                ex,
                input_scale=input_scale,
                bands=bands,
                chunk_size=chunk_size,
                allow_ungeoreferenced=allow_ungeoreferenced,
                overwrite=overwrite,
                progress=progress,
                calibration=calibration,
                denoise=not no_denoise,
                warp=warp,
                resolution=resolution,
                resampling=resampling,
            )
    finally:
        progress.close()
    if not quiet:
        click.echo(f"wrote {res['output']} ({res['filter']['name']}, {res['scale']} scale)", err=True)
