"""effc compile: run the passes, then compile the model into a deployable artifact folder for a target."""

from __future__ import annotations

from pathlib import Path

import click

from effc.cli.common import (
    human_bytes,
    input_shape_option,
    json_option,
    parse_input_shapes,
    print_json,
    remember_for_reproducer,
    stderr,
    stdout,
)
from effc.cli.optimize import build_pipeline, ledger_table, make_context, pass_progress, pipeline_options
from effc.cli.tune import budget_from_options, budget_options, summary_line, tasks_table, tuning_progress
from effc.errors import EffcError
from effc.fileio import check_writable, refuse_special
from effc.ir import load_model


@click.command("compile")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--target", "target_name", default="x86", show_default=True,
              help="A target name from `effc targets`: x86 (this machine), arm (aarch64 Linux), ort, ...")
@click.option("--cpu", "--arch", "cpu", default=None,
              help="CPU model (arm: cortex-a53, cortex-a76, neoverse-n1, ...; x86: an LLVM cpu name) or, for cuda, the "
                   "GPU's compute capability (sm_80, sm_86, sm_89, sm_90).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16: append the fp16 pass (compute in half precision where safe); the target must have it.")
@pipeline_options
@click.option("-o", "--output", default=None, type=click.Path(), help="Artifact folder (default MODEL_STEM.TARGET.effc).")
@click.option("--tune", "tune_first", is_flag=True, help="Tune with MetaSchedule first (needs --trials or --time), then apply the database.")
@budget_options
@input_shape_option
@json_option
def command(model_path, target_name, cpu, precision, spec, recipe, calib_path, random_calib, seed, disabled_passes, output,
            tune_first, trials, duration, db_dir, min_flops, rpc_tracker, rpc_key, input_shapes, as_json) -> None:
    """Run the passes on MODEL, then compile it into a deployable artifact folder for a target.

    With --db DIR the kernels in that tuning database (`effc tune`) get their tuned schedules; with --tune this
    command tunes first (into --db, or the target's default database)."""
    import effc
    from effc.artifact import default_output
    from effc.targets import get_target

    target = get_target(target_name, cpu)
    budget = None
    if tune_first:
        budget = budget_from_options(trials, duration, db_dir, min_flops, rpc_tracker, rpc_key)
    elif trials or duration or rpc_tracker or rpc_key:
        raise EffcError("--trials, --time, --rpc-tracker and --rpc-key apply with --tune")
    pipeline = build_pipeline(spec, recipe)
    if precision == "fp16":
        if "float16" not in target.isa.float_types:
            raise EffcError(f"--precision fp16: target {target.name} has no float16 compute; it computes in "
                            f"{', '.join(target.isa.float_types)}")
        pipeline = build_pipeline(f"{pipeline},fp16", None)
    out = output or default_output(model_path, target.name)
    refuse_special(out, directory=True)
    check_writable(Path(out).parent / f".{Path(out).name}.probe")
    remember_for_reproducer(model_path, str(pipeline))
    model = load_model(model_path, parse_input_shapes(input_shapes))
    ctx = make_context(model, calib_path=calib_path, random_calib=random_calib, seed=seed, disabled_passes=disabled_passes)
    progress = (lambda text: None) if as_json else (lambda text: stderr.print(f"[dim]{text}[/]"))
    with pass_progress(ctx), tuning_progress() as tune_progress:
        artifact = effc.compile(model, target, pipeline=pipeline, ctx=ctx, out=out, source=model_path,
                                tuning_db=None if tune_first else db_dir, tune=budget, progress=progress,
                                tune_progress=tune_progress)
    meta, report = artifact.meta, artifact.tuning
    size = artifact.size_bytes()
    if as_json:
        print_json({"artifact": str(out), "bytes": size, "target": meta["target"], "compile_seconds": meta["compile_seconds_total"],
                    "inputs": meta["inputs"], "outputs": meta["outputs"], "ledger": meta["ledger"],
                    "warnings": ctx.warnings, "tuning_db": report.db if report else (str(db_dir) if db_dir else None),
                    "tuning": report.to_json() if report else None})
        return
    for warning in ctx.warnings:
        stderr.print(f"[yellow]warning:[/] {warning}")
    stdout.print(ledger_table(artifact.passes.ledger))
    if report:
        stdout.print(tasks_table(report))
        stdout.print(summary_line(report))
    stdout.print(f"wrote {out} ({human_bytes(size)}, {meta['compile_seconds_total']:.1f}s) for {target.name}"
                 + (f" ({target.cpu})" if target.cpu else ""))
