"""Onboarding as a workflow: verify -> provision, billing, crm in parallel -> welcome.

    kstream topics apply examples/onboarding.py:onboarding
    kstream run examples/onboarding.py:onboarding      # the orchestrator and every step
    kstream serve examples/onboarding.py               # POST /workflows/onboarding

provision is undone by ``deprovision`` and billing by ``refund`` when the workflow fails
beyond recovery. crm calls a CRM over HTTP (``$CRM_URL``, :class:`CrmStub` in the demo) that
answers 503 now and then: its 5 attempts absorb that. ``onboarding_held`` runs the same step
functions but holds at a failed step until ``kstream trash replay`` re-runs it.

Sample failures, by the e-mail address: ``...+nocard@`` makes billing fail for good (the
workflow is compensated); ``...+crmdown@`` makes the CRM refuse until the stub is told to
recover (the held workflow waits for a replay). ``$STEP_SLEEP`` (seconds, default 0.2) is
how long each step pretends to work.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel

from kstream import Permanent, Retry, StepResult, Workflow
from kstream.workflows.steps import StepContext


class Signup(BaseModel):
    email: str
    plan: str = "basic"


class Identity(BaseModel):
    email: str
    user_id: str


def _sleep() -> float:
    return float(os.environ.get("STEP_SLEEP", "0.2"))


async def verify(signup: Signup, ctx: StepContext) -> Identity:
    await asyncio.sleep(_sleep())
    return Identity(email=signup.email, user_id=f"u-{ctx.workflow_id[:8]}")


async def provision(identity: Identity, ctx: StepContext) -> dict[str, Any]:
    await asyncio.sleep(_sleep())
    return {"account": f"acct-{identity.user_id}"}


async def billing(identity: Identity, ctx: StepContext) -> dict[str, Any]:
    await asyncio.sleep(_sleep())
    if "+nocard@" in identity.email:
        raise Permanent("card declined")
    return {"invoice": f"inv-{identity.user_id}", "amount": 10}


async def crm(identity: Identity, ctx: StepContext) -> None:
    await asyncio.sleep(_sleep())
    url = os.environ.get("CRM_URL")
    if url:  # the idempotency key makes the CRM create the contact once, however often we call
        await asyncio.to_thread(_post, f"{url}/contacts", {"email": identity.email}, ctx.idempotency_key)


async def welcome(results: dict[str, Any], ctx: StepContext) -> str:
    await asyncio.sleep(_sleep())
    return f"welcome mail sent for {results['provision']['account']}"


async def deprovision(step: StepResult, ctx: StepContext) -> None:
    await asyncio.sleep(_sleep())


async def refund(step: StepResult, ctx: StepContext) -> None:
    await asyncio.sleep(_sleep())


def _post(url: str, body: dict[str, Any], key: str) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Idempotency-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{exc.code} from the CRM") from None


def declare(name: str, on_failure: str) -> Workflow:
    """One workflow type from the step functions above (they are shared by both types)."""
    wf = Workflow(name, deadline="1h", on_failure=on_failure)  # type: ignore[arg-type]
    wf.step(retry=Retry(attempts=1), timeout="10s")(verify)
    wf.step(after="verify", retry=Retry(attempts=3, backoff=0.2), timeout="20s", compensate="deprovision")(provision)
    wf.step(after="verify", retry=Retry(attempts=2, backoff=0.2), timeout="30s", compensate="refund")(billing)
    wf.step(after="verify", retry=Retry(attempts=5, backoff=0.2, max_backoff=1), timeout="15s")(crm)
    wf.step(after=("provision", "billing", "crm"))(welcome)
    wf.compensation("deprovision", retry=Retry(attempts=3, backoff=0.2))(deprovision)
    wf.compensation("refund", retry=Retry(attempts=10, backoff=0.2))(refund)
    return wf


onboarding = declare("onboarding", "compensate")
onboarding_held = declare("onboarding_held", "hold")


class CrmStub:
    """A local CRM: ``POST /contacts`` creates a contact once per Idempotency-Key. Every
    ``flaky``-th request answers 503 if it is the first for its key (the step's retry then
    gets through), and addresses with ``+crmdown@`` get 503 until :meth:`recover` (after
    which their next call, e.g. a Trash replay's single attempt, succeeds)."""

    def __init__(self, *, flaky: int = 3) -> None:
        self.flaky, self.requests, self.failures = flaky, 0, 0
        self.contacts: dict[str, str] = {}
        self.tried: set[str] = set()
        self.down = True
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status = stub.handle(body.get("email", ""), self.headers.get("Idempotency-Key", ""))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def handle(self, email: str, key: str) -> int:
        with self._lock:
            self.requests += 1
            first = key not in self.tried
            self.tried.add(key)
            if (self.down and "+crmdown@" in email) or (first and self.flaky and self.requests % self.flaky == 0):
                self.failures += 1
                return 503
            self.contacts.setdefault(key, email)
            return 201

    def recover(self) -> None:
        self.down = False

    def __enter__(self) -> CrmStub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
