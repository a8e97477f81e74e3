"""Prefetch N: up to N messages of a worker in flight, same key never at once.

A dispatcher runs on its own event loop thread. Async handlers run as tasks on that loop;
sync handlers run on a thread pool of ``prefetch`` threads. With ``ordering="key"`` a message
waits while an earlier message of its key runs (keys without a value are not ordered);
``ordering="none"`` starts anything that fits. Offsets are committed per partition only up to
the lowest unfinished message (:class:`kstream.runtime.offsets.PartitionOffsets`).

Retries of a node with a retry topic arrive with a due time: they wait on a timer, outside
the prefetch slots, so a slow-to-recover message holds nothing else up.

The poll thread and the loop share only: ``accepted``/``finished`` counters (each written by
one thread), and calls marshalled onto the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from typing import Any

from kstream import headers as hdr
from kstream.runtime.flood import FloodGuard
from kstream.runtime.offsets import PartitionOffsets
from kstream.runtime.processor import Abandoned, NodeProcessor
from kstream.runtime.strategy import KeepAlive, Partition
from kstream.types import Record

log = logging.getLogger("kstream.worker")

_NO_KEY = object()


class Concurrent:
    """:class:`kstream.runtime.strategy.Strategy` for prefetch > 1 or ``ordering="none"``."""

    def __init__(self, processor: NodeProcessor, flood: FloodGuard, name: str, *, prefetch: int,
                 ordering: str, capacity: int, retry_topic: str | None) -> None:
        self._processor = processor
        self._flood = flood
        self._prefetch = prefetch
        self._by_key = ordering == "key"
        self._capacity = max(capacity, prefetch)
        self._retry_topic = retry_topic
        self._is_async = processor.node.is_async
        self._pool = None if self._is_async else concurrent.futures.ThreadPoolExecutor(prefetch, f"kstream-{name}")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"kstream-{name}-loop", daemon=True)
        self._thread.start()
        # Loop-thread state.
        self._ready: deque[Record] = deque()
        self._waiting: dict[Any, deque[Record]] = {}  # key -> later messages; present = key busy
        self._running_keys: set[bytes | None] = set()
        self._offsets: dict[Partition, PartitionOffsets] = {}
        self._running: dict[Partition, set[asyncio.Task[None]]] = {}
        self._timers: dict[Partition, set[asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._dropped: set[Partition] = set()
        self._in_flight = 0
        self._closing = False
        self._holding = False
        self._error: BaseException | None = None
        # Counters: accepted is written by the poll thread, finished by the loop thread.
        self.accepted = 0
        self.finished = 0
        self._full = False
        self.processed = 0

    # -- poll thread ----------------------------------------------------------------------

    def submit(self, batch: list[Record], keepalive: KeepAlive) -> list[Record]:
        self.accepted += len(batch)
        self._loop.call_soon_threadsafe(self._accept, batch)
        return []

    def full(self) -> bool:
        # Hysteresis: once full, stay "full" until half drained. Every pause/resume makes
        # librdkafka restart fetching; flapping at the threshold throttled a backlog to ~1k/s.
        buffered = self.accepted - self.finished
        if self._full:
            self._full = buffered > self._capacity // 2
        else:
            self._full = buffered >= self._capacity
        return self._full

    @property
    def buffered(self) -> int:
        return self.accepted - self.finished

    @property
    def in_flight(self) -> int:
        return self.accepted - self.finished

    def committable(self) -> dict[Partition, int]:
        result: dict[Partition, int] = self._call(self._committable)
        return result

    def revoke(self, partitions: set[Partition], timeout: float) -> None:
        self._call(lambda: self._drop(partitions))
        self._wait_idle(partitions, timeout)

    def forget(self, partitions: set[Partition]) -> None:
        self._call(lambda: self._forget(partitions))

    def drain(self, timeout: float) -> None:
        self._call(lambda: self._drop(None))
        self._wait_idle(None, timeout)

    def quiesce(self, timeout: float) -> None:
        self._call(lambda: setattr(self, "_holding", True))
        self._wait_idle(None, timeout)

    def unquiesce(self) -> None:
        def release() -> None:
            self._holding = False
            self._pump()

        self._call(release)

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def interrupt(self) -> None:
        return None  # submit never blocks: commits happen on the poll loop's interval

    def close(self) -> None:
        # Cancel what still runs (a failing worker drains nothing) so no task is destroyed pending.
        async def cancel_all() -> None:
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=2) if tasks else None

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(5)
            except Exception as exc:  # noqa: BLE001  (closing anyway)
                log.debug("cancelling tasks at close: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, fn: Any) -> Any:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return fut.result(30)

    def _wait_idle(self, partitions: set[Partition] | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._call(lambda: self._busy(partitions)):
                return
            time.sleep(0.02)
        log.warning("%s: messages still running after %.0fs; abandoned uncommitted", self._processor.origin, timeout)

    # -- loop thread ----------------------------------------------------------------------

    def _accept(self, batch: list[Record]) -> None:
        now_ms = time.time() * 1000
        for msg in batch:
            tp = (msg.topic() or "", msg.partition() or 0)
            if tp in self._dropped:
                self.finished += 1
                continue
            offsets = self._offsets.get(tp)
            if offsets is None:
                offsets = self._offsets[tp] = PartitionOffsets()
            offsets.start(msg.offset() or 0)
            if self._retry_topic is not None and tp[0] == self._retry_topic:
                due = hdr.due_ms(msg.headers())
                if due > now_ms:
                    timer = self._loop.call_later((due - now_ms) / 1000, self._due, msg, tp)
                    self._timers.setdefault(tp, set()).add(timer)
                    continue
            self._enqueue(msg)
        self._pump()

    def _due(self, msg: Record, tp: Partition) -> None:
        timers = self._timers.get(tp)
        if timers:
            timers.difference_update([t for t in timers if t.cancelled() or t.when() <= self._loop.time()])
        self._enqueue(msg)
        self._pump()

    def _enqueue(self, msg: Record) -> None:
        if self._by_key:
            key = msg.key()
            if key is not None:
                later = self._waiting.get(key)
                if later is not None:
                    later.append(msg)
                    return
                self._waiting[key] = deque()
        self._ready.append(msg)

    def _pump(self) -> None:
        while self._ready and self._in_flight < self._prefetch and not (self._closing or self._holding):
            msg = self._ready.popleft()
            self._in_flight += 1
            if self._by_key:
                self._running_keys.add(msg.key())
            tp = (msg.topic() or "", msg.partition() or 0)
            task = self._loop.create_task(self._run(msg, tp, self._offsets.get(tp) or PartitionOffsets()))
            self._running.setdefault(tp, set()).add(task)
            self._tasks.add(task)

    async def _run(self, msg: Record, tp: Partition, offsets: PartitionOffsets) -> None:
        # ``offsets`` is the tracker of the assignment this message came with: a message
        # abandoned at a revocation that finishes later marks only that discarded tracker.
        task = asyncio.current_task()
        finished = False
        try:
            if self._is_async:
                failed = await self._processor.handle_async(msg)
            else:
                failed = await self._loop.run_in_executor(self._pool, self._processor.handle, msg)
            self._flood.record(failed)
            finished = True
        except Abandoned:
            pass
        except BaseException as exc:  # noqa: BLE001  (fatal: the poll thread raises it)
            self._error = exc
            self._closing = True
        finally:
            self._in_flight -= 1
            self.finished += 1
            running = self._running.get(tp)
            if task is not None:
                self._tasks.discard(task)
            if running is not None and task is not None:
                running.discard(task)
            if finished:
                offsets.finish(msg.offset() or 0)
                self.processed += 1
            if self._by_key:
                self._running_keys.discard(msg.key())
            if self._by_key and (key := msg.key()) is not None:
                later = self._waiting.get(key)
                if later:
                    self._ready.append(later.popleft())
                else:
                    self._waiting.pop(key, None)
            self._pump()

    def _committable(self) -> dict[Partition, int]:
        result = {}
        for tp, offsets in self._offsets.items():
            next_offset = offsets.committable()
            if next_offset is not None:
                result[tp] = next_offset
        return result

    def _drop(self, partitions: set[Partition] | None) -> None:
        """Forget queued (not started) messages of ``partitions`` (all when None)."""
        if partitions is None:
            self._closing = True
            dropped = len(self._ready) + sum(len(q) for q in self._waiting.values())
            self._ready.clear()
            self._waiting.clear()
            for timers in self._timers.values():
                dropped += len(timers)
                for t in timers:
                    t.cancel()
            self._timers.clear()
            self.finished += dropped
            return
        self._dropped |= partitions
        keep = deque(m for m in self._ready if (m.topic(), m.partition()) not in partitions)
        self.finished += len(self._ready) - len(keep)
        self._ready = keep
        for key, later in list(self._waiting.items()):
            kept = deque(m for m in later if (m.topic(), m.partition()) not in partitions)
            self.finished += len(later) - len(kept)
            self._waiting[key] = kept
        # A key stays marked busy only while one of its messages runs or is ready to run:
        # a key whose next message was just dropped passes its turn on (or is released).
        ready_keys = {m.key() for m in self._ready}
        for key, later in list(self._waiting.items()):
            if key in self._running_keys or key in ready_keys:
                continue
            if later:
                self._ready.append(later.popleft())
            else:
                del self._waiting[key]
        for tp in partitions:
            for t in self._timers.pop(tp, set()):
                t.cancel()
                self.finished += 1

    def _busy(self, partitions: set[Partition] | None) -> bool:
        if partitions is None:
            return self._in_flight > 0
        return any(self._running.get(tp) for tp in partitions)

    def _forget(self, partitions: set[Partition]) -> None:
        for tp in partitions:
            self._offsets.pop(tp, None)
            self._running.pop(tp, None)
        self._dropped -= partitions
