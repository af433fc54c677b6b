"""effc search: the Pareto front of compressed models within an accuracy budget, measured on the target."""

from __future__ import annotations

import contextlib

import click
from rich.table import Table

from effc.cli.common import (
    human_bytes,
    human_count,
    input_shape_option,
    json_option,
    parse_input_shapes,
    print_json,
    remember_for_reproducer,
    rich_progress,
    stderr,
    stdout,
)
from effc.errors import CheckFailed


@click.command("search")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--calib", "calib_path", type=click.Path(), help="Calibration data (.npz keyed by input name, or a folder of .npy).")
@click.option("--eval", "eval_path", required=True, type=click.Path(), help="Evaluation data: inputs, and `labels` for top1.")
@click.option("--metric", default="top1", show_default=True, help="top1 (needs labels), agreement (with MODEL), or module:function.")
@click.option("--budget", default="accuracy_drop<=0.01", show_default=True, help="accuracy_drop<=X or accuracy>=X.")
@click.option("--objective", "objectives", multiple=True, metavar="NAME",
              help="latency (on the target; emulated instructions on a microcontroller), size, macs, or flash and "
                   "ram (a microcontroller's built image); repeatable (default: size).")
@click.option("--target", "target_name", default="ort", show_default=True, help="A target from `effc targets`.")
@click.option("--cpu", "--arch", "cpu", default=None, help="CPU model or GPU architecture (see effc compile --help).")
@click.option("--trials", type=click.IntRange(1), default=None, help="Completed trials the study should have (all workers together).")
@click.option("--time", "duration", default=None, metavar="DURATION", help="This worker's time budget: 90s, 30m, 1h.")
@click.option("--recipe", type=click.Path(dir_okay=False), help="A TOML file whose [search] table restricts the space.")
@click.option("--storage", default=None, metavar="URL", help="Optuna RDB storage (default: sqlite in the output folder).")
@click.option("--study", "study_name", default="effc-search", show_default=True, help="Study name in the storage.")
@click.option("--resume", is_flag=True, help="Continue an existing study (and add trials to it).")
@click.option("--seed", default=0, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder for the front and the study.")
@input_shape_option
@json_option
def command(model_path, calib_path, eval_path, metric, budget, objectives, target_name, cpu, trials, duration, recipe,
            storage, study_name, resume, seed, output, input_shapes, as_json) -> None:
    """Search prune x cluster x int8 x precision for the Pareto-optimal models of MODEL within an accuracy budget.

    Each trial runs its pipeline, measures quality on --eval, and (for latency) compiles for --target and times it
    there. The best point under the budget is printed last with the pipeline spec that `effc compile --passes`
    reproduces."""
    from effc.autosearch import search
    from effc.backends.tvm.tuning import parse_duration

    seconds = parse_duration(duration) if duration else None
    remember_for_reproducer(model_path)
    with _progress(as_json) as progress:
        try:
            front = search(model_path, calib=calib_path, eval=eval_path, out=output, metric=metric, budget=budget,
                           objectives=objectives or ("size",), target=target_name, cpu=cpu,
                           input_shapes=parse_input_shapes(input_shapes) or None, trials=trials, seconds=seconds,
                           storage=storage, study=study_name, resume=resume, seed=seed, recipe=recipe,
                           progress=progress)
        except KeyboardInterrupt:
            stderr.print(f"interrupted: the finished trials are in {output} (front.json); --resume continues the study")
            raise
    if as_json:
        print_json(front.to_json())
        return
    stdout.print(front_table(front))
    stdout.print(f"{len(front.trials)} trials in {front.seconds:.0f}s; study {front.study} in {front.storage}; "
                 f"front in {output}/front.json and front.png")
    if front.best is None:
        raise CheckFailed(f"no trial met {front.budget}: try a looser --budget or more --trials")
    best = front.best
    stdout.print(f"best within {front.budget}: {best.quality:.4f} ({front.metric}), "
                 + ", ".join(_value(best, o) for o in front.objectives))
    stdout.print(f"  effc compile {model_path} --target {target_name} --passes \"{best.spec}\"")


def _value(point, name: str) -> str:
    value = point.objective(name)
    if value is None:
        return f"{name} -"
    return {"latency": f"latency {value:.3f} ms", "size": f"size {human_bytes(value)}",
            "macs": f"{human_count(value)} MACs", "flash": f"flash {human_bytes(value)}",
            "ram": f"RAM {human_bytes(value)}"}[name]


def front_table(front) -> Table:
    table = Table("point", front.metric, *front.objectives, "pipeline", title=f"front within {front.budget} on {front.target}",
                  title_justify="left")
    for label, point in [("original", front.original), *((f"#{p.trial}", p) for p in front.points)]:
        table.add_row(label, f"{point.quality:.4f}", *(_value(point, o).split(" ", 1)[-1] for o in front.objectives),
                      point.spec)
    return table


@contextlib.contextmanager
def _progress(quiet: bool):
    if quiet:
        yield None
        return
    with contextlib.ExitStack() as stack:
        state: dict = {}

        def progress(done: int, total: int | None, text: str) -> None:
            if "bar" not in state:
                state["bar"], state["shown"] = stack.enter_context(rich_progress("search", total)), 0
            state["bar"].describe(text[:100])
            state["bar"].advance(done - state["shown"])
            state["shown"] = done

        yield progress
