"""Declaring a workflow: steps that run in parallel where they can, joins, compensations.

A :class:`Workflow` compiles to a :class:`WorkflowTopology`, an ordinary kstream topology named
after the workflow: one exactly-once ``orchestrator`` node (its input is the workflow's inbox)
and one node per step and per compensation, each ``after="orchestrator"``. So ``kstream run``,
``topics apply``, ``graph``, ``lag`` and ``trash`` work on a workflow unchanged, and a step is
an ordinary node: its prefetch, rate limit and Trash apply. Retries of a step are durable
timers of the orchestrator (so the status shows every attempt while a step still retries).

Errors that one declaration shows on its own raise :class:`DeclarationError` at once; those
that need the whole workflow (an unknown ``after`` or ``compensate``, a cycle) raise from
:meth:`Workflow.validate`, which loading an ``APP`` calls. Every message names the step.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_type_hints

from kstream.config import parse_duration
from kstream.context import Context
from kstream.errors import DeclarationError
from kstream.naming import check_name, workflow_state_topic
from kstream.retry import Retry
from kstream.topology import Node, Topology, dependency_order

OnFailure = Literal["compensate", "hold"]
Handler = Callable[..., Any]
ORCHESTRATOR = "orchestrator"
RESERVED = frozenset({ORCHESTRATOR})
DEFAULT_RETRY = Retry(attempts=1)


@dataclass(frozen=True)
class StepResult:
    """What a compensation receives: the step it undoes and what that step returned."""

    workflow_id: str
    step: str
    status: str
    output: Any


@dataclass(frozen=True)
class Spec:
    """One step or compensation: the handler and its policies."""

    name: str
    fn: Handler
    retry: Retry
    is_async: bool
    payload_type: Any
    takes_context: bool
    prefetch: int
    limit: str | None
    after: tuple[str, ...] = ()
    timeout: float | None = None
    compensate: str | None = None
    signal: str | None = None
    compensation: bool = False
    child: Workflow | None = None
    """Set for a step that runs another workflow (:meth:`Workflow.call`)."""


@dataclass
class Workflow:
    """A workflow type. ``deadline``: the whole workflow times out after it (``"1h"``, seconds);
    ``on_failure``: ``"compensate"`` (undo completed steps in reverse order) or ``"hold"``
    (block at the failed step until ``kstream trash replay`` re-runs it)."""

    name: str
    deadline: str | float | None = None
    on_failure: OnFailure = "compensate"
    prefetch: int = 8
    """Default prefetch of step nodes (messages of different workflows in flight at once)."""
    steps: dict[str, Spec] = field(default_factory=dict)
    compensations: dict[str, Spec] = field(default_factory=dict)
    deadline_s: float | None = field(default=None, init=False)
    _topology: WorkflowTopology | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_name(self.name, what="workflow")
        if self.on_failure not in ("compensate", "hold"):
            raise DeclarationError(f"workflow {self.name!r}: on_failure must be 'compensate' or 'hold'")
        self.deadline_s = _seconds(self.deadline, f"workflow {self.name!r}: deadline")

    def step(
        self,
        name: str | None = None,
        *,
        after: str | Iterable[str] | None = None,
        retry: Retry | None = None,
        timeout: str | float | None = None,
        compensate: str | None = None,
        signal: str | None = None,
        prefetch: int | None = None,
        limit: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare a step; the function is returned unchanged (so it can be a step of other
        workflows too). ``after``: one step, or several (a join: it gets ``{step: output}``).
        ``timeout``: the step (all its attempts) times out after it. ``compensate``: the
        compensation that undoes it. ``signal``: the step waits for that signal too."""

        def register(fn: Handler) -> Handler:
            step: str = name or str(getattr(fn, "__name__", ""))
            self._check_new(step)
            after_t = _names(after)
            where = f"workflow {self.name!r}: step {step!r}"
            for a in after_t:
                check_name(a, what="after", node=step)
            if compensate is not None:
                check_name(compensate, what="compensate", node=step)
            if signal is not None:
                check_name(signal, what="signal", node=step)
            self.steps[step] = self._spec(step, fn, retry, prefetch, limit, after=after_t, compensate=compensate,
                                          signal=signal, timeout=_seconds(timeout, f"{where}: timeout"))
            return fn

        return register

    def call(self, name: str, workflow: Workflow, *, after: str | Iterable[str] | None = None,
             timeout: str | float | None = None, compensate: str | None = None) -> None:
        """Run ``workflow`` as step ``name``: it starts with what a step here would get, and the
        step completes with that workflow's output when it completes, or fails when it ends
        otherwise (compensated, cancelled, timed out). The child's id is
        ``{parent id}.{step}.{seq}``; its own retries apply, the step is not retried."""
        if not isinstance(workflow, Workflow):
            raise DeclarationError(f"workflow {self.name!r}: step {name!r}: call() runs a Workflow", node=name)
        if workflow is self:
            raise DeclarationError(f"workflow {self.name!r}: step {name!r}: a workflow cannot call itself", node=name)

        def run(data: Any, ctx: Any) -> Any:
            raise DeclarationError(f"step {name!r} starts workflow {workflow.name!r}: it runs only inside a worker")

        run.__name__ = name
        self.step(name, after=after, timeout=timeout, compensate=compensate, retry=DEFAULT_RETRY)(run)
        self.steps[name] = replace(self.steps[name], child=workflow)

    def compensation(self, name: str, *, retry: Retry | None = None, prefetch: int | None = None,
                     limit: str | None = None) -> Callable[[Handler], Handler]:
        """Declare a compensation ``fn(step: StepResult, ctx)``; steps name it in ``compensate=``."""

        def register(fn: Handler) -> Handler:
            self._check_new(name)
            self.compensations[name] = self._spec(name, fn, retry, prefetch, limit, compensation=True)
            return fn

        return register

    def _check_new(self, name: str) -> None:
        check_name(name, what="step", node=name)
        if name in RESERVED:
            raise DeclarationError(f"workflow {self.name!r}: step {name!r}: the name is reserved", node=name)
        if name in self.steps or name in self.compensations:
            raise DeclarationError(f"workflow {self.name!r}: step {name!r} is declared twice", node=name)
        self._topology = None

    def _spec(self, name: str, fn: Handler, retry: Retry | None, prefetch: int | None, limit: str | None,
              **more: Any) -> Spec:
        where = f"workflow {self.name!r}: step {name!r}"
        if retry is not None and not isinstance(retry, Retry):
            raise DeclarationError(f"{where}: retry= must be a kstream.Retry", node=name)
        pf = self.prefetch if prefetch is None else prefetch
        if not isinstance(pf, int) or pf < 1:
            raise DeclarationError(f"{where}: prefetch must be an integer >= 1", node=name)
        payload_type, takes_context = _signature(fn, where, name)
        return Spec(name=name, fn=fn, retry=retry or DEFAULT_RETRY, is_async=inspect.iscoroutinefunction(fn),
                    payload_type=payload_type, takes_context=takes_context, prefetch=pf, limit=limit, **more)

    # -- the whole workflow ------------------------------------------------------------------

    def validate(self) -> None:
        """Check what needs the whole workflow: ``after`` and ``compensate`` names, cycles."""
        if not self.steps:
            raise DeclarationError(f"workflow {self.name!r} has no steps")
        for s in self.steps.values():
            for a in s.after:
                if a not in self.steps:
                    raise DeclarationError(f"workflow {self.name!r}: step {s.name!r}: after={a!r} names no step", node=s.name)
            if s.compensate is not None and s.compensate not in self.compensations:
                raise DeclarationError(
                    f"workflow {self.name!r}: step {s.name!r}: compensate={s.compensate!r} names no compensation "
                    "(declare it with @wf.compensation)", node=s.name)
        self.order()

    def order(self) -> list[str]:
        """Step names, each after all of its ``after`` steps; raises on a cycle."""
        return dependency_order({n: s.after for n, s in self.steps.items()},
                                lambda name, cycle: f"workflow {self.name!r}: step {name!r} is part of a cycle: {cycle}")

    def sinks(self) -> list[str]:
        """Steps no other step runs after: their outputs are the workflow's output."""
        used = {a for s in self.steps.values() for a in s.after}
        return [n for n in self.order() if n not in used]

    @property
    def topology(self) -> WorkflowTopology:
        """The compiled topology (validated)."""
        if self._topology is None:
            self.validate()
            self._topology = WorkflowTopology(self)
        return self._topology


