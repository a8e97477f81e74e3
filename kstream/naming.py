"""Names of topics and consumer groups: the one place that knows the layout of design.md s.3."""

from __future__ import annotations

import re

from kstream.errors import DeclarationError

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def check_name(name: object, *, what: str, node: str | None = None) -> str:
    """A topology, node or namespace name becomes one dot-separated part of topic names."""
    if not isinstance(name, str) or not _NAME.match(name):
        where = f"node {node!r}: " if node is not None and what != "node" else ""
        raise DeclarationError(
            f"{where}{what} name {name!r} is not usable in a topic name: use 1-100 of A-Z a-z 0-9 _ -",
            node=node,
        )
    return name


def check_topic(topic: object, *, node: str | None = None) -> str:
    if not isinstance(topic, str) or not _TOPIC.match(topic) or topic in {".", ".."}:
        raise DeclarationError(f"node {node!r}: {topic!r} is not a valid Kafka topic name", node=node)
    return topic


def node_topic(namespace: str, topology: str, node: str) -> str:
    return f"{namespace}.{topology}.{node}"


def retry_topic(namespace: str, topology: str, node: str) -> str:
    return f"{namespace}.{topology}.{node}.retry"


def replay_topic(namespace: str, topology: str, node: str) -> str:
    """Where Trash replays of a ``source=`` node go: its input belongs to others, and a replay
    written there would reach every other group that reads it. Only the node's group reads this."""
    return f"{namespace}.{topology}.{node}.replay"


def group_id(namespace: str, topology: str, node: str) -> str:
    return f"{namespace}.{topology}.{node}"


def workflow_state_topic(namespace: str, workflow: str) -> str:
    """The compacted state of every workflow of one type (its inbox is the orchestrator node's input)."""
    return f"{namespace}.wf.{workflow}"


# Whole-topic readers (``KafkaTopicReader``) take a fresh group id under this prefix each time.
READER_GROUP_PREFIX = "kstream-reader-"
