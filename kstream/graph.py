"""The topology as a picture: Mermaid (default) or Graphviz DOT."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kstream.topology import Topology
from kstream.workflows.declare import Workflow, WorkflowTopology

Format = Literal["mermaid", "dot"]


@dataclass(frozen=True)
class Shape:
    """A topology as boxes and arrows: what every rendering draws (``kstream graph``, the console).

    Ids are by position: always valid in Mermaid and DOT, never shared by two names.
    """

    labels: dict[str, tuple[str, str]]
    """id -> (label, kind): kind ``node`` or ``topic``."""
    names: dict[str, str]
    """id -> the node's or topic's name."""
    edges: list[tuple[str, str, str]]
    """(from id, to id, label: the internal topic between two nodes, else empty)."""


def shape(topology: Topology, namespace: str) -> Shape:
    ids: dict[tuple[str, str], str] = {}

    def node_id(kind: str, name: str) -> str:
        return ids.setdefault((kind, name), f"{kind}{len(ids)}")

    edges: list[tuple[str, str, str]] = []
    labels: dict[str, tuple[str, str]] = {}
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
    return Shape(labels, {ident: name for (_, name), ident in ids.items()}, edges)


def render(topology: Topology, namespace: str, fmt: Format = "mermaid") -> str:
    if isinstance(topology, WorkflowTopology):
        return render_workflow(topology.workflow, fmt)
    drawn = shape(topology, namespace)
    labels, edges = drawn.labels, drawn.edges
    if fmt == "dot":
        lines = [f'digraph "{topology.name}" {{', "  rankdir=LR;"]
        for ident, (label, kind) in labels.items():
            lines.append(f'  {ident} [label="{label}", shape={"box" if kind == "node" else "cylinder"}];')
        for a, b, label in edges:
            lines.append(f'  {a} -> {b}' + (f' [label="{label}"]' if label else "") + ";")
        return "\n".join([*lines, "}"])
    lines = ["flowchart LR"]
    for ident, (label, kind) in labels.items():
        lines.append(f'  {ident}["{label}"]' if kind == "node" else f'  {ident}[("{label}")]')
    for a, b, label in edges:
        lines.append(f"  {a} -->|{label}| {b}" if label else f"  {a} --> {b}")
    return "\n".join(lines)



def render_workflow(wf: Workflow, fmt: Format = "mermaid") -> str:
    """A workflow as its steps: ``after`` edges (a join has several), each compensation dashed
    from the step it undoes; the policies of a step in its label."""
    ids = {name: f"s{i}" for i, name in enumerate([*wf.order(), *wf.compensations])}
    labels: dict[str, str] = {}
    for name in wf.order():
        spec = wf.steps[name]
        extra = [f"retry {spec.retry.attempts}" if spec.retry.attempts > 1 else "",
                 f"timeout {spec.timeout:g}s" if spec.timeout else "", f"signal {spec.signal}" if spec.signal else "",
                 f"workflow {spec.child.name}" if spec.child else ""]
        labels[name] = " ".join([name, *(f"({e})" for e in extra if e)])
    for name in wf.compensations:
        labels[name] = f"undo: {name}"
    edges = [(ids[a], ids[name], False) for name in wf.order() for a in wf.steps[name].after]
    edges += [(ids[name], ids[spec.compensate], True) for name, spec in wf.steps.items() if spec.compensate]
    if fmt == "dot":
        lines = [f'digraph "{wf.name}" {{', "  rankdir=LR;"]
        lines += [f'  {ids[n]} [label="{label}", shape={"box" if n in wf.steps else "octagon"}];' for n, label in labels.items()]
        lines += [f"  {a} -> {b}" + (" [style=dashed];" if dashed else ";") for a, b, dashed in edges]
        return "\n".join([*lines, "}"])
    lines = ["flowchart LR"]
    lines += [f'  {ids[n]}["{label}"]' if n in wf.steps else f'  {ids[n]}{{{{"{label}"}}}}' for n, label in labels.items()]
    lines += [f"  {a} -.-> {b}" if dashed else f"  {a} --> {b}" for a, b, dashed in edges]
    return "\n".join(lines)