Engine = Callable[[bytes, Context], Any]


class WorkflowTopology(Topology):
    """A workflow as nodes. The orchestrator's handler needs settings (topics, a producer for
    timers): the composition root gives it with :meth:`bind` before building its worker."""

    def __init__(self, workflow: Workflow) -> None:
        super().__init__(workflow.name, processing="at_least_once")
        self.workflow = workflow
        self.engine: Engine | None = None
        node = Node(topology=self.name, name=ORCHESTRATOR, fn=self._orchestrate, after=(), source=None, to=(), key=None,
                    prefetch=1, ordering="key", retry=None, limit=None, on_failure="trash", processing="exactly_once",
                    is_async=False, takes_context=True, payload_type=bytes, decode=_raw)
        self._nodes[ORCHESTRATOR] = node  # it reads its own inbox: no after= or source= to check
        for spec in [*workflow.steps.values(), *workflow.compensations.values()]:
            # Step nodes are at-least-once: the orchestrator drops duplicate results (step, seq).
            self.node(spec.name, after=ORCHESTRATOR, prefetch=spec.prefetch, limit=spec.limit,
                      processing="at_least_once")(_placeholder(spec.name))

    def bind(self, nodes: Mapping[str, Handler]) -> None:
        """Replace the handlers of nodes by the runtime's (the step wrappers, the orchestrator)."""
        for name, fn in nodes.items():
            old = self._nodes[name]
            self._nodes[name] = Node(**{**{f: getattr(old, f) for f in old.__dataclass_fields__}, "fn": fn,
                                        "is_async": inspect.iscoroutinefunction(fn)})

    def owned_topics(self, namespace: str) -> dict[str, dict[str, str]]:
        return {workflow_state_topic(namespace, self.name): {"cleanup.policy": "compact"}}

    def _orchestrate(self, payload: bytes, ctx: Context) -> Any:
        if self.engine is None:
            raise DeclarationError(f"workflow {self.name!r}: the orchestrator runs only inside a worker (kstream run)")
        return self.engine(payload, ctx)


