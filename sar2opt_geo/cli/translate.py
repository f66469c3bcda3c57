"""``translate`` and ``info``."""

from __future__ import annotations

import json

import click

from sar2opt_geo.cli.base import (
    Progress,
    bundled_model_or,
    cli,
    filter_spec_from,
    given,
    output_format,
    setup_logging,
)
from sar2opt_geo.cli.options import (
    allow_ungeo_opt,
    apply,
    bands_opt,
    chunk_opt,
    device_opt,
    filter_opts,
    format_opt,
    input_scale_opt,
    model_path,
    overlap_opt,
    overwrite_opt,
    quiet_opt,
    scheduler_opt,
    tile_opt,
    verbose_opt,
    workers_opt,
)
from sar2opt_geo.defaults import (
    BACKEND,
    BACKEND_CHOICES,
    CALIBRATION,
    CALIBRATIONS,
    NODATA_FILLS,
    PRECISION,
    PRECISIONS,
    RESAMPLING,
    RESAMPLINGS,
    WARP,
)
from sar2opt_geo.errors import UsageError
from sar2opt_geo.sar2optical import SAR2OPTICAL_FILTERS

PROFILE_OPTIONS = ("preprocess_filter", "preprocess_window", "gamma")

#: Sentinel-1 product and map projection options (translate, info, filter, calibrate).
product_opts = [
    click.option(
        "--calibration",
        type=click.Choice(CALIBRATIONS),
        default=CALIBRATION,
        show_default=True,
        help="Sentinel-1 products: radiometric calibration of the DN (σ⁰, β⁰ or γ⁰).",
    ),
    click.option(
        "--no-denoise",
        "no_denoise",
        is_flag=True,
        help="Sentinel-1 products: skip thermal noise removal (on by default for GRD).",
    ),
    click.option(
        "--warp",
        default=WARP,
        show_default=True,
        help="Map projection before the model: auto (GCP-only inputs such as GRD products go to their UTM "
        "zone at their pixel spacing), none (keep radar geometry and GCPs), or a CRS such as EPSG:32633.",
    ),
    click.option(
        "--resolution",
        type=float,
        default=None,
        help="Pixel size of the warped grid in metres (default: the input's pixel spacing, 10 m for GRDH).",
    ),
    click.option(
        "--resampling",
        type=click.Choice(RESAMPLINGS),
        default=RESAMPLING,
        show_default=True,
        help="Warping: bilinear on linear intensity, or nearest (keeps per-pixel speckle statistics).",
    ),
]
calibration_constant_opt = click.option(
    "--calibration-constant",
    type=float,
    default=None,
    metavar="A",
    help="With --input-scale dn: σ⁰ = DN²/A² (for DN images without their product's calibration LUTs).",
)


def preprocess_profile(name, filter_name, window, gamma):
    """``--preprocess sar2optical`` → that profile; otherwise ``None`` (the checkpoint's, unless ``none``)."""
    if name != "sar2optical":
        return None
    from sar2opt_geo.sar2optical import Sar2OpticalProfile

    return Sar2OpticalProfile(filter=filter_name, window=window, gamma=gamma)


