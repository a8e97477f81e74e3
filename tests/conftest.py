"""Session fixtures: one real Kafka broker per test session (or KSTREAM_TEST_BOOTSTRAP)."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kstream.config import Settings, load_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real broker. It failing to start fails the tests that need it: they never skip."""
    given = os.environ.get("KSTREAM_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    from kstream.dev.broker import LocalBroker

    broker = LocalBroker(tmp_path_factory.mktemp("broker"))
    info, _ = broker.start(port=_free_port())
    try:
        yield info.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real schema registry (Apicurio, its Confluent API URL), or KSTREAM_TEST_REGISTRY. Never skips."""
    given = os.environ.get("KSTREAM_TEST_REGISTRY")
    if given:
        yield given
        return
    from kstream.dev.registry import LocalRegistry

    registry = LocalRegistry(tmp_path_factory.mktemp("registry"))
    info, _ = registry.start(port=_free_port())
    try:
        yield info.url
    finally:
        registry.stop()


@pytest.fixture()
def namespace() -> str:
    """A fresh namespace per test: its own topics and groups, nothing shared with other tests."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture()
def settings(bootstrap: str, namespace: str) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "bootstrap_servers": bootstrap,
            "namespace": namespace,
            "topics": {"partitions": 3},
            "runtime": {"commit_interval": 0.5},
        },
    )


@pytest.fixture(autouse=True)
def _no_swallowed_thread_errors() -> Iterator[None]:
    """Fail a test when an exception escaped in a background thread (a swallowed error)."""
    errors: list[threading.ExceptHookArgs] = []
    previous = threading.excepthook
    threading.excepthook = errors.append
    yield
    threading.excepthook = previous
    assert not errors, f"exception in thread {errors[0].thread}: {errors[0].exc_value!r}"


@pytest.fixture()
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
