"""``kstream helm values``: the Helm chart's per-node values, written from the topology itself.

The chart (``helm/kstream``) runs one Deployment per node; which nodes exist, their consumer
groups, input topics and partition counts are facts of the topology and the settings, so they
are generated here rather than kept by hand next to the chart.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path

import click

from kstream.app import admin
from kstream.cli.common import Options, app_argument, pass_options, topology_of
from kstream.config import Settings
from kstream.errors import ConfigError
from kstream.naming import group_id
from kstream.topology import Topology

# The chart names a node's objects "<release>-kstream-<key>" (40 + 1 + 22 = 63 characters,
# the limit of a label value and of a Service name) and checks keys against the same rule.
KEY_MAX = 22
_NOT_DNS = re.compile(r"[^a-z0-9-]+")

Values = Mapping[str, "str | int | Values"]


def node_key(name: str) -> str:
    """A node name made fit for Kubernetes object names (DNS-1123 label, at most 22 characters).

    Names that had to change get a short hash of the original, so two nodes that differ only in
    case or ``_`` versus ``-`` still get different keys.
    """
    key = _NOT_DNS.sub("-", name.lower()).strip("-") or "node"
    if key == name and len(key) <= KEY_MAX:
        return key
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{key[: KEY_MAX - 7].rstrip('-')}-{digest}"


def chart_values(topology: Topology, settings: Settings, app: str,
                 partitions: Mapping[str, int] | None = None) -> dict[str, object]:
    """The chart values that describe ``topology``: ``app``, ``topology``, ``kafka.namespace``
    and one ``nodes`` entry per node (name, group, input topic, partitions).

    ``partitions`` gives known partition counts by topic (from the broker); others come from the
    settings, which for a ``source=`` topic owned by someone else are only the configured default.
    """
    ns = settings.namespace
    nodes: dict[str, object] = {}
    for name in topology.order():
        node = topology.nodes[name]
        topic = node.input_topic(ns)
        count = (partitions or {}).get(topic) or settings.topics.for_node(topology.name, name)[0]
        key = node_key(name)
        if key in nodes:  # a changed name's hash equal to another node's literal name
            raise ConfigError(f"nodes {name!r} and another node map to the same chart key {key!r}")
        nodes[key] = {"node": name, "group": group_id(ns, topology.name, name), "topic": topic, "partitions": count}
    return {"app": app, "topology": topology.name, "kafka": {"namespace": ns}, "nodes": nodes}


def to_yaml(values: Mapping[str, object], indent: int = 0) -> str:
    """Block-style YAML of nested mappings of strings and ints (strings as JSON, valid YAML)."""
    lines = []
    for key, value in values.items():
        pad = " " * indent
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key}:" + ("" if value else " {}"))
            if value:
                lines.append(to_yaml(value, indent + 2))
        elif isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"cannot write {type(value).__name__} as a chart value")
        else:
            lines.append(f"{pad}{key}: {json.dumps(value)}")
    return "\n".join(lines)


@click.group()
def helm() -> None:
    """Values for the Helm chart in helm/kstream."""


@helm.command("values")
@app_argument
@click.option("--app-ref", metavar="APP", help="APP as the image imports it (default: APP as given here).")
@click.option("--from-broker", is_flag=True,
              help="Ask the broker for the partitions of input topics that exist (source= topics are not kstream's).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file instead of stdout.")
@pass_options
def values_cmd(options: Options, app: str, app_ref: str | None, from_broker: bool, output: Path | None) -> None:
    """Write the chart's per-node values of APP: one entry per node with its consumer group,
    input topic and partitions (the upper bound of its replicas).

    \b
      kstream helm values orders:topology > nodes.yaml
      helm install orders helm/kstream -f nodes.yaml --set kafka.bootstrapServers=kafka:9092
    """
    topology = topology_of(app)
    settings = options.settings()
    counts: dict[str, int] = {}
    if from_broker:
        topics = [node.input_topic(settings.namespace) for node in topology.nodes.values()]
        counts = {name: state.partitions for name, state in admin(settings).topics(topics).items()}
    values = chart_values(topology, settings, app_ref or app, counts)
    text = (f"# Per-node values of the kstream chart for topology {topology.name!r}, written by\n"
            f"# `kstream helm values {app}`: regenerate them when the topology changes.\n{to_yaml(values)}\n")
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"wrote values for {len(topology.nodes)} node(s) of {topology.name} to {output}", err=True)
