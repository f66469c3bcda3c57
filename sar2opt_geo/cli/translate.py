"""``translate`` and ``info``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sar2opt_geo.cli.base import DEFAULT_MODEL, Progress, cli, filter_spec_from, setup_logging
from sar2opt_geo.cli.options import (
    allow_ungeo_opt,
    apply,
    bands_opt,
    chunk_opt,
    filter_opts,
    input_scale_opt,
    overlap_opt,
    overwrite_opt,
    quiet_opt,
    scheduler_opt,
    tile_opt,
    verbose_opt,
    workers_opt,
)
from sar2opt_geo.errors import UsageError


def preprocess_profile(name, filter_name, window, gamma):
    """``--preprocess sar2optical`` → that profile; otherwise ``None`` (the checkpoint's, unless ``none``)."""
    if name != "sar2optical":
        return None
    from sar2opt_geo.sar2optical import Sar2OpticalProfile

    return Sar2OpticalProfile(filter=filter_name, window=window, gamma=gamma)


@cli.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path())
@click.option(
    "--model",
    default=None,
    help="Native checkpoint (.safetensors) or an .onnx file from `model export-onnx`. "
    "Default: the bundled model.",
)
@click.option("--lora", default=None, help="LoRA adapter merged into the model at load.")
@tile_opt
@overlap_opt
@click.option("--batch-size", type=int, default=8, show_default=True, help="Tiles per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    default=None,
    help="Inference engine. Default: onnx for an .onnx model, else torch.",
)
@workers_opt
@scheduler_opt
@chunk_opt
@bands_opt
@input_scale_opt
@apply(filter_opts)
@click.option(
    "--preprocess",
    type=click.Choice(["none", "sar2optical"]),
    default=None,
    help="Preprocessing profile before the model (default: what the checkpoint declares).",
)
@click.option(
    "--preprocess-filter",
    default="lee",
    show_default=True,
    help="SAR2Optical profile filter: lee, frost, median, gaussian, bilateral or none.",
)
@click.option("--preprocess-window", type=int, default=5, show_default=True)
@click.option("--gamma", type=float, default=1.0, show_default=True, help="SAR2Optical profile gamma.")
@click.option("--aoi", default=None, help="GeoJSON polygon (any CRS): only tiles touching it are processed.")
@click.option("--format", "fmt", type=click.Choice(["cog", "zarr"]), default="cog", show_default=True)
@allow_ungeo_opt
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its saved work state.")
@overwrite_opt
@quiet_opt
@verbose_opt
def translate(
    input,
    output,
    model,
    lora,
    tile_size,
    overlap,
    batch_size,
    device,
    backend,
    workers,
    scheduler,
    chunk_size,
    bands,
    input_scale,
    filter_name,
    window,
    enl,
    damping,
    preprocess,
    preprocess_filter,
    preprocess_window,
    gamma,
    aoi,
    fmt,
    allow_ungeoreferenced,
    resume,
    overwrite,
    quiet,
    verbose,
):
    """Translate a SAR GeoTIFF INPUT into an optical-looking RGB COG (or Zarr) OUTPUT."""
    from sar2opt_geo.distributed import make_executor
    from sar2opt_geo.plan import TranslateOptions
    from sar2opt_geo.run import run_translate

    setup_logging(verbose, quiet)
    model = model or str(DEFAULT_MODEL)
    if not Path(model).exists():
        raise UsageError(
            f"model {model} does not exist"
            + ("" if model != str(DEFAULT_MODEL) else " (no bundled model installed; pass --model)")
        )
    opts = TranslateOptions(
        model=model,
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        backend=backend,
        chunk_size=chunk_size,
        bands=bands,
        input_scale=input_scale,
        filter=filter_spec_from(filter_name, window, enl, damping),
        preprocess=preprocess_profile(preprocess, preprocess_filter, preprocess_window, gamma),
        checkpoint_preprocess=preprocess != "none",
        aoi=aoi,
        lora=lora,
        fmt=fmt,
        allow_ungeoreferenced=allow_ungeoreferenced,
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
@click.argument("input", type=click.Path(dir_okay=False))
@tile_opt
@overlap_opt
@chunk_opt
@allow_ungeo_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(input, tile_size, overlap, chunk_size, allow_ungeoreferenced, as_json):
    """Describe a raster and the tile grid translate would use on it."""
    from sar2opt_geo.info import describe_scene

    d = describe_scene(input, tile_size, overlap, chunk_size, allow_ungeoreferenced)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    width = max(len(k) for k in d)
    for k, v in d.items():
        if v is not None:
            click.echo(f"{k.replace('_', ' '):<{width}}  {v}")
