"""The `effc` command: a click group whose commands live in this package, one module each.

Exit codes: 0 success; 1 a check ran and failed; 2 bad input or usage (one line, no
traceback); 3 internal error (one line; `--debug` shows the traceback).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback

import click

from effc.cli.noise import quiet_native_output, release_frames
from effc.cli.outputs import environment_error, full_output_location
from effc.errors import CheckFailed, EffcError

EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


class EffcGroup(click.Group):
    def invoke(self, ctx: click.Context):
        def debug() -> bool:  # read after the group callback has parsed --debug
            return bool((ctx.obj or {}).get("debug")) or os.environ.get("EFFC_DEBUG") == "1"

        native = None
        try:
            with quiet_native_output(bool(ctx.params.get("debug")) or os.environ.get("EFFC_DEBUG") == "1") as native:
                try:
                    return super().invoke(ctx)
                except Exception as exc:
                    release_frames(exc)
                    raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.UsageError as exc:  # one line, not click's usage block
            _fail(ctx, debug(), f"error: {exc.format_message()}", EXIT_USAGE)
        except click.ClickException:
            raise
        except EffcError as exc:
            _fail(ctx, debug(), f"error: {exc}", EXIT_USAGE)
        except CheckFailed as exc:
            _fail(ctx, debug(), f"check failed: {exc}", EXIT_CHECK_FAILED)
        except KeyboardInterrupt:
            _fail(ctx, debug(), "interrupted", 130)
        except OSError as exc:
            message = environment_error(exc)
            if message is None:
                _internal(ctx, debug(), exc, native)
            _fail(ctx, debug(), f"error: {message}", EXIT_USAGE)
        except Exception as exc:  # everything else is our bug, unless the disk is full
            full = full_output_location(ctx)
            if full:
                _fail(ctx, debug(), f"error: no space left on the device holding {full} "
                                    f"({type(exc).__name__}: {_first_line(exc)})", EXIT_USAGE)
            _internal(ctx, debug(), exc, native)


def _internal(ctx: click.Context, debug: bool, exc: BaseException, native) -> None:
    from effc.cli.common import write_reproducer

    where = write_reproducer(ctx, exc, native.text() if native else "")
    hint = f"; a reproducer is in {where}, rm -r it when done" if where else ""
    _fail(ctx, debug, f"internal error: {type(exc).__name__}: {_first_line(exc)}"
                      f" (rerun with --debug for the traceback{hint})", EXIT_INTERNAL)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines and lines[0].startswith("Traceback") else (lines[0][:300] if lines else "")


def _fail(ctx: click.Context, debug: bool, message: str, code: int) -> None:
    if debug:
        traceback.print_exc()
    # scripts parse both outcomes from stdout; a failed check (exit 1) has printed its own document already
    if (ctx.obj or {}).get("json") and code != EXIT_CHECK_FAILED:
        kind, _, text = message.partition(": ")
        click.echo(json.dumps({"error": text if kind in ("error", "check failed", "internal error") else message,
                               "kind": {"error": "usage", "interrupted": "interrupted"}.get(kind, "internal"),
                               "exit_code": code}))
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
