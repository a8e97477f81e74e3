"""Batch nodes: page through a source system with a cursor (design.md s.6).

A run starts from an *entry* message on the node's input (``kstream start``, a schedule, an
upstream node); its key is the run's *scope* (no key: the scope ``""``). Each page is one
message: the handler gets ``(cursor, ctx)`` and returns :class:`Page`; the items are emitted,
the new cursor is written to the compacted ``{ns}.cursors`` topic (key
``{topology}/{node}/{scope}``) and a *continuation* message carrying the next cursor goes to
the node's own input, all as outputs of that one message: in exactly-once mode they commit
together with its input offset, so a crash resumes at the last committed page. A failing page
is retried and trashed like any message; replaying it continues the run from its cursor.

Delta sync: when a run completes (``Page.cursor is None``) the scope keeps
``Page.watermark`` (or, if the handler gives none, the cursor the last page was fetched
with) as ``last_cursor``: the next run starts there, and ``ctx.last_cursor`` shows it.
``kstream cursors reset`` clears it for a full resync. An entry message for a scope whose run
is still in progress is skipped (logged), so two runs of one scope never overlap.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from kstream.codecs import AvroCodec, from_json, to_json
from kstream.context import Context, Emit, Raw
from kstream.errors import WrongOutputType
from kstream.kafka.port import ReadProgress, TopicFollower, TopicReader, latest_by_key
from kstream.schemas import schema_path

log = logging.getLogger("kstream.batch")

EmitMode = Literal["record", "page"] | int
CONTINUATION = "kstream_batch"
"""Key of a continuation message's JSON payload: ``{"kstream_batch": {...}, "params": ...}``."""


@dataclass(frozen=True)
class Page:
    """One page from the source: its items and the cursor of the next page (None: last page).

    ``watermark``, on the last page, is where the next (delta) run should start.
    """

    items: Sequence[Any]
    cursor: Any = None
    watermark: Any = None


@dataclass(frozen=True)
class BatchSpec:
    emit: EmitMode = "record"
    every: float | None = None
    """Seconds between scheduled runs (of the scope ``""``), or None."""


@dataclass(frozen=True)
class CursorState:
    topology: str
    node: str
    scope: str
    run: str | None = None
    cursor: Any = None
    last_run: str | None = None
    last_cursor: Any = None
    pages: int = 0
    items: int = 0
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    completed: datetime | None = None

    @property
    def key(self) -> str:
        return cursor_key(self.topology, self.node, self.scope)


def cursor_key(topology: str, node: str, scope: str) -> str:
    return f"{topology}/{node}/{scope}"


class CursorCodec:
    def __init__(self) -> None:
        self._avro = AvroCodec(schema_path("cursor.avsc"))

    def encode(self, state: CursorState) -> bytes:
        return self._avro.encode({
            "topology": state.topology, "node": state.node, "scope": state.scope, "run": state.run,
            "cursor": _json(state.cursor), "last_run": state.last_run, "last_cursor": _json(state.last_cursor),
            "pages": state.pages, "items": state.items, "updated": state.updated, "completed": state.completed,
        })

    def decode(self, data: bytes) -> CursorState:
        rec = self._avro.decode(data)
        return CursorState(
            topology=rec["topology"], node=rec["node"], scope=rec["scope"], run=rec["run"],
            cursor=_unjson(rec["cursor"]), last_run=rec["last_run"], last_cursor=_unjson(rec["last_cursor"]),
            pages=rec["pages"], items=rec["items"], updated=rec["updated"], completed=rec["completed"],
        )


def _json(value: Any) -> str | None:
    return None if value is None else to_json(value)


def _unjson(text: str | None) -> Any:
    return None if text is None else from_json(text)


class CursorCache:
    """This worker's view of its node's cursors: loaded from the topic, updated as it writes.

    Scopes are message keys, so one scope's messages all reach the same worker: the cache is
    authoritative for the scopes this worker owns. Thread-safe.
    """

    def __init__(self, states: Iterable[CursorState] = ()) -> None:
        self._lock = threading.Lock()
        self._states = {s.scope: s for s in states}

    def get(self, scope: str) -> CursorState | None:
        with self._lock:
            return self._states.get(scope)

    def put(self, state: CursorState) -> None:
        with self._lock:
            self._states[state.scope] = state

    def refresh(self, scope: str, fresh: CursorState | None, reset: datetime | None) -> None:
        """Take ``scope``'s state as read from the topic (``fresh``) unless this worker wrote
        something newer (its latest writes may not be visible yet); drop it when the topic holds
        a reset (``kstream cursors reset``: a tombstone, written at ``reset``) newer than this
        worker's last write."""
        with self._lock:
            mine = self._states.get(scope)
            if reset is not None and (mine is None or mine.updated < reset):
                self._states.pop(scope, None)
            elif fresh is not None and (mine is None or mine.updated <= fresh.updated):
                self._states[scope] = fresh


def read_cursors(reader: TopicReader, topic: str, *, topology: str | None = None, node: str | None = None,
                 timeout: float = 30.0, progress: ReadProgress | None = None) -> list[CursorState]:
    """Current cursor states on the compacted topic (latest per key, tombstones dropped)."""
    codec = CursorCodec()
    # keys are topology/node/scope: other topologies' and nodes' records are skipped undecoded
    prefix = b""
    if topology is not None:
        prefix = (cursor_key(topology, node, "") if node is not None else f"{topology}/").encode()
    latest = latest_by_key(reader.read_compacted(topic, timeout, progress))
    states = [codec.decode(v) for k, r in latest.items() if k.startswith(prefix) and (v := r.value()) is not None]
    return [s for s in states if (topology is None or s.topology == topology) and (node is None or s.node == node)]


