"""The orchestrator's core: ``decide(workflow, state, event, now) -> (state, commands)``, pure.

No I/O and no clock of its own: the same state and event give the same answer, so every rule
below is unit-tested without Kafka, and the orchestrator commits the commands, the new state and
the consumed offset in one transaction (a crash repeats the decision, never half of it).

Events (the inbox, keyed by workflow id) are dicts with a ``type``:
``start`` (``input``, ``key_hash``), ``cancel``, ``pause``, ``resume``, ``retry``, ``signal``
(``name``, ``data``), ``timer`` (``id``), ``discarded`` (``command``: a trashed command was
discarded), and results of step nodes: ``completed`` (``output``)
and ``attempt_failed`` (``error``, ``permanent``), each with ``kind`` (``step`` or
``compensation``), ``name``, ``seq`` and ``attempt``.

Rules that make it safe on at-least-once step nodes and a restartable orchestrator:

- A result counts only if its ``seq`` is the current dispatch of that step and the step waits
  for it; anything else (a duplicate, a late result, an older replay) is recorded or ignored.
- A join is dispatched when the last of its ``after`` steps completes: events of one workflow
  are decided one at a time, so that happens exactly once.
- Timers live in the state (``timers``: id -> due); a ``timer`` event fires only the timer the
  state still holds and only once it is due, so early, repeated or stale timer events are no-ops.
"""

from __future__ import annotations

import copy
import hashlib
import random
from dataclasses import dataclass
from typing import Any

from kstream.workflows.declare import Spec, Workflow
from kstream.workflows.state import ACTIVE, FINAL, CompState, StepState, WorkflowState

Event = dict[str, Any]


@dataclass(frozen=True)
class Dispatch:
    """Run node ``node`` (a step or a compensation) with ``payload`` (its command)."""

    node: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class ToTrash:
    """Retries of ``node`` ran out: its command goes to the Trash, where ``kstream trash replay``
    runs it again (the result then carries the same ``seq`` and is accepted)."""

    node: str
    payload: dict[str, Any]
    error: str
    attempts: int


@dataclass(frozen=True)
class Reply:
    """This workflow was a step of another and has ended: report to the parent's inbox."""

    topic: str
    key: str
    event: dict[str, Any]


Command = Dispatch | ToTrash | Reply
RUNNING = ("running", "retrying")


def decide(wf: Workflow, state: WorkflowState | None, event: Event, now: int) -> tuple[WorkflowState | None, list[Command]]:
    """The next state of one workflow and what to do, for one event. ``state`` is not changed."""
    kind = event.get("type")
    if kind == "start":
        if state is not None:
            return state, []  # a repeated start (same id): the first one stands
        return _Decision(wf, _new(wf, event, now), now).started()
    if state is None:
        return None, []
    return _Decision(wf, copy.deepcopy(state), now).apply(event)


def _new(wf: Workflow, event: Event, now: int) -> WorkflowState:
    return WorkflowState(id=str(event["id"]), type=wf.name, status="running", input=event.get("input"),
                         started=int(event.get("at") or now), updated=now,
                         steps={name: StepState() for name in wf.order()}, key_hash=event.get("key_hash"),
                         parent=event.get("parent"))


