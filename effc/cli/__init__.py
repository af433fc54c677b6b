"""The `effc` command: a click group whose commands live in this package, one module each.

Exit codes: 0 success; 1 a check ran and failed; 2 bad input or usage (one line, no
traceback); 3 internal error (one line; `--debug` shows the traceback).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from effc.errors import CheckFailed, EffcError

EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


class EffcGroup(click.Group):
    def invoke(self, ctx: click.Context):
        def debug() -> bool:  # read after the group callback has parsed --debug
            return bool((ctx.obj or {}).get("debug")) or os.environ.get("EFFC_DEBUG") == "1"

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except EffcError as exc:
            _fail(debug(), f"error: {exc}", EXIT_USAGE)
        except CheckFailed as exc:
            _fail(debug(), f"check failed: {exc}", EXIT_CHECK_FAILED)
        except KeyboardInterrupt:
            _fail(debug(), "interrupted", 130)
        except Exception as exc:  # everything else is our bug
            from effc.cli.common import write_reproducer

            where = write_reproducer(ctx, exc)
            hint = f"; a reproducer is in {where}" if where else ""
            _fail(debug(), f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                  f" (rerun with --debug for the traceback{hint})", EXIT_INTERNAL)


def _fail(debug: bool, message: str, code: int) -> None:
    if debug:
        traceback.print_exc()
    click.echo(message, err=True)
    sys.exit(code)


@click.group(cls=EffcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="effc")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """effc: make ONNX models smaller and faster, compile them, and profile what you deploy."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


# One module per command in this package, each exposing `command`.
COMMAND_MODULES = ("inspect", "passes", "targets", "optimize", "verify", "compile", "run", "profile", "tune", "search")


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        cli.add_command(importlib.import_module(f"effc.cli.{name}").command)


_register_commands()


def main() -> None:
    cli(prog_name="effc")


if __name__ == "__main__":
    main()
