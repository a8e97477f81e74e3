"""The output planner: which records a handler's result becomes, and sending them.

Outputs of a message are computed completely (values encoded, keys chosen) before the first
is produced, so a handler, key function or encoder that raises emits nothing and the message
goes to the Trash whole. Records are only *queued* on the producer; the worker flushes before
it commits offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import GeneratorType
from typing import Any

from kstream import headers as hdr
from kstream.codecs import encode, encode_key
from kstream.context import Context, Emit, Raw
from kstream.errors import Permanent
from kstream.kafka.port import Producer
from kstream.metrics import NodeStats
from kstream.topology import KeyFunc, Node, Topology
from kstream.types import HeaderList, Record

Route = tuple[str, KeyFunc | None]
Planned = tuple[str, bytes, bytes | None]


class OutputPlanner:
    """Routes of one node (every successor's input, and ``to=`` topics) and its outputs' headers."""

    def __init__(self, topology: Topology, node: Node, *, namespace: str, producer: Producer,
                 encoders: Mapping[str, Callable[[Any], bytes]] | None, stats: NodeStats | None) -> None:
        self.topology = topology.name
        self.routes: list[Route] = [(s.input_topic(namespace), s.key) for s in topology.successors(node.name)]
        self.routes += [(t, None) for t in node.to]
        self.by_name: dict[str, Route] = {n.name: (n.input_topic(namespace), n.key) for n in topology.nodes.values()}
        # Encoders of topics whose values are not encoded by type (Avro topics, by schema).
        self._encoders = dict(encoders or {})
        # Topics of routes that keep the input key, when no route re-keys (the fast path).
        plain = all(k is None for _, k in self.routes) and not self._encoders
        self.plain: list[str] | None = [t for t, _ in self.routes] if plain else None
        self.origin_header = hdr.origin_header(topology.name, node.name)
        self.entry_headers = hdr.entry_headers(self.origin_header)
        self.ids = hdr.IdGenerator()
        self.produce = producer.produce
        self._stats = stats

    def plan(self, msg: Record, result: Any, ctx: Context | None) -> list[Planned]:
        """Every output record of this message, encoded, before any is produced."""
        if ctx is None:
            if result is None:
                return []
            kind = type(result)
            if self.plain is not None and kind is not list and kind is not Emit and kind is not GeneratorType:
                # The common case: one value, to routes that keep the key.
                data, key = encode(result), msg.key()
                return [(topic, data, key) for topic in self.plain]
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

    def send(self, planned: list[Planned], env: hdr.Envelope, traceparent: bytes | None = None) -> None:
        if not planned:
            return
        base = env.outgoing(self.origin_header)
        if traceparent is not None:  # the outputs' parent is this node's span, not the input's
            base = [h for h in base if h[0] != hdr.TRACEPARENT]
            base.append((hdr.TRACEPARENT, traceparent))
        self.send_with(planned, base)

    def send_with(self, planned: list[Planned], base: HeaderList) -> None:
        """Produce ``planned``, each with a fresh ``kstream-id`` and the headers ``base``."""
        produce, new_id = self.produce, self.ids.header
        for topic, data, key in planned:
            produce(topic, data, key, [new_id(), *base])
        if self._stats is not None:
            self._stats.records_out += len(planned)

    def send_value(self, data: bytes, key: bytes | None, base: HeaderList) -> None:
        """The fast path: one encoded value to every plain route (they keep the key)."""
        produce, new_id = self.produce, self.ids.header
        plain: list[str] = self.plain  # type: ignore[assignment]
        for topic in plain:
            produce(topic, data, key, [new_id(), *base])
        if self._stats is not None:
            self._stats.records_out += len(plain)


def _outputs(result: Any) -> list[Any]:
    """A list or generator is several outputs (a tuple is one JSON array); None is none."""
    if result is None:
        return []
    if isinstance(result, (list, GeneratorType)):
        return list(result)
    return [result]
