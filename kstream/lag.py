"""A node's consumer lag as the broker sees it: the one reading behind ``kstream lag`` and the
``kstream_consumer_lag_records`` / ``kstream_committed_offset`` metrics of every worker, so both
show the same figures (per partition: the group's committed offset and the end offset; the lag
is :func:`kstream.metrics.partition_lag` of the two)."""

from __future__ import annotations

from kstream.kafka.port import Admin, GroupLag
from kstream.naming import group_id
from kstream.provision import retry_topic_of
from kstream.topology import Topology


def node_topics(topology: Topology, name: str, namespace: str) -> list[str]:
    """The topics a node's group reads: its input, and its retry topic if it has one."""
    retry = retry_topic_of(topology, name, namespace)
    return [topology.nodes[name].input_topic(namespace), *([retry] if retry else [])]


def node_lag(admin: Admin, topology: Topology, name: str, namespace: str) -> list[GroupLag]:
    """Per partition of the node's topics, committed and end offsets of ``{ns}.{topology}.{node}``.
    Raises :class:`kstream.errors.BrokerUnavailable` when no broker answers."""
    group = group_id(namespace, topology.name, name)
    return [part for topic in node_topics(topology, name, namespace) for part in admin.lag(group, topic)]
