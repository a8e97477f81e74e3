"""Test doubles shaped like the broker port: a consumed record and a producer that records."""

from __future__ import annotations

from dataclasses import dataclass, field

from kstream.types import HeaderList


@dataclass
class FakeRecord:
    """A consumed record with the methods of :class:`kstream.types.Record`."""

    value_: bytes | None = b"{}"
    key_: bytes | None = None
    headers_: HeaderList | None = None
    topic_: str = "in"
    partition_: int = 0
    offset_: int = 0
    timestamp_: tuple[int, int] = (1, 1_700_000_000_000)

    def topic(self) -> str | None:
        return self.topic_

    def partition(self) -> int | None:
        return self.partition_

    def offset(self) -> int | None:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> HeaderList | None:
        return self.headers_

    def timestamp(self) -> tuple[int, int]:
        return self.timestamp_


@dataclass(frozen=True)
class Produced:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: HeaderList

    def header(self, name: str) -> bytes | None:
        values = [v for k, v in self.headers if k == name]
        assert len(values) <= 1, f"header {name} appears {len(values)} times"
        return values[0] if values else None


@dataclass
class FakeProducer:
    """Records every ``produce`` call; delivery always succeeds."""

    produced: list[Produced] = field(default_factory=list)

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: HeaderList | None) -> None:
        self.produced.append(Produced(topic, value, key, list(headers or [])))

    def poll(self, timeout: float) -> None:
        return None

    def flush(self, timeout: float) -> int:
        return 0

    def take_errors(self) -> list[str]:
        return []

    def to(self, topic: str) -> list[Produced]:
        return [p for p in self.produced if p.topic == topic]
