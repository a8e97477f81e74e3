"""Faust agents as kstream nodes: move a Faust app to kstream one agent at a time.

:func:`agent_node` declares a node whose handler is an existing Faust agent's function. Each
message is handed to the agent as a stream of one value, and what the agent ``yield``s becomes
the node's outputs. Around it, kstream does what it does for any node: decoding, ``retry=``,
the Trash with the original message and the agent's error, key order, a consumer group of its
own. The Faust app is not started; the agent's topic only tells the value type::

    import faust
    app = faust.App("shop", broker="kafka://...")

    class Order(faust.Record, serializer="json"):
        id: str
        qty: int

    @app.agent(app.topic("orders", value_type=Order))
    async def score(stream):
        async for order in stream:
            yield {"id": order.id, "points": order.qty * 10}

    topology = Topology("shop")
    agent_node(topology, "score", score, source="orders", to="scores", retry=Retry(attempts=3))

What runs unchanged: an agent written as ``async for value in stream:`` that yields its
results (or returns none). The value is the JSON payload turned into the topic's
``faust.Record`` type (or left a dict); a yielded Record is sent as its fields (``asdict``).
What does not: stream operators (``group_by``, ``take``, ``events()``), tables, and sends to
other Faust topics from inside the agent (they need the Faust app running): keep such agents
in Faust, and bridge instead: kstream's ``to=`` and ``source=`` topics carry plain JSON, which a
Faust topic with ``value_serializer="json"`` reads and writes.

Needs the ``kstream[faust]`` extra (faust-streaming).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from kstream.errors import DeclarationError
from kstream.retry import Retry
from kstream.topology import Handler, KeyFunc, Ordering, Topology


def agent_node(
    topology: Topology,
    name: str,
    agent: Any,
    *,
    after: str | Iterable[str] | None = None,
    source: str | None = None,
    to: str | Iterable[str] | None = None,
    key: KeyFunc | None = None,
    prefetch: int = 1,
    ordering: Ordering = "key",
    retry: Retry | None = None,
    limit: str | None = None,
) -> Handler:
    """Declare node ``name`` of ``topology`` running the Faust ``agent`` (``@app.agent(...)``) on
    each message; the other arguments are :meth:`Topology.node`'s. Returns the node's handler."""
    fun = getattr(agent, "fun", None)
    if fun is None or not (inspect.isasyncgenfunction(fun) or inspect.iscoroutinefunction(fun)):
        raise DeclarationError(f"node {name!r}: {agent!r} is not a Faust agent (decorate it with @app.agent)", node=name)
    to_value = _value_type(agent)

    async def handler(payload: Any) -> list[Any]:
        stream = _one(to_value(payload))
        if inspect.isasyncgenfunction(fun):
            return [_plain(out) async for out in fun(stream) if out is not None]
        await fun(stream)
        return []

    handler.__name__ = handler.__qualname__ = getattr(fun, "__name__", name)
    handler.__doc__ = getattr(fun, "__doc__", None)
    return topology.node(name, after=after, source=source, to=to, key=key, prefetch=prefetch, ordering=ordering,
                         retry=retry, limit=limit)(handler)


async def _one(value: Any) -> AsyncIterator[Any]:
    yield value


def _value_type(agent: Any) -> Callable[[Any], Any]:
    """How a JSON payload becomes what the agent's topic would give it: its Record, or as is."""
    value_type = getattr(getattr(agent, "channel", None), "value_type", None)
    from_data = getattr(value_type, "from_data", None)
    if from_data is None:
        return lambda payload: payload

    def to_record(payload: Any) -> Any:
        return from_data(payload) if isinstance(payload, dict) else payload

    return to_record


def _plain(value: Any) -> Any:
    """A yielded Faust Record as its fields (kstream encodes dicts as JSON); the rest as is."""
    asdict = getattr(value, "asdict", None)
    return asdict() if callable(asdict) and not isinstance(value, dict) else value