def _raw(data: bytes | None) -> Any:
    return data


def _placeholder(name: str) -> Handler:
    def step(payload: bytes, ctx: Context) -> None:
        raise DeclarationError(f"step {name!r} runs only inside a worker (kstream run binds it)")

    return step


def _names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _seconds(value: str | float | None, where: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
    except (TypeError, ValueError) as exc:
        raise DeclarationError(f"{where}={value!r}: {exc}") from None
    if seconds <= 0:
        raise DeclarationError(f"{where} must be positive, not {value!r}")
    return seconds


def _signature(fn: Handler, where: str, name: str) -> tuple[Any, bool]:
    """The input annotation and whether the function takes a context (second parameter)."""
    if not callable(fn):
        raise DeclarationError(f"{where}: the handler must be a function", node=name)
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or len(params) > 2 or any(p.kind not in positional for p in params):
        raise DeclarationError(f"{where}: the handler takes (input) or (input, ctx)", node=name)
    hint: Any = Any
    if params[0].annotation is not inspect.Parameter.empty:
        probe = types.SimpleNamespace(__annotations__={"p": params[0].annotation})
        try:
            hint = get_type_hints(probe, globalns=getattr(fn, "__globals__", {}))["p"]
        except Exception:  # noqa: BLE001  (an unresolvable forward reference)
            raise DeclarationError(f"{where}: cannot resolve the input annotation {params[0].annotation!r}", node=name) from None
    return hint, len(params) == 2
