"""``synth scene`` and ``synth pairs``: synthetic data for demos, tests and training."""

from __future__ import annotations

from pathlib import Path

import click

from sar2opt_geo.cli.base import Progress, cli
from sar2opt_geo.cli.options import overwrite_opt, quiet_opt, seed_opt
from sar2opt_geo.defaults import TILE_SIZE
from sar2opt_geo.errors import OutputError, UsageError

#: The simulated sensor, for ``synth scene`` and ``synth pairs``.
domain_opt = click.option(
    "--domain",
    type=click.Choice(["s1", "gf3"]),
    default="s1",
    show_default=True,
    help="s1: Sentinel-1-like; gf3: Gaofen-3-like (finer, other speckle and radiometry).",
)


@cli.group()
def synth():
    """Synthetic Sentinel-1-like scenes and paired tiles (demo and test data)."""


@synth.command("scene")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--width", type=int, default=3000, show_default=True, help="Scene width in pixels.")
@click.option("--height", type=int, default=2500, show_default=True, help="Scene height in pixels.")
@click.option("--bands", default="VV", show_default=True, help="VV or VV,VH.")
@seed_opt
@click.option("--crs", default="EPSG:32633", show_default=True, help="CRS of the scene's map grid.")
@click.option("--gcps", is_flag=True, help="Georeference sar.tif by GCPs (EPSG:4326) like raw GRD products.")
@click.option("--no-footprint", is_flag=True, help="No nodata collar.")
@domain_opt
@overwrite_opt
@quiet_opt
def synth_scene(outdir, width, height, bands, seed, crs, gcps, no_footprint, domain, overwrite, quiet):
    """Write OUTDIR/sar.tif (linear σ⁰) and OUTDIR/optical.tif (RGB truth)."""
    from sar2opt_geo.synth import SceneSpec, write_scene

    out = Path(outdir)
    for name in ("sar.tif", "optical.tif"):
        if (out / name).exists() and not overwrite:
            raise OutputError(f"{out / name}: already exists (pass --overwrite to replace it)")
    if width < 1 or height < 1:
        raise UsageError("--width and --height must be positive")
    out.mkdir(parents=True, exist_ok=True)
    spec = SceneSpec(
        width=width,
        height=height,
        bands=tuple(b.strip().upper() for b in bands.split(",")),
        seed=seed,
        crs=crs,
        footprint=not no_footprint,
        domain=domain,
    )
    progress = Progress("synthesising", quiet)
    try:
        sar, opt = write_scene(out, spec, gcps=gcps, progress=progress)
    finally:
        progress.close()
    if not quiet:
        click.echo(f"wrote {sar} and {opt}", err=True)


@synth.command("pairs")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--count", type=int, required=True, help="Number of SAR/optical tile pairs.")
@domain_opt
@seed_opt
@click.option("--tile-size", type=int, default=TILE_SIZE, show_default=True, help="Tile side in pixels.")
@click.option(
    "--speckle-corr",
    metavar="LO,HI",
    default=None,
    help="Draw each scene's speckle correlation (px, 0-1) from this range instead of 0.6 for all: training "
    "data for a model that must not read one speckle texture (e.g. 0.4,0.9, as the bundled model's).",
)
@click.option(
    "--dual-pol",
    is_flag=True,
    help="SAR tiles as the Sentinel-1 dual-pol composite (RGB PNG: VV, VH, VV/VH in dB, the radiometry of "
    "the bundled dual-pol model) instead of grey VV. s1 only.",
)
@overwrite_opt
@quiet_opt
def synth_pairs(outdir, count, domain, seed, tile_size, speckle_corr, dual_pol, overwrite, quiet):
    """Write QXSLAB-SAROPT-layout PNG pairs: OUTDIR/sar_256_oc_0.2/*.png and OUTDIR/opt_256_oc_0.2/*.png."""
    from sar2opt_geo.synth import write_pairs

    if count < 1:
        raise UsageError("--count must be >= 1")
    corr = None
    if speckle_corr is not None:
        try:
            corr = tuple(float(v) for v in speckle_corr.split(","))
        except ValueError:
            corr = ()
        if len(corr) != 2:
            raise UsageError(f"--speckle-corr must be LO,HI (two numbers), got {speckle_corr!r}")
    out = Path(outdir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out}: exists and is not empty (pass --overwrite to write into it)")
    if dual_pol and domain != "s1":
        raise UsageError("--dual-pol pairs are Sentinel-1 (--domain s1)")
    pairs = write_pairs(
        out, count, domain=domain, seed=seed, tile=tile_size, speckle_corr=corr, dual_pol=dual_pol
    )
    if not quiet:
        kind = " dual-pol" if dual_pol else ""
        click.echo(f"wrote {len(pairs)} {domain}{kind} pairs under {out}", err=True)


@synth.command("product")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--zip", "zip_product", is_flag=True, help="Also write NAME.zip (as downloaded).")
@click.option(
    "--pass",
    "pass_direction",
    type=click.Choice(["ascending", "descending"]),
    default="ascending",
    show_default=True,
    help="Orbit direction (ascending: upside-down against north; descending: mirrored).",
)
@click.option("--width", type=int, default=1200, show_default=True, help="Range samples.")
@click.option("--height", type=int, default=900, show_default=True, help="Lines.")
@click.option("--bands", default="VV,VH", show_default=True, help="Polarisations: VV, VH or VV,VH.")
@click.option(
    "--mode", type=click.Choice(["IW", "EW"]), default="IW", show_default=True, help="IW GRDH or EW GRDM."
)
@click.option(
    "--thermal-noise",
    type=click.Choice(["mean", "random"]),
    default="random",
    show_default=True,
    help="Noise added to the DN: its mean (denoising gives back the σ⁰ exactly) or realistic random noise.",
)
@seed_opt
@overwrite_opt
@quiet_opt
def synth_product(
    outdir, zip_product, pass_direction, width, height, bands, mode, thermal_noise, seed, overwrite, quiet
):
    """Write a synthetic Sentinel-1 GRD product OUTDIR/NAME.SAFE (uint16 DN with calibration and noise
    LUTs, annotation with its geolocation grid, manifest) and the map-projected truth beside it
    (OUTDIR/sar.tif: σ⁰, OUTDIR/optical.tif)."""
    from sar2opt_geo.sentinel1.synth import ProductSpec, write_product

    spec = ProductSpec(
        width=width,
        height=height,
        polarisations=tuple(b.strip().upper() for b in bands.split(",") if b.strip()),
        pass_direction=pass_direction.upper(),
        seed=seed,
        mode=mode,
        pixel_spacing=10.0 if mode == "IW" else 40.0,
        thermal_noise=thermal_noise,
    )
    spec.validate()
    out = Path(outdir)
    targets = [out / spec.name, out / "sar.tif", out / "optical.tif"]
    if zip_product:
        targets.append(out / (spec.name[: -len(".SAFE")] + ".zip"))
    if not overwrite and any(t.exists() for t in targets):
        raise OutputError(f"{out}: already holds this product (pass --overwrite to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    paths = write_product(out, spec, zip_product=zip_product)
    if not quiet:
        extra = f", {paths.zip.name}" if paths.zip else ""
        click.echo(f"wrote {paths.safe}{extra} and the map-projected truth sar.tif, optical.tif", err=True)
