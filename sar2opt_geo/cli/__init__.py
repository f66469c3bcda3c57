"""The ``sar2opt-geo`` command line (the only package that imports click).

Every :class:`sar2opt_geo.errors.Sar2OptError` and every click usage error becomes a one-line
``Error: ...`` on stderr and exit code 1 (2 for usage errors); nothing is written at the output path in
that case. Each subcommand lives in its own module, which registers it on the root group in
:mod:`sar2opt_geo.cli.base`.
"""

from __future__ import annotations

import sys

import click

# importing a subcommand module registers its commands on the root group (`serve` imports its web stack
# lazily)
from sar2opt_geo.cli import calibrate, demo, filter, jobs, model, serve, synth, train, translate  # noqa: F401
from sar2opt_geo.cli.base import cli
from sar2opt_geo.errors import Sar2OptError


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="sar2opt-geo", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.UsageError as exc:  # one line, as every other error
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
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
