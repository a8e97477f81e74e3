"""Topology: a named DAG of nodes, declared with decorators.

Errors a declaration can show on its own (bad name, duplicate, no input, bad handler) raise
:class:`kstream.errors.DeclarationError` at once; errors that need the whole graph (unknown
``after``, a cycle) raise from :meth:`Topology.validate`, which loading an ``APP`` calls.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel

from kstream.avro import AvroSpec, spec_for
from kstream.batch import BatchSpec, EmitMode
from kstream.codecs import Decoder, decoder_for
from kstream.config import parse_duration
from kstream.context import Context
from kstream.errors import DeclarationError
from kstream.naming import check_name, check_topic, node_topic
from kstream.retry import Retry

Ordering = Literal["key", "none"]
Processing = Literal["at_least_once", "exactly_once"]
OnFailure = Literal["trash", "park_key"]
KeyFunc = Callable[[Any], object]
Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Node:
    """One declared node: its handler and its policies."""

    topology: str
    name: str
    fn: Handler
    after: tuple[str, ...]
    source: str | None
    to: tuple[str, ...]
    key: KeyFunc | None
    prefetch: int
    ordering: Ordering
    retry: Retry | None
    limit: str | None
    on_failure: OnFailure
    processing: Processing | None
    is_async: bool
    takes_context: bool
    payload_type: Any
    decode: Decoder
    batch: BatchSpec | None = None
    avro: AvroSpec | None = None
    """The node's input topic holds Avro of this schema (whoever writes it encodes with it)."""
    to_avro: AvroSpec | None = None
    """Outputs to the ``to=`` topics are Avro of this schema."""

    def input_topic(self, namespace: str) -> str:
        return self.source or node_topic(namespace, self.topology, self.name)


