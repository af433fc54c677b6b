"""`effc profile --html`: one self-contained HTML page (inline SVG chart, no scripts, no downloads)."""

from __future__ import annotations

import html

from effc.units import human_bytes

BAR_HEIGHT, CHART_WIDTH, LABEL_WIDTH = 18, 560, 300


def render_html(profile, top: int = 25) -> str:
    """The report for an effc.profile.profiler.Profile: summary, a bar chart of kernel times, and the kernel table."""
    esc = html.escape
    lat = profile.latency
    rows = profile.kernels[:top]
    longest = max((r.median_ms for r in rows), default=1.0) or 1.0
    bars = []
    for i, row in enumerate(rows):
        y = i * (BAR_HEIGHT + 4)
        width = max(1.0, CHART_WIDTH * row.median_ms / longest)
        bars.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 13}" text-anchor="end">{esc(row.name[:42])}</text>'
                    f'<rect x="{LABEL_WIDTH}" y="{y}" width="{width:.1f}" height="{BAR_HEIGHT}" fill="#4a7bd0">'
                    f'<title>{esc(row.name)}: {row.median_ms:.3f} ms</title></rect>'
                    f'<text x="{LABEL_WIDTH + width + 4:.1f}" y="{y + 13}">{row.median_ms:.3f} ms</text>')
    height = len(rows) * (BAR_HEIGHT + 4) + 4
    chart = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_WIDTH + CHART_WIDTH + 90}" height="{height}" '
             f'font-family="sans-serif" font-size="12">{"".join(bars)}</svg>')
    table_rows = "".join(
        f"<tr><td>{esc(r.name)}</td><td>{r.calls}</td><td>{r.median_ms:.3f}</td><td>{100 * r.share:.1f}%</td>"
        f"<td>{f'{r.gflops:.2f}' if r.gflops else '-'}</td><td>{esc(', '.join(r.onnx_nodes)) or '-'}</td></tr>" for r in rows)
    facts = [f"end-to-end median {lat.median_ms:.3f} ms (p10 {lat.p10_ms:.3f}, p90 {lat.p90_ms:.3f}, {lat.repeats} runs) "
             f"on {esc(profile.where)}"]
    if profile.emulated:
        facts.append("<b>emulated under qemu: these timings are not the board's</b>")
    if profile.instructions_per_call is not None:
        facts.append(f"{profile.instructions_per_call:,} instructions per call (counted under qemu, one thread)")
    if profile.kernel_total_ms is not None:
        facts.append(f"{len(profile.kernels)} kernels, {profile.kernel_total_ms:.3f} ms together; VM builtins {profile.builtin_ms:.3f} ms")
    if profile.weight_bytes is not None:
        facts.append(f"weights {human_bytes(profile.weight_bytes)}, peak activations {human_bytes(profile.peak_activation_bytes or 0)}")
    if profile.ort_latency:
        facts.append(f"ONNX Runtime median {profile.ort_latency.median_ms:.3f} ms "
                     f"(artifact/ORT {lat.median_ms / profile.ort_latency.median_ms:.2f}x)")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>effc profile: {esc(profile.artifact)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}
td:nth-child(n+2):nth-child(-n+5){{text-align:right}}</style></head>
<body><h1>effc profile: {esc(profile.artifact)} ({esc(profile.target)})</h1>
<ul>{"".join(f"<li>{f}</li>" for f in facts)}</ul>
<h2>Kernel times (top {len(rows)})</h2>{chart}
<h2>Kernels</h2><table><tr><th>kernel</th><th>calls</th><th>ms</th><th>share</th><th>GFLOP/s</th><th>ONNX nodes</th></tr>{table_rows}</table>
</body></html>
"""
