"""effc passes: the registry of passes and named pipelines."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from effc.cli.common import json_option, print_json, stdout
from effc.pipeline import Pipeline, registered_pipelines
from effc.pipeline.pass_base import option_infos, registered_passes
from effc.pipeline.spec import format_value


def passes_info() -> dict:
    return {
        "passes": [
            {"name": name, "kind": cls.kind, "description": cls.description(), "requires": list(cls.requires),
             "options": [{"name": o.name, "type": o.type, "default": o.default, "help": o.help} for o in option_infos(cls)]}
            for name, cls in registered_passes().items()
        ],
        "pipelines": {name: str(Pipeline(build().steps)) for name, build in registered_pipelines().items()},
    }


@click.command("passes")
@json_option
def command(as_json: bool) -> None:
    """List the registered passes with their options, and the named pipelines."""
    info = passes_info()
    if as_json:
        print_json(info)
        return
    table = Table("pass", "kind", "description", "options", title="passes", title_justify="left")
    for p in info["passes"]:
        options = "\n".join(f"{o['name']}: {o['type']} = {format_value(o['default']) if o['default'] is not None else 'none'}" for o in p["options"])
        table.add_row(p["name"], p["kind"], p["description"], options or "-")
    stdout.print(table)
    for name, spec in info["pipelines"].items():
        stdout.print(f"pipeline [bold]{escape(name)}[/] = {escape(spec)}")