@cli.command()
@click.argument("input", type=click.Path())
@click.argument("output", type=click.Path())
@click.option(
    "--model",
    type=model_path,
    default=None,
    help="Native checkpoint (.safetensors) or an .onnx file from `model export-onnx`. "
    "Default: the bundled model.",
)
@click.option("--lora", type=model_path, default=None, help="LoRA adapter merged into the model at load.")
@tile_opt
@overlap_opt
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Tiles per forward pass. Default: per engine on CPU (torch 8, onnx 2, measured), from free memory "
    "on CUDA.",
)
@device_opt
@click.option(
    "--backend",
    type=click.Choice(BACKEND_CHOICES),
    default=BACKEND,
    show_default=True,
    help="Inference engine. auto: ONNX Runtime on CPU when the model exports and matches torch within 1 DN "
    "(exported once into the user cache, $SAR2OPT_GEO_CACHE_DIR), else torch; torch on CUDA; onnx for an "
    ".onnx model.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=PRECISION,
    show_default=True,
    help="Model precision: bf16 (torch autocast, CPU/CUDA), fp16 (CUDA), int8 (ONNX Runtime static "
    "quantisation calibrated on tiles of the scene, CPU).",
)
@workers_opt
@scheduler_opt
@chunk_opt
@bands_opt
@input_scale_opt
@calibration_constant_opt
@apply(product_opts)
@apply(filter_opts)
@click.option(
    "--preprocess",
    type=click.Choice(["none", "sar2optical"]),
    default=None,
    help="Preprocessing profile before the model (default: what the checkpoint declares; none: no profile).",
)
@click.option(
    "--preprocess-filter",
    type=click.Choice(SAR2OPTICAL_FILTERS),
    default="lee",
    show_default=True,
    help="SAR2Optical profile filter (only with --preprocess sar2optical).",
)
@click.option(
    "--preprocess-window",
    type=int,
    default=5,
    show_default=True,
    help="SAR2Optical profile filter window, odd >= 3 (only with --preprocess sar2optical).",
)
@click.option(
    "--gamma",
    type=float,
    default=1.0,
    show_default=True,
    help="SAR2Optical profile gamma (only with --preprocess sar2optical).",
)
@click.option(
    "--aoi",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="GeoJSON polygon: only tiles touching it are processed, pixels outside it are nodata. Plain "
    "GeoJSON is EPSG:4326 longitude/latitude (RFC 7946) unless the file carries a `crs` member.",
)
@click.option(
    "--nodata-fill",
    type=click.Choice(NODATA_FILLS),
    default="reflect",
    show_default=True,
    help="What the model sees at nodata pixels: reflect (mirrored from the nearby valid pixels, so footprint "
    "edges look like the scene) or constant (the low end of its range).",
)
@format_opt
@allow_ungeo_opt
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its saved work state.")
@overwrite_opt
@quiet_opt
@verbose_opt
@click.pass_context
def translate(
    ctx,
    input,
    output,
    model,
    lora,
    tile_size,
    overlap,
    batch_size,
    device,
    backend,
    precision,
    workers,
    scheduler,
    chunk_size,
    bands,
    input_scale,
    calibration_constant,
    calibration,
    no_denoise,
    warp,
    resolution,
    resampling,
    filter_name,
    window,
    enl,
    damping,
    preprocess,
    preprocess_filter,
    preprocess_window,
    gamma,
    aoi,
    nodata_fill,
    fmt,
    allow_ungeoreferenced,
    resume,
    overwrite,
    quiet,
    verbose,
):
    """Translate a SAR GeoTIFF, 8-bit SAR chip or Sentinel-1 GRD product INPUT (SAFE folder, manifest.safe,
    .zip or measurement tiff) into an optical-looking RGB COG (or Zarr) OUTPUT."""
    from sar2opt_geo.distributed import make_executor
    from sar2opt_geo.plan import TranslateOptions
    from sar2opt_geo.run import run_translate

    setup_logging(verbose, quiet)
    stray = given(ctx, *PROFILE_OPTIONS)
    if stray and preprocess != "sar2optical":
        raise UsageError(f"{', '.join(stray)}: only valid with --preprocess sar2optical")
    model = bundled_model_or(model)
    fmt = output_format(ctx, output, fmt)
    opts = TranslateOptions(
        model=model,
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        backend=backend,
        precision=precision,
        chunk_size=chunk_size,
        bands=bands,
        input_scale=input_scale,
        filter=filter_spec_from(filter_name, window, enl, damping),
        preprocess=preprocess_profile(preprocess, preprocess_filter, preprocess_window, gamma),
        checkpoint_preprocess=preprocess != "none",
        aoi=aoi,
        nodata_fill=nodata_fill,
        lora=lora,
        fmt=fmt,
        allow_ungeoreferenced=allow_ungeoreferenced,
        calibration=calibration,
        denoise=not no_denoise,
        warp=warp,
        resolution=resolution,
        calibration_constant=calibration_constant,
        resampling=resampling,
    )
    progress = Progress("translating", quiet)
    try:
        with make_executor(workers, scheduler, verbose=bool(verbose)) as ex:
            summary = run_translate(
                input, output, opts, ex, overwrite=overwrite, resume=resume, progress=progress
            )
    finally:
        progress.close()
    if not quiet:
        click.echo(
            f"wrote {summary.output}: {summary.evaluations} of {summary.tiles} tiles evaluated "
            f"in {summary.seconds:.1f} s ({summary.blocks} blocks of {summary.chunk} px)",
            err=True,
        )


@cli.command()
@click.argument("input", type=click.Path())
@tile_opt
@overlap_opt
@chunk_opt
@bands_opt
@input_scale_opt
@apply(product_opts)
@allow_ungeo_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(
    input,
    tile_size,
    overlap,
    chunk_size,
    bands,
    input_scale,
    calibration,
    no_denoise,
    warp,
    resolution,
    resampling,
    allow_ungeoreferenced,
    as_json,
):
    """Describe a raster or Sentinel-1 product (polarisations, product type, pass, calibration, warp, input
    scale decision) and the tile grid translate would use on it."""
    from sar2opt_geo.info import describe_scene

    d = describe_scene(
        input,
        tile_size,
        overlap,
        chunk_size,
        allow_ungeoreferenced,
        calibration=calibration,
        denoise=not no_denoise,
        warp=warp,
        resolution=resolution,
        bands=bands,
        input_scale=input_scale,
        resampling=resampling,
    )
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    width = max(len(k) for k in d)
    for k, v in d.items():
        if v is not None:
            click.echo(f"{k.replace('_', ' '):<{width}}  {v}")
