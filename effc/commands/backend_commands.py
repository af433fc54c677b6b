"""effc compile / run / profile: build a deployable artifact for a target, run it, and profile it."""

from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np
from rich.table import Table

from effc.commands.common import (human_bytes, input_shape_option, json_option, parse_input_shapes, print_json,
                                  remember_for_reproducer, stderr, stdout)
from effc.commands.optimize import build_pipeline, ledger_table, pipeline_options, run_pipeline
from effc.commands.tune import budget_options, parse_budget, run_tuning, summary_line, tasks_table
from effc.errors import EffcError
from effc.ir import load_model


@click.command("compile")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--target", "target_name", default="x86", show_default=True, help="x86 (this machine), arm (aarch64 Linux) or ort.")
@click.option("--cpu", default=None, help="CPU model: for arm cortex-a53, cortex-a72, cortex-a76, neoverse-n1, ...; for x86 an LLVM cpu name.")
@pipeline_options
@click.option("-o", "--output", default=None, type=click.Path(), help="Artifact folder (default MODEL_STEM.TARGET.effc).")
@click.option("--tune", "tune_first", is_flag=True, help="Tune with MetaSchedule first (needs --trials or --time), then apply the database.")
@budget_options
@input_shape_option
@json_option
def compile_cmd(model_path, target_name, cpu, spec, recipe, calib_path, random_calib, seed, output, tune_first, trials,
                duration, db_dir, min_flops, rpc_tracker, rpc_key, input_shapes, as_json) -> None:
    """Run the passes on MODEL, then compile it into a deployable artifact folder for a target.

    With --db DIR the kernels in that tuning database (`effc tune`) get their tuned schedules; with --tune this
    command tunes first (into --db, or the target's default database)."""
    from effc.artifact import compile_artifact, default_output
    from effc.backends.targets import get_target

    target = get_target(target_name, cpu)
    tuning_requested = tune_first or db_dir or trials or duration or rpc_tracker or rpc_key
    if tuning_requested and target.backend != "tvm":
        raise EffcError(f"--target {target.name} is not compiled by TVM: --tune and --db do not apply")
    if tune_first:
        parse_budget(trials, duration)  # fail on a bad budget before any pass runs
    elif trials or duration or rpc_tracker or rpc_key:
        raise EffcError("--trials, --time, --rpc-tracker and --rpc-key apply with --tune")
    pipeline = build_pipeline(spec, recipe)
    remember_for_reproducer(model_path, str(pipeline))
    model = load_model(model_path, parse_input_shapes(input_shapes))
    if target.backend == "tvm":
        from effc.backends.tvm_support import check_lowerable, fold_constants

        check_lowerable(fold_constants(model))  # name unimportable ops and unpinned dims before any pass runs
    result = run_pipeline(model, pipeline, calib_path=calib_path, random_calib=random_calib, seed=seed,
                          target=target_name if target_name in ("x86", "arm") else None)
    out = Path(output) if output else default_output(model_path, target_name)
    progress = (lambda text: None) if as_json else (lambda text: stderr.print(f"[dim]{text}[/]"))
    tuning, report = {}, None
    if tune_first:
        report = run_tuning(result.model, target, trials=trials, duration=duration, db_dir=db_dir, min_flops=min_flops,
                            rpc_tracker=rpc_tracker, rpc_key=rpc_key, seed=seed)
        tuning["tuning_db"] = report.db
    elif db_dir:
        from effc.backends.tuning import check_db

        tuning["tuning_db"] = str(check_db(db_dir, target))
    meta = compile_artifact(result.model, target, out, source=model_path, pipeline=str(pipeline),
                            ledger=result.ledger.to_json(), calibration=calib_path, progress=progress, **tuning)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    if as_json:
        print_json({"artifact": str(out), "bytes": size, "target": meta["target"], "compile_seconds": meta["compile_seconds_total"],
                    "inputs": meta["inputs"], "outputs": meta["outputs"], "ledger": meta["ledger"],
                    "warnings": result.context.warnings, "tuning_db": tuning.get("tuning_db"),
                    "tuning": report.to_json() if report else None})
        return
    for warning in result.context.warnings:
        stderr.print(f"[yellow]warning:[/] {warning}")
    stdout.print(ledger_table(result.ledger))
    if report:
        stdout.print(tasks_table(report))
        stdout.print(summary_line(report))
    stdout.print(f"wrote {out} ({human_bytes(size)}, {meta['compile_seconds_total']:.1f}s) for {target.name}"
                 + (f" ({target.cpu})" if target.cpu else ""))


def parse_input_files(values: tuple[str, ...]) -> dict[str, np.ndarray]:
    feeds = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise EffcError(f"--input {value!r}: expected NAME=FILE.npy")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise EffcError(f"--input {value!r}: {path} does not exist") from None
        except (ValueError, OSError) as exc:
            raise EffcError(f"--input {value!r}: not a .npy file ({str(exc).splitlines()[0][:100]})") from None
        if not isinstance(feeds[name], np.ndarray):
            raise EffcError(f"--input {value!r}: expected one array in a .npy file")
    return feeds


rpc_option = click.option("--rpc", default=None, metavar="HOST:PORT", help="Run on a board's TVM RPC server instead of here.")


