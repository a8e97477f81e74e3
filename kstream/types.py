"""Vocabulary shared by every layer: the shape of a Kafka record as kstream reads it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

HeaderList = list[tuple[str, bytes | None]]
"""Kafka headers as librdkafka gives and takes them: ordered, keys may repeat."""


class Record(Protocol):
    """A consumed Kafka record.

    Shaped like ``confluent_kafka.Message`` on purpose: the Kafka adapter hands its own message
    objects through unchanged (no per-message wrapper on the hot path) and the in-memory adapter
    implements the same methods.
    """

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def headers(self) -> HeaderList | None: ...

    def timestamp(self) -> tuple[int, int]: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed try of a message at a node: when, and the error as one line."""

    time: datetime
    error: str
