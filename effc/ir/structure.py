"""The cheap well-formedness check run around every pass: names, edges, topological order."""

from __future__ import annotations

from collections.abc import Iterator

import onnx_graphsurgeon as gs


class StructureError(ValueError):
    """The graph is not well formed; the message names the node or tensor."""


def check_structure(graph: gs.Graph, *, require_order: bool = True) -> None:
    """Raise StructureError unless every edge is defined once, before use, and names are unique.

    With `require_order=False` (import), nodes may come in any order as long as there is no cycle.
    """
    producers: dict[str, str] = {}
    for tensor in graph.inputs:
        producers[tensor.name] = "graph input"
    node_names: set[str] = set()
    for node in graph.nodes:
        if node.name:
            if node.name in node_names:
                raise StructureError(f"two nodes are named {node.name!r}")
            node_names.add(node.name)
        for out in node.outputs:
            if out.name in producers:
                raise StructureError(f"tensor {out.name!r} is produced twice ({producers[out.name]} and node {node.name!r})")
            producers[out.name] = f"node {node.name!r}"
    defined: set[str] = {t.name for t in graph.inputs} if require_order else set(producers)
    for node in graph.nodes:
        for inp in node.inputs:
            if isinstance(inp, gs.Constant) or inp.name in defined or not inp.name:
                continue
            if inp.name in producers:
                _raise_order_or_cycle(graph, node, inp.name)
            raise StructureError(f"node {node.name!r} ({node.op}) reads {inp.name!r}, which nothing produces (dangling edge)")
        defined.update(out.name for out in node.outputs)
    if not require_order and (cycle := find_cycle(graph)):
        raise StructureError(f"cycle through nodes {' -> '.join(repr(n) for n in cycle)}")
    for out in graph.outputs:
        if not isinstance(out, gs.Constant) and out.name not in defined:
            raise StructureError(f"graph output {out.name!r} is not produced by any node")
    seen_outputs: set[str] = set()
    for out in graph.outputs:
        if out.name in seen_outputs:
            raise StructureError(f"graph output {out.name!r} is listed twice")
        seen_outputs.add(out.name)


def _raise_order_or_cycle(graph: gs.Graph, node: gs.Node, name: str) -> None:
    cycle = find_cycle(graph)
    if cycle:
        raise StructureError(f"cycle through nodes {' -> '.join(repr(n) for n in cycle)}")
    raise StructureError(f"node {node.name!r} reads {name!r} before it is produced (not in topological order)")


def find_cycle(graph: gs.Graph) -> list[str]:
    """Names of nodes on one cycle, or [] when the graph is acyclic."""
    producer = {out.name: node for node in graph.nodes for out in node.outputs}
    state: dict[int, int] = {}  # 1 = on stack, 2 = done
    for start in graph.nodes:
        if state.get(id(start)):
            continue
        stack = [(start, iter(start.inputs))]
        path = [start]
        state[id(start)] = 1
        while stack:
            node, it = stack[-1]
            nxt = None
            for inp in it:
                p = producer.get(inp.name)
                if p is None:
                    continue
                if state.get(id(p)) == 1:
                    idx = next(i for i, n in enumerate(path) if n is p)
                    return [n.name for n in path[idx:]] + [p.name]
                if not state.get(id(p)):
                    nxt = p
                    break
            if nxt is None:
                state[id(node)] = 2
                stack.pop()
                path.pop()
            else:
                state[id(nxt)] = 1
                stack.append((nxt, iter(nxt.inputs)))
                path.append(nxt)
    return []


def nodes_with_subgraphs(graph: gs.Graph) -> Iterator[gs.Node]:
    """Every node of `graph`, and of the If/Loop/Scan bodies inside it, depth first."""
    for node in graph.nodes:
        yield node
        for value in node.attrs.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(sub, gs.Graph):
                    yield from nodes_with_subgraphs(sub)
