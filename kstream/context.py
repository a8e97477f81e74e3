"""What a handler sees besides its payload, and how it routes outputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kstream.types import HeaderList

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class Emit:
    """An output with a chosen key and/or route.

    ``to`` names a node of the same topology: the output goes to that node's input only,
    instead of to every successor. ``key`` replaces the output key (``None`` = no key).
    """

    value: Any
    key: Any = _UNSET
    to: str | None = None

    @property
    def has_key(self) -> bool:
        return self.key is not _UNSET


@dataclass(frozen=True, slots=True)
class Raw:
    """An internal output: a record for a framework topic (e.g. a cursor), produced with the
    message's other outputs (in the same transaction in exactly-once mode)."""

    topic: str
    key: bytes
    value: bytes | None


class Context:
    """Per-message metadata for a handler that asks for it (a second parameter).

    Created only for handlers that take it, so plain handlers pay nothing.
    """

    __slots__ = (
        "_emitted",
        "attempt",
        "headers",
        "key",
        "last_cursor",
        "log",
        "message_id",
        "offset",
        "params",
        "partition",
        "scope",
        "topic",
        "workflow_id",
    )

    def __init__(
        self,
        *,
        key: bytes | None,
        headers: HeaderList,
        message_id: str,
        workflow_id: str,
        attempt: int,
        topic: str,
        partition: int,
        offset: int,
        log: logging.Logger,
    ) -> None:
        self.key = key
        self.headers = headers
        self.message_id = message_id
        self.workflow_id = workflow_id
        self.attempt = attempt
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.log = log
        self._emitted: list[Any] = []
        # Batch nodes only: the run's scope, where the last completed run ended, entry params.
        self.scope: str | None = None
        self.last_cursor: Any = None
        self.params: Any = None

    def emit(self, value: Any, *, key: Any = _UNSET, to: str | None = None) -> None:
        """Emit an output now (in addition to the return value).

        Outputs are produced after the handler returns, so a handler that raises emits nothing.
        """
        self._emitted.append(Emit(value, key=key, to=to) if key is not _UNSET or to else value)

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or ``None``."""
        found = None
        for k, v in self.headers:
            if k == name:
                found = v
        return found

    def take_emitted(self) -> list[Any]:
        emitted, self._emitted = self._emitted, []
        return emitted
