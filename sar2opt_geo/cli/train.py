"""``train pretrain``, ``train finetune``, ``evaluate`` and ``tile-pairs``: the training side of the CLI."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click

from sar2opt_geo.cli.base import Progress, check_model_channels, cli, setup_logging
from sar2opt_geo.cli.options import apply, input_scale_opt, overwrite_opt, quiet_opt, verbose_opt
from sar2opt_geo.cli.translate import calibration_constant_opt, product_opts
from sar2opt_geo.defaults import BUNDLED_DUAL_POL_MODEL, BUNDLED_MODEL
from sar2opt_geo.errors import OutputError, UsageError


def _deprecated_workers(ctx, param, value):
    if value is not None:
        click.echo(
            "Warning: train --workers is deprecated (in translate/submit it means Dask processes); "
            "use --loader-workers.",
            err=True,
        )
    return value


_common = [
    click.option(
        "--data",
        default=None,
        help="Dataset folder (QXSLAB or SEN1-2 layout) or tile-pairs .zarr.  [required unless --resume]",
    ),
    click.option(
        "--out",
        default=None,
        help="Run folder (checkpoints, logs, metrics, plots); not inside --data.  [required unless --resume]",
    ),
    click.option("--config", "config_file", default=None, help="YAML config (see configs/*.yaml)."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key."),
    click.option(
        "--split-file", default=None, help='Split JSON {"data": {"train": [...], ...}} (SAR paths).'
    ),
    click.option(
        "--resume", default=None, metavar="RUN", help="Continue the run in RUN exactly where it stopped."
    ),
    click.option(
        "--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto, or the config's)."
    ),
    click.option(
        "--loader-workers",
        "workers",
        type=click.IntRange(min=0),
        default=None,
        help="DataLoader worker processes (default: 0 on <= 2 usable cores, else min(4, cores - 1)).",
    ),
    click.option(
        "--workers",
        "old_workers",
        type=click.IntRange(min=0),
        default=None,
        hidden=True,
        expose_value=True,
        callback=_deprecated_workers,
        help="Deprecated alias of --loader-workers.",
    ),
    quiet_opt,
    verbose_opt,
]


def _interrupted(summary: dict) -> None:
    """Say where the interrupted run stands and how to continue it; exit 128 + signal number."""
    click.echo(
        f"Interrupted by {summary['interrupted']} at step {summary['steps']}/{summary['planned_steps']}; "
        f"checkpoint saved. Resume with: {summary['resume']}",
        err=True,
    )
    sys.exit(128 + int(signal.Signals[summary["interrupted"]]))


def _run(
    mode, data, out, config_file, overrides, split_file, resume, device, workers, opts, base=None, extra=()
):
    from sar2opt_geo.training.config import load_config, parse_overrides
    from sar2opt_geo.training.trainer import Run

    old_workers, quiet, verbose = opts
    if workers is not None and old_workers is not None and workers != old_workers:
        raise UsageError("give --loader-workers only (--workers is its deprecated alias)")
    workers = workers if workers is not None else old_workers
    setup_logging(verbose, quiet)
    logging.getLogger("sar2opt_geo.training").setLevel(logging.WARNING if quiet else logging.INFO)
    sets = list(overrides) + list(extra)
    if device:
        sets.append(f"device={device}")
    if workers is not None:
        sets.append(f"num_workers={workers}")
    if resume:
        if out and Path(out) != Path(resume):
            raise UsageError("--resume RUN continues in RUN; do not also give another --out")
        if config_file:
            raise UsageError("--config cannot be combined with --resume (use --set to change keys)")
        run = Run(
            data, resume, resume=True, split_file=split_file, quiet=quiet, overrides=parse_overrides(sets)
        )
    else:
        if not data or not out:
            raise UsageError("--data and --out are required (or --resume RUN)")
        cfg = load_config(config_file, sets)
        run = Run(data, out, cfg, mode=mode, base=base, split_file=split_file, quiet=quiet)
    summary = run.fit()
    if summary.get("interrupted"):
        _interrupted(summary)
    if not quiet:
        v = summary.get("validation") or {}
        val = f"; val PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.4f}" if v else ""
        click.echo(
            f"{summary['steps']} steps in {summary['wall_time_s']:.0f} s; trainable parameters "
            f"{summary['trainable_parameters']:,} ({100 * summary['trainable_fraction']:.2f} %){val}; "
            f"wrote {run.out}",
            err=True,
        )


@cli.group()
def train():
    """Train pix2pix generators: pretraining and (LoRA) fine-tuning."""


@train.command("pretrain")
@apply(_common)
def train_pretrain(
    data, out, config_file, overrides, split_file, resume, device, workers, old_workers, quiet, verbose
):
    """Train a generator from scratch on paired tiles.

    Ctrl-C or SIGTERM stops at the end of the current step with a full checkpoint and prints the command
    that continues the run (--resume RUN gives the same weights as an uninterrupted run)."""
    opts = (old_workers, quiet, verbose)
    _run("pretrain", data, out, config_file, overrides, split_file, resume, device, workers, opts)


@train.command("finetune")
@click.option("--base", default=None, help="Native generator checkpoint to start from.")
@click.option("--lora", is_flag=True, help="Train LoRA adapters only (base and BatchNorm frozen).")
@click.option("--rank", type=int, default=None, help="LoRA rank (default 16).")
@click.option("--alpha", type=float, default=None, help="LoRA alpha (default 32).")
@click.option("--lora-dropout", type=float, default=None, help="LoRA dropout (default 0.1).")
@apply(_common)
def train_finetune(
    base,
    lora,
    rank,
    alpha,
    lora_dropout,
    data,
    out,
    config_file,
    overrides,
    split_file,
    resume,
    device,
    workers,
    old_workers,
    quiet,
    verbose,
):
    """Fine-tune a generator checkpoint (fully, or with LoRA adapters).

    Ctrl-C or SIGTERM stops at the end of the current step with a full checkpoint and prints the command
    that continues the run."""
    extra = []
    if not resume:
        if not base:
            raise UsageError("finetune needs --base CKPT")
        if lora:
            extra.append("lora=true")
        elif any(v is not None for v in (rank, alpha, lora_dropout)):
            raise UsageError("--rank/--alpha/--lora-dropout need --lora")
    for key, val in (("lora_rank", rank), ("lora_alpha", alpha), ("lora_dropout", lora_dropout)):
        if val is not None:
            extra.append(f"{key}={val}")
    opts = (old_workers, quiet, verbose)
    _run(
        "finetune", data, out, config_file, overrides, split_file, resume, device, workers, opts, base, extra
    )


@cli.command("evaluate")
@click.option(
    "--model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Native generator checkpoint (default: the bundled model; its dual-pol member for dual-pol "
    "composite tiles).",
)
@click.option(
    "--lora", type=click.Path(dir_okay=False), default=None, help="LoRA adapter to apply on the model."
)
@click.option("--data", required=True, help="Dataset folder (QXSLAB or SEN1-2 layout) or tile-pairs .zarr.")
@click.option(
    "--split", type=click.Choice(["train", "val", "test", "all"]), default="test", show_default=True
)
@click.option(
    "--split-file", default=None, help="Split JSON (default: DATA/split.json, else the default split)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON: means, a 95 % interval of the mean PSNR, per image."
)
@click.option("--samples", type=int, default=0, help="Write a PNG grid SAR | generated | truth of N samples.")
@click.option(
    "--samples-out", default="samples.png", show_default=True, help="Where --samples writes its PNG."
)
@click.option("--max-images", type=int, default=None, help="Evaluate at most N images.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@overwrite_opt
@quiet_opt
@verbose_opt
def evaluate_cmd(
    model,
    lora,
    data,
    split,
    split_file,
    as_json,
    samples,
    samples_out,
    max_images,
    device,
    overwrite,
    quiet,
    verbose,
):
    """PSNR, SSIM and L1 of a model on a dataset split, beside trivial baselines (mean colour, SAR grey)."""
    from sar2opt_geo.training.evaluate import evaluate, format_table
    from sar2opt_geo.training.trainer import resolve_device

    setup_logging(verbose, quiet)
    if samples < 0:
        raise UsageError("--samples must be >= 0")
    if max_images is not None and max_images < 1:
        raise UsageError("--max-images must be >= 1")
    if samples and Path(samples_out).exists() and not overwrite:
        raise OutputError(f"{samples_out} exists (use --overwrite to replace it)")
    if model is None:  # the bundled model that reads these tiles: dual-pol for composite tiles
        from sar2opt_geo.training.datasets import PairedTileDataset, tiles_are_composite

        dual = tiles_are_composite(PairedTileDataset(data, "all", check=False))
        model = BUNDLED_DUAL_POL_MODEL if dual and BUNDLED_DUAL_POL_MODEL.exists() else BUNDLED_MODEL
    check_model_channels(str(model))
    res = evaluate(
        model,
        data,
        lora=lora,
        split=split,
        split_file=split_file,
        samples=samples,
        samples_path=samples_out,
        device=str(resolve_device(device)),
        max_images=max_images,
    )
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        click.echo(format_table(res))
        if res.get("samples") and not quiet:
            click.echo(f"samples: {res['samples']}")


def _tile_pairs_scale(sar, requested: str, constant, calibration: str, denoise: bool):
    """The SAR input's scale for ``tile-pairs``: translate's decision (``source.decide_input_scale``; a
    product: the linear σ⁰ its LUTs give, which is what is staged and cut), or the one given, checked as
    translate checks it. Bare integer rasters are refused with translate's one-line error."""
    import logging

    import numpy as np

    from sar2opt_geo import io
    from sar2opt_geo.radiometry import check_input_scale
    from sar2opt_geo.source import (
        ScaleDecision,
        check_explicit_scale,
        decide_input_scale,
        is_product_path,
        open_source,
    )
    from sar2opt_geo.training.pairs import scale_sample

    log = logging.getLogger("sar2opt_geo.training.pairs")
    if constant is not None and requested != "dn":
        raise UsageError("--calibration-constant only applies with --input-scale dn")
    if constant is not None and not constant > 0:
        raise UsageError(f"--calibration-constant must be > 0 (got {constant})")
    if is_product_path(sar):
        scene = open_source(sar, calibration=calibration, denoise=denoise, metadata_only=True)
        raw = np.zeros((1, 0), np.float32)
    else:
        scene = io.open_scene(sar)
        raw = scale_sample(scene)
    if requested != "auto":
        check_explicit_scale(scene, requested)
        check_input_scale(requested, raw, sar)
        if requested == "dn" and constant is None:
            log.warning(
                "%s: --input-scale dn without --calibration-constant takes DN² as σ⁰ (uncalibrated)", sar
            )
        return ScaleDecision(requested, "given by --input-scale")
    d = decide_input_scale(scene, (1,), raw)
    if d.nodata is not None:
        log.warning("%s: value %g taken as nodata (not declared by the file)", sar, d.nodata)
    log.info("SAR input scale: %s (%s)", d.scale, d.reason)
    return d


