"""The worker: one member of one node's consumer group.

The worker's own thread polls Kafka, hands batches to a strategy (serial for prefetch 1,
concurrent for prefetch N), applies backpressure and commits. The serial strategy runs sync
and async handlers inline on this thread (no hand-off); while one of its batches runs long, its
watchdog thread calls :meth:`Worker._keepalive` (poll with partitions paused, commit what is
due). With the concurrent strategy the poll loop never blocks; while the in-flight buffer is
full the partitions are paused. So ``max.poll.interval.ms`` never expires however slow a
handler is.

Commits are the :class:`kstream.runtime.committer.Committer`'s (at-least-once: flush, then
commit finished offsets; exactly-once: transactions). An exactly-once transaction that fails to
commit ends this worker;
:func:`kstream.app.run_workers` replaces it when the failure is retryable (aborted, or in doubt
after a timeout): a new consumer resumes from the group's committed offsets and a new producer
with the same ``transactional.id`` fences the old one before anything is written again.

Status: on the commit path, at most every few seconds, the worker publishes how many messages
it has in flight to ``{ns}.status`` (:mod:`kstream.runtime.status`), and a tombstone on a clean
stop. Best effort: a status record that fails is logged, never a reason to stop.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Sequence

from kstream.config import RuntimeSettings
from kstream.errors import BrokerError
from kstream.kafka.port import Consumer, Producer, TopicPartition, WorkerTransactions
from kstream.metrics import NodeStats
from kstream.runtime.committer import Committer
from kstream.runtime.concurrent import Concurrent
from kstream.runtime.flood import FloodGuard
from kstream.runtime.processor import NodeProcessor
from kstream.runtime.serial import Serial
from kstream.runtime.status import StatusReporter
from kstream.runtime.strategy import Partition, Strategy
from kstream.types import Record

log = logging.getLogger("kstream.worker")

CLOSE_MARGIN = 3.0
"""Seconds of ``runtime.shutdown_timeout`` kept for closing the clients (leaving the groups)."""


class State(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Worker:
    """Runs one node: consume, process, produce, commit. ``run`` blocks until ``stop`` is set."""

    def __init__(
        self,
        processor: NodeProcessor,
        consumer: Consumer,
        producer: Producer,
        *,
        topics: Sequence[str],
        settings: RuntimeSettings,
        stop: threading.Event,
        retry_topic: str | None = None,
        transactions: WorkerTransactions | None = None,
        status_topic: str | None = None,
        transactional_id: str | None = None,
    ) -> None:
        self.processor = processor
        self.name = processor.origin
        self.state = State.CREATED
        self._consumer = consumer
        self._producer = producer
        self._topics = list(topics)
        self._settings = settings
        self._stop = stop
        self._owned: set[Partition] = set()
        self._pending: list[Record] = []
        self._paused = False
        self._txn = transactions
        self.transactional_id = transactional_id
        """Exactly-once: the producer's id, which a replacement worker reuses (to fence this one)."""
        self._stop_deadline: float | None = None
        self._in_rebalance = False
        self.last_turn = time.monotonic()
        """When the poll loop last turned (``/healthz``: :mod:`kstream.runtime.health`)."""
        self.stats = processor.stats or NodeStats(processor.topology, processor.node.name)
        batch = processor.node.batch
        self._every = batch.every if batch is not None else None
        node = processor.node
        flood = FloodGuard(self.name, share=settings.flood_share, window=settings.flood_window, minimum=settings.flood_min)
        self.strategy: Strategy
        if node.prefetch == 1 and retry_topic is None:
            self.strategy = Serial(processor, flood, self.name)
        else:
            self.strategy = Concurrent(processor, flood, self.name, prefetch=node.prefetch, ordering=node.ordering,
                                       capacity=max(settings.buffer_size, 2 * node.prefetch), retry_topic=retry_topic)
        status = (StatusReporter(producer, status_topic, processor.topology, processor.node.name)
                  if status_topic is not None else None)
        self.committer = Committer(self.name, consumer, producer, self.strategy, self.stats, settings=settings,
                                   topic=self._topics[0], owned=self._owned, hold=self._hold,
                                   stop_deadline=lambda: self._stop_deadline, transactions=transactions, status=status)
        self.stats.in_flight = lambda: self.strategy.in_flight
        self.stats.processed = lambda: self.strategy.processed
        self.stats.buffered = lambda: len(self._pending)

    @property
    def processed(self) -> int:
        return self.strategy.processed

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        self.state = State.RUNNING
        consume, batch_size, timeout = self._consumer.consume, self._settings.batch_size, self._settings.poll_timeout
        strategy, committer = self.strategy, self.committer
        next_run = time.monotonic() + (self._every or 0.0)
        try:
            if self._txn is not None:
                self._txn.init(self._settings.broker_outage_timeout)
                self._txn.begin()
            self._consumer.subscribe(self._topics, self._on_assign, self._on_revoke, self._on_lost)
            while not self._stop.is_set():
                self.last_turn = time.monotonic()
                strategy.check()
                if self._pending and not self._paused:
                    batch, self._pending = self._pending, []
                else:
                    early = committer.early(self.last_turn)
                    batch = consume(batch_size, 0.0 if early else timeout)
                    if self._paused:  # only leftovers fetched before the pause arrive now
                        self._pending.extend(batch)
                        batch = []
                    elif early and not batch:
                        self._commit(asynchronous=True)  # no input waiting: make the outputs visible now
                if batch:
                    rest = strategy.submit(batch, self._keepalive)
                    if rest:
                        self._pending = [m for m in rest if (m.topic(), m.partition()) in self._owned] + self._pending
                    self._producer.poll(0)
                self._backpressure(strategy.full())
                now = time.monotonic()
                if self._every is not None and now >= next_run:
                    next_run = now + self._every
                    self._schedule()
                if committer.due(now):
                    self._commit(asynchronous=True)
            self.state = State.STOPPING
            strategy.drain(self._drain_budget())
            strategy.check()
            if committer.status is not None:
                committer.status.stop()  # the tombstone goes with the last commit
            self._commit(asynchronous=False)
            committer.flush_status()
            self.state = State.STOPPED
        except BaseException:
            # Nothing is committed on the way out: a failed worker's uncommitted messages are
            # processed again by whoever takes its partitions.
            self.state = State.FAILED
            committer.abort()
            raise
        finally:
            self._consumer.close()  # leaves the group; runs _on_revoke, so before the strategy closes
            strategy.close()

    def _schedule(self) -> None:
        """A batch node's schedule: the owner of input partition 0 starts a run of scope "".

        A run still in progress makes the node skip the entry message (kstream.batch), so
        runs of one scope never overlap however the schedule and manual starts interleave.
        """
        if (self._topics[0], 0) in self._owned:
            log.info("%s: scheduled run", self.name)
            self._producer.produce(self._topics[0], b"{}", b"", None)

    def _keepalive(self) -> None:
        """Called from the serial strategy's watchdog thread while a batch runs long on this
        worker's thread: :meth:`_hold`, and commit what is due."""
        self.last_turn = time.monotonic()
        self._hold()
        # A long batch still commits what it finished. Exactly-once needs the handler idle: the
        # batch is cut at the next message (the loop commits and resubmits the rest), and a
        # handler that only waits (retry backoff, rate limit) lets the commit in right away,
        # so no transaction stays open much past the interval, however slow the node.
        if self.committer.due(time.monotonic()):
            if self._txn is None:
                self._commit(asynchronous=True)
            else:
                self.strategy.interrupt()
                gate = self.processor.gate
                if gate.try_begin_commit():
                    try:
                        self._commit(asynchronous=True)
                    finally:
                        gate.end_commit()
        if self._stop.is_set():
            self.strategy.drain(self._drain_budget())

    def _drain_budget(self) -> float:
        """Seconds the in-flight messages get to finish once a stop was asked for.

        The whole stop (drain, flush, commit, leaving the groups) fits in
        ``runtime.shutdown_timeout``: the drain gets 60 % of what is left of it, the flush and
        the commit the rest, less a few seconds kept for closing the clients.
        """
        now = time.monotonic()
        if self._stop_deadline is None:
            self._stop_deadline = now + max(1.0, self._settings.shutdown_timeout - CLOSE_MARGIN)
        return max(0.0, (self._stop_deadline - now) * 0.6)

    def _backpressure(self, full: bool) -> None:
        if full and not self._paused:
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
        elif not full and self._paused:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False

    # -- commits and rebalances -----------------------------------------------------------

    def _commit(self, *, asynchronous: bool, only: set[Partition] | None = None) -> None:
        self.committer.commit(self.state.value, asynchronous=asynchronous, only=only)

    def _hold(self) -> None:
        """Poll with every partition paused: the group sees us alive; nothing new is taken.
        Not from inside a rebalance callback (a commit on revoke): librdkafka is polling already."""
        if self._in_rebalance:
            return
        if not self._paused:
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
        self._pending.extend(self._consumer.consume(self._settings.batch_size, 0.2))

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        self._owned.update((tp.topic, tp.partition) for tp in partitions)
        self.stats.rebalances["assigned"] += 1
        if self._paused and partitions:
            self._consumer.pause(partitions)
        log.info("%s: assigned %s", self.name, _fmt(partitions))

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.stats.rebalances["revoked"] += 1
        self._in_rebalance = True
        try:
            if self.state is not State.FAILED:  # a failed worker commits nothing on its way out
                # At-least-once commits what finished before anything else. Exactly-once would commit
                # the whole open transaction, never allowed while a handler may still produce into it
                # (librdkafka refuses a produce during a commit: "Erroneous state"); this runs on the
                # watchdog while a serial batch runs, so the batch stops first.
                if self._txn is None:
                    self._commit(asynchronous=False, only=revoked)
                self.strategy.revoke(revoked, self._settings.shutdown_timeout)
                self._commit(asynchronous=False, only=revoked)  # and what the in-flight ones finished
        finally:
            self._in_rebalance = False
            self._let_go(revoked)
        log.info("%s: revoked %s", self.name, _fmt(partitions))

    def _let_go(self, partitions: set[Partition]) -> None:
        """Forget everything about partitions this worker no longer owns."""
        self.strategy.forget(partitions)
        self._owned -= partitions  # in place: the committer holds the same set
        self.committer.forget(partitions)
        self._pending = [m for m in self._pending if (m.topic(), m.partition()) not in partitions]

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        """Fenced (e.g. paused past the session timeout): another member may own these
        partitions already. Nothing of them is committed; an exactly-once worker aborts its
        transaction and fails (a zombie must not write on), an at-least-once one lets the
        next owner repeat the uncommitted messages and goes on with what it gets next."""
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self.stats.rebalances["lost"] += 1
        log.warning("%s: lost %s (fenced from the group); nothing of them is committed", self.name, _fmt(partitions))
        self.strategy.revoke(lost, self._settings.shutdown_timeout)
        self._let_go(lost)
        if self._txn is not None:
            self.state = State.FAILED
            raise BrokerError(f"{self.name}: fenced from the consumer group while in a transaction; "
                              "transaction aborted, worker stopped (a zombie must not commit)")


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
