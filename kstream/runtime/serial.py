"""Prefetch 1: one message at a time, in offset order, inline on the worker's own thread.

This is the fast path: the worker thread that polled a batch runs its handlers itself, in a
tight loop with no per-message task, future or lock, and no hand-off to another thread (a
hand-off per batch cost every record a thread wake-up, and under a busy GIL up to a switch
interval). Async handlers run on an event loop owned by this strategy, on the same thread.

While a batch runs long (a slow handler, an in-place retry's backoff, a rate limit), a
:class:`Watchdog` thread calls ``keepalive`` instead: it polls the consumer with every partition
paused (the group sees the worker alive; ``max.poll.interval.ms`` never expires) and commits
what is due. Only one of the two threads uses the consumer at a time: the watchdog starts only
after :data:`KEEPALIVE_AFTER` seconds of one batch, and the worker thread, once the batch is
done, waits for the watchdog's call in progress to return before it polls again. Rebalance
callbacks, and so :meth:`Serial.revoke` / :meth:`Serial.drain`, then run on the watchdog
thread: they ask the batch to stop at the next message and wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from kstream.runtime.flood import FloodGuard
from kstream.runtime.processor import Abandoned, NodeProcessor
from kstream.runtime.strategy import KeepAlive, Partition
from kstream.types import Record

log = logging.getLogger("kstream.worker")

KEEPALIVE_AFTER = 0.5
"""Seconds a batch may run before the watchdog starts polling meanwhile."""
_WATCH_EVERY = KEEPALIVE_AFTER / 4
"""How often the watchdog looks at the clock: no wake-up per batch, ~8 per second per worker."""


class Watchdog:
    """Keeps a worker's group membership alive while its own thread runs a long batch.

    The worker thread calls :meth:`begin` before a batch and :meth:`end` after it: a clock
    store, and one uncontended lock; nothing wakes the watchdog thread. That thread looks every
    :data:`_WATCH_EVERY` seconds; once a batch has run :data:`KEEPALIVE_AFTER` seconds it calls
    ``keepalive`` over and over until the batch ends. An exception ``keepalive`` raises (a
    delivery failure at a commit, a fenced exactly-once worker) is kept, the batch is asked
    to stop (``on_error``), and :meth:`end` raises it on the worker thread.
    """

    def __init__(self, name: str, on_error: Callable[[], None]) -> None:
        self._cond = threading.Condition()
        self._started: float | None = None  # when the running batch began; None: none runs
        self._keepalive: KeepAlive | None = None
        self._active = False  # the watchdog is inside keepalive (it owns the consumer)
        self._error: BaseException | None = None
        self._on_error = on_error
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kstream-{name}-watchdog", daemon=True)
        self._thread.start()

    def begin(self, keepalive: KeepAlive) -> None:
        self._keepalive = keepalive
        self._started = time.monotonic()

    def end(self) -> None:
        """The batch is over: wait until the watchdog let go of the consumer; raise its error."""
        with self._cond:
            self._started = None
            self._cond.notify_all()  # a revoke or drain waiting in wait_idle
            while self._active:
                self._cond.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    @property
    def running(self) -> bool:
        return self._started is not None

    def is_current_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def wait_idle(self, timeout: float) -> bool:
        """From the watchdog thread (a rebalance callback, a stop): wait until the batch ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._started is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        self._closed.set()

    def _run(self) -> None:
        while not self._closed.wait(_WATCH_EVERY):
            started = self._started
            if started is None or time.monotonic() - started < KEEPALIVE_AFTER:
                continue
            with self._cond:
                if self._started is not started or self._keepalive is None:
                    continue  # that batch ended meanwhile
                keepalive, self._active = self._keepalive, True
            try:
                while self._started is started and not self._closed.is_set():
                    keepalive()
            except BaseException as exc:  # noqa: BLE001  (raised on the worker thread by end())
                self._error = exc
                self._on_error()
            finally:
                with self._cond:
                    self._active = False
                    self._cond.notify_all()


