"""The ``sar2opt-geo`` command line (the only module that imports click).

Every :class:`sar2opt_geo.errors.Sar2OptError` becomes a one-line ``Error: ...`` on stderr and exit code 1
(2 for usage errors); nothing is written at the output path in that case.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from sar2opt_geo import __version__
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
from sar2opt_geo.errors import Sar2OptError, UsageError

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "weights" / "default.safetensors"


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet or not verbose else (logging.INFO if verbose == 1 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)
    for noisy in ("distributed", "rasterio", "fiona", "numexpr", "asyncio", "tornado"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class Progress:
    """Tiles done / total with ETA on stderr (silent with -q)."""

    def __init__(self, label: str, quiet: bool):
        self.label, self.quiet, self.bar, self.last = label, quiet, None, 0

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_eta=True,
                                         show_pos=True, width=30)
            self.bar.__enter__()
        self.bar.update(done - self.last)
        self.last = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def filter_spec_from(filter_name, window, enl, damping):
    if not filter_name:
        return None
    from sar2opt_geo.filters import make_filter_spec

    if enl != "auto":
        try:
            enl = float(enl)
        except ValueError:
            raise UsageError(f"--enl must be a number or 'auto' (got {enl!r})") from None
    return make_filter_spec(filter_name, window=window, enl=enl, damping=damping)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sar2opt-geo")
def cli():
    """Georeferenced SAR-to-optical translation with Pix2Pix generators, on Dask."""


@cli.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path())
@click.option("--model", default=None, help="Native checkpoint (.safetensors). Default: the bundled model.")
@click.option("--lora", default=None, help="LoRA adapter merged into the model at load.")
@tile_opt
@overlap_opt
@click.option("--batch-size", type=int, default=8, show_default=True, help="Tiles per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True)
@workers_opt
@scheduler_opt
@chunk_opt
@bands_opt
@input_scale_opt
@apply(filter_opts)
@click.option("--aoi", default=None, help="GeoJSON polygon (any CRS): only tiles touching it are processed.")
@click.option("--format", "fmt", type=click.Choice(["cog", "zarr"]), default="cog", show_default=True)
@allow_ungeo_opt
@overwrite_opt
@quiet_opt
@verbose_opt
def translate(input, output, model, lora, tile_size, overlap, batch_size, device, backend, workers, scheduler,
              chunk_size, bands, input_scale, filter_name, window, enl, damping, aoi, fmt, allow_ungeoreferenced,
              overwrite, quiet, verbose):
    """Translate a SAR GeoTIFF INPUT into an optical-looking RGB COG (or Zarr) OUTPUT."""
    from sar2opt_geo.distributed import make_executor
    from sar2opt_geo.pipeline import TranslateOptions, run_translate

    setup_logging(verbose, quiet)
    model = model or str(DEFAULT_MODEL)
    if not Path(model).exists():
        raise UsageError(f"model {model} does not exist" + ("" if model != str(DEFAULT_MODEL) else
                                                            " (no bundled model installed; pass --model)"))
    opts = TranslateOptions(
        model=model, tile_size=tile_size, overlap=overlap, batch_size=batch_size, device=device, backend=backend,
        chunk_size=chunk_size, bands=bands, input_scale=input_scale,
        filter=filter_spec_from(filter_name, window, enl, damping), aoi=aoi, lora=lora, fmt=fmt,
        allow_ungeoreferenced=allow_ungeoreferenced,
    )
    progress = Progress("translating", quiet)
    try:
        with make_executor(workers, scheduler, verbose=bool(verbose)) as ex:
            summary = run_translate(input, output, opts, ex, overwrite=overwrite, progress=progress)
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
    from sar2opt_geo.pipeline import describe_scene

    d = describe_scene(input, tile_size, overlap, chunk_size, allow_ungeoreferenced)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    width = max(len(k) for k in d)
    for k, v in d.items():
        if v is not None:
            click.echo(f"{k.replace('_', ' '):<{width}}  {v}")


@cli.group()
def synth():
    """Synthetic Sentinel-1-like scenes and paired tiles (demo and test data)."""


@synth.command("scene")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--width", type=int, default=3000, show_default=True)
@click.option("--height", type=int, default=2500, show_default=True)
@click.option("--bands", default="VV", show_default=True, help="VV or VV,VH.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--crs", default="EPSG:32633", show_default=True)
@click.option("--gcps", is_flag=True, help="Georeference sar.tif by GCPs (EPSG:4326) like raw GRD products.")
@click.option("--no-footprint", is_flag=True, help="No nodata collar.")
@click.option("--domain", type=click.Choice(["s1", "gf3"]), default="s1", show_default=True)
@overwrite_opt
@quiet_opt
def synth_scene(outdir, width, height, bands, seed, crs, gcps, no_footprint, domain, overwrite, quiet):
    """Write OUTDIR/sar.tif (linear σ⁰) and OUTDIR/optical.tif (RGB truth)."""
    from sar2opt_geo.synth import SceneSpec, write_scene

    out = Path(outdir)
    for name in ("sar.tif", "optical.tif"):
        if (out / name).exists() and not overwrite:
            raise Sar2OptError(f"{out / name}: already exists (pass --overwrite to replace it)")
    if width < 1 or height < 1:
        raise UsageError("--width and --height must be positive")
    out.mkdir(parents=True, exist_ok=True)
    spec = SceneSpec(width=width, height=height, bands=tuple(b.strip().upper() for b in bands.split(",")),
                     seed=seed, crs=crs, footprint=not no_footprint, domain=domain)
    progress = Progress("synthesising", quiet)
    try:
        sar, opt = write_scene(out, spec, gcps=gcps, progress=progress)
    finally:
        progress.close()
    if not quiet:
        click.echo(f"wrote {sar} and {opt}", err=True)


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="sar2opt-geo", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Sar2OptError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(0)
