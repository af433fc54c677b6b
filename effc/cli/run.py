"""effc run: run a compiled artifact on .npy inputs and write one .npy per output."""

from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np

from effc.cli.common import json_option, print_json, stdout
from effc.errors import EffcError


def parse_input_files(values: tuple[str, ...]) -> dict[str, np.ndarray]:
    feeds = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise EffcError(f"--input {value!r}: expected NAME=FILE.npy")
        if name in feeds:
            raise EffcError(f"--input {name!r} given twice")
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
def command(artifact_path, inputs, output_dir, rpc, as_json) -> None:
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
