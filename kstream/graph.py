"""The topology as a picture: Mermaid (default) or Graphviz DOT."""

from __future__ import annotations

from typing import Literal

from kstream.topology import Topology

Format = Literal["mermaid", "dot"]


def render(topology: Topology, namespace: str, fmt: Format = "mermaid") -> str:
    ids: dict[tuple[str, str], str] = {}

    def node_id(kind: str, name: str) -> str:
        """Ids by position: always valid in Mermaid and DOT, never shared by two names."""
        return ids.setdefault((kind, name), f"{kind}{len(ids)}")

    edges: list[tuple[str, str, str]] = []  # (from id, to id, label)
    labels: dict[str, tuple[str, str]] = {}  # id -> (label, shape)
    for name in topology.order():
        node = topology.nodes[name]
        labels[node_id("n", name)] = (f"{name}" + (f" (prefetch {node.prefetch})" if node.prefetch > 1 else ""), "node")
        if node.source:
            labels[node_id("t", node.source)] = (node.source, "topic")
            edges.append((node_id("t", node.source), node_id("n", name), ""))
        for a in node.after:
            edges.append((node_id("n", a), node_id("n", name), node.input_topic(namespace)))
        for t in node.to:
            labels[node_id("t", t)] = (t, "topic")
            edges.append((node_id("n", name), node_id("t", t), ""))
    if fmt == "dot":
        lines = [f'digraph "{topology.name}" {{', "  rankdir=LR;"]
        for ident, (label, shape) in labels.items():
            lines.append(f'  {ident} [label="{label}", shape={"box" if shape == "node" else "cylinder"}];')
        for a, b, label in edges:
            lines.append(f'  {a} -> {b}' + (f' [label="{label}"]' if label else "") + ";")
        return "\n".join([*lines, "}"])
    lines = ["flowchart LR"]
    for ident, (label, shape) in labels.items():
        lines.append(f'  {ident}["{label}"]' if shape == "node" else f'  {ident}[("{label}")]')
    for a, b, label in edges:
        lines.append(f"  {a} -->|{label}| {b}" if label else f"  {a} --> {b}")
    return "\n".join(lines)

