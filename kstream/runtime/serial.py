"""Prefetch 1: one message at a time, in offset order, on a lane thread.

This is the fast path: a tight loop over the batch with no per-message task, future or lock,
and sync handlers pay nothing for asyncio. The poll thread hands the lane a batch and waits,
calling ``keepalive`` while the batch runs long.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from kstream.runtime.flood import FloodGuard
from kstream.runtime.processor import Abandoned, NodeProcessor
from kstream.runtime.strategy import KeepAlive, Partition
from kstream.types import Record

KEEPALIVE_AFTER = 0.5
"""Seconds a batch may run before the poll thread starts polling meanwhile."""


class _Lane:
    """A daemon thread that runs one job at a time (a hung handler cannot block exit)."""

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


class Serial:
    """:class:`kstream.runtime.strategy.Strategy` for prefetch 1."""

    def __init__(self, processor: NodeProcessor, flood: FloodGuard, name: str) -> None:
        self._processor = processor
        self._flood = flood
        self._lane = _Lane(f"kstream-{name}", use_loop=processor.node.is_async)
        self._process = self._process_async if processor.node.is_async else self._process_sync
        self._done: dict[Partition, int] = {}
        self._busy: Future[Any] | None = None
        self._batch: list[Record] | None = None
        self._yield = False
        self.processed = 0

    def submit(self, batch: list[Record], keepalive: KeepAlive) -> list[Record]:
        self._yield = False
        self._batch = batch
        fut = self._busy = self._lane.submit(lambda: self._process(batch))
        try:
            try:
                stopped_at = int(fut.result(timeout=KEEPALIVE_AFTER))
            except FutureTimeout:
                while not fut.done():
                    keepalive()  # rebalance callbacks (and so revoke/drain) run in here
                stopped_at = int(fut.result())
        finally:
            self._busy = self._batch = None
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
        return False  # submit blocks: the poll thread never holds more than one batch

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
        fut = self._busy
        if fut is not None and not fut.done():
            self._yield = True  # finish the message in hand, hand the rest back
            try:
                fut.result(timeout=timeout)
            except FutureTimeout:
                pass  # abandoned: not marked done, so never committed
            except Exception:  # noqa: BLE001, S110  (the poll thread sees it through submit)
                pass

    def quiesce(self, timeout: float) -> None:
        return None  # commits happen between batches, or after revoke() stopped the batch

    def unquiesce(self) -> None:
        return None

    def check(self) -> None:
        return None

    def interrupt(self) -> None:
        self._yield = True

    def close(self) -> None:
        self._lane.close()

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