class Serial:
    """:class:`kstream.runtime.strategy.Strategy` for prefetch 1."""

    def __init__(self, processor: NodeProcessor, flood: FloodGuard, name: str) -> None:
        self._processor = processor
        self._flood = flood
        self._loop = asyncio.new_event_loop() if processor.node.is_async else None
        self._watchdog = Watchdog(name, self.interrupt)
        self._done: dict[Partition, int] = {}
        self._batch: list[Record] | None = None
        self._yield = False
        self.processed = 0

    def submit(self, batch: list[Record], keepalive: KeepAlive) -> list[Record]:
        self._yield = False
        self._batch = batch
        watchdog = self._watchdog
        watchdog.begin(keepalive)
        try:
            if self._loop is None:
                stopped_at = self._process_sync(batch)
            else:
                stopped_at = self._loop.run_until_complete(self._process_async(batch))
        finally:
            self._batch = None
            watchdog.end()
        # Interrupted by a revocation or a stop: the caller resubmits what it still owns.
        return batch[stopped_at:]

    @property
    def in_flight(self) -> int:
        # Counted from the offsets done, on demand: the hot loop keeps no extra counter.
        batch = self._batch
        if batch is None:
            return 0
        done = dict(self._done)
        return sum(1 for m in batch if (m.offset() or 0) >= done.get((m.topic() or "", m.partition() or 0), 0))

    def full(self) -> bool:
        return False  # submit runs the batch: the worker never holds more than one

    def committable(self) -> dict[Partition, int]:
        return dict(self._done)

    def revoke(self, partitions: set[Partition], timeout: float) -> None:
        self._stop_and_wait(timeout)

    def forget(self, partitions: set[Partition]) -> None:
        for tp in partitions:
            self._done.pop(tp, None)

    def drain(self, timeout: float) -> None:
        self._stop_and_wait(timeout)

    def _stop_and_wait(self, timeout: float) -> None:
        # Called on the worker thread (between batches: nothing runs) or on the watchdog thread
        # (a callback of its keepalive poll, while the worker thread runs the batch).
        if not self._watchdog.running or not self._watchdog.is_current_thread():
            return
        self._yield = True  # finish the message in hand, hand the rest back
        if not self._watchdog.wait_idle(timeout):
            log.warning("%s: a handler still runs after %.0f s; its message is abandoned uncommitted",
                        self._processor.origin, timeout)

    def quiesce(self, timeout: float) -> None:
        return None  # commits happen between batches, or after revoke() stopped the batch

    def unquiesce(self) -> None:
        return None

    def check(self) -> None:
        return None

    def interrupt(self) -> None:
        self._yield = True

    def close(self) -> None:
        self._watchdog.close()
        if self._loop is not None:
            self._loop.close()

    def _process_sync(self, batch: list[Record]) -> int:
        # The hot loop: no per-message allocation beyond the offset entry.
        handle, done, flood = self._processor.handle, self._done, self._flood
        ok = 0
        for i, msg in enumerate(batch):
            if self._yield:
                return self._finish(i, ok)
            try:
                failed = handle(msg)
            except Abandoned:
                return self._finish(i, ok)
            if failed:
                flood.record_ok(ok)
                ok = 0
                flood.record(True)
            else:
                ok += 1
            done[(msg.topic(), msg.partition())] = msg.offset() + 1  # type: ignore[index,operator]
        return self._finish(len(batch), ok)

    def _finish(self, n: int, ok: int) -> int:
        self._flood.record_ok(ok)
        self.processed += n
        return n

    async def _process_async(self, batch: list[Record]) -> int:
        handle, done, flood = self._processor.handle_async, self._done, self._flood
        ok = 0
        for i, msg in enumerate(batch):
            if self._yield:
                return self._finish(i, ok)
            try:
                failed = await handle(msg)
            except Abandoned:
                return self._finish(i, ok)
            if failed:
                flood.record_ok(ok)
                ok = 0
                flood.record(True)
            else:
                ok += 1
            done[(msg.topic(), msg.partition())] = msg.offset() + 1  # type: ignore[index,operator]
        return self._finish(len(batch), ok)
