"""effc inspect: what a model is and what it costs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

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
    stdout,
)
from effc.ir import load_model
from effc.ir.metrics import layer_macs, model_stats
from effc.verify import unpinned_dims


def inspect_model(model) -> dict:
    """The JSON document `effc inspect --json` prints (schema documented in the README)."""
    from effc.backends.tvm.frontend import unsupported_nodes

    stats = model_stats(model)
    macs = layer_macs(model)
    ops = Counter(n.op for n in model.graph.nodes)
    return {
        "source": model.source,
        "opset": model.opset,
        "inputs": [s.to_json() for s in model.input_specs()],
        "outputs": [s.to_json() for s in model.output_specs()],
        "nodes": stats.nodes,
        "op_histogram": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "params": stats.params,
        "weight_bytes": stats.weight_bytes,
        "file_bytes": stats.file_bytes,
        "macs": stats.macs,
        "macs_assume_1_for": unpinned_dims(model.input_specs()),
        "layers": [{"name": name, "op": op, "macs": m} for name, op, m in
                   ((n.name, n.op, macs[n.name]) for n in model.graph.nodes if n.name in macs)],
        "tvm_unsupported": [{"node": node, "op": op} for node, op in unsupported_nodes(model)],
        "metadata": model.metadata,
    }


@click.command("inspect")
@click.argument("model_path", metavar="MODEL|ARTIFACT", type=click.Path())
@input_shape_option
@click.option("--layers/--no-layers", default=True, help="Show MACs per layer.")
@json_option
def command(model_path: str, input_shapes, layers: bool, as_json: bool) -> None:
    """Inputs, outputs, opset, op histogram, parameters, MACs and what TVM cannot import; for an artifact folder,
    its target and which convolutions/matmuls run integer (the float islands and why)."""
    if Path(model_path).is_dir():
        from effc.cli.inspect_artifact import command as inspect_artifact

        inspect_artifact(model_path, as_json)
        return
    remember_for_reproducer(model_path)
    model = load_model(model_path, parse_input_shapes(input_shapes))
    info = inspect_model(model)
    if as_json:
        print_json(info)
        return
    stdout.print(f"[bold]{model_path}[/]  opset {info['opset']}, {info['nodes']} nodes, {human_count(info['params'])} parameters "
                 f"({human_bytes(info['weight_bytes'])}), {human_count(info['macs'])} MACs, file {human_bytes(info['file_bytes'])}")
    if info["macs_assume_1_for"]:
        stdout.print(f"[yellow]note:[/] MACs assume 1 for the unpinned dims {', '.join(info['macs_assume_1_for'])}; "
                     "pin them with --input-shape for real figures")
    io = Table("", "name", "shape", "dtype", title="inputs and outputs", title_justify="left")
    for kind in ("inputs", "outputs"):
        for spec in info[kind]:
            io.add_row(kind[:-1], spec["name"], str(spec["shape"]), spec["dtype"])
    stdout.print(io)
    hist = Table("op", "count", title="operators", title_justify="left")
    for op, count in info["op_histogram"].items():
        hist.add_row(op, str(count))
    stdout.print(hist)
    if layers and info["layers"]:
        table = Table("layer", "op", "MACs", "share", title="MACs per layer", title_justify="left")
        total = max(info["macs"], 1)
        for row in info["layers"]:
            table.add_row(row["name"], row["op"], human_count(row["macs"]), f"{100 * row['macs'] / total:.1f}%")
        stdout.print(table)
    if info["tvm_unsupported"]:
        stdout.print("[yellow]TVM cannot import:[/] " + ", ".join(f"{r['node']} ({r['op']})" for r in info["tvm_unsupported"]))
    else:
        stdout.print("TVM imports every op of this model.")
