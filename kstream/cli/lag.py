"""``kstream lag``: per node, how much waits (consumer lag), how much is in flight and how fast it moves."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

import click

from kstream.app import admin, status_reader
from kstream.cli.common import Options, app_argument, pass_options, topology_of
from kstream.kafka.confluent import KafkaAdmin
from kstream.kafka.port import Admin, GroupLag
from kstream.naming import group_id
from kstream.provision import input_topics, wanted
from kstream.runtime.status import LIVE_FOR, in_flight_by_node
from kstream.topology import Topology
from kstream.txns import Hanging, remedy


@dataclass(frozen=True)
class Sample:
    """One node's partitions at one moment."""

    at: float
    parts: list[GroupLag]

    @property
    def end(self) -> int:
        return sum(p.end for p in self.parts)

    @property
    def committed(self) -> int:
        # No commit yet: the group starts at the beginning (auto.offset.reset=earliest). Counted
        # as offset 0, so lag is an upper bound where retention already deleted the start.
        return sum(p.committed or 0 for p in self.parts)

    @property
    def lag(self) -> int:
        return sum(max(0, p.end - (p.committed or 0)) for p in self.parts)


@dataclass(frozen=True)
class NodeLag:
    node: str
    group: str
    topics: list[str]
    first: Sample
    last: Sample | None
    in_flight: int | None = None
    """Summed over the node's live workers (status younger than LIVE_FOR); None: none reports."""

    @property
    def lag(self) -> int:
        return (self.last or self.first).lag

    def rate(self, what: str) -> float | None:
        if self.last is None or self.last.at <= self.first.at:
            return None
        delta = self.last.end - self.first.end if what == "in" else self.last.committed - self.first.committed
        return max(0, delta) / (self.last.at - self.first.at)


def _sample(client: Admin, group: str, topics: list[str]) -> Sample:
    parts: list[GroupLag] = []
    for topic in topics:
        parts += client.lag(group, topic)
    return Sample(time.monotonic(), parts)


def measure(client: Admin, topology: Topology, namespace: str, interval: float) -> list[NodeLag]:
    """Lag of every node (topology order), with rates over ``interval`` seconds (0: no rates)."""
    targets = []
    for name in topology.order():
        targets.append((name, group_id(namespace, topology.name, name), input_topics(topology, name, namespace)))
    started = time.monotonic()
    first = [_sample(client, group, topics) for _, group, topics in targets]
    if interval <= 0:
        return [NodeLag(n, g, t, s, None) for (n, g, t), s in zip(targets, first, strict=True)]
    time.sleep(max(0.0, started + interval - time.monotonic()))  # the interval itself: rates need two samples
    last = [_sample(client, group, topics) for _, group, topics in targets]
    return [NodeLag(n, g, t, a, b) for (n, g, t), a, b in zip(targets, first, last, strict=True)]


def bottleneck(nodes: list[NodeLag]) -> str | None:
    """The node with the largest lag, if any node lags at all (the first of equals)."""
    worst = max(nodes, key=lambda n: n.lag, default=None)
    return worst.node if worst is not None and worst.lag > 0 else None


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}/s"


def with_in_flight(nodes: list[NodeLag], in_flight: dict[str, int]) -> list[NodeLag]:
    return [replace(n, in_flight=in_flight.get(n.node)) for n in nodes]


def hanging_partitions(client: KafkaAdmin, topics: list[str], after: float) -> list[Hanging]:
    """Partitions of ``topics`` whose last stable offset sits below the high watermark at a
    record older than ``after`` seconds: a transaction open that long is one nobody will end
    (the LSO is the first offset of the oldest open transaction)."""
    now_ms = time.time() * 1000
    found = []
    for e in client.stable_offsets(topics):
        if e.stable < e.high:
            ts = client.timestamp_at(e.topic, e.partition, e.stable)
            if ts is not None and now_ms - ts >= after * 1000:
                found.append(Hanging(e.topic, e.partition, e.stable, time.monotonic() - (now_ms - ts) / 1000))
    return found


def _json(nodes: list[NodeLag], topology: Topology, interval: float, hanging: list[Hanging]) -> dict[str, Any]:
    worst = bottleneck(nodes)
    return {
        "topology": topology.name, "interval": interval, "bottleneck": worst,
        "hanging": [{"topic": h.topic, "partition": h.partition, "offset": h.offset,
                     "remedy": remedy(h.topic, h.partition, h.offset)} for h in hanging],
        "nodes": [{
            "node": n.node, "group": n.group, "topics": n.topics, "lag": n.lag, "rate_in": n.rate("in"),
            "rate_out": n.rate("out"), "in_flight": n.in_flight, "bottleneck": n.node == worst,
            "partitions": [{"topic": p.topic, "partition": p.partition, "committed": p.committed, "end": p.end,
                            "lag": max(0, p.end - (p.committed or 0))} for p in (n.last or n.first).parts],
        } for n in nodes],
    }


@click.command()
@app_argument
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between the two samples the rates come from (0: lag only).")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds to wait for the broker on each request.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@pass_options
def lag(options: Options, app: str, interval: float, timeout: float, as_json: bool) -> None:
    """Per node of APP: queue depth (consumer lag), messages in flight, rates, and the bottleneck.

    \b
    LAG       sum over the input (and retry) partitions of end offset - committed offset
              of the node's group; a group that never committed counts from offset 0
    IN        messages per second appended to the node's input over --interval
    OUT       committed offsets advanced per second over --interval (processed rate)
    IN-FLIGHT messages the node's workers took but have not finished (running or queued),
              summed over the workers whose status record in {ns}.status is younger than
              10 s; "-" when no live worker reports (none runs, or all stopped cleanly)

    The bottleneck is the node with the largest lag, when any node lags.

    Hanging transactions on any topic of APP are listed below the table, with the command that
    aborts them: a partition whose last stable offset has stayed on a record older than
    runtime.hanging_after seconds. Its records past that offset are invisible to every
    read_committed reader (every kstream node), whatever LAG says.
    """
    topology = topology_of(app)
    settings = options.settings()
    client = admin(settings, timeout=timeout)
    nodes = measure(client, topology, settings.namespace, interval)
    hanging = hanging_partitions(client, [w.name for w in wanted(topology, settings)], settings.runtime.hanging_after)
    # Read after the samples: with --interval the statuses are as fresh as the rates.
    records = status_reader(settings).read_compacted(settings.status_topic, timeout)
    nodes = with_in_flight(nodes, in_flight_by_node(records, topology.name, now_ms=int(time.time() * 1000),
                                                    live_for=LIVE_FOR))
    if as_json:
        click.echo(json.dumps(_json(nodes, topology, interval, hanging), indent=2))
        return
    worst = bottleneck(nodes)
    rows = [("NODE", "LAG", "IN", "OUT", "IN-FLIGHT", "")]
    for n in nodes:
        rows.append((n.node, str(n.lag), _rate(n.rate("in")), _rate(n.rate("out")),
                     "-" if n.in_flight is None else str(n.in_flight),
                     "<- bottleneck" if n.node == worst else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r[:-1], widths[:-1], strict=True))]
        click.echo(("  ".join(cells) + "  " + r[-1]).rstrip())
    now = time.monotonic()
    for h in hanging:
        click.echo(f"HANGING: {h.line(now)}")
