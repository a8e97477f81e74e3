"""Batch nodes against a local paginated HTTP API: emit modes, delta sync, failing pages."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from examples.shop_api import ShopApi
from kstream.batch import read_cursors
from kstream.config import Settings
from kstream.kafka.confluent import KafkaTopicReader
from kstream.trash import TrashCodec
from tests.apps.shop_sync import make_shop_sync
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, running, wait_until

pytestmark = pytest.mark.integration


def _start(settings: Settings, scope: str = "") -> None:
    produce(settings.bootstrap_servers, f"{settings.namespace}.shop.fetch", [(scope, {})])


def _ids(values: list[Any]) -> list[int]:
    out: list[int] = []
    for v in values:
        out += [o["id"] for o in v] if isinstance(v, list) else [v["id"]]
    return out


@pytest.mark.parametrize(("emit", "messages"), [("record", 10_000), ("page", 100), (25, 400)])
def test_pages_reach_the_output_in_every_emit_mode(settings: Settings, emit: Any, messages: int) -> None:
    # Given an API with 100 pages x 100 orders and a batch node emitting by `emit`
    dst = f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, dst)
    with ShopApi(10_000) as api:
        topology = make_shop_sync(api.url, dst, emit=emit)
        provision(topology, settings)
        # When a run is started
        _start(settings)
        with running(topology, settings):
            out = consume(settings.bootstrap_servers, dst, count=messages, timeout=120, settle=1.0)
    # Then all 10,000 distinct items arrive, in the expected number of messages
    assert len(out) == messages
    ids = _ids(jsons(out))
    assert sorted(ids) == list(range(1, 10_001))
    states = read_cursors(KafkaTopicReader(settings.bootstrap_servers, {}), settings.cursors_topic, topology="shop")
    assert [(s.scope, s.run, s.last_cursor, s.pages, s.items) for s in states] == [("", None, 10_000, 100, 10_000)]


def test_delta_run_emits_only_what_was_added(settings: Settings) -> None:
    dst = f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, dst)
    with ShopApi(1_000) as api:
        topology = make_shop_sync(api.url, dst)
        provision(topology, settings)
        with running(topology, settings):
            _start(settings)
            first = consume(settings.bootstrap_servers, dst, count=1_000, timeout=60, settle=1.0)
            # When the API gains 300 orders and a second run starts
            api.add(300)
            wait_until(lambda: not _running_scope(settings), timeout=30, what="the first run to complete")
            _start(settings)
            both = consume(settings.bootstrap_servers, dst, count=1_300, timeout=60, settle=1.0)
    # Then the second run emitted exactly the 300 new ones
    assert len(first) == 1_000
    assert sorted(_ids(jsons(both))[1_000:]) == list(range(1_001, 1_301))


def _running_scope(settings: Settings) -> bool:
    states = read_cursors(KafkaTopicReader(settings.bootstrap_servers, {}), settings.cursors_topic, topology="shop")
    return any(s.run is not None for s in states) or not states


def test_transient_503s_are_retried_and_a_failing_page_is_trashed_then_replayed(settings: Settings) -> None:
    dst = f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, dst)
    with ShopApi(1_000, fail_every=7) as api:
        # Given a flaky API (every 7th request 503) where the page after order 500 keeps failing
        api.fail_after = 500
        topology = make_shop_sync(api.url, dst, attempts=4)
        provision(topology, settings)
        with running(topology, settings):
            _start(settings)
            out = consume(settings.bootstrap_servers, dst, count=500, timeout=60, settle=1.0)
            trash = consume(settings.bootstrap_servers, settings.trash_topic, count=1, timeout=60)
            # Then the first 500 arrived despite the 503s, and the failing page is in the Trash with its cursor
            assert sorted(_ids(jsons(out))) == list(range(1, 501))
            entry = TrashCodec().decode(trash[0].value())
            assert entry.node == "fetch" and len(entry.attempts) == 4
            assert orjson.loads(entry.value or b"{}")["kstream_batch"]["cursor"] == 500
            # When the API recovers and the page is replayed (as `kstream trash replay` does)
            api.fail_after = None
            produce(settings.bootstrap_servers, entry.topic, [(entry.key, orjson.loads(entry.value or b"{}"))])
            rest = consume(settings.bootstrap_servers, dst, count=1_000, timeout=60, settle=1.0)
    # Then the run continues from that cursor: the rest arrives, nothing twice
    assert sorted(_ids(jsons(rest))) == list(range(1, 1_001))
