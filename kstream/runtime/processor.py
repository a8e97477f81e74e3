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
from collections.abc import Callable
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
from kstream.retry import NO_RETRY, Retry
from kstream.topology import KeyFunc, Node, Topology
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
    ) -> None:
        self.node = node
        self.topology = topology.name
        self.origin = f"{topology.name}/{node.name}"
        self.routes: list[Route] = [(s.input_topic(namespace), s.key) for s in topology.successors(node.name)]
        self.routes += [(t, None) for t in node.to]
        # Topics of routes that keep the input key, when no route re-keys (the fast path).
        self._plain = [t for t, keyfn in self.routes] if all(k is None for _, k in self.routes) else None
        self._origin_header = hdr.origin_header(topology.name, node.name)
        self._entry_headers = hdr.entry_headers(self._origin_header)
        self.by_name: dict[str, Route] = {n.name: (n.input_topic(namespace), n.key) for n in topology.nodes.values()}
        self.retry: Retry = node.retry or NO_RETRY
        self.log = logging.getLogger(f"kstream.node.{topology.name}.{node.name}")
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

    # -- the two entry points -------------------------------------------------------------

    def handle(self, msg: Record) -> bool:
        """Process one message with a sync handler. Returns True when it went to the Trash.

        Retries wait in place (the partition waits: order holds), or, on a node with a retry
        topic, the message is handed to that topic with a due time and this returns False.
        """
        if self._fast and msg.headers() is None:
            return self._handle_plain(msg)
        if self._parked is not None and self._held_back(msg):
            return False
        return self._handle(msg, self._envelope(msg), None)

    def _handle(self, msg: Record, env: hdr.Envelope | None, failure: Exception | None) -> bool:
        """The general path; ``failure`` is a first attempt's error the fast path already saw."""
        if env is None:
            return True
        fn, takes_context, decode, limiter = self._fn, self.node.takes_context, self.node.decode, self.limiter
        history: list[Attempt] = []
        while True:
            if failure is None:
                ctx = self._context(msg, env, env.attempt + len(history)) if takes_context else None
                try:
                    payload = decode(msg.value())
                    if limiter is not None:
                        limiter.acquire()
                    result = fn(payload, ctx) if ctx is not None else fn(payload)
                    planned = self._plan(msg, env, result, ctx)
                except AccessDenied:
                    raise  # the node's own rights (e.g. of its rate limiter) are missing: stop, not trash
                except Exception as exc:  # noqa: BLE001  (every failure is the message's, not ours)
                    failure = exc
                else:
                    self._send(planned, env)
                    return False
            outcome = self._failed(msg, env, failure, history)
            failure = None
            if isinstance(outcome, bool):
                return outcome
            if self._stop.wait(outcome):
                raise Abandoned(env.message_id) from None

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
        return False

    async def handle_async(self, msg: Record) -> bool:
        """:meth:`handle` for an async handler; ``Retry.timeout`` cancels a hung attempt."""
        if self._parked is not None and self._held_back(msg):
            return False
        env = self._envelope(msg)
        if env is None:
            return True
        fn, takes_context, decode, limiter = self._fn, self.node.takes_context, self.node.decode, self.limiter
        timeout = self.retry.timeout
        history: list[Attempt] = []
        while True:
            ctx = self._context(msg, env, env.attempt + len(history)) if takes_context else None
            try:
                payload = decode(msg.value())
                if limiter is not None:
                    await limiter.acquire_async()
                call = fn(payload, ctx) if ctx is not None else fn(payload)
                result = await (asyncio.wait_for(call, timeout) if timeout else call)
                planned = self._plan(msg, env, result, ctx)
            except AccessDenied:
                raise  # the node's own rights are missing: stop, not trash
            except Exception as exc:  # noqa: BLE001
                outcome = self._failed(msg, env, exc, history)
                if isinstance(outcome, bool):
                    return outcome
                await self._sleep(outcome, env)
                continue
            self._send(planned, env)
            return False

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
            self.log.info("%s rate limited by the service; retrying in %.2fs", env.message_id, exc.retry_after or 1.0)
            return exc.retry_after or 1.0
        history.append(Attempt(datetime.now(UTC), f"{type(exc).__name__}: {exc}"))
        attempt = env.attempt + len(history) - 1
        retryable = not isinstance(exc, Permanent) and isinstance(exc, self.retry.on)
        if retryable and attempt < self.retry.attempts:
            delay = self.retry.delay(attempt)
            self.log.warning("attempt %d of %s failed (%s: %s); retrying in %.2fs%s", attempt, env.message_id,
                             type(exc).__name__, exc, delay, " via the retry topic" if self._retry_topic else "")
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

    def _trash(self, entry: TrashEntry) -> None:
        self.trashed += 1
        self.log.warning("message %s/%d/%d to trash %s: %s: %s", entry.topic, entry.partition, entry.offset,
                         entry.id, entry.error_type, entry.error_message)
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
            data = encode(value)
            for topic, keyfn in routes:
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

    def _send(self, planned: list[Planned], env: hdr.Envelope) -> None:
        if not planned:
            return
        base = env.outgoing(self._origin_header)
        produce, new_id = self._produce, self._ids.header
        for topic, data, key in planned:
            produce(topic, data, key, [new_id(), *base])


def _outputs(result: Any) -> list[Any]:
    """A list or generator is several outputs (a tuple is one JSON array); None is none."""
    if result is None:
        return []
    if isinstance(result, (list, GeneratorType)):
        return list(result)
    return [result]
