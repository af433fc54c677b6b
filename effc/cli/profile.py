"""effc profile: latency, per-kernel times mapped to ONNX nodes, memory, and ONNX Runtime beside it."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from effc.cli.common import human_bytes, human_count, json_option, print_json, stdout
from effc.cli.run import rpc_option
from effc.errors import EffcError


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
def command(artifact_path, repeat, warmup, top, html_path, compare_ort, inputs_path, rpc, as_json) -> None:
    """Profile a compiled ARTIFACT: latency, per-kernel times mapped to ONNX nodes, memory, ONNX Runtime beside it."""
    from effc.profile.profiler import profile_artifact

    if compare_ort and not Path(compare_ort).is_file():
        raise EffcError(f"--compare-ort {compare_ort}: no such file")
    if compare_ort:
        _check_compare_ort(artifact_path, compare_ort)
    if _is_mcu_artifact(artifact_path):
        _profile_mcu(artifact_path, repeat, top, html_path, compare_ort, inputs_path, rpc, as_json)
        return
    if html_path:
        from effc.fileio import check_writable

        check_writable(html_path)
    profile = profile_artifact(artifact_path, repeat=repeat, warmup=warmup, rpc=rpc, compare_ort=compare_ort,
                               inputs=inputs_path)
    if html_path:
        from effc.fileio import write_bytes_atomic
        from effc.profile.html import render_html

        write_bytes_atomic(html_path, render_html(profile).encode())
    _print_profile(profile, profile_table, profile_summary, top, as_json)
    if html_path and not as_json:
        stdout.print(f"wrote {html_path}")


def _print_profile(profile, table, summary, top: int, as_json: bool) -> None:
    if as_json:
        print_json(profile.to_json())
        return
    if profile.kernels:
        stdout.print(table(profile, top))
    for line in summary(profile):
        stdout.print(line)


def _is_mcu_artifact(artifact_path) -> bool:
    from effc.artifact import read_meta
    from effc.profile.mcu import is_mcu

    try:
        return is_mcu(read_meta(artifact_path, check_files=False))
    except EffcError:  # not an artifact: profile_artifact says so
        return False


def _profile_mcu(artifact_path, repeat, top, html_path, compare_ort, inputs_path, rpc, as_json) -> None:
    """A microcontroller artifact: flash, RAM and emulated instruction counts (effc/profile/mcu.py)."""
    from effc.cli.profile_mcu import mcu_summary, mcu_table
    from effc.profile.mcu import profile_mcu

    if html_path or rpc:
        raise EffcError(f"{'--html' if html_path else '--rpc'} is not available for microcontroller artifacts")
    profile = profile_mcu(artifact_path, repeat=repeat, inputs=inputs_path, compare_ort=compare_ort)
    _print_profile(profile, mcu_table, mcu_summary, top, as_json)


def _check_compare_ort(artifact_path, model_path) -> None:
    """The ONNX model beside the artifact must take the same inputs (exit 2 naming the mismatch, before timing)."""
    import numpy as np

    from effc.artifact import read_meta
    from effc.ir import TensorSpec, load_model
    from effc.verify import check_same_inputs

    meta = read_meta(artifact_path)
    ours = [TensorSpec(i["name"], tuple(i["shape"]), np.dtype(i["dtype"])) for i in meta["inputs"]]
    check_same_inputs(ours, load_model(model_path).input_specs(), f"--compare-ort {model_path}")


def profile_table(profile, top: int) -> Table:
    integer = any(row.arithmetic for row in profile.kernels)
    columns = ("kernel", "calls", "time", "share", "GFLOP/s", "ONNX nodes") + (("arithmetic",) if integer else ())
    table = Table(*columns, title=f"top kernels of {profile.artifact}"
                  + (" (emulated under qemu)" if profile.emulated else ""), title_justify="left")
    for row in profile.kernels[:top]:
        nodes = ", ".join(row.onnx_nodes[:3]) + (f" +{len(row.onnx_nodes) - 3}" if len(row.onnx_nodes) > 3 else "")
        cells = [row.name, str(row.calls), f"{row.median_ms:.3f} ms", f"{100 * row.share:.1f}%",
                 f"{row.gflops:.2f}" if row.gflops else "-", nodes or "-"]
        table.add_row(*cells, *([row.arithmetic or "-"] if integer else []))
    return table


def profile_summary(profile) -> list[str]:
    lat = profile.latency
    emulated = " (emulated: these timings are not the board's)" if profile.emulated else ""
    lines = [f"end-to-end on {profile.where}{emulated}: median {lat.median_ms:.3f} ms (p10 {lat.p10_ms:.3f}, "
             f"p90 {lat.p90_ms:.3f}) over {lat.repeats} runs"]
    if profile.instructions_per_call is not None:
        lines.append(f"instructions per call on {profile.where}: {human_count(profile.instructions_per_call)} "
                     "(counted by effc's qemu plugin on one thread; deterministic, not cycles)")
    if profile.kernel_total_ms is not None:
        within = f" of {profile.instrumented.median_ms:.3f} ms per instrumented run" if profile.instrumented else ""
        lines.append(f"kernels: {len(profile.kernels)}, {profile.kernel_total_ms:.3f} ms together{within}; VM builtins "
                     f"{profile.builtin_ms:.3f} ms")
    else:
        lines.append("per-kernel times: not available for this runner")
    if profile.weight_bytes is not None:
        lines.append(f"weights {human_bytes(profile.weight_bytes)}, peak activations "
                     f"{human_bytes(profile.peak_activation_bytes or 0)}")
    if profile.ort_latency:
        o = profile.ort_latency
        where = "" if profile.ort_provider in (None, "CPUExecutionProvider") else f", {profile.ort_provider}"
        lines.append(f"ONNX Runtime (this machine{where}): median {o.median_ms:.3f} ms (p10 {o.p10_ms:.3f}, p90 {o.p90_ms:.3f}); "
                     f"artifact/ORT = {lat.median_ms / o.median_ms:.2f}x; max |diff| {profile.ort_max_abs_diff:.3g} "
                     f"on {profile.inputs.describe()}")
    return lines
