"""effc verify: do two models compute the same thing on ONNX Runtime?"""

from __future__ import annotations

import click

from effc.calib import CalibrationData
from effc.cli.common import input_shape_option, json_option, parse_input_shapes, print_json, stdout
from effc.errors import CheckFailed
from effc.ir import load_model
from effc.verify import compare_models


@click.command("verify")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--inputs", "inputs_path", type=click.Path(), help="Inputs (.npz keyed by input name, or a folder of .npy); random when absent.")
@click.option("--samples", default=8, show_default=True, type=click.IntRange(1), help="Samples to compare.")
@click.option("--atol", default=1e-4, show_default=True, type=click.FloatRange(0), help="Absolute tolerance.")
@click.option("--rtol", default=1e-3, show_default=True, type=click.FloatRange(0),
              help="Tolerance relative to the reference output's largest magnitude.")
@input_shape_option
@json_option
def command(reference, candidate, inputs_path, samples, atol, rtol, input_shapes, as_json) -> None:
    """Compare CANDIDATE's outputs with REFERENCE's; exit code 1 when outside tolerance."""
    shapes = parse_input_shapes(input_shapes)
    ref, cand = load_model(reference, shapes), load_model(candidate, shapes)
    inputs = CalibrationData.load(inputs_path) if inputs_path else None
    drift = compare_models(ref, cand, inputs, samples=samples)
    ok = drift.within(atol, rtol)
    if as_json:
        print_json({"reference": reference, "candidate": candidate, "atol": atol, "rtol": rtol, "within_tolerance": ok, **drift.to_json()})
    else:
        agreement = "-" if drift.top1_agreement is None else f"{100 * drift.top1_agreement:.1f}%"
        stdout.print(f"max abs error {drift.max_abs:.3g} (output scale {drift.scale:.3g}, relative {drift.max_rel:.3g}), "
                     f"cosine {drift.cosine:.6f}, top-1 agreement {agreement}, {drift.samples} samples")
        stdout.print("[green]within tolerance[/]" if ok else "[red]outside tolerance[/]")
    if not ok:
        raise CheckFailed(f"max abs error {drift.max_abs:.3g} exceeds {atol:g} + {rtol:g} x {drift.scale:.3g}")
