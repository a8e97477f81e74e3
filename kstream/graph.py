"""The topology as a picture: Mermaid (default) or Graphviz DOT."""

from __future__ import annotations

from typing import Literal

from kstream.topology import Topology

Format = Literal["mermaid", "dot"]


def render(topology: Topology, namespace: str, fmt: Format = "mermaid") -> str:
    edges: list[tuple[str, str, str]] = []  # (from id, to id, label)
    labels: dict[str, tuple[str, str]] = {}  # id -> (label, shape)
    for name in topology.order():
        node = topology.nodes[name]
        labels[f"n_{name}"] = (f"{name}" + (f" (prefetch {node.prefetch})" if node.prefetch > 1 else ""), "node")
        if node.source:
            labels[_topic_id(node.source)] = (node.source, "topic")
            edges.append((_topic_id(node.source), f"n_{name}", ""))
        for a in node.after:
            edges.append((f"n_{a}", f"n_{name}", node.input_topic(namespace)))
        for t in node.to:
            labels[_topic_id(t)] = (t, "topic")
            edges.append((f"n_{name}", _topic_id(t), ""))
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


def _topic_id(topic: str) -> str:
    return "t_" + "".join(c if c.isalnum() else "_" for c in topic)
