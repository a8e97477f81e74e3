"""Key parking: a failed key's later messages wait in the Trash, in order, until it is resolved."""

from __future__ import annotations

import pytest

from kstream import Topology
from kstream.app import trash_store
from kstream.config import Settings
from kstream.trash_store import Selection, TrashFilter
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, running, wait_until

pytestmark = pytest.mark.integration


def _parking_topology(src: str, dst: str, broken: set[int]) -> Topology:
    topology = Topology("park")

    @topology.node("apply", source=src, to=dst, on_failure="park_key")
    def apply(event: dict[str, int | str]) -> dict[str, int | str]:
        if event["seq"] in broken and event["key"] == "K":
            raise ValueError(f"cannot apply K#{event['seq']}")
        return event

    return topology


@pytest.mark.parametrize("resolve", ["replay", "discard"])
def test_a_failed_key_parks_its_later_messages_until_resolved(settings: Settings, resolve: str) -> None:
    # Given a node that parks keys, and K's 2nd message failing (while the bug is there)
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=2)
    broken = {2}
    topology = _parking_topology(src, dst, broken)
    provision(topology, settings)
    events = [(k, {"key": k, "seq": i}) for i in range(1, 6) for k in ("K", "A", "B")]
    produce(settings.bootstrap_servers, src, events)
    store = trash_store(settings)
    with running(topology, settings):
        # Then other keys flow, K#1 passes, K#2 fails and K#3..5 are parked behind it
        out = consume(settings.bootstrap_servers, dst, count=11, timeout=60, settle=1.0)
        assert sorted((v["key"], v["seq"]) for v in jsons(out)) == sorted(
            [(k, i) for k in ("A", "B") for i in range(1, 6)] + [("K", 1)])
        wait_until(lambda: len(store.entries(TrashFilter(topology="park"))) == 4, timeout=30, what="4 trash entries")
        entries = store.entries(TrashFilter(topology="park"))
        blocker = next(e for e in entries if e.parked_behind is None)
        parked = [e for e in entries if e.parked_behind is not None]
        assert blocker.error_type == "ValueError" and sorted(e.parked_behind for e in parked) == [blocker.id] * 3
        assert all(e.reason == "parked" for e in parked)
        # When the bug is fixed and the blocking entry replayed (or discarded: the parked ones are released)
        broken.clear()
        if resolve == "replay":
            store.replay(Selection(ids=(blocker.id,)))
        else:
            store.discard(Selection(ids=(blocker.id,)))
        expected = 15 if resolve == "replay" else 14
        out = consume(settings.bootstrap_servers, dst, count=expected, timeout=60, settle=1.0)
    store.close()
    # Then K's messages arrive in their original order, and the Trash is empty
    k_seqs = [v["seq"] for v in jsons(out) if v["key"] == "K"]
    assert k_seqs == ([1, 2, 3, 4, 5] if resolve == "replay" else [1, 3, 4, 5])
    assert trash_store(settings).entries(TrashFilter(topology="park")) == []
