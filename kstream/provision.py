"""Topic provisioning: what a topology needs, the difference to the cluster, and applying it.

``plan`` never changes anything. ``apply`` creates missing topics, sets topic configs that
differ, and adds partitions only when asked (``grow``): more partitions move keys to other
partitions, which breaks per-key order for messages already in flight. What it will not fix
(fewer partitions wanted, a different ``cleanup.policy``, replication factor) is reported as
drift. Topics of ``source=`` and ``to=`` belong to others and are only created on request.
Without a configured replication factor a topic gets the cluster's ``default.replication.factor``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from kstream.config import Settings
from kstream.kafka.port import Admin, Cluster, NewTopic, TopicState
from kstream.limits import LIMITS_CONFIG, LIMITS_PARTITIONS, limits_topic
from kstream.naming import replay_topic, retry_topic
from kstream.topology import Topology

COMPACTED = {"cleanup.policy": "compact"}
# Status records come every few seconds per worker and are read from the beginning: short
# segments let compaction keep the topic near one record per live worker.
STATUS_CONFIG = {**COMPACTED, "segment.ms": "3600000"}
# On a cluster of SAFE_BROKERS or more, kstream's own state (Trash, cursors, status) should
# survive one broker down while still taking writes (acks=all): RF 3 and min.insync.replicas 2.
SAFE_BROKERS, SAFE_REPLICATION, SAFE_MIN_INSYNC = 3, 3, 2


class Action(enum.Enum):
    OK = "ok"
    CREATE = "create"
    GROW = "grow"
    ALTER = "alter"
    DRIFT = "drift"
    EXTERNAL_MISSING = "missing"


@dataclass(frozen=True)
class Want:
    name: str
    partitions: int
    replication_factor: int | None
    """None: the cluster's default."""
    config: dict[str, str] = field(default_factory=dict)
    external: bool = False


@dataclass(frozen=True)
class Change:
    action: Action
    want: Want
    detail: str = ""
    alter: dict[str, str] = field(default_factory=dict)
    """Topic configs to set (with ALTER, or along with GROW)."""

    def line(self) -> str:
        return f"{self.action.value:<8} {self.want.name}" + (f"  {self.detail}" if self.detail else "")


def retry_topic_of(topology: Topology, name: str, namespace: str) -> str | None:
    """The retry topic of an unordered node that retries (``ordering="none"``), else None.

    Ordered nodes retry in place: the partition (or the key) waits, so order holds.
    """
    node = topology.nodes[name]
    if node.ordering == "none" and node.retry is not None and node.retry.attempts > 1:
        return retry_topic(namespace, topology.name, name)
    return None


def input_topics(topology: Topology, name: str, namespace: str) -> list[str]:
    """Every topic node ``name``'s group reads: its input, its retry topic (if it retries through
    one) and, for a ``source=`` node, its replay topic."""
    node = topology.nodes[name]
    retry = retry_topic_of(topology, name, namespace)
    replay = replay_topic(namespace, topology.name, name) if node.source is not None else None
    return [node.input_topic(namespace), *(t for t in (retry, replay) if t is not None)]


def wanted(topology: Topology, settings: Settings) -> list[Want]:
    """Every topic the topology reads or writes, kstream's own first."""
    ns, topics = settings.namespace, settings.topics
    result: dict[str, Want] = {}
    for name in topology.order():
        node = topology.nodes[name]
        parts, rf, config = topics.for_node(topology.name, name)
        if node.source is None:
            result[node.input_topic(ns)] = Want(node.input_topic(ns), parts, rf, config)
        else:  # replays of its failures go here, never to the shared source topic
            result[replay_topic(ns, topology.name, name)] = Want(replay_topic(ns, topology.name, name), parts, rf, config)
        retry = retry_topic_of(topology, name, ns)
        if retry is not None:
            result[retry] = Want(retry, parts, rf, config)
    for internal in (settings.trash_topic, settings.cursors_topic):
        result[internal] = Want(internal, topics.partitions, topics.replication_factor, dict(COMPACTED))
    result[settings.status_topic] = Want(settings.status_topic, topics.partitions, topics.replication_factor,
                                         dict(STATUS_CONFIG))
    for name, config in topology.owned_topics(ns).items():
        result[name] = Want(name, topics.partitions, topics.replication_factor, dict(config))
    if any(node.limit for node in topology.nodes.values()):  # rate limit shares (kstream.limits)
        result[limits_topic(ns)] = Want(limits_topic(ns), LIMITS_PARTITIONS, topics.replication_factor,
                                        dict(LIMITS_CONFIG))
    for node in topology.nodes.values():
        for ext in ([node.source] if node.source else []) + list(node.to):
            result.setdefault(ext, Want(ext, topics.partitions, topics.replication_factor, external=True))
    return list(result.values())


