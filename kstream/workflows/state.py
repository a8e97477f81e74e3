"""A workflow's state: what the orchestrator keeps per workflow id in the compacted ``{ns}.wf.{W}``
topic, and the status document the API serves from it.

Plain dataclasses with explicit JSON mapping: the record is read by the API of another process
(and maybe another version), so its shape is written out here rather than left to pickling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACTIVE = frozenset({"accepted", "running", "blocked", "paused", "compensating", "compensation_failed"})
"""Workflow statuses that are not final."""
FINAL = frozenset({"completed", "failed", "compensated", "cancelled", "timed_out"})


@dataclass
class StepState:
    """One step of one workflow. ``seq`` identifies the current dispatch: results carrying
    another seq are stale (a retry by the step node, a replay of an older Trash entry)."""

    status: str = "pending"  # pending running retrying completed failed timed_out cancelled skipped
    seq: int = 0
    attempts: int = 0
    error: str | None = None
    started: int | None = None
    finished: int | None = None
    output: Any = None
    done: int | None = None
    """Order of completion (1, 2, ...): compensations run in reverse of it."""
    late: bool = False
    """A result arrived after the step had timed out or the workflow had failed: recorded, ignored."""


@dataclass
class CompState:
    """One compensation run for one completed step."""

    name: str
    step: str
    seq: int
    status: str = "running"  # running retrying completed failed
    attempts: int = 1
    error: str | None = None


@dataclass
class WorkflowState:
    id: str
    type: str
    status: str
    input: Any
    started: int
    updated: int
    steps: dict[str, StepState]
    compensations: list[CompState] = field(default_factory=list)
    timers: dict[str, int] = field(default_factory=dict)
    """Timer id (``deadline``, ``timeout:STEP``, ``retry:STEP``, ``compretry:N``) -> due, epoch ms."""
    signals: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    done: int = 0
    cause: str | None = None
    """Why compensation started: ``failed``, ``cancelled`` or ``timed_out`` (the final status)."""
    error: str | None = None
    finished: int | None = None
    output: Any = None
    key_hash: str | None = None
    """Hash of (Idempotency-Key, input) of the start: a start with the key and other input is a conflict."""
    version: int = 0
    """One more per decision: readers that see records twice keep the newest."""
    parent: dict[str, Any] | None = None
    """A workflow started as a step of another: where to report its end (``reply`` topic,
    ``id``, ``step``, ``seq``, ``attempt``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "type": self.type, "status": self.status, "input": self.input,
            "started": self.started, "updated": self.updated,
            "steps": {name: vars(s) for name, s in self.steps.items()},
            "compensations": [vars(c) for c in self.compensations],
            "timers": self.timers, "signals": self.signals, "seq": self.seq, "done": self.done,
            "cause": self.cause, "error": self.error, "finished": self.finished, "output": self.output,
            "key_hash": self.key_hash, "version": self.version, "parent": self.parent,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkflowState:
        return cls(
            id=data["id"], type=data["type"], status=data["status"], input=data.get("input"),
            started=data["started"], updated=data["updated"],
            steps={name: StepState(**s) for name, s in data["steps"].items()},
            compensations=[CompState(**c) for c in data.get("compensations", [])],
            timers=dict(data.get("timers", {})), signals=dict(data.get("signals", {})),
            seq=data.get("seq", 0), done=data.get("done", 0), cause=data.get("cause"), error=data.get("error"),
            finished=data.get("finished"), output=data.get("output"), key_hash=data.get("key_hash"),
            version=data.get("version", 0), parent=data.get("parent"),
        )


def status_document(state: dict[str, Any]) -> dict[str, Any]:
    """The API's view of a state record (as stored: a dict): no internal fields."""
    steps: dict[str, Any] = {}
    for name, s in state["steps"].items():
        doc: dict[str, Any] = {"status": s["status"]}
        if s.get("attempts"):
            doc["attempts"] = s["attempts"]
        if s.get("error"):
            doc["error"] = s["error"]
        if s.get("started") is not None and s.get("finished") is not None:
            doc["duration"] = _duration(s["finished"] - s["started"])
        if s.get("late"):
            doc["late"] = True
        steps[name] = doc
    out: dict[str, Any] = {
        "workflowId": state["id"], "type": state["type"], "status": state["status"],
        "startedAt": _iso(state["started"]), "steps": steps,
        "compensations": [{"name": c["name"], "step": c["step"], "status": c["status"], "attempts": c["attempts"],
                           **({"error": c["error"]} if c.get("error") else {})} for c in state.get("compensations", [])],
    }
    if state.get("finished") is not None:
        out["finishedAt"] = _iso(state["finished"])
    if state.get("error"):
        out["error"] = state["error"]
    if state.get("status") == "completed" and state.get("output") is not None:
        out["output"] = state["output"]
    return out


def _duration(ms: int) -> str:
    return f"{ms / 1000:.1f}s" if ms >= 100 else f"{ms}ms"


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
