"""effc optimize: run a pipeline of passes and write the optimized ONNX."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from effc.calib import CalibrationData
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
    to_json_text,
)
from effc.errors import EffcError
from effc.fileio import check_writable, write_bytes_atomic
from effc.ir import load_model
from effc.pipeline import DumpAfter, Instrument, Ledger, PassManager, Pipeline
from effc.pipeline.context import Context


def pipeline_options(f):
    """--passes/--recipe/--calib/--random-calib/--seed, shared by optimize and compile."""
    for decorator in reversed([
        click.option("--passes", "spec", default=None, metavar="SPEC", help='Pipeline spec, e.g. "default,prune(ratio=0.5),int8". Default: default.'),
        click.option("--recipe", type=click.Path(dir_okay=False), help="A TOML recipe instead of --passes."),
        click.option("--calib", "calib_path", type=click.Path(), help="Calibration data: .npz keyed by input name, or a folder of .npy."),
        click.option("--random-calib", is_flag=True, help="Allow random calibration data when none is given (a warning is printed)."),
        click.option("--seed", default=0, show_default=True, help="Seed for everything random."),
        click.option("--disable-pass", "disabled_passes", multiple=True, metavar="PASS",
                     help="Skip this pass wherever the pipeline names it (repeatable)."),
    ]):
        f = decorator(f)
    return f


def build_pipeline(spec: str | None, recipe: str | None) -> Pipeline:
    if spec and recipe:
        raise EffcError("give --passes or --recipe, not both")
    return Pipeline.from_recipe(recipe) if recipe else Pipeline.parse("default" if spec is None else spec)


RANDOM_CALIBRATION_SAMPLES = 16


def make_context(model, *, calib_path, random_calib, seed, disabled_passes=(), **policies) -> Context:
    """The Context the pipeline options ask for, with a progress bar factory. Calibration data is checked against the
    model's inputs now, before any pass runs; --random-calib without --calib gives random samples (with a warning)."""
    calibration = CalibrationData.load(calib_path) if calib_path else None
    if calibration is not None:
        calibration.bind(model.input_specs())
    ctx = Context(calibration=calibration, seed=seed, allow_random_calibration=random_calib,
                  disabled_passes=tuple(disabled_passes), progress_factory=rich_progress, **policies)
    if calibration is None and random_calib:
        ctx.calibration = CalibrationData.random(model.input_specs(), RANDOM_CALIBRATION_SAMPLES, seed=seed)
        ctx.warn("using random calibration data (--random-calib): quantization ranges and reconstruction will not match real inputs")
    return ctx


class PassProgress(Instrument):
    """A progress line on stderr naming the pass that runs; the display lives while the pipeline runs."""

    def __init__(self):
        self.stack = contextlib.ExitStack()
        self.bar = None

    def before_pipeline(self, model, ctx):
        self.bar = self.stack.enter_context(rich_progress("passes", None))

    def before_pass(self, p, model, ctx):
        self.bar.describe(f"pass {p.spec()}")

    def after_pass(self, p, model, ctx, result, seconds):
        self.bar.advance()

    def after_pipeline(self, model, ctx):
        self.close()

    def close(self) -> None:
        self.stack.close()
        self.bar = None


@contextlib.contextmanager
def pass_progress(ctx: Context):
    """Within it, pipelines run in `ctx` show which pass runs (and the display closes even when a pass fails)."""
    instrument = PassProgress()
    ctx.instruments.append(instrument)
    try:
        yield
    finally:
        instrument.close()
        ctx.instruments.remove(instrument)


def ledger_table(ledger: Ledger) -> Table:
    table = Table("step", "kind", "nodes", "params", "file", "MACs", "time", title=f"pipeline: {escape(ledger.pipeline)}", title_justify="left")
    has_latency = any(r.latency for r in ledger.rows)
    has_drift = any(r.drift for r in ledger.rows)
    if has_latency:
        table.add_column("ORT latency")
    if has_drift:
        table.add_column("max abs drift")
        table.add_column("top-1 agree")
    for row in ledger.rows:
        cells = [escape(row.step), row.kind, str(row.stats.nodes), human_count(row.stats.params), human_bytes(row.stats.file_bytes),
                 human_count(row.stats.macs), f"{row.seconds:.2f}s"]
        if has_latency:
            cells.append(f"{row.latency.median_ms:.2f} ms" if row.latency else "-")
        if has_drift:
            d = row.drift
            cells.append(f"{d.max_abs:.3g}" if d else "-")
            cells.append(f"{100 * d.top1_agreement:.1f}%" if d and d.top1_agreement is not None else "-")
        table.add_row(*cells)
    return table


@click.command("optimize")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the optimized ONNX.")
@pipeline_options
@click.option("--verify", is_flag=True, help="Check every lossless pass against the input model on ONNX Runtime.")
@click.option("--latency", is_flag=True, help="Measure ONNX Runtime latency after every pass.")
@click.option("--drift", is_flag=True, help="Measure output drift against the input model after every pass.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the ledger as JSON here.")
@click.option("--dump-after", multiple=True, metavar="PASS", help="Write the ONNX after this pass ('*' for all) next to the output.")
@input_shape_option
@json_option
def command(model_path, output, spec, recipe, calib_path, random_calib, seed, disabled_passes, verify, latency, drift,
            report_path, dump_after, input_shapes, as_json) -> None:
    """Run a pipeline of passes on MODEL and write the result."""
    pipeline = build_pipeline(spec, recipe)
    for path in (output, report_path):
        if path:  # before any work: a report that cannot be written must not leave the model written
            check_writable(path)
    remember_for_reproducer(model_path, str(pipeline))
    model = load_model(model_path, parse_input_shapes(input_shapes))
    ctx = make_context(model, calib_path=calib_path, random_calib=random_calib, seed=seed,
                       disabled_passes=disabled_passes, verify=verify, measure_latency=latency, measure_drift=drift)
    if dump_after:
        ctx.instruments.append(DumpAfter(dump_after, Path(output).with_suffix("").with_name(Path(output).stem + ".dumps")))
    with pass_progress(ctx):
        result = PassManager(pipeline).run(model, ctx)
    result.model.save(output)
    document = {"input": model_path, "output": output, "ledger": result.ledger.to_json(), "reports": result.context.reports,
                "warnings": result.context.warnings}
    if report_path:
        try:
            write_bytes_atomic(report_path, to_json_text(document).encode())
        except BaseException:
            Path(output).unlink(missing_ok=True)
            raise
    if as_json:
        print_json(document)
        return
    for warning in result.context.warnings:
        stderr.print(f"[yellow]warning:[/] {warning}")
    stdout.print(ledger_table(result.ledger))
    stdout.print(f"wrote {output}")