@click.command("run")
@click.argument("artifact_path", metavar="ARTIFACT", type=click.Path())
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="An input (repeatable).")
@click.option("--output-dir", default=".", show_default=True, type=click.Path(file_okay=False), help="Where to write NAME.npy per output.")
@rpc_option
@json_option
def run_cmd(artifact_path, inputs, output_dir, rpc, as_json) -> None:
    """Run a compiled ARTIFACT on .npy inputs; writes one .npy per output, named after the output."""
    from effc.artifact import load_artifact

    feeds = parse_input_files(inputs)
    artifact = load_artifact(artifact_path, rpc=rpc)
    outputs = artifact(feeds)
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for spec in artifact.meta["outputs"]:
        path = Path(output_dir) / spec["file"]
        np.save(path, outputs[spec["name"]])
        written.append({"name": spec["name"], "file": str(path), "shape": list(outputs[spec["name"]].shape),
                        "dtype": str(outputs[spec["name"]].dtype)})
    if as_json:
        print_json({"artifact": artifact_path, "where": artifact.runner.where, "outputs": written})
        return
    for item in written:
        stdout.print(f"{item['name']}: {item['shape']} {item['dtype']} -> {item['file']}")


@click.command("profile")
@click.argument("artifact_path", metavar="ARTIFACT", type=click.Path())
@click.option("--repeat", default=20, show_default=True, type=click.IntRange(1), help="Timed runs after warm-up.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(0), help="Untimed runs first.")
@click.option("--top", default=15, show_default=True, type=click.IntRange(1), help="Kernels shown in the table.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False), help="Write a self-contained HTML report here.")
@click.option("--compare-ort", "compare_ort", default=None, type=click.Path(dir_okay=False), metavar="MODEL",
              help="Time this ONNX model on ONNX Runtime beside the artifact, and compare their outputs.")
@click.option("--inputs", "inputs_path", type=click.Path(), help="Inputs (.npz keyed by input name, or a folder of .npy); "
              "the first sample is fed. Default: the artifact's calibration data while it is still there, else random.")
@rpc_option
@json_option
def profile_cmd(artifact_path, repeat, warmup, top, html_path, compare_ort, inputs_path, rpc, as_json) -> None:
    """Profile a compiled ARTIFACT: latency, per-kernel times mapped to ONNX nodes, memory, ONNX Runtime beside it."""
    from effc.profiler import profile_artifact

    if compare_ort and not Path(compare_ort).is_file():
        raise EffcError(f"--compare-ort {compare_ort}: no such file")
    profile = profile_artifact(artifact_path, repeat=repeat, warmup=warmup, rpc=rpc, compare_ort=compare_ort,
                               inputs=inputs_path)
    if html_path:
        from effc.fileio import write_bytes_atomic
        from effc.profile_report import render_html

        write_bytes_atomic(html_path, render_html(profile).encode())
    if as_json:
        print_json(profile.to_json())
        return
    if profile.kernels:
        stdout.print(profile_table(profile, top))
    for line in profile_summary(profile):
        stdout.print(line)
    if html_path:
        stdout.print(f"wrote {html_path}")


def profile_table(profile, top: int) -> Table:
    table = Table("kernel", "calls", "time", "share", "GFLOP/s", "ONNX nodes", title=f"top kernels of {profile.artifact}"
                  + (" (emulated under qemu)" if profile.emulated else ""), title_justify="left")
    for row in profile.kernels[:top]:
        nodes = ", ".join(row.onnx_nodes[:3]) + (f" +{len(row.onnx_nodes) - 3}" if len(row.onnx_nodes) > 3 else "")
        table.add_row(row.name, str(row.calls), f"{row.median_ms:.3f} ms", f"{100 * row.share:.1f}%",
                      f"{row.gflops:.2f}" if row.gflops else "-", nodes or "-")
    return table


def profile_summary(profile) -> list[str]:
    lat = profile.latency
    emulated = " (emulated: these timings are not the board's)" if profile.emulated else ""
    lines = [f"end-to-end on {profile.where}{emulated}: median {lat.median_ms:.3f} ms (p10 {lat.p10_ms:.3f}, "
             f"p90 {lat.p90_ms:.3f}) over {lat.repeats} runs"]
    if profile.kernel_total_ms is not None:
        lines.append(f"kernels: {len(profile.kernels)}, {profile.kernel_total_ms:.3f} ms together; VM builtins "
                     f"{profile.builtin_ms:.3f} ms")
    else:
        lines.append("per-kernel times: not available for this runner")
    if profile.weight_bytes is not None:
        lines.append(f"weights {human_bytes(profile.weight_bytes)}, peak activations "
                     f"{human_bytes(profile.peak_activation_bytes or 0)}")
    if profile.ort_latency:
        o = profile.ort_latency
        lines.append(f"ONNX Runtime (this machine): median {o.median_ms:.3f} ms (p10 {o.p10_ms:.3f}, p90 {o.p90_ms:.3f}); "
                     f"artifact/ORT = {lat.median_ms / o.median_ms:.2f}x; max |diff| {profile.ort_max_abs_diff:.3g} "
                     f"on {profile.inputs.describe()}")
    return lines


COMMANDS = [compile_cmd, run_cmd, profile_cmd]
