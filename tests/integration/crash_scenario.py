"""One broker crash under an exactly-once chain, and the checks that it lost nothing.

Used by the integration tests (one round of each feed) and by ``bench/broker_crash.py`` (many
rounds). The broker is the test's own (killing the session broker would disturb other tests): a
:class:`LocalBroker` in its own folder, SIGKILLed mid-stream and started again on the same
data dir after ``down`` seconds. A supervisor restarts the worker process whenever it exits
(it should not need to: a worker replaces its producer in place).

Invariants, read with ``read_committed``: every record once (0 lost, 0 duplicated), in order
per key (the per-key ``seq`` rises by one), and afterwards no partition of any topic has its
last stable offset behind its high watermark (no hanging transaction).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from bench.contenders import runtime_config
from kstream.config import load_settings
from kstream.dev.broker import LocalBroker
from kstream.provision import wanted
from tests.apps.chain import make_chain
from tests.integration.kafkatools import consume, create_topics, produce, provision

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    records: int
    delivered: int
    lost: int
    duplicated: int
    out_of_order: int
    hanging: list[str]
    worker_restarts: int
    seconds: float
    broker_down_at: int
    notes: list[str] = field(default_factory=list)
    output_offsets_not_delivered: int = 0
    """Offsets of the output topic that are no delivered record: a transaction marker for each
    transaction that wrote to a partition, and any aborted record. Shows how often the last
    node committed (early commits: many more)."""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.hanging)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Supervisor:
    """Runs ``kstream run APP`` and starts it again whenever it exits, until :meth:`stop`."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self._stop = threading.Event()
        self.restarts = 0
        self.proc = self._spawn()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self._log.open("ab") as err:
            return subprocess.Popen([sys.executable, "-m", "kstream.cli.main", "run", "tests/apps/chain.py:topology",
                                     "--log-level", "info"], cwd=ROOT, env=self._env, stdout=subprocess.DEVNULL, stderr=err)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            if self.proc.poll() is not None and not self._stop.is_set():
                self.restarts += 1
                self.proc = self._spawn()

    def kill(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int | None:
        self._stop.set()
        self._thread.join(5)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def run_once(workdir: Path, *, records: int = 30_000, partitions: int = 6, down: float = 5.0,
             kill_after: int = 8_000, timeout: float = 300.0, exactly_once: bool = True, rate: float = 0.0,
             runtime: dict[str, Any] | None = None) -> Outcome:
    """Start a broker in ``workdir``, run the chain over ``records``, crash the broker once.

    ``rate`` 0: the records are all written before the worker starts (a backlog: every
    transaction runs its full interval). ``rate`` > 0: a feeder writes that many records per
    second while the chain runs, through the outage (its idempotent producer holds them while
    the broker is down), so the workers see a stream that is not saturated: what
    ``runtime.transaction_early`` commits early. ``runtime`` is the worker's ``[runtime]``
    settings (written to its config file).

    At-least-once (``exactly_once=False``): duplicates are allowed and counted, not failures;
    the order check looks at each record's first occurrence.
    """
    started = time.monotonic()
    broker = LocalBroker(workdir / "broker")
    port = _free_port()
    info, _ = broker.start(port=port)
    bootstrap = info.bootstrap
    ns = "crash"
    src, dst = f"{ns}.in", f"{ns}.out"
    settings = load_settings(environ={}, overrides={"bootstrap_servers": bootstrap, "namespace": ns,
                                                    "topics": {"partitions": partitions}})
    topology = make_chain(src, dst, exactly_once=exactly_once)
    notes: list[str] = []
    sup = None
    feeder = None
    try:
        create_topics(bootstrap, src, dst, partitions=partitions)
        provision(topology, settings)
        keys = 60
        feed = [(f"k{i % keys}", {"id": i, "key": f"k{i % keys}", "seq": i // keys, "amount": 1.0})
                for i in range(records)]
        if rate > 0:
            feeder = Feeder(bootstrap, src, feed, rate)
        else:
            produce(bootstrap, src, feed)
        env = {**os.environ, "CHAIN_SRC": src, "CHAIN_DST": dst, "CHAIN_EOS": "1" if exactly_once else "0",
               "KSTREAM_BOOTSTRAP_SERVERS": bootstrap, "KSTREAM_NAMESPACE": ns}
        if runtime:
            env["KSTREAM_CONFIG"] = str(runtime_config(workdir / "kstream.toml", runtime))
        sup = Supervisor(env, workdir / "worker.log")
        if feeder is not None:
            feeder.start()
        seen = consume(bootstrap, dst, count=kill_after, timeout=timeout / 2, committed=False)
        # When the broker dies mid-stream (SIGKILL) and comes back on the same data dir
        os.kill(info.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(info.pid):
            time.sleep(0.05)
        time.sleep(down)  # the outage itself: nothing to wait for
        broker.start(port=port)
        if feeder is not None:
            feeder.join(timeout)
        out = consume(bootstrap, dst, count=records, timeout=timeout, committed=True, settle=3.0)
        hanging = _hanging(bootstrap, [w.name for w in wanted(topology, settings)], timeout=90.0)
        not_delivered = _end_offsets(bootstrap, dst) - len(out)
        code = sup.stop()
        if code != 0:
            notes.append(f"worker exit code at the end: {code}")
        if feeder is not None and feeder.failed:
            notes.append(f"the feeder could not write {len(feeder.failed)} records: {feeder.failed[0]}")
        outcome = _check(out, records, keys, hanging, sup.restarts, time.monotonic() - started, len(seen), notes)
        outcome.output_offsets_not_delivered = not_delivered
        if not exactly_once:
            outcome.notes.append(f"at-least-once: {outcome.duplicated} duplicates (allowed)")
            outcome.duplicated = 0
        return outcome
    finally:
        if feeder is not None:
            feeder.stop()
        if sup is not None:
            sup.kill()
        broker.stop(timeout=10)


class Feeder(threading.Thread):
    """Writes ``records`` to ``topic`` at ``rate`` per second (in 10 ms ticks), idempotently: a
    broker outage holds them in the producer, in order, until it is back."""

    def __init__(self, bootstrap: str, topic: str, records: list[tuple[str, Any]], rate: float) -> None:
        super().__init__(daemon=True)
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True,
                                   "message.timeout.ms": 600_000, "log_level": 2})  # not a refused connect per retry
        self._topic = topic
        self._records = records
        self._rate = rate
        self._stopped = threading.Event()
        self.failed: list[str] = []

    def run(self) -> None:
        started = time.monotonic()
        sent = 0
        while sent < len(self._records) and not self._stopped.is_set():
            due = min(len(self._records), int((time.monotonic() - started) * self._rate) + 1)
            for key, value in self._records[sent:due]:
                while True:
                    try:
                        self._producer.produce(self._topic, orjson.dumps(value), key, on_delivery=self._delivered)
                        break
                    except BufferError:  # the queue is full (a long outage): wait for room
                        self._producer.poll(0.1)
            sent = due
            self._producer.poll(0.01)
        while not self._stopped.is_set() and self._producer.flush(0.5) > 0:
            pass

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))

    def stop(self) -> None:
        self._stopped.set()
        self.join(10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _hanging(bootstrap: str, topics: list[str], *, timeout: float) -> list[str]:
    """Partitions whose LSO is still behind the high watermark after ``timeout`` seconds (no
    live transaction stays open longer than its timeout, 60 s). Plain confluent-kafka, so the
    same check runs against any kstream version (the baseline of bench/broker_crash.py)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=10)
        parts = [TopicPartition(t, p) for t in topics if t in meta.topics for p in meta.topics[t].partitions]
        ends = {}
        for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
            futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in parts}, isolation_level=level)
            for tp, fut in futures.items():
                ends.setdefault((tp.topic, tp.partition), []).append(fut.result(timeout=30).offset)
        behind = [f"{t}[{p}] lso={lso} hw={hw}" for (t, p), (lso, hw) in sorted(ends.items()) if lso < hw]
        if not behind or time.monotonic() > deadline:
            return behind
        time.sleep(1.0)


def _end_offsets(bootstrap: str, topic: str) -> int:
    """The sum of the high watermarks of ``topic``'s partitions (it starts at offset 0)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    parts = [TopicPartition(topic, p) for p in admin.list_topics(topic, timeout=10).topics[topic].partitions]
    futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in parts})
    return sum(f.result(timeout=30).offset for f in futures.values())


def _check(out: list[Any], records: int, keys: int, hanging: list[str], restarts: int, seconds: float,
           down_at: int, notes: list[str]) -> Outcome:
    ids = Counter()
    last: dict[str, int] = defaultdict(lambda: -1)
    out_of_order = 0
    for m in out:  # per partition in offset order: a key lives on one partition
        v = orjson.loads(m.value())
        ids[v["id"]] += 1
        if ids[v["id"]] == 1:
            if v["seq"] != last[v["key"]] + 1:
                out_of_order += 1
            last[v["key"]] = v["seq"]
    lost = records - len(ids)
    dup = sum(c - 1 for c in ids.values())
    return Outcome(records, len(out), lost, dup, out_of_order, hanging, restarts, round(seconds, 1), down_at, notes)
