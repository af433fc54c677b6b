"""What `effc profile` prints for a microcontroller artifact: flash, RAM, emulated instruction counts per kernel."""

from __future__ import annotations

from rich.table import Table

from effc.cli.common import human_bytes, human_count


def mcu_table(profile, top: int) -> Table:
    table = Table("kernel", "instructions", "share", "MACs", "instr/MAC", "arithmetic", "ONNX nodes",
                  title=f"kernels of {profile.artifact} (emulated instruction counts, not cycles)", title_justify="left")
    for row in sorted(profile.kernels, key=lambda r: -r.instructions)[:top]:
        nodes = ", ".join(row.onnx_nodes[:3]) + (f" +{len(row.onnx_nodes) - 3}" if len(row.onnx_nodes) > 3 else "")
        per_mac = row.instructions_per_mac
        table.add_row(row.name, human_count(row.instructions), f"{100 * row.share:.1f}%",
                      human_count(row.macs) if row.macs else "-", f"{per_mac:.2f}" if per_mac else "-",
                      row.arithmetic or "-", nodes or "-")
    return table


def mcu_summary(profile) -> list[str]:
    f, r, a = profile.flash, profile.ram, profile.arena
    weights = f", weights {human_bytes(profile.weight_bytes)}" if profile.weight_bytes is not None else ""
    per_mac = (f", {profile.instructions_per_mac:.2f} per MAC ({human_count(profile.total_macs)} MACs)"
               if profile.instructions_per_mac else "")
    repeats = f"{profile.repeat} runs, {'identical' if profile.deterministic else 'NOT identical'} in two emulator runs"
    profiled = f"; profile build {human_count(profile.instructions_profiled)}" if profile.instructions_profiled else ""
    flash = (f"flash {human_bytes(f['total'])}: text {human_bytes(f['text'])}, rodata {human_bytes(f['rodata'])}, "
             f"data {human_bytes(f['data'])}{weights}")
    ram = (f"RAM {human_bytes(r['total'])}: .bss {human_bytes(r['bss'])} (arena and I/O buffers), .data "
           f"{human_bytes(r['data'])}, stack {human_bytes(r['stack_used'])} used of {human_bytes(r['stack_reserved'])} reserved")
    lines = [f"on {profile.where}: {profile.note}",
             f"instructions per run: {human_count(profile.instructions)}{per_mac}; {repeats}{profiled}", flash, ram]
    if a.get("bytes") is not None:
        lines.append(f"arena {human_bytes(a['bytes'])}; lower bound {human_bytes(a['lower_bound'] or 0)}, "
                     f"naive sum {human_bytes(a['naive_sum'] or 0)}")
    if profile.ort_max_abs_diff is not None:
        lines.append(f"ONNX Runtime on the same inputs: max |diff| {profile.ort_max_abs_diff:.3g} ({profile.inputs.describe()})")
    return lines
