"""One node's processing of one message: decode, call the handler, emit outputs or trash.

Outputs of a message are computed completely (values encoded, keys chosen) before the first
is produced, so a handler, key function or encoder that raises emits nothing and the message
goes to the Trash whole. The processor only *queues* records on the producer; the worker
flushes before it commits offsets.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from types import GeneratorType
from typing import Any

from kstream import headers as hdr
from kstream.batch import BatchRunner
from kstream.codecs import encode, encode_key
from kstream.context import Context, Emit, Raw
from kstream.errors import AccessDenied, DecodeError, Permanent, RateLimited
from kstream.kafka.port import Producer
from kstream.limits import Limiter
from kstream.metrics import HISTOGRAM_EVERY, NodeStats
from kstream.retry import NO_RETRY, Retry
from kstream.runtime.gate import CommitGate
from kstream.topology import KeyFunc, Node, Topology
from kstream.tracing import Tracing
from kstream.trash import REASON_HOP_LIMIT, REASON_PARKED, TrashCodec, TrashEntry, failure_entry
from kstream.types import Attempt, Record

Route = tuple[str, KeyFunc | None]
Planned = tuple[str, bytes, bytes | None]


class HopLimitExceeded(Permanent):
    """A message passed more nodes than ``hop_limit``: most likely a loop."""


class Abandoned(Exception):
    """The worker is stopping or lost the partition while the message waited to retry."""


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
        self.routes: list[Route] = [(s.input_topic(namespace), s.key) for s in topology.successors(node.name)]
        self.routes += [(t, None) for t in node.to]
        # Encoders of topics whose values are not encoded by type (Avro topics, by schema).
        self._encoders = dict(encoders or {})
        # Topics of routes that keep the input key, when no route re-keys (the fast path).
        plain = all(k is None for _, k in self.routes) and not self._encoders
        self._plain = [t for t, keyfn in self.routes] if plain else None
        self._origin_header = hdr.origin_header(topology.name, node.name)
        self._entry_headers = hdr.entry_headers(self._origin_header)
        self.by_name: dict[str, Route] = {n.name: (n.input_topic(namespace), n.key) for n in topology.nodes.values()}
        self.retry: Retry = node.retry or NO_RETRY
        self.log = logging.getLogger(f"kstream.node.{topology.name}.{node.name}")
        self._log_node = {"topology": topology.name, "node": node.name}
        self._producer = producer
        self._produce = producer.produce
        self._trash_topic = trash_topic
        self._trash_codec = TrashCodec()
        self._hop_limit = hop_limit
        self._stop = stop
        self._ids = hdr.IdGenerator()
        self._retry_topic = retry_topic
        self.limiter = limiter
        self.batch = batch
        self._fn: Callable[..., Any] = node.fn
        if batch is not None:
            self._fn = self._batch_page_async if node.is_async else self._batch_page
        self._parked: dict[bytes | None, str] | None = None
        if node.on_failure == "park_key":
            self._parked = dict(parked or {})
        self._fast = (not node.is_async and not node.takes_context and batch is None and limiter is None
                      and self._plain is not None and hop_limit > 1 and self._parked is None)
        self.trashed = 0
        self.gate = CommitGate()
        """Waits of the sync path (retry backoff, rate limit) open it: the worker may commit meanwhile."""
        self.stats = stats
        self._tracing = tracing
        if stats is not None:  # counting wraps the two entry points (and needs self.stats): without metrics nothing is paid
            self.handle = self._handle_counted  # type: ignore[method-assign]
            self.handle_async = self._handle_async_counted  # type: ignore[method-assign]

    # -- the two entry points -------------------------------------------------------------

    def handle(self, msg: Record) -> bool:
        """Process one message with a sync handler. Returns True when it went to the Trash.

        Retries wait in place (the partition waits: order holds), or, on a node with a retry
        topic, the message is handed to that topic with a due time and this returns False.
        """
        if self._fast and msg.headers() is None and (self._tracing is None or not self._tracing.active()):
            return self._handle_plain(msg)
        if self._parked is not None and self._held_back(msg):
            return False
        return self._handle(msg, self._envelope(msg), None)

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

    def _handle(self, msg: Record, env: hdr.Envelope | None, failure: Exception | None) -> bool:
        """The general path; ``failure`` is a first attempt's error the fast path already saw."""
        if env is None:
            return True
        history: list[Attempt] = []
        while True:
            if failure is None:
                try:
                    planned, traceparent = self._attempt(msg, env, env.attempt + len(history))
                except AccessDenied:
                    raise  # the node's own rights (e.g. of its rate limiter) are missing: stop, not trash
                except Exception as exc:  # noqa: BLE001  (every failure is the message's, not ours)
                    failure = exc
                else:
                    self._send(planned, env, traceparent)
                    return False
            outcome = self._failed(msg, env, failure, history)
            failure = None
            if isinstance(outcome, bool):
                return outcome
            with self.gate.waiting():
                stopped = self._stop.wait(outcome)
            if stopped:
                raise Abandoned(env.message_id) from None

    def _attempt(self, msg: Record, env: hdr.Envelope, attempt: int) -> tuple[list[Planned], bytes | None]:
        """One try of the handler: its planned outputs, and the ``traceparent`` they carry
        (``None``: the input's, unchanged)."""
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
        return self._plan(msg, env, result, ctx)

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

    def _handle_plain(self, msg: Record) -> bool:
        """The hot path: a record without headers (from an external producer) into a plain sync
        handler (no ctx, limiter or batch) whose routes keep the key: one value out, headers
        from constants, no intermediate objects. Anything unusual takes the general path."""
        try:
            result = self.node.fn(self.node.decode(msg.value()))
        except Exception as exc:  # noqa: BLE001
            return self._handle(msg, self._envelope(msg), exc)
        if result is None:
            return False
        kind = type(result)
        if kind is list or kind is Emit or kind is GeneratorType:
            env = self._envelope(msg)
            assert env is not None
            self._send(self._plan(msg, env, result, None), env)
            return False
        data = result if kind is bytes else encode(result)
        key = msg.key()
        new_id = self._ids.header
        base = [
            (hdr.WORKFLOW, new_id()[1]),
            (hdr.PARENT, b"%s/%d/%d" % (msg.topic().encode(), msg.partition(), msg.offset())),  # type: ignore[union-attr,str-format]
            *self._entry_headers,
        ]
        produce = self._produce
        for topic in self._plain:  # type: ignore[union-attr]
            produce(topic, data, key, [new_id(), *base])
        if self.stats is not None:
            self.stats.records_out += len(self._plain)  # type: ignore[arg-type]
        return False

    async def handle_async(self, msg: Record) -> bool:
        """:meth:`handle` for an async handler; ``Retry.timeout`` cancels a hung attempt."""
        if self._parked is not None and self._held_back(msg):
            return False
        env = self._envelope(msg)
        if env is None:
            return True
        history: list[Attempt] = []
        while True:
            attempt = env.attempt + len(history)
            try:
                if self._tracing is None or not self._tracing.active():
                    planned, traceparent = await self._call_async(msg, env, attempt), None
                else:
                    with self._tracing.span(self.origin, msg, attempt, env.replay_of) as traceparent:
                        planned = await self._call_async(msg, env, attempt)
            except AccessDenied:
                raise  # the node's own rights are missing: stop, not trash
            except Exception as exc:  # noqa: BLE001
                outcome = self._failed(msg, env, exc, history)
                if isinstance(outcome, bool):
                    return outcome
                await self._sleep(outcome, env)
                continue
            self._send(planned, env, traceparent)
            return False

    async def _call_async(self, msg: Record, env: hdr.Envelope, attempt: int) -> list[Planned]:
        ctx = self._context(msg, env, attempt) if self.node.takes_context else None
        payload = self.node.decode(msg.value())
        if self.limiter is not None:
            started = time.monotonic()
            await self.limiter.acquire_async()
            self._waited(time.monotonic() - started)
        call = self._fn(payload, ctx) if ctx is not None else self._fn(payload)
        timeout = self.retry.timeout
        result = await (asyncio.wait_for(call, timeout) if timeout else call)
        return self._plan(msg, env, result, ctx)

    async def _sleep(self, delay: float, env: hdr.Envelope) -> None:
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if self._stop.is_set():
                raise Abandoned(env.message_id)
            await asyncio.sleep(min(left, 0.1))

    def _held_back(self, msg: Record) -> bool:
        """Key parking: while a message of this key waits in the Trash, later ones of the key
        go there too ("parked behind" it), in order, instead of overtaking it. The replay of the
        blocking entry, or the release of its parked messages when it is discarded, lets the
        key flow again. True when ``msg`` was parked."""
        assert self._parked is not None
        key = msg.key()
        blocker = self._parked.get(key)
        if blocker is None:
            return False
        headers = msg.headers()
        lets_go = hdr.get(headers, hdr.REPLAY_OF) or b"", hdr.get(headers, hdr.RELEASE_OF) or b""
        if blocker.encode() in lets_go:
            del self._parked[key]
            return False
        entry = failure_entry(msg, topology=self.topology, node=self.node.name, reason=REASON_PARKED,
                              exc=Permanent(f"parked behind {blocker}"), workflow=hdr.get_str(headers, hdr.WORKFLOW))
        self._trash(replace(entry, error_type="Parked", parked_behind=blocker))
        if self.stats is not None:
            self.stats.parked += 1
        return True

    def _batch_page(self, payload: Any, ctx: Context) -> Any:
        assert self.batch is not None
        begun = self.batch.begin(payload, ctx)
        if begun is None:
            return None
        run, cursor, number, params = begun
        return self.batch.finish(self.node.fn(cursor, ctx), ctx, run=run, cursor=cursor, number=number, params=params)

    async def _batch_page_async(self, payload: Any, ctx: Context) -> Any:
        assert self.batch is not None
        begun = self.batch.begin(payload, ctx)
        if begun is None:
            return None
        run, cursor, number, params = begun
        return self.batch.finish(await self.node.fn(cursor, ctx), ctx, run=run, cursor=cursor, number=number, params=params)

    # -- pieces ---------------------------------------------------------------------------

    def _envelope(self, msg: Record) -> hdr.Envelope | None:
        headers = msg.headers()
        if headers is None:  # a plain record from an external producer: a new workflow starts
            return hdr.Envelope(f"{msg.topic()}/{msg.partition()}/{msg.offset()}", self._ids(), 0, 1, [])
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        try:
            env = hdr.read(headers, topic, partition, offset)
        except (ValueError, UnicodeDecodeError) as exc:
            self._trash(failure_entry(msg, topology=self.topology, node=self.node.name, workflow=None,
                                      exc=DecodeError(f"bad kstream header: {exc}", reason="decode")))
            return None
        if env.hops >= self._hop_limit:
            over = HopLimitExceeded(f"message passed {env.hops} nodes, over the hop limit of {self._hop_limit}")
            self._trash(failure_entry(msg, topology=self.topology, node=self.node.name, exc=over,
                                      workflow=env.workflow, reason=REASON_HOP_LIMIT))
            return None
        if env.workflow is None:
            env.workflow = self._ids()  # the run starts here: ctx, outputs and trash share this id
        if env.replay_of is not None and self.stats is not None:
            self.stats.replayed += 1
        return env

    def _context(self, msg: Record, env: hdr.Envelope, attempt: int) -> Context:
        return Context(
            key=msg.key(), headers=msg.headers() or [], message_id=env.message_id,
            workflow_id=env.workflow or env.message_id, attempt=attempt,
            topic=msg.topic() or "", partition=msg.partition() or 0, offset=msg.offset() or 0, log=self.log,
        )

    def _failed(self, msg: Record, env: hdr.Envelope, exc: Exception, history: list[Attempt]) -> float | bool:
        """Record a failed attempt. Returns seconds to wait before retrying in place, True when
        the message went to the Trash, False when it went to the retry topic."""
        if isinstance(exc, RateLimited):
            # The service is not failing, it is full: slow the whole service down and try
            # again; this does not count as an attempt.
            if self.limiter is not None:
                self.limiter.slow_down(exc.retry_after)
            if self.stats is not None:
                self.stats.rate_limited += 1
            self.log.info("%s rate limited by the service; retrying in %.2fs", env.message_id, exc.retry_after or 1.0,
                          extra=self._log_message(msg, env))
            return exc.retry_after or 1.0
        history.append(Attempt(datetime.now(UTC), f"{type(exc).__name__}: {exc}"))
        attempt = env.attempt + len(history) - 1
        retryable = not isinstance(exc, Permanent) and isinstance(exc, self.retry.on)
        if retryable and attempt < self.retry.attempts:
            delay = self.retry.delay(attempt)
            if self.stats is not None:
                self.stats.retried += 1
            self.log.warning("attempt %d of %s failed (%s: %s); retrying in %.2fs%s", attempt, env.message_id,
                             type(exc).__name__, exc, delay, " via the retry topic" if self._retry_topic else "",
                             extra=self._log_message(msg, env))
            if self._retry_topic is None:
                return delay
            self._defer(msg, env, attempt, delay, history)
            return False
        entry = failure_entry(msg, topology=self.topology, node=self.node.name, exc=exc, workflow=env.workflow,
                              attempts=(*env.history(), *history))
        self._trash(entry)
        if self._parked is not None:
            self._parked[msg.key()] = entry.id
        return True

    def _defer(self, msg: Record, env: hdr.Envelope, attempt: int, delay: float, history: list[Attempt]) -> None:
        """Hand the message to the node's retry topic, due ``delay`` seconds from now."""
        assert self._retry_topic is not None
        due = int((time.time() + delay) * 1000)
        self._produce(self._retry_topic, msg.value(), msg.key(),
                      hdr.for_retry(msg, attempt=attempt + 1, due_ms=due, history=[*env.history(), *history]))

    def _log_message(self, msg: Record, env: hdr.Envelope | None) -> dict[str, object]:
        """``extra`` of a message-level log line: where the record is and its id, never its payload."""
        return {**self._log_node, "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                "kstream_id": env.message_id if env is not None else None}

    def _trash(self, entry: TrashEntry) -> None:
        self.trashed += 1
        if self.stats is not None:
            self.stats.trashed += 1
        self.log.warning("message %s/%d/%d to trash %s: %s: %s", entry.topic, entry.partition, entry.offset,
                         entry.id, entry.error_type, entry.error_message,
                         extra={**self._log_node, "topic": entry.topic, "partition": entry.partition,
                                "offset": entry.offset, "trash_id": entry.id,
                                "kstream_id": hdr.get_str(entry.headers, hdr.ID) or f"{entry.topic}/{entry.partition}/{entry.offset}"})
        self._produce(self._trash_topic, self._trash_codec.encode(entry), entry.id.encode(), None)

    def _plan(self, msg: Record, env: hdr.Envelope, result: Any, ctx: Context | None) -> list[Planned]:
        """Every output record of this message, encoded, before any is produced."""
        if ctx is None:
            if result is None:
                return []
            kind = type(result)
            if self._plain is not None and kind is not list and kind is not Emit and kind is not GeneratorType:
                # The common case: one value, to routes that keep the key.
                data, key = encode(result), msg.key()
                return [(topic, data, key) for topic in self._plain]
        outputs = _outputs(result)
        if ctx is not None:
            outputs.extend(ctx.take_emitted())
        key = msg.key()
        planned: list[Planned] = []
        for out in outputs:
            if type(out) is Raw:
                planned.append((out.topic, out.value or b"", out.key))
                continue
            if type(out) is Emit:
                routes = self.routes if out.to is None else [self._route(out.to)]
                value, chosen = out.value, out.has_key
            else:
                routes, value, chosen = self.routes, out, False
            data = encode(value) if not self._encoders else b""
            for topic, keyfn in routes:
                if self._encoders:
                    by_schema = self._encoders.get(topic)
                    data = by_schema(value) if by_schema is not None else encode(value)
                if chosen:
                    okey = encode_key(out.key)
                elif keyfn is not None:
                    okey = encode_key(keyfn(value))
                else:
                    okey = key
                planned.append((topic, data, okey))
        return planned

    def _route(self, name: str) -> Route:
        try:
            return self.by_name[name]
        except KeyError:
            raise Permanent(f"Emit(to={name!r}) names no node of topology {self.topology!r}") from None

    def _send(self, planned: list[Planned], env: hdr.Envelope, traceparent: bytes | None = None) -> None:
        if not planned:
            return
        base = env.outgoing(self._origin_header)
        if traceparent is not None:  # the outputs' parent is this node's span, not the input's
            base = [h for h in base if h[0] != hdr.TRACEPARENT]
            base.append((hdr.TRACEPARENT, traceparent))
        produce, new_id = self._produce, self._ids.header
        for topic, data, key in planned:
            produce(topic, data, key, [new_id(), *base])
        if self.stats is not None:
            self.stats.records_out += len(planned)


def _outputs(result: Any) -> list[Any]:
    """A list or generator is several outputs (a tuple is one JSON array); None is none."""
    if result is None:
        return []
    if isinstance(result, (list, GeneratorType)):
        return list(result)
    return [result]
