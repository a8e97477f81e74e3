"""The least Kafka rights each node of a topology needs, as ACL bindings (``kstream acls``).

A node's worker reads its input (and its retry topic), joins its consumer group, and writes its
successors' inputs, its ``to=`` topics, its retry topic, the Trash and the status topic. More
only when the node asks for it: a batch node reads and writes the cursors topic and feeds its own
input (the next page); a ``park_key`` node reads the Trash (which keys are parked); a node with
``limit=`` publishes and reads its service's share claims on ``{ns}.limits``; an exactly-once node writes under
its transactional ids ``{group}.<random>`` (a prefix ACL) and commits offsets through them.

Kafka implies DESCRIBE from READ and WRITE, and an idempotent producer needs only WRITE on a
topic (Kafka 3.0+, KIP-679), so no DESCRIBE, IDEMPOTENT_WRITE or cluster rights appear. Topic
management (``kstream topics apply``), the Trash tools and ``kstream acls apply`` itself belong to
an operator or provisioning principal, not to a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kstream.config import Settings
from kstream.kafka.port import AclKey
from kstream.limits import limits_topic
from kstream.naming import READER_GROUP_PREFIX, group_id, replay_topic
from kstream.provision import retry_topic_of
from kstream.topology import Topology

Operation = Literal["READ", "WRITE"]
ResourceType = Literal["TOPIC", "GROUP", "TRANSACTIONAL_ID"]
PatternType = Literal["LITERAL", "PREFIXED"]


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding for any host; ``why`` says which need of the node it serves."""

    principal: str
    resource_type: ResourceType
    name: str
    pattern: PatternType
    operation: Operation
    why: str = ""

    @property
    def key(self) -> AclKey:
        """What identifies the binding in Kafka (``why`` is only for people)."""
        return (self.principal, self.resource_type, self.name, self.pattern, self.operation)

    def line(self) -> str:
        return (f"ALLOW {self.principal} {self.operation:<5} {self.resource_type}:{self.pattern}:{self.name}"
                + (f"  ({self.why})" if self.why else ""))


def default_principal(topology: Topology, node: str, settings: Settings) -> str:
    """One principal per node unless told otherwise: ``User:{ns}.{topology}.{node}``."""
    return f"User:{group_id(settings.namespace, topology.name, node)}"


def node_acls(topology: Topology, name: str, settings: Settings, principal: str | None = None) -> list[Acl]:
    """Every right node ``name`` needs, each once (the first reason kept), in a stable order."""
    node = topology.get(name)
    who = principal or default_principal(topology, name, settings)
    ns = settings.namespace
    group = group_id(ns, topology.name, name)
    found: dict[AclKey, Acl] = {}

    def grant(resource_type: ResourceType, resource: str, operation: Operation, why: str,
              pattern: PatternType = "LITERAL") -> None:
        acl = Acl(who, resource_type, resource, pattern, operation, why)
        found.setdefault(acl.key, acl)

    grant("TOPIC", node.input_topic(ns), "READ", "input")
    grant("GROUP", group, "READ", "consumer group")
    if node.source is not None:  # Trash replays of a source= node come back on its own topic
        grant("TOPIC", replay_topic(ns, topology.name, name), "READ", "replays")
    retry = retry_topic_of(topology, name, ns)
    if retry is not None:
        grant("TOPIC", retry, "READ", "retry topic")
        grant("TOPIC", retry, "WRITE", "retry topic")
    for successor in topology.successors(name):
        grant("TOPIC", successor.input_topic(ns), "WRITE", f"output to {successor.name}")
    for topic in node.to:
        grant("TOPIC", topic, "WRITE", "to=")
    grant("TOPIC", settings.trash_topic, "WRITE", "Trash")
    grant("TOPIC", settings.status_topic, "WRITE", "workflow status")
    if node.batch is not None:
        grant("TOPIC", settings.cursors_topic, "READ", "batch cursors")
        grant("TOPIC", settings.cursors_topic, "WRITE", "batch cursors")
        grant("TOPIC", node.input_topic(ns), "WRITE", "next page")
    if node.on_failure == "park_key":
        grant("TOPIC", settings.trash_topic, "READ", "parked keys")
    if node.batch is not None or node.on_failure == "park_key":
        # Whole-topic reads use a fresh throwaway group id each (never joined, never committed).
        grant("GROUP", READER_GROUP_PREFIX, "READ", "topic reader", "PREFIXED")
    if node.limit is not None:  # claims are published and read on {ns}.limits, no group (kstream.shares)
        grant("TOPIC", limits_topic(ns), "READ", f"rate limit {node.limit}")
        grant("TOPIC", limits_topic(ns), "WRITE", f"rate limit {node.limit}")
    if topology.processing_of(node) == "exactly_once":
        grant("TRANSACTIONAL_ID", f"{group}.", "WRITE", "exactly-once transactions", "PREFIXED")
    return list(found.values())


def plan(topology: Topology, settings: Settings, nodes: list[str] | None = None,
         principal: str | None = None) -> list[Acl]:
    """The ACLs of ``nodes`` (default: all, in topology order); shared rights appear once per principal."""
    found: dict[AclKey, Acl] = {}
    for name in nodes or topology.order():
        for acl in node_acls(topology, name, settings, principal):
            found.setdefault(acl.key, acl)
    return list(found.values())
