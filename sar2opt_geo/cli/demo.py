"""``demo``: synthesise a Sentinel-1-like scene, translate it with the bundled model, write a preview."""

from __future__ import annotations

from pathlib import Path

import click

from sar2opt_geo.cli.base import DEFAULT_MODEL, Progress, cli, setup_logging
from sar2opt_geo.cli.options import overwrite_opt, quiet_opt, verbose_opt, workers_opt
from sar2opt_geo.errors import OutputError, UsageError


@cli.command()
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--width", type=int, default=3000, show_default=True)
@click.option("--height", type=int, default=2500, show_default=True)
@click.option("--seed", type=int, default=2024, show_default=True)
@click.option("--model", default=None, help="Checkpoint to use instead of the bundled model.")
@click.option("--device", default="auto", show_default=True)
@workers_opt
@overwrite_opt
@quiet_opt
@verbose_opt
def demo(outdir, width, height, seed, model, device, workers, overwrite, quiet, verbose):
    """Write OUTDIR/sar.tif + optical.tif (synthetic truth), OUTDIR/translated.tif (COG) and
    OUTDIR/preview.png (SAR | translated | truth)."""
    from sar2opt_geo.distributed import make_executor
    from sar2opt_geo.plan import TranslateOptions
    from sar2opt_geo.preview import side_by_side
    from sar2opt_geo.run import run_translate
    from sar2opt_geo.synth import SceneSpec, write_scene

    setup_logging(verbose, quiet)
    out = Path(outdir)
    targets = [out / n for n in ("sar.tif", "optical.tif", "translated.tif", "preview.png")]
    if not overwrite and any(t.exists() for t in targets):
        raise OutputError(f"{out}: already holds demo outputs (pass --overwrite to replace them)")
    model = model or str(DEFAULT_MODEL)
    if not Path(model).exists():
        raise UsageError(f"model {model} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    p = Progress("synthesising", quiet)
    try:
        sar, optical = write_scene(out, SceneSpec(width=width, height=height, seed=seed), progress=p)
    finally:
        p.close()
    p = Progress("translating", quiet)
    try:
        with make_executor(workers, None, verbose=bool(verbose)) as ex:
            s = run_translate(
                str(sar),
                str(out / "translated.tif"),
                TranslateOptions(model=model, device=device),
                ex,
                overwrite=True,
                progress=p,
            )
    finally:
        p.close()
    side_by_side(str(sar), str(out / "translated.tif"), str(optical), str(out / "preview.png"))
    if not quiet:
        click.echo(
            f"wrote {out / 'translated.tif'} ({s.evaluations} tiles in {s.seconds:.1f} s) and "
            f"{out / 'preview.png'} (SAR | translated | truth)",
            err=True,
        )
