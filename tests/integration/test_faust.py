"""A Faust agent as a kstream node, on the real broker: outputs, retries and the Trash around it."""

from __future__ import annotations

import pytest

from examples import faust_agent
from kstream.app import trash_store
from kstream.config import Settings
from tests.integration.kafkatools import consume, jsons, produce, provision, running, wait_until

pytestmark = pytest.mark.integration


def test_a_faust_agent_runs_as_a_node_with_retries_and_trash(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the example topology, and an agent whose first call for one order fails once
    src, dst = f"{settings.namespace}.shop.raw", f"{settings.namespace}.points"
    flaky: list[str] = []
    real = faust_agent.score.fun

    async def once_flaky(orders):  # type: ignore[no-untyped-def]
        async for order in real(orders):
            if order["order"] == "2" and not flaky:
                flaky.append(order["order"])
                raise ConnectionError("points service hiccup")
            yield order

    monkeypatch.setattr(faust_agent.score, "fun", once_flaky)
    topology = faust_agent.make_topology(src, dst)
    provision(topology, settings)
    # When orders come in: good ones, one without a customer
    produce(settings.bootstrap_servers, src, [
        ("1", {"order": 1, "customer": "ann", "total": 12.5}),
        ("2", {"order": 2, "customer": "bob", "total": 40}),
        ("3", {"order": 3, "total": 9}),
    ])
    with running(topology, settings):
        out = consume(settings.bootstrap_servers, dst, count=2, settle=1.0)
        store = trash_store(settings)
        wait_until(lambda: len(store.entries()) == 1, timeout=60, what="the failing order in the Trash")
        [entry] = store.entries()
        store.close()
    # Then the agent's yields are the node's outputs, keyed by customer; the hiccup was retried
    assert sorted(jsons(out), key=lambda r: r["order"]) == [
        {"customer": "ann", "order": "1", "points": 12}, {"customer": "bob", "order": "2", "points": 40}]
    assert {m.key() for m in out} == {b"ann", b"bob"}
    assert flaky == ["2"]
    # And the order the agent refused is in the Trash, with the agent's error, after 3 attempts
    assert (entry.node, entry.error_type) == ("score", "UnknownCustomer")
    assert entry.error_message == "order 3 has no customer"
    assert len(entry.attempts) == 3
