"""Topic provisioning rules against the in-memory admin: replication defaults and durability warnings."""

from __future__ import annotations

import pytest

from kstream import Topology
from kstream.config import Settings, load_settings
from kstream.kafka.port import NewTopic
from kstream.provision import Action, apply, durability_warnings, plan
from kstream.testing.memory import MemoryAdmin, MemoryBroker


def _topology() -> Topology:
    topology = Topology("orders")

    @topology.node("parse", source="shop.orders")
    def parse(order: dict) -> dict:  # type: ignore[type-arg]
        return order

    @topology.node("ship", after="parse")
    def ship(order: dict) -> None:  # type: ignore[type-arg]
        return None

    return topology


def _settings(**topics: object) -> Settings:
    return load_settings(environ={}, overrides={"namespace": "ns", "topics": {"partitions": 2, **topics}})


def test_topics_without_a_replication_factor_get_the_clusters_default() -> None:
    # Given a 3-broker cluster whose default.replication.factor is 3, and no RF in the settings
    broker = MemoryBroker(brokers=3, default_replication_factor=3)
    admin = MemoryAdmin(broker)
    admin.create_topics([NewTopic("shop.orders", 2, None)])
    # When the topology's topics are applied
    changes = plan(_topology(), _settings(), admin)
    assert all("replication=default" in c.detail for c in changes if c.action is Action.CREATE)
    apply(changes, admin)
    # Then every topic has RF 3, and a second plan sees no drift
    assert {t.replication_factor for t in admin.topics().values()} == {3}
    assert {c.action for c in plan(_topology(), _settings(), admin)} == {Action.OK}


def test_a_configured_replication_factor_wins_and_its_drift_is_reported() -> None:
    admin = MemoryAdmin(MemoryBroker(brokers=3, default_replication_factor=3))
    admin.create_topics([NewTopic("shop.orders", 2, 2)])
    apply(plan(_topology(), _settings(replication_factor=2), admin), admin)
    assert {t.replication_factor for t in admin.topics().values()} == {2}
    drift = [c for c in plan(_topology(), _settings(replication_factor=3), admin) if c.action is Action.DRIFT]
    assert drift and all("replication factor is 2, wants 3" in c.detail for c in drift)


@pytest.mark.parametrize(("brokers", "default_rf", "min_isr", "warned"), [
    (1, 1, 1, False),  # a dev broker: nothing better is possible
    (2, 2, 1, False),  # below 3 brokers RF 3 cannot exist
    (3, 1, 1, True),  # Kafka's own defaults on a real cluster: one broker's loss loses the Trash
    (3, 3, 1, True),  # replicated, but acks=all is satisfied by one replica
    (3, 2, 2, True),  # min.insync 2 of RF 2: one broker down stops every write
    (3, 3, 2, False),
    (5, 3, 2, False),
])
def test_plan_warns_about_state_topics_below_rf_3_or_min_insync_2(brokers: int, default_rf: int, min_isr: int,
                                                                   warned: bool) -> None:
    admin = MemoryAdmin(MemoryBroker(brokers=brokers, default_replication_factor=default_rf, min_insync_replicas=min_isr))
    warnings = durability_warnings(_settings(), admin)
    assert bool(warnings) is warned
    if warned:
        assert [w.split(":")[0] for w in warnings] == ["ns.trash", "ns.cursors", "ns.status"]
        assert f"replication factor {default_rf}, min.insync.replicas {min_isr} on a cluster of {brokers}" in warnings[0]


def test_existing_state_topics_are_judged_by_their_own_replicas_and_config() -> None:
    # Given a 3-broker cluster with weak defaults, where the Trash topic was made durable by hand
    broker = MemoryBroker(brokers=3)
    admin = MemoryAdmin(broker)
    admin.create_topics([NewTopic("ns.trash", 2, 3, {"min.insync.replicas": "2"})])
    # Then only the other two are reported; a configured RF 3 fixes their RF but not min.insync
    assert [w.split(":")[0] for w in durability_warnings(_settings(), admin)] == ["ns.cursors", "ns.status"]
    assert all("replication factor 3, min.insync.replicas 1" in w for w in durability_warnings(_settings(replication_factor=3), admin)[:1])
