"""``demo``: synthesise a Sentinel-1 GRD product (SAFE), calibrate and translate it with the bundled model,
write a preview (calibrated σ⁰ | translated | optical truth)."""

from __future__ import annotations

from pathlib import Path

import click

from sar2opt_geo.cli.base import Progress, bundled_model_or, cli, setup_logging
from sar2opt_geo.cli.options import device_opt, model_path, overwrite_opt, quiet_opt, verbose_opt, workers_opt
from sar2opt_geo.defaults import SEED
from sar2opt_geo.errors import OutputError

#: The demo product for ``--seed S`` is the synthetic product of seed DEMO_SCENE_SEED + S.
DEMO_SCENE_SEED = 2024


@cli.command()
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--width", type=int, default=2400, show_default=True, help="Product range samples.")
@click.option("--height", type=int, default=2000, show_default=True, help="Product lines.")
@click.option(
    "--pass",
    "pass_direction",
    type=click.Choice(["ascending", "descending"]),
    default="ascending",
    show_default=True,
    help="Orbit direction of the synthetic product.",
)
@click.option(
    "--seed",
    type=int,
    default=SEED,
    show_default=True,
    help=f"Random seed (the product is `synth product` with seed {DEMO_SCENE_SEED} + SEED).",
)
@click.option(
    "--model", type=model_path, default=None, help="Checkpoint to use instead of the bundled model."
)
@device_opt
@workers_opt
@overwrite_opt
@quiet_opt
@verbose_opt
def demo(outdir, width, height, pass_direction, seed, model, device, workers, overwrite, quiet, verbose):
    """Write a synthetic Sentinel-1 GRD product OUTDIR/NAME.SAFE with its map-projected truth
    (OUTDIR/sar.tif σ⁰, OUTDIR/optical.tif), its calibrated σ⁰ (OUTDIR/sigma0.tif: denoised, map-projected),
    OUTDIR/translated.tif (COG, the product translated by the bundled model) and OUTDIR/preview.png
    (calibrated σ⁰ | translated | truth)."""
    from sar2opt_geo.distributed import make_executor
    from sar2opt_geo.filter_run import run_filter
    from sar2opt_geo.plan import TranslateOptions
    from sar2opt_geo.preview import side_by_side
    from sar2opt_geo.run import run_translate
    from sar2opt_geo.sentinel1.synth import ProductSpec, write_product

    setup_logging(verbose, quiet)
    out = Path(outdir)
    spec = ProductSpec(
        width=width,
        height=height,
        seed=DEMO_SCENE_SEED + seed,
        pass_direction=pass_direction.upper(),
        thermal_noise="random",
    )
    spec.validate()
    names = ("sar.tif", "optical.tif", "sigma0.tif", "translated.tif", "preview.png", spec.name)
    targets = [out / n for n in names]
    if not overwrite and any(t.exists() for t in targets):
        raise OutputError(f"{out}: already holds demo outputs (pass --overwrite to replace them)")
    model = bundled_model_or(model)
    out.mkdir(parents=True, exist_ok=True)
    if not quiet:
        click.echo(f"synthesising {spec.name} ({width} x {height}, {pass_direction} pass)", err=True)
    paths = write_product(out, spec)
    p = Progress("calibrating", quiet)
    try:
        with make_executor(workers, None, verbose=bool(verbose)) as ex:
            run_filter(
                str(paths.safe),
                str(out / "sigma0.tif"),
                None,
                ex,
                bands="VV",
                overwrite=True,
                progress=p,
                output_scale="linear",
                require_product=True,
            )
            p.close()
            p = Progress("translating", quiet)
            s = run_translate(
                str(paths.safe),
                str(out / "translated.tif"),
                TranslateOptions(model=model, device=device),
                ex,
                overwrite=True,
                progress=p,
            )
    finally:
        p.close()
    side_by_side(
        str(out / "sigma0.tif"),
        str(out / "translated.tif"),
        str(paths.optical),
        str(out / "preview.png"),
        align_truth=True,
    )
    if not quiet:
        click.echo(
            f"wrote {out / 'sigma0.tif'}, {out / 'translated.tif'} ({s.evaluations} tiles in "
            f"{s.seconds:.1f} s) and {out / 'preview.png'} (calibrated σ⁰ | translated | truth)",
            err=True,
        )
