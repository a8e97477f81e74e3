"""Trash replay of a ``source=`` node never writes to the shared source topic (issue 9, item 7)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from kstream import Topology
from kstream.app import admin, trash_store
from kstream.cli.main import cli
from kstream.config import Settings
from kstream.naming import replay_topic
from kstream.trash_store import TrashFilter
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, running, wait_until

pytestmark = pytest.mark.integration


def _topology(src: str, dst: str, broken: set[int], calls: Counter[int], *, exactly_once: bool) -> Topology:
    topology = Topology("shared", processing="exactly_once" if exactly_once else "at_least_once")
    lock = threading.Lock()

    @topology.node("ingest", source=src, to=dst)
    def ingest(event: dict[str, Any]) -> dict[str, Any]:
        with lock:
            calls[event["id"]] += 1
        if event["id"] in broken:
            raise ValueError(f"cannot ingest {event['id']}")
        return event

    return topology


def _cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-b", settings.bootstrap_servers, "-n", settings.namespace, *args],
                                catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


class OtherService:
    """A plain consumer group on the external topic, as another team's service would run it."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.seen: list[Any] = []
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"other-service-{uuid.uuid4().hex}",
                                   "auto.offset.reset": "earliest"})
        self._consumer.subscribe([topic])

    def read(self, count: int, *, timeout: float, settle: float) -> None:
        """Read until ``count`` records arrived (or the deadline), then ``settle`` seconds more
        to catch any extra one (a replay)."""
        deadline, settle_until = time.monotonic() + timeout, None
        while time.monotonic() < (settle_until or deadline):
            self.seen.extend(m for m in self._consumer.consume(500, 0.2) if m.error() is None)
            if settle_until is None and len(self.seen) >= count:
                settle_until = time.monotonic() + settle

    def close(self) -> None:
        self._consumer.close()


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_replay_of_a_source_node_goes_to_its_replay_topic_not_the_shared_topic(settings: Settings,
                                                                               exactly_once: bool) -> None:
    # Given an external topic that kstream's node and another service both read, and one event failing
    ns = settings.namespace
    src, dst = f"{ns}.shared.in", f"{ns}.shared.out"
    create_topics(settings.bootstrap_servers, src, dst)
    broken, calls = {7}, Counter[int]()
    topology = _topology(src, dst, broken, calls, exactly_once=exactly_once)
    provision(topology, settings)
    other = OtherService(settings.bootstrap_servers, src)
    try:
        produce(settings.bootstrap_servers, src, [(f"k{i}", {"id": i}) for i in range(20)])
        with running(topology, settings):
            out = consume(settings.bootstrap_servers, dst, count=19, timeout=60, committed=True)
            assert sorted(v["id"] for v in jsons(out)) == [i for i in range(20) if i != 7]
            wait_until(lambda: _cli(settings, "trash", "list", "--json", "--topology", "shared")[1].count('"id": "') == 1,
                       timeout=60, what="the failure in the Trash")
            entry = orjson.loads(_cli(settings, "trash", "list", "--json", "--topology", "shared")[1])["entries"][0]
            assert entry["topic"] == src
            calls_before = calls[7]

            # When the bug is fixed and the entry replayed with the CLI (dry run first: it names the target)
            broken.clear()
            code, out_text, err = _cli(settings, "trash", "replay", entry["id"], "--dry-run")
            assert code == 0, err
            assert f"-> {replay_topic(ns, 'shared', 'ingest')}" in out_text
            code, out_text, err = _cli(settings, "trash", "replay", entry["id"])
            assert code == 0 and "replayed 1 entry" in out_text, err

            # Then the node processes it once: exactly one output for it, one more handler call
            done = consume(settings.bootstrap_servers, dst, count=20, timeout=60, committed=True, settle=2.0)
            assert Counter(v["id"] for v in jsons(done)) == Counter(range(20))
            assert calls[7] == calls_before + 1
        # And the other service's group on the external topic saw the 20 originals and no replay
        other.read(20, timeout=60, settle=5.0)
        assert len(other.seen) == 20
        assert sorted(orjson.loads(m.value())["id"] for m in other.seen) == list(range(20))
        assert not any(dict(m.headers() or []).get("kstream-replay-of") for m in other.seen)
        raw = consume(settings.bootstrap_servers, src, count=20, timeout=30, settle=1.0)
        assert len(raw) == 20, "the external topic holds exactly the 20 records written by its producer"
        # while the replay sits on the node's own replay topic, marked with the entry id
        replayed = consume(settings.bootstrap_servers, replay_topic(ns, "shared", "ingest"), count=1, timeout=30,
                           committed=True, settle=1.0)
        assert [dict(m.headers())["kstream-replay-of"] for m in replayed] == [entry["id"].encode()]
        assert replayed[0].key() == b"k7"
        assert _cli(settings, "trash", "list", "--json", "--topology", "shared")[1].count('"id": "') == 0
    finally:
        other.close()


def test_replay_without_the_replay_topic_is_one_clear_line_and_keeps_the_entry(settings: Settings) -> None:
    # Given a failure of a source= node recorded before its replay topic was provisioned
    ns = settings.namespace
    src, dst = f"{ns}.shared.in", f"{ns}.shared.out"
    create_topics(settings.bootstrap_servers, src, dst)
    topology = _topology(src, dst, {3}, Counter(), exactly_once=False)
    provision(topology, settings)
    produce(settings.bootstrap_servers, src, [("k3", {"id": 3})])
    with running(topology, settings):
        wait_until(lambda: _cli(settings, "trash", "list", "--json")[1].count('"id": "') == 1,
                   timeout=60, what="the failure in the Trash")
    entry = orjson.loads(_cli(settings, "trash", "list", "--json")[1])["entries"][0]
    replays = replay_topic(ns, "shared", "ingest")
    client = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    client.delete_topics([replays])[replays].result(30)
    wait_until(lambda: not admin(settings).topics([replays]), timeout=30, what="the replay topic to be gone")
    # When it is replayed
    code, _, err = _cli(settings, "trash", "replay", entry["id"])
    # Then one line names the missing topic and the fix; the entry stays
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert replays in err and "topics apply" in err
    assert [e.id for e in trash_store(settings).entries(TrashFilter(topology="shared"))] == [entry["id"]]
