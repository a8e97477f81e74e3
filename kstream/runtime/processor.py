"""One node's processing of one message: decode, call the handler, emit outputs or trash.

The concerns are pieces of their own, wired here: the output planner
(:mod:`kstream.runtime.outputs`), the retry runner (:mod:`kstream.runtime.retries`), the Trash
writer (:mod:`kstream.runtime.trash_writer`), key parking (:mod:`kstream.runtime.parking`) and
batch paging (:mod:`kstream.runtime.paging`). What the processor keeps is the control flow of
one message, written once, in :meth:`NodeProcessor._flow`:

    envelope (lineage headers, hop limit) -> attempt (decode, rate limit, handler, plan the
    outputs) -> send the outputs; or, on failure, the retry runner's verdict: wait and try
    again, the retry topic, or the Trash.

Two drivers run that flow: :meth:`NodeProcessor._drive` for sync handlers (waits block,
marked open for exactly-once commits by the :class:`CommitGate`) and
:meth:`NodeProcessor._drive_async` for async ones (waits and ``Retry.timeout`` as awaits).
The fast path (:meth:`NodeProcessor._fast`) specialises the first attempt of the common case,
a plain sync handler whose routes keep the key, with headers built straight from the input's
bytes; anything unusual, including any failure, continues in the general flow.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from types import GeneratorType
from typing import Any

from kstream import headers as hdr
from kstream.batch import BatchRunner
from kstream.codecs import encode
from kstream.context import Context, Emit
from kstream.errors import AccessDenied, DecodeError, HopLimitExceeded
from kstream.kafka.port import Producer
from kstream.limits import Limiter
from kstream.metrics import HISTOGRAM_EVERY, NodeStats
from kstream.retry import NO_RETRY
from kstream.runtime.gate import CommitGate
from kstream.runtime.outputs import OutputPlanner, Planned
from kstream.runtime.paging import paged
from kstream.runtime.parking import KeyParking
from kstream.runtime.retries import RetryRunner
from kstream.runtime.trash_writer import TrashWriter
from kstream.topology import Node, Topology
from kstream.tracing import Tracing
from kstream.trash import REASON_HOP_LIMIT, failure_entry
from kstream.types import Attempt, Record

Outcome = tuple[list[Planned], bytes | None]
"""An attempt's planned outputs, and the ``traceparent`` they carry (None: the input's)."""


class Abandoned(Exception):
    """The worker is stopping or lost the partition while the message waited to retry."""


@dataclass(frozen=True, slots=True)
class _Wait:
    """A step of the flow: wait this long, then attempt again."""

    seconds: float


Flow = Generator["int | _Wait", Outcome, bool]
"""The control flow of one message: yields the attempt number to run (the driver sends its
:data:`Outcome` back, or throws its error in) or a :class:`_Wait`; returns True when the message
went to the Trash."""


class NodeProcessor:
    """Processes messages of one node. Used by one thread at a time."""

    def __init__(
        self,
        topology: Topology,
        node: Node,
        *,
        namespace: str,
        producer: Producer,
        trash_topic: str,
        hop_limit: int,
        stop: threading.Event,
        retry_topic: str | None = None,
        limiter: Limiter | None = None,
        batch: BatchRunner | None = None,
        parked: dict[bytes | None, str] | None = None,
        encoders: Mapping[str, Callable[[Any], bytes]] | None = None,
        stats: NodeStats | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.node = node
        self.topology = topology.name
        self.origin = f"{topology.name}/{node.name}"
        self.log = logging.getLogger(f"kstream.node.{topology.name}.{node.name}")
        log_node = {"topology": topology.name, "node": node.name}
        self.stats = stats
        self.outputs = OutputPlanner(topology, node, namespace=namespace, producer=producer, encoders=encoders,
                                     stats=stats)
        self.trash = TrashWriter(trash_topic, producer.produce, self.log, log_node, stats)
        self.parking = (KeyParking(parked, topology=topology.name, node=node.name, trash=self.trash, stats=stats)
                        if node.on_failure == "park_key" else None)
        self.retries = RetryRunner(node.retry or NO_RETRY, topology=topology.name, node=node.name, trash=self.trash,
                                   produce=producer.produce, retry_topic=retry_topic, limiter=limiter, stats=stats,
                                   log=self.log, log_node=log_node,
                                   on_trashed=self.parking.park if self.parking is not None else None)
        self._hop_limit = hop_limit
        self._stop = stop
        self.limiter = limiter
        self.batch = batch
        self._fn: Callable[..., Any] = node.fn if batch is None else paged(batch, node.fn, node.is_async)
        self._tracing = tracing
        self._fast_path = (not node.is_async and not node.takes_context and batch is None and limiter is None
                           and self.outputs.plain is not None and hop_limit > 1 and self.parking is None)
        self.gate = CommitGate()
        """Waits of the sync path (retry backoff, rate limit) open it: the worker may commit meanwhile."""
        if stats is not None:  # counting wraps the two entry points (and needs self.stats): without metrics nothing is paid
            self.handle = self._handle_counted  # type: ignore[method-assign]
            self.handle_async = self._handle_async_counted  # type: ignore[method-assign]

    @property
    def trashed(self) -> int:
        return self.trash.written

    # -- the two entry points -------------------------------------------------------------

    def handle(self, msg: Record) -> bool:
        """Process one message with a sync handler. Returns True when it went to the Trash.

        Retries wait in place (the partition waits: order holds), or, on a node with a retry
        topic, the message is handed to that topic with a due time and this returns False.
        """
        if self._fast_path and (self._tracing is None or not self._tracing.active()):
            return self._fast(msg)
        if self.parking is not None and self.parking.held_back(msg):
            return False
        env = self._envelope(msg)
        return True if env is None else self._drive(msg, env, self._flow(msg, env))

    async def handle_async(self, msg: Record) -> bool:
        """:meth:`handle` for an async handler; ``Retry.timeout`` cancels a hung attempt."""
        if self.parking is not None and self.parking.held_back(msg):
            return False
        env = self._envelope(msg)
        return True if env is None else await self._drive_async(msg, env, self._flow(msg, env))

    def _handle_counted(self, msg: Record) -> bool:
        stats: NodeStats = self.stats  # type: ignore[assignment]
        stats.seen += 1
        if stats.seen % HISTOGRAM_EVERY != 1:  # the histograms sample (kstream.metrics)
            return NodeProcessor.handle(self, msg)
        started = time.time()
        trashed = NodeProcessor.handle(self, msg)
        stats.done(msg, started)
        return trashed

    async def _handle_async_counted(self, msg: Record) -> bool:
        stats: NodeStats = self.stats  # type: ignore[assignment]
        stats.seen += 1
        if stats.seen % HISTOGRAM_EVERY != 1:
            return await NodeProcessor.handle_async(self, msg)
        started = time.time()
        trashed = await NodeProcessor.handle_async(self, msg)
        stats.done(msg, started)
        return trashed

    # -- the control flow, once -----------------------------------------------------------

    def _flow(self, msg: Record, env: hdr.Envelope, failure: Exception | None = None) -> Flow:
        """One message from its first attempt to its outputs, the retry topic or the Trash.
        ``failure`` is a first attempt's error the fast path already saw."""
        history: list[Attempt] = []
        while True:
            if failure is None:
                try:
                    planned, traceparent = yield env.attempt + len(history)
                except AccessDenied:
                    raise  # the node's own rights (e.g. of its rate limiter) are missing: stop, not trash
                except Exception as exc:  # noqa: BLE001  (every failure is the message's, not ours)
                    failure = exc
                else:
                    self.outputs.send(planned, env, traceparent)
                    return False
            outcome = self.retries.failed(msg, env, failure, history)
            failure = None
            if isinstance(outcome, bool):
                return outcome
            yield _Wait(outcome)

    def _drive(self, msg: Record, env: hdr.Envelope, flow: Flow) -> bool:
        """Run ``flow`` with the sync handler: attempts call it, waits block (the gate open)."""
        try:
            step = next(flow)
            while True:
                if type(step) is _Wait:
                    with self.gate.waiting():
                        stopped = self._stop.wait(step.seconds)
                    if stopped:
                        raise Abandoned(env.message_id) from None
                    step = next(flow)
                    continue
                try:
                    outcome = self._attempt(msg, env, step)  # type: ignore[arg-type]
                except Exception as exc:  # noqa: BLE001  (the flow decides)
                    step = flow.throw(exc)
                else:
                    step = flow.send(outcome)
        except StopIteration as done:
            return bool(done.value)
        finally:
            flow.close()

    async def _drive_async(self, msg: Record, env: hdr.Envelope, flow: Flow) -> bool:
        """:meth:`_drive` for an async handler: attempts and waits are awaited."""
        try:
            step = next(flow)
            while True:
                if type(step) is _Wait:
                    await self._sleep(step.seconds, env)
                    step = next(flow)
                    continue
                try:
                    outcome = await self._attempt_async(msg, env, step)  # type: ignore[arg-type]
                except Exception as exc:  # noqa: BLE001  (the flow decides)
                    step = flow.throw(exc)
                else:
                    step = flow.send(outcome)
        except StopIteration as done:
            return bool(done.value)
        finally:
            flow.close()

    # -- the fast path ----------------------------------------------------------------------

    def _fast(self, msg: Record) -> bool:
        """The first attempt of a plain sync handler (no ctx, limiter, batch or parking) whose
        routes keep the key: one value out, headers built from constants (a record without
        headers, from an external producer: a new workflow starts) or straight from the input's
        header bytes (:func:`kstream.headers.lineage`), no intermediate objects. A failure, a
        list or ``Emit`` result, or a message the lineage cannot take continues in the flow."""
        headers = msg.headers()
        if headers is None:
            base = None
        else:
            base = hdr.lineage(headers, self.outputs.origin_header, self._hop_limit)
            if base is None:
                return self._general(msg, None)
        try:
            result = self.node.fn(self.node.decode(msg.value()))
        except Exception as exc:  # noqa: BLE001
            return self._general(msg, exc)
        if result is None:
            return False
        kind = type(result)
        if kind is list or kind is Emit or kind is GeneratorType:
            env = self._envelope(msg)
            assert env is not None
            self.outputs.send(self.outputs.plan(msg, result, None), env)
            return False
        outputs = self.outputs
        if base is None:
            base = [
                (hdr.WORKFLOW, outputs.ids.header()[1]),
                (hdr.PARENT, b"%s/%d/%d" % (msg.topic().encode(), msg.partition(), msg.offset())),  # type: ignore[union-attr,str-format]
                *outputs.entry_headers,
            ]
        outputs.send_value(result if kind is bytes else encode(result), msg.key(), base)
        return False

    def _general(self, msg: Record, failure: Exception | None) -> bool:
        env = self._envelope(msg)
        return True if env is None else self._drive(msg, env, self._flow(msg, env, failure))

    # -- attempts -------------------------------------------------------------------------

    def _attempt(self, msg: Record, env: hdr.Envelope, attempt: int) -> Outcome:
        """One try of the sync handler."""
        if self._tracing is None or not self._tracing.active():
            return self._call(msg, env, attempt), None
        with self._tracing.span(self.origin, msg, attempt, env.replay_of) as traceparent:
            return self._call(msg, env, attempt), traceparent

    def _call(self, msg: Record, env: hdr.Envelope, attempt: int) -> list[Planned]:
        ctx = self._context(msg, env, attempt) if self.node.takes_context else None
        payload = self.node.decode(msg.value())
        if self.limiter is not None:
            self._acquire(self.limiter)
        result = self._fn(payload, ctx) if ctx is not None else self._fn(payload)
        return self.outputs.plan(msg, result, ctx)

    async def _attempt_async(self, msg: Record, env: hdr.Envelope, attempt: int) -> Outcome:
        """One try of the async handler."""
        if self._tracing is None or not self._tracing.active():
            return await self._call_async(msg, env, attempt), None
        with self._tracing.span(self.origin, msg, attempt, env.replay_of) as traceparent:
            return await self._call_async(msg, env, attempt), traceparent

    async def _call_async(self, msg: Record, env: hdr.Envelope, attempt: int) -> list[Planned]:
        ctx = self._context(msg, env, attempt) if self.node.takes_context else None
        payload = self.node.decode(msg.value())
        if self.limiter is not None:
            started = time.monotonic()
            await self.limiter.acquire_async()
            self._waited(time.monotonic() - started)
        call = self._fn(payload, ctx) if ctx is not None else self._fn(payload)
        timeout = self.retries.retry.timeout
        result = await (asyncio.wait_for(call, timeout) if timeout else call)
        return self.outputs.plan(msg, result, ctx)

    def _acquire(self, limiter: Limiter) -> None:
        with self.gate.waiting():  # waiting for a share: the worker may commit meanwhile
            if self.stats is None:
                limiter.acquire()
                return
            started = time.monotonic()
            limiter.acquire()
        self._waited(time.monotonic() - started)

    def _waited(self, seconds: float) -> None:
        # Under a millisecond is the limiter's own bookkeeping, not a wait for the service.
        if self.stats is not None and seconds >= 0.001:
            self.stats.waited(seconds)

    async def _sleep(self, delay: float, env: hdr.Envelope) -> None:
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if self._stop.is_set():
                raise Abandoned(env.message_id)
            await asyncio.sleep(min(left, 0.1))

    # -- pieces ---------------------------------------------------------------------------

    def _envelope(self, msg: Record) -> hdr.Envelope | None:
        """The input's lineage; None when it went to the Trash (a bad header, the hop limit)."""
        headers = msg.headers()
        if headers is None:  # a plain record from an external producer: a new workflow starts
            return hdr.Envelope(f"{msg.topic()}/{msg.partition()}/{msg.offset()}", self.outputs.ids(), 0, 1, [])
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        try:
            env = hdr.read(headers, topic, partition, offset)
        except (ValueError, UnicodeDecodeError) as exc:
            self.trash.write(failure_entry(msg, topology=self.topology, node=self.node.name, workflow=None,
                                           exc=DecodeError(f"bad kstream header: {exc}", reason="decode")))
            return None
        if env.hops >= self._hop_limit:
            over = HopLimitExceeded(f"message passed {env.hops} nodes, over the hop limit of {self._hop_limit}")
            self.trash.write(failure_entry(msg, topology=self.topology, node=self.node.name, exc=over,
                                           workflow=env.workflow, reason=REASON_HOP_LIMIT))
            return None
        if env.workflow is None:
            env.workflow = self.outputs.ids()  # the run starts here: ctx, outputs and trash share this id
        if env.replay_of is not None and self.stats is not None:
            self.stats.replayed += 1
        return env

    def _context(self, msg: Record, env: hdr.Envelope, attempt: int) -> Context:
        return Context(
            key=msg.key(), headers=msg.headers() or [], message_id=env.message_id,
            workflow_id=env.workflow or env.message_id, attempt=attempt,
            topic=msg.topic() or "", partition=msg.partition() or 0, offset=msg.offset() or 0, log=self.log,
        )
