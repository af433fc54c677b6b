"""effc inspect ARTIFACT: what a compiled artifact holds, and for an int8 model which convolutions and matmuls run
as integer arithmetic and why the others stay float."""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from effc.cli.common import print_json, stdout


def inspect_artifact(folder: str) -> dict:
    """The JSON document `effc inspect ARTIFACT --json` prints: target, pipeline, weight bytes, `integer_islands`
    (one entry per conv2d/matmul: op, weight shape, integer, detail) and `kernel_arithmetic` counts."""
    from effc.artifact import read_meta

    meta = read_meta(folder)
    islands = meta.get("integer_islands") or []
    return {"artifact": folder, "target": meta["target"]["name"], "pipeline": meta.get("pipeline"),
            "weight_bytes": meta.get("weight_bytes"), "integer_islands": islands,
            "float_islands": [i for i in islands if not i["integer"]],
            "kernels": dict(Counter((meta.get("kernel_arithmetic") or {}).values()))}


def command(folder: str, as_json: bool) -> None:
    info = inspect_artifact(folder)
    if as_json:
        print_json(info)
        return
    islands = info["integer_islands"]
    stdout.print(f"[bold]{folder}[/]  target {info['target']}, pipeline {info['pipeline']}, weights "
                 f"{info['weight_bytes']} B")
    if not islands:
        stdout.print("no int8 convolutions or matmuls: the model runs in float")
        return
    integer = sum(i["integer"] for i in islands)
    stdout.print(f"{integer} of {len(islands)} convolutions/matmuls run as integer arithmetic; kernels: "
                 + ", ".join(f"{n} {kind}" for kind, n in sorted(info["kernels"].items())))
    if info["float_islands"]:
        table = Table("op", "weight shape", "why it stays float", title="float islands", title_justify="left")
        for island in info["float_islands"]:
            table.add_row(island["op"], island["shape"], island["detail"])
        stdout.print(table)
    else:
        stdout.print("float islands: none")