class _Decision:
    """One decision: mutates its own copy of the state and collects commands."""

    def __init__(self, wf: Workflow, state: WorkflowState, now: int) -> None:
        self.wf, self.s, self.now = wf, state, now
        self.was = state.status
        self.out: list[Command] = []

    def started(self) -> tuple[WorkflowState, list[Command]]:
        if self.wf.deadline_s is not None:
            self.s.timers["deadline"] = self.now + int(self.wf.deadline_s * 1000)
        return self._done()

    def apply(self, event: Event) -> tuple[WorkflowState, list[Command]]:
        kind, s = event.get("type"), self.s
        if kind in ("completed", "attempt_failed"):
            if event.get("kind") == "compensation":
                self._compensation_result(event)
            else:
                self._step_result(event)
        elif kind == "timer":
            self._timer(str(event.get("id")))
        elif kind == "cancel":
            if s.status in ("running", "paused", "blocked", "accepted"):
                self._compensate("cancelled")
        elif kind == "pause":
            if s.status == "running":
                s.status = "paused"
        elif kind == "resume":
            if s.status == "paused":
                s.status = "running"
        elif kind == "signal":
            name = str(event.get("name"))
            if s.status in ACTIVE and name not in s.signals:
                s.signals[name] = event.get("data")
        elif kind == "retry":
            self._retry()
        elif kind == "discarded":
            self._discarded(event.get("command") or {})
        return self._done()

    def _discarded(self, cmd: dict[str, Any]) -> None:
        """``kstream trash discard`` of a failed command: a held workflow gives up on the step
        and compensates; a failed compensation is skipped and the chain goes on."""
        s = self.s
        if cmd.get("kind") == "compensation":
            comp = next((c for c in s.compensations if c.seq == cmd.get("seq") and c.name == cmd.get("name")), None)
            if comp is not None and comp.status == "failed" and s.status == "compensation_failed":
                comp.status, s.status = "discarded", "compensating"
            return
        step = s.steps.get(str(cmd.get("name")))
        if step is not None and step.seq == cmd.get("seq") and step.status == "failed" and s.status == "blocked":
            self._compensate("failed")

    # -- results ---------------------------------------------------------------------------

    def _step_result(self, event: Event) -> None:
        s, name = self.s, str(event.get("name"))
        step = s.steps.get(name)
        if step is None or step.seq != event.get("seq"):
            return  # unknown step or a stale dispatch
        replayed = step.status == "failed" and s.status == "blocked"  # hold mode: trash replay
        if event["type"] == "completed":
            if step.status in RUNNING or replayed:
                self._untime(name)
                step.status, step.output, step.finished, step.error = "completed", event.get("output"), self.now, None
                s.done += 1
                step.done = s.done
                if replayed:
                    step.attempts += 1  # the replay was one more attempt
                    if not any(x.status == "failed" for x in s.steps.values()):
                        s.status, s.error = "running", None
            elif step.status in ("timed_out", "failed", "cancelled"):
                step.late = True
            return
        attempt = int(event.get("attempt") or 0)
        if replayed:  # the replay failed too: back to the Trash, nothing lost
            step.attempts += 1
            step.error = str(event.get("error"))
            self.out.append(ToTrash(name, self._command(name, step), step.error, step.attempts))
            return
        if step.status != "running" or attempt != step.attempts:
            return  # a duplicate report of an attempt already counted
        step.error = str(event.get("error"))
        spec = self.wf.steps[name]
        if not event.get("permanent") and attempt < spec.retry.attempts and s.status in ("running", "paused", "blocked"):
            step.status = "retrying"
            s.timers[f"retry:{name}"] = self.now + _delay(spec, s.id, attempt)
            return
        self._untime(name)
        step.status, step.finished = "failed", self.now
        self.out.append(ToTrash(name, self._command(name, step), step.error, step.attempts))
        self._failed(f"step {name} failed: {step.error}")

    def _compensation_result(self, event: Event) -> None:
        s = self.s
        comp = next((c for c in s.compensations if c.seq == event.get("seq") and c.name == event.get("name")), None)
        if comp is None:
            return
        replayed = comp.status == "failed" and s.status == "compensation_failed"
        if event["type"] == "completed":
            if comp.status in RUNNING or replayed:
                s.timers.pop(f"compretry:{comp.step}", None)
                comp.status, comp.error = "completed", None
                if replayed:
                    comp.attempts += 1
                    s.status = "compensating"
            return
        attempt = int(event.get("attempt") or 0)
        spec = self.wf.compensations[comp.name]
        if replayed:
            comp.attempts += 1
            comp.error = str(event.get("error"))
            self.out.append(ToTrash(comp.name, self._comp_command(comp), comp.error, comp.attempts))
            return
        if comp.status != "running" or attempt != comp.attempts:
            return
        comp.error = str(event.get("error"))
        if not event.get("permanent") and attempt < spec.retry.attempts:
            comp.status = "retrying"
            s.timers[f"compretry:{comp.step}"] = self.now + _delay(spec, s.id, attempt)
            return
        comp.status = "failed"
        s.status = "compensation_failed"
        self.out.append(ToTrash(comp.name, self._comp_command(comp), comp.error, comp.attempts))

    # -- timers ----------------------------------------------------------------------------

    def _timer(self, tid: str) -> None:
        s = self.s
        due = s.timers.get(tid)
        if due is None or due > self.now:
            return
        del s.timers[tid]
        what, _, name = tid.partition(":")
        if what == "deadline":
            if s.status in ("running", "paused", "blocked"):
                s.error = "workflow deadline passed"
                self._compensate("timed_out")
        elif what == "timeout":
            step = s.steps[name]
            if step.status in RUNNING:
                s.timers.pop(f"retry:{name}", None)
                step.status, step.finished = "timed_out", self.now
                step.error = f"timed out after {self.wf.steps[name].timeout:g}s"
                s.done += 1
                step.done = s.done  # it may have had its effect: compensated like a completed step
                self._failed(f"step {name} timed out")
        elif what == "retry":
            step = s.steps[name]
            if step.status == "retrying":
                step.status = "running"
                step.attempts += 1
                self.out.append(Dispatch(name, self._command(name, step)))
        elif what == "compretry":
            comp = next((c for c in s.compensations if c.step == name and c.status == "retrying"), None)
            if comp is not None:
                comp.status = "running"
                comp.attempts += 1
                self.out.append(Dispatch(comp.name, self._comp_command(comp)))

    # -- failure, cancel, retry ------------------------------------------------------------

    def _failed(self, error: str) -> None:
        s = self.s
        if s.status not in ("running", "paused", "blocked"):
            return  # already compensating: a branch failing now needs no undoing
        s.error = error
        if self.wf.on_failure == "hold":
            s.status = "blocked"
        else:
            self._compensate("failed")

    def _compensate(self, cause: str) -> None:
        """Stop: nothing new is dispatched, retries end; what still runs may finish (and is
        then compensated too); completed steps are undone one at a time in reverse order."""
        s = self.s
        s.cause, s.status = cause, "compensating"
        s.timers.pop("deadline", None)
        for name, step in s.steps.items():
            if step.status == "pending":
                step.status = "skipped"
            elif step.status == "retrying":
                self._untime(name)
                step.status = "cancelled"

    def _retry(self) -> None:
        """Operator retry: a blocked workflow re-runs its failed steps (fresh attempts); a
        workflow whose compensation failed re-runs that compensation."""
        s = self.s
        if s.status == "blocked":
            for name, step in s.steps.items():
                if step.status in ("failed", "timed_out"):
                    s.seq += 1
                    step.seq, step.status, step.attempts, step.error, step.started = s.seq, "running", 1, None, self.now
                    step.late = False
                    self._timeout(name)
                    self.out.append(Dispatch(name, self._command(name, step)))
            s.status = "running"
        elif s.status == "compensation_failed":
            for comp in s.compensations:
                if comp.status == "failed":
                    s.seq += 1
                    comp.seq, comp.status, comp.attempts, comp.error = s.seq, "running", 1, None
                    self.out.append(Dispatch(comp.name, self._comp_command(comp)))
            s.status = "compensating"

    # -- moving on ---------------------------------------------------------------------------

    def _done(self) -> tuple[WorkflowState, list[Command]]:
        s = self.s
        if s.status == "running":
            self._dispatch_ready()
        if s.status == "compensating":
            self._next_compensation()
        if s.parent is not None and s.status in FINAL and self.was not in FINAL:
            self.out.append(self._reply(s.parent))
        s.updated = self.now
        s.version += 1
        return s, self.out

    def _reply(self, parent: dict[str, Any]) -> Reply:
        s = self.s
        event: dict[str, Any] = {"kind": "step", "name": parent["step"], "seq": parent["seq"], "attempt": parent.get("attempt", 1)}
        if s.status == "completed":
            event.update(type="completed", output=s.output)
        else:
            event.update(type="attempt_failed", permanent=True,
                         error=f"workflow {s.type} {s.id} ended {s.status}" + (f": {s.error}" if s.error else ""))
        return Reply(str(parent["reply"]), str(parent["id"]), event)

    def _dispatch_ready(self) -> None:
        s = self.s
        if all(step.status == "completed" for step in s.steps.values()):
            s.status, s.finished = "completed", self.now
            s.timers.clear()
            sinks = self.wf.sinks()
            s.output = s.steps[sinks[0]].output if len(sinks) == 1 else {n: s.steps[n].output for n in sinks}
            return
        for name, step in s.steps.items():
            spec = self.wf.steps[name]
            if step.status != "pending" or any(s.steps[a].status != "completed" for a in spec.after):
                continue
            if spec.signal is not None and spec.signal not in s.signals:
                continue
            s.seq += 1
            step.seq, step.status, step.attempts, step.started = s.seq, "running", 1, self.now
            self._timeout(name)
            self.out.append(Dispatch(name, self._command(name, step)))

    def _next_compensation(self) -> None:
        s = self.s
        if any(c.status in RUNNING for c in s.compensations):
            return
        undone = {c.step for c in s.compensations}
        todo = [(step.done or 0, name) for name, step in s.steps.items()
                if step.status in ("completed", "timed_out") and name not in undone and self.wf.steps[name].compensate]
        if todo:
            _, name = max(todo)
            s.seq += 1
            comp = CompState(name=str(self.wf.steps[name].compensate), step=name, seq=s.seq)
            s.compensations.append(comp)
            self.out.append(Dispatch(comp.name, self._comp_command(comp)))
            return
        if any(step.status in RUNNING for step in s.steps.values()):
            return  # a branch still runs: it may complete and need undoing too
        s.status = {"failed": "compensated", "cancelled": "cancelled", "timed_out": "timed_out"}.get(s.cause or "", "compensated")
        s.finished = self.now
        s.timers.clear()

    # -- helpers ---------------------------------------------------------------------------

    def _timeout(self, name: str) -> None:
        timeout = self.wf.steps[name].timeout
        if timeout is not None:
            self.s.timers[f"timeout:{name}"] = self.now + int(timeout * 1000)

    def _untime(self, name: str) -> None:
        self.s.timers.pop(f"timeout:{name}", None)
        self.s.timers.pop(f"retry:{name}", None)

    def _command(self, name: str, step: StepState) -> dict[str, Any]:
        s = self.s
        spec = self.wf.steps[name]
        if not spec.after:
            data = s.input
        elif len(spec.after) == 1:
            data = s.steps[spec.after[0]].output
        else:
            data = {a: s.steps[a].output for a in spec.after}
        cmd: dict[str, Any] = {"workflow": s.id, "kind": "step", "name": name, "seq": step.seq,
                               "attempt": step.attempts, "input": data}
        if spec.signal is not None:
            cmd["signal"] = s.signals.get(spec.signal)
        return cmd

    def _comp_command(self, comp: CompState) -> dict[str, Any]:
        step = self.s.steps[comp.step]
        return {"workflow": self.s.id, "kind": "compensation", "name": comp.name, "seq": comp.seq,
                "attempt": comp.attempts, "step": comp.step, "status": step.status, "input": step.output}


def _delay(spec: Spec, workflow_id: str, attempt: int) -> int:
    """Backoff in ms; the jitter is seeded by the workflow, step and attempt, so a decision
    made again after a crash waits exactly as long."""
    seed = int.from_bytes(hashlib.blake2b(f"{workflow_id}:{spec.name}:{attempt}".encode(), digest_size=8).digest())
    return int(spec.retry.delay(attempt, random.Random(seed)) * 1000)  # noqa: S311  (jitter, not security)
