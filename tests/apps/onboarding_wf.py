"""The onboarding workflow of the tests, with a scriptable fake of the external services.

verify -> provision, billing, crm in parallel -> welcome (a join); provision is undone by
deprovision, billing by refund. :class:`Services` records every call (step, idempotency key,
start, end) and fails or delays calls as a test asks. Run as an APP (``kstream run
tests/apps/onboarding_wf.py:workflow``) it reads its script from the environment and appends
its calls to ``$WF_CALLS`` (one JSON line per call), for tests that kill the process.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kstream import Retry, StepResult, Workflow
from kstream.workflows.steps import StepContext


@dataclass
class Call:
    step: str
    key: str
    start: float
    end: float = 0.0
    attempt: int = 1


@dataclass
class Services:
    """``fail[step]``: how many calls fail before one succeeds (-1: all); ``delay[step]``:
    seconds, or a function of the workflow id."""

    fail: dict[str, int] = field(default_factory=dict)
    delay: dict[str, float | Callable[[str], float]] = field(default_factory=dict)
    error: str = "503 Service Unavailable"
    calls: list[Call] = field(default_factory=list)
    log: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def call(self, step: str, ctx: StepContext) -> None:
        call = Call(step, ctx.idempotency_key, time.time(), attempt=ctx.attempt)
        delay = self.delay.get(step, 0.0)
        seconds = delay(ctx.workflow_id) if callable(delay) else delay
        if seconds:
            await asyncio.sleep(seconds)
        call.end = time.time()
        with self._lock:
            self.calls.append(call)
            failing = self.fail.get(step, 0)
            if failing != 0:
                self.fail[step] = failing - 1 if failing > 0 else -1
            if self.log:
                with open(self.log, "a") as f:
                    f.write(json.dumps(vars(call)) + "\n")
        if failing != 0:
            raise RuntimeError(self.error)

    def of(self, step: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.step == step]


def make(services: Services, *, name: str = "onboarding", on_failure: str = "compensate",
         timeout: float | None = None, deadline: str | None = None) -> Workflow:
    wf = Workflow(name, on_failure=on_failure, deadline=deadline)  # type: ignore[arg-type]
    fast = dict(backoff=0.05, max_backoff=0.2, jitter=0)

    @wf.step(retry=Retry(attempts=1))
    async def verify(signup: dict, ctx: StepContext) -> dict:
        await services.call("verify", ctx)
        return {"user": signup.get("email")}

    @wf.step(after="verify", retry=Retry(attempts=3, **fast), compensate="deprovision")
    async def provision(identity: dict, ctx: StepContext) -> dict:
        await services.call("provision", ctx)
        return {"account": identity["user"]}

    @wf.step(after="verify", retry=Retry(attempts=2, **fast), compensate="refund", timeout=timeout)
    async def billing(identity: dict, ctx: StepContext) -> dict:
        await services.call("billing", ctx)
        return {"paid": 10}

    @wf.step(after="verify", retry=Retry(attempts=3, **fast))
    async def crm(identity: dict, ctx: StepContext) -> None:
        await services.call("crm", ctx)

    @wf.step(after=("provision", "billing", "crm"))
    async def welcome(results: dict, ctx: StepContext) -> str:
        await services.call("welcome", ctx)
        return f"welcome {results['provision']['account']}"

    @wf.compensation("deprovision", retry=Retry(attempts=2, **fast))
    async def deprovision(step: StepResult, ctx: StepContext) -> None:
        await services.call("deprovision", ctx)

    @wf.compensation("refund", retry=Retry(attempts=2, **fast))
    async def refund(step: StepResult, ctx: StepContext) -> None:
        await services.call("refund", ctx)

    return wf


def _from_env() -> Services:
    services = Services(log=os.environ.get("WF_CALLS"))
    if os.environ.get("WF_RANDOM_DELAY"):
        high = float(os.environ["WF_RANDOM_DELAY"])
        for step in ("provision", "billing", "crm"):
            services.delay[step] = lambda wid, high=high: random.uniform(0, high)
    return services


workflow = make(_from_env())