@cli.command("tile-pairs")
@click.argument("sar", type=click.Path())
@click.argument("optical", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--tile-size", type=int, default=256, show_default=True)
@click.option("--stride", type=int, default=256, show_default=True)
@click.option(
    "--max-nodata", type=float, default=0.0, show_default=True, help="Largest invalid fraction kept."
)
@click.option(
    "--dual-pol",
    is_flag=True,
    help="Store the Sentinel-1 dual-pol composite (R = VV, G = VH, B = VV/VH ratio: 3-channel SAR tiles, "
    "the 8-bit levels a dual-pol model is fed) of the SAR bands named VV and VH (band descriptions, e.g. "
    "VV or Sigma0_VV_db) instead of the first band's dB levels. Not for 8-bit levels images.",
)
@input_scale_opt
@calibration_constant_opt
@apply(product_opts)
@overwrite_opt
@quiet_opt
@verbose_opt
def tile_pairs_cmd(
    sar,
    optical,
    out,
    tile_size,
    stride,
    max_nodata,
    dual_pol,
    input_scale,
    calibration_constant,
    calibration,
    no_denoise,
    warp,
    resolution,
    resampling,
    overwrite,
    quiet,
    verbose,
):
    """Cut co-registered SAR and OPTICAL rasters into aligned tile pairs in the Zarr store OUT. SAR may be a
    Sentinel-1 GRD product: its calibrated, denoised, map-projected σ⁰ (as `calibrate` writes it, into a
    temporary file beside OUT) is cut. The SAR input scale is decided as translate decides it.

    SAR tiles are the first band's dB levels (1 channel), or with --dual-pol the VV, VH, VV/VH composite
    (3 channels) of the bands named VV and VH, for dual-pol models (input_bands VV, VH)."""
    from sar2opt_geo import io
    from sar2opt_geo.source import is_product_path, open_source
    from sar2opt_geo.training.pairs import dual_pol_bands, tile_pairs

    setup_logging(verbose, quiet)
    staged = None
    scale = _tile_pairs_scale(sar, input_scale, calibration_constant, calibration, not no_denoise)
    if dual_pol and scale.scale == "levels":
        raise UsageError(
            "--dual-pol needs VV and VH σ⁰ bands; an 8-bit levels image (input scale levels) is single-band"
        )
    if dual_pol and is_product_path(sar):  # refuse a single-pol product before calibrating it
        dual_pol_bands(open_source(sar, calibration=calibration, denoise=not no_denoise, metadata_only=True))
    if is_product_path(sar):
        from sar2opt_geo.distributed import make_executor
        from sar2opt_geo.filter_run import run_filter

        io.check_output_path(out, overwrite)
        staged = io.temporary_sibling(out, "sigma0.tif")
        with make_executor(None, None) as ex:
            run_filter(
                sar,
                str(staged),
                None,
                ex,
                output_scale="linear",
                require_product=True,
                calibration=calibration,
                denoise=not no_denoise,
                warp=warp,
                resolution=resolution,
                resampling=resampling,
            )
    progress = Progress("cutting", quiet)
    try:
        res = tile_pairs(
            str(staged) if staged else sar,
            optical,
            out,
            input_scale=scale.scale,
            scale_reason=scale.reason,
            calibration_constant=calibration_constant,
            sar_nodata=scale.nodata,
            tile_size=tile_size,
            stride=stride,
            max_nodata=max_nodata,
            dual_pol=dual_pol,
            overwrite=overwrite,
            progress=progress,
        )
    finally:
        progress.close()
        if staged is not None:
            io.remove_path(staged)
    if not quiet:
        click.echo(
            f"wrote {res['pairs']} pairs to {res['out']} "
            f"({res['skipped']} of {res['windows']} windows skipped"
            f"{', optical resampled onto the SAR grid' if res['resampled'] else ''})",
            err=True,
        )
