"""Exactly-once processing: transactions, a killed worker, poison inside a transaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from kstream.config import Settings
from kstream.trash import TrashCodec
from tests.apps.chain import make_chain
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, running, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _start(settings: Settings, src: str, dst: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CHAIN_SRC": src, "CHAIN_DST": dst, "CHAIN_EOS": "1",
           "KSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "KSTREAM_NAMESPACE": settings.namespace}
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "kstream.cli.main", "run", "tests/apps/chain.py:topology", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )


def test_exactly_once_chain_survives_sigkill_without_loss_or_duplicates(settings: Settings, tmp_path: Path) -> None:
    # Given 50,000 orders with one poison message among them, and the exactly-once chain in its own process
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    provision(make_chain(src, dst, exactly_once=True), settings)
    n = 50_000
    orders = [(f"k{i % 500}", {"id": i, "key": f"k{i % 500}", "seq": i, "amount": 1.0}) for i in range(n)]
    orders[20_000] = ("poison", {"id": 20_000, "key": "poison", "seq": 1, "amount": 1.0, "explode": True})
    produce(settings.bootstrap_servers, src, orders)
    log = tmp_path / "worker.log"
    proc = _start(settings, src, dst, log)
    try:
        consume(settings.bootstrap_servers, dst, count=15_000, timeout=120, committed=True)
        # When the worker is killed mid-stream and started again
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = _start(settings, src, dst, log)
        # Then a read_committed reader sees every order exactly once, and the poison once in the Trash
        out = consume(settings.bootstrap_servers, dst, count=n - 1, timeout=240, committed=True, settle=3.0)
        ids = Counter(v["id"] for v in jsons(out))
        assert set(ids) == set(range(n)) - {20_000}, f"lost {n - 1 - len(ids)}"
        assert max(ids.values()) == 1, f"duplicated: {[i for i, c in ids.items() if c > 1][:10]}"
        trash = consume(settings.bootstrap_servers, settings.trash_topic, count=1, timeout=30, committed=True, settle=2.0)
        entries = [TrashCodec().decode(m.value()) for m in trash]
        assert [(e.node, e.key) for e in entries] == [("parse", b"poison")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_exactly_once_chain_delivers_each_output_once_to_read_committed_readers(settings: Settings) -> None:
    # Given an exactly-once chain in-process
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    topology = make_chain(src, dst, exactly_once=True)
    provision(topology, settings)
    produce(settings.bootstrap_servers, src, [(f"k{i % 7}", {"id": i, "key": f"k{i % 7}", "seq": i, "amount": 2.0})
                                              for i in range(2000)])
    with running(topology, settings):
        committed = consume(settings.bootstrap_servers, dst, count=2000, timeout=90, committed=True, settle=1.0)
    # Then each appears once to read_committed readers
    assert sorted(v["id"] for v in jsons(committed)) == list(range(2000))


def test_a_paused_zombie_worker_is_fenced_and_causes_no_duplicates(settings: Settings, tmp_path: Path) -> None:
    # Given an exactly-once node on one partition, worker A in the middle of a stream
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=1)
    n = 15_000
    produce(settings.bootstrap_servers, src, [("k", i) for i in range(n)])
    # A 10 s transaction timeout (kstream's default is 60 s): the frozen A's open transaction holds
    # read_committed readers of the output until the broker aborts it, and the test waits for that.
    env = {**os.environ, "SLOW_SRC": src, "SLOW_DST": dst, "KSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "KSTREAM_NAMESPACE": settings.namespace, "KSTREAM_KAFKA_TRANSACTION_TIMEOUT_MS": "10000"}
    subprocess.run([sys.executable, "-m", "kstream.cli.main", "topics", "apply", "tests/apps/slow_eos.py:topology"],
                   cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=True)

    def start(name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("ab") as err:
            return subprocess.Popen([sys.executable, "-m", "kstream.cli.main", "run", "tests/apps/slow_eos.py:topology",
                                     "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)

    a = start("a")
    b = None
    try:
        consume(settings.bootstrap_servers, dst, count=1_000, timeout=60, committed=True)
        # When A freezes (SIGSTOP) past the session timeout, B takes over, and A wakes up again
        a.send_signal(signal.SIGSTOP)
        b = start("b")
        consume(settings.bootstrap_servers, dst, count=n // 2, timeout=120, committed=True)
        a.send_signal(signal.SIGCONT)
        # Then A, a zombie now, commits nothing: it fails cleanly, or its commit fails and it is
        # replaced in place (a new member, a new producer epoch: kstream.app.run_workers)
        a_log = tmp_path / "a.log"
        wait_until(lambda: a.poll() is not None or "replacing its producer" in a_log.read_text(), timeout=90,
                   what="the zombie to fail or be replaced")
        assert a.poll() in (None, 1), a_log.read_text()[-2000:]
        out = consume(settings.bootstrap_servers, dst, count=n, timeout=180, committed=True, settle=2.0)
        # and B finishes the stream: every message exactly once for read_committed readers
        counts = Counter(jsons(out))
        assert set(counts) == set(range(n)) and max(counts.values()) == 1
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()


def test_early_commits_make_a_chains_outputs_visible_long_before_the_interval_by_default(settings: Settings) -> None:
    # Given an exactly-once chain whose transactions commit every 40 s, early commits as by default
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    topology = make_chain(src, dst, exactly_once=True)
    provision(topology, settings)
    early = settings.model_copy(update={"runtime": settings.runtime.model_copy(
        update={"transaction_interval": 40.0})})
    with running(topology, early):
        # When 500 records arrive in two bursts (the second while the first is committed)
        produce(settings.bootstrap_servers, src, [(f"k{i % 7}", {"id": i, "key": f"k{i % 7}", "seq": i, "amount": 2.0})
                                                  for i in range(250)])
        first = consume(settings.bootstrap_servers, dst, count=250, timeout=20, committed=True)
        produce(settings.bootstrap_servers, src, [(f"k{i % 7}", {"id": i, "key": f"k{i % 7}", "seq": i, "amount": 2.0})
                                                  for i in range(250, 500)])
        # Then read_committed readers see every output of both, each once, well within one
        # interval: each hop committed as soon as it found no input waiting
        committed = consume(settings.bootstrap_servers, dst, count=500, timeout=20, committed=True, settle=1.0)
    assert len(first) == 250
    assert sorted(v["id"] for v in jsons(committed)) == list(range(500))