def plan(topology: Topology, settings: Settings, admin: Admin, *, grow: bool = False,
         create_external: bool = False) -> list[Change]:
    wants = wanted(topology, settings)
    existing = admin.topics([w.name for w in wants])
    return [_compare(w, existing.get(w.name), grow=grow, create_external=create_external) for w in wants]


def _compare(want: Want, have: TopicState | None, *, grow: bool, create_external: bool) -> Change:
    if have is None:
        if want.external and not create_external:
            return Change(Action.EXTERNAL_MISSING, want,
                          "external topic does not exist (not created: owned outside kstream; --create-external creates it)")
        return Change(Action.CREATE, want, f"partitions={want.partitions} replication={want.replication_factor or 'default'}"
                      + "".join(f" {k}={v}" for k, v in sorted(want.config.items())))
    if want.external:
        return Change(Action.OK, want, f"external, {have.partitions} partitions")
    drift = []
    policy_want = want.config.get("cleanup.policy", "delete")
    policy_have = have.config.get("cleanup.policy", "delete")
    if policy_want != policy_have:
        drift.append(f"cleanup.policy is {policy_have}, wants {policy_want} (not changed: recreate the topic)")
    if have.partitions > want.partitions:
        drift.append(f"has {have.partitions} partitions, wants {want.partitions} (kstream never removes partitions)")
    if want.replication_factor is not None and have.replication_factor != want.replication_factor:
        drift.append(f"replication factor is {have.replication_factor}, wants {want.replication_factor} (not changed)")
    if drift:
        return Change(Action.DRIFT, want, "; ".join(drift))
    differs = {k: v for k, v in want.config.items() if k != "cleanup.policy" and have.config.get(k) != v}
    altered = " ".join(f"{k}: {have.config.get(k, '(default)')} -> {v}" for k, v in sorted(differs.items()))
    if have.partitions < want.partitions:
        if grow:
            return Change(Action.GROW, want, f"partitions {have.partitions} -> {want.partitions} {altered}".rstrip(), differs)
        return Change(Action.DRIFT, want,
                      f"has {have.partitions} partitions, wants {want.partitions} (apply --grow-partitions adds them; keys move)")
    if differs:
        return Change(Action.ALTER, want, altered, differs)
    return Change(Action.OK, want)


def missing_inputs(topology: Topology, names: list[str], settings: Settings, admin: Admin) -> list[str]:
    """The topics the nodes ``names`` read (inputs and retry topics) that do not exist: a worker
    subscribed to a missing topic idles without a word, so ``kstream run`` checks first."""
    ns = settings.namespace
    topics = [topology.nodes[n].input_topic(ns) for n in names]
    topics += [t for n in names if (t := retry_topic_of(topology, n, ns)) is not None]
    existing = admin.topics(topics)
    return [t for t in topics if t not in existing]


def durability_warnings(settings: Settings, admin: Admin) -> list[str]:
    """Kstream's state topics that would lose data or stop taking writes when one broker fails,
    on a cluster large enough to avoid it (:data:`SAFE_BROKERS`); topics still to be created are
    judged by what they will get (the configured or the cluster's default replication factor)."""
    cluster: Cluster = admin.cluster()
    if cluster.brokers < SAFE_BROKERS:
        return []
    names = [settings.trash_topic, settings.cursors_topic, settings.status_topic]
    existing = admin.topics(names)
    warnings = []
    for name in names:
        have = existing.get(name)
        rf = have.replication_factor if have else settings.topics.replication_factor or cluster.default_replication_factor
        min_isr = int(have.config.get("min.insync.replicas", cluster.min_insync_replicas) if have
                      else cluster.min_insync_replicas)
        if rf < SAFE_REPLICATION or min_isr < SAFE_MIN_INSYNC:
            warnings.append(
                f"{name}: replication factor {rf}, min.insync.replicas {min_isr} on a cluster of {cluster.brokers} "
                f"brokers: wants at least {SAFE_REPLICATION} and {SAFE_MIN_INSYNC} to survive a broker's loss")
    return warnings


def apply(changes: list[Change], admin: Admin) -> list[Change]:
    """Carry out create, grow and alter changes; returns those carried out."""
    create = [c for c in changes if c.action is Action.CREATE]
    admin.create_topics([NewTopic(c.want.name, c.want.partitions, c.want.replication_factor, c.want.config) for c in create])
    done = list(create)
    for c in changes:
        if c.action is Action.GROW:
            admin.create_partitions(c.want.name, c.want.partitions)
        if c.alter:
            admin.alter_config(c.want.name, c.alter)
        if c.action in (Action.GROW, Action.ALTER):
            done.append(c)
    return done
