"""effc targets: the registered compile targets, what each record says, and the CPUs --cpu takes."""

from __future__ import annotations

import click
from rich.table import Table

from effc.cli.common import human_bytes, json_option, print_json, stdout
from effc.errors import EffcError

SHOWN_CPUS = 12


def targets_info() -> list[dict]:
    """One entry per registered target: its default record (or why it cannot be built here) and its CPU choices."""
    from effc.targets import registered_targets

    entries = []
    for name, entry in registered_targets().items():
        item: dict = {"name": name, "description": entry.description, "cpus": entry.cpus()}
        try:
            item["record"] = entry.make(None).to_json()
        except EffcError as exc:  # a target for another kind of host (x86 on an ARM machine)
            item["record"], item["unavailable"] = None, str(exc)
        entries.append(item)
    return entries


def _isa_text(isa: dict) -> str:
    parts = [f"{isa['vector_bits']}-bit SIMD x{isa['vector_registers']}" if isa["vector_bits"] else "no SIMD"]
    parts.append("int8 dot: " + (", ".join(isa["int8_dot"]) or "none"))
    parts.append(f"int8 activations {isa['int8_activations']}")
    if isa["int8_weight_bits"] < 8:
        parts.append(f"int8 weights {isa['int8_weight_bits']}-bit (16-bit pair sums)")
    if isa["fpu"] is None:
        parts.append("no FPU")
    return "; ".join(parts)


@click.command("targets")
@json_option
def command(as_json: bool) -> None:
    """List the compile targets: backend, lowering, device, ISA features, memory, and the CPUs --cpu takes."""
    info = targets_info()
    if as_json:
        print_json({"targets": info})
        return
    table = Table("target", "backend", "arch", "runs", "ISA (default CPU)", "memory", "--cpu", title="targets",
                  title_justify="left")
    for item in info:
        record = item["record"]
        cpus = item["cpus"]
        cpu_text = ", ".join(cpus) if len(cpus) <= SHOWN_CPUS else \
            f"{cpus[0]}, or one of {len(cpus) - 1} LLVM CPU names (--json lists them)"
        if record is None:
            table.add_row(item["name"], "-", "-", "-", f"unavailable here: {item['unavailable']}", "-", cpu_text or "-")
            continue
        backend = record["backend"] + (f"/{record['lowering']}" if record.get("lowering") else "")
        runs = "here" if not record.get("emulator") else f"{record['emulator']} here"
        if record.get("cross_compiler") and not record.get("emulator"):
            runs = "compile-only"
        memory = record.get("memory") or {}
        memory_text = ", ".join(f"{label} {human_bytes(memory[key])}" for key, label in
                                (("flash_bytes", "flash"), ("ram_bytes", "RAM")) if memory.get(key)) or "-"
        table.add_row(item["name"], backend, record["arch"], runs, _isa_text(record["isa"]), memory_text, cpu_text or "-")
    stdout.print(table)
