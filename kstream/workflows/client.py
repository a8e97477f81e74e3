"""Talking to workflows from outside: ids, inbox events, and a view of the state topic.

Used by the HTTP API and by ``kstream workflows``. Nothing here blocks on Kafka by itself: the
caller produces the events and feeds state records to a :class:`StateView`.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from kstream import headers as hdr
from kstream.codecs import from_json, to_json
from kstream.errors import DeclarationError
from kstream.types import HeaderList, Record
from kstream.workflows.state import FINAL

COMMANDS = frozenset({"cancel", "retry", "pause", "resume"})


def workflow_id(workflow_type: str, idempotency_key: str | None) -> str:
    """UUIDv5 of (type, key) when a key is given, so every replica of the API derives the same id;
    else a random UUID."""
    if idempotency_key:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kstream:{workflow_type}:{idempotency_key}"))
    return str(uuid.uuid4())


def key_hash(idempotency_key: str | None, data: Any) -> str | None:
    """What makes a repeated start "the same": its key and its input (as canonical JSON)."""
    if not idempotency_key:
        return None
    return hashlib.sha256(f"{idempotency_key}\0{to_json(data)}".encode()).hexdigest()[:32]


def start_event(wid: str, data: Any, *, key_hash: str | None, at: int) -> bytes:
    return to_json({"type": "start", "id": wid, "input": data, "key_hash": key_hash, "at": at}).encode()


def command_event(kind: str, **more: Any) -> bytes:
    if kind not in COMMANDS and kind != "signal":
        raise DeclarationError(f"unknown workflow command {kind!r}: use one of {', '.join(sorted(COMMANDS))} or signal")
    return to_json({"type": kind, **more}).encode()


def event_headers(wid: str) -> HeaderList:
    """Every record about one workflow carries its id as the kstream workflow id."""
    return [(hdr.WORKFLOW, wid.encode())]


class StateView:
    """The latest state record of every workflow, from the state topics. Thread-safe.

    Records may come twice or out of order (a snapshot and a tail that both read the topic);
    ``version`` (one more per decision) keeps the newest.
    """

    def __init__(self) -> None:
        self._states: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    def feed(self, records: Iterable[Record]) -> int:
        """Apply state records; returns how many changed the view."""
        changed = 0
        with self._lock:
            for rec in records:
                key, value = rec.key(), rec.value()
                if key is None or value is None:
                    continue
                try:
                    state = from_json(value)
                except ValueError:
                    continue
                wid = key.decode(errors="replace")
                old = self._states.get(wid)
                if old is None or int(state.get("version", 0)) > int(old.get("version", 0)):
                    self._states[wid] = state
                    changed += 1
            if changed:
                self.changed.notify_all()
        return changed

    def get(self, wid: str) -> dict[str, Any] | None:
        with self._lock:
            return self._states.get(wid)

    def select(self, *, workflow_type: str | None = None, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            found = [s for s in self._states.values()
                     if (workflow_type is None or s.get("type") == workflow_type) and (status is None or s.get("status") == status)]
        found.sort(key=lambda s: int(s.get("started", 0)), reverse=True)
        return found[:limit]

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)


def is_final(state: dict[str, Any]) -> bool:
    return state.get("status") in FINAL
