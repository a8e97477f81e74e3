"""Tracing through Kafka with OpenTelemetry (the optional extra ``kstream[otel]``).

Each attempt of a message at a node runs in a span named ``{topology}/{node}`` whose parent is
the input's ``traceparent`` header (W3C trace context); the outputs of the attempt carry the
new span's ``traceparent``, so a chain of nodes gives one trace, parent to child. A Trash replay
(``kstream-replay-of``) starts a new trace with a *link* to the original one: the replay is its
own run, and the failed one stays readable as it was.

Without ``opentelemetry-api`` installed :func:`otel_tracing` returns ``None``: the processor
keeps its plain path and nothing of OpenTelemetry is imported (this module imports it only
inside :class:`OtelTracing`). Spans go to the tracer provider given, by default the one the
application configured with the OpenTelemetry SDK. While none is configured (the API alone,
no SDK) no span could be recorded: :meth:`Tracing.active` says so, and the processor then makes
no span at all and keeps its fast path; the ``traceparent`` of the input passes on unchanged, as
with a no-op span. The check is renewed every :data:`RECHECK_EVERY` messages (asking the API
reads the environment, ~1 us), so a provider configured later is used from then on (the cost of
all this is in bench/passthrough.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from kstream.headers import TRACEPARENT, get
from kstream.types import Record

RECHECK_EVERY = 1000
"""Messages between two checks of whether a tracer provider is configured."""


class Tracing(Protocol):
    """Makes the span of one attempt of one message. Called from handler threads (or tasks)."""

    def active(self) -> bool:
        """Whether a span made now could be recorded (cheap: asked per message)."""
        ...

    def span(self, name: str, msg: Record, attempt: int, replay_of: bytes | None) -> AbstractContextManager[bytes | None]:
        """A context manager around the attempt: the span is current inside it (handlers' own
        spans nest under it), an exception escaping it marks the span failed. It yields the
        ``traceparent`` value for the attempt's outputs (``None``: keep the input's)."""
        ...


class OtelTracing:
    """:class:`Tracing` on the OpenTelemetry API."""

    def __init__(self, provider: Any = None) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._given = provider is not None
        self._proxy = trace.ProxyTracerProvider
        self._active = False
        self._countdown = 0
        self._tracer = (provider or trace.get_tracer_provider()).get_tracer("kstream")
        self._propagator = TraceContextTextMapPropagator()
        self._consumer = trace.SpanKind.CONSUMER

    def active(self) -> bool:
        self._countdown -= 1  # handler threads may race here: at worst one check more or less
        if self._countdown > 0:
            return self._active
        self._countdown = RECHECK_EVERY
        # The API hands out its proxy provider until an application sets a real one.
        self._active = self._given or not isinstance(self._trace.get_tracer_provider(), self._proxy)
        return self._active

    @contextmanager
    def span(self, name: str, msg: Record, attempt: int, replay_of: bytes | None) -> Iterator[bytes | None]:
        parent = get(msg.headers(), TRACEPARENT)
        context = self._propagator.extract({TRACEPARENT: parent.decode(errors="replace")}) if parent else None
        links = []
        if replay_of is not None and context is not None:
            original = self._trace.get_current_span(context).get_span_context()
            if original.is_valid:
                links.append(self._trace.Link(original, {"kstream.replay_of": replay_of.decode(errors="replace")}))
            context = None  # a replay is a new run: a new trace, linked to the failed one
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.destination.name": msg.topic() or "",
            "messaging.destination.partition.id": str(msg.partition()),
            "messaging.kafka.message.offset": msg.offset() or 0,
            "kstream.node": name,
            "kstream.attempt": attempt,
        }
        with self._tracer.start_as_current_span(name, context=context, kind=self._consumer, links=links,
                                                attributes=attributes):
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
            value = carrier.get(TRACEPARENT)
            yield value.encode() if value else None


def otel_tracing(provider: Any = None) -> Tracing | None:
    """Tracing through OpenTelemetry if ``opentelemetry-api`` is installed, else ``None``."""
    try:
        return OtelTracing(provider)
    except ImportError:
        return None
