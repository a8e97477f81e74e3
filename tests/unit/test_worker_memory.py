"""The runtime's pure logic (strategies, offsets, rebalances, flood limit) on the in-memory broker.

A :class:`Worker` is wired as :func:`kstream.app.build_worker` wires it, with the in-memory
adapters instead of Kafka: no network, each test well under a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import pytest

from kstream.config import RuntimeSettings
from kstream.errors import TrashFlood
from kstream.kafka.port import TopicPartition, WorkerTransactions
from kstream.runtime.concurrent import Concurrent
from kstream.runtime.offsets import PartitionOffsets
from kstream.runtime.processor import NodeProcessor
from kstream.runtime.serial import Serial
from kstream.runtime.worker import State, Worker
from kstream.testing.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from kstream.topology import Topology
from kstream.trash import TrashCodec

SRC, OUT, TRASH, GROUP = "shop.in", "shop.out", "ns.trash", "ns.shop.n"
SERIAL = {"prefetch": 1}
CONCURRENT = {"prefetch": 8, "ordering": "key"}
STRATEGIES = [pytest.param(SERIAL, id="serial"), pytest.param(CONCURRENT, id="concurrent")]


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.002)


class Running:
    """A worker on its own thread; ``error`` holds what ``run`` raised."""

    def __init__(self, broker: MemoryBroker, handler: Callable[[Any], Any], options: dict[str, Any],
                 settings: RuntimeSettings, transactions: WorkerTransactions | None = None) -> None:
        t = Topology("shop")
        t.node("n", source=SRC, to=OUT, **options)(handler)
        self.stop = threading.Event()
        producer = MemoryProducer(broker)
        processor = NodeProcessor(t, t.get("n"), namespace="ns", producer=producer, trash_topic=TRASH, hop_limit=100,
                                  stop=self.stop)
        self.consumer = MemoryConsumer(broker, GROUP)
        self.worker = Worker(processor, self.consumer, producer, topics=[SRC], settings=settings, stop=self.stop,
                             transactions=transactions)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def owned(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def join(self) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture()
def broker() -> MemoryBroker:
    b = MemoryBroker()
    b.create_topic(SRC, 2)
    b.create_topic(OUT, 2)
    b.create_topic(TRASH, 1)
    return b


@pytest.fixture()
def start(broker: MemoryBroker) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def run(handler: Callable[[Any], Any], options: dict[str, Any], transactions: WorkerTransactions | None = None,
            **settings: Any) -> Running:
        defaults: dict[str, Any] = {"poll_timeout": 0.005, "commit_interval": 0.005, "shutdown_timeout": 2.0, **settings}
        r = Running(broker, handler, options, RuntimeSettings(**defaults), transactions)
        started.append(r)
        return r

    yield run
    for r in started:
        r.join()


def produce(broker: MemoryBroker, n: int, *, keys: int = 6, start: int = 0, topic: str = SRC) -> None:
    p = MemoryProducer(broker)
    for i in range(start, start + n):
        p.produce(topic, orjson.dumps({"i": i}), f"k{i % keys}".encode(), None)


def outputs(broker: MemoryBroker) -> list[int]:
    return [orjson.loads(r.value() or b"")["i"] for r in broker.records(OUT)]


def ends(broker: MemoryBroker, topic: str = SRC) -> dict[tuple[str, int], int]:
    """Per non-empty partition, the offset a group that read everything has committed."""
    return {(topic, p): len(log) for p, log in enumerate(broker.topics[topic].logs) if log}


# -- processing and commits -------------------------------------------------------------------


@pytest.mark.parametrize("options", STRATEGIES)
def test_a_worker_produces_every_output_and_commits_every_offset(broker: MemoryBroker, start: Callable[..., Running],
                                                                 options: dict[str, Any]) -> None:
    produce(broker, 50)
    r = start(lambda v: v, options)
    assert isinstance(r.worker.strategy, Serial if options is SERIAL else Concurrent)
    wait_until(lambda: broker.committed(GROUP) == ends(broker), "everything committed")
    assert sorted(outputs(broker)) == list(range(50))
    assert r.worker.processed == 50
    r.join()
    assert r.worker.state is State.STOPPED and r.error is None


@pytest.mark.parametrize("options", [pytest.param(SERIAL, id="serial"),
                                     pytest.param({"prefetch": 8, "ordering": "none"}, id="concurrent")])
def test_offsets_are_committed_only_up_to_the_lowest_unfinished_message(
        broker: MemoryBroker, start: Callable[..., Running], options: dict[str, Any]) -> None:
    # Given a one-partition input whose message 3 blocks until released
    broker.create_topic(SRC, 1)
    release = threading.Event()

    def handler(v: Any) -> Any:
        if v["i"] == 3:
            release.wait(5)
        return v

    produce(broker, 10, keys=10)
    r = start(handler, options)
    # When everything else that can finish has finished
    finished = 3 if options is SERIAL else 9  # the serial strategy waits behind message 3
    wait_until(lambda: len(outputs(broker)) == finished, "the others finished")
    try:
        # (the serial strategy commits from keepalive while its batch is blocked)
        wait_until(lambda: broker.committed(GROUP) == {(SRC, 0): 3}, "committed below the blocked message", timeout=2.0)
    except AssertionError:
        release.set()  # let the worker stop
        raise
    # Then the commit stays at the blocked message however long it takes
    time.sleep(0.05)  # (several commit intervals)
    assert broker.committed(GROUP) == {(SRC, 0): 3}
    release.set()
    wait_until(lambda: broker.committed(GROUP) == {(SRC, 0): 10}, "everything committed")
    assert sorted(outputs(broker)) == list(range(10))
    assert r.error is None


def test_messages_of_one_key_run_one_at_a_time_in_order_with_prefetch(broker: MemoryBroker,
                                                                      start: Callable[..., Running]) -> None:
    lock = threading.Lock()
    running: set[int] = set()
    seen: list[int] = []
    overlaps: list[int] = []
    concurrent_peak = [0]

    def handler(v: Any) -> Any:
        key = v["i"] % 4
        with lock:
            if key in running:
                overlaps.append(v["i"])
            running.add(key)
            concurrent_peak[0] = max(concurrent_peak[0], len(running))
        time.sleep(0.001)  # (let the others in: this is what prefetch is for)
        with lock:
            running.discard(key)
            seen.append(v["i"])
        return v

    produce(broker, 200, keys=4)
    r = start(handler, CONCURRENT)
    wait_until(lambda: broker.committed(GROUP) == ends(broker), "everything committed")
    assert overlaps == []
    for key in range(4):
        assert [i for i in seen if i % 4 == key] == list(range(key, 200, 4))
    assert concurrent_peak[0] > 1, "keys ran in parallel"
    assert r.error is None


@pytest.mark.parametrize("options", STRATEGIES)
def test_a_second_member_takes_partitions_over_without_losing_messages(
        broker: MemoryBroker, start: Callable[..., Running], options: dict[str, Any]) -> None:
    # Given one worker owning both partitions, busy with a stream of messages
    produce(broker, 100)
    first = start(lambda v: v, options)
    wait_until(lambda: len(first.owned()) == 2, "first owns everything")
    # When a second member joins while more messages arrive
    second = start(lambda v: v, options)
    produce(broker, 100, start=100)
    wait_until(lambda: first.owned() and second.owned(), "partitions split")
    produce(broker, 100, start=200)
    # Then the partitions are split, every message is processed (maybe twice: at least once),
    # and everything is committed
    assert not first.owned() & second.owned()
    wait_until(lambda: broker.committed(GROUP) == ends(broker), "everything committed")
    assert set(outputs(broker)) == set(range(300))
    assert first.error is None and second.error is None
    # When the second leaves, the first takes its partitions back and goes on
    second.join()
    wait_until(lambda: len(first.owned()) == 2, "first owns everything again")
    produce(broker, 10, start=300)
    wait_until(lambda: broker.committed(GROUP) == ends(broker), "the rest committed")
    assert set(outputs(broker)) == set(range(310))


class RecordingTransactions:
    """:class:`WorkerTransactions` that records each commit and whether a handler was running then."""

    def __init__(self, busy: threading.Event) -> None:
        self.busy = busy
        self.commits: list[tuple[list[TopicPartition], bool]] = []

    def init(self, timeout: float) -> None:
        return None

    def begin(self) -> None:
        return None

    def commit(self, offsets: Sequence[TopicPartition], group_metadata: object, timeout: float) -> None:
        self.commits.append((list(offsets), self.busy.is_set()))

    def abort(self, timeout: float) -> None:
        return None

    def discard(self) -> None:
        return None


def test_an_exactly_once_revocation_during_a_long_batch_commits_only_once_the_handler_is_done(
        broker: MemoryBroker, start: Callable[..., Running]) -> None:
    # Given an exactly-once serial worker whose batch runs long: message 5 takes until the
    # group revokes partitions from it (so its watchdog polls, and the revocation comes on the
    # watchdog's thread while the handler runs), and 0.3 s more
    produce(broker, 20)
    busy = threading.Event()
    txn = RecordingTransactions(busy)
    workers: list[Running] = []

    def handler(v: Any) -> Any:
        if v["i"] == 5:
            busy.set()
            wait_until(lambda: workers and workers[0].worker.stats.rebalances["revoked"] >= 1, "the revocation", timeout=10)
            time.sleep(0.3)  # the handler's own work, after the revocation began
            busy.clear()
        return v

    first = start(handler, SERIAL, transactions=txn, shutdown_timeout=10.0)
    workers.append(first)
    wait_until(busy.is_set, "message 5 in the handler")
    # When a second member joins
    second = start(lambda v: v, SERIAL)
    wait_until(lambda: first.owned() and second.owned(), "partitions split", timeout=15)
    # Then no transaction committed while the handler ran (a commit there fails in librdkafka:
    # a produce during a commit is refused), and the revoked partitions' progress was committed
    assert txn.commits, "nothing committed"
    assert [offsets for offsets, during in txn.commits if during] == []
    assert first.error is None and second.error is None


@pytest.mark.parametrize("options", STRATEGIES)
def test_the_flood_limit_stops_the_worker_without_committing_past_the_stop(
        broker: MemoryBroker, start: Callable[..., Running], options: dict[str, Any]) -> None:
    # Given a handler that fails on everything
    def handler(v: Any) -> Any:
        raise ValueError("bad deploy")

    produce(broker, 100)
    r = start(handler, options, flood_min=10, flood_window=20, flood_share=0.5, commit_interval=60.0)
    # Then the worker stops loudly after about flood_min messages
    r.thread.join(5)
    assert isinstance(r.error, TrashFlood)
    assert r.worker.state is State.FAILED
    trashed = broker.records(TRASH)
    assert 10 <= len(trashed) < 100
    # and nothing is committed past a message that is not in the Trash
    in_trash = {(e.partition, e.offset) for e in (TrashCodec().decode(t.value() or b"") for t in trashed)}
    for (_, partition), offset in broker.committed(GROUP).items():
        assert {(partition, o) for o in range(offset)} <= in_trash
    assert outputs(broker) == []


# -- PartitionOffsets -------------------------------------------------------------------------


def test_partition_offsets_commit_up_to_the_lowest_unfinished() -> None:
    o = PartitionOffsets()
    assert o.committable() is None
    for offset in range(10, 15):
        o.start(offset)
    o.finish(12)
    o.finish(14)
    assert o.committable() == 10 and o.in_flight == 3
    o.finish(10)
    assert o.committable() == 11 and o.in_flight == 2
    o.finish(11)
    assert o.committable() == 13
    o.finish(13)
    assert o.committable() == 15 and o.in_flight == 0


def test_partition_offsets_with_gaps_commit_past_the_highest_finished() -> None:
    # Offsets skip (transaction markers, compaction): one past the highest finished, not +1 each
    o = PartitionOffsets()
    for offset in (3, 7, 20):
        o.start(offset)
    o.finish(20)
    assert o.committable() == 3
    o.finish(7)
    o.finish(3)
    assert o.committable() == 21
    o.start(21)
    assert o.committable() == 21


class FlakyCommits(MemoryConsumer):
    """Its first ``failures`` asynchronous commits fail (nothing stored), as a broker may refuse them."""

    def __init__(self, broker: MemoryBroker, group: str, failures: int) -> None:
        super().__init__(broker, group)
        self.failures = failures
        self._failed: list[TopicPartition] = []

    def commit(self, offsets: Sequence[TopicPartition], *, asynchronous: bool) -> None:
        if asynchronous and self.failures > 0:
            self.failures -= 1
            self._failed += offsets
            return
        super().commit(offsets, asynchronous=asynchronous)

    def take_commit_failures(self) -> list[TopicPartition]:
        failed, self._failed = self._failed, []
        return failed


def test_a_failed_offset_commit_is_counted_and_retried_never_marked_done(broker: MemoryBroker) -> None:
    # Given a worker whose first two offset commits fail
    produce(broker, 20)
    t = Topology("shop")
    t.node("n", source=SRC, to=OUT)(lambda v: v)
    stop = threading.Event()
    producer = MemoryProducer(broker)
    processor = NodeProcessor(t, t.get("n"), namespace="ns", producer=producer, trash_topic=TRASH, hop_limit=100,
                              stop=stop)
    consumer = FlakyCommits(broker, GROUP, failures=2)
    worker = Worker(processor, consumer, producer, topics=[SRC], settings=RuntimeSettings(commit_interval=0.01),
                    stop=stop)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    # When everything is processed and no new message comes
    wait_until(lambda: worker.processed == 20, "all processed")
    # Then the offsets are committed anyway (the failed commits were retried), and counted
    wait_until(lambda: broker.committed(GROUP) == ends(broker), "everything committed after the failures")
    assert worker.stats.commit_failures >= 1
    stop.set()
    thread.join(5)


def test_the_serial_worker_runs_handlers_inline_and_its_watchdog_polls_while_a_batch_runs_long(
        broker: MemoryBroker, start: Callable[..., Running]) -> None:
    # Given a prefetch-1 worker whose message 2 takes a while (until released)
    broker.create_topic(SRC, 1)
    release = threading.Event()
    threads: set[str] = set()

    def handler(v: Any) -> Any:
        threads.add(threading.current_thread().name)
        if v["i"] == 2:
            release.wait(5)
        return v

    produce(broker, 5, keys=5)
    r = start(handler, SERIAL)
    polls: list[str] = []
    consume = r.consumer.consume

    def watched(max_messages: int, timeout: float) -> list[Any]:
        polls.append(threading.current_thread().name)
        return consume(max_messages, timeout)

    r.consumer.consume = watched  # type: ignore[method-assign]
    wait_until(lambda: len(outputs(broker)) == 2, "the messages before the slow one")
    # When the slow message runs longer than the watchdog's threshold
    wait_until(lambda: any("watchdog" in name for name in polls), "the watchdog polling", timeout=3.0)
    # Then the handler ran on the worker's own thread (no hand-off), the watchdog polled meanwhile
    # and committed what finished before the slow message
    assert threads == {r.thread.name}
    wait_until(lambda: broker.committed(GROUP) == {(SRC, 0): 2}, "committed below the slow message")
    # and once it returns, the worker goes on with the rest and later messages, inline
    release.set()
    wait_until(lambda: broker.committed(GROUP) == {(SRC, 0): 5}, "everything committed")
    produce(broker, 1, keys=5, start=5)
    wait_until(lambda: sorted(outputs(broker)) == list(range(6)), "a later message")
    assert threads == {r.thread.name}
    assert r.error is None
