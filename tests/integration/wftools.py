"""Helpers for the workflow tests: start workflows, read their states, run the API."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from kstream.app import ack_producer, cursor_reader, tail_consumer
from kstream.codecs import from_json
from kstream.config import Settings
from kstream.kafka.port import latest_by_key
from kstream.naming import node_topic, workflow_state_topic
from kstream.workflows.client import start_event
from kstream.workflows.declare import ORCHESTRATOR, Workflow
from tests.integration.kafkatools import produce


def start(settings: Settings, wf: Workflow, ids: list[str], data: Any = None) -> None:
    """Start workflows by writing their start events to the inbox directly (no API)."""
    topic = node_topic(settings.namespace, wf.name, ORCHESTRATOR)
    produce(settings.bootstrap_servers, topic,
            [(wid, start_event(wid, data if data is not None else {"email": f"{wid}@x"}, key_hash=None,
                               at=int(time.time() * 1000))) for wid in ids], raw=True)


def command(settings: Settings, wf: Workflow, wid: str, event: dict[str, Any]) -> None:
    produce(settings.bootstrap_servers, node_topic(settings.namespace, wf.name, ORCHESTRATOR), [(wid, event)])


def states(settings: Settings, wf: Workflow) -> dict[str, dict[str, Any]]:
    records = cursor_reader(settings).read_compacted(workflow_state_topic(settings.namespace, wf.name), 60.0)
    return {k.decode(): from_json(v) for k, rec in latest_by_key(records).items() if (v := rec.value()) is not None}


def wait_states(settings: Settings, wf: Workflow, ids: list[str], statuses: set[str], *,
                timeout: float = 90.0) -> dict[str, dict[str, Any]]:
    """Poll the state topic until every workflow of ``ids`` is in one of ``statuses``."""
    deadline = time.monotonic() + timeout
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        found = states(settings, wf)
        if all(found.get(i, {}).get("status") in statuses for i in ids):
            return found
        time.sleep(0.3)
    summary = {i: found.get(i, {}).get("status") for i in ids[:10]}
    raise AssertionError(f"timed out after {timeout:g}s waiting for {statuses}: {summary}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api(settings: Settings, workflows: list[Workflow], *, token: str | None = None) -> Iterator[str]:
    """The HTTP API on a free port in this process; yields its base URL."""
    from kstream.api.server import Kafka, create_app

    kafka = Kafka(ack_producer(settings), cursor_reader(settings), lambda: tail_consumer(settings, "api"), settings.namespace)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(workflows, kafka, token=token), host="127.0.0.1", port=port,
                                          log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()
