"""Run the workflows HTTP API in this process (what ``kstream serve`` does), for the demo."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import uvicorn

from kstream.api.server import Kafka, create_app
from kstream.app import ack_producer, cursor_reader, tail_consumer
from kstream.config import Settings
from kstream.workflows.declare import Workflow


@contextmanager
def serving(settings: Settings, workflows: Sequence[Workflow]) -> Iterator[str]:
    """The API on a free local port until the block ends; yields its URL once it is ready."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kafka = Kafka(ack_producer(settings), cursor_reader(settings), lambda: tail_consumer(settings, "api"), settings.namespace)
    app = create_app(workflows, kafka)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and app.state.api.ready.is_set()) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