Lookup = Callable[[str], tuple[CursorState | None, datetime | None]]
"""A scope's state on the cursors topic, and when it was reset if its latest record is a tombstone."""


class CursorView:
    """The cursors of one batch node as its worker sees them on the topic: read once (at the
    first lookup), then followed (:class:`kstream.kafka.port.TopicFollower`), so a lookup reads
    only what was added since, however many scopes the topic holds. Only this node's records are
    kept, undecoded until a scope is looked up. Thread-safe.

    What another writer commits (``kstream cursors set/reset``) is seen by the next lookup once
    the broker has it, as a fresh read would see it; while a transaction is open on a partition
    (an exactly-once worker's), what follows it there comes with a later lookup.
    """

    def __init__(self, follower: TopicFollower, *, topology: str, node: str, timeout: float = 30.0) -> None:
        self._follower = follower
        self._prefix = cursor_key(topology, node, "").encode()
        self._timeout = timeout
        self._codec = CursorCodec()
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[bytes | None, int, int | None]] = {}
        """scope -> (latest value, its timestamp in ms, its partition)."""

    def lookup(self, scope: str) -> tuple[CursorState | None, datetime | None]:
        """:data:`Lookup`. Raises :class:`kstream.errors.BrokerError` when the topic cannot be
        read to its end within the timeout (the message is then retried like any failure)."""
        with self._lock:
            for rec in self._follower.read_new(self._timeout):
                key = rec.key()
                if key is not None and key.startswith(self._prefix):
                    seen, at, part = key[len(self._prefix):].decode(), rec.timestamp()[1], rec.partition()
                    # A key written under an earlier partitioner may sit on two partitions: there
                    # the newest record wins, in one partition the later offset (as latest_by_key).
                    known = self._latest.get(seen)
                    if known is None or known[2] == part or at >= known[1]:
                        self._latest[seen] = (rec.value(), at, part)
            value, stamp, _ = self._latest.get(scope, (None, None, None))
        if value is not None:
            return self._codec.decode(value), None
        return None, (datetime.fromtimestamp(stamp / 1000, UTC) if stamp is not None else None)

    def close(self) -> None:
        with self._lock:
            self._follower.close()


class BatchRunner:
    """Turns one message of a batch node into a page fetch, its outputs and cursor records."""

    def __init__(self, *, topology: str, node: str, spec: BatchSpec, cursors_topic: str,
                 load: Lookup) -> None:
        self.topology = topology
        self.node = node
        self.spec = spec
        self.cache = CursorCache()
        self._topic = cursors_topic
        self._codec = CursorCodec()
        self._load = load
        self._loaded: set[str] = set()

    def begin(self, payload: Any, ctx: Context) -> tuple[str, Any, int, Any] | None:
        """(run id, cursor, page number, params) for this message, or None to skip it."""
        scope = ctx.key.decode() if ctx.key else ""
        cont = payload.get(CONTINUATION) if isinstance(payload, dict) else None
        if cont is None or scope not in self._loaded:  # a new run, or a scope new to this worker
            self.cache.refresh(scope, *self._load(scope))
            self._loaded.add(scope)
        current = self.cache.get(scope)
        ctx.scope = scope
        ctx.last_cursor = current.last_cursor if current else None
        if cont is not None:
            run, number = str(cont["run"]), int(cont["page"])
            if current is not None and (current.last_run == run or (current.run == run and current.pages >= number)):
                # At-least-once redelivery of a page already done: going on would fork the run.
                log.info("%s/%s: page %d of run %s already done; duplicate skipped", self.topology, self.node, number, run)
                return None
            ctx.params = payload.get("params")
            return run, cont["cursor"], number, ctx.params
        if current is not None and current.run is not None:
            log.warning("%s/%s: a run of scope %r is in progress (run %s); entry message skipped",
                        self.topology, self.node, scope, current.run)
            return None
        ctx.params = payload
        return uuid.uuid4().hex[:16], ctx.last_cursor, 1, payload

    def finish(self, page: Any, ctx: Context, *, run: str, cursor: Any, number: int, params: Any) -> list[Any]:
        """The outputs of one fetched page: items, the cursor record, the continuation."""
        if not isinstance(page, Page):
            raise WrongOutputType(f"a batch handler returns kstream.Page, not {type(page).__name__}")
        scope = ctx.scope or ""
        prev = self.cache.get(scope) or CursorState(self.topology, self.node, scope)
        outputs: list[Any] = self._items(page.items)
        now = datetime.now(UTC)
        # pages/items count the run in progress, or the last run once it completed
        same_run = prev.run == run
        pages, items = (prev.pages if same_run else 0) + 1, (prev.items if same_run else 0) + len(page.items)
        if page.cursor is None:
            last = page.watermark if page.watermark is not None else cursor
            state = replace(prev, run=None, cursor=None, last_run=run, last_cursor=last, pages=pages, items=items,
                            updated=now, completed=now)
        else:
            state = replace(prev, run=run, cursor=page.cursor, pages=pages, items=items, updated=now, completed=None)
            nxt = {CONTINUATION: {"run": run, "cursor": page.cursor, "page": number + 1}, "params": params}
            outputs.append(Emit(nxt, key=ctx.key, to=self.node))
        outputs.append(Raw(self._topic, state.key.encode(), self._codec.encode(state)))
        self.cache.put(state)
        return outputs

    def _items(self, items: Sequence[Any]) -> list[Any]:
        mode = self.spec.emit
        if mode == "record":
            return list(items)
        if mode == "page":
            return [Emit(list(items))] if items else []
        return [Emit(list(items[i:i + mode])) for i in range(0, len(items), mode)]
