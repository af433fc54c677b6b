"""What the commands share: option parsing, output (tables or --json), progress bars, reproducers."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from effc.errors import EffcError
from effc.units import human_bytes, human_count  # noqa: F401  (the commands print sizes and counts)

# Wide tables when piped (rich would wrap at 80 columns), the terminal's width otherwise.
stdout = Console(width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, callback=_remember_json,
                        help="Print machine-readable JSON to stdout instead of tables (on failure: {\"error\", \"exit_code\"}).")(f)


def _remember_json(ctx: click.Context, _param, value: bool) -> bool:
    root = ctx.find_root()
    root.ensure_object(dict)
    root.obj["json"] = value
    return value


def input_shape_option(f):
    return click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D0,D1,...",
                        help="Pin an input's shape (repeatable), e.g. input=1,3,224,224.")(f)


def parse_input_shapes(values: tuple[str, ...]) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for value in values:
        name, sep, dims = value.rpartition("=")
        if not sep or not name:
            raise EffcError(f"--input-shape {value!r}: expected NAME=D0,D1,... such as input=1,3,224,224")
        if name in shapes:
            raise EffcError(f"--input-shape {name!r} given twice")
        try:
            shapes[name] = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            raise EffcError(f"--input-shape {value!r}: dims must be integers") from None
        if not shapes[name]:
            raise EffcError(f"--input-shape {value!r}: no dims given")
    return shapes


def to_json_text(data: Any) -> str:
    return json.dumps(data, indent=2, default=_json_default)


def print_json(data: Any) -> None:
    click.echo(to_json_text(data))


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


@contextlib.contextmanager
def rich_progress(description: str, total: int | None) -> Iterator[Any]:
    """A progress bar on stderr (so --json output on stdout stays clean); hidden when stderr is not a terminal."""
    counts = [BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), TimeRemainingColumn()]
    progress = Progress(TextColumn("{task.description}"), *(counts if total else [TimeElapsedColumn()]), console=stderr,
                        transient=True, disable=not sys.stderr.isatty())
    with progress:
        task = progress.add_task(description, total=total)

        class _Bar:
            def advance(self, steps: int = 1) -> None:
                progress.advance(task, steps)

            def describe(self, text: str) -> None:
                progress.update(task, description=text)

        yield _Bar()


def remember_for_reproducer(model_path: str | None, pipeline: str | None = None) -> None:
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        root = ctx.find_root()
        root.ensure_object(dict)
        root.obj["repro"] = {"model": model_path, "pipeline": pipeline}


CRASH_FOLDERS_KEPT = 5
COPY_MODEL_MAX_BYTES = 16 * 2**20  # larger models are referenced by path, not copied


def crash_root() -> Path:
    return Path(tempfile.gettempdir()) / "effc-crashes"


def write_reproducer(ctx: click.Context, exc: BaseException, native_output: str = "") -> Path | None:
    """Save the input model (a small one; a large one by path), the pipeline, the command, the traceback and what
    native code printed, in one new folder per failing command; only the newest CRASH_FOLDERS_KEPT are kept."""
    info = (ctx.obj or {}).get("repro")
    if not info:
        return None
    try:
        root = crash_root()
        root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=root))
        model = Path(info["model"]) if info.get("model") else None
        if model is not None and model.is_file():
            if model.stat().st_size <= COPY_MODEL_MAX_BYTES:
                shutil.copy(model, folder / model.name)
            else:
                (folder / "model.txt").write_text(f"{model.resolve()}\n")
        (folder / "pipeline.txt").write_text((info.get("pipeline") or "") + "\n")
        (folder / "command.txt").write_text(" ".join(sys.argv) + "\n")
        (folder / "traceback.txt").write_text("".join(traceback.format_exception(exc)))
        if native_output:
            (folder / "native-output.txt").write_text(native_output)
        for old in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)[:-CRASH_FOLDERS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:  # no room for a reproducer: the error line still says what failed
        return None
    return folder
