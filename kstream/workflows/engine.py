"""The orchestrator at run time: states in memory, loaded from the state topic, and durable timers.

It is the handler of the workflow's exactly-once ``orchestrator`` node: for one inbox event it
calls :func:`kstream.workflows.decide.decide` and returns the new state record, the step
commands and any Trash entries as outputs, which the worker commits in one transaction with
the event's offset. So a crash repeats a decision whole or not at all.

Loading: an event whose offset is not the one after the last event this process decided on
that partition may mean someone else decided in between (the partition moved away and back) or
this process restarted: the partition's states are read again from the state topic
(``read_committed``, so exactly what was committed with the inbox offsets) before deciding. A
gap can also be a transaction marker (a child workflow's orchestrator replies in its
transaction), while this process's own latest decisions are still in its open transaction: so
a loaded state replaces the one in memory only when it is newer (every decision bumps
``version``), never an older committed one over a decision not yet committed.

Timers: a heap per process, rebuilt from the states; a due timer is produced to the inbox as a
``timer`` event and decided like any other (the state says whether it still counts).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kstream import headers as hdr
from kstream.codecs import from_json, to_json
from kstream.context import Context, Emit, Raw
from kstream.errors import DecodeError
from kstream.kafka.port import Producer, TopicReader, latest_by_key
from kstream.naming import node_topic, workflow_state_topic
from kstream.trash import TrashCodec, TrashEntry
from kstream.types import Attempt
from kstream.workflows.decide import Dispatch, ToTrash, decide
from kstream.workflows.declare import ORCHESTRATOR, Workflow, WorkflowTopology
from kstream.workflows.state import WorkflowState
from kstream.workflows.steps import child_handler, step_handler

log = logging.getLogger("kstream.workflows")

REFIRE_MS = 5000
"""A fired timer the state still holds after this long is fired again (its event was lost)."""


class Orchestrator:
    """The ``orchestrator`` node's handler. Called on the worker's poll thread only; the timer
    thread only reads states and produces timer events."""

    def __init__(self, wf: Workflow, *, namespace: str, trash_topic: str, reader: TopicReader,
                 producer: Callable[[], Producer], stop: threading.Event,
                 clock: Callable[[], float] = time.time, load_timeout: float = 60.0) -> None:
        self.wf = wf
        self.inbox = node_topic(namespace, wf.name, ORCHESTRATOR)
        self.state_topic = workflow_state_topic(namespace, wf.name)
        self._trash_topic = trash_topic
        self._namespace = namespace
        self._reader = reader
        self._make_producer = producer
        self._stop = stop
        self._clock = clock
        self._load_timeout = load_timeout
        self._codec = TrashCodec()
        self.states: dict[str, WorkflowState] = {}
        self._last: dict[int, int] = {}
        self._heap: list[tuple[int, str, str, int]] = []  # (fire at, workflow, timer, due)
        self._scheduled: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._timer_thread: threading.Thread | None = None
        self.decided = 0

    def __call__(self, payload: bytes, ctx: Context) -> list[Any]:
        if self._timer_thread is None:
            self._timer_thread = threading.Thread(target=self._timers, name=f"kstream-timers-{self.wf.name}", daemon=True)
            self._timer_thread.start()
        if self._last.get(ctx.partition) != ctx.offset - 1:
            self._load(ctx.partition)
        self._last[ctx.partition] = ctx.offset
        try:
            event = from_json(payload)
        except ValueError as exc:
            raise DecodeError(f"inbox event is not JSON: {exc}", reason="decode") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise DecodeError("inbox event is not an object with a type", reason="validation")
        wid = (ctx.key or b"").decode(errors="replace")
        if not wid:
            raise DecodeError("inbox event has no key (the workflow id)", reason="validation")
        event.setdefault("id", wid)
        now = int(self._clock() * 1000)
        state = self.states.get(wid)
        new, commands = decide(self.wf, state, event, now)
        self.decided += 1
        if new is None:
            log.warning("%s: %s event for unknown workflow %s ignored", self.wf.name, event["type"], wid)
            return []
        if new is state:
            return []
        self.states[wid] = new
        key = wid.encode()
        record = {**new.to_dict(), "partition": ctx.partition}
        out: list[Any] = [Raw(self.state_topic, key, to_json(record).encode())]
        for cmd in commands:
            if isinstance(cmd, Dispatch):
                out.append(Emit(cmd.payload, key=wid, to=cmd.node))
            elif isinstance(cmd, ToTrash):
                out.append(Raw(self._trash_topic, *self._trash(wid, cmd)))
            else:
                out.append(Raw(cmd.topic, cmd.key.encode(), to_json(cmd.event).encode()))
        self._schedule(new)
        return out

    # -- states ----------------------------------------------------------------------------

    def _load(self, partition: int) -> None:
        records = self._reader.read_compacted(self.state_topic, self._load_timeout)
        loaded = 0
        for key, rec in latest_by_key(records).items():
            value = rec.value()
            if value is None:
                continue
            data = from_json(value)
            if data.get("partition") != partition:
                continue
            state = WorkflowState.from_dict(data)
            wid = key.decode()
            known = self.states.get(wid)
            if known is not None and known.version >= state.version:
                continue  # decided here since (maybe not committed yet): newer than what was committed
            self.states[wid] = state
            self._schedule(state)
            loaded += 1
        log.info("%s: loaded %d workflow states of inbox partition %d", self.wf.name, loaded, partition)

    def _trash(self, wid: str, cmd: ToTrash) -> tuple[bytes, bytes]:
        """A Trash entry for the command whose retries ran out; its id is stable per dispatch
        (workflow, node, seq), so a failed replay updates the same entry."""
        now = datetime.now(UTC)
        seq = cmd.payload["seq"]
        entry_id = hashlib.sha1(f"{self.wf.name}/{wid}/{cmd.node}/{seq}".encode(), usedforsecurity=False).hexdigest()[:20]
        entry = TrashEntry(
            id=entry_id, topology=self.wf.name, node=cmd.node, reason="error", error_type="StepFailed",
            error_message=f"{cmd.error} (after {cmd.attempts} attempt{'s' if cmd.attempts != 1 else ''})", traceback="",
            key=wid.encode(), value=to_json(cmd.payload).encode(),
            headers=[(hdr.WORKFLOW, wid.encode()), (hdr.DISCARD_TO, self.inbox.encode())],
            topic=node_topic(self._namespace, self.wf.name, cmd.node), partition=0, offset=0, workflow=wid,
            attempts=(Attempt(now, cmd.error),), first_failure=now, last_failure=now,
        )
        return entry_id.encode(), self._codec.encode(entry)

    # -- timers ----------------------------------------------------------------------------

    def _schedule(self, state: WorkflowState) -> None:
        if not state.timers:
            return
        with self._lock:
            for tid, due in state.timers.items():
                if self._scheduled.get((state.id, tid)) != due:  # each timer once, not once per decision
                    self._scheduled[(state.id, tid)] = due
                    heapq.heappush(self._heap, (due, state.id, tid, due))

    def _timers(self) -> None:
        producer = self._make_producer()
        while not self._stop.wait(0.05):
            now = int(self._clock() * 1000)
            due: list[tuple[int, str, str, int]] = []
            with self._lock:
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap))
            for _, wid, tid, at in due:
                state = self.states.get(wid)
                if state is None or state.timers.get(tid) != at:
                    with self._lock:
                        if self._scheduled.get((wid, tid)) == at:
                            del self._scheduled[(wid, tid)]
                    continue  # decided meanwhile: the timer is gone or was set again
                producer.produce(self.inbox, to_json({"type": "timer", "id": tid}).encode(), wid.encode(),
                                 [(hdr.WORKFLOW, wid.encode())])
                with self._lock:
                    heapq.heappush(self._heap, (now + REFIRE_MS, wid, tid, at))
            producer.poll(0)
            for err in producer.take_errors():
                log.warning("%s: timer event not delivered: %s", self.wf.name, err)
        producer.flush(5.0)


def bind_workflow(topology: WorkflowTopology, *, namespace: str, trash_topic: str, reader: TopicReader,
                  producer: Callable[[], Producer], stop: threading.Event, orchestrator: bool) -> None:
    """Give the workflow's nodes their runtime handlers: the step wrappers (they report to the
    inbox of ``namespace``) and, for a worker of the orchestrator node, a fresh orchestrator."""
    wf = topology.workflow
    inbox = node_topic(namespace, wf.name, ORCHESTRATOR)
    topology.bind({s.name: step_handler(s, inbox) if s.child is None else child_handler(s, s.child, inbox, namespace)
                   for s in [*wf.steps.values(), *wf.compensations.values()]})
    if orchestrator:
        topology.engine = Orchestrator(wf, namespace=namespace, trash_topic=trash_topic, reader=reader,
                                       producer=producer, stop=stop)
