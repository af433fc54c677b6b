"""effc tune: MetaSchedule tuning into a persistent database that `effc compile --db/--tune` applies."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from effc.commands.common import (human_count, input_shape_option, json_option, parse_input_shapes, print_json,
                                  remember_for_reproducer, rich_progress, stdout)
from effc.commands.optimize import build_pipeline, pipeline_options, run_pipeline
from effc.errors import EffcError
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


def parse_budget(trials: int | None, duration: str | None) -> tuple[int | None, float | None]:
    """(trials, seconds): exactly one of --trials and --time, since tuning is expensive enough to be asked for."""
    from effc.backends.tuning import parse_duration

    if trials is not None and duration is not None:
        raise EffcError("give --trials or --time, not both")
    if trials is None and duration is None:
        raise EffcError("give a tuning budget: --trials N or --time DURATION (e.g. --time 20m)")
    return trials, parse_duration(duration) if duration is not None else None


def run_tuning(model, target, *, trials, duration, db_dir, min_flops, rpc_tracker, rpc_key, seed=0):
    """Tune `model` (passes already run) for `target`; a progress bar with ETA on stderr. Returns the TuneReport."""
    from effc.backends.tuning import default_db_dir, tune

    trials, seconds = parse_budget(trials, duration)
    if rpc_key and not rpc_tracker:
        raise EffcError("--rpc-key needs --rpc-tracker")
    db = Path(db_dir) if db_dir else default_db_dir(target)
    with rich_progress("tuning", trials or seconds) as bar:
        shown = [0.0]

        def progress(done: float, total: float, text: str) -> None:
            bar.describe(text)
            bar.advance(done - shown[0])
            shown[0] = done

        return tune(model, target, db, trials=trials, seconds=seconds, min_flops=min_flops, rpc_tracker=rpc_tracker,
                    rpc_key=rpc_key, progress=progress, seed=seed)


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
@click.option("--target", "target_name", default="x86", show_default=True, help="A TVM target: x86 or arm.")
@click.option("--cpu", default=None, help="CPU model (see effc compile --help).")
@pipeline_options
@budget_options
@input_shape_option
@json_option
def command(model_path, target_name, cpu, spec, recipe, calib_path, random_calib, seed, trials, duration, db_dir,
            min_flops, rpc_tracker, rpc_key, input_shapes, as_json) -> None:
    """Tune MODEL's kernels for a target with MetaSchedule into a database that `effc compile --db` applies.

    Runs the passes first (as compile does), skips kernels already in the database and those with few FLOPs,
    tunes the rest by expected gain (FLOPs x calls) and keeps a tuned schedule only where it beats the default one.
    """
    from effc.backends.targets import get_target

    target = get_target(target_name, cpu)
    parse_budget(trials, duration)  # fail on a bad budget before any pass runs
    pipeline = build_pipeline(spec, recipe)
    remember_for_reproducer(model_path, str(pipeline))
    model = load_model(model_path, parse_input_shapes(input_shapes))
    result = run_pipeline(model, pipeline, calib_path=calib_path, random_calib=random_calib, seed=seed,
                          target=target_name if target_name in ("x86", "arm") else None)
    report = run_tuning(result.model, target, trials=trials, duration=duration, db_dir=db_dir, min_flops=min_flops,
                        rpc_tracker=rpc_tracker, rpc_key=rpc_key, seed=seed)
    if as_json:
        print_json(report.to_json())
        return
    stdout.print(tasks_table(report))
    stdout.print(summary_line(report))
