"""Step and compensation nodes: run the user's function for one command, report to the inbox.

A step node makes one attempt per command and reports ``completed`` or ``attempt_failed`` to
the workflow's inbox as its output; the orchestrator decides about retries (durable timers) and
the Trash. A :class:`kstream.RateLimited` error is not an attempt: it is raised on, so the node's
rate limiter slows the service down and the command is tried again in place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from kstream.codecs import from_json, to_json
from kstream.context import Context, Raw
from kstream.errors import DecodeError, Permanent, RateLimited
from kstream.naming import node_topic
from kstream.workflows.declare import ORCHESTRATOR, Spec, StepResult, Workflow


class StepContext:
    """What a step or compensation function gets as its second parameter.

    ``idempotency_key`` is ``"{workflow_id}:{step}"``: the same for every attempt, a crash and a
    replay, so an external service given it performs the effect once.
    """

    __slots__ = ("attempt", "context", "idempotency_key", "log", "seq", "signal", "step", "workflow_id")

    def __init__(self, ctx: Context, cmd: dict[str, Any], log: logging.Logger) -> None:
        self.context = ctx
        self.workflow_id: str = str(cmd["workflow"])
        self.step: str = str(cmd.get("step") or cmd["name"])
        self.seq: int = int(cmd["seq"])
        self.attempt: int = int(cmd.get("attempt") or 1)
        self.signal: Any = cmd.get("signal")
        self.idempotency_key = f"{self.workflow_id}:{cmd['name']}"
        self.log = log


def step_handler(spec: Spec, inbox: str) -> Callable[..., Any]:
    """The node handler of ``spec``: ``(payload: bytes, ctx)`` -> one inbox event."""
    convert = _converter(spec)
    log = logging.getLogger(f"kstream.workflows.{spec.name}")
    kind = "compensation" if spec.compensation else "step"

    def report(ctx: Context, cmd: dict[str, Any], event: dict[str, Any]) -> Raw:
        event.update({"kind": kind, "name": spec.name, "seq": cmd["seq"], "attempt": cmd.get("attempt", 1)})
        return Raw(inbox, str(cmd["workflow"]).encode(), to_json(event).encode())

    def failed(ctx: Context, cmd: dict[str, Any], exc: Exception) -> Raw:
        permanent = isinstance(exc, (Permanent, ValidationError))
        log.warning("%s of workflow %s, attempt %s failed: %s: %s", spec.name, cmd["workflow"], cmd.get("attempt"),
                    type(exc).__name__, exc)
        return report(ctx, cmd, {"type": "attempt_failed", "error": _one_line(exc), "permanent": permanent})

    def done(ctx: Context, cmd: dict[str, Any], result: Any) -> Raw:
        output = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        return report(ctx, cmd, {"type": "completed", "output": output})

    if spec.is_async:
        async def run_async(payload: bytes, ctx: Context) -> Raw:
            cmd = _command(payload)
            try:
                arg = convert(cmd)
                call = spec.fn(arg, StepContext(ctx, cmd, log)) if spec.takes_context else spec.fn(arg)
                result = await (asyncio.wait_for(call, spec.retry.timeout) if spec.retry.timeout else call)
            except RateLimited:
                raise
            except Exception as exc:  # noqa: BLE001  (the attempt failed: reported, the orchestrator decides)
                return failed(ctx, cmd, exc)
            return done(ctx, cmd, result)

        return run_async

    def run(payload: bytes, ctx: Context) -> Raw:
        cmd = _command(payload)
        try:
            arg = convert(cmd)
            result = spec.fn(arg, StepContext(ctx, cmd, log)) if spec.takes_context else spec.fn(arg)
        except RateLimited:
            raise
        except Exception as exc:  # noqa: BLE001  (the attempt failed: reported, the orchestrator decides)
            return failed(ctx, cmd, exc)
        return done(ctx, cmd, result)

    return run


def _command(payload: bytes) -> dict[str, Any]:
    try:
        cmd = from_json(payload)
    except ValueError as exc:
        raise DecodeError(f"step command is not JSON: {exc}", reason="decode") from None
    if not isinstance(cmd, dict) or not {"workflow", "name", "seq"} <= cmd.keys():
        raise DecodeError("step command lacks workflow, name or seq", reason="validation")
    return cmd


def _converter(spec: Spec) -> Callable[[dict[str, Any]], Any]:
    """Turns a command's input into what the function's annotation asks for."""
    hint = spec.payload_type
    if spec.compensation and (hint is StepResult or hint is Any):
        return lambda cmd: StepResult(str(cmd["workflow"]), str(cmd["step"]), str(cmd.get("status")), cmd.get("input"))
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return lambda cmd: hint.model_validate(cmd.get("input"))
    return lambda cmd: cmd.get("input")


def _one_line(exc: BaseException) -> str:
    text = f"{exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300] if not isinstance(exc, TimeoutError) else "attempt timed out"


def child_handler(spec: Spec, child: Workflow, inbox: str, namespace: str) -> Callable[..., Any]:
    """The node handler of a step that runs another workflow: it writes that workflow's start
    (the id derived from the parent's id, step and seq, so a repeated command starts it once);
    the child's orchestrator reports the end to ``inbox``."""
    child_inbox = node_topic(namespace, child.name, ORCHESTRATOR)

    def run(payload: bytes, ctx: Context) -> Raw:
        cmd = _command(payload)
        wid = f"{cmd['workflow']}.{spec.name}.{cmd['seq']}"
        parent = {"reply": inbox, "id": cmd["workflow"], "step": spec.name, "seq": cmd["seq"], "attempt": cmd.get("attempt", 1)}
        event = {"type": "start", "id": wid, "input": cmd.get("input"), "parent": parent, "at": int(time.time() * 1000)}
        return Raw(child_inbox, wid.encode(), to_json(event).encode())

    return run
