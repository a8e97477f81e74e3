"""Where Trash replays go, and that the replay topic is provisioned and read (issue 9, item 7)."""

from __future__ import annotations

from datetime import UTC, datetime

from kstream import Topology
from kstream.config import Settings
from kstream.provision import input_topics, wanted
from kstream.trash import TrashEntry
from kstream.trash_store import replay_target


def _topology() -> Topology:
    topology = Topology("orders")

    @topology.node("parse", source="shop.orders.raw")
    def parse(order: dict[str, int]) -> dict[str, int]:
        return order

    @topology.node("enrich", after="parse")
    def enrich(order: dict[str, int]) -> dict[str, int]:
        return order

    return topology


def _entry(node: str, topic: str) -> TrashEntry:
    now = datetime.now(UTC)
    return TrashEntry(id="e1", topology="orders", node=node, reason="error", error_type="ValueError",
                      error_message="bad", traceback="", key=b"k", value=b"{}", headers=[], topic=topic,
                      partition=0, offset=1, workflow=None, attempts=(), first_failure=now, last_failure=now)


def test_a_source_node_replays_to_its_own_replay_topic_and_others_to_their_input() -> None:
    assert replay_target(_entry("parse", "shop.orders.raw"), "prod") == "prod.orders.parse.replay"
    assert replay_target(_entry("enrich", "prod.orders.enrich"), "prod") == "prod.orders.enrich"
    # a replayed record that failed again was read from the replay topic: it goes back there
    assert replay_target(_entry("parse", "prod.orders.parse.replay"), "prod") == "prod.orders.parse.replay"


def test_the_replay_topic_is_provisioned_and_read_only_for_source_nodes() -> None:
    topology, settings = _topology(), Settings(namespace="prod")
    names = {w.name: w for w in wanted(topology, settings)}
    assert "prod.orders.parse.replay" in names and not names["prod.orders.parse.replay"].external
    assert "prod.orders.enrich.replay" not in names
    assert input_topics(topology, "parse", "prod") == ["shop.orders.raw", "prod.orders.parse.replay"]
    assert input_topics(topology, "enrich", "prod") == ["prod.orders.enrich"]
