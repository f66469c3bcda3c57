"""The root ``sar2opt-geo`` command group and helpers shared by the subcommand modules."""

from __future__ import annotations

import logging
import sys

import click

from sar2opt_geo import __version__
from sar2opt_geo.errors import UsageError


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet or not verbose else (logging.INFO if verbose == 1 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)
    for noisy in ("distributed", "rasterio", "fiona", "numexpr", "asyncio", "tornado"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


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


def bundled_model_or(model: str | None) -> str:
    """``--model`` or, without it, the bundled model (a usage error when it is not installed)."""
    from sar2opt_geo.defaults import BUNDLED_MODEL

    if model:
        return model
    if not BUNDLED_MODEL.exists():
        raise UsageError(f"model {BUNDLED_MODEL} does not exist (no bundled model installed; pass --model)")
    return str(BUNDLED_MODEL)


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
