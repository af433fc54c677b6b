"""effc tune: MetaSchedule tuning into a persistent database that `effc compile --db/--tune` applies."""

from __future__ import annotations

import contextlib
from typing import Iterator

import click
from rich.table import Table

from effc.cli.common import (
    human_count,
    input_shape_option,
    json_option,
    parse_input_shapes,
    print_json,
    remember_for_reproducer,
    rich_progress,
    stdout,
)
from effc.cli.optimize import build_pipeline, make_context, pass_progress, pipeline_options
from effc.ir import load_model


def budget_options(f):
    """--trials/--time/--db/--min-flops/--rpc-tracker/--rpc-key, shared by tune and compile --tune."""
    for decorator in reversed([
        click.option("--trials", type=click.IntRange(1), default=None, help="Measure at most N candidates in this run."),
        click.option("--time", "duration", default=None, metavar="DURATION", help="Tune for at most this long: 90s, 20m, 1h30m."),
        click.option("--db", "db_dir", default=None, type=click.Path(file_okay=False),
                     help="Tuning database folder (default ~/.cache/effc/tuning/TARGET[-CPU]/)."),
        click.option("--min-flops", default=100_000, show_default=True, type=click.FloatRange(0),
                     help="Skip tasks with fewer FLOPs per call (data movement, tiny kernels)."),
        click.option("--rpc-tracker", default=None, metavar="HOST:PORT", help="Time candidates on boards registered with this TVM RPC tracker."),
        click.option("--rpc-key", default=None, metavar="KEY", help="The key the boards registered with (with --rpc-tracker)."),
    ]):
        f = decorator(f)
    return f


def budget_from_options(trials, duration, db_dir, min_flops, rpc_tracker, rpc_key):
    """The TuneBudget the options ask for: exactly one of --trials and --time, since tuning is expensive enough to
    be asked for. EffcError for a bad budget, before any pass runs."""
    from effc.backends.tvm.tuning import parse_duration
    from effc.compiler import TuneBudget

    budget = TuneBudget(trials=trials, seconds=parse_duration(duration) if duration is not None else None, db=db_dir,
                        min_flops=min_flops, rpc_tracker=rpc_tracker, rpc_key=rpc_key)
    budget.check()
    return budget


@contextlib.contextmanager
def tuning_progress() -> Iterator:
    """A progress callback (done, total, text) for tuning: a bar with ETA on stderr, opened at its first call."""
    with contextlib.ExitStack() as stack:
        state: dict = {}

        def progress(done: float, total: float, text: str) -> None:
            if "bar" not in state:
                state["bar"], state["shown"] = stack.enter_context(rich_progress("tuning", total)), 0.0
            state["bar"].describe(text)
            state["bar"].advance(done - state["shown"])
            state["shown"] = done

        yield progress


def tasks_table(report) -> Table:
    table = Table("task", "FLOPs", "calls", "status", "trials", "default", "best", "speedup",
                  title=f"tuning tasks for {report.target}", title_justify="left")
    for task in report.tasks:
        if task.status == "few FLOPs":
            continue
        speedup = f"{task.default_us / task.best_us:.2f}x" if task.default_us and task.best_us else "-"
        table.add_row(task.name, human_count(task.flops), str(task.calls), task.status, str(task.trials),
                      f"{task.default_us:.1f} us" if task.default_us else "-",
                      f"{task.best_us:.1f} us" + (" (default)" if task.best_is_default else "") if task.best_us else "-",
                      speedup)
    return table


def summary_line(report) -> str:
    skipped = sum(t.status == "few FLOPs" for t in report.tasks)
    budget = f"{report.budget_trials} trials" if report.budget_trials else f"{report.budget_seconds:.0f}s"
    return (f"{report.trials} trials in {report.seconds:.1f}s (budget {budget}) on {report.runner}; {skipped} tasks "
            f"with few FLOPs skipped; database {report.db}")


@click.command("tune")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--target", "target_name", default="x86", show_default=True, help="A TVM target from `effc targets`: x86, arm, ...")
@click.option("--cpu", "--arch", "cpu", default=None, help="CPU model or GPU architecture (see effc compile --help).")
@pipeline_options
@budget_options
@input_shape_option
@json_option
def command(model_path, target_name, cpu, spec, recipe, calib_path, random_calib, seed, disabled_passes, trials, duration,
            db_dir, min_flops, rpc_tracker, rpc_key, input_shapes, as_json) -> None:
    """Tune MODEL's kernels for a target with MetaSchedule into a database that `effc compile --db` applies.

    Runs the passes first (as compile does), skips kernels already in the database and those with few FLOPs,
    tunes the rest by expected gain (FLOPs x calls) and keeps a tuned schedule only where it beats the default one.
    """
    import effc
    from effc.targets import get_target

    target = get_target(target_name, cpu)
    budget = budget_from_options(trials, duration, db_dir, min_flops, rpc_tracker, rpc_key)
    pipeline = build_pipeline(spec, recipe)
    remember_for_reproducer(model_path, str(pipeline))
    model = load_model(model_path, parse_input_shapes(input_shapes))
    ctx = make_context(model, calib_path=calib_path, random_calib=random_calib, seed=seed, disabled_passes=disabled_passes)
    with pass_progress(ctx), tuning_progress() as progress:
        report = effc.tune(model, target, budget, pipeline=pipeline, ctx=ctx, progress=progress)
    if as_json:
        print_json(report.to_json())
        return
    stdout.print(tasks_table(report))
    stdout.print(summary_line(report))
