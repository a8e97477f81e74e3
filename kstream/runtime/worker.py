"""The worker: one member of one node's consumer group.

Threads: the worker's own thread polls Kafka and commits; a *lane* thread runs the handlers
(an event loop on it for async handlers). The poll thread hands the lane a batch and waits;
if the batch takes longer than ``KEEPALIVE_AFTER`` it pauses its partitions and keeps calling
``consume`` (which returns nothing new), so ``max.poll.interval.ms`` never expires however slow
a handler is. Anything consume still returns meanwhile is kept, in order, for the next batch.

Commits (at-least-once): every ``commit_interval``, between batches, the worker takes the
offsets finished so far, flushes the producer (every output and trash entry of those messages
acknowledged), and only then commits them. A delivery failure stops the worker without
committing: the messages are processed again after restart.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from kstream.config import RuntimeSettings
from kstream.errors import DeliveryFailed
from kstream.kafka.port import Consumer, Producer, TopicPartition
from kstream.runtime.flood import FloodGuard
from kstream.runtime.processor import Abandoned, NodeProcessor
from kstream.types import Record

log = logging.getLogger("kstream.worker")

KEEPALIVE_AFTER = 0.5
"""Seconds a batch may run before the poll thread pauses partitions and polls meanwhile."""
FLUSH_TIMEOUT = 30.0

Partition = tuple[str, int]


class State(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class _Lane:
    """A daemon thread that runs one batch at a time (a hung handler cannot block exit)."""

    def __init__(self, name: str, use_loop: bool) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._use_loop = use_loop
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        self._jobs.put((job, fut))
        return fut

    def close(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        loop = asyncio.new_event_loop() if self._use_loop else None
        try:
            while (item := self._jobs.get()) is not None:
                job, fut = item
                try:
                    result = job()
                    if loop is not None and asyncio.iscoroutine(result):
                        result = loop.run_until_complete(result)
                    fut.set_result(result)
                except BaseException as exc:  # noqa: BLE001  (handed to the poll thread)
                    fut.set_exception(exc)
        finally:
            if loop is not None:
                loop.close()


class Worker:
    """Runs one node: consume, process, produce, commit. ``run`` blocks until ``stop`` is set."""

    def __init__(
        self,
        processor: NodeProcessor,
        consumer: Consumer,
        producer: Producer,
        *,
        topic: str,
        settings: RuntimeSettings,
        stop: threading.Event,
    ) -> None:
        self.processor = processor
        self.name = processor.origin
        self.state = State.CREATED
        self.processed = 0
        self._consumer = consumer
        self._producer = producer
        self._topic = topic
        self._settings = settings
        self._stop = stop
        self._owned: set[Partition] = set()
        self._done: dict[Partition, int] = {}
        self._pending: list[Record] = []
        self._yield = False
        self._paused = False
        self._busy: Future[Any] | None = None
        self._flood = FloodGuard(self.name, share=settings.flood_share, window=settings.flood_window, minimum=settings.flood_min)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        self.state = State.RUNNING
        lane = _Lane(f"kstream-{self.name}", use_loop=self.processor.node.is_async)
        process = self._process_async if self.processor.node.is_async else self._process
        consume, batch_size, timeout = self._consumer.consume, self._settings.batch_size, self._settings.poll_timeout
        last_commit = time.monotonic()
        try:
            self._consumer.subscribe([self._topic], self._on_assign, self._on_revoke)
            while not self._stop.is_set():
                if self._pending:
                    batch, self._pending = self._pending, []
                else:
                    batch = consume(batch_size, timeout)
                if batch:
                    self._run_batch(lane, process, batch)
                    self._producer.poll(0)
                now = time.monotonic()
                if self._done and (now - last_commit >= self._settings.commit_interval or not batch):
                    self._commit(asynchronous=True)
                    last_commit = now
            self.state = State.STOPPING
            self._commit(asynchronous=False)
            self.state = State.STOPPED
        except BaseException:
            # Nothing is committed on the way out: a failed worker's uncommitted messages are
            # processed again by whoever takes its partitions.
            self.state = State.FAILED
            raise
        finally:
            lane.close()
            self._consumer.close()

    def _run_batch(self, lane: _Lane, process: Callable[[list[Record]], Any], batch: list[Record]) -> None:
        self._yield = False
        fut = self._busy = lane.submit(lambda: process(batch))
        try:
            stopped_at = self._wait(fut)
        finally:
            self._busy = None
        if stopped_at < len(batch):
            # Interrupted (revocation or stop): keep what we still own for the next batch.
            self._pending = [m for m in batch[stopped_at:] if (m.topic(), m.partition()) in self._owned] + self._pending

    def _wait(self, fut: Future[Any]) -> int:
        try:
            return int(fut.result(timeout=KEEPALIVE_AFTER))
        except FutureTimeout:
            pass
        paused = self._consumer.assignment()
        self._consumer.pause(paused)
        self._paused = True
        try:
            while not fut.done():
                if self._stop.is_set():
                    self._yield = True  # stop after the message in hand
                # Rebalance callbacks run in here; anything returned waits its turn in order.
                self._pending.extend(self._consumer.consume(self._settings.batch_size, 0.2))
            return int(fut.result())
        finally:
            self._paused = False
            self._consumer.resume(self._consumer.assignment())

    def _process(self, batch: list[Record]) -> int:
        handle, done, record = self.processor.handle, self._done, self._flood.record
        for i, msg in enumerate(batch):
            if self._yield:
                return i
            try:
                failed = handle(msg)
            except Abandoned:
                return i
            record(failed)
            done[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
            self.processed += 1
        return len(batch)

    async def _process_async(self, batch: list[Record]) -> int:
        handle, done, record = self.processor.handle_async, self._done, self._flood.record
        for i, msg in enumerate(batch):
            if self._yield:
                return i
            try:
                failed = await handle(msg)
            except Abandoned:
                return i
            record(failed)
            done[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
            self.processed += 1
        return len(batch)

    # -- commits and rebalances -----------------------------------------------------------

    def _commit(self, *, asynchronous: bool, only: set[Partition] | None = None) -> None:
        """Flush outputs, then commit finished offsets of owned partitions (all or ``only``)."""
        wanted = self._owned if only is None else only & self._owned
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._done.items() if (t, p) in wanted]
        if not offsets:
            return
        for t, p, _ in offsets:
            del self._done[(t, p)]
        left = self._producer.flush(FLUSH_TIMEOUT)
        errors = self._producer.take_errors()
        if left or errors:
            detail = errors[0] if errors else f"{left} outputs not acknowledged within {FLUSH_TIMEOUT:g} s"
            raise DeliveryFailed(f"{self.name}: {detail}; offsets not committed", topic=self._topic)
        self._consumer.commit(offsets, asynchronous=asynchronous)

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        self._owned.update((tp.topic, tp.partition) for tp in partitions)
        if self._paused and partitions:
            self._consumer.pause(partitions)
        log.info("%s: assigned %s", self.name, _fmt(partitions))

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        fut = self._busy
        if fut is not None and not fut.done():
            self._yield = True  # finish the message in hand, hand the rest back
            try:
                fut.result(timeout=self._settings.shutdown_timeout)
            except FutureTimeout:
                log.warning("%s: message in hand still running at revocation; abandoned uncommitted", self.name)
            except Exception:  # noqa: BLE001, S110  (the poll thread sees it through the future)
                pass
        self._pending = [m for m in self._pending if (m.topic(), m.partition()) not in revoked]
        try:
            self._commit(asynchronous=False, only=revoked)
        finally:
            self._owned -= revoked
            for tp in revoked:
                self._done.pop(tp, None)
        log.info("%s: revoked %s", self.name, _fmt(partitions))


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"

