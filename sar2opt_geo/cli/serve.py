"""``serve``: the local web app (map with swipe, chip translate, jobs, system panel)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import click

from sar2opt_geo.cli.base import cli, setup_logging
from sar2opt_geo.cli.options import verbose_opt
from sar2opt_geo.errors import InputError, Sar2OptError
from sar2opt_geo.serve import DEFAULT_HOST, DEFAULT_PORT, MAX_UPLOAD_MB


def _missing_serve_module() -> str | None:
    import importlib.util

    from sar2opt_geo.serve import REQUIRED_MODULES

    for name in REQUIRED_MODULES:
        if importlib.util.find_spec(name) is None:
            return name
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise Sar2OptError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--jobs", "job_specs", multiple=True, type=click.Path(dir_okay=False), help="Job spec (repeatable)."
)
@click.option(
    "--models",
    "models_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder of checkpoints, ONNX exports and LoRA adapters offered for chip translation.",
)
@click.option(
    "--host", default=DEFAULT_HOST, show_default=True, help="Address to bind (loopback only by default)."
)
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--max-upload-mb",
    type=click.IntRange(1, 1024),
    default=MAX_UPLOAD_MB,
    show_default=True,
    help="Largest upload accepted.",
)
@verbose_opt
def serve(paths, job_specs, models_dir, host, port, max_upload_mb, verbose):
    """Start a local web app showing the scenes under PATHS (files or folders, e.g. a `demo` folder) and in
    the --jobs specs: SAR input, translated output and optical truth on a map with a swipe, chip translation,
    the jobs table and a system panel."""
    setup_logging(verbose, False)
    missing = _missing_serve_module()
    if missing:
        raise Sar2OptError(
            f"the web app needs the 'serve' extra (module {missing!r} is missing): "
            'pip install -e ".[serve]"  (or: pip install "sar2opt-geo[serve]")'
        )
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"{p}: no such file or folder")
    if models_dir is not None and not Path(models_dir).is_dir():
        raise InputError(f"--models {models_dir}: no such folder")
    for j in job_specs:
        if not Path(j).is_file():
            raise InputError(f"--jobs {j}: no such file")
    _check_port(host, port)

    import uvicorn

    from sar2opt_geo.serve.app import AppState, create_app

    state = AppState(paths, job_specs, models_dir, max_upload_mb * 2**20)
    app = create_app(host=host, state=state)
    n = len(state.catalog.all())
    if not _is_loopback(host):
        click.echo(
            f"Warning: binding {host}: anyone who can reach this machine can see these scenes and run the "
            "model (bind 127.0.0.1 unless that is what you want)",
            err=True,
        )
    building = [
        f"{s.name}/{lay.name}"
        for s in state.catalog.all()
        for lay in s.layers.values()
        if lay.overviews == "building"
    ]
    if building:
        click.echo(
            f"building overviews for {len(building)} raster(s) without them ({', '.join(building[:3])}"
            f"{', ...' if len(building) > 3 else ''}) in the background; coarse zooms are slow until then",
            err=True,
        )
    for s in state.catalog.skipped + state.models.skipped:
        click.echo(f"skipped {s}", err=True)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving {n} scene(s) on http://{shown}:{port}/  (Ctrl-C to stop)", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info" if verbose else "warning")
    finally:  # the app's shutdown does this too; here also when the server never started
        state.close()
