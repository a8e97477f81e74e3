"""The workflows HTTP API (Starlette): start, query, and steer workflows; served by ``kstream serve``.

| request | answer |
|---|---|
| ``POST /workflows/{type}`` (+ ``Idempotency-Key``, ``?id=``) | written (acks=all), then 202 ``{"workflowId", "status"}``; |
|   | the same key again: 200, the same id; the same key with other input: 409 |
| ``GET /workflows/{id}[?wait=10s]`` | the status document; ``wait``: until it changes (or is final), at most so long |
| ``GET /workflows?type=&status=&limit=`` | the newest workflows, as status documents |
| ``POST /workflows/{id}/cancel`` ``/retry`` ``/pause`` ``/resume`` ``/signals/{name}`` | the command is written: 202 |
| ``/healthz``, ``/readyz``, ``/metrics`` | alive; ready once every state topic was read to its end; counters (Prometheus text) |

Bad input gets a 4xx with ``{"error": ...}`` and nothing is written. With a token configured,
every request but ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <token>``.

Statuses come from a view of the state topics kept in memory (a snapshot read to the end, then a
tail). A start puts a provisional ``accepted`` entry in it, so a GET right after the POST finds
the workflow before the orchestrator has decided anything.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from kstream.codecs import from_json
from kstream.config import parse_duration
from kstream.errors import KstreamError
from kstream.kafka.confluent import KafkaAckProducer, KafkaConsumer, KafkaTopicReader
from kstream.naming import node_topic, workflow_state_topic
from kstream.workflows.client import StateView, command_event, event_headers, is_final, key_hash, start_event, workflow_id
from kstream.workflows.declare import ORCHESTRATOR, Workflow
from kstream.workflows.state import status_document

log = logging.getLogger("kstream.api")
MAX_WAIT = 60.0


@dataclass
class Kafka:
    """What the API needs from Kafka, built by the caller (the composition root)."""

    producer: KafkaAckProducer
    reader: KafkaTopicReader
    tail: Callable[[], KafkaConsumer]
    namespace: str


@dataclass
class _Pending:
    """A start accepted by this process and maybe not decided yet."""

    state: dict[str, Any]
    written: asyncio.Future[str | None]


@dataclass
class Api:
    workflows: dict[str, Workflow]
    kafka: Kafka
    token: str | None = None
    view: StateView = field(default_factory=StateView)
    ready: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    pending: dict[str, _Pending] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    # -- Kafka side (threads) ----------------------------------------------------------------

    def start_threads(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._poll_producer, name="kstream-api-producer", daemon=True),
                   threading.Thread(target=self._follow, name="kstream-api-view", daemon=True)]
        for t in threads:
            t.start()
        return threads

    def _poll_producer(self) -> None:
        while not self.stop.is_set():
            self.kafka.producer.poll(0.01)
        self.kafka.producer.flush(10.0)

    def _follow(self) -> None:
        topics = [workflow_state_topic(self.kafka.namespace, name) for name in self.workflows]
        try:
            for topic in topics:  # the snapshot: not ready before every state topic was read to its end
                self.view.feed(self.kafka.reader.read_compacted(topic, 120.0))
        except KstreamError as exc:
            log.error("reading the workflow states failed: %s; not ready", exc)
            return
        self.ready.set()
        log.info("workflow view ready: %d workflows", len(self.view))
        consumer = self.kafka.tail()
        consumer.subscribe(topics, lambda parts: None, lambda parts: None)
        try:
            while not self.stop.is_set():
                records = consumer.consume(500, 0.1)
                if records:
                    self.view.feed(records)
        finally:
            consumer.close()

    # -- HTTP side ---------------------------------------------------------------------------

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def state(self, wid: str) -> dict[str, Any] | None:
        found = self.view.get(wid)
        if found is not None:
            self.pending.pop(wid, None)
            return found
        pending = self.pending.get(wid)
        return pending.state if pending is not None else None

    async def write(self, workflow_type: str, wid: str, value: bytes) -> str | None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()

        def settle(error: str | None) -> None:
            if not done.done():
                done.set_result(error)

        def on_ack(error: str | None) -> None:
            loop.call_soon_threadsafe(settle, error)

        self.kafka.producer.send(node_topic(self.kafka.namespace, workflow_type, ORCHESTRATOR), value, wid.encode(),
                                 event_headers(wid), on_ack)
        return await done


def create_app(workflows: Sequence[Workflow], kafka: Kafka, *, token: str | None = None) -> Starlette:
    """The API for ``workflows``; Kafka threads run while the app's lifespan does."""
    api = Api({wf.name: wf for wf in workflows}, kafka, token or None)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        threads = api.start_threads()
        try:
            yield
        finally:
            api.stop.set()
            for t in threads:
                t.join(15.0)

    routes = [
        Route("/healthz", lambda r: JSONResponse({"status": "ok"})),
        Route("/readyz", lambda r: _readyz(api)),
        Route("/metrics", lambda r: _metrics(api)),
        Route("/workflows", _guard(api, _list), methods=["GET"]),
        Route("/workflows/{wid}", _guard(api, _get), methods=["GET"]),
        Route("/workflows/{type}", _guard(api, _start), methods=["POST"]),
        Route("/workflows/{wid}/signals/{name}", _guard(api, _signal), methods=["POST"]),
        Route("/workflows/{wid}/{command}", _guard(api, _command), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.api = api
    return app


Endpoint = Callable[[Api, Request], Any]


def _guard(api: Api, endpoint: Endpoint) -> Callable[[Request], Any]:
    """Bearer token check (constant time) and one JSON error shape for bad requests."""
    expected = f"Bearer {api.token}".encode() if api.token else None

    async def handle(request: Request) -> Response:
        api.count("requests")
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _error(401, "missing or wrong bearer token")
        try:
            response: Response = await endpoint(api, request)
            return response
        except _BadRequest as exc:
            return _error(exc.status, str(exc))

    return handle


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request, *, empty: Any) -> Any:
    body = await request.body()
    if not body.strip():
        return empty
    try:
        return from_json(body)
    except ValueError as exc:
        raise _BadRequest(400, f"the body is not JSON: {exc}") from None


async def _start(api: Api, request: Request) -> Response:
    workflow_type = request.path_params["type"]
    wf = api.workflows.get(workflow_type)
    if wf is None:
        raise _BadRequest(404, f"no workflow type {workflow_type!r} (types: {', '.join(sorted(api.workflows))})")
    data = await _json_body(request, empty=None)
    _validate_input(wf, data)
    key = request.headers.get("idempotency-key") or None
    wid = request.query_params.get("id") or workflow_id(workflow_type, key)
    if len(wid) > 200:
        raise _BadRequest(400, "the workflow id is longer than 200 characters")
    digest = key_hash(key, data)
    existing = api.state(wid)
    if existing is not None:
        if existing.get("type") != workflow_type or (digest is not None and existing.get("key_hash") != digest):
            raise _BadRequest(409, f"workflow {wid} exists with other input (Idempotency-Key {key!r} was used before)")
        pending = api.pending.get(wid)
        if pending is not None and (error := await asyncio.shield(pending.written)) is not None:
            raise _BadRequest(503, f"the start could not be stored: {error}")
        api.count("starts_repeated")
        return JSONResponse({"workflowId": wid, "status": existing.get("status", "accepted")}, status_code=200)
    now = int(time.time() * 1000)
    provisional = {"id": wid, "type": workflow_type, "status": "accepted", "started": now, "steps": {
        name: {"status": "pending"} for name in wf.order()}, "compensations": [], "key_hash": digest, "version": 0}
    written: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    api.pending[wid] = _Pending(provisional, written)
    error = await api.write(workflow_type, wid, start_event(wid, data, key_hash=digest, at=now))
    written.set_result(error)
    if error is not None:
        api.pending.pop(wid, None)
        api.count("starts_failed")
        raise _BadRequest(503, f"the start could not be stored: {error}")
    api.count("starts")
    return JSONResponse({"workflowId": wid, "status": "accepted"}, status_code=202)


def _validate_input(wf: Workflow, data: Any) -> None:
    for spec in wf.steps.values():
        hint = spec.payload_type
        if not spec.after and isinstance(hint, type) and issubclass(hint, BaseModel):
            try:
                hint.model_validate(data)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "input"
                raise _BadRequest(422, f"invalid input for step {spec.name}: {where}: {first['msg']}") from None


async def _get(api: Api, request: Request) -> Response:
    wid = request.path_params["wid"]
    state = api.state(wid)
    if state is None:
        raise _BadRequest(404, f"no workflow {wid}")
    wait = request.query_params.get("wait")
    if wait and not is_final(state):
        try:
            seconds = min(MAX_WAIT, parse_duration(wait) if not wait.replace(".", "", 1).isdigit() else float(wait))
        except ValueError as exc:
            raise _BadRequest(400, f"wait={wait!r}: {exc}") from None
        deadline = time.monotonic() + seconds
        version = state.get("version", 0)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            now = api.state(wid)
            if now is not None and (now.get("version", 0) != version or is_final(now)):
                state = now
                break
    return JSONResponse(status_document(state))


async def _list(api: Api, request: Request) -> Response:
    try:
        limit = max(1, min(1000, int(request.query_params.get("limit", "100"))))
    except ValueError:
        raise _BadRequest(400, "limit must be an integer") from None
    found = api.view.select(workflow_type=request.query_params.get("type"), status=request.query_params.get("status"),
                            limit=limit)
    return JSONResponse({"workflows": [status_document(s) for s in found]})


async def _command(api: Api, request: Request) -> Response:
    command = request.path_params["command"]
    if command not in ("cancel", "retry", "pause", "resume"):
        raise _BadRequest(404, f"no command {command!r}: use cancel, retry, pause, resume or signals/NAME")
    return await _send(api, request.path_params["wid"], command_event(command), command)


async def _signal(api: Api, request: Request) -> Response:
    data = await _json_body(request, empty=None)
    name = request.path_params["name"]
    return await _send(api, request.path_params["wid"], command_event("signal", name=name, data=data), f"signal {name}")


async def _send(api: Api, wid: str, value: bytes, what: str) -> Response:
    state = api.state(wid)
    if state is None:
        raise _BadRequest(404, f"no workflow {wid}")
    error = await api.write(str(state["type"]), wid, value)
    if error is not None:
        raise _BadRequest(503, f"{what} could not be stored: {error}")
    return JSONResponse({"workflowId": wid, "command": what}, status_code=202)


def _readyz(api: Api) -> Response:
    if api.ready.is_set():
        return JSONResponse({"status": "ready", "workflows": len(api.view)})
    return JSONResponse({"status": "loading workflow states"}, status_code=503)


def _metrics(api: Api) -> Response:
    """Prometheus text format, this process's counters only."""
    lines = []
    for name, value in sorted(api.counters.items()):
        lines += [f"# TYPE kstream_api_{name}_total counter", f"kstream_api_{name}_total {value}"]
    lines += ["# TYPE kstream_api_workflows gauge", f"kstream_api_workflows {len(api.view)}",
              "# TYPE kstream_api_ready gauge", f"kstream_api_ready {int(api.ready.is_set())}"]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
