"""The ``sar2opt-geo`` command line (the only package that imports click).

Every :class:`sar2opt_geo.errors.Sar2OptError` and every click usage error becomes a one-line
``Error: ...`` on stderr and exit code 1 (2 for usage errors); nothing is written at the output path in
that case. Each subcommand lives in its own module, which registers it on the root group in
:mod:`sar2opt_geo.cli.base`.
"""

from __future__ import annotations

import shlex
import sys
import traceback

import click

# importing a subcommand module registers its commands on the root group (`serve` imports its web stack
# lazily)
from sar2opt_geo.cli import calibrate, demo, filter, jobs, model, serve, synth, train, translate  # noqa: F401
from sar2opt_geo.cli.base import cli
from sar2opt_geo.errors import Interrupted, Sar2OptError


def main(argv=None):
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        cli.main(args=argv, prog_name="sar2opt-geo", standalone_mode=False)
    except Interrupted as exc:  # what was kept, and how to resume or discard it
        click.echo(interrupted_message(exc, argv), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:  # click turns Ctrl-C into Abort
        cause = exc.__cause__
        if isinstance(cause, Interrupted):
            click.echo(interrupted_message(cause, argv), err=True)
        else:
            click.echo("Interrupted." if isinstance(cause, KeyboardInterrupt) else "Aborted.", err=True)
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
    except Exception as exc:  # a bug: one line, the traceback with -v
        if wants_traceback(argv):
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        hint = "" if wants_traceback(argv) else " (run with -v for the traceback)"
        click.echo(f"Error: {type(exc).__name__}: {msg}{hint}", err=True)
        sys.exit(1)
    sys.exit(0)


def wants_traceback(argv: list[str]) -> bool:
    """``-v``/``--verbose`` (or ``-vv``) among the arguments."""
    return any(a == "--verbose" or (len(a) > 1 and a[0] == "-" and set(a[1:]) == {"v"}) for a in argv)


def interrupted_message(exc: Interrupted, argv: list[str]) -> str:
    """The interruption's message plus the exact commands that resume (the same command with ``--resume``)
    or discard the kept work state."""
    msg = str(exc) or "Interrupted."
    if not exc.work_state:
        return msg[0].upper() + msg[1:]
    again = ["sar2opt-geo", *argv] + ([] if "--resume" in argv else ["--resume"])
    return (
        f"{msg[0].upper()}{msg[1:]}; resume with `{shlex.join(again)}` "
        f"or discard it with `rm -r {shlex.quote(exc.work_state)}`"
    )
