"""The root ``sar2opt-geo`` command group and helpers shared by the subcommand modules."""

from __future__ import annotations

import logging
import sys

import click

from sar2opt_geo import __version__
from sar2opt_geo.errors import UsageError


class _NoticeFilter(logging.Filter):
    """Without ``-v`` or ``-q``: warnings and errors, and this package's INFO records flagged as notices
    (``extra={"notice": True}``: the start of a long step before the progress bar, such as copying an
    input)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or (
            getattr(record, "notice", False) and record.name.startswith("sar2opt_geo")
        )


class _QuietFilter(logging.Filter):
    """With ``-q``: this package's warnings and everyone's errors, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or (
            record.name.startswith("sar2opt_geo") and record.levelno >= logging.WARNING
        )


def setup_logging(verbose: int, quiet: bool) -> None:
    """Log level for the whole process (and, with ``-q``, the Dask worker processes it starts).

    The level is set on the handler too: libraries such as distributed set INFO on their own loggers at
    import, and their records reach the root handler whatever the root logger's level. ``-q`` also silences
    Python warnings (rasterio's NotGeoreferencedWarning, distributed's) here and in worker processes
    (``PYTHONWARNINGS``, inherited when they are spawned); ``-v`` brings library INFO logs back.
    """
    level = logging.WARNING if quiet or not verbose else (logging.INFO if verbose == 1 else logging.DEBUG)
    notices = not quiet and not verbose
    if notices:
        level = logging.INFO  # INFO records reach the handler; the notice filter keeps only the flagged ones
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
        if quiet:
            handler.addFilter(_QuietFilter())
        elif notices:
            handler.addFilter(_NoticeFilter())
    for noisy in ("distributed", "rasterio", "fiona", "numexpr", "asyncio", "tornado"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if quiet:
        import os
        import warnings

        warnings.simplefilter("ignore")
        os.environ["PYTHONWARNINGS"] = "ignore"


class Progress:
    """Tiles done / total with ETA on stderr (silent with -q)."""

    def __init__(self, label: str, quiet: bool):
        # not on a terminal (logs, CI): no bar; the summary line at the end says what was done
        self.label, self.quiet, self.bar, self.last = label, quiet or not sys.stderr.isatty(), None, 0

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self.bar = click.progressbar(
                length=total, label=self.label, file=sys.stderr, show_eta=True, show_pos=True, width=30
            )
            self.bar.__enter__()
        self.bar.update(done - self.last)
        self.last = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def given(ctx: click.Context, *names: str) -> list[str]:
    """The options among ``names`` (parameter names) the user set on the command line, as ``--opt-name``."""
    from click.core import ParameterSource

    out = []
    for name in names:
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
            out.append("--" + name.replace("_", "-"))
    return out


#: Output formats named by the output's extension.
FORMAT_SUFFIXES = {".zarr": "zarr", ".tif": "cog", ".tiff": "cog"}


def output_format(ctx: click.Context, output: str, fmt: str) -> str:
    """The output format: ``--format`` when given, else what the extension names (``.zarr`` → zarr,
    ``.tif``/``.tiff`` → COG), else COG. A ``--format`` that contradicts the extension is a usage error."""
    import os

    named = FORMAT_SUFFIXES.get(os.path.splitext(str(output).rstrip("/"))[1].lower())
    if not given(ctx, "fmt"):
        return named or "cog"
    if named is not None and named != fmt:
        raise UsageError(
            f"--format {fmt} contradicts the output name {output} (a {named} name): drop --format or "
            f"name the output {'.tif' if fmt == 'cog' else '.zarr'}"
        )
    return fmt


def bundled_model_or(model: str | None) -> str:
    """``--model`` or, without it, the bundled model (a usage error when it is not installed)."""
    from sar2opt_geo.defaults import BUNDLED_MODEL

    if model:
        return model
    if not BUNDLED_MODEL.exists():
        raise UsageError(f"model {BUNDLED_MODEL} does not exist (no bundled model installed; pass --model)")
    return str(BUNDLED_MODEL)


def check_model_channels(model: str) -> None:
    """One-line ModelError when a native/ONNX checkpoint's bands × radiometry do not give exactly its input
    channels (before any work: translate, evaluate and model info say the same)."""
    import os

    from sar2opt_geo.plan import model_channels, read_model_metadata
    from sar2opt_geo.radiometry import Radiometry

    meta = read_model_metadata(model)
    if meta.radiometry:
        model_channels(Radiometry.from_dict(meta.radiometry), meta, os.path.basename(str(model)))


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