class Topology:
    """A named DAG of nodes. ``import`` of a module that declares one connects to nothing."""

    def __init__(self, name: str, *, processing: Processing = "at_least_once") -> None:
        self.name = check_name(name, what="topology")
        if processing not in ("at_least_once", "exactly_once"):
            raise DeclarationError(f"topology {name!r}: processing must be 'at_least_once' or 'exactly_once'")
        self.processing: Processing = processing
        self._nodes: dict[str, Node] = {}

    def __repr__(self) -> str:
        return f"Topology({self.name!r}, nodes={list(self._nodes)})"

    @property
    def nodes(self) -> Mapping[str, Node]:
        return self._nodes

    def node(
        self,
        name: str,
        *,
        after: str | Iterable[str] | None = None,
        source: str | None = None,
        to: str | Iterable[str] | None = None,
        key: KeyFunc | None = None,
        prefetch: int = 1,
        ordering: Ordering = "key",
        retry: Retry | None = None,
        limit: str | None = None,
        on_failure: OnFailure = "trash",
        processing: Processing | None = None,
        avro: bool | type[BaseModel] | str | None = None,
        to_avro: type[BaseModel] | str | None = None,
        _batch: BatchSpec | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare a node; the decorated function is returned unchanged (still callable in tests).

        ``key`` re-keys every message kstream writes to this node's input: it gets the value the
        upstream node emitted and returns the key (so ``prefetch`` > 1 with ``ordering="key"``
        orders by it). It cannot be combined with ``source`` (others write that topic).

        ``avro``: the input topic holds Avro in the schema registry's wire format (``True``: the
        schema of the payload model; or a model; or an ``.avsc`` file name), decoded into the
        payload annotation; upstream nodes encode with it. ``to_avro``: the schema of outputs to
        the ``to=`` topics. See :mod:`kstream.avro`; settings need ``schema_registry``.
        """
        check_name(name, what="node", node=name)
        if name in self._nodes:
            raise DeclarationError(f"node {name!r} is declared twice in topology {self.name!r}", node=name)
        after_t = _names(after)
        for a in after_t:
            check_name(a, what="after", node=name)
        if not after_t and source is None and _batch is None:
            raise DeclarationError(f"node {name!r} has no input: give it after=... or source=...", node=name)
        if after_t and source is not None:
            raise DeclarationError(f"node {name!r} has both after= and source=: a node reads one input", node=name)
        if source is not None:
            check_topic(source, node=name)
            if key is not None:
                raise DeclarationError(f"node {name!r}: key= cannot re-key a source= topic", node=name)
        to_t = tuple(check_topic(t, node=name) for t in _names(to))
        if key is not None and not callable(key):
            raise DeclarationError(f"node {name!r}: key= must be a function of the payload", node=name)
        if not isinstance(prefetch, int) or prefetch < 1:
            raise DeclarationError(f"node {name!r}: prefetch must be an integer >= 1", node=name)
        if ordering not in ("key", "none"):
            raise DeclarationError(f"node {name!r}: ordering must be 'key' or 'none'", node=name)
        if on_failure not in ("trash", "park_key"):
            raise DeclarationError(f"node {name!r}: on_failure must be 'trash' or 'park_key'", node=name)
        if processing not in (None, "at_least_once", "exactly_once"):
            raise DeclarationError(f"node {name!r}: processing must be 'at_least_once' or 'exactly_once'", node=name)
        if to_avro is not None and not to_t:
            raise DeclarationError(f"node {name!r}: to_avro= describes the to= topics, and there are none", node=name)
        if retry is not None and not isinstance(retry, Retry):
            raise DeclarationError(f"node {name!r}: retry= must be a kstream.Retry", node=name)

        def register(fn: Handler) -> Handler:
            payload_type, takes_context = _signature(fn, name)
            if _batch is not None:  # the entry message's payload is JSON; the handler gets the cursor
                payload_type, takes_context = Any, True
            near = _module_dir(fn)
            in_spec = spec_for(avro, payload_type, node=name, near=near) if avro not in (None, False) else None
            out_spec = spec_for(to_avro, None, node=name, near=near) if to_avro is not None else None
            self._nodes[name] = Node(
                topology=self.name, name=name, fn=fn, after=after_t, source=source, to=to_t, key=key,
                prefetch=prefetch, ordering=ordering, retry=retry, limit=limit, on_failure=on_failure,
                processing=processing,
                is_async=inspect.iscoroutinefunction(fn), takes_context=takes_context,
                payload_type=payload_type, decode=decoder_for(payload_type), batch=_batch,
                avro=in_spec, to_avro=out_spec,
            )
            return fn

        return register

    def batch(
        self,
        name: str,
        *,
        emit: EmitMode = "record",
        every: str | float | None = None,
        after: str | Iterable[str] | None = None,
        to: str | Iterable[str] | None = None,
        retry: Retry | None = None,
        limit: str | None = None,
        processing: Processing | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare a batch node: ``handler(cursor, ctx) -> Page``, one page per message.

        ``emit``: ``"record"`` (one message per item), ``"page"`` (one message per page, a
        list), or N (chunks of N). ``every``: also start a run of the scope ``""`` on this
        schedule (``"10m"``, seconds). Its input is its own topic (entry messages come from
        ``kstream start``, the schedule, or ``after=`` nodes); the key of an entry message is
        the run's scope. See :mod:`kstream.batch`.
        """
        if not (emit in ("record", "page") or (isinstance(emit, int) and not isinstance(emit, bool) and emit > 0)):
            raise DeclarationError(f"node {name!r}: emit must be 'record', 'page' or a positive chunk size", node=name)
        try:
            seconds = parse_duration(every) if isinstance(every, str) else every
        except ValueError as exc:
            raise DeclarationError(f"node {name!r}: every={every!r}: {exc}", node=name) from None
        if seconds is not None and seconds <= 0:
            raise DeclarationError(f"node {name!r}: every must be positive", node=name)
        spec = BatchSpec(emit=emit, every=seconds)
        # Its input is its own topic even without after=: continuations and entries go there.
        declare = self.node(name, after=after, source=None, to=to, retry=retry, limit=limit, processing=processing,
                            _batch=spec)
        return declare

    def validate(self) -> None:
        """Check what needs the whole graph: every ``after`` exists, and there is no cycle."""
        if not self._nodes:
            raise DeclarationError(f"topology {self.name!r} has no nodes")
        for node in self._nodes.values():
            for a in node.after:
                if a not in self._nodes:
                    raise DeclarationError(f"node {node.name!r}: after={a!r} names no node of topology {self.name!r}", node=node.name)
        self.order()

    def order(self) -> list[str]:
        """Node names, every node after all of its ``after`` nodes; raises on a cycle."""
        return dependency_order({n: node.after for n, node in self._nodes.items()},
                                lambda name, cycle: f"node {name!r} is part of a cycle: {cycle}")

    def successors(self, name: str) -> list[Node]:
        return [n for n in self._nodes.values() if name in n.after]

    def get(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise DeclarationError(f"topology {self.name!r} has no node {name!r} (nodes: {', '.join(self._nodes)})", node=name) from None

    def processing_of(self, node: Node) -> Processing:
        return node.processing or self.processing

    def owned_topics(self, namespace: str) -> dict[str, dict[str, str]]:
        """Topics the topology owns besides its nodes' inputs (name -> topic config), created by
        ``topics apply`` with the default partition count. None here; a workflow has its state."""
        return {}


def _names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _module_dir(fn: Handler) -> Path | None:
    try:
        return Path(inspect.getfile(fn)).resolve().parent
    except (TypeError, OSError):
        return None


_UNRESOLVED: Any = object()


def _hint(fn: Handler, param: inspect.Parameter) -> Any:
    """One parameter's annotation, resolved on its own (one bad hint must not spoil the others)."""
    if param.annotation is inspect.Parameter.empty:
        return inspect.Parameter.empty
    probe = types.SimpleNamespace(__annotations__={param.name: param.annotation})
    try:
        return get_type_hints(probe, globalns=getattr(fn, "__globals__", {}))[param.name]
    except Exception:  # noqa: BLE001  (a forward reference that does not resolve)
        return _UNRESOLVED


def _signature(fn: Handler, node: str) -> tuple[Any, bool]:
    """The payload annotation and whether the handler takes a :class:`Context`."""
    if not callable(fn):
        raise DeclarationError(f"node {node!r}: the handler must be a function", node=node)
    if inspect.isasyncgenfunction(fn):
        raise DeclarationError(f"node {node!r}: an async generator cannot be a handler (return a list or use ctx.emit)", node=node)
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise DeclarationError(f"node {node!r}: the handler's first parameter receives the payload", node=node)
    if len(params) > 2:
        raise DeclarationError(f"node {node!r}: a handler takes (payload) or (payload, ctx)", node=node)
    if len(params) == 2 and params[1].kind not in (params[1].POSITIONAL_ONLY, params[1].POSITIONAL_OR_KEYWORD):
        raise DeclarationError(f"node {node!r}: the Context must be the second positional parameter", node=node)
    payload = _hint(fn, params[0])
    if payload is _UNRESOLVED:
        raise DeclarationError(
            f"node {node!r}: cannot resolve the payload annotation {params[0].annotation!r}: "
            "define it at module level or import it at runtime", node=node)
    if len(params) == 2:
        ctx_hint = _hint(fn, params[1])
        if ctx_hint not in (inspect.Parameter.empty, Context, _UNRESOLVED) and params[1].name != "ctx":
            raise DeclarationError(f"node {node!r}: the second parameter must be the Context", node=node)
    return payload, len(params) == 2


def dependency_order(after: Mapping[str, Sequence[str]], cycle_error: Callable[[str, str], str]) -> list[str]:
    """The names of ``after`` (name -> the names it comes after), each after all of those it
    names (unknown ones ignored); a cycle raises :class:`DeclarationError` with
    ``cycle_error(name, "a -> b -> a")``. Used by topologies and workflows."""
    state: dict[str, int] = {}
    result: list[str] = []

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise DeclarationError(cycle_error(name, " -> ".join([*path[path.index(name):], name])), node=name)
        state[name] = 1
        for a in after[name]:
            if a in after:
                visit(a, [*path, name])
        state[name] = 2
        result.append(name)

    for name in after:
        visit(name, [])
    return result
