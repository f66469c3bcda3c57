"""``calibrate``: a Sentinel-1 GRD product → calibrated (denoised, warped) σ⁰/β⁰/γ⁰ float32 COG."""

from __future__ import annotations

import click

from sar2opt_geo.cli.base import Progress, cli, filter_spec_from, setup_logging
from sar2opt_geo.cli.options import (
    apply,
    bands_opt,
    chunk_opt,
    filter_name_opt,
    filter_params,
    overwrite_opt,
    quiet_opt,
    scheduler_opt,
    verbose_opt,
    workers_opt,
)
from sar2opt_geo.cli.translate import product_opts


@cli.command("calibrate")
@click.argument("product", type=click.Path())
@click.argument("output", type=click.Path())
@apply(product_opts)
@click.option("--db", "db", is_flag=True, help="Write 10·log10 of the intensity (dB; NaN at nodata).")
@filter_name_opt(False, "Speckle filter (default: none).")
@apply(filter_params)
@bands_opt
@chunk_opt
@workers_opt
@scheduler_opt
@overwrite_opt
@quiet_opt
@verbose_opt
def calibrate_cmd(
    product,
    output,
    calibration,
    no_denoise,
    warp,
    resolution,
    resampling,
    db,
    filter_name,
    window,
    enl,
    damping,
    bands,
    chunk_size,
    workers,
    scheduler,
    overwrite,
    quiet,
    verbose,
):
    """Calibrate a Sentinel-1 GRD PRODUCT (SAFE folder, manifest.safe, .zip or measurement tiff) into a
    float32 COG OUTPUT: σ⁰ (or β⁰/γ⁰) per polarisation, thermal noise removed, map-projected (--warp auto:
    UTM at the product's pixel spacing), linear or --db, optionally speckle-filtered — what translate feeds
    the model."""
    from sar2opt_geo.distributed import make_executor
    from sar2opt_geo.filter_run import run_filter

    setup_logging(verbose, quiet)
    spec = filter_spec_from(filter_name, window, enl, damping)
    progress = Progress("calibrating", quiet)
    try:
        with make_executor(workers, scheduler, verbose=bool(verbose)) as ex:
            res = run_filter(
                product,
                output,
                spec,
                ex,
                bands=bands,
                chunk_size=chunk_size,
                overwrite=overwrite,
                progress=progress,
                calibration=calibration,
                denoise=not no_denoise,
                warp=warp,
                resolution=resolution,
                resampling=resampling,
                output_scale="db" if db else "linear",
                require_product=True,
            )
    finally:
        progress.close()
    if not quiet:
        what = res["filter"]["name"] if isinstance(res["filter"], dict) else "no filter"
        click.echo(f"wrote {res['output']} ({calibration}, {res['scale']}, {what})", err=True)
