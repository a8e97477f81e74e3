"""Batch nodes against a local paginated HTTP API: emit modes, delta sync, failing pages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
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

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_batch_worker_killed_mid_run_resumes_from_the_last_committed_page(
        settings: Settings, tmp_path: Path, exactly_once: bool) -> None:
    # Given 100 pages x 100 orders behind a slow API, and the batch node in its own process
    dst = f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, dst)
    with ShopApi(10_000) as api:
        provision(make_shop_sync(api.url, dst, exactly_once=exactly_once), settings)
        env = {**os.environ, "SHOP_URL": api.url, "SHOP_DST": dst, "SHOP_EOS": "1" if exactly_once else "0",
               "SHOP_DELAY": "0.05", "KSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
               "KSTREAM_NAMESPACE": settings.namespace}
        log = tmp_path / "worker.log"

        def start() -> subprocess.Popen[bytes]:
            with log.open("ab") as err:
                return subprocess.Popen([sys.executable, "-m", "kstream.cli.main", "run", "tests/apps/shop_sync.py:topology",
                                         "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)

        proc = start()
        try:
            _start(settings)
            consume(settings.bootstrap_servers, dst, count=2_500, timeout=120, committed=exactly_once)
            # When it is killed mid-run and started again
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            requests_at_kill = api.requests
            proc = start()
            out = consume(settings.bootstrap_servers, dst, timeout=180, committed=exactly_once, settle=2.0,
                          until=lambda msgs: len({m.value() for m in msgs}) >= 10_000)
        finally:
            proc.kill()
            proc.wait()
    # Then it resumed from the last committed page (not from the start), and nothing is missing;
    # a read_committed reader of the exactly-once run sees every item exactly once
    ids = Counter(_ids(jsons(out)))
    assert set(ids) == set(range(1, 10_001))
    assert api.requests - requests_at_kill < 100, "the restart did not fetch everything again"
    if exactly_once:
        assert max(ids.values()) == 1, [i for i, c in ids.items() if c > 1][:10]
